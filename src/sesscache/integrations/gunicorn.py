"""gunicorn: resume TLS sessions across workers with one line in ``gunicorn.conf.py``::

    from sesscache.integrations.gunicorn import ssl_context_hook

    certfile = "/etc/ssl/shop.pem"
    keyfile = "/etc/ssl/shop.key"
    ssl_context = ssl_context_hook("sqlite:/var/lib/shop/tls-sessions.db",
                                   session_id_context="shop:443")

gunicorn (>= 21) calls ``ssl_context(conf, default_ssl_context_factory)`` in the worker: for
every connection with the ``sync`` and ``gthread`` workers (from several threads at once with
``gthread``), once per worker with ``gevent``, ``tornado`` and ``asgi``. The config file runs
in the master, before ``fork()``: the hook made there holds only its settings, and each worker
opens the store on its first connection.

Out of the box gunicorn resumes nothing: every connection of a ``sync`` or ``gthread`` worker
gets a new context, so even one worker never finds a session again, and TLS 1.2 tickets are
sealed with a key of that context only.
"""
from __future__ import annotations

import logging
import ssl
import threading
from typing import Any, Callable, Optional, Union

from ._process import FileStamp, ProcessCache

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

    def __call__(self, conf: Any, default_ssl_context_factory: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
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

    def __repr__(self) -> str:
        mode = "one context per worker" if self.reuse_context else "a context per connection"
        return f"<sesscache gunicorn ssl_context hook: {self.process_cache.describe_settings()}, {mode}>"


def ssl_context_hook(store_url: str, *, session_id_context: Union[str, bytes], reuse_context: bool = True,
                     internal_cache: bool = True, stateful_tickets: bool = True,
                     reload_check_interval: float = 1.0, **cache_options: Any) -> SSLContextHook:
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
    :param cache_options: :class:`~sesscache.SessionCache` arguments (``lifetime``,
        ``seal_keys``, ``max_session_size``, ``single_use``).
    :param metrics_listen: ``"HOST:PORT"``: one ``/metrics`` for the whole server (every worker's
        counters, labelled ``pid``), served by whichever worker holds the address; implies
        ``process_records=True`` (each worker publishes its counters to the store every
        ``records_interval`` seconds, which ``python -m sesscache stats --store`` reads). See
        docs/monitoring.md.

    What it sets on each context gunicorn's ``default_ssl_context_factory`` makes (certificate,
    ``cert_reqs``, ``ca_certs``, ``ciphers`` and ALPN stay gunicorn's):

    * ``OP_NO_TICKET``: TLS 1.2 then resumes by session id and TLS 1.3 issues stateful tickets,
      both served by the store, so a client resumes in whichever worker it reaches. (With
      tickets on, TLS 1.2 tickets are sealed by a key random to each context and TLS 1.3
      tickets are stateless: nothing resumes across workers or, here, connections.)
    * The session id context, the cache's session callbacks, the server cache mode
      (``SESS_CACHE_SERVER``, plus ``NO_INTERNAL`` when ``internal_cache=False``) and a session
      timeout of at most ``lifetime`` (:meth:`sesscache.SessionCache.attach`).

    The store is opened in each worker on its first connection, never in the master. The hook
    is thread-safe (``gthread`` calls it from its pool threads).
    """
    process_cache = ProcessCache(store_url, session_id_context=session_id_context, internal_cache=internal_cache,
                                 stateful_tickets=stateful_tickets, **cache_options)
    return SSLContextHook(process_cache, reuse_context=reuse_context, reload_check_interval=reload_check_interval)
