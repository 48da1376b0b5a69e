"""``ResilientStore``: no handshake waits on a sick network store.

OpenSSL calls the cache from inside the handshake, so whatever the store costs, the client
waits for. A healthy Redis answers in ~0.1 ms; a paused one (SIGSTOP, a stuck failover, a
dead cluster node) costs every call the store's whole ``timeout``. Measured with
``RedisStore(timeout=0.05)`` on a paused Redis: a full handshake 52 ms instead of 1.2 ms,
because it waited for its session's write. This wrapper takes those waits out:

* **Writes behind the handshake.** ``set`` and ``delete`` are queued (bounded:
  ``max_pending_writes``) and written by one background thread per process and store, in
  the order they were made; the writer sends what queued up in one call (``write_many``:
  one pipelined round trip for Redis), after lingering for more: 2 ms while busy (8 writes
  in 10 ms), otherwise while writes keep coming, 0.5 ms at a time (the two tickets of a TLS
  1.3 handshake share a call). Until a write lands,
  this process answers ``get`` for that key from the queued copy, so a client coming back
  to the same process resumes. A full queue drops the write (counted): the session stays
  in OpenSSL's own cache.
* **Other servers wait for a write on its way.** A client may reconnect at once to another
  server, before its session's write landed. Session ids carry their issue time
  (``sesscache.session_ids``): a lookup that misses a session issued less than
  ``new_session_wait`` (0.1 s) ago asks again (or watches the local replica) until it
  lands, at most that long, for at most ``max_waiting`` lookups at once, and for none in
  the second after a wait that found nothing; any other miss answers at once. Measured with a store whose writes take 20 ms: 100 % of such
  reconnections resumed (0-2 % without waiting), a reconnection then taking ~25 ms.
* **A breaker shared by all callers.** A store (or, for Redis Cluster, one node) that fails
  ``trip_after`` times in a row (lookups or writes, any thread) is paused for
  ``retry_after`` seconds: lookups raise :class:`~sesscache.errors.StorePaused` at once (a
  full handshake, counted by the cache in ``errors``), writes are shed; then one call tries
  it again and its success ends the pause. The pause is logged once when it starts and once
  when it ends. Lookups still go to the store synchronously (with the store's own
  ``timeout``), as OpenSSL's session callback must answer before the handshake goes on.
* **Fork-safe, flushed at exit.** A forked child starts with an empty queue and its own
  writer thread (the parent still writes what it queued); at interpreter exit and on
  :meth:`close`, queued writes get up to ``flush_timeout`` seconds to land.

What it offers: ``get``, ``set``, ``delete``, ``wait_for_write``, ``flush`` always; ``pop``
(atomic), ``close`` (and ``with``), ``compare_and_set`` and ``c_tables`` only when its backend
has them (:mod:`sesscache.stores.capabilities`), so ``hasattr(wrapper, "pop")`` tells the
truth up front. Without ``close``, its writer thread ends with the wrapper and queued writes
still get ``flush_timeout`` at interpreter exit.

Per-node health: when the backend has a ``health_domain(key)`` method (``RedisStore`` in
cluster mode returns the node that serves the key's slot), each domain gets its own breaker,
so one dead master pauses only the keys it serves.

``SessionCache`` wraps a store whose class says ``remote = True`` (``RedisStore``,
``MemcachedStore``) in a ``ResilientStore`` with these defaults; wrap it yourself to choose
other settings (``SessionCache(ResilientStore(RedisStore(url), trip_after=3))``), or to turn
write-behind off (``write_behind=False``: writes wait for the store, still behind the breaker).
"""
from __future__ import annotations

import collections
import logging
import os
import threading
import time
from dataclasses import dataclass, fields
from typing import Any, Deque, Dict, Hashable, Optional, Tuple

from ..errors import ConfigurationError, StoreError, StorePaused, ValueTooLarge
from .. import _fork
from .._binding import ffi, lib
from .base import BaseStore, as_bytes, checked_entry
from .capabilities import Capabilities, CTableView, capabilities_of, compose, describe_store, evictions_of, is_remote
from .breaker import DEFAULT_RETRY_AFTER, DEFAULT_TRIP_AFTER, StoreBreaker, check_trip_after
from .._burstlog import BurstLogger
from .._id_stamps import FruitlessWaits, poll_pauses, wait_left

__all__ = ["ResilientStore", "ResilienceStats", "wrap_remote_store", "DEFAULT_MAX_PENDING_WRITES",
           "DEFAULT_WRITE_WAIT"]

logger = logging.getLogger(__name__)

