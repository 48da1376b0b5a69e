"""The settings the C fast path copies at attach cannot change afterwards (issue 16, 6).

``lifetime``, ``max_session_size``, ``single_use`` and ``store`` are read-only: an
assignment would have changed the Python path only, and the two paths would disagree.
"""
from __future__ import annotations

import time

import pytest

from sesscache import MemoryStore, SessionCache
from tests.tls import TLS12


class PythonPathStore(MemoryStore):
    """A MemoryStore with a method overridden: the cache serves it from Python only."""

    def set(self, key, value, ttl):
        super().set(key, value, ttl)


@pytest.mark.parametrize("name, value", [("lifetime", 5.0), ("max_session_size", 64),
                                         ("single_use", True), ("store", MemoryStore())])
def test_settings_are_read_only(name, value):
    cache = SessionCache(lifetime=120, max_session_size=4096)
    before = getattr(cache, name)
    with pytest.raises(AttributeError):
        setattr(cache, name, value)
    assert getattr(cache, name) is before or getattr(cache, name) == before


def _ttl_left(store):
    [(_, _, expires)] = store.entries()
    return expires - time.monotonic()


def test_the_c_and_python_paths_apply_the_same_lifetime(stack):
    """The same settings, one cache served by C (a plain MemoryStore), one by Python:
    both store the session for the cache's lifetime, since neither can be changed."""
    left = {}
    for path, store in (("c", MemoryStore()), ("python", PythonPathStore())):
        cache = SessionCache(store, lifetime=120)
        with pytest.raises(AttributeError):
            cache.lifetime = 3600
        server = stack.server_context(TLS12)
        cache.attach(server, internal_cache=False)
        hs = stack.handshake(server, stack.client_context())
        stack.close(hs)
        assert cache.stats.stores == 1
        left[path] = _ttl_left(store)
    for path, seconds in left.items():
        assert 110 < seconds <= 120, (path, left)
