"""Many timeouts of one length with one event-loop timer, and a task timeout built on them.

A server makes a hello deadline, a lookup timeout and a write timeout for every connection.
As asyncio timers each is a handle pushed on the loop's heap, and a cancelled one stays there
until its time comes: with a 1 s write timeout and 1,500 connections a second, the heap holds
thousands of dead handles, and every timer of the loop (the SSL protocol's, a store's
sleeps) pays for them in comparisons. Timeouts of one length expire in the order they were
set, so a queue keeps them sorted, and one timer, armed for the oldest, serves them all.
"""
from __future__ import annotations

import asyncio
import collections
from typing import Callable, Optional


class Deadline:
    """One timeout in a :class:`DeadlineQueue`; :meth:`cancel` it once it is not needed."""

    __slots__ = ("when", "callback")

    def __init__(self, when: float, callback: Callable[[], None]) -> None:
        self.when = when
        self.callback: Optional[Callable[[], None]] = callback

    def cancel(self) -> None:
        self.callback = None  # the entry leaves the queue when it reaches the head


class DeadlineQueue:
    """Timeouts of ``timeout`` seconds on ``loop``, each calling its callback once if not
    cancelled first. ``timeout`` must not change: the queue relies on their order."""

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float) -> None:
        self.loop = loop
        self.timeout = timeout
        self._queue: collections.deque = collections.deque()
        self._timer: Optional[asyncio.TimerHandle] = None

    def __len__(self) -> int:
        return len(self._queue)

    def add(self, callback: Callable[[], None]) -> Deadline:
        queue = self._queue
        while queue and queue[0].callback is None:
            queue.popleft()
        entry = Deadline(self.loop.time() + self.timeout, callback)
        queue.append(entry)
        if self._timer is None:
            self._timer = self.loop.call_at(entry.when, self._expire)
        return entry

    def _expire(self) -> None:
        self._timer = None
        queue = self._queue
        now = self.loop.time()
        while queue and (queue[0].callback is None or queue[0].when <= now):
            entry = queue.popleft()
            callback, entry.callback = entry.callback, None
            if callback is not None:
                callback()
        if queue:
            self._timer = self.loop.call_at(queue[0].when, self._expire)


class TaskTimeout:
    """Cancel ``task`` (the one running now) when ``deadlines``' timeout passes, unless
    :meth:`withdraw` comes first; ``expired`` then says whether the cancel was ours.

    The cancel is queued, not done at the deadline: a store that answered in the same loop
    turn already has the task's wake-up queued, which then runs first and withdraws it, so
    an answer is never taken for a timeout."""

    __slots__ = ("_task", "_deadline", "_queued", "expired")

    def __init__(self, task: "asyncio.Task", deadlines: Optional[DeadlineQueue] = None,
                 when: Optional[float] = None) -> None:
        """At the queue's timeout from now, or (rarely: no queue fits) at loop time ``when``."""
        self._task = task
        self._queued: Optional[asyncio.Handle] = None
        self.expired = False
        self._deadline: "Deadline | asyncio.TimerHandle"
        if deadlines is not None:
            self._deadline = deadlines.add(self._due)
        else:
            assert when is not None
            self._deadline = task.get_loop().call_at(when, self._due)

    def _due(self) -> None:
        self._queued = self._task.get_loop().call_soon(self._cancel)

    def _cancel(self) -> None:
        self._queued = None
        self.expired = True
        self._task.cancel()

    def withdraw(self) -> None:
        self._deadline.cancel()
        if self._queued is not None:
            self._queued.cancel()
            self._queued = None

    def still_cancelled(self) -> bool:
        """Take back our cancel; True if the task was also cancelled by someone else
        (Python 3.11+ counts cancels; before it, one cancel is all there is, and ours)."""
        uncancel = getattr(self._task, "uncancel", None)
        return uncancel is not None and uncancel() > 0
