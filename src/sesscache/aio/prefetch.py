"""``PrefetchingStore``: a sync store for OpenSSL's callbacks, fed by async lookups made before
the handshake, writing new sessions in the background (see :mod:`sesscache.aio`)."""
from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import inspect
import logging
import threading
import time
from dataclasses import dataclass, fields
from typing import Any, Callable, Dict, Iterator, Optional, Sequence

from .. import _fork
from .._binding import ffi, lib
from .._burstlog import BurstLogger
from ..cache import SessionCache, fast_path_counts
from .._id_stamps import FruitlessWaits, issued_at, poll_pauses, wait_left
from ..errors import ConfigurationError
from ..stores.base import BaseStore
from ..stores.capabilities import CTableView, capabilities_of, kind_of, take
from ..stores.memory import MemoryStore
from .breaker import DEFAULT_RETRY_AFTER, DEFAULT_TRIP_AFTER, StoreBreaker
from ..stores.breaker import check_trip_after
from .deadlines import DeadlineQueue, TaskTimeout

logger = logging.getLogger(__name__)

#: Seconds to wait for the store for one hello; then the client gets a full handshake.
DEFAULT_LOOKUP_TIMEOUT = 0.05
#: Store lookups in flight at once; beyond it, hellos get no lookup (full handshake).
DEFAULT_MAX_LOOKUPS = 100
#: Background writes queued or running; beyond it new sessions stay local only.
DEFAULT_MAX_PENDING_WRITES = 1024
#: Background writes running at once (the rest wait their turn, in order per key).
DEFAULT_MAX_CONCURRENT_WRITES = 32
#: Seconds a background write may take before it counts as failed.
DEFAULT_WRITE_TIMEOUT = 1.0
#: How long a hello offering a session issued moments ago waits for its write (seconds).
DEFAULT_NEW_SESSION_WAIT = 0.1
# A hello has one key in practice (one session id, or one stateful ticket); a client listing
# many PSK identities must not buy many lookups.
_MAX_KEYS_PER_HELLO = 2
# Longest a prefetched session is held for handshakes (each is released as its handshake
# ends; this only bounds one that never ends, beyond asyncio's 60 s handshake timeout).
_HOLD_SECONDS = 120.0
# New sessions the C fast path may store and note before the event loop drains the note
# (after every handshake); beyond it they go through Python, as without the journal.
_JOURNAL_CAPACITY = 1024
_DRAIN_BATCH = 64
_FAILED = object()  # a lookup the store failed (or did not answer in time)



