"""``StoreBreaker``: stop calling a session store that keeps failing, and try it again later.

Without it, a store that hangs costs every resuming client the whole ``lookup_timeout``
(50 ms by default) before its full handshake, and every new session a background write that
waits ``write_timeout`` (1 s) for nothing. With 50 clients reconnecting, that wait alone held
a server to 0.72-0.76 of the handshakes it does with no cache at all. A store that has failed
``trip_after`` times in a row is paused instead: for ``retry_after`` seconds no lookup and no
write is attempted (clients get a full handshake at once, new sessions stay in this process's
local copy), then one call is let through; its success resumes the store, its failure pauses
it again. nginx and Apache have no such pause because their caches are shared memory on one
host; a cache on the network needs one.

Only the event loop's thread uses a breaker (lookups and background writes both run there),
so it holds no lock.
"""
from __future__ import annotations

from typing import Optional

#: Store failures in a row (timeouts or errors, lookups or writes) that pause the store.
DEFAULT_TRIP_AFTER = 5
#: Seconds a paused store is left alone before one call tries it again.
DEFAULT_RETRY_AFTER = 1.0


class StoreBreaker:
    """Closed (the store is called), open (it is not), and one trial call per
    ``retry_after`` while open. ``trip_after=None`` never opens."""

    def __init__(self, trip_after: Optional[int], retry_after: float) -> None:
        self.trip_after = trip_after
        self.retry_after = retry_after
        self._failures = 0
        # While open: the loop time before which no call may go to the store. Each trial call
        # moves it on by retry_after, so a trial that never reports back (cancelled with its
        # server) cannot keep the store paused for ever.
        self._closed_until: Optional[float] = None

    @property
    def is_open(self) -> bool:
        return self._closed_until is not None

    def allow(self, now: float) -> bool:
        """May a call go to the store now? Call it right before the call, and report the
        call's outcome with :meth:`succeeded` or :meth:`failed`."""
        if self._closed_until is None:
            return True
        if now < self._closed_until:
            return False
        self._closed_until = now + self.retry_after  # this call is the trial
        return True

    def succeeded(self) -> bool:
        """The store answered (a miss is an answer). True if that ends a pause."""
        self._failures = 0
        if self._closed_until is None:
            return False
        self._closed_until = None
        return True

    def failed(self, now: float) -> bool:
        """A call timed out or raised. True if that starts a pause. Failures while paused
        (calls started before it, or a failed trial) change nothing: the next trial is
        already scheduled."""
        if self._closed_until is not None or self.trip_after is None:
            return False
        self._failures += 1
        if self._failures < self.trip_after:
            return False
        self._failures = 0
        self._closed_until = now + self.retry_after
        return True
