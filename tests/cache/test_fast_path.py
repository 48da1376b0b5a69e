"""The C fast path of a SessionCache over a plain MemoryStore, against the Python path.

The fast path answers the common cases in C and hands everything else to the Python
handlers, which stay the reference. So every scenario runs twice on real handshakes: once
with a ``MemoryStore()`` (fast path on) and once with a ``MemoryStore`` whose clock is an
equivalent Python callable (fast path off, same C table underneath), and both must end
the same: resumed or not, and the same counters.
"""
from __future__ import annotations

import gc
import struct
import time

import pytest

from sesscache import MemoryStore, SessionCache
from sesscache.sealing import generate_key
from tests.tls import TLS12, TLS13


def _fast_store() -> MemoryStore:
    return MemoryStore()


def _python_store() -> MemoryStore:
    # Any clock but time.monotonic itself turns the fast path off.
    return MemoryStore(clock=lambda: time.monotonic())


PATHS = {"c": _fast_store, "python": _python_store}


def _rewrite(store: MemoryStore, change) -> int:
    """Replace every stored blob with change(key, blob); returns how many there were."""
    entries = store.entries()
    for key, blob, _ in entries:
        store.set(key, change(key, blob), 60.0)
    return len(entries)


def _with_origin(delta):
    def change(key, blob):
        (origin,) = struct.unpack_from(">q", blob, 1)
        return blob[:1] + struct.pack(">q", origin + delta) + blob[9:]
    return change


def _other_id_inside(key, blob):
    """The DER still parses, but the session id in it is not the one it is stored under
    (a byte of its id flipped: the key ends with the id)."""
    session_id = key[5 + key[4]:]
    at = blob.rindex(session_id)
    return blob[:at] + bytes([blob[at] ^ 0x01]) + blob[at + 1:]


def _der_cut(key, blob):  # the envelope is whole, the DER inside it is not
    return blob[:-9]


TAMPERING = {
    "untouched": None,
    "der-other-id": _other_id_inside,
    "der-cut": _der_cut,
    "truncated": lambda key, blob: blob[:40],
    "garbage": lambda key, blob: b"\xe1" + b"\x00" * 80,
    "other-format": lambda key, blob: b"\xe2" + blob[1:],
    "expired-origin": _with_origin(-400),
    "future-origin": _with_origin(+3600),
    "other-certificate": lambda key, blob: blob[:9] + bytes(16) + blob[25:],
}


def _scenario(stack, path, version, tamper, asked_name="example.com"):
    store = PATHS[path]()
    cache = SessionCache(store, lifetime=300)
    server = stack.server_context(version)
    cache.attach(server, internal_cache=False)
    client = stack.client_context()
    first = stack.handshake(server, client, server_name="example.com")
    if TAMPERING[tamper] is not None:
        assert _rewrite(store, TAMPERING[tamper]) >= 1
    again = stack.handshake(server, client, first.client_session, server_name=asked_name)
    outcome = (again.server_reused, cache.stats.as_dict())
    stack.close(first)
    stack.close(again)
    return outcome, cache


@pytest.mark.parametrize("tamper", sorted(TAMPERING))
def test_the_c_path_decides_as_the_python_path(stack, version, tamper):
    (c_resumed, c_stats), c_cache = _scenario(stack, "c", version, tamper)
    (py_resumed, py_stats), py_cache = _scenario(stack, "python", version, tamper)
    assert c_resumed == py_resumed == (tamper == "untouched")
    assert c_stats == py_stats
    assert py_cache.handed_over() == 0 and not py_cache._fast_policies, "the Python run used the fast path"
    assert c_cache._fast_policies, "the C run did not use the fast path"


@pytest.mark.parametrize("asked", ["other.example", ""], ids=["other-name", "no-name"])
def test_the_c_path_refuses_other_server_names_as_the_python_path(stack, version, asked):
    (c_resumed, c_stats), _ = _scenario(stack, "c", version, "untouched", asked_name=asked)
    (py_resumed, py_stats), _ = _scenario(stack, "python", version, "untouched", asked_name=asked)
    assert not c_resumed and not py_resumed
    assert c_stats == py_stats and c_stats["rejected"] == 1


def _after_one_full_handshake(stack, version):
    """A cache over a plain MemoryStore (the C path) on a new context, after one full
    handshake: (cache, server context, client context, that handshake, closed)."""
    cache = SessionCache(MemoryStore())
    server = stack.server_context(version)
    cache.attach(server, internal_cache=False)
    client = stack.client_context()
    first = stack.handshake(server, client)
    stack.close(first)
    return cache, server, client, first


