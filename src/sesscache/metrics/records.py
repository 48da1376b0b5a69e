"""Per-process records in the store: what ``python -m sesscache stats --store URL`` and the
one ``/metrics`` of a multi-worker server read.

Every ``interval`` seconds a :class:`RecordPublisher` writes its process's counters
(:func:`~sesscache.metrics._snapshot.cache_snapshot`) as a small JSON record, with host,
pid and server label, under a key of its own with a time to live of a few intervals: a
process that dies without a word disappears by itself. No store can list its keys (memcached
cannot, and the others do not offer it), so the records keep an index of their own: one key
holding ``{record key: expiry}``, changed with ``compare_and_set`` (atomic in every bundled
store), bounded to :data:`MAX_RECORDS` entries, expired entries dropped at each change. A
process touches the index only when its entry is missing or half-expired.

The publisher writes to the store behind the cache's wrapper (``ResilientStore.backend``)
from its own thread, so records never wait in the handshakes' write queue nor count in its
numbers. It stops for good at :meth:`RecordPublisher.close` (a last record marked closed)
and, in a forked child, at once: the child's own cache starts its own.
"""
from __future__ import annotations

import atexit
import json
import logging
import os
import socket
import threading
import time
import weakref
from typing import Any, Callable, Dict, List, Optional

from .. import _fork
from ..errors import ConfigurationError
from ..stores.resilient import ResilientStore
from ._snapshot import cache_snapshot, resumption

logger = logging.getLogger(__name__)

INDEX_KEY = b"sc1-records-index"
RECORD_PREFIX = b"sc1-record:"
RECORD_VERSION = 1
#: Records the index keeps at most (processes alive within a record's lifetime).
MAX_RECORDS = 1024
DEFAULT_INTERVAL = 5.0
#: A record lives this many intervals (at least MIN_TTL seconds) past its last write.
TTL_INTERVALS = 3
MIN_TTL = 15.0
_CAS_TRIES = 20


def _raw(store: Any) -> Any:
    """The store itself, not the cache's write-behind wrapper."""
    return store.backend if isinstance(store, ResilientStore) else store


def _load_index(blob: Optional[bytes]) -> Dict[str, float]:
    if not blob:
        return {}
    try:
        data = json.loads(bytes(blob).decode("utf-8"))
        return {str(k): float(v) for k, v in data.items()} if isinstance(data, dict) else {}
    except (ValueError, UnicodeDecodeError, TypeError, AttributeError):
        return {}  # a damaged index is rebuilt by the next publishers


