"""gunicorn: resume TLS sessions across workers with one line in ``gunicorn.conf.py``::

    from sesscache.integrations.gunicorn import ssl_context_hook

    certfile = "/etc/ssl/shop.pem"
    keyfile = "/etc/ssl/shop.key"
    ssl_context = ssl_context_hook("sqlite:/var/lib/shop/tls-sessions.db",
                                   session_id_context="shop:443")

gunicorn (>= 21) calls ``ssl_context(conf, default_ssl_context_factory)`` in the worker: for
every connection with the ``sync`` and ``gthread`` workers (from several threads at once with
``gthread``), once per worker with ``gevent``, ``tornado`` and ``asgi``. The config file runs
in the master, before ``fork()``: the hook made there holds only its settings.

At the top level of a config file, :func:`ssl_context_hook` also sets gunicorn's
``on_starting`` and ``post_worker_init`` there (unless the file already set them; a file that
sets them later calls ``ssl_context.on_starting(server)`` and
``ssl_context.post_worker_init(worker)`` from its own). ``on_starting`` (in the master) sends
sesscache's log to gunicorn's error log and checks what needs no connection: the URL, and a
SQLite directory's permissions for the workers' ``user``/``group``. ``post_worker_init`` (in
each worker, after it dropped privileges) opens the store and tries it. A store that cannot
work stops gunicorn at start (the worker exits with gunicorn's boot-error status 3, which
halts the master), one that is unreachable is logged and gunicorn starts; see
``on_store_error``.

Out of the box gunicorn resumes nothing: every connection of a ``sync`` or ``gthread`` worker
gets a new context, so even one worker never finds a session again, and TLS 1.2 tickets are
sealed with a key of that context only.
"""
from __future__ import annotations

import logging
import os
import ssl
import sys
import threading
from typing import Any, Callable, Optional, Union

from .._compat import caller_frame
from ._logs import route_to_logger
from ._process import FileStamp, ProcessCache
from ._startup import BOOT_ERROR_EXIT, REFUSE

__all__ = ["ssl_context_hook", "SSLContextHook"]

logger = logging.getLogger(__name__)


