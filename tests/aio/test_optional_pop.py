"""pop is optional in a store (issue 16, 2), behind a PrefetchingStore too: a single_use
prefetch over a backend without pop takes the session with get then delete, and says
that it is not atomic."""
from __future__ import annotations

import logging

import pytest

from sesscache.aio import PrefetchingStore
from tests.aio.conftest import run
from tests.cache.test_custom_store import ThreeMethodStore


class AsyncThreeMethodStore:
    def __init__(self):
        self.sync = ThreeMethodStore()

    async def get(self, key):
        return self.sync.get(key)

    async def set(self, key, value, ttl):
        self.sync.set(key, value, ttl)

    async def delete(self, key):
        self.sync.delete(key)


@pytest.mark.parametrize("make", [ThreeMethodStore, AsyncThreeMethodStore], ids=["thread", "asyncio"])
def test_a_single_use_prefetch_over_a_store_without_pop_takes_once(make, caplog):
    caplog.set_level(logging.WARNING, logger="sesscache")
    backend = make()

    async def main():
        await backend.set(b"k", b"v", 60) if isinstance(backend, AsyncThreeMethodStore) \
            else backend.set(b"k", b"v", 60)
        store = PrefetchingStore(backend)
        store.bind(__import__("asyncio").get_running_loop())
        assert await store.prefetch([b"k"], pop=True) == {b"k": b"v"}
        assert await store.prefetch([b"k"], pop=True) == {}
        assert (store.stats.found, store.stats.lookup_errors) == (1, 0), store.stats
        await store.aclose()

    run(main())
    warned = [r.getMessage() for r in caplog.records if "not atomic" in r.getMessage()]
    assert warned and type(backend).__name__ in warned[0]
