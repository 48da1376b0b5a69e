"""``sesscache.aio``: session lookups that never block the event loop.

OpenSSL asks for a session synchronously, from inside the handshake. In an asyncio server a
store on the network (Redis) answered from that callback freezes the whole event loop for the
round trip: measured with 50 reconnecting clients and a store answering in 5 ms, the loop
stalled 226 ms at a time and throughput fell from 880 to 179 handshakes/s. Node.js avoids it by
reading the ClientHello itself and looking the session up asynchronously before OpenSSL sees
the hello; this module does the same for asyncio::

    from sesscache import SessionCache
    from sesscache.aio import PrefetchingStore, start_server
    from sesscache.stores import AsyncRedisStore

    store = PrefetchingStore(AsyncRedisStore("redis://cache:6379/0"))
    cache = SessionCache(store)
    server = await start_server(handle, "0.0.0.0", 443, ssl=context, cache=cache)

Each connection, in order:

1. The ClientHello is read off the socket (plain TCP, no TLS yet) with
   :class:`~sesscache.clienthello.ClientHelloReader`, which stays linear however the client
   splits it.
2. Its lookup keys (:meth:`ClientHello.lookup_keys`: the TLS 1.2 session id or the TLS 1.3
   stateful ticket) are looked up in the store with ``await``, under a timeout.
3. A hit is put in a prefetch map that belongs to this connection alone.
4. The connection is upgraded with ``loop.start_tls``; the bytes already read are replayed
   into the TLS protocol, and OpenSSL's synchronous get callback, through
   :class:`SessionCache`, reads the prefetched session from :class:`PrefetchingStore`
   without touching the network. The map lives until the handshake is over: after a
   HelloRetryRequest OpenSSL asks for the session a second time, for the second hello.
5. New sessions are written to a local copy at once and to the real store in the background.

**Limits** (each a keyword argument; every one ends in a full handshake, never in a dropped
client):

``MAX_CLIENT_HELLO`` (64 KiB, from :mod:`sesscache.clienthello`)
    A larger hello, or one spread over more than 128 KiB of records, is not parsed further:
    the bytes are handed to OpenSSL, which decides (and no lookup is made).
``hello_timeout`` (default 2 s, :func:`create_server`)
    Deadline for the whole ClientHello to arrive after the connection is accepted. A slower
    client is handed to OpenSSL with what it sent so far and gets a full handshake (no
    lookup); ``ssl_handshake_timeout`` (asyncio's, 60 s by default) then bounds the rest of
    the handshake, as it does for any asyncio TLS server.
``lookup_timeout`` (default 50 ms, :class:`PrefetchingStore`)
    Longest wait for the store, for all the keys of one hello together. Past it the lookup
    is abandoned (cancelled for asyncio stores) and the handshake goes on without it.
``max_lookups`` (default 100, :class:`PrefetchingStore`)
    Lookups in flight at once, counted until the store really answers (a lookup running
    in a thread counts until the thread returns, even after its timeout). Beyond it, a new
    hello gets no lookup: clients offering random session ids cannot make the server an
    amplifier that multiplies its connection rate onto the store.
Two keys per hello
    A hello names one session in practice (a session id, or one stateful TLS 1.3 ticket); only
    the first two of its lookup keys are looked up, so a hello listing many PSK identities
    buys no more store traffic than any other.
``max_pending_writes`` (default 1024, :class:`PrefetchingStore`)
    Background writes waiting or running. Beyond it a new session is kept only in the local
    copy (this process still resumes it; others do not), counted in ``writes_dropped``.
``max_concurrent_writes`` (default 32) and ``write_timeout`` (default 1 s)
    Writes running at once, and how long one may take before it counts as failed (the local
    copy then stays until the session's lifetime ends).

**Bytes that are not a ClientHello** (HTTP on the TLS port, a scanner, an SSLv2-format hello
the strict parser refuses): no lookup is made and the bytes are handed to OpenSSL unchanged,
so the server behaves exactly as a plain asyncio TLS server would: OpenSSL sends its alert (or,
if it accepts what the parser did not, completes a full handshake). The parser is never the
reason a client is refused.

**The application protocol**: ``loop.start_tls`` does not call ``connection_made``, and once
the handshake completes, data may be delivered before ``start_tls`` returns. The protocol
made by ``protocol_factory`` is created after the handshake succeeds; data, end of file or a
connection loss that arrive before it exists are held and delivered right after its
``connection_made``, in order. A client whose handshake fails never reaches the application.

**OpenSSL's internal cache** (``internal_cache=True``, the default of ``attach``): sessions
this process made still resume without the store, but every hello that names a session is
looked up anyway, because that cache cannot be consulted before OpenSSL reads the hello. With
``internal_cache=False`` the store is the only cache, as nginx and Apache use a shared one.

**Event loop**: asyncio's own loops. The replay relies on the order in which ``start_tls``
sets the TLS protocol, starts it and resumes reading (the same from Python 3.9 to 3.13, where
this is tested on the selector loop; the proactor loop follows the same sequence, untested).
uvloop's transports are not supported; :func:`create_server` says so. Only ``ssl.SSLContext``
can be used, as with any asyncio server.
"""
from __future__ import annotations