@dataclass
class PrefetchStats:
    """Counters of the asynchronous side (a snapshot). :attr:`SessionCache.stats` still counts
    what OpenSSL did with the sessions (``hits`` are resumptions)."""

    hellos: int = 0  #: ClientHellos read whole and parsed
    hellos_unparsable: int = 0  #: bytes that are no ClientHello: handed to OpenSSL, no lookup
    hellos_late: int = 0  #: hellos not complete within hello_timeout: full handshake
    lookups: int = 0  #: store lookups started
    found: int = 0  #: lookups that found a session (prefetched for the handshake)
    lookup_misses: int = 0  #: lookups the store had nothing for
    lookup_timeouts: int = 0  #: lookups abandoned after lookup_timeout
    lookup_errors: int = 0  #: lookups that failed (store down, store bug)
    lookups_skipped: int = 0  #: hellos that got no lookup because max_lookups were in flight
    lookups_shed: int = 0  #: hellos that got no lookup because the store was paused (failing)
    local_skips: int = 0  #: lookups not needed: the session was in the local write-behind copy
    prefetch_hits: int = 0  #: OpenSSL's get answered with a prefetched session (C or Python)
    local_hits: int = 0  #: OpenSSL's get answered from the local copy (or an in-memory backend)
    writes: int = 0  #: background writes (set, delete) that reached the store
    write_errors: int = 0  #: background writes that failed or timed out
    writes_dropped: int = 0  #: writes not attempted (queue full, no event loop): local copy only
    writes_shed: int = 0  #: writes not attempted because the store was paused: local copy only
    store_pauses: int = 0  #: times the store failed trip_after times in a row and was paused
    new_session_waits: int = 0  #: hellos whose session, issued moments ago, was not in the store
    #: yet: their handshake waited for its write (asking again, each ask a lookup)
    new_session_found: int = 0  #: of them, found once the write landed
    new_session_waits_refused: int = 0  #: such hellos not let wait: a wait found nothing less
    #: than a second ago (a lost write, or forged stamps: each would cost many lookups)
    handshake_failures: int = 0  #: upgrades that failed (TLS alert, client gone, timeout)

    def as_dict(self) -> Dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class ServerSide:
    """What a :mod:`sesscache.aio` server asks of its :class:`PrefetchingStore` (and nothing
    else): the store and the server are one component, and this is their seam.
    ``store.server_side()`` makes it.

    * :attr:`inline`, :meth:`lookup_now` / :meth:`lookup`: the sessions a hello's keys
      name, looked up before the handshake (at once for an inline backend, else awaited).
    * :meth:`hold` then :meth:`handshake_done`: the prefetched sessions are readable by
      OpenSSL's callbacks (in C too) for the whole handshake; when it is over they are let
      go, and the new sessions C stored meanwhile are written on.
    * ``with side.connection(prefetched):`` around each call that lets OpenSSL read one
      connection's bytes (``single_use``: a popped session reaches its own handshake alone).
    * :meth:`count` and :meth:`log`: the store's counters and burst log, for what the server
      sees (hellos, handshake failures).
    """

    def __init__(self, *, inline: bool, lookup_now: Callable, lookup: Callable, hold: Callable,
                 release: Callable, drain: Callable, journal: Callable, count: Callable,
                 log: Callable, serving: threading.local) -> None:
        self._lookup_now, self._lookup = lookup_now, lookup
        self._hold, self._release, self._drain, self._journal = hold, release, drain, journal
        self._count, self._log, self._serving = count, log, serving
        self.inline = inline  #: lookups answer at once (the backend is called inline)

    def start(self) -> None:
        """The server drains new sessions after every handshake: C may journal them."""
        self._journal()

    def lookup_now(self, keys: Sequence[bytes], pop: bool) -> Dict[bytes, bytes]:
        """For an :attr:`inline` store: the session the keys name, at once."""
        return self._lookup_now(keys, pop)

    async def lookup(self, keys: Sequence[bytes], pop: bool) -> Dict[bytes, bytes]:
        """The session the keys name (``PrefetchingStore.prefetch``)."""
        return await self._lookup(keys, pop=pop)

    def hold(self, prefetched: Dict[bytes, bytes]) -> None:
        """Make ``prefetched`` readable for every handshake until :meth:`handshake_done`
        (event loop thread only; not for ``single_use``, see :meth:`connection`)."""
        self._hold(prefetched)

    def handshake_done(self, held: Optional[Dict[bytes, bytes]]) -> None:
        """The handshake is over: let ``held`` go, write on the sessions C stored."""
        if held:
            self._release(held)
        self._drain()

    @contextlib.contextmanager
    def connection(self, prefetched: Optional[Dict[bytes, bytes]]) -> Iterator[None]:
        """While OpenSSL reads this connection's bytes, its own prefetched map is what the
        store's ``get``/``pop`` answer from first."""
        serving = self._serving
        previous = getattr(serving, "prefetched", None)
        serving.prefetched = prefetched
        try:
            yield
        finally:
            serving.prefetched = previous

    def count(self, name: str, amount: int = 1) -> None:
        """Add to one of the store's :class:`PrefetchStats` counters."""
        self._count(name, amount)

    def log(self, level: int, topic: str, message: str, *args: Any) -> None:
        """Log once per burst of ``topic``, in the store's burst log."""
        self._log(level, topic, message, *args)


