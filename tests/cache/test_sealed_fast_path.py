"""Sealed caches (``seal_keys``) keep the C fast path over a MemoryStore and a
SharedMemoryStore: C seals and opens (csrc/seal.c) the bytes the Python path seals and
opens, on real handshakes through every stack (pyOpenSSL on cryptography's bundled
OpenSSL, the stdlib's ssl, the linked test module), TLS 1.2 and 1.3.

As in test_fast_path.py, the Python path is the reference: a MemoryStore with a clock of
its own (an equivalent Python callable) turns the fast path off over the same C table,
and every scenario must end the same on both paths.
"""
from __future__ import annotations

import os

import pytest

from sesscache import MemoryStore, SessionCache, SharedMemoryStore
from sesscache.sealing import OVERHEAD, Sealer, generate_key, key_id
from tests.cache.test_fast_path import PATHS  # the C path and the Python path
from tests.cache.test_shm_fast_path import _attached as attached
from tests.forking import run_in_forked_child
from tests.tls import TLS12, TLS13


def _attached(stack, version, store, keys):
    return attached(stack, version, store, seal_keys=keys)


def _copy(source: MemoryStore, target: MemoryStore) -> int:
    entries = source.entries()
    for key, blob, _ in entries:
        target.set(key, blob, 60.0)
    return len(entries)


@pytest.mark.parametrize("kind", ["memory", "shm"])
def test_steady_state_is_sealed_and_opened_in_c(stack, version, shm, kind):
    keys = [generate_key()]
    store = MemoryStore() if kind == "memory" else shm()
    cache, server = _attached(stack, version, store, keys)
    assert cache._fast_policies, "a sealed cache left the C fast path"
    client = stack.client_context()
    warm = stack.full_then_resumed(server, client)
    handed, before, sealed_before = cache.handed_over(), cache.stats, cache._sealer.c_counts()
    stack.resume_repeatedly(server, client, warm.client_session, 20)
    after, sealed_after = cache.stats, cache._sealer.c_counts()
    assert cache.handed_over() == handed, "the fast path handed steady-state events to Python"
    assert after.hits - before.hits == 20
    assert sealed_after["opened"] - sealed_before["opened"] == 20
    if version == TLS13:  # a new stateful session per resumption, sealed in C
        assert after.stores - before.stores == 20
        assert sealed_after["sealed"] - sealed_before["sealed"] == 20
    assert sealed_after["refused"] == sealed_after["errors"] == 0
    if kind == "memory":  # what the table holds is sealed, and Python opens it
        for key, blob, _ in store.entries():
            assert blob[0] == 1 and blob[1:5] == key_id(keys[0])
            envelope = Sealer(keys).open(key, blob)
            assert envelope[0] == 0xE1 and len(blob) == len(envelope) + OVERHEAD


def test_c_sealed_sessions_resume_on_the_python_path_and_the_other_way(stack, version):
    keys = [generate_key()]
    c_cache, c_server = _attached(stack, version, PATHS["c"](), keys)
    py_cache, py_server = _attached(stack, version, PATHS["python"](), keys)
    assert c_cache._fast_policies and not py_cache._fast_policies
    client = stack.client_context()
    # Made and sealed in C, opened in Python.
    made_in_c = stack.handshake(c_server, client)
    stack.close(made_in_c)
    assert c_cache._sealer.c_counts()["sealed"] >= 1 and c_cache.handed_over() == 0
    assert _copy(c_cache.store, py_cache.store) >= 1
    resumed = stack.handshake(py_server, client, made_in_c.client_session)
    assert resumed.server_reused and py_cache.stats.hits == 1
    stack.close(resumed)
    # Made and sealed in Python, opened in C (counted there, nothing handed over).
    made_in_python = stack.handshake(py_server, client)
    stack.close(made_in_python)
    assert _copy(py_cache.store, c_cache.store) >= 1
    handed, opened = c_cache.handed_over(), c_cache._sealer.c_counts()["opened"]
    resumed = stack.handshake(c_server, client, made_in_python.client_session)
    assert resumed.server_reused
    stack.close(resumed)
    assert c_cache._sealer.c_counts()["opened"] == opened + 1 and c_cache.handed_over() == handed
    assert c_cache.stats.hits == 1


