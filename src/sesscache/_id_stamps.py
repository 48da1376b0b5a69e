"""When a session id sesscache's servers issued was made (see ``csrc/id_stamps.c``).

Every server context a :class:`~sesscache.SessionCache` serves issues session ids (TLS 1.2)
and TLS 1.3 tickets (which with ``OP_NO_TICKET`` are session ids) whose last 8 bytes are
``b"sc"`` and the issue time in milliseconds. A lookup that misses in a store whose writes
go behind the handshake reads it to tell a session whose write has not landed yet (a
client that reconnected at once to another server) from one that is gone.

The marker is the stamp's format: a later layout takes another one (``b"sd"``, ...), which
this version reads as no stamp at all: a miss at once, never a wait on a misread time.
"""
from __future__ import annotations

from typing import Callable, Iterator, Optional

__all__ = ["issued_at", "wait_left", "poll_pauses", "FruitlessWaits", "STAMP_MARKER", "STAMP_SKEW", "FIRST_PAUSE", "LONGEST_PAUSE"]

#: Bytes 24-25 of a stamped id; bytes 26-31 are milliseconds since the epoch, big-endian.
STAMP_MARKER = b"sc"
#: A stamp this far ahead of this host's clock is still believed (a fleet's clocks differ).
STAMP_SKEW = 1.0
#: A waiting lookup asks the store again after FIRST_PAUSE, then after pauses that double up
#: to LONGEST_PAUSE (a write takes a round trip or a few: most land within the first ones).
FIRST_PAUSE = 0.0005
LONGEST_PAUSE = 0.008


def issued_at(session_id: bytes) -> Optional[float]:
    """Seconds since the epoch at which a sesscache server issued ``session_id``, or None
    for an id without the stamp (issued by another server or an older sesscache)."""
    if len(session_id) != 32 or session_id[24:26] != STAMP_MARKER:
        return None
    return int.from_bytes(session_id[26:32], "big") / 1000.0


def wait_left(issued: Optional[float], new_session_wait: float, now: float) -> float:
    """Seconds a lookup that missed may still wait for the write of a session issued at
    ``issued`` (from :func:`issued_at`; ``now`` on the same clock), at most
    ``new_session_wait`` after its issue; 0: do not wait (no stamp, issued too long ago, or
    stamped further ahead of this host's clock than :data:`STAMP_SKEW`)."""
    if issued is None or new_session_wait <= 0:
        return 0.0
    age = now - issued
    if age >= new_session_wait or age < -STAMP_SKEW:
        return 0.0
    return new_session_wait - max(age, 0.0)


def poll_pauses(deadline: float, clock: Callable[[], float]) -> Iterator[float]:
    """The pauses of a waiting lookup between its asks, until ``deadline`` on ``clock``:
    :data:`FIRST_PAUSE`, then doubling up to :data:`LONGEST_PAUSE`, the last one cut short."""
    pause = FIRST_PAUSE
    while True:
        left = deadline - clock()
        if left <= 0:
            return
        yield min(pause, left)
        pause = min(pause * 2, LONGEST_PAUSE)


class FruitlessWaits:
    """After a wait that found nothing (a write lost, or a forged stamp), no new wait for
    ``interval`` seconds: a flood of forged stamps then stalls a server that handshakes on
    one thread (uvicorn, Twisted) at most one ``new_session_wait`` per ``interval``, not one
    per hello. A wait that finds its session costs nothing here."""

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self._last = float("-inf")

    def allow(self, now: float) -> bool:
        return now - self._last >= self.interval

    def note(self, now: float) -> None:
        self._last = now
