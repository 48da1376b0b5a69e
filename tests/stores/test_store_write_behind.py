"""Writes behind the handshake, and the other server waiting for them (issue 14).

A fleet's servers share sessions through Redis; ``SessionCache`` wraps it in a
``ResilientStore`` whose writes land after the handshake. A client that reconnects at once
to another server offers a session whose write may still be on the way: that server reads
the issue time in the session id (``sesscache.session_ids``) and waits for the write.
Real handshakes, a real ``redis-server``; a store "far away" is a RedisStore whose writes
take longer.
"""
from __future__ import annotations

import os
import threading
import time

import pytest

redis = __import__("redis") if os.environ.get("CI") else pytest.importorskip("redis")

from sesscache import SessionCache  # noqa: E402
from sesscache._binding import lib  # noqa: E402
from sesscache._binding.find_context import bind_context  # noqa: E402
from sesscache._id_stamps import STAMP_MARKER, issued_at  # noqa: E402
from sesscache.stores import ResilientStore  # noqa: E402
from sesscache.stores.redis import RedisStore  # noqa: E402
from tests.server_fixtures import unique_prefix  # noqa: E402
from tests.tls import TLS12, TLS13, STACKS  # noqa: E402


class FarRedisStore(RedisStore):
    """A RedisStore whose every write takes ``delay`` seconds more (a store far away):
    one delay per call, a batch being one call."""

    delay = 0.0

    def set(self, key, value, ttl):
        time.sleep(self.delay)
        super().set(key, value, ttl)

    def write_many(self, ops):
        time.sleep(self.delay)
        super().write_many(ops)


def _slot_and_pointer(context):
    bound = bind_context(context)
    return bound.instance.slot, bound.pointer


def _fleet(redis_url, stack, version, *, delay=0.0, replica=0, **b_options):
    """Servers A (its writes ``delay`` late) and B (a ResilientStore with ``b_options``)."""
    prefix = unique_prefix()
    store_a = FarRedisStore(redis_url, prefix=prefix, local_replica=replica)
    store_a.delay = delay
    store_b = RedisStore(redis_url, prefix=prefix, local_replica=replica)
    if replica:
        assert store_a._replica.wait_subscribed(10) and store_b._replica.wait_subscribed(10)
    caches = [SessionCache(store_a), SessionCache(ResilientStore(store_b, **b_options))]
    servers = []
    for cache in caches:
        servers.append(stack.server_context(version))
        cache.attach(servers[-1], internal_cache=False)
    return caches, servers


def _reconnect_elsewhere(stack, servers, client, rounds):
    """Full handshake on A, then at once the session offered to B: how many B resumed."""
    resumed = 0
    for _ in range(rounds):
        made = stack.handshake(servers[0], client)
        session = made.client_session
        stack.close(made)
        again = stack.handshake(servers[1], client, session)
        resumed += again.server_reused
        stack.close(again)
    return resumed


@pytest.mark.parametrize("version", [TLS12, TLS13])
@pytest.mark.parametrize("stack_name", sorted(STACKS))
def test_default_store_resumes_on_another_server_at_once(redis_url, certs, stack_name, version):
    """Default arguments: no handshake waits for its session's write (it goes behind), and
    a client that goes at once to another server of the fleet resumes there."""
    stack = STACKS[stack_name](certs)
    prefix = unique_prefix()
    caches = [SessionCache(RedisStore(redis_url, prefix=prefix)) for _ in range(2)]
    servers = []
    for cache in caches:
        servers.append(stack.server_context(version))
        cache.attach(servers[-1])
    client = stack.client_context()
    assert _reconnect_elsewhere(stack, servers, client, 10) == 10
    a, b = caches[0].store.stats, caches[1].stats
    assert a.write_waits == 0 and a.writes_queued >= 10  # every write behind the handshake
    assert b.hits == 10 and b.misses == 0
    for cache in caches:
        cache.close()


