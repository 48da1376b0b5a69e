"""sesscache.aio over a real redis-server through AsyncRedisStore (redis.asyncio)."""
from __future__ import annotations

import asyncio

import pytest

from tests.aio.client import resumed
from tests.aio.conftest import LagMeter, run, wait_until
from tests.server_fixtures import _need_module, unique_prefix
from tests.tls import TLS12, TLS13

pytestmark = pytest.mark.needs_redis


def _store(url, **kwargs):
    _need_module("redis")
    from sesscache.stores import AsyncRedisStore

    kwargs.setdefault("timeout", 2.0)
    return AsyncRedisStore(url, **kwargs)


@pytest.mark.parametrize("version", [TLS12, TLS13])
def test_resumes_across_servers_through_redis(servers, redis_url, version):
    async def main():
        prefix = unique_prefix()
        _, port_a, _, store_a = await servers.start(_store(redis_url, prefix=prefix), version=version)
        _, port_b, cache_b, store_b = await servers.start(_store(redis_url, prefix=prefix),
                                                          version=version,
                                                          store_kwargs={"lookup_timeout": 1.0})
        client_ctx = servers.client_context()
        reused, session, _ = await resumed(port_a, client_ctx, None)
        assert not reused
        assert await store_a.flush(5) and store_a.stats.writes >= 1
        for _ in range(3):
            reused, session, _ = await resumed(port_b, client_ctx, session)
            assert reused
        # B's own new sessions (TLS 1.3 gives one per resumption) may still be on their way
        # to Redis when the client comes back: then the local copy answers.
        stats = store_b.stats
        assert stats.found + stats.local_skips >= 3 and stats.found >= 1, stats
        assert cache_b.stats.hits >= 3
        await servers.close()
        await store_a.aclose()
        await store_b.aclose()

    run(main())


def test_a_paused_redis_costs_full_handshakes_not_a_frozen_loop(servers, redis_servers):
    """redis-server stopped with SIGSTOP: connections stay open and nothing answers, the
    worst case for a synchronous lookup."""
    async def main():
        redis = redis_servers()
        prefix = unique_prefix()
        _, port_a, _, store_a = await servers.start(_store(redis.url, prefix=prefix))
        _, port_b, _, store_b = await servers.start(
            _store(redis.url, prefix=prefix),
            store_kwargs={"lookup_timeout": 0.05, "write_timeout": 0.3})
        client_ctx = servers.client_context()
        sessions = []
        for _ in range(5):
            sessions.append((await resumed(port_a, client_ctx, None))[1])
        assert await store_a.flush(5)
        reused, _, _ = await resumed(port_b, client_ctx, sessions[0])  # warm B's connection pool
        assert reused
        redis.pause()
        try:
            with LagMeter() as meter:
                results = await asyncio.gather(*(resumed(port_b, client_ctx, s) for s in sessions))
            assert [r[0] for r in results] == [False] * 5
            assert meter.max_lag < 0.5, meter.max_lag
            assert store_b.stats.lookup_timeouts + store_b.stats.lookup_errors >= 5
        finally:
            redis.resume()
        await wait_until(lambda: store_b.lookups_in_flight == 0)
        await servers.close()
        await store_a.aclose()
        await store_b.aclose()

    run(main())


def test_a_dead_redis_costs_full_handshakes(servers, redis_servers):
    async def main():
        redis = redis_servers()
        _, port, _, store = await servers.start(_store(redis.url, timeout=0.2),
                                                store_kwargs={"lookup_timeout": 0.5})
        client_ctx = servers.client_context()
        _, session, _ = await resumed(port, client_ctx, None)
        await store.flush(5)
        redis.kill()
        reused, _, _ = await resumed(port, client_ctx, session)
        assert not reused
        assert store.stats.lookup_errors == 1
        await servers.close()
        await store.aclose()

    run(main())


@pytest.mark.parametrize("version", [TLS12, TLS13])
@pytest.mark.parametrize("wait", [0.5, 0.0], ids=["waits", "no-wait"])
def test_reconnecting_at_once_waits_for_a_write_on_its_way(servers, redis_url, version, wait):
    """A's writes land 60 ms after its handshakes (a store far away); the client goes at once
    to B, whose hello waits (on the event loop, not blocking it) for the session issued
    moments ago. With new_session_wait=0, the same reconnection is a full handshake."""
    from sesscache.stores import AsyncRedisStore

    class FarAsyncRedisStore(AsyncRedisStore):
        async def set(self, key, value, ttl):
            await asyncio.sleep(0.06)
            await super().set(key, value, ttl)

    async def main():
        _need_module("redis")
        prefix = unique_prefix()
        _, port_a, _, store_a = await servers.start(FarAsyncRedisStore(redis_url, prefix=prefix, timeout=2.0),
                                                    version=version)
        _, port_b, cache_b, store_b = await servers.start(_store(redis_url, prefix=prefix), version=version,
                                                          store_kwargs={"new_session_wait": wait})
        client_ctx = servers.client_context()
        resumed_on_b = 0
        for _ in range(3):
            reused, session, _ = await resumed(port_a, client_ctx, None)
            assert not reused
            reused, _, _ = await resumed(port_b, client_ctx, session)
            resumed_on_b += reused
        stats = store_b.stats
        if wait:
            assert resumed_on_b == 3 and stats.new_session_waits == 3 and stats.new_session_found == 3, stats
            assert cache_b.stats.hits == 3
        else:
            assert resumed_on_b == 0 and stats.new_session_waits == 0, stats
        await servers.close()
        await store_a.aclose()
        await store_b.aclose()

    run(main())
