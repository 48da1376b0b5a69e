"""Decoded sessions kept beside their DER (csrc/memory_store.c, csrc/shm_store.c).

The C fast path keeps the session the first lookup of an entry decoded, and hands each
later lookup a copy of it (SSL_SESSION_dup) instead of decoding the DER again. What must
still hold, on real handshakes, for both C tables (MemoryStore, SharedMemoryStore):

* every connection gets a session of its own: a connection closed uncleanly marks its
  session not resumable (OpenSSL), and that must not reach another context's lookup;
* the DER stays the entry's value: an entry rewritten (here, or by another process on the
  segment) is decided on its new bytes, never on what was decoded before;
* a kept session goes with its entry: replaced, evicted, expired, deleted, taken by a
  single-use lookup, or the store closed (counted with OpenSSL's own object life cycle);
* sealed caches resume as before and their store holds sealed bytes only.
"""
from __future__ import annotations

import gc
import time
import uuid

import pytest

from sesscache import MemoryStore, SessionCache, SharedMemoryStore, live_session_count
from sesscache._binding.find_context import bind_context
from sesscache.sealing import generate_key
from tests.forking import run_in_forked_child
from tests.tls import TLS12, TLS13, cpython_leaked_sessions

ENVELOPE_FORMAT = 0xE1  # csrc/envelope.h: SC_ENVELOPE_VERSION, the unsealed format


@pytest.fixture(params=["memory", "shm"])
def make_store(request):
    made = []

    def make(**options):
        if request.param == "memory":
            store = MemoryStore(**options)
        else:
            store = SharedMemoryStore(f"dec-{uuid.uuid4().hex[:12]}", 2**20, **options)
        made.append(store)
        return store

    yield make
    for store in made:
        store.close()
        if isinstance(store, SharedMemoryStore):
            store.unlink()


def _contexts(stack, version, cache, count, internal_cache=False):
    servers = []
    for _ in range(count):
        server = stack.server_context(version, num_tickets=1)  # TLS 1.3: one session each
        cache.attach(server, internal_cache=internal_cache)
        servers.append(server)
    return servers


def _live(where) -> int:
    """SSL_SESSIONs of where's libssl copy alive now, less those CPython leaked itself."""
    for _ in range(2):
        gc.collect()
    instance = bind_context(where).instance
    return live_session_count(instance) - cpython_leaked_sessions.get(instance.describe(), 0)


def _resume(stack, server, client, session, clean=True):
    hs = stack.handshake(server, client, session)
    reused = hs.server_reused
    if clean:
        stack.close(hs)
    else:
        stack.close_server_uncleanly(hs)
    return reused


def _one_session(stack, version, store, ttl=60.0, **options):
    """A session made on a context of its own and put in store, and a cache over store on
    two more contexts (every lookup of theirs through the store); returns (cache, key,
    value, (b, c), client, first). The session is made over a MemoryStore, which lists its
    entries, and copied into store as it is (sealed too, with the same options)."""
    source = MemoryStore()
    maker_cache = SessionCache(source, **options)
    maker, = _contexts(stack, version, maker_cache, 1)
    client = stack.client_context()
    first = stack.handshake(maker, client)
    stack.close(first)
    (key, value, _), = source.entries()
    store.set(key, value, ttl)
    cache = SessionCache(store, **options)
    return cache, key, value, tuple(_contexts(stack, version, cache, 2)), client, first


def _other_id_inside(key: bytes, value: bytes) -> bytes:
    """value with one byte of the session id in its DER flipped (the key ends with the id):
    still a session, not the one stored under key."""
    session_id = key[5 + key[4]:]
    at = value.rindex(session_id)
    return value[:at] + bytes([value[at] ^ 1]) + value[at + 1:]


@pytest.mark.parametrize("internal_cache", [False, True], ids=["store-only", "default-attach"])
def test_an_unclean_close_on_one_context_does_not_poison_another(stack, version, make_store,
                                                                  internal_cache):
    """OpenSSL marks the session of a connection closed without close_notify not
    resumable, and removes it from its context's cache: were the kept session handed out
    itself, every later lookup would get a session OpenSSL refuses."""
    cache = SessionCache(make_store())
    maker, = _contexts(stack, version, cache, 1)
    b, c, d = _contexts(stack, version, cache, 3, internal_cache=internal_cache)
    client = stack.client_context()
    first = stack.handshake(maker, client)
    stack.close(first)
    assert _resume(stack, b, client, first.client_session)  # decodes, keeps a copy
    assert _resume(stack, c, client, first.client_session)  # from the kept copy
    assert _resume(stack, b, client, first.client_session, clean=False)
    for server in (c, d, b, c):
        assert _resume(stack, server, client, first.client_session)
    assert cache._fast_policies and cache.handed_over() == 0
    assert cache.stats.errors == 0


def test_lookups_keep_one_decoded_session_per_entry(stack, make_store):
    store = make_store()
    cache, key, value, (b, c), client, first = _one_session(stack, TLS12, store)
    before = _live(b)
    assert _resume(stack, b, client, first.client_session)
    kept = _live(b)
    assert kept == before + 1, "the first lookup kept no decoded session (or more than one)"
    for server in (b, c, b, c):
        assert _resume(stack, server, client, first.client_session)
    assert _live(b) == kept, "later lookups decoded again or leaked their copies"
    assert cache._fast_policies and cache.handed_over() == 0