#: Writes queued and not yet landed, per store and process; beyond it a write is dropped.
DEFAULT_MAX_PENDING_WRITES = 4096
#: 0: every write goes behind the handshake. Above 0, writes faster than this (seconds)
#: are made in the caller's thread, slower ones go behind.
DEFAULT_WRITE_WAIT = 0.0
#: Seconds queued writes get to land at close() and at interpreter exit.
DEFAULT_FLUSH_TIMEOUT = 1.0
#: How long a lookup waits for the write of a session issued moments ago (seconds).
DEFAULT_NEW_SESSION_WAIT = 0.1
#: Lookups per process and store that may wait for a write at the same time.
DEFAULT_MAX_WAITING = 8
#: Queued writes the writer sends to the store in one go (one round trip for a backend
#: with ``write_many``).
WRITE_BATCH = 64
#: Seconds the writer waits, once woken, for more writes to send in the same round trip.
#: Under load, batching is what keeps the writer's thread from taking turns with the
#: handshakes for every write (measured: TLS 1.3 resumptions through Redis with a local
#: replica, 0.68x of MemoryStore's rate writing each at once). The wait is covered by
#: ``new_session_wait`` on the other servers.
WRITE_LINGER = 0.002
#: The writer lingers that long while busy: BUSY_WRITES or more writes in a BUSY_WINDOW
#: (seconds). Quiet, it lingers while writes keep coming, QUIET_LINGER at a time (at most
#: WRITE_LINGER): the writes one handshake makes together (TLS 1.3 sends two tickets) then
#: share a round trip, which with a store far away is what lets the second land as soon as
#: the first.
#: With the new-session ring, the writer lingers this long while busy instead: its wait
#: costs no handshake anything (C fills the ring), and each round trip it saves is Python
#: work and a redis-server wake-up less on a machine the handshakes keep busy (TLS 1.3
#: resumptions through the replica, server side: 0.88x of MemoryStore's rate lingering 2 ms,
#: 0.93x lingering 8 ms, one short run each). Quiet, it lingers QUIET_LINGER as without.
RING_LINGER = 0.005
BUSY_WRITES = 8
BUSY_WINDOW = 0.01
QUIET_LINGER = 0.0005

#: Slots of the new-session ring (csrc/new_session_ring.c), per store and process: new
#: sessions the C fast path hands the writer thread without entering Python. About 1.1 KB
#: each; a full ring drops (counted in ``ring_dropped``).
DEFAULT_NEW_SESSION_RING = 1024

#: New sessions taken from the ring in one go.
_RING_TAKE = WRITE_BATCH

_STOP = object()
_GIVE_UP = object()


@dataclass
class ResilienceStats:
    """What the wrapper did (a snapshot). Writes add up:
    ``writes_queued == writes + write_errors + writes_shed + writes_expired + pending``
    (``writes_dropped`` were never queued)."""

    lookups: int = 0  #: get/pop calls sent to the store
    found: int = 0  #: of them, answered with a value
    lookup_errors: int = 0  #: of them, failed (StoreError: timeout, unreachable, ...)
    lookups_shed: int = 0  #: lookups not attempted because the store was paused
    pending_hits: int = 0  #: lookups answered from a write still queued in this process
    writes_queued: int = 0  #: set/delete calls queued for the background writer
    writes: int = 0  #: queued writes that landed in the store
    write_errors: int = 0  #: queued writes the store refused or did not answer
    writes_shed: int = 0  #: queued writes not attempted because the store was paused
    writes_expired: int = 0  #: queued writes whose ttl ran out before their turn
    writes_dropped: int = 0  #: writes refused at once: the queue was full (max_pending_writes)
    write_waits: int = 0  #: sets written in the caller's thread (writes then faster than write_wait)
    pending: int = 0  #: writes queued or being written now
    pauses: int = 0  #: times a store (or a cluster node) was paused after trip_after failures
    paused_now: int = 0  #: stores (cluster nodes) paused at the moment of the snapshot
    new_session_waits: int = 0  #: missed lookups that waited for a session issued moments ago
    new_session_found: int = 0  #: of them, found once its write landed
    new_session_polls: int = 0  #: calls to the store while waiting (not in ``lookups``); a
    #: failed one feeds the breaker and ends the wait
    waits_refused: int = 0  #: such lookups not let wait: max_waiting were waiting already, or a
    #: wait found nothing less than a second ago
    write_batches: int = 0  #: times the writer took several queued writes in one call (however
    #: it ended: written, shed or failed)
    write_calls_failed: int = 0  #: calls to the store that failed writing (a batch is one call)
    ring_writes: int = 0  #: new sessions the C fast path put in the new-session ring (queued
    #: from there by the writer: in ``writes_queued`` too once taken)
    ring_dropped: int = 0  #: new sessions dropped because the new-session ring was full (they
    #: stay in this process: its replica's table and OpenSSL's own cache)

    def as_dict(self) -> Dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class _WriterState:
    """What the writer thread and :meth:`ResilientStore.flush` share (under the queue's lock)."""

    __slots__ = ("busy",)

    def __init__(self) -> None:
        self.busy = False  #: the writer is writing items taken off the queue


