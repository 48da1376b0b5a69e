"""The Python path's per-thread DER scratch buffer is wiped after each use (issue 16, 8):
it held the last new session, master secret included, for the thread's life."""
from __future__ import annotations

from sesscache import MemoryStore, SessionCache
from sesscache._binding import ffi
from tests.tls import TLS12, TLS13


class PythonPathStore(MemoryStore):
    """A method overridden: the cache serves this store from Python, through the buffer."""

    def set(self, key, value, ttl):
        super().set(key, value, ttl)


def test_no_session_bytes_stay_in_the_scratch_buffer(stack):
    for version in (TLS12, TLS13):
        store = PythonPathStore()
        cache = SessionCache(store)
        server = stack.server_context(version)
        cache.attach(server, internal_cache=False)
        hs = stack.handshake(server, stack.client_context())  # in this thread
        stack.close(hs)
        assert cache.stats.stores >= 1 and cache.handed_over() == 0
        [(_, blob, _)] = store.entries()[:1]
        [attachment] = cache._attached.values()
        der = attachment._local.der  # this thread's buffer, the one the handshake used
        scratch = ffi.buffer(der)[:]
        assert blob[-64:] not in scratch, "the last session's DER is still in the buffer"
        assert scratch == bytes(len(scratch)), f"{version}: the buffer was not wiped"