def test_a_full_memory_store_evicts_an_entry_with_its_decoded_session(stack):
    store = MemoryStore(max_sessions=1)
    cache, key, value, (b, _), client, first = _one_session(stack, TLS12, store)
    before = _live(b)
    assert _resume(stack, b, client, first.client_session)
    assert _live(b) == before + 1
    store.set(b"another key", b"another value", 60)
    assert store.evictions == 1
    assert _live(b) == before, "the evicted entry's decoded session is still alive"
    assert not _resume(stack, b, client, first.client_session)
    store.close()


def test_expiry_frees_the_decoded_session(stack, make_store):
    store = make_store()
    cache, key, value, (b, _), client, first = _one_session(stack, TLS12, store, ttl=1.0)
    before = _live(b)
    assert _resume(stack, b, client, first.client_session)
    assert _live(b) == before + 1
    time.sleep(1.2)
    assert store.purge_expired() == 1
    assert _live(b) == before, "the expired entry's decoded session is still alive"


@pytest.mark.parametrize("change", ["replaced", "deleted", "taken", "cleared", "closed"])
def test_a_decoded_session_goes_with_its_entry(stack, version, make_store, change):
    store = make_store()
    cache, key, value, (b, _), client, first = _one_session(stack, version, store)
    assert _resume(stack, b, client, first.client_session)
    kept = _live(b)
    if change == "replaced":  # the same bytes again: a new entry, decoded anew when read
        store.set(key, value, 60)
    elif change == "deleted":
        store.delete(key)
    elif change == "taken":
        assert store.pop(key) == value
    elif change == "cleared":
        store.clear()
    else:
        store.close()
    assert _live(b) == kept - 1
    if change == "replaced":
        assert _resume(stack, b, client, first.client_session)
        assert _live(b) == kept


def test_a_rewritten_entry_is_decided_on_its_new_bytes(stack, version, make_store):
    """DER is the truth: after a lookup kept a decoded session, the entry is rewritten with
    a DER whose session id is another one; the next lookup must refuse it."""
    store = make_store()
    cache, key, value, (b, c), client, first = _one_session(stack, version, store)
    assert _resume(stack, b, client, first.client_session)
    store.set(key, _other_id_inside(key, value), 60)
    assert not _resume(stack, c, client, first.client_session)
    assert cache.stats.rejected >= 1


def test_another_process_rewriting_the_segment_is_seen(stack, version):
    """A session this process decoded from the segment, rewritten there by another process
    (same slot, new generation): the next lookup decides on the new bytes, and the stale
    decoded session is freed then."""
    store = SharedMemoryStore(f"dec-x-{uuid.uuid4().hex[:10]}", 2**20)
    try:
        cache, key, value, (b, c), client, first = _one_session(stack, version, store)
        assert _resume(stack, b, client, first.client_session)
        kept = _live(b)
        tampered = _other_id_inside(key, value)

        def rewrite():
            other = SharedMemoryStore(store.name, 2**20)
            other.set(key, tampered, 60)
            other.close()
            return True

        assert run_in_forked_child(rewrite) is True
        assert store.get(key) == tampered
        assert not _resume(stack, c, client, first.client_session)
        assert _live(b) == kept - 1, "the stale decoded session was not freed"
        store.set(key, value, 60)  # the real one back: decoded anew, resumes
        assert _resume(stack, c, client, first.client_session)
    finally:
        store.close()
        store.unlink()


def test_single_use_takes_the_entry_and_its_decoded_session(stack, make_store):
    """TLS 1.3 single use: a cache that keeps decoded sessions and a single_use one share a
    store. Once the single-use lookup took the entry, no context resumes it again: the
    kept decoded session went with the entry, it does not answer for it."""
    store = make_store()
    keeper, key, value, (b, _), client, first = _one_session(stack, TLS13, store)
    taker = SessionCache(store, single_use=True)
    c, = _contexts(stack, TLS13, taker, 1)
    assert _resume(stack, b, client, first.client_session)
    kept = _live(b)
    assert _resume(stack, c, client, first.client_session)  # taken
    assert store.get(key) is None
    assert _live(b) < kept, "the taken entry's decoded session is still alive"
    assert not _resume(stack, c, client, first.client_session)
    assert not _resume(stack, b, client, first.client_session)


def test_sealed_caches_resume_across_contexts_and_store_only_sealed_bytes(stack, version, make_store):
    store = make_store()
    seal = {"seal_keys": [generate_key()]}
    cache, key, value, (b, c), client, first = _one_session(stack, version, store, **seal)
    assert value[0] != ENVELOPE_FORMAT
    before = _live(b)
    for server in (b, c, b):
        assert _resume(stack, server, client, first.client_session)
    assert store.get(key)[0] != ENVELOPE_FORMAT
    store.close()
    assert _live(b) <= before, "closing a sealed cache's store left sessions alive"
