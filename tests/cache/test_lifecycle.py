"""close() has one meaning, and SessionCache is a context manager whose close() detaches
what it attached (issue 16, 9)."""
from __future__ import annotations

import asyncio

import pytest

import sesscache
from sesscache import MemoryStore, SessionCache, SQLiteStore
from sesscache.errors import StoreError
from tests.tls import TLS12


def test_closing_the_cache_detaches_it_and_closes_its_store(stack):
    store = MemoryStore()
    with SessionCache(store) as cache:
        server = stack.server_context(TLS12)
        cache.attach(server, internal_cache=False)
        client = stack.client_context()
        first = stack.handshake(server, client)
        stack.close(first)
        before = cache.stats
        assert before.stores == 1
    assert cache.session_id_context(server) is None, "still attached after close()"
    with pytest.raises(StoreError, match="closed"):
        store.get(b"anything")
    # No hook of the closed cache runs any more (none counts, none fails).
    again = stack.handshake(server, client, first.client_session)
    stack.close(again)
    assert not again.server_reused
    assert cache.stats == before
    cache.close()  # idempotent


def test_after_close_the_context_takes_raw_callbacks_again():
    """On a context the stdlib still lets us change, close() hands the hooks back."""
    import ssl

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cache = SessionCache()
    cache.attach(context)
    cache.close()
    seen = []
    sesscache.set_new_session_callback(context, lambda conn, session: seen.append(session))
    assert sesscache.get_new_session_callback(context) is not None


def test_prefetching_store_close_closes_its_backend_and_threads(tmp_path):
    from sesscache.aio import PrefetchingStore

    backend = SQLiteStore(str(tmp_path / "s.db"))
    store = PrefetchingStore(backend)

    async def one_lookup():
        store.bind(asyncio.get_running_loop())
        await store.prefetch([b"sc1:absent"])

    asyncio.run(one_lookup())
    executor = store._executor
    assert executor is not None, "the SQLite backend is called in a thread"
    with store:
        pass
    with pytest.raises(StoreError, match="closed"):
        backend.get(b"k")
    with pytest.raises(RuntimeError):
        executor.submit(print)  # shut down
    with pytest.raises(StoreError, match="closed"):
        store.get(b"k")
    store.close()