def _resealed(change):
    """Open with the test's key, change the envelope, seal it again properly."""
    def rewrite(key, blob, sealer):
        return sealer.seal(key, change(sealer.open(key, blob)))
    return rewrite


def _flip(at):
    def rewrite(key, blob, sealer):
        changed = bytearray(blob)
        changed[at % len(blob)] ^= 0x01
        return bytes(changed)
    return rewrite


TAMPERING = {
    "untouched": None,
    "flipped-header": _flip(2),
    "flipped-nonce": _flip(9),
    "flipped-middle": lambda key, blob, sealer: _flip(len(blob) // 2)(key, blob, sealer),
    "flipped-tag": _flip(-1),
    "truncated": lambda key, blob, sealer: blob[:40],
    "cut-by-one": lambda key, blob, sealer: blob[:-1],
    "extended": lambda key, blob, sealer: blob + b"\x00",
    "other-key": lambda key, blob, sealer: Sealer([generate_key()]).seal(key, sealer.open(key, blob)),
    "other-store-key": lambda key, blob, sealer: sealer.seal(key[:-1] + bytes([key[-1] ^ 1]),
                                                             sealer.open(key, blob)),
    "truncated-envelope": _resealed(lambda envelope: envelope[:30]),
    "envelope-without-der": _resealed(lambda envelope: envelope[:26 + envelope[25]]),
    "other-seal-format": lambda key, blob, sealer: b"\x02" + blob[1:],
    "not-sealed": lambda key, blob, sealer: sealer.open(key, blob),
}


def _scenario(stack, path, version, tamper, keys):
    store = PATHS[path]()
    cache, server = _attached(stack, version, store, keys)
    client = stack.client_context()
    first = stack.handshake(server, client, server_name="example.com")
    if TAMPERING[tamper] is not None:
        entries = store.entries()
        assert entries
        for key, blob, _ in entries:
            store.set(key, TAMPERING[tamper](key, blob, Sealer(keys)), 60.0)
    again = stack.handshake(server, client, first.client_session, server_name="example.com")
    outcome = (again.server_reused, cache.stats.as_dict())
    stack.close(first)
    stack.close(again)
    return outcome, cache


@pytest.mark.parametrize("tamper", sorted(TAMPERING))
def test_bad_sealed_values_are_a_counted_miss_in_c_as_in_python(stack, version, tamper):
    """Never a crash, never a wrong session: C refuses, hands the lookup to Python, which
    counts it as the Python path does (rejected; a quiet miss for another format)."""
    keys = [generate_key()]
    (c_resumed, c_stats), c_cache = _scenario(stack, "c", version, tamper, keys)
    (py_resumed, py_stats), py_cache = _scenario(stack, "python", version, tamper, keys)
    assert c_resumed == py_resumed == (tamper == "untouched")
    assert c_stats == py_stats
    assert c_cache._fast_policies and not py_cache._fast_policies
    counts = c_cache._sealer.c_counts()
    assert counts["errors"] == 0
    if tamper == "untouched":
        assert counts["opened"] == 1 and counts["refused"] == 0
    else:
        assert c_stats["hits"] == 0 and c_stats["rejected"] + c_stats["misses"] >= 1
        if not tamper.endswith("envelope") and tamper != "envelope-without-der":
            assert counts["refused"] >= 1 and counts["opened"] == 0


def test_key_rotation_across_caches_on_one_store(stack, version):
    """The writer seals with K1; the rotated reader [K2, K1] opens that in C and seals its
    own sessions with K2; a cache still on [K1] alone cannot open K2's (counted, refused)."""
    k1, k2 = generate_key(), generate_key()
    store = MemoryStore()
    writer, server_w = _attached(stack, version, store, [k1])
    reader, server_r = _attached(stack, version, store, [k2, k1])
    behind, server_b = _attached(stack, version, store, [k1])
    client = stack.client_context()
    first = stack.handshake(server_w, client)
    stack.close(first)
    assert {blob[1:5] for _, blob, _ in store.entries()} == {key_id(k1)}
    handed = reader.handed_over()
    resumed = stack.handshake(server_r, client, first.client_session)
    assert resumed.server_reused
    stack.close(resumed)
    assert reader.handed_over() == handed and reader._sealer.c_counts()["opened"] == 1
    for key, _, _ in store.entries():
        store.delete(key)  # only what the reader seals from now on
    fresh = stack.handshake(server_r, client)
    stack.close(fresh)
    assert {blob[1:5] for _, blob, _ in store.entries()} == {key_id(k2)}
    refused = stack.handshake(server_b, client, fresh.client_session)
    stack.close(refused)
    assert not refused.server_reused and behind.stats.rejected == 1
    assert behind._sealer.c_counts()["refused"] == 1


def test_a_forked_worker_opens_the_parents_sealed_sessions_in_c(stack, version, shm):
    keys = [generate_key()]
    cache, server = _attached(stack, version, shm(), keys)
    client = stack.client_context()
    first = stack.handshake(server, client)
    stack.close(first)

    def worker():
        child, child_server = _attached(stack, version, SharedMemoryStore(cache.store.name, 2**20), keys)
        outcomes = []
        for _ in range(3):
            hs = stack.handshake(child_server, client, first.client_session)
            outcomes.append(hs.server_reused)
            stack.close(hs)
        return outcomes, child._sealer.c_counts()["opened"], os.getpid()

    before = cache._sealer.c_counts()
    assert before["sealed"] >= 1
    outcomes, opened, pid = run_in_forked_child(worker)
    assert outcomes == [True, True, True] and pid != os.getpid()
    assert opened >= 2  # the first may teach the child's C side the certificate

    def inherited():  # a forked child counts its own traffic only, as the cache's stats
        return cache._sealer.c_counts()

    assert run_in_forked_child(inherited) == dict.fromkeys(before, 0)


def test_a_cache_with_other_keys_on_the_same_segment_refuses(stack, version, shm):
    maker, server_a = _attached(stack, version, shm(), [generate_key()])
    stranger, server_b = _attached(stack, version, shm(maker.store.name), [generate_key()])
    client = stack.client_context()
    first = stack.handshake(server_a, client)
    stack.close(first)
    again = stack.handshake(server_b, client, first.client_session)
    stack.close(again)
    assert not again.server_reused
    assert stranger.stats.rejected == 1 and stranger._sealer.c_counts()["refused"] >= 1


def test_closing_the_cache_zeroes_its_keys_in_c(stack):
    from sesscache._binding import ffi, lib
    from sesscache._binding.copies import stdlib_instance

    cache, server = _attached(stack, TLS12, MemoryStore(), [generate_key()])
    ring, slot = cache._sealer.c_ring(), stdlib_instance().slot
    out = ffi.new("unsigned char[]", 128)
    assert lib.sc_seal_blob(slot, ring, b"k", 1, b"v" * 32, 32, out, 128) == 32 + OVERHEAD
    cache.close()
    assert lib.sc_seal_blob(slot, ring, b"k", 1, b"v" * 32, 32, out, 128) == 0


def test_sealed_caches_over_tables_c_does_not_write_stay_in_python():
    """A PrefetchingStore's tables (new sessions written on by Python): sealing there
    stays on the Python path, as before."""
    from sesscache.aio import PrefetchingStore

    cache = SessionCache(PrefetchingStore(MemoryStore()), seal_keys=[generate_key()])
    assert cache._new_fast_policy(b"sesscache") is None
    assert SessionCache(PrefetchingStore(MemoryStore()))._new_fast_policy(b"sesscache") is not None
