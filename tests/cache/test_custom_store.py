"""A store is three methods, as the README says (issue 16, 2): such a store works with
the default attach, with single_use (get then delete, not atomic, and the cache says so),
and with close(); a store missing one of the three is refused when the cache is made."""
from __future__ import annotations

import logging
import time

import pytest

from sesscache import ClientSessionCache, SessionCache
from sesscache.errors import ConfigurationError
from tests.cache.test_cache import assert_single_use


class ThreeMethodStore:
    """The README's store: get, set, delete, nothing else (no BaseStore)."""

    def __init__(self):
        self.d = {}

    def get(self, key):
        value, expires = self.d.get(key, (None, 0.0))
        return value if time.monotonic() < expires else None

    def set(self, key, value, ttl):
        self.d[key] = (value, time.monotonic() + ttl)

    def delete(self, key):
        self.d.pop(key, None)


def test_a_three_method_store_serves_the_default_attach(stack, version):
    """Two contexts share the store (two workers): the second resumes the first's session
    from the store, its own internal cache never having seen it."""
    store = ThreeMethodStore()
    a, b = SessionCache(store), SessionCache(store)
    server_a, server_b = stack.server_context(version), stack.server_context(version)
    a.attach(server_a)
    b.attach(server_b)
    client = stack.client_context()
    first = stack.handshake(server_a, client)
    again = stack.handshake(server_b, client, first.client_session)
    assert again.server_reused
    assert a.stats.stores >= 1 and b.stats.hits == 1
    assert a.stats.errors == b.stats.errors == 0
    stack.close(first)
    stack.close(again)
    a.close()  # the store has no close(): nothing to release, no AttributeError
    b.close()


def test_single_use_over_a_three_method_store_resumes_once(stack, version, caplog):
    caplog.set_level(logging.WARNING, logger="sesscache")
    store = ThreeMethodStore()
    cache = SessionCache(store, single_use=True)
    warned = [r.getMessage() for r in caplog.records if "atomic" in r.getMessage()]
    assert len(warned) == 1 and "ThreeMethodStore" in warned[0], warned
    assert_single_use(stack, version, cache)
    assert cache.stats.hits == 1 and cache.stats.errors == 0


class NoSet:
    def get(self, key):
        return None

    def delete(self, key):
        pass


class GetNotCallable(ThreeMethodStore):
    get = None


@pytest.mark.parametrize("store, missing", [(NoSet(), "set"), (GetNotCallable(), "get"),
                                            (object(), "get, set, delete")])
def test_a_store_missing_a_method_is_refused_when_the_cache_is_made(store, missing):
    for cache_class in (SessionCache, ClientSessionCache):
        with pytest.raises(ConfigurationError) as refused:
            cache_class(store)
        message = str(refused.value)
        assert f"lacks {missing}" in message and "get, set and delete" in message, message