class ResilientStore(BaseStore):
    """Wraps a synchronous store: writes behind the handshake, and a breaker (see the module
    docstring).

    :param backend: the real store (``RedisStore``, ``MemcachedStore``, your own).
    :param write_behind: queue ``set``/``delete`` for a background thread (default); False
        writes at once, still behind the breaker.
    :param write_wait: 0 (the default): every write is queued. Above 0, while the store's
        writes take less than this (seconds), ``set`` writes in the caller's thread instead
        (the handshake waits for it; for TLS 1.3 the ticket then reaches the client only
        after its session is stored); once ``trip_after`` writes in a row took longer,
        writes are queued until a queued one lands faster again. Costs a round trip per new
        session in the handshake (TLS 1.3 resumptions through Redis: 0.58x of MemoryStore's
        rate against 0.85x queued, measured); other servers wait for queued writes anyway
        (``new_session_wait``).
    :param max_pending_writes: writes queued at most; beyond it a write is dropped (counted).
    :param trip_after: failures in a row that pause the store (or one cluster node); ``None``
        never pauses.
    :param retry_after: seconds between trial calls to a paused store.
    :param flush_timeout: seconds queued writes get to land at :meth:`close` and at exit.
    :param log_interval: write failures are logged once per burst of this many seconds.
    :param new_session_wait: a lookup that misses a session issued less than this many
        seconds ago (by a sesscache server: its id carries the time, see
        ``sesscache.session_ids``) waits up to the rest of it for the session's write to
        land, asking the store again (or, with ``RedisStore(local_replica=...)``, watching
        the copy): a client that reconnects at once to another server still resumes. Any
        other miss answers at once. 0: never wait.
    :param max_waiting: lookups of this process that may wait so at the same time; the rest
        miss at once (counted in ``waits_refused``). After a wait that found nothing (a lost
        write, or a forged stamp), no lookup waits for a second: a flood of forged stamps
        costs at most ``new_session_wait`` per second on a server that handshakes on one
        thread, and ``max_waiting`` of them at once on others.
    :param new_session_ring: with a backend whose C tables are a local copy
        (``RedisStore(local_replica=...)``, what a Redis store URL opens), the C fast path
        stores each new session in the copy and copies it into a ring in C of this many
        slots, which the writer thread drains in batches: no Python on a new-session event
        (``csrc/new_session_ring.c``). A full ring drops (counted in ``ring_dropped``); a
        session larger than a slot (1 KiB), and every one of a ``single_use`` cache, goes
        through Python as before. 0: no ring. Default 1024 (about 1.1 MB per process).
    """

    kind = "resilient"
    #: The class this one was composed from (``ResilientStore``, or a subclass of yours):
    #: the instance's class adds the mixins of its backend's capabilities.
    composed_from: type = object

    def __new__(cls, backend: Any, **_settings: Any) -> "ResilientStore":
        caps = capabilities_of(backend)  # ConfigurationError for a backend that is no store
        return super().__new__(compose(cls, caps, _OFFERED, below=BaseStore))

    def __init__(self, backend: Any, *, write_behind: bool = True,
                 write_wait: float = DEFAULT_WRITE_WAIT,
                 max_pending_writes: int = DEFAULT_MAX_PENDING_WRITES,
                 trip_after: Optional[int] = DEFAULT_TRIP_AFTER,
                 retry_after: float = DEFAULT_RETRY_AFTER,
                 flush_timeout: float = DEFAULT_FLUSH_TIMEOUT, log_interval: float = 10.0,
                 new_session_wait: float = DEFAULT_NEW_SESSION_WAIT,
                 max_waiting: int = DEFAULT_MAX_WAITING,
                 new_session_ring: int = DEFAULT_NEW_SESSION_RING) -> None:
        caps: Capabilities = capabilities_of(backend)
        if isinstance(backend, ResilientStore):
            raise ConfigurationError("this store is already a ResilientStore; pass it as is")
        if isinstance(max_pending_writes, bool) or not isinstance(max_pending_writes, int) \
                or max_pending_writes < 1:
            raise ConfigurationError(f"max_pending_writes must be an int >= 1, got {max_pending_writes!r}")
        check_trip_after(trip_after)
        if isinstance(new_session_ring, bool) or not isinstance(new_session_ring, int) \
                or not 0 <= new_session_ring <= 65536:
            raise ConfigurationError(f"new_session_ring is a number of sessions from 0 (none) to 65536, "
                                     f"got {new_session_ring!r}")
        if isinstance(max_waiting, bool) or not isinstance(max_waiting, int) or max_waiting < 1:
            raise ConfigurationError(f"max_waiting must be an int >= 1, got {max_waiting!r}")
        for name, value in (("retry_after", retry_after), ("flush_timeout", flush_timeout),
                            ("write_wait", write_wait), ("new_session_wait", new_session_wait)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 3600:
                raise ConfigurationError(f"{name} must be seconds in [0, 3600], got {value!r}")
        self.backend = backend
        self.write_behind = bool(write_behind)
        self.write_wait = float(write_wait)
        self._slow_writes = 0  # writes in a row that took longer than write_wait
        self.max_pending_writes = max_pending_writes
        self.trip_after = trip_after
        self.retry_after = float(retry_after)
        self.flush_timeout = float(flush_timeout)
        self.new_session_wait = float(new_session_wait)
        self.max_waiting = max_waiting
        self.new_session_ring = new_session_ring
        self._ring: Any = None  #: sc_ring *, made when the cache's C fast path asks for tables
        self._ring_buffers: Any = None
        self._backend_caps = caps
        self._write_many = caps.write_many
        self._wait_in_backend = caps.wait_for_key
        self._forget_local = caps.forget_local
        self._domain_of = caps.health_domain
        self._breakers: Dict[Hashable, StoreBreaker] = {}
        self._default_breaker = StoreBreaker(trip_after, self.retry_after)
        self._counts = ResilienceStats().as_dict()
        self._burst = BurstLogger(logger, log_interval)
        self._closed = False
        self._start_over()
        _fork.renew_in_child(self._start_over_after_fork)
        _fork.at_exit(self._flush_at_exit)

    def _start_over(self) -> None:
        """The per-process half: queue, pending copies, writer thread, locks."""
        self._pid = os.getpid()
        self._lock = threading.Lock()  # counters, pending copies, breakers
        self._wakeup = threading.Condition(threading.Lock())  # the queue
        self._queue: Deque[Tuple[Any, ...]] = collections.deque()
        self._writer_state = _WriterState()
        # key -> (value, or None for a delete; monotonic expiry): the latest write of each
        # key that has not landed yet, so that this process answers for it meanwhile.
        self._pending: Dict[bytes, Tuple[Optional[bytes], float]] = {}
        self._writer: Optional[threading.Thread] = None
        self._waiting = threading.BoundedSemaphore(self.max_waiting)
        self._fruitless = FruitlessWaits()

    def _start_over_after_fork(self) -> None:
        # The parent's queue is the parent's to write; its locks may be held by threads that
        # do not exist here. Counters carry over (they describe this store's history).
        with_pending = self._counts["pending"]
        if self._ring is not None:  # the parent's entries are the parent's to write
            lib.sc_ring_after_fork(self._ring)
        self._start_over()
        self._counts["pending"] = 0
        self._counts["writes_queued"] -= with_pending  # keeps the sum true in the child
        self._default_breaker.reset_after_fork()
        for breaker in self._breakers.values():
            breaker.reset_after_fork()
        if self._ring is not None and not self._closed:
            self._start_writer()  # new sessions reach the ring without Python: nobody else would

    # --- statistics ---------------------------------------------------------------------

    @property
    def stats(self) -> ResilienceStats:
        ring_counts = self._ring_counts()
        with self._lock:
            snapshot = ResilienceStats(**self._counts)
            snapshot.ring_writes, snapshot.ring_dropped = ring_counts
            breakers = [self._default_breaker, *self._breakers.values()]
        snapshot.paused_now = sum(1 for b in breakers if b.is_open)
        return snapshot

    @property
    def evictions(self) -> int:
        return evictions_of(self.backend)

    def _count(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self._counts[name] += amount

    # --- the breaker ----------------------------------------------------------------------

    def _breaker_for(self, key: bytes) -> Tuple[Hashable, StoreBreaker]:
        if self._domain_of is None:
            return None, self._default_breaker
        try:
            domain = self._domain_of(key)
        except Exception:  # no map of the cluster yet: the store-wide breaker decides
            return None, self._default_breaker
        if domain is None:
            return None, self._default_breaker
        breaker = self._breakers.get(domain)
        if breaker is None:
            with self._lock:
                breaker = self._breakers.setdefault(domain, StoreBreaker(self.trip_after, self.retry_after))
        return domain, breaker

    def _answered(self, domain: Hashable, breaker: StoreBreaker) -> None:
        if breaker.succeeded():
            logger.info("sesscache: the session store %s answers again; lookups and writes resume",
                        self._name(domain))

    def _failed(self, domain: Hashable, breaker: StoreBreaker) -> None:
        if breaker.failed(time.monotonic()):
            self._count("pauses")
            logger.warning(
                "sesscache: the session store %s failed %d times in a row; it is left alone for "
                "retry_after=%.1fs (clients get a full handshake at once, new sessions stay in "
                "this process), then one call tries it again. Check the store",
                self._name(domain), breaker.trip_after, breaker.retry_after)

    def _name(self, domain: Hashable) -> str:
        where = repr(self.backend)
        return where if domain is None else f"{where} (node {domain})"

    def paused(self) -> Dict[str, bool]:
        """Which breakers are open now: ``{"store": bool}`` plus one entry per cluster node seen."""
        with self._lock:
            out = {"store": self._default_breaker.is_open}
            out.update({str(domain): b.is_open for domain, b in self._breakers.items()})
        return out

    # --- lookups ---------------------------------------------------------------------------

    def get(self, key: bytes) -> Optional[bytes]:
        return self._lookup(key, False)

    def _lookup(self, key: bytes, pop: bool) -> Optional[bytes]:
        self._check_open()
        if type(key) is not bytes:
            key = as_bytes(key, "key")
        if self._pending:
            found, value = self._from_pending(key, pop)
            if found:
                return value
        domain, breaker = self._breaker_for(key)
        if not breaker.allow(time.monotonic()):
            self._count("lookups_shed")
            raise StorePaused(
                f"the session store {self._name(domain)} is paused after {breaker.trip_after} "
                f"failures in a row; it is tried again every {breaker.retry_after:.1f}s")
        try:
            value = self._ask(key, pop, domain, breaker)
        except StoreError as exc:
            if not isinstance(exc, ValueTooLarge):
                self._count("lookup_errors")
            raise
        with self._lock:
            self._counts["lookups"] += 1
            if value is not None:
                self._counts["found"] += 1
        return value

    def _from_pending(self, key: bytes, pop: bool) -> Tuple[bool, Optional[bytes]]:
        with self._lock:
            entry = self._pending.get(key)
            if entry is None:
                return False, None
            value, expires = entry
            if value is not None and time.monotonic() >= expires:
                value = None
            if pop and value is not None:  # nobody else may take it meanwhile
                self._pending[key] = (None, expires)
            self._counts["pending_hits"] += 1
        if pop and value is not None:
            # Lands after the queued set; past the bound, or the popped session would
            # reach the store and could be resumed again.
            self._enqueue("delete", key, None, 0.0, always=True)
        return True, value

    def wait_for_write(self, key: bytes, issued: float, pop: bool = False) -> Optional[bytes]:
        """After a miss: the session under ``key``, issued at ``issued`` (seconds since the
        epoch, from its id's stamp), once its write lands, or None when it does not land
        within ``new_session_wait`` of ``issued`` (or the store is paused, or
        ``max_waiting`` lookups are waiting already). ``pop`` takes it (``single_use``)."""
        self._check_open()
        left = wait_left(issued, self.new_session_wait, time.time())
        if left <= 0 or key in self._pending:
            # A write of this key still queued here is the last word on it (a lookup found
            # it there first): a delete, a pop's delete above all. The store may already
            # hold the set before it, and a pop there would hand a single-use session out
            # twice.
            return None
        if not self._fruitless.allow(time.monotonic()) or not self._waiting.acquire(blocking=False):
            self._count("waits_refused")
            return None
        found = False
        try:
            self._count("new_session_waits")
            deadline = time.monotonic() + left
            for pause in poll_pauses(deadline, time.monotonic):
                # Each pause: with a local replica, waiting for the session to arrive in it
                # (woken at once when it does); else asleep. Then the store is asked again:
                # a write that was not published (another host without a replica, a message
                # lost) is found there too.
                waited = None if self._wait_in_backend is None else self._wait_in_backend(key, pause)
                if waited is None:
                    time.sleep(pause)
                value = self._poll(key, pop)
                if value is _GIVE_UP:
                    return None
                if value is not None:
                    self._count("new_session_found")
                    found = True
                    return value
            return None
        finally:
            if not found:
                self._fruitless.note(time.monotonic())
            self._waiting.release()

    def _poll(self, key: bytes, pop: bool) -> Any:
        """One more look for a session being waited for: its value, None, or _GIVE_UP when
        the store is paused or failed (the failure counts toward the breaker). Counted in
        ``new_session_polls`` only: the lookup that waits was counted once already. (Not
        the queue's copies: a session this process wrote was found there the first time.)"""
        domain, breaker = self._breaker_for(key)
        if not breaker.allow(time.monotonic()) or key in self._pending:
            return _GIVE_UP  # paused; or a write of the key was queued here meanwhile
        self._count("new_session_polls")
        try:
            return self._ask(key, pop, domain, breaker)
        except StoreError:
            return _GIVE_UP

    def _ask(self, key: bytes, pop: bool, domain: Hashable, breaker: StoreBreaker) -> Optional[bytes]:
        """One lookup in the backend, its outcome fed to the breaker (a value the store
        refuses as too large says nothing of the store's health)."""
        try:
            value = self.backend.pop(key) if pop else self.backend.get(key)
        except StoreError as exc:
            if not isinstance(exc, ValueTooLarge):
                self._failed(domain, breaker)
            raise
        self._answered(domain, breaker)
        return value

    # --- writes ------------------------------------------------------------------------------

    def set(self, key: bytes, value: bytes, ttl: float) -> None:
        self._check_open()
        key, value, ttl = checked_entry(key, value, ttl)
        if not self.write_behind:
            self._write_now("set", key, value, ttl)
            return
        if self.write_wait > 0 and self._slow_writes < (self.trip_after or 1) and key not in self._pending:
            self._write_inline(key, value, ttl)
            return
        self._enqueue("set", key, value, ttl)

    def _write_inline(self, key: bytes, value: bytes, ttl: float) -> None:
        """While the store's writes take less than ``write_wait``: write in the caller's
        thread (no hand-over to the writer and back: two thread switches, which on a loaded
        machine cost more than the round trip). Counted and never raised, as a queued write."""
        domain, breaker = self._breaker_for(key)
        start = time.monotonic()
        if not breaker.allow(start):
            outcome = "writes_shed"
        else:
            outcome = "writes"
            try:
                self.backend.set(key, value, ttl)
            except Exception as exc:  # StoreError, or a custom store's bug: never raised
                outcome = "write_errors"
                self._write_call_failed(exc, domain, breaker, "a session write")
            else:
                self._answered(domain, breaker)
            self._note_write_time(time.monotonic() - start)
        with self._lock:
            self._counts["writes_queued"] += 1
            self._counts["write_waits"] += 1
            self._counts[outcome] += 1

    def _note_write_time(self, seconds: float) -> None:
        # Unlocked: a lost update only moves the switch between inline and queued by a write.
        if seconds <= self.write_wait:
            self._slow_writes = 0
        else:
            self._slow_writes += 1

    def delete(self, key: bytes) -> None:
        self._check_open()
        if type(key) is not bytes:
            key = as_bytes(key, "key")
        if self._forget_local is not None:
            self._forget_local(key)  # a replica's copy goes now, the store's when written
        if self._ring is not None and lib.sc_ring_count(self._ring):
            with self._wakeup:  # a new session still in the ring is written before its delete
                self._pull_ring()
        if not self.write_behind:
            self._write_now("delete", key, None, 0.0)
            return
        self._enqueue("delete", key, None, 0.0)

    def _write_now(self, op: str, key: bytes, value: Optional[bytes], ttl: float) -> None:
        domain, breaker = self._breaker_for(key)
        if not breaker.allow(time.monotonic()):
            self._count("writes_shed")
            raise StorePaused(f"the session store {self._name(domain)} is paused; the write was not tried")
        try:
            if op == "set":
                self.backend.set(key, value, ttl)
            else:
                self.backend.delete(key)
        except ValueTooLarge:
            raise
        except StoreError:
            self._count("write_errors")
            self._count("write_calls_failed")
            self._failed(domain, breaker)
            raise
        self._answered(domain, breaker)
        self._count("writes")

    def _enqueue(self, op: str, key: bytes, value: Optional[bytes], ttl: float,
                 always: bool = False) -> None:
        if self._pid != os.getpid():  # forked without the hook (os.fork missing the at-fork call)
            self._start_over_after_fork()
        now = time.monotonic()
        if not always and self._breaker_for(key)[1].resting(now):
            # Paused: the writer would only shed it. Shed here, without waking the writer
            # (a thread switch per handshake); the session stays in OpenSSL's own cache.
            with self._lock:
                self._counts["writes_queued"] += 1
                self._counts["writes_shed"] += 1
            return
        expires = now + ttl
        entry = (value, expires)
        with self._wakeup:
            if len(self._queue) >= self.max_pending_writes and not always:
                dropped = True
            else:
                dropped = False
                self._queue.append((op, key, value, expires, entry, now))
                with self._lock:
                    self._pending[key] = entry
                    self._counts["writes_queued"] += 1
                    self._counts["pending"] += 1
                if len(self._queue) == 1 or always:
                    # Only the first write of a batch wakes the writer: it then lingers for
                    # more (WRITE_LINGER), and each wake-up is a thread switch. All: a
                    # flush() may be waiting on the same condition.
                    self._wakeup.notify_all()
                    if self._ring is not None:  # the writer may be waiting in the ring
                        lib.sc_ring_wake(self._ring)
        if dropped:
            self._count("writes_dropped")
            self._burst.log(logging.WARNING, "queue-full",
                            "sesscache: %d session writes are queued for %r (max_pending_writes); "
                            "new sessions stay in this process only until the store catches up",
                            self.max_pending_writes, self.backend)
            raise StoreError(
                f"{self.max_pending_writes} writes are already queued for the session store "
                "(max_pending_writes): the store is slower than the handshakes; raise "
                "max_pending_writes or check the store")
        if self._writer is None:
            self._start_writer()

    def _start_writer(self) -> None:
        with self._lock:
            if self._writer is not None:
                return
            # A weak reference: the thread must not keep a store nobody uses alive.
            self._writer = threading.Thread(target=_write_loop,
                                            args=(_fork.WeakMethod(self._write_batch), self._wakeup,
                                                  self._queue, self._writer_state, self._ring,
                                                  _fork.WeakMethod(self._pull_ring)),
                                            name="sesscache-writer", daemon=True)
        self._writer.start()

    # --- the new-session ring (csrc/new_session_ring.c) -------------------------------------

    def _c_tables_with_ring(self, view: Optional[CTableView]) -> Optional[CTableView]:
        """The backend's tables, with new sessions written by C when they are a local copy
        (a Redis replica) and writes go behind: the fast path stores each new session in
        the copy and in this store's ring, which the writer thread drains. No Python on a
        new-session event."""
        if view is None or view.new_in_c or view.complete or not self.write_behind \
                or self.new_session_ring == 0 or self._closed:
            return view
        with self._lock:
            if self._ring is None:
                _hand_setclock_to_c()
                ring = lib.sc_ring_new(self.new_session_ring)
                if ring == ffi.NULL:
                    return view
                self._ring = ring  # never freed: a fast-path policy may outlive this store
        return view._replace(policy_made=self._ring_policy_made)

    def _ring_policy_made(self, policy: Any) -> None:
        """A fast-path policy over this store's tables: its new sessions go to the ring."""
        lib.sc_fast_use_ring(policy, self._ring)
        self._start_writer()

    def _ring_counts(self) -> Tuple[int, int]:
        """(put, dropped) of this process's ring."""
        if self._ring is None:
            return 0, 0
        put, dropped, taken = ffi.new("long long *"), ffi.new("long long *"), ffi.new("long long *")
        lib.sc_ring_counts_of(self._ring, put, dropped, taken)
        return put[0], dropped[0]

    def _pull_ring(self) -> None:
        """Move the ring's new sessions to the queue, oldest first, as set writes (called
        by the writer thread with the queue's lock held, and before a delete). Up to the
        room left under max_pending_writes: the rest waits in the ring, which drops when full."""
        ring = self._ring
        room = min(self.max_pending_writes - len(self._queue), _RING_TAKE)
        if ring is None or room <= 0 or not lib.sc_ring_count(ring):
            return
        if self._ring_buffers is None:
            value_max = lib.sc_ring_value_max()
            self._ring_buffers = (ffi.new("unsigned char[]", _RING_TAKE * lib.SC_STORE_KEY_MAX),
                                  ffi.new("unsigned int[]", _RING_TAKE),
                                  ffi.new("unsigned char[]", _RING_TAKE * value_max),
                                  ffi.new("unsigned int[]", _RING_TAKE), ffi.new("double[]", _RING_TAKE),
                                  value_max)
        keys, key_lens, values, value_lens, expiries, value_max = self._ring_buffers
        taken = lib.sc_ring_take(ring, keys, key_lens, values, value_lens, expiries, room)
        if not taken:
            return
        now, wall = time.monotonic(), time.time()
        key_max = lib.SC_STORE_KEY_MAX
        queue, buffer = self._queue, ffi.buffer
        for i in range(taken):
            key = buffer(keys + i * key_max, key_lens[i])[:]
            value = buffer(values + i * value_max, value_lens[i])[:]
            expires = now + (expiries[i] - wall)
            queue.append(("set", key, value, expires, (value, expires), now))
        ffi.memmove(values, b"\0" * (taken * value_max), taken * value_max)  # session secrets
        with self._lock:
            self._counts["writes_queued"] += taken
            self._counts["pending"] += taken

    def _write_batch(self, items: "list[Tuple[Any, ...]]") -> None:
        """Write queued items: in one call per health domain when the backend has
        ``write_many`` (RedisStore: one pipelined round trip), else one by one."""
        if self._write_many is None or len(items) == 1:
            for item in items:
                self._write_one(item)
            return
        now = time.monotonic()
        groups: Dict[Hashable, Tuple[StoreBreaker, list]] = {}
        for item in items:
            domain, breaker = self._breaker_for(item[1])
            groups.setdefault(domain, (breaker, []))[1].append(item)
        for domain, (breaker, group) in groups.items():
            live = [item for item in group if item[0] != "set" or item[3] > now]
            outcomes = {id(item): "writes_expired" for item in group}
            if live:
                if not breaker.allow(now):
                    outcome = "writes_shed"
                else:
                    outcome = "writes"
                    try:
                        self._write_many([(op, key, value, expires - now if op == "set" else 0.0)
                                          for op, key, value, expires, _, _ in live])
                    except Exception as exc:
                        outcome = "write_errors"
                        self._write_call_failed(exc, domain, breaker,
                                                f"{len(live)} background session writes")
                    else:
                        self._answered(domain, breaker)
                        self._note_write_time(time.monotonic() - min(item[5] for item in live))
                for item in live:
                    outcomes[id(item)] = outcome
            with self._lock:
                if len(live) > 1:
                    self._counts["write_batches"] += 1
                for item in group:
                    self._settle(item, outcomes[id(item)])

    def _write_call_failed(self, exc: Exception, domain: Hashable, breaker: StoreBreaker,
                           what: str) -> None:
        """A call writing to the store failed: counted, fed to the breaker (unless only the
        value was refused), logged once per burst."""
        self._count("write_calls_failed")
        if isinstance(exc, StoreError) and not isinstance(exc, ValueTooLarge):
            self._failed(domain, breaker)
        self._burst.log(logging.WARNING, "write-error",
                        "sesscache: %s failed (%s: %s); the session stays in this process only",
                        what, type(exc).__name__, str(exc))

    def _settle(self, item: Tuple[Any, ...], outcome: str) -> None:
        """Count a queued write's outcome and drop its pending copy (under self._lock)."""
        key, entry = item[1], item[4]
        self._counts[outcome] += 1
        self._counts["pending"] -= 1
        if self._pending.get(key) is entry:  # no newer write of the key is queued
            del self._pending[key]

    def _write_one(self, item: Tuple[Any, ...]) -> None:
        op, key, value, expires, _, queued_at = item
        now = time.monotonic()
        outcome = "writes"
        if op == "set" and expires <= now:
            outcome = "writes_expired"
        else:
            domain, breaker = self._breaker_for(key)
            if not breaker.allow(now):
                outcome = "writes_shed"
            else:
                try:
                    if op == "set":
                        self.backend.set(key, value, expires - now)
                    else:
                        self.backend.delete(key)
                except Exception as exc:  # StoreError, or a custom store's bug: never kill the writer
                    outcome = "write_errors"
                    self._write_call_failed(exc, domain, breaker, f"a background session {op}")
                else:
                    self._answered(domain, breaker)
                    self._note_write_time(time.monotonic() - queued_at)
        with self._lock:
            self._settle(item, outcome)

    def flush(self, timeout: float = DEFAULT_FLUSH_TIMEOUT) -> bool:
        """Wait up to ``timeout`` seconds for every queued write to land (or fail). True if
        the queue is empty."""
        ring = self._ring
        with self._wakeup:
            state = self._writer_state
            if ring is None:
                return self._wakeup.wait_for(lambda: not self._queue and not state.busy, timeout)
            # The writer notifies when the queue empties; the ring fills without Python, so
            # it is looked at again every millisecond.
            deadline = time.monotonic() + timeout
            while self._queue or state.busy or lib.sc_ring_count(ring):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                lib.sc_ring_wake(ring)
                self._wakeup.wait(min(left, 0.001))
            return True

    # --- lifecycle -----------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"this ResilientStore ({self.backend!r}) was closed; make a new store")

    def _close(self) -> None:
        """Give queued writes up to ``flush_timeout`` to land, stop the writer thread, close the
        backend (the ``close`` of the Closing capability, offered when the backend has it)."""
        if self._closed:
            return
        self._closed = True
        if self._pid == os.getpid():
            if not self.flush(self.flush_timeout):
                logger.warning("sesscache: %d session writes to %r did not land within "
                               "flush_timeout=%.1fs and are dropped", len(self._queue), self.backend,
                               self.flush_timeout)
            with self._wakeup:
                self._queue.clear()
                self._queue.append(_STOP)  # type: ignore[arg-type]
                self._wakeup.notify()
                if self._ring is not None:
                    lib.sc_ring_wake(self._ring)
        if self._ring is not None:  # new sessions go through Python (and find it closed)
            lib.sc_ring_close(self._ring)
        close = self._backend_caps.close
        assert close is not None
        close()

    def _flush_at_exit(self) -> None:
        if not self._closed and self._pid == os.getpid() and self._writer is not None:
            self.flush(self.flush_timeout)

    def describe(self) -> Dict[str, Any]:
        """The backend's description once queued writes landed (waits up to
        ``flush_timeout``), plus ``resilience``: the counters and which breakers are open."""
        self.flush(self.flush_timeout)
        info = dict(describe_store(self.backend))
        info["resilience"] = {**self.stats.as_dict(), "write_behind": self.write_behind,
                              "trip_after": self.trip_after, "retry_after": self.retry_after,
                              "new_session_wait": self.new_session_wait,
                              "paused": self.paused()}
        return info

    def __repr__(self) -> str:
        return f"<ResilientStore {self.backend!r}>"


_setclock_handed = False


def _hand_setclock_to_c() -> None:
    """Give csrc/new_session_ring.c the C library's pthread_condattr_setclock (linked
    directly it would need a glibc newer than the wheels promise), once; without it the
    ring's waits are timed on the wall clock."""
    global _setclock_handed
    if _setclock_handed:
        return
    from .._binding import dynlink

    (address,) = dynlink.c_library_functions("pthread_condattr_setclock")
    if address:
        lib.sc_ring_use_setclock(ffi.cast("void *", address))
    _setclock_handed = True


def _pop(self: Any, key: bytes) -> Optional[bytes]:
    """Atomic in the store (the backend's ``pop``); a session still queued here is taken
    from the queue's copy, and a delete is queued behind its write."""
    return self._lookup(key, True)


def _close(self: Any) -> None:
    """Give queued writes up to ``flush_timeout`` to land, stop the writer thread, close the
    backend. Idempotent; a closed store raises StoreError."""
    self._close()


def _compare_and_set(self: Any, key: bytes, expected: Optional[bytes], value: bytes, ttl: float) -> bool:
    """The backend's own ``compare_and_set``, at once (not queued: it must see the store's
    value), behind no breaker (rare writes, such as a fleet's ticket-key rotation)."""
    self._check_open()
    return self._backend_caps.compare_and_set(key, expected, value, ttl)


def _c_tables(self: Any) -> Any:
    """The backend's process-local table of sessions (``RedisStore(local_replica=...)``),
    for SessionCache's C fast path to read lookups from (it hands every miss to
    :meth:`get`); None without one, or in a subclass. With ``write_behind`` (the default),
    C stores new sessions in it and hands them to the writer thread through the
    new-session ring (``new_session_ring``; ``single_use`` caches excepted): no Python on a
    new-session event. Else new sessions come through :meth:`set`."""
    if self.composed_from is not ResilientStore:
        return None
    return self._c_tables_with_ring(self._backend_caps.c_tables())


def _enter(self: Any) -> Any:
    return self


def _exit(self: Any, *exc_info: Any) -> None:
    self.close()


_pop.__name__, _close.__name__, _compare_and_set.__name__ = "pop", "close", "compare_and_set"
_c_tables.__name__, _enter.__name__, _exit.__name__ = "c_tables", "__enter__", "__exit__"
#: The optional capabilities a ResilientStore offers when its backend has them.
_OFFERED = {"pop": (_pop,), "close": (_close, _enter, _exit), "compare_and_set": (_compare_and_set,),
            "c_tables": (_c_tables,)}


def _write_loop(write_batch: "_fork.WeakMethod", wakeup: threading.Condition,
                queue: Deque[Tuple[Any, ...]], state: _WriterState, ring: Any = None,
                pull_ring: "Optional[_fork.WeakMethod]" = None) -> None:
    """The background writer: one per store and process, until close() queues _STOP. With a
    new-session ring it waits in C (the GIL released) for the ring or a wake from
    ``_enqueue``, and moves the ring's sessions to the queue (``_pull_ring``) each turn."""
    window_start, written_in_window, written_before = 0.0, 0, 0

    def pull() -> None:
        method = None if pull_ring is None else pull_ring()
        if method is not None:
            method()

    while True:
        with wakeup:
            while not queue:
                if write_batch() is None:
                    return
                if ring is None:
                    wakeup.wait(1.0)
                    continue
                pull()
                if queue:
                    break
                wakeup.release()
                try:
                    lib.sc_ring_wait(ring, 1.0)
                finally:
                    wakeup.acquire()
                pull()
            # Busy (more than BUSY_WRITES written in the last BUSY_WINDOW): wait WRITE_LINGER
            # for more, so that one round trip carries many writes and wakes the store once.
            # Quiet: wait QUIET_LINGER only, so that the session lands as soon as it can (a
            # client reconnecting elsewhere at once waits for it there).
            now = time.monotonic()
            if now - window_start > BUSY_WINDOW:  # a new window; the last one still counts
                written_before = written_in_window if now - window_start < 2 * BUSY_WINDOW else 0
                window_start, written_in_window = now, 0
            busy = max(written_in_window, written_before) >= BUSY_WRITES
            linger_until, seen = now + (WRITE_LINGER if ring is None else RING_LINGER), 0
            while len(queue) < WRITE_BATCH and queue[-1] is not _STOP:
                left = linger_until - time.monotonic()
                if left <= 0 or (not busy and len(queue) == seen):
                    break  # busy: the whole linger; quiet: until QUIET_LINGER brought nothing
                seen = len(queue)
                wakeup.wait(left if busy else min(left, QUIET_LINGER))
                if ring is not None:
                    pull()
            items = []
            while queue and len(items) < WRITE_BATCH:
                if queue[0] is _STOP:
                    if items:
                        break
                    queue.popleft()
                    wakeup.notify_all()
                    return
                items.append(queue.popleft())
            write = write_batch()
            if write is None:
                return
            state.busy = True
        written_in_window += len(items)
        try:
            write(items)
        finally:
            with wakeup:
                state.busy = False
                if not queue:
                    wakeup.notify_all()  # flush() waiters
            del write


def wrap_remote_store(store: Any) -> Any:
    """``ResilientStore(store)`` for a store whose class says ``remote = True`` (it answers over
    the network); any other store as it is. What :class:`~sesscache.SessionCache` does with the
    store it is given."""
    if is_remote(store) and not isinstance(store, ResilientStore):
        logger.info("sesscache: %r answers over the network (its class says remote = True): "
                    "wrapped in a ResilientStore (writes behind the handshake, a breaker); wrap "
                    "it yourself to choose other settings", store)
        return ResilientStore(store)
    return store
