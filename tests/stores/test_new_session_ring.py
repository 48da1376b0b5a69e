"""New sessions without Python (issue 22): with a Redis local replica, the cache's C fast
path stores each new session in the replica's table and copies it into a bounded ring in C
(csrc/new_session_ring.c) that ResilientStore's writer thread drains in batches.

Real handshakes, a real ``redis-server`` (``redis_url``): the sessions reach Redis with no
new-session event handed to Python, a full ring drops (counted) and never makes a handshake
wait, a forked child starts with an empty ring of its own, single-use caches keep the
Python path, and closing the store closes the ring.
"""
from __future__ import annotations

import os
import time

import pytest

redis = __import__("redis") if os.environ.get("CI") else pytest.importorskip("redis")

from sesscache import SessionCache, store_from_url  # noqa: E402
from sesscache._binding import lib  # noqa: E402
from sesscache.stores import ResilientStore  # noqa: E402
from sesscache.stores.redis import RedisStore  # noqa: E402
from tests.forking import run_in_forked_child  # noqa: E402
from tests.server_fixtures import unique_prefix  # noqa: E402
from tests.tls import STACKS, TLS12, TLS13  # noqa: E402


def _keys_in_redis(redis_url, prefix: bytes) -> int:
    admin = redis.Redis.from_url(redis_url)
    try:
        return sum(1 for key in admin.scan_iter(match=prefix + b"*") if not key.endswith(b"__sessions"))
    finally:
        admin.close()


def _server(stack, version, cache):
    server = stack.server_context(version)
    cache.attach(server, internal_cache=False)
    return server


@pytest.mark.parametrize("version", [TLS12, TLS13])
@pytest.mark.parametrize("stack_name", ["pyopenssl", "stdlib"])
def test_new_sessions_reach_redis_through_the_ring(redis_url, certs, stack_name, version):
    """Full handshakes and resumptions (a TLS 1.3 resumption makes a new session): every
    new session is stored by C and written by the writer thread; none was handed over."""
    stack = STACKS[stack_name](certs)
    prefix = unique_prefix()
    store = store_from_url(redis_url, prefix=prefix)
    assert store.replica.wait_subscribed(10)
    cache = SessionCache(store)
    server = _server(stack, version, cache)
    client = stack.client_context()
    for _ in range(5):
        made = stack.handshake(server, client)
        stack.close(made)
        again = stack.handshake(server, client, made.client_session)
        assert again.server_reused
        stack.close(again)
    assert cache.store.flush(5)
    stats, fast = cache.store.stats, cache._fast_counts()
    new_sessions = 15 if version == TLS13 else 5  # TLS 1.3: two tickets per full handshake
    # Every new session stored by C: none reached the Python handler (which counts the
    # rest of cache.stats.stores); only lookups the copy missed were handed over.
    assert fast["stores"] == new_sessions == cache.stats.stores and fast["hits"] == 5, fast
    assert fast["handed_over"] == cache.stats.misses, (fast, cache.stats)
    assert stats.ring_writes == new_sessions and stats.ring_dropped == 0, stats
    assert stats.writes == new_sessions and stats.write_errors == 0 and stats.pending == 0, stats
    assert stats.writes_queued == stats.writes
    assert _keys_in_redis(redis_url, prefix) == new_sessions
    cache.close()


def test_a_full_ring_drops_and_counts_without_making_handshakes_wait(redis_url, certs):
    stack = STACKS["pyopenssl"](certs)
    prefix = unique_prefix()
    store = ResilientStore(RedisStore(redis_url, prefix=prefix, local_replica=100), new_session_ring=2)
    assert store.backend.replica.wait_subscribed(10)
    cache = SessionCache(store)
    server = _server(stack, TLS12, cache)
    client = stack.client_context()
    stack.close(stack.handshake(server, client))
    assert store.flush(5)
    # The writer cannot take anything from the ring while the queue's lock is held here:
    # the handshakes below go on regardless (C never takes that lock), the ring fills.
    with store._wakeup:
        for _ in range(6):
            stack.close(stack.handshake(server, client))
        stats = store.stats
    assert stats.ring_writes == 3 and stats.ring_dropped == 4, stats
    assert store.flush(5)
    stats = store.stats
    assert stats.writes == 3 and stats.write_errors == 0, stats
    assert cache.stats.errors == 0 and cache._fast_counts()["stores"] == cache.stats.stores == 7
    assert _keys_in_redis(redis_url, prefix) == 3
    # the dropped ones are still in this process's copy (and OpenSSL's cache)
    assert len(store.backend.replica.table) == 7
    cache.close()


def test_a_forked_child_starts_with_an_empty_ring_of_its_own(redis_url, certs):
    stack = STACKS["pyopenssl"](certs)
    prefix = unique_prefix()
    store = store_from_url(redis_url, prefix=prefix)
    assert store.replica.wait_subscribed(10)
    cache = SessionCache(store)
    server = _server(stack, TLS13, cache)
    client = stack.client_context()
    with cache.store._wakeup:  # sessions held in the parent's ring at the fork
        for _ in range(3):
            stack.close(stack.handshake(server, client))
        assert lib.sc_ring_count(cache.store._ring) == 6  # TLS 1.3: two tickets each

        def child():
            ring_at_start = lib.sc_ring_count(cache.store._ring)
            for _ in range(4):
                stack.close(stack.handshake(server, client))
            flushed = cache.store.flush(5)
            stats = cache.store.stats
            return ring_at_start, flushed, stats.ring_writes, stats.writes, stats.write_errors

        result = run_in_forked_child(child)
    assert result == (0, True, 8, 8, 0), result
    assert cache.store.flush(5)
    assert cache.store.stats.writes == 6  # the parent wrote its own
    assert _keys_in_redis(redis_url, prefix) == 14
    cache.close()


def test_single_use_keeps_new_sessions_on_the_python_path(redis_url, certs):
    """pop reads Redis, never the copy: a session must be there, or queued in this
    process, when it is looked up; so single_use caches do not use the ring."""
    stack = STACKS["pyopenssl"](certs)
    store = store_from_url(redis_url, prefix=unique_prefix())
    cache = SessionCache(store, single_use=True)
    server = _server(stack, TLS12, cache)
    client = stack.client_context()
    made = stack.handshake(server, client)
    stack.close(made)
    again = stack.handshake(server, client, made.client_session)
    stack.close(again)
    once_more = stack.handshake(server, client, made.client_session)
    stack.close(once_more)
    assert again.server_reused and not once_more.server_reused
    assert cache.store.stats.ring_writes == 0
    cache.close()


def test_closing_the_store_closes_the_ring(redis_url, certs):
    stack = STACKS["pyopenssl"](certs)
    store = store_from_url(redis_url, prefix=unique_prefix())
    cache = SessionCache(store)
    server = _server(stack, TLS12, cache)
    client = stack.client_context()
    stack.close(stack.handshake(server, client))
    ring = cache.store._ring
    cache.close()
    assert lib.sc_ring_count(ring) == 0
    # A context that outlives its cache still handshakes; nothing goes to the closed ring.
    made = stack.handshake(server, client)
    stack.close(made)
    assert cache.store.stats.ring_writes == 1
    deadline = time.monotonic() + 1
    while time.monotonic() < deadline and cache.store._writer.is_alive():
        time.sleep(0.01)
    assert not cache.store._writer.is_alive()

