"""How long store calls take, as a histogram a Prometheus scrape reads as it is.

Kept by :class:`~sesscache.SessionCache` around the store calls a handshake waits for (a
lookup; a write, which for a network store is only its hand-over to the writer thread).
``observe`` runs under the lock the caller already holds for its counters, so a scrape
reads numbers that add up, and the handshake takes no lock it did not take before.
"""
from __future__ import annotations

import bisect
from typing import Dict, List, Tuple

#: Upper bounds in seconds (Prometheus ``le``): 50 us (a SQLite read on a warm page cache)
#: to 1 s (a store past its timeout), then +Inf.
BUCKETS: Tuple[float, ...] = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                              0.1, 0.25, 0.5, 1.0)
OPERATIONS = ("lookup", "write")


class CallTimes:
    """Per operation: a count per bucket (not cumulative; the last is +Inf) and the sum."""

    __slots__ = ("_counts", "_sums")

    def __init__(self) -> None:
        self._counts: Dict[str, List[int]] = {op: [0] * (len(BUCKETS) + 1) for op in OPERATIONS}
        self._sums: Dict[str, float] = dict.fromkeys(OPERATIONS, 0.0)

    def observe(self, operation: str, seconds: float) -> None:
        """Under the owner's lock."""
        self._counts[operation][bisect.bisect_left(BUCKETS, seconds)] += 1
        self._sums[operation] += seconds

    def snapshot(self) -> Dict[str, Tuple[List[int], float]]:
        """Under the owner's lock: ``{operation: (counts per bucket, sum of seconds)}``."""
        return {op: (list(self._counts[op]), self._sums[op]) for op in OPERATIONS}
