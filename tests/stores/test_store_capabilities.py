"""Optional store capabilities, said out loud (issue 24; issue 23 item 6): a wrapper offers
exactly what the store it wraps has, so a caller sees up front what it can call, and the
cache asks once, when it is made."""
from __future__ import annotations

import logging

import pytest

from sesscache import SessionCache
from sesscache.stores import BaseStore, MemoryStore, ResilientStore
from sesscache.stores.capabilities import (AtomicPop, BatchedWrites, Closing, CompareAndSet, CTables,
                                           capabilities_of, supports, take)
from tests.cache.test_custom_store import ThreeMethodStore


class DefaultsOnly(BaseStore):
    """BaseStore's defaults: a pop that is get + delete (not atomic), a close with nothing to do."""

    def __init__(self):
        self.inner = ThreeMethodStore()

    def get(self, key):
        return self.inner.get(key)

    def set(self, key, value, ttl):
        self.inner.set(key, value, ttl)

    def delete(self, key):
        self.inner.delete(key)


def test_a_resilient_store_over_a_store_without_pop_or_close_has_neither():
    """Issue 23 item 6: pop() and close() raised AttributeError from inside the wrapper; now
    the wrapper has no pop and no close, and says so before anything is called."""
    store = ResilientStore(ThreeMethodStore(), write_behind=False)
    assert not hasattr(store, "pop") and not hasattr(store, "close")
    assert not supports(store, AtomicPop) and not supports(store, Closing)
    with pytest.raises(AttributeError, match="has no pop: the store it wraps has none"):
        store.pop(b"k")
    store.set(b"k", b"v", 60)
    assert store.get(b"k") == b"v"
    store.delete(b"k")
    assert store.get(b"k") is None
    assert isinstance(store, ResilientStore) and type(store).__name__ == "ResilientStore"


def test_a_single_use_cache_over_such_a_wrapper_takes_with_get_then_delete_and_closes(caplog):
    caplog.set_level(logging.WARNING, logger="sesscache")
    store = ResilientStore(ThreeMethodStore(), write_behind=False)
    cache = SessionCache(store, single_use=True)
    assert any("no atomic pop" in r.getMessage() for r in caplog.records)
    store.set(b"k", b"v", 60)
    take_ = take(store)
    assert take_(b"k") == b"v" and take_(b"k") is None
    cache.close()  # the wrapper has no close: nothing raised


def test_a_wrapper_offers_what_its_backend_has():
    backend = MemoryStore()
    store = ResilientStore(backend)
    for capability in (AtomicPop, Closing, CompareAndSet, CTables):
        assert supports(store, capability), capability
    assert not supports(store, BatchedWrites)  # the wrapper batches itself; it offers no write_many
    store.set(b"k", b"v", 60)
    assert store.pop(b"k") == b"v"
    assert store.compare_and_set(b"c", None, b"1", 60) and backend.get(b"c") == b"1"
    with store:
        pass
    with pytest.raises(Exception, match="closed"):
        store.get(b"k")


def test_basestore_defaults_are_not_capabilities():
    """BaseStore's pop is get + delete: not an atomic pop, so the wrapper offers none; its
    close is a close."""
    caps = capabilities_of(DefaultsOnly())
    assert caps.pop is None and caps.any_pop is not None and caps.close is not None
    store = ResilientStore(DefaultsOnly())
    assert not hasattr(store, "pop") and hasattr(store, "close")
    store.close()


def test_a_subclass_keeps_its_own_methods():
    class Mine(ResilientStore):
        def pop(self, key):
            return b"mine"

    store = Mine(ThreeMethodStore(), write_behind=False)
    assert isinstance(store, Mine) and store.pop(b"x") == b"mine"
    assert not hasattr(store, "close") and not hasattr(store, "c_tables")


def test_capabilities_are_asked_once_by_the_cache():
    """A store that gains a method after the cache was made is not probed again."""
    backend = ThreeMethodStore()
    cache = SessionCache(backend)
    backend.close = lambda: (_ for _ in ()).throw(AssertionError("probed again"))
    cache.close()


def test_the_store_page_snippet_runs_as_written():
    """docs/stores.md's capability example, taken from the page's own text."""
    import re
    from pathlib import Path

    page = (Path(__file__).parents[2] / "docs" / "stores.md").read_text()
    section = page[page.index("## Writing a store, and what it can do"):]
    block = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    exec(compile(block, "docs/stores.md", "exec"), {})


def test_the_public_path_of_the_id_stamps_stays():
    import sesscache._id_stamps as moved
    import sesscache.session_ids as public

    assert public.issued_at is moved.issued_at and set(public.__all__) == set(moved.__all__)
