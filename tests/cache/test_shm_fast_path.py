"""The C fast path over a SharedMemoryStore: both events answered in C, no Python, for
every stack and TLS version, and across processes (the segment is one table for all)."""
from __future__ import annotations

import os
import uuid

from sesscache import SessionCache, SharedMemoryStore
from sesscache.sealing import generate_key
from tests.forking import run_in_forked_child
from tests.tls import TLS13


def _attached(stack, version, store, **options):
    cache = SessionCache(store, **options)
    server = stack.server_context(version)
    cache.attach(server, internal_cache=False)
    return cache, server


def test_steady_state_never_enters_python(stack, version, shm):
    cache, server = _attached(stack, version, shm())
    client = stack.client_context()
    warm = stack.full_then_resumed(server, client)
    handed, before = cache.handed_over(), cache.stats
    stack.resume_repeatedly(server, client, warm.client_session, 20)
    assert cache._fast_policies, "no C fast path over the segment"
    assert cache.handed_over() == handed, "the fast path handed steady-state events to Python"
    after = cache.stats
    assert after.hits - before.hits == 20
    if version == TLS13:
        assert after.stores - before.stores == 20
    assert cache.store.describe()["hits"] >= 20


def test_a_session_made_by_one_cache_is_resumed_in_c_by_another_on_the_same_segment(stack, version, shm):
    """Two caches, two contexts, two store objects on one segment (as two workers)."""
    maker, server_a = _attached(stack, version, shm("pair-" + uuid.uuid4().hex[:8]))
    name = maker.store.name
    resumer, server_b = _attached(stack, version, shm(name))
    client = stack.client_context()
    first = stack.handshake(server_a, client)
    stack.close(first)
    stack.close(stack.handshake(server_b, client, first.client_session))  # teaches C the certificate
    handed = resumer.handed_over()
    hs = stack.handshake(server_b, client, first.client_session)
    assert hs.server_reused
    stack.close(hs)
    assert resumer._fast_policies and maker._fast_policies
    assert resumer.handed_over() == handed


def test_a_forked_worker_resumes_the_parents_sessions_in_c(stack, version, shm):
    cache, server = _attached(stack, version, shm())
    client = stack.client_context()
    first = stack.handshake(server, client)
    stack.close(first)

    def worker():
        child_cache, child_server = _attached(stack, version, SharedMemoryStore(cache.store.name, 2**20))
        outcomes = []
        for _ in range(3):
            hs = stack.handshake(child_server, client, first.client_session)
            outcomes.append(hs.server_reused)
            stack.close(hs)
        return outcomes, child_cache.stats.hits, os.getpid()

    outcomes, hits, pid = run_in_forked_child(worker)
    assert outcomes == [True, True, True] and hits == 3 and pid != os.getpid()


def test_sealed_caches_keep_the_c_path(stack, version, shm):
    """Sealing (AES-GCM) is done in C for this store, as for MemoryStore (csrc/seal.c):
    a sealed cache over the segment resumes in C, and the segment holds sealed bytes."""
    cache, server = _attached(stack, version, shm(), seal_keys=[generate_key()])
    client = stack.client_context()
    first = stack.handshake(server, client)
    stack.close(first)
    again = stack.handshake(server, client, first.client_session)
    assert again.server_reused
    stack.close(again)
    assert cache._fast_policies and cache.handed_over() == 0
    counts = cache._sealer.c_counts()
    assert counts["sealed"] >= 1 and counts["opened"] == 1


def test_a_session_larger_than_a_slot_is_an_error_counted_never_a_failed_handshake(stack, version, shm):
    cache, server = _attached(stack, version, shm(max_entry_size=128))
    client = stack.client_context()
    first = stack.handshake(server, client)
    stack.close(first)
    again = stack.handshake(server, client, first.client_session)
    stack.close(again)
    assert not again.server_reused
    assert cache.stats.errors >= 1 and cache.stats.stores == 0
