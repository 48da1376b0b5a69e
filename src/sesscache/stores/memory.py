"""In-process store: an LRU dictionary with per-entry expiry.

The default store. It is shared by the threads of one process only; a server with several
worker processes needs :class:`~sesscache.stores.sqlite.SQLiteStore` or a network store for
workers to resume each other's sessions.
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Any, Callable, Dict, Optional, Tuple

from ..errors import ConfigurationError, ValueTooLarge
from .base import MAX_TTL, BaseStore, as_bytes, check_ttl

__all__ = ["MemoryStore"]

# How many least-recently-used entries a set() inspects for expiry on its way out. Entries that
# nobody reads drift to the LRU end, so that is where expired ones collect.
_PURGE_PEEK = 2


class MemoryStore(BaseStore):
    """Thread-safe LRU + TTL store in process memory.

    Args:
        max_sessions: most entries held; setting one more evicts the least recently used.
        max_bytes: optional cap on the sum of ``len(key) + len(value)`` over all entries (Python's
            own per-entry overhead, roughly 200 bytes, is not counted). A single value larger
            than this raises :class:`~sesscache.errors.ValueTooLarge`.
        clock: monotonic seconds; injectable for tests.

    ``get``, ``set``, ``delete`` and ``pop`` are O(1) and hold one lock for a few dictionary
    operations, so they are safe from OpenSSL callbacks running in many threads. Expired entries
    are never returned; they are dropped when touched, when they reach the LRU end during a
    ``set``, or by :meth:`purge_expired`.

    Counters for the cache to report: :attr:`evictions` (live entries pushed out by the size
    limits) and :attr:`expired` (entries dropped because their ttl had passed).
    """

    kind = "memory"

    def __init__(
        self,
        max_sessions: int = 20_000,
        max_bytes: Optional[int] = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if isinstance(max_sessions, bool) or not isinstance(max_sessions, int) or max_sessions < 1:
            raise ConfigurationError(
                f"max_sessions must be an int >= 1, got {max_sessions!r}"
            )
        if max_bytes is not None and (
            isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1
        ):
            raise ConfigurationError(
                f"max_bytes must be None (no byte limit) or an int >= 1, got {max_bytes!r}"
            )
        self.max_sessions = max_sessions
        self.max_bytes = max_bytes
        self._clock = clock
        self._lock = threading.Lock()
        # key -> (value, expires). Order is recency: the first entry is the least recently used.
        self._data: "OrderedDict[bytes, Tuple[bytes, float]]" = OrderedDict()
        self._bytes = 0
        #: Live entries removed to make room (max_sessions or max_bytes reached).
        self.evictions = 0
        #: Entries dropped because their ttl had passed.
        self.expired = 0

    # Note on secrets: removing an entry only drops Python's reference to the bytes object.
    # CPython gives no way to wipe an immutable ``bytes`` (copies may exist anyway: the
    # serialized session passed through several buffers), so session bytes stay in freed
    # memory until it is reused. Seal values (sesscache.sealing) if process memory dumps
    # are a concern; that does not help against a live attacker in the process either.

    def get(self, key: bytes) -> Optional[bytes]:
        if type(key) is not bytes:
            key = as_bytes(key, "key")
        now = self._clock()
        with self._lock:
            entry = self._data.get(key)
            if entry is None:
                return None
            if entry[1] <= now:
                del self._data[key]
                self._bytes -= len(key) + len(entry[0])
                self.expired += 1
                return None
            self._data.move_to_end(key)
            return entry[0]

    def set(self, key: bytes, value: bytes, ttl: float) -> None:
        if type(key) is not bytes:
            key = as_bytes(key, "key")
        if type(value) is not bytes:
            value = as_bytes(value, "value")
        if not (type(ttl) is float and 0.0 < ttl <= MAX_TTL):
            ttl = check_ttl(ttl)
        size = len(key) + len(value)
        max_bytes = self.max_bytes
        if max_bytes is not None and size > max_bytes:
            raise ValueTooLarge(
                f"entry of {size} bytes (key + value) exceeds MemoryStore max_bytes={max_bytes}; "
                "raise max_bytes or lower the cache's value size limit"
            )
        now = self._clock()
        entry = (value, now + ttl)
        with self._lock:
            data = self._data
            old = data.pop(key, None)
            if old is not None:
                self._bytes -= len(key) + len(old[0])
            data[key] = entry
            self._bytes += size
            if len(data) > self.max_sessions or (max_bytes is not None and self._bytes > max_bytes):
                self._shrink(now)
            else:
                self._purge_lru_end(now)

    def delete(self, key: bytes) -> None:
        if type(key) is not bytes:
            key = as_bytes(key, "key")
        with self._lock:
            entry = self._data.pop(key, None)
            if entry is not None:
                self._bytes -= len(key) + len(entry[0])

    def pop(self, key: bytes) -> Optional[bytes]:
        """Atomic get + delete: of several threads popping one key, exactly one gets the value."""
        if type(key) is not bytes:
            key = as_bytes(key, "key")
        now = self._clock()
        with self._lock:
            entry = self._data.pop(key, None)
            if entry is None:
                return None
            self._bytes -= len(key) + len(entry[0])
            if entry[1] <= now:
                self.expired += 1
                return None
            return entry[0]

    def purge_expired(self) -> int:
        """Drop every expired entry now; O(n) under the lock. Returns how many were dropped.

        Not needed for correctness (expired entries are never returned); call it from a timer if
        memory held by sessions nobody asks for again matters.
        """
        now = self._clock()
        with self._lock:
            dead = [k for k, (_, expires) in self._data.items() if expires <= now]
            for k in dead:
                value, _ = self._data.pop(k)
                self._bytes -= len(k) + len(value)
            self.expired += len(dead)
            return len(dead)

    def close(self) -> None:
        """Drop every entry. The store stays usable (and empty)."""
        with self._lock:
            self._data.clear()
            self._bytes = 0

    def describe(self) -> Dict[str, Any]:
        """``entries`` may include expired entries not yet purged; ``bytes`` is keys + values."""
        with self._lock:
            return {
                "kind": self.kind,
                "entries": len(self._data),
                "bytes": self._bytes,
                "max_sessions": self.max_sessions,
                "max_bytes": self.max_bytes,
                "evictions": self.evictions,
                "expired": self.expired,
            }

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"<MemoryStore entries={len(self._data)} max_sessions={self.max_sessions}>"

    # -- helpers, called with the lock held ------------------------------------------------

    def _purge_lru_end(self, now: float) -> None:
        data = self._data
        for _ in range(_PURGE_PEEK):
            if not data:
                return
            key = next(iter(data))
            value, expires = data[key]
            if expires > now:
                return
            del data[key]
            self._bytes -= len(key) + len(value)
            self.expired += 1

    def _shrink(self, now: float) -> None:
        data = self._data
        max_bytes = self.max_bytes
        while len(data) > self.max_sessions or (max_bytes is not None and self._bytes > max_bytes):
            key, (value, expires) = data.popitem(last=False)
            self._bytes -= len(key) + len(value)
            if expires <= now:
                self.expired += 1
            else:
                self.evictions += 1