class SSLContextHook:
    """The callable :func:`ssl_context_hook` returns; see there. ``hook.process_cache.cache``
    is the worker's :class:`~sesscache.SessionCache` (its ``stats`` for monitoring)."""

    def __init__(self, process_cache: ProcessCache, *, reuse_context: bool = True,
                 reload_check_interval: float = 1.0) -> None:
        self.process_cache = process_cache
        self.reuse_context = reuse_context
        self.reload_check_interval = reload_check_interval
        self._lock = threading.Lock()
        self._reused: Optional[ssl.SSLContext] = None
        self._reused_pid: Optional[int] = None
        self._stamp: Optional[FileStamp] = None

    # -- gunicorn server hooks ---------------------------------------------------------------

    def on_starting(self, server: Any) -> None:
        """gunicorn's ``on_starting(server)``, in the master: route sesscache's log to
        gunicorn's error log, and refuse a store that cannot work for the workers' user
        (checking only what needs no connection and creates no file)."""
        route_to_logger("gunicorn", "gunicorn.error")
        cfg = server.cfg
        problem = self.process_cache.master_problem(**_workers_user(cfg))
        if self.process_cache.refuse_or_warn(problem, "gunicorn master"):
            # gunicorn prints a RuntimeError raised at start as "Error: ..." and exits 1.
            raise RuntimeError(f"sesscache: {problem.message(self.process_cache.on_store_error)}")

    def post_worker_init(self, worker: Any) -> None:
        """gunicorn's ``post_worker_init(worker)``, in each worker after it dropped
        privileges: open the store and try it. A store that cannot work makes the worker
        exit with gunicorn's boot-error status (3), which halts gunicorn; when a worker
        respawned later finds it so (a password changed meanwhile), it logs and serves on:
        a running server is not stopped by its store."""
        route_to_logger("gunicorn", "gunicorn.error")
        problem = self.process_cache.start_in_process()
        first_workers = getattr(worker, "age", 0) <= getattr(worker.cfg, "workers", 0)
        if problem is not None and problem.refuses(self.process_cache.on_store_error) and not first_workers:
            logger.error("%s", problem.message("warn", f"worker {os.getpid()}, respawned while serving"))
            return
        if self.process_cache.refuse_or_warn(problem, f"worker {os.getpid()}"):
            sys.exit(BOOT_ERROR_EXIT)

    # -- the ssl_context setting --------------------------------------------------------------

    def __call__(self, conf: Any, default_ssl_context_factory: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
        if not self.process_cache.started:
            self._start_without_hooks()
        if not self.reuse_context:
            return self.process_cache.prepare(default_ssl_context_factory())
        return self._reused_context(conf, default_ssl_context_factory)

    def _reused_context(self, conf: Any, factory: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
        import os

        context, stamp = self._reused, self._stamp
        if context is not None and self._reused_pid == os.getpid() and not stamp.changed():
            return context
        with self._lock:
            if self._reused is not context:  # another thread made it meanwhile
                return self._reused
            pid = os.getpid()
            reloading = context is not None and self._reused_pid == pid
            # Stamped before loading: a file that changes during the load is loaded again later.
            stamp = FileStamp((getattr(conf, "certfile", None), getattr(conf, "keyfile", None),
                               getattr(conf, "ca_certs", None)), self.reload_check_interval)
            try:
                fresh = self.process_cache.prepare(factory())
            except Exception:
                if not reloading:
                    raise
                # Files caught half-written, or a key that does not match yet: keep serving with
                # the context that works; the old stamp makes the next check try again.
                logger.warning("sesscache: worker %d could not load the changed certificate files; "
                               "it keeps the previous ones and tries again", pid, exc_info=True)
                return context
            if reloading:
                logger.info("sesscache: certificate files changed; worker %d loaded them again", pid)
            self._stamp, self._reused, self._reused_pid = stamp, fresh, pid
            return fresh

    def _start_without_hooks(self) -> None:
        """The config file replaced ``post_worker_init`` without calling ours: try the store
        at the first connection, and say so (too late to refuse)."""
        route_to_logger("gunicorn", "gunicorn.error")
        problem = self.process_cache.start_in_process()
        if problem is not None:
            logger.error("%s (found at the first connection: call ssl_context.post_worker_init(worker) "
                         "from your post_worker_init so that gunicorn refuses to start instead)",
                         problem.message("warn", f"worker {os.getpid()}"))

    def __repr__(self) -> str:
        mode = "one context per worker" if self.reuse_context else "a context per connection"
        return f"<sesscache gunicorn ssl_context hook: {self.process_cache.describe_settings()}, {mode}>"


def _workers_user(cfg: Any) -> dict:
    """The user, group and supplementary groups gunicorn's workers will run as
    (``util.set_owner_process``: ``user``, ``group``, ``initgroups``)."""
    uid, gid = getattr(cfg, "uid", None), getattr(cfg, "gid", None)
    uid = os.geteuid() if uid is None else uid
    gid = os.getegid() if gid is None else gid
    groups = set(os.getgroups())
    if getattr(cfg, "initgroups", False) and uid != os.geteuid():
        try:
            import pwd

            groups = set(os.getgrouplist(pwd.getpwuid(uid).pw_name, gid))
        except (ImportError, KeyError):
            pass
    return {"uid": uid, "gid": gid, "groups": groups}


def _install_server_hooks(hook: SSLContextHook, namespace: dict) -> None:
    """Set ``on_starting`` and ``post_worker_init`` in a config file's namespace, unless it
    set them already (then it must call ``hook.on_starting`` / ``hook.post_worker_init``)."""
    for name in ("on_starting", "post_worker_init"):
        if name in namespace:
            logger.debug("%s is set in the config file: it should call ssl_context.%s", name, name)
        else:
            namespace[name] = getattr(hook, name)


def ssl_context_hook(store_url: str, *, session_id_context: Union[str, bytes], reuse_context: bool = True,
                     internal_cache: Optional[bool] = None, stateful_tickets: bool = True,
                     reload_check_interval: float = 1.0, on_store_error: str = REFUSE,
                     **cache_options: Any) -> SSLContextHook:
    """A value for ``ssl_context`` in ``gunicorn.conf.py`` that serves sessions from a shared store.

    :param store_url: the store (:func:`sesscache.store_from_url`): ``sqlite:PATH`` for the
        workers of one host, ``redis://...`` for several hosts.
    :param session_id_context: a short service name, the same in every worker and host that
        shares the store (sessions resume only where it matches).
    :param reuse_context: True (default): one context per worker, made by gunicorn's
        ``default_ssl_context_factory`` on the worker's first connection and made again when
        ``certfile``, ``keyfile`` or ``ca_certs`` change (looked at no more than every
        ``reload_check_interval`` seconds). That saves gunicorn's context and
        ``load_cert_chain`` on every connection, OpenSSL's in-process cache then answers the
        worker's own sessions without Python, and memory stays flat. False: gunicorn's own
        context per connection, as gunicorn makes them, with the cache attached to each
        (slower; what an attachment keeps is freed with its context: no growth measured
        over 10,000 connections).
    :param internal_cache: see :meth:`sesscache.SessionCache.attach`.
    :param stateful_tickets: True (default) sets ``OP_NO_TICKET``; False leaves tickets as the
        context has them (for a deployment that shares ticket keys across workers itself).
    :param on_store_error: ``"refuse"`` (default): a store that cannot work as configured (a
        SQLite directory missing or not writable by the workers' user, a Redis password or ACL
        user refused, a malformed URL) stops gunicorn at start, with a line in its error log
        naming the store and the cause. ``"warn"``: gunicorn starts anyway and logs it. A store
        that is only unreachable (nothing listening, a timeout) never stops gunicorn: it is
        logged at once, then once per burst while lookups fail.
    :param cache_options: :class:`~sesscache.SessionCache` arguments (``lifetime``,
        ``seal_keys``, ``max_session_size``, ``single_use``).
    :param metrics_listen: ``"HOST:PORT"``: one ``/metrics`` for the whole server (every worker's
        counters, labelled ``pid``), served by whichever worker holds the address; implies
        ``process_records=True`` (each worker publishes its counters to the store every
        ``records_interval`` seconds, which ``python -m sesscache stats --store`` reads). See
        docs/monitoring.md.

    Called at the top level of a config file, it also sets ``on_starting`` and
    ``post_worker_init`` there (unless already set) to check the store at start and route
    sesscache's log into gunicorn's error log (see the module docstring).

    What it sets on each context gunicorn's ``default_ssl_context_factory`` makes (certificate,
    ``cert_reqs``, ``ca_certs``, ``ciphers`` and ALPN stay gunicorn's):

    * ``OP_NO_TICKET``: TLS 1.2 then resumes by session id and TLS 1.3 issues stateful tickets,
      both served by the store, so a client resumes in whichever worker it reaches. (With
      tickets on, TLS 1.2 tickets are sealed by a key random to each context and TLS 1.3
      tickets are stateless: nothing resumes across workers or, here, connections.)
    * The session id context, the cache's session callbacks, the server cache mode
      (``SESS_CACHE_SERVER``, plus ``NO_INTERNAL`` when attach turns OpenSSL's internal cache off) and a session
      timeout of at most ``lifetime`` (:meth:`sesscache.SessionCache.attach`).

    The store is opened in each worker (at ``post_worker_init``, else on its first
    connection), never in the master. The hook is thread-safe (``gthread`` calls it from its
    pool threads).
    """
    process_cache = ProcessCache(store_url, session_id_context=session_id_context, internal_cache=internal_cache,
                                 stateful_tickets=stateful_tickets, on_store_error=on_store_error, **cache_options)
    hook = SSLContextHook(process_cache, reuse_context=reuse_context, reload_check_interval=reload_check_interval)
    caller = caller_frame(1)
    if caller.f_globals is caller.f_locals and caller.f_globals.get("__name__") != "__main__":
        _install_server_hooks(hook, caller.f_globals)  # a config file's top level
    return hook
