"""Fixtures for the sesscache.aio tests: real servers on loopback, stdlib clients, bounded waits.

No pytest-asyncio: each test runs its coroutine with :func:`run`, which bounds it in time.
"""
from __future__ import annotations

import asyncio
import ssl
import time
from typing import Any, Dict, List, Optional

import pytest

from sesscache import MemoryStore, SessionCache
from sesscache.aio import PrefetchingStore, create_server, start_server
from tests.tls import TLS12, TLS13

SID_CTX = b"sesscache-aio-tests"
VERSIONS = {TLS12: ssl.TLSVersion.TLSv1_2, TLS13: ssl.TLSVersion.TLSv1_3}


def run(coro, timeout: float = 30.0):
    """Run ``coro`` on a fresh event loop, failing the test if it takes over ``timeout``."""
    async def bounded():
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


class SlowStore:
    """An asyncio store over a MemoryStore that answers after ``delay`` seconds, or never
    (``hang``). Separate delays for writes. Counts its calls."""

    kind = "slow"

    def __init__(self, backend: Optional[MemoryStore] = None, *, delay: float = 0.0,
                 write_delay: Optional[float] = None, hang: bool = False) -> None:
        self.backend = backend if backend is not None else MemoryStore()
        self.delay = delay
        self.write_delay = delay if write_delay is None else write_delay
        self.hang = hang
        self.calls: Dict[str, int] = {"get": 0, "set": 0, "delete": 0, "pop": 0}
        self.cancelled = 0

    async def _wait(self, delay: float) -> None:
        try:
            if self.hang:
                await asyncio.Event().wait()
            if delay:
                await asyncio.sleep(delay)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise

    async def get(self, key):
        self.calls["get"] += 1
        await self._wait(self.delay)
        return self.backend.get(key)

    async def pop(self, key):
        self.calls["pop"] += 1
        await self._wait(self.delay)
        return self.backend.pop(key)

    async def set(self, key, value, ttl):
        self.calls["set"] += 1
        await self._wait(self.write_delay)
        self.backend.set(key, value, ttl)

    async def delete(self, key):
        self.calls["delete"] += 1
        await self._wait(self.write_delay)
        self.backend.delete(key)

    async def close(self):
        pass

    async def describe(self):
        return {"kind": self.kind, "entries": len(self.backend), "bytes": None}


async def handle_lines(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answer every line with ``pong``; close on end of file."""
    try:
        while True:
            line = await reader.readline()
            if not line:
                break
            writer.write(b"pong\n")
            await writer.drain()
    except (ConnectionError, ssl.SSLError):
        pass
    finally:
        writer.close()


class LagMeter:
    """A ticker task measuring how late the event loop runs it: the loop's responsiveness."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.max_lag = 0.0
        self.ticks = 0
        self._task: Optional[asyncio.Task] = None

    async def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            start = loop.time()
            await asyncio.sleep(self.interval)
            self.max_lag = max(self.max_lag, loop.time() - start - self.interval)
            self.ticks += 1

    def __enter__(self) -> "LagMeter":
        self._task = asyncio.get_running_loop().create_task(self._tick())
        return self

    def __exit__(self, *exc: Any) -> None:
        assert self._task is not None
        self._task.cancel()


class Servers:
    """Start aio servers for one test (each like one host of a fleet); close them after."""

    def __init__(self, certs) -> None:
        self.certs = certs
        self.started: List[Any] = []

    def server_context(self, version: str = TLS13, *, groups: Optional[str] = None,
                       certfile: Optional[str] = None) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(certfile or self.certs.server_pem)
        ctx.minimum_version = ctx.maximum_version = VERSIONS[version]
        ctx.options |= ssl.OP_NO_TICKET  # stateful resumption: the cache is asked
        if groups:
            ctx.set_ecdh_curve(groups)
        return ctx

    def client_context(self, *, max_version: Optional[str] = None) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(self.certs.ca_pem)
        if max_version is not None:
            ctx.maximum_version = VERSIONS[max_version]
        return ctx

    async def start(self, backend: Any, *, version: str = TLS13, context: Optional[ssl.SSLContext] = None,
                    store_kwargs: Optional[dict] = None, cache_kwargs: Optional[dict] = None,
                    internal_cache: bool = False, handler=handle_lines, protocol_factory=None,
                    **server_kwargs: Any):
        """An aio server over ``backend``; returns (server, port, cache, store).

        ``internal_cache=False`` by default, so every resumption goes through the store and the
        prefetch (OpenSSL's own cache would otherwise answer for sessions made here)."""
        store = PrefetchingStore(backend, **(store_kwargs or {}))
        cache = SessionCache(store, **(cache_kwargs or {}))
        ctx = context if context is not None else self.server_context(version)
        if protocol_factory is not None:
            server = await create_server(protocol_factory, "127.0.0.1", 0, ssl=ctx, cache=cache,
                                         session_id_context=SID_CTX, internal_cache=internal_cache,
                                         **server_kwargs)
        else:
            server = await start_server(handler, "127.0.0.1", 0, ssl=ctx, cache=cache,
                                        session_id_context=SID_CTX, internal_cache=internal_cache,
                                        **server_kwargs)
        self.started.append((server, store))
        return server, server.sockets[0].getsockname()[1], cache, store

    async def close(self) -> None:
        for server, store in self.started:
            server.close()
            await server.wait_closed()
            await store.flush(5)
        self.started.clear()


@pytest.fixture
def servers(certs):
    return Servers(certs)


def wait_until(predicate, timeout: float = 5.0):
    """Poll ``predicate`` in a coroutine until true (bounded)."""
    async def poll():
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError("condition not reached within %.1f s" % timeout)
            await asyncio.sleep(0.01)
    return poll()
