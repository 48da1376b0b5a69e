"""What every server integration shares: a cache opened once per worker process from a store
URL, and the settings that make a context resume across workers."""
from __future__ import annotations

import logging
import os
import ssl
import threading
import time
from typing import Any, Dict, Iterable, Optional, Tuple, Union

from ..cache import SessionCache
from ..contexts import MAX_SESSION_ID_CONTEXT
from ..errors import ConfigurationError
from ..stores import MemoryStore
from ..stores.urls import check_store_url, redacted_store_url, store_from_url
from ._startup import REFUSE, StoreProblem, check_on_store_error, master_problem, probe_store

logger = logging.getLogger(__name__)
#: What a server logs at start about its store (the name operators see in the server's log).
startup_logger = logging.getLogger("sesscache.integrations")


def session_id_context_bytes(value: Union[str, bytes]) -> bytes:
    """``value`` as the bytes OpenSSL takes, checked (str is encoded as UTF-8)."""
    raw = value.encode("utf-8") if isinstance(value, str) else value
    if not isinstance(raw, bytes) or not 0 < len(raw) <= MAX_SESSION_ID_CONTEXT:
        raise ConfigurationError(
            f"session_id_context must be 1 to {MAX_SESSION_ID_CONTEXT} bytes, got {value!r}: a short "
            "service name such as 'shop:443', the same in every worker and host sharing the store")
    return raw


def disable_stateless_tickets(context: Any) -> None:
    """Set ``OP_NO_TICKET`` on an ``ssl.SSLContext`` or an ``OpenSSL.SSL.Context``.

    Without it, TLS 1.2 clients resume with tickets sealed by a key that is random per context
    (so per worker) and TLS 1.3 tickets are stateless: the server-side cache is never asked and
    nothing resumes in another worker. With it, TLS 1.2 resumes by session id and TLS 1.3
    issues stateful tickets, both looked up in the store."""
    if isinstance(context, ssl.SSLContext):
        context.options |= ssl.OP_NO_TICKET
    else:
        from OpenSSL import SSL

        context.set_options(SSL.OP_NO_TICKET)


