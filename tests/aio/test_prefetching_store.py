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


class BreakableStore(SlowStore):
    """A SlowStore whose calls raise while ``broken`` (a store that is down)."""

    broken = True

    async def _wait(self, delay):
        if self.broken:
            raise StoreError("connection refused (test)")
        await super()._wait(delay)


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
        # Never paused here: every call must reach the failing store (pausing is tested below).
        store = PrefetchingStore(FailingStore(), trip_after=None)
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
    {"trip_after": 0}, {"trip_after": True}, {"trip_after": "5"}, {"retry_after": 0},
    {"retry_after": float("inf")},
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


def test_a_store_failing_trip_after_times_in_a_row_is_paused_then_tried_again(caplog):
    """Down store: after trip_after failures nothing is sent to it (hellos get no lookup,
    new sessions stay local) until retry_after has passed; then one call tries it, and the
    pause ends when a trial succeeds."""
    async def main():
        down = BreakableStore()
        store = PrefetchingStore(down, trip_after=3, retry_after=0.2)
        store.bind(asyncio.get_running_loop())
        with caplog.at_level(logging.INFO, logger="sesscache.aio"):
            for _ in range(3):
                assert await store.prefetch([b"k"]) == {}
            assert down.calls["get"] == 3 and store.stats.store_pauses == 1
            for _ in range(4):  # paused: not sent to the store at all
                assert await store.prefetch([b"k"]) == {}
            store.set(b"new", b"v", 60)
            assert down.calls == {"get": 3, "set": 0, "delete": 0, "pop": 0}
            assert store.describe()["store_paused"] is True
            stats = store.stats
            assert stats.lookups_shed == 4 and stats.writes_shed == 1 and stats.lookups == 3, stats
            assert store.get(b"new") == b"v"  # the session stays resumable in this process

            await asyncio.sleep(0.25)
            assert await store.prefetch([b"k"]) == {}  # the trial, still failing
            assert await store.prefetch([b"k"]) == {}  # paused again
            assert down.calls["get"] == 4 and store.stats.lookups_shed == 5

            down.broken = False
            down.backend.set(b"k", b"stored", 60)
            await asyncio.sleep(0.25)
            assert await store.prefetch([b"k"]) == {b"k": b"stored"}  # the trial succeeds
            assert await store.prefetch([b"k"]) == {b"k": b"stored"}  # and the pause is over
            assert store.describe()["store_paused"] is False
            store.set(b"later", b"v2", 60)
            assert await store.flush(5)
            assert down.backend.get(b"later") == b"v2"
        stats = store.stats
        assert stats.store_pauses == 1 and stats.found == 2 and stats.lookups_shed == 5, stats
        messages = [r.getMessage() for r in caplog.records]
        assert len([m for m in messages if "failed 3 times in a row" in m]) == 1
        assert any("answers again" in m for m in messages)

    run(main())


def test_a_hanging_store_is_paused_after_its_lookups_time_out():
    async def main():
        hanging = SlowStore(hang=True)
        store = PrefetchingStore(hanging, lookup_timeout=0.02, trip_after=2, retry_after=30)
        store.bind(asyncio.get_running_loop())
        for _ in range(2):
            assert await store.prefetch([b"k"]) == {}
        await wait_until(lambda: hanging.cancelled == 2)
        for _ in range(10):
            assert await store.prefetch([b"k"]) == {}
        assert hanging.calls["get"] == 2 and store.lookups_in_flight == 0
        stats = store.stats
        assert stats.lookup_timeouts == 2 and stats.lookups_shed == 10 and stats.store_pauses == 1

    run(main())


