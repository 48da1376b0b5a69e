"""PrefetchingStore on its own: the synchronous side never waits, the asynchronous side is bounded."""
from __future__ import annotations

import asyncio
import logging
import threading
import time

import pytest

from sesscache import MemoryStore, SQLiteStore
from sesscache.aio import PrefetchingStore
from sesscache.errors import ConfigurationError, StoreError
from sesscache.stores import BaseStore
from tests.aio.conftest import SlowStore, run, wait_until


class FailingStore(SlowStore):
    async def get(self, key):
        self.calls["get"] += 1
        raise StoreError("connection refused (test)")

    async def set(self, key, value, ttl):
        self.calls["set"] += 1
        raise StoreError("connection refused (test)")


class SleepyStore(BaseStore):
    """A synchronous store that blocks its caller: must run in a thread, never on the loop."""

    kind = "sleepy"

    def __init__(self, delay):
        self.delay = delay
        self.data = {}
        self.threads = set()

    def get(self, key):
        self.threads.add(threading.current_thread().name)
        time.sleep(self.delay)
        return self.data.get(key)

    def set(self, key, value, ttl):
        time.sleep(self.delay)
        self.data[key] = value

    def delete(self, key):
        self.data.pop(key, None)


def test_set_writes_the_local_copy_at_once_and_the_store_in_the_background():
    async def main():
        slow = SlowStore(write_delay=0.1)
        store = PrefetchingStore(slow)
        store.bind(asyncio.get_running_loop())
        store.set(b"k", b"v", 60)
        assert store.get(b"k") == b"v" and len(slow.backend) == 0
        assert store.pending_writes == 1
        assert await store.flush(5)
        assert slow.backend.get(b"k") == b"v"
        assert store.local.get(b"k") is None  # landed: the local copy is dropped
        assert store.stats.writes == 1

    run(main())


def test_writes_for_one_key_land_in_order():
    async def main():
        slow = SlowStore(write_delay=0.05)
        store = PrefetchingStore(slow, max_concurrent_writes=8)
        store.bind(asyncio.get_running_loop())
        store.set(b"k", b"1", 60)
        store.delete(b"k")
        store.set(b"j", b"1", 60)
        store.set(b"j", b"2", 60)
        assert await store.flush(5)
        assert slow.backend.get(b"k") is None
        assert slow.backend.get(b"j") == b"2"

    run(main())


def test_a_set_from_another_thread_reaches_the_store():
    async def main():
        slow = SlowStore()
        store = PrefetchingStore(slow)
        store.bind(asyncio.get_running_loop())
        store.set(b"first", b"x", 60)  # on the loop thread
        thread = threading.Thread(target=store.set, args=(b"k", b"v", 60))
        thread.start()
        thread.join()
        await wait_until(lambda: slow.backend.get(b"k") == b"v")

    run(main())


def test_the_write_queue_is_bounded_and_drops_are_logged_once_per_burst(caplog):
    async def main():
        hanging = SlowStore(hang=True)
        store = PrefetchingStore(hanging, max_pending_writes=2, write_timeout=0.2)
        store.bind(asyncio.get_running_loop())
        with caplog.at_level(logging.WARNING, logger="sesscache.aio"):
            for n in range(6):
                store.set(b"k%d" % n, b"v", 60)
        assert store.pending_writes == 2
        assert store.stats.writes_dropped == 4
        assert all(store.get(b"k%d" % n) == b"v" for n in range(6))  # all kept locally
        assert len([r for r in caplog.records if "max_pending_writes" in r.getMessage()]) == 1
        assert not await store.flush(0.05)
        assert await store.flush(5)
        assert store.stats.write_errors == 2 and store.pending_writes == 0

    run(main())


def test_get_never_waits_for_a_hanging_store():
    async def main():
        store = PrefetchingStore(SlowStore(hang=True))
        store.bind(asyncio.get_running_loop())
        start = time.perf_counter()
        assert store.get(b"nothing") is None
        assert time.perf_counter() - start < 0.05

    run(main())