class ProcessCache:
    """A :class:`~sesscache.SessionCache` over the store a URL names, made on first use in each
    process (after ``fork()``, or after unpickling in a spawned worker), and the settings every
    context it serves gets.

    Pickles as its settings only, never the open store.

    ``on_store_error``: what a server does when the store cannot work as configured
    (``"refuse"``, the default: it does not start; ``"warn"``: it starts and logs); a store
    that is only unreachable never stops a server (see :mod:`._startup`).

    ``process_records=True``: each process publishes its counters to the store every
    ``records_interval`` seconds (:mod:`sesscache.metrics.records`, read by ``python -m
    sesscache stats --store``). ``metrics_listen="HOST:PORT"`` does that too and serves one
    ``/metrics`` for every process of the server from those records
    (:mod:`sesscache.metrics.fleet`); both need a store the processes share.
    """

    def __init__(self, store_url: str, *, session_id_context: Union[str, bytes],
                 internal_cache: Optional[bool] = None, stateful_tickets: bool = True,
                 on_store_error: str = REFUSE, metrics_listen: Optional[str] = None,
                 process_records: bool = False, records_interval: float = 5.0,
                 **cache_options: Any) -> None:
        check_store_url(store_url)
        # sesscache.metrics: each worker's counters in the store (python -m sesscache stats),
        # and with metrics_listen one /metrics for the whole server, served by one worker.
        from ..metrics.fleet import check_metrics_options

        check_metrics_options(metrics_listen, records_interval)
        self.metrics_listen = metrics_listen
        self.process_records = bool(process_records) or metrics_listen is not None
        self.records_interval = float(records_interval)
        if self.process_records and store_url.strip() == "memory":
            raise ConfigurationError(
                "metrics_listen and process_records need a store the workers share: each worker's "
                "'memory' store is its own, so no worker would see another's counters. Use "
                "sqlite:PATH (one host) or redis://... (several hosts)")
        self.store_url = store_url
        self.on_store_error = check_on_store_error(on_store_error)
        self.session_id_context = session_id_context_bytes(session_id_context)
        self.internal_cache = internal_cache
        self.stateful_tickets = stateful_tickets
        self.cache_options: Dict[str, Any] = dict(cache_options)
        # The options are checked here, in the process that names them, not in each worker.
        SessionCache(MemoryStore(), **self.cache_options)
        self._init_process_state()

    def _init_process_state(self) -> None:
        self._lock = threading.Lock()
        self._cache: Optional[SessionCache] = None
        self._pid: Optional[int] = None
        self._metrics: Any = None  # sesscache.metrics.fleet.ProcessMetrics of this process

    def __getstate__(self) -> Dict[str, Any]:
        state = self.__dict__.copy()
        for name in ("_lock", "_cache", "_pid", "_metrics"):
            state.pop(name)
        return state

    def __setstate__(self, state: Dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._init_process_state()

    def master_problem(self, **user: Any) -> Optional[StoreProblem]:
        """What can be told about the store before any worker opens it (no connection, no
        file); ``user``: ``uid``, ``gid``, ``groups`` of the workers, when not this process's."""
        return master_problem(self.store_url, **user)

    def spawning_parent_problem(self) -> Optional[StoreProblem]:
        """For a parent that *spawns* its workers as its own user (uvicorn ``--workers``,
        Hypercorn): :meth:`master_problem`, then, for a network store, a real try on a
        connection closed at once. Such a parent passes nothing to its workers but what it
        pickles, and the workers run as it does, so the try costs nothing they could inherit;
        it is there because those parents lose a refusing worker's exit status (uvicorn's
        ``run`` exits non-zero for one worker only; Hypercorn's ``run`` returns the status of
        the workers it stopped last). A SQLite store is not opened here: that would create
        its file."""
        problem = self.master_problem()
        if problem is not None or self.store_url.strip().startswith(("sqlite:", "memory")):
            return problem
        store = store_from_url(self.store_url)
        try:
            problem = probe_store(store, self.store_url)
        finally:
            store.close()
        return problem if problem is not None and problem.refuses(self.on_store_error) else None

    def start_in_process(self) -> Optional[StoreProblem]:
        """Open this process's store and try it for real (a write, a read and a delete);
        the problem found, if any. The cache is made either way: a store that comes back
        serves sessions without a restart."""
        with self._lock:
            if self._cache is not None and self._pid == os.getpid():
                return None
            store = store_from_url(self.store_url)
            problem = probe_store(store, self.store_url)
            self._open(store)
        return problem

    def refuse_or_warn(self, problem: Optional[StoreProblem], who: str = "", *, log_refusal: bool = True) -> bool:
        """Log ``problem`` (an error when the server must not start, else a warning);
        True when the server must not start. ``log_refusal=False`` where the caller raises
        the message instead (it would be printed twice)."""
        if problem is None:
            return False
        refuses = problem.refuses(self.on_store_error)
        if refuses and not log_refusal:
            return True
        startup_logger.log(logging.ERROR if refuses else logging.WARNING, "%s",
                           problem.message(self.on_store_error, who))
        return refuses

    def _open(self, store: Any) -> SessionCache:
        # A cache inherited through fork() belongs to the parent: its store's connections
        # are not this process's to use (SQLiteStore and the Redis client notice and
        # reopen; a fresh cache makes that true of every store).
        pid = os.getpid()
        self._cache = SessionCache(store, **self.cache_options)
        self._pid = pid
        if self.process_records:
            # sesscache.metrics: this worker's counters in the store (python -m sesscache
            # stats), and with metrics_listen one /metrics for the whole server.
            from ..metrics.fleet import ProcessMetrics

            self._metrics = ProcessMetrics(
                self._cache, server=self.session_id_context.decode("utf-8", "backslashreplace"),
                listen=self.metrics_listen, interval=self.records_interval)
        logger.debug("process %d opened store %s", pid, redacted_store_url(self.store_url))
        return self._cache

    @property
    def cache(self) -> SessionCache:
        """This process's cache (opening its store on the first call in the process)."""
        cache, pid = self._cache, os.getpid()
        if cache is not None and self._pid == pid:
            return cache
        with self._lock:
            if self._cache is None or self._pid != pid:
                return self._open(store_from_url(self.store_url))
            return self._cache

    def prepare(self, context: Any) -> Any:
        """Attach this process's cache to ``context`` (and ``OP_NO_TICKET`` unless
        ``stateful_tickets=False``); returns the context."""
        if self.stateful_tickets:
            disable_stateless_tickets(context)
        self.cache.attach(context, session_id_context=self.session_id_context,
                          internal_cache=self.internal_cache)
        return context

    @property
    def started(self) -> bool:
        """Has this process opened its store (and so probed it, when a server hook did)?"""
        return self._cache is not None and self._pid == os.getpid()

    def describe_settings(self) -> str:
        return (f"store {redacted_store_url(self.store_url)}, session id context {self.session_id_context!r}, "
                f"{'OP_NO_TICKET' if self.stateful_tickets else 'tickets as configured'}, "
                f"on_store_error={self.on_store_error!r}")


class FileStamp:
    """Tells when any of some files changed (size, mtime or inode), looking at most once per
    ``interval`` seconds: cheap enough to ask on every connection."""

    def __init__(self, paths: Iterable[Optional[str]], interval: float = 1.0) -> None:
        self.paths = tuple(os.fspath(p) for p in paths if p)
        self.interval = interval
        self._stamp = self._read()
        self._next_check = time.monotonic() + interval

    def _read(self) -> Tuple[Any, ...]:
        stamp = []
        for path in self.paths:
            try:
                st = os.stat(path)
            except OSError:
                stamp.append(None)
            else:
                stamp.append((st.st_mtime_ns, st.st_size, st.st_ino))
        return tuple(stamp)

    def changed(self) -> bool:
        now = time.monotonic()
        if now < self._next_check:
            return False
        self._next_check = now + self.interval
        return self._read() != self._stamp
