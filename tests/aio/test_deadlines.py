"""DeadlineQueue and TaskTimeout: many timeouts of one length on one loop timer."""
from __future__ import annotations

import asyncio

import pytest

from sesscache.aio.deadlines import DeadlineQueue, TaskTimeout
from tests.aio.conftest import run


def test_deadlines_fire_in_order_once_and_not_when_cancelled():
    async def main():
        loop = asyncio.get_running_loop()
        queue = DeadlineQueue(loop, 0.05)
        fired = []
        entries = [queue.add(lambda n=n: fired.append(n)) for n in range(5)]
        entries[1].cancel()
        entries[3].cancel()
        scheduled = len(loop._scheduled)  # the one timer of the queue, whatever its length
        await asyncio.sleep(0.02)
        late = queue.add(lambda: fired.append("late"))
        assert len(loop._scheduled) == scheduled
        await asyncio.sleep(0.045)
        assert fired == [0, 2, 4]
        await asyncio.sleep(0.03)
        assert fired == [0, 2, 4, "late"] and len(queue) == 0
        late.cancel()  # after it fired: nothing happens
        entry = queue.add(lambda: fired.append("again"))  # a drained queue arms a new timer
        await asyncio.sleep(0.07)
        assert fired[-1] == "again" and entry is not None

    run(main())


def test_a_task_timeout_cancels_a_hung_await_and_says_so():
    async def main():
        loop = asyncio.get_running_loop()
        queue = DeadlineQueue(loop, 0.02)

        async def waits_forever():
            timer = TaskTimeout(asyncio.current_task(), queue)
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                assert timer.expired and not timer.still_cancelled()
                return "timed out"
            finally:
                timer.withdraw()

        assert await waits_forever() == "timed out"

    run(main())


def test_a_task_timeout_withdrawn_in_time_never_cancels():
    async def main():
        loop = asyncio.get_running_loop()
        queue = DeadlineQueue(loop, 0.01)
        timer = TaskTimeout(asyncio.current_task(), queue)
        await asyncio.sleep(0)
        timer.withdraw()
        await asyncio.sleep(0.05)  # a cancel would land here
        assert not timer.expired

    run(main())


def test_an_outside_cancel_is_not_mistaken_for_the_timeout():
    async def main():
        loop = asyncio.get_running_loop()
        queue = DeadlineQueue(loop, 5)
        started = asyncio.Event()

        async def guarded():
            timer = TaskTimeout(asyncio.current_task(), queue)
            try:
                started.set()
                await asyncio.Event().wait()
            finally:
                timer.withdraw()
                assert not timer.expired

        task = loop.create_task(guarded())
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run(main())