@pytest.mark.parametrize("replica", [0, 1000], ids=["polling", "local-replica"])
@pytest.mark.parametrize("version", [TLS12, TLS13])
def test_far_store_other_server_waits_for_the_write(redis_url, certs, version, replica):
    """A store whose writes take 30 ms: the client is back (on B) long before its session
    is written; B finds the id was issued moments ago and waits for the write. (30 ms: two
    round trips stay within new_session_wait, 0.1 s. A TLS 1.3 handshake's two tickets share
    one when the writer sees both, but on a loaded machine the second may come after the
    writer left with the first: the note in docs/fleet.md about stores further away.)"""
    stack = STACKS["linked"](certs)
    caches, servers = _fleet(redis_url, stack, version, delay=0.03, replica=replica)
    client = stack.client_context()
    assert _reconnect_elsewhere(stack, servers, client, 5) == 5
    b = caches[1].store.stats
    assert b.new_session_waits >= 5 and b.new_session_found == 5, b
    assert caches[1].stats.hits == 5 and caches[1].stats.misses == 0
    for cache in caches:
        cache.close()


def test_without_the_wait_the_same_reconnection_is_a_full_handshake(redis_url, certs):
    """The control: B told not to wait (new_session_wait=0) resumes none of them."""
    stack = STACKS["linked"](certs)
    caches, servers = _fleet(redis_url, stack, TLS13, delay=0.3, new_session_wait=0)
    client = stack.client_context()
    assert _reconnect_elsewhere(stack, servers, client, 3) == 0
    assert caches[1].stats.misses == 3 and caches[1].store.stats.new_session_waits == 0
    for cache in caches:
        cache.close()


@pytest.mark.parametrize("version", [TLS12, TLS13])
@pytest.mark.parametrize("stack_name", sorted(STACKS))
def test_session_ids_carry_their_issue_time(certs, stack_name, version):
    stack = STACKS[stack_name](certs)
    cache = SessionCache()
    server = stack.server_context(version)
    cache.attach(server)
    client = stack.client_context()
    before = time.time()
    made = stack.handshake(server, client)
    stack.close(made)
    # The ids the server issued (TLS 1.3: its tickets) end the store's keys.
    session_ids = [key[-32:] for key, _, _ in cache.store.entries()]
    assert session_ids and all(sid[24:26] == STAMP_MARKER for sid in session_ids)
    assert all(before - 0.002 <= issued_at(sid) <= time.time() + 0.002 for sid in session_ids)
    again = stack.handshake(server, client, made.client_session)
    assert again.server_reused
    stack.close(again)
    cache.close()
    # Where the stamping is off (what detach does; a copy without the function), the ids
    # are OpenSSL's own, and nothing waits for them.
    plain_server = stack.server_context(version)
    other = SessionCache()
    other.attach(plain_server)
    assert lib.sc_stamp_session_ids(*_slot_and_pointer(plain_server), 0) == 1
    plain = stack.handshake(plain_server, client)
    stack.close(plain)
    plain_ids = [key[-32:] for key, _, _ in other.store.entries()]
    assert plain_ids and [issued_at(sid) for sid in plain_ids] == [None] * len(plain_ids)
    other.close()


def test_only_recent_stamped_misses_wait(redis_url):
    store = ResilientStore(RedisStore(redis_url, prefix=unique_prefix()), new_session_wait=5)
    assert store.wait_for_write(b"gone", time.time() - 6) is None  # issued too long ago
    assert store.wait_for_write(b"gone", time.time() + 30) is None  # a clock far ahead: forged
    assert store.stats.new_session_waits == 0 and store.stats.new_session_polls == 0
    # A stamp from the future within the skew a fleet's clocks may have still waits.
    store.backend.set(b"here", b"v", 60)
    assert store.wait_for_write(b"here", time.time() + 0.5) == b"v"
    assert store.stats.new_session_waits == 1 and store.stats.new_session_found == 1
    store.close()


def test_waiting_lookups_are_bounded(redis_url):
    """max_waiting lookups wait at once; the next misses at once (a forged stamp can hold
    only that many handshakes)."""
    store = ResilientStore(RedisStore(redis_url, prefix=unique_prefix()), new_session_wait=1.0,
                           max_waiting=1)
    started = threading.Event()
    results = []

    def wait():
        started.set()
        results.append(store.wait_for_write(b"never-written", time.time()))

    waiter = threading.Thread(target=wait)
    waiter.start()
    started.wait(5)
    time.sleep(0.05)  # the first is waiting now
    assert store.wait_for_write(b"never-written-either", time.time()) is None
    waiter.join(5)
    stats = store.stats
    assert results == [None]
    assert stats.waits_refused == 1 and stats.new_session_waits == 1 and stats.new_session_found == 0
    assert stats.new_session_polls >= 3  # it kept asking until new_session_wait ran out
    store.close()