def test_prefetch_timeout_cancels_an_asyncio_lookup():
    async def main():
        hanging = SlowStore(hang=True)
        store = PrefetchingStore(hanging, lookup_timeout=0.05)
        start = time.perf_counter()
        assert await store.prefetch([b"k"]) == {}
        assert time.perf_counter() - start < 1.0
        await wait_until(lambda: hanging.cancelled == 1 and store.lookups_in_flight == 0)
        assert store.stats.lookup_timeouts == 1

    run(main())


def test_store_errors_are_counted_misses_logged_once_per_burst(caplog):
    async def main():
        store = PrefetchingStore(FailingStore())
        store.bind(asyncio.get_running_loop())
        with caplog.at_level(logging.WARNING, logger="sesscache.aio"):
            for _ in range(5):
                assert await store.prefetch([b"k"]) == {}
            store.set(b"k", b"v", 60)
            store.set(b"j", b"v", 60)
            await store.flush(5)
        stats = store.stats
        assert stats.lookup_errors == 5 and stats.write_errors == 2
        messages = [r.getMessage() for r in caplog.records]
        assert len([m for m in messages if "lookup failed" in m]) == 1
        assert len([m for m in messages if "background session set failed" in m]) == 1
        assert all("connection refused" in m for m in messages)
        assert store.get(b"k") == b"v"  # the failed write left the local copy

    run(main())


def test_a_blocking_sync_store_runs_in_a_thread_and_counts_until_it_returns():
    """A lookup abandoned at its timeout still occupies the store: it stays counted against
    max_lookups until the thread returns, so a stuck store cannot pile up threads."""
    async def main():
        sleepy = SleepyStore(0.4)
        store = PrefetchingStore(sleepy, lookup_timeout=0.05, max_lookups=1)
        assert store.describe()["backend_calls"] == "thread"
        with_lag = []
        loop = asyncio.get_running_loop()
        start = loop.time()
        assert await store.prefetch([b"a"]) == {}
        with_lag.append(loop.time() - start)
        assert store.lookups_in_flight == 1  # the thread still sleeps
        assert await store.prefetch([b"b"]) == {}  # skipped: the cap is reached
        assert store.stats.lookups_skipped == 1 and store.stats.lookup_timeouts == 1
        await wait_until(lambda: store.lookups_in_flight == 0)
        sleepy.delay = 0
        sleepy.data[b"c"] = b"session"
        assert await store.prefetch([b"c"]) == {b"c": b"session"}
        assert all(name.startswith("sesscache-aio") for name in sleepy.threads)
        assert with_lag[0] < 0.3
        await store.aclose()

    run(main())


def test_an_in_memory_backend_is_read_and_written_through():
    backend = MemoryStore()
    store = PrefetchingStore(backend)  # no event loop needed
    store.set(b"k", b"v", 60)
    assert backend.get(b"k") == b"v" and store.local.get(b"k") is None
    assert store.get(b"k") == b"v"
    assert store.pop(b"k") == b"v" and backend.get(b"k") is None
    store.set(b"j", b"v", 60)
    store.delete(b"j")
    assert backend.get(b"j") is None
    assert store.stats.writes == 3 and store.stats.writes_dropped == 0


def test_memory_backends_are_called_inline_and_sqlite_in_a_thread(tmp_path):
    assert PrefetchingStore(MemoryStore()).describe()["backend_calls"] == "inline"
    sqlite = SQLiteStore(tmp_path / "s.db")
    assert PrefetchingStore(sqlite).describe()["backend_calls"] == "thread"
    assert PrefetchingStore(SlowStore()).describe()["backend_calls"] == "asyncio"
    sqlite.close()


def test_pop_serves_the_local_copy_once_and_deletes_from_the_store_behind_the_write():
    async def main():
        slow = SlowStore(write_delay=0.05)
        store = PrefetchingStore(slow)
        store.bind(asyncio.get_running_loop())
        store.set(b"k", b"v", 60)
        assert store.pop(b"k") == b"v"
        assert store.pop(b"k") is None
        assert await store.flush(5)
        assert slow.backend.get(b"k") is None  # the delete came after the set

    run(main())