class RecordPublisher:
    """Publishes one process's counters to ``store`` every ``interval`` seconds.

    :param snapshot: returns the counters (``lambda: cache_snapshot(cache)``).
    :param server: a label naming the server (the same in every worker of one server; the
        integrations use the session id context unless told otherwise).
    """

    def __init__(self, store: Any, snapshot: Callable[[], Dict[str, Any]], *, server: str,
                 interval: float = DEFAULT_INTERVAL, start: bool = True) -> None:
        if not isinstance(interval, (int, float)) or not 0.05 <= interval <= 3600:
            raise ConfigurationError(f"the records' interval must be 0.05 to 3600 seconds, got {interval!r}")
        self.store = _raw(store)
        self.snapshot = snapshot
        self.server = str(server)
        self.interval = float(interval)
        self.ttl = max(TTL_INTERVALS * self.interval, MIN_TTL)
        self.host = socket.gethostname()
        self._begin()
        _fork.renew_in_child(self._renew_after_fork)
        _LIVE.add(self)
        if start:
            self.start()

    def _begin(self) -> None:
        self.pid = os.getpid()
        self.started = time.time()
        # pid 1 in every container: a random part keeps two hosts' records apart.
        self.key = RECORD_PREFIX + f"{self.pid}-{os.urandom(6).hex()}".encode()
        self._stop = threading.Event()
        self._lock = threading.Lock()  # one publish at a time (the thread, a scrape, close)
        self._thread: Optional[threading.Thread] = None
        self._indexed_until = 0.0
        self._closed = False
        self.published = 0  #: records written
        self.failures = 0  #: publishes that failed (the store unreachable, ...)
        self.on_tick: List[Callable[[], None]] = []  #: called after each publish, in its thread

    def _renew_after_fork(self) -> None:
        """In a forked child: this record is the parent's; the child's cache makes its own."""
        self._begin()
        self._closed = True

    def start(self) -> "RecordPublisher":
        if self._thread is None and not self._closed:
            self._thread = threading.Thread(target=self._run, name="sesscache-records", daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.publish()
            for tick in list(self.on_tick):
                try:
                    tick()
                except Exception:  # pragma: no cover - a hook's bug must not stop the records
                    logger.exception("sesscache: a records hook failed")
            self._stop.wait(self.interval)

    def record(self, closed: bool = False) -> Dict[str, Any]:
        return {"v": RECORD_VERSION, "host": self.host, "pid": self.pid, "server": self.server,
                "started": self.started, "at": time.time(), "interval": self.interval,
                "closed": closed, "counters": self.snapshot()}

    def publish(self, closed: bool = False) -> bool:
        """Write the record now (and the index entry when due); False when the store failed."""
        with self._lock:
            if self._closed or self.pid != os.getpid():
                return False
            try:
                blob = json.dumps(self.record(closed), separators=(",", ":")).encode()
                self.store.set(self.key, blob, self.ttl)
                now = time.time()
                if self._indexed_until - now < self.ttl / 2:
                    self._indexed_until = self._index(now)
            except Exception as exc:  # StoreError, or a store's bug: records are best effort
                self.failures += 1
                if self.failures == 1 or self.failures % 100 == 0:
                    logger.warning("sesscache: could not publish this process's counters to the store "
                                   "(%s: %s); python -m sesscache stats will not list it until it can "
                                   "(%d failures so far)", type(exc).__name__, exc, self.failures)
                return False
            self.published += 1
            return True

    def _index(self, now: float) -> float:
        """Put this record in the index (compare-and-set, retried); its expiry there."""
        expires = now + 2 * self.ttl  # refreshed at half that: an entry outlives its record
        me = self.key.decode()
        for _ in range(_CAS_TRIES):
            current = self.store.get(INDEX_KEY)
            entries = {k: v for k, v in _load_index(current).items() if v > now}
            entries[me] = expires
            if len(entries) > MAX_RECORDS:
                for stale in sorted(entries, key=entries.get)[:len(entries) - MAX_RECORDS]:
                    if stale != me:
                        del entries[stale]
            blob = json.dumps(entries, separators=(",", ":")).encode()
            if self.store.compare_and_set(INDEX_KEY, current, blob, 2 * self.ttl + 60):
                return expires
            time.sleep(0.001 + (os.getpid() % 7) * 0.0005)
        raise RuntimeError(f"the records index changed {_CAS_TRIES} times in a row while this process "
                           "tried to add itself")

    def close(self) -> None:
        """A last record, marked closed (it stays until its time to live runs out); then stop."""
        if self._closed:
            return
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=self.interval + 5)
        self.publish(closed=True)
        self._closed = True


_LIVE: "weakref.WeakSet[RecordPublisher]" = weakref.WeakSet()


@atexit.register
def _close_at_exit() -> None:
    """A process that exits normally says so in its last record."""
    for publisher in list(_LIVE):
        if publisher.pid == os.getpid():
            try:
                publisher.close()
            except Exception:  # pragma: no cover - never fail an interpreter's exit
                pass


def read_records(store: Any) -> List[Dict[str, Any]]:
    """Every live record in ``store``, sorted by host, server and pid. StoreError when the
    store cannot be read."""
    store = _raw(store)
    index = _load_index(store.get(INDEX_KEY))
    now = time.time()
    out = []
    for key, expires in index.items():
        if expires <= now:
            continue
        blob = store.get(key.encode())
        if blob is None:
            continue
        try:
            record = json.loads(bytes(blob).decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            continue
        if isinstance(record, dict) and record.get("v") == RECORD_VERSION and "counters" in record:
            out.append(record)
    out.sort(key=lambda r: (r.get("host", ""), r.get("server", ""), r.get("pid", 0)))
    return out


def publisher_for_cache(cache: Any, *, server: str, interval: float = DEFAULT_INTERVAL,
                        extra: Optional[Callable[[Dict[str, Any]], None]] = None,
                        store: Any = None) -> RecordPublisher:
    """A started :class:`RecordPublisher` for ``cache``'s counters, into ``store`` (default:
    ``cache.store``). ``extra(snapshot)`` may add to each record (e.g. ``ticket_keys``)."""
    def snapshot() -> Dict[str, Any]:
        snap = cache_snapshot(cache)
        if extra is not None:
            extra(snap)
        return snap

    return RecordPublisher(cache.store if store is None else store, snapshot, server=server, interval=interval)


__all__ = ["RecordPublisher", "read_records", "publisher_for_cache", "resumption", "INDEX_KEY", "MAX_RECORDS"]