def test_a_paused_store_ends_the_wait(redis_url):
    """No waiting on a store the breaker paused: the lookup gives up at once."""
    store = ResilientStore(RedisStore("redis://127.0.0.1:1/0", timeout=0.05), trip_after=1,
                           retry_after=60, new_session_wait=1.0)
    with pytest.raises(Exception):
        store.get(b"x")  # trips the breaker
    assert store.paused()["store"] is True
    assert store.wait_for_write(b"x", time.time()) is None
    assert store.stats.new_session_polls == 0
    store.close()


def test_writes_are_batched_into_one_round_trip(redis_url):
    """Writes queued together reach Redis in one call (and one PUBLISH for the replicas)."""
    backend = FarRedisStore(redis_url, prefix=unique_prefix(), local_replica=100)
    backend.delay = 0.05
    store = ResilientStore(backend)
    for i in range(20):
        store.set(b"k%d" % i, b"v%d" % i, 60)
    assert store.flush(5)
    stats = store.stats
    assert stats.writes == 20 and stats.write_batches >= 1 and stats.write_batches < 20
    reader = RedisStore(redis_url, prefix=backend.prefix)
    assert [reader.get(b"k%d" % i) for i in range(20)] == [b"v%d" % i for i in range(20)]
    reader.close()
    store.close()


def _wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "not reached in time"
        time.sleep(0.005)


@pytest.mark.parametrize("version", [TLS12, TLS13])
def test_local_replica_lookups_are_answered_in_c(redis_url, certs, version):
    """With a local replica, the cache's C fast path answers lookups from the copy; a session
    the copy lacks (written by a store that publishes nothing) goes to Python, then Redis."""
    stack = STACKS["linked"](certs)
    prefix = unique_prefix()
    publishing = RedisStore(redis_url, prefix=prefix, local_replica=100)
    silent = RedisStore(redis_url, prefix=prefix)  # no replica: publishes nothing
    reading = RedisStore(redis_url, prefix=prefix, local_replica=100)
    assert publishing._replica.wait_subscribed(10) and reading._replica.wait_subscribed(10)
    caches = [SessionCache(store) for store in (publishing, silent, reading)]
    servers = []
    for cache in caches:
        servers.append(stack.server_context(version))
        cache.attach(servers[-1], internal_cache=False)
    client = stack.client_context()
    b = caches[2]
    for origin, in_copy in ((0, True), (1, False)):
        made = stack.handshake(servers[origin], client)
        session = made.client_session
        stack.close(made)
        assert caches[origin].store.flush(5)
        if in_copy:
            # Every session A stored (TLS 1.3 sends two tickets, and the client may keep
            # either), not just the first: the test asks where *this* session is answered.
            stored = caches[origin].stats.stores
            _wait_for(lambda: len(reading._replica.table) >= stored)
        asked_before, hits_before = b.store.stats.lookups, b.stats.hits
        again = stack.handshake(servers[2], client, session)
        assert again.server_reused
        stack.close(again)
        assert b.stats.hits == hits_before + 1
        # In the copy: answered in C, the store never asked. Not in it: handed to Python,
        # which asked the store and found it in Redis.
        assert b.store.stats.lookups == asked_before + (0 if in_copy else 1)
        assert b.store.stats.found == b.store.stats.lookups
        reading._replica.table.clear()
    for cache in caches:
        cache.close()


def test_a_queued_delete_drops_the_local_copy_at_once(redis_url):
    backend = FarRedisStore(redis_url, prefix=unique_prefix(), local_replica=100)
    backend.delay = 0.2
    store = ResilientStore(backend)
    RedisStore.set(backend, b"k", b"v", 60)  # written now, in Redis and in the copy
    assert backend._replica.get(b"k") == b"v"
    store.delete(b"k")  # queued: lands in 0.2 s
    assert backend._replica.get(b"k") is None and store.get(b"k") is None
    assert store.flush(5)
    assert RedisStore(redis_url, prefix=backend.prefix).get(b"k") is None
    store.close()