def test_answers_in_between_failures_keep_the_store_in_use():
    """Only failures in a row pause: a miss is an answer, and resets the count."""
    async def main():
        flaky = BreakableStore()
        store = PrefetchingStore(flaky, trip_after=3)
        store.bind(asyncio.get_running_loop())
        for broken in (True, True, False, True, True, False, True, True):
            flaky.broken = broken
            assert await store.prefetch([b"k"]) == {}
        stats = store.stats
        assert stats.store_pauses == 0 and stats.lookups_shed == 0 and flaky.calls["get"] == 8
        assert stats.lookup_errors == 6 and stats.lookup_misses == 2

    run(main())


def test_a_write_can_be_the_trial_that_ends_a_pause():
    """A server whose clients never resume makes no lookups: its writes try the store."""
    async def main():
        down = BreakableStore()
        store = PrefetchingStore(down, trip_after=2, retry_after=0.1)
        store.bind(asyncio.get_running_loop())
        store.set(b"a", b"1", 60)
        store.set(b"b", b"2", 60)
        assert await store.flush(5) and store.stats.store_pauses == 1
        store.set(b"c", b"3", 60)
        assert store.stats.writes_shed == 1
        down.broken = False
        await asyncio.sleep(0.15)
        store.set(b"d", b"4", 60)  # the trial
        assert await store.flush(5)
        store.set(b"e", b"5", 60)
        assert await store.flush(5)
        assert down.backend.get(b"d") == b"4" and down.backend.get(b"e") == b"5"
        assert down.backend.get(b"c") is None and store.get(b"c") == b"3"  # kept locally
        stats = store.stats
        assert stats.writes == 2 and stats.write_errors == 2 and stats.writes_shed == 1, stats

    run(main())


def test_a_lookup_cancelled_by_its_server_is_not_a_timeout():
    """The connection's task is cancelled (the server closes) while the store is awaited:
    the cancel goes through, and is neither swallowed nor counted against the store."""
    async def main():
        hanging = SlowStore(hang=True)
        store = PrefetchingStore(hanging, lookup_timeout=5, trip_after=1)
        task = asyncio.get_running_loop().create_task(store.prefetch([b"k"]))
        await wait_until(lambda: hanging.calls["get"] == 1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        stats = store.stats
        assert stats.lookup_timeouts == 0 and stats.store_pauses == 0
        assert store.lookups_in_flight == 0 and hanging.cancelled == 1

    run(main())


def test_a_synchronous_store_that_times_out_in_its_threads_is_paused_too():
    async def main():
        sleepy = SleepyStore(0.3)
        store = PrefetchingStore(sleepy, lookup_timeout=0.03, trip_after=2, retry_after=30)
        store.bind(asyncio.get_running_loop())
        for _ in range(2):
            assert await store.prefetch([b"k"]) == {}
        started = len(sleepy.threads)
        for _ in range(5):
            assert await store.prefetch([b"k"]) == {}
        stats = store.stats
        assert stats.lookup_timeouts == 2 and stats.lookups_shed == 5 and stats.lookups == 2, stats
        assert stats.store_pauses == 1 and started >= 1
        await wait_until(lambda: store.lookups_in_flight == 0)  # the threads ran out on their own

    run(main())


def test_forged_recent_stamps_cost_one_wait_a_second():
    """A hello offering a session id stamped as issued moments ago that nobody wrote: the
    first waits (asking the store again, on the loop), finds nothing, and stops the next
    ones from waiting for a second (each would cost many store lookups)."""
    import os

    from sesscache import SessionCache

    def forged_key():
        stamped = os.urandom(24) + b"sc" + int(time.time() * 1000).to_bytes(6, "big")
        return SessionCache.key_for(b"svc", stamped)

    async def main():
        backend = SlowStore()
        store = PrefetchingStore(backend, new_session_wait=0.05)
        assert await store.prefetch([forged_key()]) == {}
        assert await store.prefetch([forged_key()]) == {}
        stats = store.stats
        assert stats.new_session_waits == 1 and stats.new_session_found == 0, stats
        assert stats.new_session_waits_refused == 1, stats
        assert backend.calls["get"] >= 3  # the first hello asked again while it waited
        await store.aclose()

    run(main())