def test_prefetch_pop_takes_the_value_out_of_the_store():
    async def main():
        backend = MemoryStore()
        backend.set(b"k", b"v", 60)
        store = PrefetchingStore(SlowStore(backend))
        assert await store.prefetch([b"k"], pop=True) == {b"k": b"v"}
        assert backend.get(b"k") is None
        assert await store.prefetch([b"k"], pop=True) == {}

    run(main())


def test_keys_in_the_local_copy_are_not_looked_up():
    async def main():
        slow = SlowStore(write_delay=1.0)
        store = PrefetchingStore(slow, write_timeout=2.0)
        store.bind(asyncio.get_running_loop())
        store.set(b"k", b"v", 60)
        # The local value is handed to the connection: the write may land, and the local
        # copy go, before OpenSSL asks for the session.
        assert await store.prefetch([b"k"]) == {b"k": b"v"}
        assert slow.calls["get"] == 0 and store.stats.local_skips == 1
        await store.aclose()

    run(main())


def test_a_single_use_prefetch_takes_the_local_copy_and_deletes_behind_the_write():
    async def main():
        slow = SlowStore(write_delay=0.05)
        store = PrefetchingStore(slow)
        store.bind(asyncio.get_running_loop())
        store.set(b"k", b"v", 60)
        assert await store.prefetch([b"k"], pop=True) == {b"k": b"v"}
        assert store.get(b"k") is None
        assert await store.prefetch([b"k"], pop=True) == {}
        assert await store.flush(5)
        assert slow.backend.get(b"k") is None and slow.calls["delete"] == 1

    run(main())


def test_without_an_event_loop_writes_stay_local():
    store = PrefetchingStore(SlowStore())
    store.set(b"k", b"v", 60)
    assert store.get(b"k") == b"v"
    assert store.stats.writes_dropped == 1


def test_only_one_extra_key_per_hello_is_looked_up():
    async def main():
        slow = SlowStore()
        store = PrefetchingStore(slow)
        assert await store.prefetch([b"a", b"b", b"c", b"d"]) == {}
        assert slow.calls["get"] == 2

    run(main())


def test_aclose_lets_pending_writes_land_then_closes_the_backend():
    async def main():
        slow = SlowStore(write_delay=0.05)
        closed = []

        async def close():
            closed.append(True)

        slow.close = close
        store = PrefetchingStore(slow)
        store.bind(asyncio.get_running_loop())
        for n in range(5):
            store.set(b"k%d" % n, b"v", 60)
        await store.aclose()
        assert len(slow.backend) == 5 and closed == [True]

    run(main())


@pytest.mark.parametrize("kwargs", [
    {"lookup_timeout": 0}, {"lookup_timeout": -1}, {"lookup_timeout": float("nan")},
    {"max_lookups": 0}, {"max_lookups": True}, {"max_pending_writes": 0},
    {"max_concurrent_writes": 0}, {"write_timeout": 0},
])
def test_bad_limits_are_configuration_errors(kwargs):
    with pytest.raises(ConfigurationError):
        PrefetchingStore(MemoryStore(), **kwargs)


def test_backend_must_be_a_store():
    with pytest.raises(ConfigurationError, match="store"):
        PrefetchingStore(object())
    with pytest.raises(ConfigurationError):
        PrefetchingStore(PrefetchingStore(MemoryStore()))
    with pytest.raises(ConfigurationError, match="synchronous"):
        PrefetchingStore(SlowStore(), run_in_thread=True)


def test_a_stalled_loop_does_not_turn_a_quick_store_into_a_timeout():
    """The loop stalls (other connections' handshakes) for longer than lookup_timeout right
    after a lookup starts: the timeout counts from when the store call runs, and a store that
    answered meanwhile is not reported as hanging."""
    async def main():
        backend = MemoryStore()
        backend.set(b"k", b"v", 60)
        store = PrefetchingStore(SlowStore(backend, delay=0.001), lookup_timeout=0.05)
        loop = asyncio.get_running_loop()
        for stall_after in (0, 1, 2, 3):
            def stall(n=stall_after):
                if n:
                    loop.call_soon(stall, n - 1)
                else:
                    time.sleep(0.15)
            loop.call_soon(stall)
            assert await store.prefetch([b"k"]) == {b"k": b"v"}, stall_after
        assert store.stats.lookup_timeouts == 0

    run(main())