def test_a_forked_child_starts_with_an_empty_copy_and_its_own_subscriber(redis_url):
    """The parent's subscriber thread does not exist in a child: the inherited copy (which the
    C fast path would go on reading, deaf to deletes) is emptied at the fork, and the child
    subscribes itself once it uses the copy."""
    from tests.forking import run_in_forked_child

    prefix = unique_prefix()
    store = RedisStore(redis_url, prefix=prefix, local_replica=100)
    writer = RedisStore(redis_url, prefix=prefix, local_replica=100)
    assert store._replica.wait_subscribed(10) and writer._replica.wait_subscribed(10)
    writer.set(b"before-fork", b"v", 60)
    _wait_for(lambda: store._replica.table.get(b"before-fork") == b"v")

    def child():
        inherited = len(store._replica.table)
        assert store.get(b"before-fork") == b"v"  # from Redis; the copy restarts its subscriber
        assert store._replica.wait_subscribed(10)
        writer_in_child = RedisStore(redis_url, prefix=prefix, local_replica=10)
        writer_in_child._replica.wait_subscribed(10)
        writer_in_child.set(b"after-fork", b"w", 60)
        _wait_for(lambda: store._replica.table.get(b"after-fork") == b"w")
        return inherited

    assert run_in_forked_child(child) == 0
    store.close()
    writer.close()


# -- the local replica: what review found -------------------------------------------------------

def _replica_pair(redis_url):
    prefix = unique_prefix()
    a = RedisStore(redis_url, prefix=prefix, local_replica=100)
    b = RedisStore(redis_url, prefix=prefix, local_replica=100)
    assert a._replica.wait_subscribed(10) and b._replica.wait_subscribed(10)
    return a, b


def test_a_forked_childs_deletes_reach_the_parents_copy(redis_url):
    """The child writes with an id of its own: the parent does not skip its deletes."""
    from tests.forking import run_in_forked_child

    parent, _other = _replica_pair(redis_url)
    _other.set(b"k", b"v", 60)
    _wait_for(lambda: parent._replica.table.get(b"k") == b"v")

    def child():
        parent.delete(b"k")  # the child's first use of the copy is a delete
        return parent._replica.writer_id

    child_id = run_in_forked_child(child)
    assert isinstance(child_id, bytes) and child_id != parent._replica.writer_id
    _wait_for(lambda: parent._replica.table.get(b"k") is None)
    parent.close()
    _other.close()


def test_own_deletes_are_applied_in_the_channels_order(redis_url):
    """Another host's set of a key, then this process's delete of it (Redis's order): the
    copy ends without the key, though the set's message came after the local delete."""
    store, _other = _replica_pair(redis_url)
    replica = store._replica
    from sesscache.stores.redis_replica import batch_message, delete_entry, set_entry

    k = store.prefix + b"k"
    replica.forget(b"k")  # the local delete, at once
    replica.apply(batch_message(b"another1", [set_entry(k, b"v", 60_000)]))
    assert replica.table.get(b"k") == b"v"
    replica.apply(batch_message(replica.writer_id, [delete_entry(k)]))  # our own, coming back
    assert replica.table.get(b"k") is None
    # Our own sets are not applied again (they are in the copy from the write itself).
    replica.apply(batch_message(replica.writer_id, [set_entry(k, b"w", 60_000)]))
    assert replica.table.get(b"k") is None
    store.close()
    _other.close()


