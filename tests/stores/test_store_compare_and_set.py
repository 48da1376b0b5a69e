"""compare_and_set, the store operation that lets a fleet rotate its ticket keys once.

Every bundled store, against a real backend: the value is written only over the value
the caller expected (None: no live value), and of many processes racing one swap exactly
one wins.
"""
from __future__ import annotations

import os
import time

import pytest

from sesscache.errors import ConfigurationError
from tests.processes import race


def test_compare_and_set_writes_only_over_the_expected_value(store):
    assert store.compare_and_set(b"ring", None, b"one", 60)
    assert store.get(b"ring") == b"one"
    assert not store.compare_and_set(b"ring", None, b"two", 60), "the key exists: not absent"
    assert not store.compare_and_set(b"ring", b"zero", b"two", 60), "another value was expected"
    assert store.get(b"ring") == b"one"
    assert store.compare_and_set(b"ring", b"one", b"two", 60)
    assert store.get(b"ring") == b"two"


def test_compare_and_set_sees_an_expired_value_as_absent(store_kind, store_factory):
    store = store_factory(store_kind)
    store.set(b"ring", b"old", 1)
    time.sleep(2.2 if store_kind in ("redis", "memcached") else 1.1)
    assert store.get(b"ring") is None
    assert not store.compare_and_set(b"ring", b"old", b"new", 60), "an expired value is not the expected one"
    assert store.compare_and_set(b"ring", None, b"new", 60)
    assert store.get(b"ring") == b"new"


def test_compare_and_set_refuses_a_bad_ttl(store):
    with pytest.raises(ConfigurationError):
        store.compare_and_set(b"ring", None, b"x", -1)


def _swap(kind, where, prefix):
    from sesscache.stores import SQLiteStore

    if kind == "sqlite":
        store = SQLiteStore(where, timeout=10)
    elif kind == "redis":
        from sesscache.stores.redis import RedisStore
        store = RedisStore(where, prefix=prefix, timeout=5)
    else:
        from sesscache.stores.memcached import MemcachedStore
        store = MemcachedStore(where, prefix=prefix, timeout=5)
    try:
        return store.compare_and_set(b"ring", b"gen1", b"gen2-" + str(os.getpid()).encode(), 60)
    finally:
        store.close()


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("redis", marks=pytest.mark.needs_redis),
                                  pytest.param("memcached", marks=pytest.mark.needs_memcached)])
def test_of_eight_processes_racing_one_swap_exactly_one_wins(kind, store_factory, request):
    store = store_factory(kind)
    store.set(b"ring", b"gen1", 60)
    if kind == "sqlite":
        where = store.path
    elif kind == "redis":
        where = request.getfixturevalue("redis_url")
    else:
        where = request.getfixturevalue("memcached_server")
    outcomes = race(8, _swap, kind, where, getattr(store, "prefix", b""))
    assert sorted(outcomes) == [False] * 7 + [True]
    assert store.get(b"ring").startswith(b"gen2-")


def test_every_bundled_store_is_a_compare_and_set_store(store):
    from sesscache.stores import CompareAndSetStore

    assert isinstance(store, CompareAndSetStore)


def test_ticket_keys_name_what_a_store_without_compare_and_set_lacks():
    import sesscache

    class Bare:  # the three-method Store of the docs, nothing more
        def get(self, key):
            return None

        def set(self, key, value, ttl):
            pass

        def delete(self, key):
            pass

    with pytest.raises(ConfigurationError, match="compare_and_set"):
        sesscache.TicketKeys(Bare(), background=False)