import asyncio
import asyncio.sslproto as _sslproto
import concurrent.futures
import inspect
import logging
import ssl as _ssl
import threading
from dataclasses import dataclass, fields
from typing import Any, Callable, Dict, Optional, Sequence

from ._burstlog import BurstLogger
from .cache import SessionCache
from .clienthello import MAX_CLIENT_HELLO, ClientHello, ClientHelloError, ClientHelloReader
from .errors import ConfigurationError
from .stores.base import BaseStore
from .stores.memory import MemoryStore

__all__ = [
    "PrefetchingStore",
    "PrefetchStats",
    "create_server",
    "start_server",
    "MAX_CLIENT_HELLO",
    "DEFAULT_HELLO_TIMEOUT",
    "DEFAULT_LOOKUP_TIMEOUT",
    "DEFAULT_MAX_LOOKUPS",
    "DEFAULT_MAX_PENDING_WRITES",
]

logger = logging.getLogger(__name__)

#: Seconds for the whole ClientHello to arrive; then the client gets a full handshake.
DEFAULT_HELLO_TIMEOUT = 2.0
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
# A hello has one key in practice (one session id, or one stateful ticket); a client listing
# many PSK identities must not buy many lookups.
_MAX_KEYS_PER_HELLO = 2


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
    local_skips: int = 0  #: lookups not needed: the session was in the local write-behind copy
    prefetch_hits: int = 0  #: OpenSSL's get answered from the prefetch map
    local_hits: int = 0  #: OpenSSL's get answered from the local copy (or an in-memory backend)
    writes: int = 0  #: background writes (set, delete) that reached the store
    write_errors: int = 0  #: background writes that failed or timed out
    writes_dropped: int = 0  #: writes not attempted (queue full, no event loop): local copy only
    handshake_failures: int = 0  #: upgrades that failed (TLS alert, client gone, timeout)

    def as_dict(self) -> Dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class PrefetchingStore(BaseStore):
    """The bridge between OpenSSL's synchronous callbacks and an asynchronous store.

    Give it to :class:`~sesscache.SessionCache` like any store; :func:`create_server` fills
    it. Its synchronous side, called by OpenSSL through the cache, never waits for the
    network (so a server not made by this module, which prefetches nothing, resumes only what
    the local copy holds):

    * ``get``/``pop`` answer from the prefetch map of the connection being handshaken,
      then from a local write-behind copy of sessions written here whose write to the
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
    :param log_interval: faults are logged once per burst of this many seconds.
    """

    kind = "prefetching"

    def __init__(self, backend: Any, *, lookup_timeout: float = DEFAULT_LOOKUP_TIMEOUT,
                 max_lookups: int = DEFAULT_MAX_LOOKUPS,
                 max_pending_writes: int = DEFAULT_MAX_PENDING_WRITES,
                 max_concurrent_writes: int = DEFAULT_MAX_CONCURRENT_WRITES,
                 write_timeout: float = DEFAULT_WRITE_TIMEOUT,
                 local: Optional[MemoryStore] = None, run_in_thread: Optional[bool] = None,
                 log_interval: float = 10.0) -> None:
        for name in ("get", "set", "delete"):
            if not callable(getattr(backend, name, None)):
                raise ConfigurationError(
                    f"backend must be a store (get, set, delete), got {type(backend).__name__}")
        if isinstance(backend, PrefetchingStore):
            raise ConfigurationError("a PrefetchingStore cannot wrap another PrefetchingStore")
        _check_seconds("lookup_timeout", lookup_timeout, 60)
        _check_seconds("write_timeout", write_timeout, 3600)
        for name, value in (("max_lookups", max_lookups), ("max_pending_writes", max_pending_writes),
                            ("max_concurrent_writes", max_concurrent_writes)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigurationError(f"{name} must be an int >= 1, got {value!r}")
        self.backend = backend
        self.local = local if local is not None else MemoryStore(max_sessions=10_000)
        self.lookup_timeout = float(lookup_timeout)
        self.write_timeout = float(write_timeout)
        self.max_lookups = max_lookups
        self.max_pending_writes = max_pending_writes
        self.max_concurrent_writes = max_concurrent_writes
        self._async = inspect.iscoroutinefunction(getattr(backend, "get"))
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
        self._lookups_in_flight = 0
        self._pending_writes = 0
        self._write_slots: Optional[asyncio.Semaphore] = None
        self._tails: Dict[bytes, asyncio.Task] = {}
        self._tasks: set = set()
        self._stats = PrefetchStats()
        self._stats_lock = threading.Lock()
        self._burst = BurstLogger(logger, log_interval)

    # --- statistics -------------------------------------------------------------------

    @property
    def stats(self) -> PrefetchStats:
        with self._stats_lock:
            return PrefetchStats(**self._stats.as_dict())

    @property
    def pending_writes(self) -> int:
        """Background writes queued or running now."""
        return self._pending_writes

    @property
    def lookups_in_flight(self) -> int:
        return self._lookups_in_flight

    def _count(self, name: str, amount: int = 1) -> None:
        with self._stats_lock:
            setattr(self._stats, name, getattr(self._stats, name) + amount)

    # --- the synchronous side: what OpenSSL's callbacks call, through SessionCache ---------

    def get(self, key: bytes) -> Optional[bytes]:
        prefetched = getattr(self._serving, "prefetched", None)
        if prefetched:
            value = prefetched.get(key)
            if value is not None:
                self._count("prefetch_hits")
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
        prefetched = getattr(self._serving, "prefetched", None)
        if prefetched:
            value = prefetched.get(key)
            if value is not None:
                self._count("prefetch_hits")
                return value
        if self._inline:
            value = self.backend.pop(key)
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
        """Drop the local copy. Background writes and the backend are left alone: use
        ``await aclose()`` to let pending writes land and close the backend."""
        self.local.close()

    def describe(self) -> Dict[str, Any]:
        local = self.local.describe()
        return {
            "kind": self.kind,
            "entries": local.get("entries"),
            "bytes": local.get("bytes"),
            "backend": getattr(self.backend, "kind", type(self.backend).__name__),
            "backend_calls": "asyncio" if self._async else ("thread" if self._threaded else "inline"),
            "lookups_in_flight": self._lookups_in_flight,
            "pending_writes": self._pending_writes,
            "lookup_timeout": self.lookup_timeout,
            "max_lookups": self.max_lookups,
            "max_pending_writes": self.max_pending_writes,
        }

    def __repr__(self) -> str:
        return f"<PrefetchingStore backend={getattr(self.backend, 'kind', type(self.backend).__name__)}>"

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
        deadline = loop.time() + self.lookup_timeout
        for key in todo:
            if self._lookups_in_flight >= self.max_lookups:
                self._count("lookups_skipped")
                self._burst.log(logging.WARNING, "lookup-cap",
                                "sesscache.aio: %d store lookups in flight (max_lookups); new "
                                "hellos get a full handshake without a lookup until the store "
                                "catches up. Raise max_lookups if the store can take more",
                                self._lookups_in_flight)
                break
            remaining = deadline - loop.time()
            if remaining <= 0:
                self._count("lookup_timeouts")
                break
            value = await self._lookup(key, pop, remaining)
            if value is not None:
                found[key] = value
                break  # at most one key of a hello can name a session
        return found

    async def _lookup(self, key: bytes, pop: bool, timeout: float) -> Optional[bytes]:
        self._count("lookups")
        op = "pop" if pop else "get"
        try:
            waiter, started = self._start_call(op, (key,), self._lookup_finished)
            self._lookups_in_flight += 1
        except Exception as exc:  # an inline call failed at once
            return self._lookup_failed(exc)
        try:
            if started is not None:
                # The timeout counts from when the store call really runs (its task's first
                # step, a loop turn from now). On a loop stalled for longer than the timeout,
                # a timer started now would expire before the call could even begin, and a
                # quick store would look like a hanging one.
                await started
            finished = await _wait(waiter, timeout)
        except asyncio.CancelledError:
            waiter.cancel()
            raise
        if not finished:
            waiter.cancel()  # an asyncio store's call ends; a thread's call runs on, counted
            self._count("lookup_timeouts")
            self._burst.log(logging.WARNING, "lookup-timeout",
                            "sesscache.aio: the session store did not answer within "
                            "lookup_timeout=%.3fs; the client gets a full handshake. The store "
                            "is overloaded or far away: check it or raise lookup_timeout",
                            self.lookup_timeout)
            return None
        exc = waiter.exception()
        if exc is not None:
            return self._lookup_failed(exc)
        value = waiter.result()
        if value is None:
            self._count("lookup_misses")
            return None
        if not isinstance(value, (bytes, bytearray, memoryview)):
            return self._lookup_failed(TypeError(f"store returned {type(value).__name__}, not bytes"))
        self._count("found")
        return bytes(value)

    def _lookup_failed(self, exc: BaseException) -> None:
        self._count("lookup_errors")
        self._burst.log(logging.WARNING, "lookup-error",
                        "sesscache.aio: session store lookup failed (%s: %s); the client gets a "
                        "full handshake", type(exc).__name__, str(exc))
        return None

    def _lookup_finished(self) -> None:
        self._lookups_in_flight -= 1

    def _start_call(self, op: str, args: tuple, finished: Callable[[], None]):
        """Start ``backend.<op>(*args)``; return a future for its result and, for an asyncio
        store, a future set once the call runs. ``finished`` runs on the loop once the call
        really ended (a thread's call may outlive a timeout)."""
        loop = self._loop
        assert loop is not None
        method = getattr(self.backend, op)
        if self._async:
            started = loop.create_future()

            async def call():
                if not started.done():
                    started.set_result(None)
                return await method(*args)

            task = loop.create_task(call())
            task.add_done_callback(lambda _: finished())
            return task, started
        if self._threaded:
            if self._executor is None:
                self._executor = concurrent.futures.ThreadPoolExecutor(
                    max_workers=4, thread_name_prefix="sesscache-aio")

            def done(_):
                try:
                    loop.call_soon_threadsafe(finished)
                except RuntimeError:  # the loop is closed: nothing left to count for
                    pass

            cf = self._executor.submit(method, *args)
            cf.add_done_callback(done)
            return asyncio.wrap_future(cf, loop=loop), None
        future = loop.create_future()
        result = method(*args)  # inline (MemoryStore): exceptions propagate to the caller
        future.set_result(result)
        loop.call_soon(finished)
        return future, None

    # --- background writes -------------------------------------------------------------------

    def _schedule(self, op: str, key: bytes, value: Optional[bytes] = None,
                  ttl: Optional[float] = None) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            self._count("writes_dropped")
            self._burst.log(logging.WARNING, "no-loop",
                            "sesscache.aio: a session %s could not reach the store: no event loop "
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
        if self._pending_writes >= self.max_pending_writes:
            self._count("writes_dropped")
            self._burst.log(logging.WARNING, "write-queue",
                            "sesscache.aio: %d session writes pending (max_pending_writes); new "
                            "sessions stay in this process only until the store catches up",
                            self._pending_writes)
            return
        loop = self._loop
        assert loop is not None
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
                timed_out = []
                task = asyncio.current_task()
                assert task is not None
                timer = task.get_loop().call_later(
                    self.write_timeout, lambda: (timed_out.append(True), task.cancel()))
                try:
                    await getattr(self.backend, op)(*args)
                except asyncio.CancelledError:
                    if not timed_out:
                        raise
                    self._write_failed(op, TimeoutError(
                        f"no answer within write_timeout={self.write_timeout}s"))
                    return
                except Exception as exc:
                    self._write_failed(op, exc)
                    return
                finally:
                    timer.cancel()
            else:
                released = asyncio.get_running_loop().create_future()
                try:
                    waiter, _ = self._start_call(
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
        if op == "set" and self.local.get(key) == value:
            # Landed: the store answers for it now. A newer value (another set) stays.
            self.local.delete(key)

    def _write_failed(self, op: str, exc: BaseException) -> None:
        self._count("write_errors")
        self._burst.log(logging.WARNING, "write-error",
                        "sesscache.aio: background session %s failed (%s: %s); this process "
                        "keeps its local copy, other processes will not resume the session",
                        op, type(exc).__name__, str(exc))

    async def flush(self, timeout: Optional[float] = None) -> bool:
        """Wait until every background write has landed or failed; False on timeout."""
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
        close = getattr(self.backend, "close", None)
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


def _check_seconds(name: str, value: Any, most: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= most:
        raise ConfigurationError(f"{name} must be seconds, more than 0 and at most {most}, got {value!r}")


# ------------------------------------------------------------------------------------ servers


async def start_server(client_connected_cb: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Any],
                       host: Any = None, port: Any = None, *, ssl: _ssl.SSLContext,
                       cache: SessionCache, limit: int = 2 ** 16, **kwds: Any) -> asyncio.AbstractServer:
    """:func:`asyncio.start_server` with asynchronous session lookups.

    ``client_connected_cb(reader, writer)`` is called once the TLS handshake is done, as with
    ``asyncio.start_server(..., ssl=ctx)``. ``cache`` is a :class:`~sesscache.SessionCache`
    over a :class:`PrefetchingStore`. Every other keyword goes to :func:`create_server`.
    """
    loop = asyncio.get_running_loop()

    def factory() -> asyncio.StreamReaderProtocol:
        reader = asyncio.StreamReader(limit=limit, loop=loop)
        return asyncio.StreamReaderProtocol(reader, client_connected_cb, loop=loop)

    return await create_server(factory, host, port, ssl=ssl, cache=cache, **kwds)


async def create_server(protocol_factory: Callable[[], asyncio.BaseProtocol], host: Any = None,
                        port: Any = None, *, ssl: _ssl.SSLContext, cache: SessionCache,
                        session_id_context: Optional[bytes] = None, internal_cache: bool = True,
                        hello_timeout: float = DEFAULT_HELLO_TIMEOUT,
                        ssl_handshake_timeout: Optional[float] = None,
                        ssl_shutdown_timeout: Optional[float] = None,
                        **kwds: Any) -> asyncio.AbstractServer:
    """:meth:`loop.create_server <asyncio.loop.create_server>` with asynchronous session lookups.

    The listening socket is plain TCP; each connection is read up to its ClientHello, the
    session is fetched from ``cache.store`` (a :class:`PrefetchingStore`) and the connection
    is upgraded with ``loop.start_tls(..., ssl)``. ``protocol_factory()`` is called after the
    handshake succeeded and its protocol gets ``connection_made`` with the TLS transport.

    :param ssl: the server's ``ssl.SSLContext``.
    :param cache: a :class:`~sesscache.SessionCache` whose store is a :class:`PrefetchingStore`.
        If it is not attached to ``ssl`` yet it is attached here, with ``session_id_context``
        and ``internal_cache`` (see :meth:`SessionCache.attach`); if it is, those two must be
        left out or agree.
    :param hello_timeout: seconds for the ClientHello to arrive (see the module docstring).
    :param ssl_handshake_timeout: ``ssl_shutdown_timeout``: as for ``loop.start_tls``.
    :param kwds: ``family``, ``backlog``, ``sock``, ``reuse_port``, ``start_serving`` ... as for
        ``loop.create_server`` (not ``ssl_*``: TLS is done here).
    :returns: the ``asyncio.Server``.
    """
    loop = asyncio.get_running_loop()
    if not isinstance(loop, asyncio.BaseEventLoop):
        raise ConfigurationError(
            f"sesscache.aio needs one of asyncio's own event loops, not {type(loop).__module__}."
            f"{type(loop).__qualname__}: the ClientHello replay relies on asyncio's start_tls "
            "sequence (uvloop is not supported; use the default loop for TLS listeners)")
    if not isinstance(ssl, _ssl.SSLContext):
        raise ConfigurationError(
            f"ssl must be an ssl.SSLContext (asyncio's start_tls takes no other), got {type(ssl).__name__}")
    if not isinstance(cache, SessionCache):
        raise ConfigurationError(f"cache must be a sesscache.SessionCache, got {type(cache).__name__}")
    store = cache.store
    if not isinstance(store, PrefetchingStore):
        raise ConfigurationError(
            f"cache.store is a {type(store).__name__}; sesscache.aio needs a PrefetchingStore in "
            "front of it so that OpenSSL's synchronous lookup never waits for the network: "
            "SessionCache(PrefetchingStore(AsyncRedisStore(url))) (or around MemoryStore(), "
            "SQLiteStore(path))")
    for name in ("ssl_handshake_timeout", "ssl_shutdown_timeout", "server_hostname"):
        if name in kwds:  # pragma: no cover - they are named parameters here
            raise ConfigurationError(f"{name} is not a create_server argument here")
    _check_seconds("hello_timeout", hello_timeout, 3600)
    sid_ctx = _attached_session_id_context(cache, ssl, session_id_context, internal_cache)
    store.bind(loop)
    tls_kwargs: Dict[str, Any] = {}
    if ssl_handshake_timeout is not None:
        tls_kwargs["ssl_handshake_timeout"] = ssl_handshake_timeout
    if ssl_shutdown_timeout is not None:
        tls_kwargs["ssl_shutdown_timeout"] = ssl_shutdown_timeout
    front = _Front(loop, protocol_factory, ssl, cache, store, sid_ctx, hello_timeout, tls_kwargs)
    return await loop.create_server(lambda: _HelloSniffer(front), host, port, **kwds)


def _attached_session_id_context(cache: SessionCache, context: _ssl.SSLContext,
                                 session_id_context: Optional[bytes], internal_cache: bool) -> bytes:
    """The session id context the cache serves ``context`` with (it is part of every store
    key), attaching the cache first if needed."""
    attached = cache.session_id_context(context)
    if attached is None:
        cache.attach(context, session_id_context=session_id_context, internal_cache=internal_cache)
        attached = cache.session_id_context(context)
    elif session_id_context is not None and session_id_context != attached:
        raise ConfigurationError(
            f"the cache is attached to this context with session_id_context={attached!r}, "
            f"not {session_id_context!r}; leave session_id_context out or attach it with that value")
    return attached


class _Front:
    """What every connection of one server shares."""

    def __init__(self, loop, protocol_factory, context, cache, store, sid_ctx, hello_timeout,
                 tls_kwargs) -> None:
        self.loop = loop
        self.protocol_factory = protocol_factory
        self.context = context
        self.cache = cache
        self.store: PrefetchingStore = store
        self.sid_ctx = sid_ctx
        self.hello_timeout = hello_timeout
        self.tls_kwargs = tls_kwargs
        self.tasks: set = set()

    def store_keys(self, hello: ClientHello) -> list:
        return [SessionCache.key_for(self.sid_ctx, sid) for sid in hello.lookup_keys()]

    async def upgrade(self, transport: asyncio.Transport, data: bytearray,
                      hello: Optional[ClientHello]) -> None:
        try:
            await self._upgrade(transport, data, hello)
        except asyncio.CancelledError:  # the loop is shutting down
            transport.abort()
            raise

    async def _upgrade(self, transport: asyncio.Transport, data: bytearray,
                       hello: Optional[ClientHello]) -> None:
        store = self.store
        prefetched: Dict[bytes, bytes] = {}
        if hello is not None:
            keys = self.store_keys(hello)
            if keys:
                prefetched = await store.prefetch(keys, pop=self.cache.single_use)
        if transport.is_closing():
            return
        pending = _PendingApp()
        replay = _Replay(transport, bytes(data), store, prefetched)
        replay.install()
        try:
            tls_transport = await self.loop.start_tls(
                transport, pending, self.context, server_side=True, **self.tls_kwargs)
        except Exception as exc:  # TLS alert, client gone, handshake timeout: nothing to serve
            store._count("handshake_failures")
            logger.debug("sesscache.aio: TLS handshake failed: %s: %s", type(exc).__name__, exc)
            return
        finally:
            replay.remove()
        try:
            protocol = self.protocol_factory()
        except Exception as exc:
            self.loop.call_exception_handler({
                "message": "sesscache.aio: protocol_factory() failed; connection closed",
                "exception": exc, "transport": tls_transport})
            tls_transport.abort()
            return
        pending.hand_over(protocol, tls_transport, self.loop)


class _HelloSniffer(asyncio.Protocol):
    """The first protocol of every connection: reads the ClientHello, then upgrades."""

    def __init__(self, front: _Front) -> None:
        self._front = front
        self._reader = ClientHelloReader()
        self._transport: Optional[asyncio.Transport] = None
        self._timer: Optional[asyncio.TimerHandle] = None
        self._done = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        self._timer = self._front.loop.call_later(self._front.hello_timeout, self._late)

    def data_received(self, data: bytes) -> None:
        if self._done:  # read in the same turn as the end of the hello: replayed with it
            self._reader.data += data
            return
        try:
            hello = self._reader.feed(data)
        except ClientHelloError as exc:
            self._front.store._count("hellos_unparsable")
            logger.debug("sesscache.aio: not a ClientHello, handing it to OpenSSL as is: %s", exc)
            self._finish(None)
            return
        if hello is not None:
            self._front.store._count("hellos")
            self._finish(hello)

    def eof_received(self) -> bool:
        # The client stopped sending before its hello was complete: there is no handshake
        # to have. Returning False lets the transport close.
        if self._timer is not None:
            self._timer.cancel()
        return False

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        if self._timer is not None:
            self._timer.cancel()

    def _late(self) -> None:
        self._timer = None
        if self._done or self._transport is None or self._transport.is_closing():
            return
        self._front.store._count("hellos_late")
        self._front.store._burst.log(
            logging.INFO, "hello-late",
            "sesscache.aio: a client did not finish its ClientHello within hello_timeout=%.1fs; "
            "it gets a full handshake", self._front.hello_timeout)
        self._finish(None)

    def _finish(self, hello: Optional[ClientHello]) -> None:
        self._done = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        transport = self._transport
        assert transport is not None
        transport.pause_reading()
        front = self._front
        task = front.loop.create_task(front.upgrade(transport, self._reader.data, hello))
        front.tasks.add(task)
        task.add_done_callback(front.tasks.discard)


class _Replay:
    """Gives the bytes read so far to the TLS protocol that ``start_tls`` made, exactly once,
    before the socket is read again; and makes the connection's prefetch map visible to the
    store while that protocol handles this connection's bytes.

    ``loop.start_tls`` pauses reading, sets its SSL protocol on the transport, then schedules
    ``ssl_protocol.connection_made`` (which starts the handshake) followed by
    ``transport.resume_reading``. The ``resume_reading`` it schedules is looked up on the
    transport when ``start_tls`` runs, so an instance attribute set just before takes its
    place: it runs right after ``connection_made``, when the protocol is ready for data and
    before any further byte is read, replays, and then really resumes reading.
    """

    def __init__(self, transport: asyncio.Transport, data: bytes, store: PrefetchingStore,
                 prefetched: Dict[bytes, bytes]) -> None:
        self.transport = transport
        self.data = data
        self.store = store
        self.prefetched = prefetched
        self.tap: Optional[asyncio.BaseProtocol] = None

    def install(self) -> None:
        self.transport.resume_reading = self._resume  # type: ignore[method-assign]

    def _resume(self) -> None:
        transport = self.transport
        del transport.resume_reading  # the class's method again
        ssl_protocol = transport.get_protocol()
        if not isinstance(ssl_protocol, _sslproto.SSLProtocol):
            # Not the sequence this relies on (a future asyncio?): never guess where the
            # bytes go. The client is closed and told nothing; the log says why.
            self.store._burst.log(
                logging.ERROR, "replay",
                "sesscache.aio: start_tls put a %s on the transport, not asyncio's SSLProtocol; "
                "this Python's asyncio is not supported by sesscache.aio, connections are closed",
                type(ssl_protocol).__name__)
            transport.abort()
            return
        if isinstance(ssl_protocol, asyncio.BufferedProtocol):
            tap: asyncio.BaseProtocol = _BufferedTap(ssl_protocol, self.store, self.prefetched)
        else:  # Python < 3.11: SSLProtocol is a plain Protocol
            tap = _Tap(ssl_protocol, self.store, self.prefetched)
        self.tap = tap
        transport.set_protocol(tap)
        data, self.data = self.data, b""
        try:
            tap.feed(data)  # type: ignore[attr-defined]
        except Exception as exc:  # a bug here must not leave the handshake hanging
            asyncio.get_running_loop().call_exception_handler({
                "message": "sesscache.aio: replaying the ClientHello failed; connection closed",
                "exception": exc, "transport": transport})
            transport.abort()
            return
        transport.resume_reading()

    def remove(self) -> None:
        """After the handshake: the SSL protocol reads the socket directly again and the
        prefetched sessions are dropped."""
        vars(self.transport).pop("resume_reading", None)
        tap = self.tap
        if tap is not None:
            tap.prefetched = None  # type: ignore[attr-defined]
            if self.transport.get_protocol() is tap:
                self.transport.set_protocol(tap.inner)  # type: ignore[attr-defined]
        self.prefetched = {}


class _TapBase:
    """Forwards the transport's calls to the SSL protocol, with the connection's prefetch map
    set for the store meanwhile (OpenSSL's get callback runs inside those calls)."""

    def __init__(self, inner, store: PrefetchingStore, prefetched: Dict[bytes, bytes]) -> None:
        self.inner = inner
        self.store = store
        self.prefetched: Optional[Dict[bytes, bytes]] = prefetched

    def _enter(self):
        serving = self.store._serving
        previous = getattr(serving, "prefetched", None)
        serving.prefetched = self.prefetched
        return previous

    def connection_made(self, transport) -> None:  # pragma: no cover - never called
        self.inner.connection_made(transport)

    def connection_lost(self, exc) -> None:
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    def eof_received(self):
        previous = self._enter()
        try:
            return self.inner.eof_received()
        finally:
            self.store._serving.prefetched = previous


class _BufferedTap(_TapBase, asyncio.BufferedProtocol):
    def get_buffer(self, sizehint: int):
        return self.inner.get_buffer(sizehint)

    def buffer_updated(self, nbytes: int) -> None:
        previous = self._enter()
        try:
            self.inner.buffer_updated(nbytes)
        finally:
            self.store._serving.prefetched = previous

    def feed(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            buffer = self.get_buffer(len(view))
            size = min(len(buffer), len(view))
            if not size:
                raise RuntimeError("get_buffer() returned an empty buffer")
            buffer[:size] = view[:size]
            view = view[size:]
            self.buffer_updated(size)


class _Tap(_TapBase, asyncio.Protocol):
    def data_received(self, data: bytes) -> None:
        previous = self._enter()
        try:
            self.inner.data_received(data)
        finally:
            self.store._serving.prefetched = previous

    def feed(self, data: bytes) -> None:
        if data:
            self.data_received(data)


class _PendingApp(asyncio.Protocol):
    """The application's stand-in during the handshake: ``start_tls`` never calls
    ``connection_made`` and may deliver data before it returns. Everything is held and handed
    to the real protocol, in order, after its ``connection_made``."""

    def __init__(self) -> None:
        self._data: list = []
        self._eof = False
        self._lost: Optional[tuple] = None
        self._writing_paused = False

    def data_received(self, data: bytes) -> None:
        self._data.append(bytes(data))

    def eof_received(self) -> None:
        self._eof = True

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        self._lost = (exc,)

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False

    def hand_over(self, protocol: asyncio.BaseProtocol, transport: asyncio.Transport,
                  loop: asyncio.AbstractEventLoop) -> None:
        transport.set_protocol(protocol)
        try:
            protocol.connection_made(transport)
            if self._writing_paused:
                protocol.pause_writing()
            for chunk in self._data:
                if isinstance(protocol, asyncio.BufferedProtocol):
                    _feed_buffered(protocol, chunk)
                else:
                    protocol.data_received(chunk)  # type: ignore[attr-defined]
            self._data = []
            if self._eof:
                protocol.eof_received()  # type: ignore[attr-defined]
            if self._lost is not None:
                protocol.connection_lost(self._lost[0])
        except Exception as exc:
            loop.call_exception_handler({
                "message": "sesscache.aio: the protocol failed while taking over the connection",
                "exception": exc, "protocol": protocol, "transport": transport})
            transport.abort()


def _feed_buffered(protocol: asyncio.BufferedProtocol, data: bytes) -> None:
    view = memoryview(data)
    while view:
        buffer = protocol.get_buffer(len(view))
        size = min(len(buffer), len(view))
        if not size:
            raise RuntimeError("get_buffer() returned an empty buffer")
        buffer[:size] = view[:size]
        view = view[size:]
        protocol.buffer_updated(size)