def test_malformed_messages_are_skipped_and_cost_nothing_else(redis_url):
    store, _other = _replica_pair(redis_url)
    replica = store._replica
    from sesscache.stores.redis_replica import batch_message, delete_entry, set_entry

    k = store.prefix
    replica.apply(batch_message(b"another1", [set_entry(k + b"keep", b"v", 60_000)]))
    before = replica.malformed
    for message in (b"", b"?garbage", batch_message(b"another1", [set_entry(k + b"x", b"v", 10**13)]),
                    batch_message(b"another1", [delete_entry(k + b"keep")])[:-2],
                    batch_message(b"another1", [set_entry(k + b"y", b"v", 60_000)])[:-1]):
        replica.apply(message)
    assert replica.malformed == before + 5
    assert replica.table.get(b"keep") == b"v"  # a cut-short delete deleted nothing
    assert replica.table.get(b"x") is None and replica.table.get(b"y") is None
    store.close()
    _other.close()


def test_a_closed_copy_stays_empty(redis_url):
    """Closed (the store closed, or turned off after a refused PUBLISH), the copy the C fast
    path may still read is empty and takes nothing more."""
    store, other = _replica_pair(redis_url)
    replica = store._replica
    other.set(b"k", b"v", 60)
    _wait_for(lambda: replica.table.get(b"k") == b"v")
    store.close()
    assert len(replica.table) == 0
    other.set(b"k2", b"v", 60)
    replica.put(b"k3", b"v", 60)
    time.sleep(0.2)  # room for the message to arrive, were it applied
    assert len(replica.table) == 0
    other.close()


def test_with_a_replica_an_unpublished_write_is_found_in_redis_while_waiting(redis_url):
    """A write that was never published (a host without local_replica) is still found by a
    lookup waiting on its copy: it asks Redis between its waits, not only at the end."""
    prefix = unique_prefix()
    waiting = ResilientStore(RedisStore(redis_url, prefix=prefix, local_replica=100))
    assert waiting.backend._replica.wait_subscribed(10)
    silent = RedisStore(redis_url, prefix=prefix)
    timer = threading.Timer(0.02, lambda: silent.set(b"late", b"v", 60))
    timer.start()
    assert waiting.wait_for_write(b"late", time.time()) == b"v"
    timer.join()
    stats = waiting.stats
    assert stats.new_session_found == 1 and stats.new_session_polls >= 2, stats
    waiting.close()
    silent.close()


def test_after_a_fruitless_wait_none_for_a_second(redis_url):
    """A wait that found nothing (a lost write, a forged stamp) stops the next ones for a
    second: a flood of forged stamps costs a one-thread server one wait a second."""
    store = ResilientStore(RedisStore(redis_url, prefix=unique_prefix()), new_session_wait=0.05)
    assert store.wait_for_write(b"forged-1", time.time()) is None
    assert store.wait_for_write(b"forged-2", time.time()) is None
    stats = store.stats
    assert stats.new_session_waits == 1 and stats.waits_refused == 1, stats
    store.close()


class _SlowWrites(RedisStore):
    """Sets land after 0.2 s, deletes after 1 s (a batch is one call)."""

    def set(self, key, value, ttl):
        time.sleep(0.2)
        super().set(key, value, ttl)

    def delete(self, key):
        time.sleep(1.0)
        super().delete(key)

    def write_many(self, ops):
        time.sleep(1.0 if any(op == "delete" for op, *_ in ops) else 0.2)
        super().write_many(ops)


def test_a_pop_from_the_queue_is_never_followed_by_a_pop_in_the_store(redis_url):
    """A session popped from this process's queued copy (its set not landed yet) has a
    delete queued behind the set. While that delete is on its way the store holds the
    session: a lookup that then waits for a write must not pop it there (a single-use
    session handed out twice; seen with the default replica, whose copy wakes the wait at
    once)."""
    prefix = unique_prefix()
    store = ResilientStore(_SlowWrites(redis_url, prefix=prefix, local_replica=100))
    assert store.backend.replica.wait_subscribed(10)
    store.set(b"k", b"session", 60)
    time.sleep(0.05)  # the writer took the set: it lands in 0.2 s
    assert store.pop(b"k") == b"session"  # from the queued copy; a delete is queued
    time.sleep(0.4)  # the set landed; the delete takes a second
    assert store.backend.get(b"k") == b"session"  # in Redis (and its copy) meanwhile
    assert store.wait_for_write(b"k", time.time(), pop=True) is None
    assert store.pop(b"k") is None
    assert store.flush(5)
    assert store.backend.get(b"k") is None
    store.close()
