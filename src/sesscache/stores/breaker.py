"""``StoreBreaker``: stop calling a session store that keeps failing, and try it again later.

Without it, a store that hangs costs every resuming client the store's whole timeout before
its full handshake, and every new session a write that waits as long for nothing: measured
with a paused Redis and ``timeout=0.05``, a full handshake took 52 ms instead of 1.2 ms. A
store that has failed ``trip_after`` times in a row is paused instead: for ``retry_after``
seconds no lookup and no write is attempted (clients get a full handshake at once, new
sessions stay in this process's OpenSSL cache), then one call is let through; its success
resumes the store, its failure pauses it again. nginx and Apache have no such pause because
their caches are shared memory on one host; a cache on the network needs one.

One breaker serves every caller of a store: the asyncio prefetching store
(:mod:`sesscache.aio.prefetch`, on its event loop's clock) and :class:`ResilientStore`
(synchronous servers, any number of threads, ``time.monotonic``). It takes a lock of its own,
held for a few attribute updates only, so threads can share it.
"""
from __future__ import annotations

import threading
from typing import Optional

__all__ = ["StoreBreaker", "DEFAULT_TRIP_AFTER", "DEFAULT_RETRY_AFTER", "check_trip_after"]

#: Store failures in a row (timeouts or errors, lookups or writes) that pause the store.
DEFAULT_TRIP_AFTER = 5
#: Seconds a paused store is left alone before one call tries it again.
DEFAULT_RETRY_AFTER = 1.0


def check_trip_after(trip_after: Optional[int]) -> None:
    """ConfigurationError unless ``trip_after`` is an int >= 1 or None."""
    if trip_after is not None and (isinstance(trip_after, bool) or not isinstance(trip_after, int)
                                   or trip_after < 1):
        from ..errors import ConfigurationError

        raise ConfigurationError(
            f"trip_after must be an int >= 1 (failures in a row), or None to never pause "
            f"the store, got {trip_after!r}")


class StoreBreaker:
    """Closed (the store is called), open (it is not), and one trial call per
    ``retry_after`` while open. ``trip_after=None`` never opens.

    ``now`` arguments are seconds on one monotonic clock, chosen by the caller (the event
    loop's time, or ``time.monotonic()``): a breaker must always be given the same clock.
    """

    def __init__(self, trip_after: Optional[int], retry_after: float) -> None:
        self.trip_after = trip_after
        self.retry_after = retry_after
        self._failures = 0
        # While open: the time before which no call may go to the store. Each trial call
        # moves it on by retry_after, so a trial that never reports back (cancelled with its
        # server) cannot keep the store paused for ever.
        self._closed_until: Optional[float] = None
        self._lock = threading.Lock()

    @property
    def is_open(self) -> bool:
        return self._closed_until is not None

    def resting(self, now: float) -> bool:
        """Paused and not yet due for a trial call (unlike :meth:`allow`, asking takes no
        trial): a caller that would only queue work for later can drop it at once."""
        closed_until = self._closed_until
        return closed_until is not None and now < closed_until

    def allow(self, now: float) -> bool:
        """May a call go to the store now? Call it right before the call, and report the
        call's outcome with :meth:`succeeded` or :meth:`failed`."""
        if self._closed_until is None:  # the common case, read without the lock
            return True
        with self._lock:
            if self._closed_until is None:
                return True
            if now < self._closed_until:
                return False
            self._closed_until = now + self.retry_after  # this call is the trial
            return True

    def succeeded(self) -> bool:
        """The store answered (a miss is an answer). True if that ends a pause."""
        if self._failures == 0 and self._closed_until is None:  # nothing to reset
            return False
        with self._lock:
            self._failures = 0
            if self._closed_until is None:
                return False
            self._closed_until = None
            return True

    def failed(self, now: float) -> bool:
        """A call timed out or raised. True if that starts a pause. Failures while paused
        (calls started before it, or a failed trial) change nothing: the next trial is
        already scheduled."""
        with self._lock:
            if self._closed_until is not None or self.trip_after is None:
                return False
            self._failures += 1
            if self._failures < self.trip_after:
                return False
            self._failures = 0
            self._closed_until = now + self.retry_after
            return True

    def reset_after_fork(self) -> None:
        """In a forked child: a new lock (the parent's may have been held by a thread that
        does not exist here); the counts carry over, they describe the same store."""
        self._lock = threading.Lock()
