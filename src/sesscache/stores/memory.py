"""In-process store: an LRU table with per-entry expiry, kept in C.

The default store. It is shared by the threads of one process only; a server with several
worker processes needs :class:`~sesscache.stores.sqlite.SQLiteStore` or a network store for
workers to resume each other's sessions.

The table itself lives in the compiled module (``csrc/memory_store.c``), so that a
:class:`~sesscache.SessionCache` over it can store and look sessions up from libssl's
callbacks without entering Python at all (see ``csrc/fast_path.c``). This class is
its Python face, for the cache's other paths and for you.
"""
from __future__ import annotations

import struct
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from .._binding import ffi, lib
from ..errors import ConfigurationError, ValueTooLarge
from .base import BaseStore, as_bytes, checked_entry, closed_error
from .capabilities import CTableView

__all__ = ["MemoryStore"]

_DUMP_RECORD = struct.Struct("=IId")


class MemoryStore(BaseStore):
    """Thread-safe LRU + TTL store in process memory.

    Args:
        max_sessions: most entries held; setting one more evicts the least recently used.
        max_bytes: optional cap on the sum of ``len(key) + len(value)`` over all entries (the
            table's own overhead, about 80 bytes an entry, is not counted). A single value
            larger than this raises :class:`~sesscache.errors.ValueTooLarge`.
        clock: monotonic seconds; injectable for tests. With any clock but the default,
            a cache over this store serves every event from Python (the C fast path reads
            the real monotonic clock).

    ``get``, ``set``, ``delete`` and ``pop`` are O(1) and hold one mutex for a few table
    operations, so they are safe from OpenSSL callbacks running in many threads. Expired
    entries are never returned; they are dropped when touched, when they reach the LRU end
    during a ``set``, or by :meth:`purge_expired`. Every dropped entry is wiped (zeroed)
    before its memory is freed: the session bytes hold the master secret.

    A cache's C fast path keeps the session it decoded from an entry beside the entry, for
    later lookups to copy rather than decode again: at most ``min(max_sessions, 2048)`` of
    them, about 1.1 KB each, not counted in ``max_bytes``; they go with their entries.

    Counters for the cache to report: :attr:`evictions` (live entries pushed out by the size
    limits) and :attr:`expired` (entries dropped because their ttl had passed).
    """

    kind = "memory"
    _closed = False

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
        #: True when the C fast path may use this store (it reads the real monotonic clock).
        self._real_clock = clock is time.monotonic
        self._clock = lib.sc_monotonic if self._real_clock else clock
        table = lib.sc_mem_new(max_sessions, -1 if max_bytes is None else max_bytes)
        if table == ffi.NULL:
            raise MemoryError("cannot allocate the MemoryStore table")
        # The finalizer wipes and frees every entry; the small struct itself stays (see
        # csrc/memory_store.c: a libssl callback may still hold the pointer).
        self._table = ffi.gc(table, lib.sc_mem_close_forever)
        self._cas_guard = threading.Lock()  # compare_and_set's read and write, together

    # Note on secrets: entries are wiped in C when dropped. What Python reads out with get()
    # is an immutable bytes object that CPython gives no way to wipe; the cache's C fast
    # path never makes one.

    def get(self, key: bytes) -> Optional[bytes]:
        return self._read(key, 0)

    def set(self, key: bytes, value: bytes, ttl: float) -> None:
        if self._closed:
            raise closed_error(self)
        key, value, ttl = checked_entry(key, value, ttl)
        done = lib.sc_mem_set(self._table, key, len(key), value, len(value), ttl, self._clock())
        if done == -1:
            raise ValueTooLarge(
                f"entry of {len(key) + len(value)} bytes (key + value) exceeds MemoryStore "
                f"max_bytes={self.max_bytes}; raise max_bytes or lower the cache's value size limit"
            )
        if done != 1:
            raise MemoryError("MemoryStore could not allocate an entry")

    def delete(self, key: bytes) -> None:
        if self._closed:
            raise closed_error(self)
        if type(key) is not bytes:
            key = as_bytes(key, "key")
        lib.sc_mem_delete(self._table, key, len(key))

    def pop(self, key: bytes) -> Optional[bytes]:
        """Atomic get + delete: of several threads popping one key, exactly one gets the value."""
        return self._read(key, 1)

    def _read(self, key: bytes, take: int) -> Optional[bytes]:
        if self._closed:
            raise closed_error(self)
        if type(key) is not bytes:
            key = as_bytes(key, "key")
        size = ffi.new("size_t *")  # per call: threads read at once
        copy = lib.sc_mem_get(self._table, key, len(key), self._clock(), take, size)
        if copy == ffi.NULL:
            return None
        try:
            return ffi.unpack(ffi.cast("char *", copy), size[0])
        finally:
            lib.sc_mem_free_copy(copy, size[0])

    def purge_expired(self) -> int:
        """Drop every expired entry now; O(n) under the lock. Returns how many were dropped.

        Not needed for correctness (expired entries are never returned); call it from a timer if
        memory held by sessions nobody asks for again matters.
        """
        return int(lib.sc_mem_purge_expired(self._table, self._clock()))

    def c_tables(self) -> Optional[CTableView]:
        """The "C tables" capability (:mod:`sesscache.stores.capabilities`): this store's
        table, which a :class:`~sesscache.SessionCache`'s C fast path reads and writes
        sessions in without entering Python. None with another clock than the real one (C
        reads the real monotonic clock) or in a subclass (its methods may differ from C's)."""
        if type(self) is not MemoryStore or not self._real_clock:
            return None
        return CTableView(table=self._table, new_in_c=True)

    def clear(self) -> None:
        """Drop (and wipe) every entry; the store stays open (the same C table: a cache's
        fast path that reads it keeps reading it)."""
        if self._closed:
            raise closed_error(self)
        lib.sc_mem_close(self._table, 0)

    def close(self) -> None:
        """Drop (and wipe) every entry, for good: later calls raise StoreError (a cache's C
        fast path hands them to Python, which counts them as store errors)."""
        self._closed = True
        lib.sc_mem_close(self._table, 1)

    @property
    def evictions(self) -> int:
        """Live entries removed to make room (max_sessions or max_bytes reached)."""
        return self._info().evictions

    @property
    def expired(self) -> int:
        """Entries dropped because their ttl had passed."""
        return self._info().expired

    def describe(self) -> Dict[str, Any]:
        """``entries`` may include expired entries not yet purged; ``bytes`` is keys + values;
        ``decoded``: the sessions the fast path keeps decoded beside their entries."""
        info = self._info()
        return {
            "kind": self.kind,
            "entries": info.entries,
            "bytes": info.bytes,
            "max_sessions": self.max_sessions,
            "max_bytes": self.max_bytes,
            "evictions": info.evictions,
            "expired": info.expired,
            "decoded": info.decoded,
        }

    def entries(self) -> List[Tuple[bytes, bytes, float]]:
        """A snapshot of ``(key, value, expires)``, least recently used first (expired
        entries not purged yet included); for tests and debugging, O(n) under the lock."""
        while True:
            need = lib.sc_mem_dump(self._table, ffi.NULL, 0)
            buffer = ffi.new("unsigned char[]", max(need, 1))
            if lib.sc_mem_dump(self._table, buffer, need) == need:
                break  # (the table changed between the two calls otherwise: try again)
        raw = ffi.buffer(buffer, need)[:]
        out = []
        at = 0
        while at < need:
            key_len, value_len, expires = _DUMP_RECORD.unpack_from(raw, at)
            at += _DUMP_RECORD.size
            out.append((raw[at:at + key_len], raw[at + key_len:at + key_len + value_len], expires))
            at += key_len + value_len
        return out

    def _info(self):
        info = ffi.new("sc_mem_info *")
        lib.sc_mem_describe(self._table, info)
        return info

    def __len__(self) -> int:
        return int(self._info().entries)

    def __repr__(self) -> str:
        return f"<MemoryStore entries={len(self)} max_sessions={self.max_sessions}>"

    # -- compare-and-set (session-ticket key rings; see sesscache.ticket_keys) ------------

    def compare_and_set(self, key: bytes, expected: Optional[bytes], value: bytes, ttl: float) -> bool:
        """Set ``key`` to ``value`` only if its live value is ``expected`` (None: absent);
        True when written. Atomic with respect to other ``compare_and_set`` calls on this
        store (it is one process's memory); a plain ``set`` of the same key in between is
        not excluded."""
        key, value, ttl = checked_entry(key, value, ttl)
        with self._cas_guard:
            if self._read(key, 0) != expected:
                return False
            self.set(key, value, ttl)
            return True