class PrefetchingStore(BaseStore):
    """The bridge between OpenSSL's synchronous callbacks and an asynchronous store.

    Give it to :class:`~sesscache.SessionCache` like any store; :func:`create_server` fills
    it. Its synchronous side, called by OpenSSL through the cache, never waits for the
    network (so a server not made by this module, which prefetches nothing, resumes only what
    the local copy holds):

    * ``get``/``pop`` answer from the sessions prefetched for the handshakes running now
      (``pop``: from the map of the connection being handshaken), then from a local
      write-behind copy of sessions written here whose write to the
      store has not landed yet; otherwise a miss.
    * ``set`` writes the local copy and schedules the real write on the event loop;
      ``delete`` likewise. Writes for one key reach the store in the order they were made.
      Once a write lands the local copy is dropped: the store stays the one source of truth
      (a session deleted there is not resumed from a stale local copy).
    * A backend called inline (a ``MemoryStore``: nothing to wait for) is simply read and
      written through, with no local copy and no background task.

    :param backend: the real store. An asyncio store (``AsyncRedisStore``, or any object with
        coroutine ``get``/``set``/``delete``/``pop``) is awaited. A ``MemoryStore`` is called
        directly: it is a dictionary behind a lock, there is nothing to wait for. Any other
        synchronous store (``SQLiteStore``, ``RedisStore``, your own) runs in a small thread
        pool: SQLite is local and usually answers in microseconds, but a write waits up to
        its busy ``timeout`` for another process's lock and a checkpoint can stall on the
        disk, and a call made inline could not be abandoned at ``lookup_timeout``. A thread
        costs tens of microseconds per call. ``run_in_thread`` overrides the choice (False:
        called inline like a ``MemoryStore``, from OpenSSL's callbacks too; only for a
        synchronous store that never waits).
    :param lookup_timeout: seconds to wait for the store per hello (all its keys together).
    :param max_lookups: lookups in flight at once; beyond it hellos get no lookup.
    :param max_pending_writes: background writes queued or running; beyond it a write is
        dropped (the session then lives in the local copy only).
    :param max_concurrent_writes: background writes running at once.
    :param write_timeout: seconds before a background write counts as failed.
    :param local: the write-behind copy (default ``MemoryStore(max_sessions=10000)``).
    :param trip_after: store failures in a row (lookup or write timeouts and errors) after
        which the store is paused: for ``retry_after`` seconds hellos get no lookup (a full
        handshake at once, not after ``lookup_timeout``) and new sessions stay in the local
        copy; then one call tries the store, and its success ends the pause. ``None``: never
        pause. See :mod:`sesscache.aio.breaker`.
    :param retry_after: seconds between trial calls to a paused store.
    :param log_interval: faults are logged once per burst of this many seconds.
    :param new_session_wait: a hello offering a session a sesscache server issued less than
        this many seconds ago (its id says when: ``sesscache.session_ids``) that the store
        does not hold yet waits up to the rest of it, asking again, for the write to land (a
        client that reconnected at once to another server). The event loop goes on meanwhile;
        the lookups count against ``max_lookups``. 0: never wait.
    """

    kind = "prefetching"

    def __init__(self, backend: Any, *, lookup_timeout: float = DEFAULT_LOOKUP_TIMEOUT,
                 max_lookups: int = DEFAULT_MAX_LOOKUPS,
                 max_pending_writes: int = DEFAULT_MAX_PENDING_WRITES,
                 max_concurrent_writes: int = DEFAULT_MAX_CONCURRENT_WRITES,
                 write_timeout: float = DEFAULT_WRITE_TIMEOUT,
                 local: Optional[MemoryStore] = None, run_in_thread: Optional[bool] = None,
                 trip_after: Optional[int] = DEFAULT_TRIP_AFTER,
                 retry_after: float = DEFAULT_RETRY_AFTER,
                 log_interval: float = 10.0,
                 new_session_wait: float = DEFAULT_NEW_SESSION_WAIT) -> None:
        caps = capabilities_of(backend)  # ConfigurationError for a backend that is no store
        if isinstance(backend, PrefetchingStore):
            raise ConfigurationError("a PrefetchingStore cannot wrap another PrefetchingStore")
        check_seconds("lookup_timeout", lookup_timeout, 60)
        check_seconds("write_timeout", write_timeout, 3600)
        for name, value in (("max_lookups", max_lookups), ("max_pending_writes", max_pending_writes),
                            ("max_concurrent_writes", max_concurrent_writes)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigurationError(f"{name} must be an int >= 1, got {value!r}")
        check_trip_after(trip_after)
        check_seconds("retry_after", retry_after, 3600)
        if new_session_wait != 0:  # 0: never wait
            check_seconds("new_session_wait", new_session_wait, 60)
        self.new_session_wait = float(new_session_wait)
        self._fruitless = FruitlessWaits()
        self.backend = backend
        self._backend_caps = caps
        # pop is optional in a store: without it a single_use take is get then delete.
        self._backend_pop = take(backend, self._note_pop_fallback, caps)
        self._backend_calls = {"get": backend.get, "set": backend.set, "delete": backend.delete,
                               "pop": self._backend_pop}
        self.local = local if local is not None else MemoryStore(max_sessions=10_000)
        self.lookup_timeout = float(lookup_timeout)
        self.write_timeout = float(write_timeout)
        self.max_lookups = max_lookups
        self.max_pending_writes = max_pending_writes
        self.max_concurrent_writes = max_concurrent_writes
        self._async = caps.is_async
        if run_in_thread is None:
            run_in_thread = not self._async and not isinstance(backend, MemoryStore)
        elif run_in_thread and self._async:
            raise ConfigurationError("run_in_thread=True is for synchronous stores; this one is asyncio")
        self._threaded = bool(run_in_thread)
        # Called directly, from OpenSSL's callbacks too: reads, and writes through.
        self._inline = not self._async and not self._threaded
        self._executor: Optional[concurrent.futures.ThreadPoolExecutor] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._loop_thread: Optional[int] = None
        self._serving = threading.local()  # .prefetched: the map of the handshake on this thread
        # Prefetched sessions of the handshakes running now, readable by OpenSSL's callbacks
        # in C (SessionCache's fast path) and Python alike; a key is held once per handshake
        # that fetched it (a browser resumes one session on several connections at once).
        self._held = MemoryStore(max_sessions=10_000)
        self._holds: Dict[bytes, int] = {}
        self._fast_policies: list = []  # SessionCache's C fast path over our tables
        self._journaling = False  # C stores new sessions, noted for us to write on
        self._journal_capacity = _JOURNAL_CAPACITY
        self._drained: Optional[tuple] = None  # buffers for sc_fast_drain
        self._lookups_in_flight = 0
        self._pending_writes = 0
        self._write_slots: Optional[asyncio.Semaphore] = None
        # Made by bind(): one loop timer each for every lookup's and every write's timeout.
        self._lookup_deadlines: Optional[DeadlineQueue] = None
        self._write_deadlines: Optional[DeadlineQueue] = None
        self._tails: Dict[bytes, asyncio.Task] = {}
        self._tasks: set = set()
        self._log_interval = log_interval
        self._renew_after_fork()
        _fork.renew_in_child(self._renew_after_fork)
        self._breaker = StoreBreaker(trip_after, float(retry_after))

    def _renew_after_fork(self) -> None:
        """Fresh counters and locks: at __init__, and in a forked child (see sesscache._fork)."""
        self._counts = PrefetchStats().as_dict()
        self._stats_lock = threading.Lock()
        self._burst = BurstLogger(logger, self._log_interval)

    def server_side(self) -> ServerSide:
        """The seam a :mod:`sesscache.aio` server drives this store through."""
        return ServerSide(inline=self._inline, lookup_now=self._prefetch_inline, lookup=self.prefetch,
                          hold=self._hold, release=self._release, drain=self._drain_journal,
                          journal=self._journal_new_sessions, count=self._count, log=self._log,
                          serving=self._serving)

    def _log(self, level: int, topic: str, message: str, *args: Any) -> None:
        self._burst.log(level, topic, message, *args)

    def _note_pop_fallback(self) -> None:
        self._burst.log(logging.WARNING, "pop-fallback",
                        "%s has no pop: single_use sessions are taken with get then delete, "
                        "which is not atomic (two handshakes at once may both resume one)",
                        type(self.backend).__name__)

    # --- statistics -------------------------------------------------------------------

    @property
    def stats(self) -> PrefetchStats:
        with self._stats_lock:
            snapshot = PrefetchStats(**self._counts)
        # What SessionCache's C fast path read from our tables by itself.
        fast = fast_path_counts(self._fast_policies)
        snapshot.prefetch_hits += fast["from_first"]
        snapshot.local_hits += fast["hits"] - fast["from_first"]
        return snapshot

    @property
    def pending_writes(self) -> int:
        """Background writes queued or running now."""
        return self._pending_writes

    @property
    def lookups_in_flight(self) -> int:
        return self._lookups_in_flight

    def _count(self, name: str, amount: int = 1) -> None:
        with self._stats_lock:
            self._counts[name] += amount

    # --- the synchronous side: what OpenSSL's callbacks call, through SessionCache ---------

    def _prefetched(self, key: bytes) -> Optional[bytes]:
        """The value fetched for the handshake running on this thread (``single_use``), or
        held for the handshakes running now, if any (counted)."""
        prefetched = getattr(self._serving, "prefetched", None)
        value = prefetched.get(key) if prefetched else None
        if value is None and self._holds:
            value = self._held.get(key)
        if value is not None:
            self._count("prefetch_hits")
        return value

    def _hold(self, prefetched: Dict[bytes, bytes]) -> None:
        """Make sessions prefetched for one handshake readable until :meth:`_release`
        (event loop thread only). Not for ``single_use``: a popped session must reach its
        own handshake alone, through the connection's map."""
        for key, value in prefetched.items():
            self._held.set(key, value, _HOLD_SECONDS)
            self._holds[key] = self._holds.get(key, 0) + 1

    def _release(self, prefetched: Dict[bytes, bytes]) -> None:
        for key in prefetched:
            left = self._holds.get(key, 0) - 1
            if left > 0:
                self._holds[key] = left
            else:
                self._holds.pop(key, None)
                self._held.delete(key)

    def c_tables(self) -> Optional[CTableView]:
        """The "C tables" capability, for :class:`SessionCache`: the tables its C fast path
        may answer lookups from (held prefetches first, then the local copy, or a
        ``MemoryStore`` backend read inline), or None. C stores new sessions only once the
        server has it journal them (:meth:`serving`): their writes to the real store are
        Python's to schedule, from the journal."""
        behind = self.backend if self._inline else self.local
        if type(self) is not PrefetchingStore or not isinstance(behind, MemoryStore):
            return None
        held, table = self._held.c_tables(), behind.c_tables()
        if held is None or table is None:
            return None
        return CTableView(table=table.table, first=held.table, policy_made=self._fast_policy_made)

    def _fast_policy_made(self, policy) -> None:
        self._fast_policies.append(policy)
        if self._journaling:
            lib.sc_fast_start_journal(policy, self._journal_capacity)

    def _journal_new_sessions(self) -> None:
        """Let the C fast path store new sessions in the local copy itself, noting each in
        a journal that :meth:`_drain_journal` turns into background writes. Only for a
        store served by a :mod:`sesscache.aio` server, which drains it after every handshake
        (anywhere else a noted session would wait for the next lookup or ``flush``). Not for
        an inline backend: Python writes through to it at once."""
        if self._journaling or self._inline:
            return
        self._journaling = True
        for policy in self._fast_policies:
            lib.sc_fast_start_journal(policy, self._journal_capacity)

    def _drain_journal(self) -> None:
        """Schedule the writes of the new sessions C stored in the local copy (on the event
        loop's thread). A session gone from the local copy meanwhile (evicted, expired) is
        skipped, as a local copy's would be."""
        if not self._journaling:
            return
        if self._drained is None:
            self._drained = (ffi.new("unsigned char[]", _DRAIN_BATCH * lib.SC_STORE_KEY_MAX),
                             ffi.new("unsigned char[]", _DRAIN_BATCH), ffi.new("double[]", _DRAIN_BATCH))
        keys, lengths, ttls = self._drained
        width = lib.SC_STORE_KEY_MAX
        for policy in self._fast_policies:
            taken = _DRAIN_BATCH
            while taken == _DRAIN_BATCH:
                taken = lib.sc_fast_drain(policy, keys, lengths, ttls, _DRAIN_BATCH)
                for i in range(taken):
                    key = bytes(ffi.buffer(keys + i * width, lengths[i]))
                    value = self.local.get(key)
                    if value is not None:
                        self._schedule("set", key, value, ttls[i])

    def get(self, key: bytes) -> Optional[bytes]:
        value = self._prefetched(key)
        if value is not None:
            return value
        value = self.backend.get(key) if self._inline else self.local.get(key)
        if value is not None:
            self._count("local_hits")
        return value

    def pop(self, key: bytes) -> Optional[bytes]:
        """For ``single_use`` caches. A prefetched value was already popped from the store
        (atomically) by the lookup; it stays in the connection's map until the handshake ends,
        so the second hello after a HelloRetryRequest finds it too. A value from the local copy
        is taken out of it and deleted from the store behind any write still pending."""
        value = self._prefetched(key)
        if value is not None:
            return value
        if self._inline:
            value = self._backend_pop(key)
            if value is not None:
                self._count("local_hits")
            return value
        value = self.local.pop(key)
        if value is not None:
            self._count("local_hits")
            self._schedule("delete", key)
        return value

    def set(self, key: bytes, value: bytes, ttl: float) -> None:
        if self._inline:  # a dictionary behind a lock: written through, nothing to wait for
            self.backend.set(key, value, ttl)
            self._count("writes")
            return
        self.local.set(key, value, ttl)  # checks key, value and ttl; raises before scheduling
        self._schedule("set", key, bytes(value), float(ttl))

    def delete(self, key: bytes) -> None:
        if self._inline:
            self.backend.delete(key)
            self._count("writes")
            return
        self.local.delete(key)
        self._schedule("delete", key)

    def close(self) -> None:
        """Close the backend, the thread pool and the local copy, for good (idempotent):
        writes still pending fail (counted). ``await aclose()`` lets them land first.

        An asyncio backend's ``close()`` is a coroutine: it is scheduled on the bound loop
        when that loop runs, else run to completion here."""
        close = self._backend_caps.close
        if close is not None:
            try:
                if inspect.iscoroutinefunction(close):
                    loop = self._loop
                    if loop is not None and loop.is_running() and not loop.is_closed():
                        asyncio.run_coroutine_threadsafe(close(), loop)
                    else:
                        asyncio.run(close())
                else:
                    close()
            except Exception as exc:  # the rest is closed all the same
                self._burst.log(logging.WARNING, "close", "closing the backend failed (%s: %s)",
                                type(exc).__name__, str(exc))
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
        self.local.close()
        self._held.close()

    def describe(self) -> Dict[str, Any]:
        local = self.local.describe()
        return {
            "kind": self.kind,
            "entries": local.get("entries"),
            "bytes": local.get("bytes"),
            "backend": kind_of(self.backend),
            "backend_calls": "asyncio" if self._async else ("thread" if self._threaded else "inline"),
            "lookups_in_flight": self._lookups_in_flight,
            "pending_writes": self._pending_writes,
            "held_for_handshakes": len(self._holds),
            "store_paused": self._breaker.is_open,
            "lookup_timeout": self.lookup_timeout,
            "max_lookups": self.max_lookups,
            "max_pending_writes": self.max_pending_writes,
        }

    def __repr__(self) -> str:
        return f"<PrefetchingStore backend={kind_of(self.backend)}>"

    # --- the event loop ------------------------------------------------------------------

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Tie the store to ``loop`` (done by :func:`create_server`). An asyncio client
        belongs to the loop it first ran on, so a second loop is refused."""
        if self._loop is loop:
            return
        if self._loop is not None and not self._loop.is_closed():
            raise ConfigurationError(
                "this PrefetchingStore already serves another event loop; make one store per "
                "loop (an asyncio store client belongs to the loop it first ran on)")
        self._loop = loop
        self._loop_thread = None
        self._write_slots = None
        self._lookup_deadlines = DeadlineQueue(loop, self.lookup_timeout)
        self._write_deadlines = DeadlineQueue(loop, self.write_timeout)
        self._tails.clear()

    def _on_loop_thread(self) -> bool:
        if self._loop_thread is None:
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                return False
            if running is not self._loop:
                return False
            self._loop_thread = threading.get_ident()
        return threading.get_ident() == self._loop_thread

    # --- lookups ---------------------------------------------------------------------------

    async def prefetch(self, keys: Sequence[bytes], *, pop: bool = False) -> Dict[bytes, bytes]:
        """Look ``keys`` (store keys, most likely first) up; return what was found.

        Never raises for store trouble: a timeout, an error or the ``max_lookups`` cap give
        an empty answer, counted in :attr:`stats`. ``pop`` takes the value out of the store
        (a ``single_use`` cache). A key held in the local write-behind copy is not looked up:
        the local value is returned (and, with ``pop``, taken out and deleted from the store
        behind its pending write).
        """
        loop = asyncio.get_running_loop()
        self.bind(loop)
        if self._inline:
            return self._prefetch_inline(keys, pop)
        self._drain_journal()  # sessions C stored since the last handshake ended
        todo = keys[:_MAX_KEYS_PER_HELLO]
        for key in todo:
            # Written here and not landed yet: the store has nothing newer. The value goes in
            # the connection's map too, since the write may land (and the local copy go)
            # before OpenSSL asks.
            value = self.local.pop(key) if pop else self.local.get(key)
            if value is not None:
                self._count("local_skips")
                if pop:  # single use: taken now; the store's copy goes behind the pending write
                    self._schedule("delete", key)
                return {key: value}
        found: Dict[bytes, bytes] = {}
        missed = False
        deadline = loop.time() + self.lookup_timeout
        for key in todo:
            if self._lookups_in_flight >= self.max_lookups:
                self._count("lookups_skipped")
                self._burst.log(logging.WARNING, "lookup-cap",
                                "%d store lookups in flight (max_lookups); new "
                                "hellos get a full handshake without a lookup until the store "
                                "catches up. Raise max_lookups if the store can take more",
                                self._lookups_in_flight)
                break
            now = loop.time()
            remaining = deadline - now
            if remaining <= 0:
                self._count("lookup_timeouts")
                break
            if not self._breaker.allow(now):
                self._count("lookups_shed")
                break
            value = await self._lookup(key, pop, remaining, first=key is todo[0], failed_as=_FAILED)
            if value is _FAILED:
                continue
            if value is not None:
                found[key] = value
                break  # at most one key of a hello can name a session
            if key is todo[0]:
                missed = True  # the store answered: not there (yet?)
        if missed and not found:
            found = await self._wait_for_write(todo[0], pop, loop)
        return found

    async def _wait_for_write(self, key: bytes, pop: bool,
                              loop: asyncio.AbstractEventLoop) -> Dict[bytes, bytes]:
        """A session issued moments ago that the store does not hold: ask again, after
        pauses that double up to 8 ms, until ``new_session_wait`` after its issue."""
        left = wait_left(issued_at(SessionCache.session_id_of(key)), self.new_session_wait, time.time())
        if left <= 0:
            return {}
        if not self._fruitless.allow(loop.time()):
            self._count("new_session_waits_refused")
            return {}
        self._count("new_session_waits")
        found = await self._ask_until(key, pop, loop, loop.time() + left)
        if found:
            self._count("new_session_found")
        else:
            self._fruitless.note(loop.time())
        return found

    async def _ask_until(self, key: bytes, pop: bool, loop: asyncio.AbstractEventLoop,
                         until: float) -> Dict[bytes, bytes]:
        for pause in poll_pauses(until, loop.time):
            await asyncio.sleep(pause)
            now = loop.time()
            if now >= until or not self._breaker.allow(now) or self._lookups_in_flight >= self.max_lookups:
                return {}
            value = await self._lookup(key, pop, min(self.lookup_timeout, until - now), first=False,
                                       failed_as=_FAILED)
            if value is _FAILED:  # counted there, and fed to the breaker: stop asking
                return {}
            if value is not None:
                return {key: value}
        return {}

    def _prefetch_inline(self, keys: Sequence[bytes], pop: bool) -> Dict[bytes, bytes]:
        """:meth:`prefetch` for a backend called inline (a ``MemoryStore``), without a
        coroutine: the servers call it straight from the protocol that read the hello. Such
        a backend answers before the call returns, so there is no timeout to run and nothing
        stays in flight; ``set`` writes through it, so the local copy holds nothing to skip to.
        """
        method = self._backend_pop if pop else self.backend.get
        for key in keys[:_MAX_KEYS_PER_HELLO]:
            self._count("lookups")
            try:
                value = method(key)
            except Exception as exc:
                self._lookup_failed(exc)
                continue
            if value is None:
                self._count("lookup_misses")
                continue
            if not isinstance(value, (bytes, bytearray, memoryview)):
                self._lookup_failed(TypeError(f"store returned {type(value).__name__}, not bytes"))
                continue
            self._count("found")
            return {key: bytes(value)}
        return {}

    async def _lookup(self, key: bytes, pop: bool, timeout: float, first: bool,
                      failed_as: Any = None) -> Any:
        """The value, None for a miss, or ``failed_as`` when the store failed or timed out."""
        self._count("lookups")
        op = "pop" if pop else "get"
        if self._async:
            method = self._backend_pop if pop else self.backend.get
            answered, value, exc = await self._ask_async(method, key, timeout, first)
        else:
            answered, value, exc = await self._ask_thread(op, key, timeout)
        if not answered:
            self._store_failed()
            self._count("lookup_timeouts")
            self._burst.log(logging.WARNING, "lookup-timeout",
                            "the session store did not answer within "
                            "lookup_timeout=%.3fs; the client gets a full handshake. The store "
                            "is overloaded or far away: check it or raise lookup_timeout",
                            self.lookup_timeout)
            return failed_as
        if exc is None and value is not None and not isinstance(value, (bytes, bytearray, memoryview)):
            exc = TypeError(f"store returned {type(value).__name__}, not bytes")
        if exc is not None:
            self._store_failed()
            self._lookup_failed(exc)
            return failed_as
        self._store_answered()
        if value is None:
            self._count("lookup_misses")
            return None
        self._count("found")
        return bytes(value)

    async def _ask_async(self, method: Callable, key: bytes, timeout: float, first: bool):
        """Await an asyncio store's call right in the connection's task (no task, future or
        done-callback of its own per lookup), cancelling it at ``timeout``: the store's
        ``lookup_timeout`` for a hello's first key (on the shared deadline queue), what is
        left of it for a second. The timeout starts as the call does, so a loop stalled by
        other handshakes does not count against the store. Returns ``(answered, value, error)``."""
        loop = self._loop
        task = asyncio.current_task()
        assert loop is not None and task is not None
        timer = (TaskTimeout(task, self._lookup_deadlines) if first
                 else TaskTimeout(task, when=loop.time() + timeout))
        self._lookups_in_flight += 1
        try:
            value = await method(key)
        except asyncio.CancelledError:
            if not timer.expired or timer.still_cancelled():
                raise  # the server is shutting down, not a timeout
            return False, None, None
        except Exception as exc:
            return True, None, exc
        finally:
            timer.withdraw()
            self._lookups_in_flight -= 1
        if timer.expired and timer.still_cancelled():  # a store that swallowed our cancel
            raise asyncio.CancelledError()
        return True, value, None

    async def _ask_thread(self, op: str, key: bytes, timeout: float):
        """A synchronous store's call in the thread pool, waited for at most ``timeout``.
        The thread cannot be stopped: it stays counted in flight until it returns."""
        try:
            waiter = self._start_call(op, (key,), self._lookup_finished)
            self._lookups_in_flight += 1
        except Exception as exc:
            return True, None, exc
        try:
            finished = await _wait(waiter, timeout)
        except asyncio.CancelledError:
            waiter.cancel()
            raise
        if not finished:
            waiter.cancel()
            return False, None, None
        return True, None if waiter.exception() else waiter.result(), waiter.exception()

    def _store_answered(self) -> None:
        if self._breaker.succeeded():
            logger.info("the session store answers again; lookups and writes resume")

    def _store_failed(self) -> None:
        loop = self._loop
        if loop is not None and self._breaker.failed(loop.time()):
            self._count("store_pauses")
            self._burst.log(logging.WARNING, "store-paused",
                            "the session store failed %d times in a row; it is "
                            "left alone for retry_after=%.1fs (clients get a full handshake at "
                            "once, new sessions stay in this process), then one call tries it "
                            "again. Check the store", self._breaker.trip_after,
                            self._breaker.retry_after)

    def _lookup_failed(self, exc: BaseException) -> None:
        self._count("lookup_errors")
        self._burst.log(logging.WARNING, "lookup-error",
                        "session store lookup failed (%s: %s); the client gets a "
                        "full handshake", type(exc).__name__, str(exc))
        return None

    def _lookup_finished(self) -> None:
        self._lookups_in_flight -= 1

    def _start_call(self, op: str, args: tuple, finished: Callable[[], None]) -> "asyncio.Future":
        """Start ``backend.<op>(*args)`` in the thread pool; return a future for its result.
        ``finished`` runs on the loop once the call really ended (it may outlive a timeout)."""
        loop = self._loop
        assert loop is not None and self._threaded
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=4, thread_name_prefix="sesscache-aio")

        def done(_):
            try:
                loop.call_soon_threadsafe(finished)
            except RuntimeError:  # the loop is closed: nothing left to count for
                pass

        call = self._backend_calls[op]
        cf = self._executor.submit(call, *args)
        cf.add_done_callback(done)
        return asyncio.wrap_future(cf, loop=loop)

    # --- background writes -------------------------------------------------------------------

    def _schedule(self, op: str, key: bytes, value: Optional[bytes] = None,
                  ttl: Optional[float] = None) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            self._count("writes_dropped")
            self._burst.log(logging.WARNING, "no-loop",
                            "a session %s could not reach the store: no event loop "
                            "serves this PrefetchingStore (use it through sesscache.aio servers); "
                            "only the local copy has it", op)
            return
        if self._on_loop_thread():
            self._start_write(op, key, value, ttl)
            return
        try:
            loop.call_soon_threadsafe(self._start_write, op, key, value, ttl)
        except RuntimeError:  # closed between the check and the call
            self._count("writes_dropped")

    def _start_write(self, op: str, key: bytes, value: Optional[bytes], ttl: Optional[float]) -> None:
        loop = self._loop
        assert loop is not None
        if not self._breaker.allow(loop.time()):
            self._count("writes_shed")  # the local copy keeps a session; a delete is moot
            return
        if self._pending_writes >= self.max_pending_writes:
            self._count("writes_dropped")
            self._burst.log(logging.WARNING, "write-queue",
                            "%d session writes pending (max_pending_writes); new "
                            "sessions stay in this process only until the store catches up",
                            self._pending_writes)
            return
        self._pending_writes += 1
        previous = self._tails.get(key)
        task = loop.create_task(self._write(op, key, value, ttl, previous))
        self._tails[key] = task
        self._tasks.add(task)
        task.add_done_callback(lambda t, key=key: self._write_done(key, t))

    def _write_done(self, key: bytes, task: asyncio.Task) -> None:
        self._pending_writes -= 1
        self._tasks.discard(task)
        if self._tails.get(key) is task:
            del self._tails[key]

    async def _write(self, op: str, key: bytes, value: Optional[bytes], ttl: Optional[float],
                     previous: Optional[asyncio.Task]) -> None:
        if previous is not None and not previous.done():
            await asyncio.wait({previous})  # order per key: a delete never overtakes its set
        if self._write_slots is None:
            self._write_slots = asyncio.Semaphore(self.max_concurrent_writes)
        args = (key, value, ttl) if op == "set" else (key,)
        async with self._write_slots:
            if self._async:
                # Awaited right here, in this task, under a timer: no second task per write.
                task = asyncio.current_task()
                assert task is not None
                timer = TaskTimeout(task, self._write_deadlines)
                try:
                    await self._backend_calls[op](*args)
                except asyncio.CancelledError:
                    if not timer.expired or timer.still_cancelled():
                        raise
                    self._write_failed(op, TimeoutError(
                        f"no answer within write_timeout={self.write_timeout}s"))
                    return
                except Exception as exc:
                    self._write_failed(op, exc)
                    return
                finally:
                    timer.withdraw()
            else:
                released = asyncio.get_running_loop().create_future()
                try:
                    waiter = self._start_call(
                        op, args, lambda: released.done() or released.set_result(None))
                except Exception as exc:
                    self._write_failed(op, exc)
                    return
                if not await _wait(waiter, self.write_timeout):
                    waiter.cancel()
                    self._write_failed(op, TimeoutError(
                        f"no answer within write_timeout={self.write_timeout}s"))
                    if self._threaded:
                        await released  # hold the slot while the thread is still busy
                    return
                exc = waiter.exception()
                if exc is not None:
                    self._write_failed(op, exc)
                    return
        self._count("writes")
        self._store_answered()
        if op == "set" and self.local.get(key) == value:
            # Landed: the store answers for it now. A newer value (another set) stays.
            self.local.delete(key)

    def _write_failed(self, op: str, exc: BaseException) -> None:
        self._count("write_errors")
        self._store_failed()
        self._burst.log(logging.WARNING, "write-error",
                        "background session %s failed (%s: %s); this process "
                        "keeps its local copy, other processes will not resume the session",
                        op, type(exc).__name__, str(exc))

    async def flush(self, timeout: Optional[float] = None) -> bool:
        """Wait until every background write has landed or failed; False on timeout."""
        self._drain_journal()
        tasks = set(self._tasks)
        if not tasks:
            return True
        _, pending = await asyncio.wait(tasks, timeout=timeout)
        return not pending

    async def aclose(self, timeout: float = 5.0) -> None:
        """Let pending writes land (up to ``timeout`` seconds; the rest are cancelled), then
        close the backend and the local copy."""
        if not await self.flush(timeout):
            for task in list(self._tasks):
                task.cancel()
            if self._tasks:
                await asyncio.wait(set(self._tasks), timeout=1.0)
        close = self._backend_caps.close
        if close is not None:
            if inspect.iscoroutinefunction(close):
                await close()
            elif self._threaded:
                await asyncio.get_running_loop().run_in_executor(self._executor, close)
            else:
                close()
        if self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None
        self.local.close()
        self._held.close()


async def _wait(future: "asyncio.Future", timeout: float) -> bool:
    """Wait for ``future`` at most ``timeout`` seconds; True if it is done. Never raises
    the future's exception (asyncio.wait without its per-call set and callbacks)."""
    if future.done():
        return True
    loop = asyncio.get_running_loop()
    waiter = loop.create_future()

    def wake(_=None) -> None:
        if not waiter.done():
            waiter.set_result(None)

    future.add_done_callback(wake)
    timer = loop.call_later(timeout, wake)
    try:
        await waiter
    finally:
        timer.cancel()
        future.remove_done_callback(wake)
    return future.done()


def check_seconds(name: str, value: Any, most: float) -> None:
    """ConfigurationError unless ``value`` is seconds in ``(0, most]`` (the aio settings)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= most:
        raise ConfigurationError(f"{name} must be seconds, more than 0 and at most {most}, got {value!r}")