def test_steady_state_never_enters_python(stack, version):
    """After the first events (which teach the C side the certificate's fingerprint),
    stores, hits and misses are all answered in C."""
    cache, server, client, first = _after_one_full_handshake(stack, version)
    warm = stack.handshake(server, client, first.client_session)
    stack.close(warm)
    handed = cache.handed_over()
    before = cache.stats
    stack.resume_repeatedly(server, client, warm.client_session, 20)
    after = cache.stats
    assert cache.handed_over() == handed, "the fast path handed steady-state events to Python"
    assert after.hits - before.hits == 20
    if version == TLS13:  # a new ticket (a new stateful session) per resumption
        assert after.stores - before.stores == 20


def test_a_miss_is_answered_in_c(stack):
    cache, server, client, first = _after_one_full_handshake(stack, TLS12)
    for key, _, _ in cache.store.entries():  # every session gone (close() is for good)
        cache.store.delete(key)
    assert len(cache.store) == 0
    handed, misses = cache.handed_over(), cache.stats.misses
    again = stack.handshake(server, client, first.client_session)
    stack.close(again)
    assert not again.server_reused
    assert cache.stats.misses == misses + 1 and cache.handed_over() == handed


def test_stateless_tickets_are_warned_about_once_then_counted_in_c(stack, caplog):
    cache = SessionCache(MemoryStore())
    server = stack.server_context(TLS13, tickets=True)
    cache.attach(server)
    client = stack.client_context()
    for _ in range(3):
        stack.close(stack.handshake(server, client))
    stats = cache.stats
    assert stats.stateless >= 3 and stats.stores == 0
    warnings = [r for r in caplog.records if "stateless tickets" in r.getMessage()]
    assert len(warnings) == 1


def test_oversize_sessions_are_handed_to_python_and_counted(stack):
    cache = SessionCache(MemoryStore(), max_session_size=100)
    server = stack.server_context(TLS12)
    cache.attach(server, internal_cache=False)
    hs = stack.handshake(server, stack.client_context())
    assert cache.stats.oversize == 1 and cache.stats.stores == 0
    assert cache.handed_over() >= 1
    stack.close(hs)


@pytest.mark.parametrize("store", [
    lambda: MemoryStore(clock=lambda: 0.0),
    lambda: type("Subclass", (MemoryStore,), {"get": lambda self, key: MemoryStore.get(self, key)})(),
], ids=["own-clock", "subclass"])
def test_the_fast_path_stays_off_where_it_would_bypass_python(stack, store):
    cache = SessionCache(store())
    server = stack.server_context(TLS12)
    cache.attach(server, internal_cache=False)
    assert not cache._fast_policies


def test_sealed_caches_keep_the_fast_path(stack):
    """C seals and opens as Python does (csrc/seal.c; tests/cache/test_sealed_fast_path.py)."""
    cache = SessionCache(MemoryStore(), seal_keys=[generate_key()])
    cache.attach(stack.server_context(TLS12), internal_cache=False)
    assert cache._fast_policies


def test_detach_takes_the_fast_path_away(stack):
    cache = SessionCache(MemoryStore())
    server = stack.server_context(TLS12, internal_cache=True)
    cache.attach(server, internal_cache=False)
    cache.detach(server)
    hs = stack.handshake(server, stack.client_context())
    assert cache.stats.stores == 0 and len(cache.store) == 0
    stack.close(hs)


def test_a_context_outliving_its_cache_and_store_does_full_handshakes(stack, version):
    """The store's finalizer runs while the context lives on (its Python hooks hold the
    cache, so the cache is dropped by detaching first, then collected): the C policy
    still points at the closed store, which answers nothing; no crash, no resumption."""
    server = stack.server_context(version, internal_cache=True)
    cache = SessionCache(MemoryStore())
    cache.attach(server, internal_cache=False)
    client = stack.client_context()
    first = stack.handshake(server, client)
    store = cache.store
    # Keep the fast path installed but close the table the way the finalizer does.
    from sesscache._binding import lib
    lib.sc_mem_close(store._table, 1)
    again = stack.handshake(server, client, first.client_session)
    assert not again.server_reused
    stack.close(first)
    stack.close(again)
    del cache, store
    gc.collect()
    third = stack.handshake(server, client)
    stack.close(third)
