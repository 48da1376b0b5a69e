"""Twisted (and Daphne, ``twist``, ``twistd``): resume TLS sessions across processes and hosts.

In code, wrap the ``CertificateOptions`` you pass to ``listenSSL`` or ``SSL4ServerEndpoint``::

    from twisted.internet import ssl
    from sesscache.integrations.twisted import with_session_cache

    options = ssl.CertificateOptions(privateKey=key, certificate=cert)
    factory = with_session_cache(options, "redis://cache.internal:6379/0", session_id_context="shop:443")
    reactor.listenSSL(443, site, factory)

Where only an endpoint string can be given (Daphne, ``twist web --listen``, ``twistd``), use the
``sesscache-ssl:`` endpoint, which takes every parameter of Twisted's ``ssl:`` plus ``store`` (a
store URL, its colons escaped with a backslash) and ``sessionIdContext``::

    daphne -e 'sesscache-ssl:443:privateKey=key.pem:certKey=crt.pem:store=sqlite\\:/var/lib/shop/tls.db:sessionIdContext=shop' shop.asgi:application

The endpoint comes from the plugin module ``twisted/plugins/sesscache_endpoints.py`` that the
sesscache package installs beside Twisted's own plugins.

Twisted serves from one process: the store is opened and tried when the factory (or the
endpoint) is made, before the server listens (as root, a SQLite store is only looked at then,
and opened at the first connection: ``twistd --uid`` drops privileges after parsing its
endpoints). A store that cannot work as configured raises
:class:`~sesscache.errors.ConfigurationError` naming it and the cause (Daphne and ``twist``
exit with it); one that is unreachable is logged and the server starts (see
``on_store_error``). sesscache's log goes to Twisted's log, or, where the standard library's
logging is configured (Daphne), to it.

Out of the box Twisted resumes nothing: ``CertificateOptions`` sets a random session id context
per context and ``SESS_CACHE_OFF`` (unless ``enableSessions=True``), and ``OP_NO_TICKET`` (unless
``enableSessionTickets=True``).
"""
from __future__ import annotations

import os
from typing import Any, Optional, Union

from ._logs import route_to_twisted
from ._process import ProcessCache
from ._startup import REFUSE

__all__ = ["with_session_cache", "certificate_options", "SessionCachedOptions", "parse_endpoint"]


class SessionCachedOptions:
    """A TLS server context factory: ``options``' context, with the session cache attached when
    the context is first made. Provides what ``listenSSL``, ``SSL4ServerEndpoint`` and
    ``TLSMemoryBIOFactory`` ask of a server context factory (``getContext`` and
    ``serverConnectionForTLS``)."""

    def __init__(self, options: Any, process_cache: ProcessCache) -> None:
        self.options = options
        self.process_cache = process_cache
        self._context: Optional[Any] = None

    def getContext(self) -> Any:
        context = self.options.getContext()  # CertificateOptions makes it once and keeps it
        if context is not self._context:
            self.process_cache.prepare(context)
            self._context = context
        return context

    def serverConnectionForTLS(self, protocol: Any) -> Any:
        self.getContext()
        creator = getattr(self.options, "serverConnectionForTLS", None)
        if creator is not None:
            return creator(protocol)
        from OpenSSL import SSL

        return SSL.Connection(self.getContext(), None)

    def __repr__(self) -> str:
        return f"<sesscache SessionCachedOptions {self.options!r}: {self.process_cache.describe_settings()}>"


def _declare_interfaces() -> None:
    from twisted.internet.interfaces import IOpenSSLServerConnectionCreator
    from zope.interface import classImplements

    classImplements(SessionCachedOptions, IOpenSSLServerConnectionCreator)


def _started(process_cache: ProcessCache) -> ProcessCache:
    """Check and open the store now, in the one process that serves (before it listens).

    As root, a SQLite store is only looked at, not opened: ``twistd --uid`` parses its
    endpoints as root and drops privileges later, and a database file created now would be
    root's. It is opened at the first connection instead."""
    route_to_twisted()
    problem = process_cache.master_problem()
    sqlite_as_root = os.geteuid() == 0 and process_cache.store_url.strip().startswith("sqlite:")
    if problem is None and not sqlite_as_root:
        problem = process_cache.start_in_process()
    if process_cache.refuse_or_warn(problem, "twisted", log_refusal=False):
        from ..errors import ConfigurationError

        raise ConfigurationError(problem.message(process_cache.on_store_error))
    return process_cache


def with_session_cache(options: Any, store_url: str, *, session_id_context: Union[str, bytes],
                       internal_cache: Optional[bool] = None, stateful_tickets: bool = True,
                       on_store_error: str = REFUSE, **cache_options: Any) -> SessionCachedOptions:
    """``options`` (a ``twisted.internet.ssl.CertificateOptions``) with sessions served from a store.

    :param store_url: the store (:func:`sesscache.store_from_url`).
    :param session_id_context: a short service name, the same in every process and host that
        shares the store.
    :param stateful_tickets: True (default) sets ``OP_NO_TICKET``, as Twisted does unless
        ``enableSessionTickets=True``; False leaves tickets as ``options`` set them.
    :param on_store_error: ``"refuse"`` (default): a store that cannot work as configured (a
        SQLite directory missing or not writable, a Redis password or ACL user refused) raises
        :class:`~sesscache.errors.ConfigurationError` here, naming the store and the cause.
        ``"warn"``: logged, and the factory is made. An unreachable store is logged, never raised.
    :param cache_options: :class:`~sesscache.SessionCache` arguments (``lifetime``, ``seal_keys``, ...).

    On the context ``options`` makes, it replaces Twisted's random per-context session id context
    with ``session_id_context`` and its cache mode (``SESS_CACHE_OFF`` unless
    ``enableSessions=True``) with the server cache mode, installs the cache's session callbacks
    and caps the session timeout at ``lifetime`` (:meth:`sesscache.SessionCache.attach`), and sets
    ``OP_NO_TICKET``, so TLS 1.2 resumes by session id and TLS 1.3 with stateful tickets, both
    from the store. The store is opened and tried here; a process forked later opens its own.
    """
    _declare_interfaces()
    return SessionCachedOptions(options, _started(ProcessCache(
        store_url, session_id_context=session_id_context, internal_cache=internal_cache,
        stateful_tickets=stateful_tickets, on_store_error=on_store_error, **cache_options)))


def certificate_options(store_url: str, *, session_id_context: Union[str, bytes], lifetime: Optional[float] = None,
                        on_store_error: str = REFUSE, **options: Any) -> SessionCachedOptions:
    """``CertificateOptions(**options)`` with the session cache: see :func:`with_session_cache`."""
    from twisted.internet.ssl import CertificateOptions

    cache_options = {} if lifetime is None else {"lifetime": lifetime}
    return with_session_cache(CertificateOptions(**options), store_url, session_id_context=session_id_context,
                              on_store_error=on_store_error, **cache_options)


def parse_endpoint(reactor: Any, *args: Any, store: Optional[str] = None,
                   sessionIdContext: Optional[str] = None, lifetime: Optional[str] = None,
                   onStoreError: str = REFUSE, metricsListen: Optional[str] = None,
                   **kwargs: Any) -> Any:
    """The ``sesscache-ssl:`` endpoint: Twisted's ``ssl:`` endpoint (same parameters, parsed by
    Twisted's own parser) with :func:`with_session_cache` over its ``CertificateOptions``;
    ``onStoreError=warn`` is its ``on_store_error``; ``metricsListen=HOST\\:PORT`` serves
    ``/metrics`` (docs/monitoring.md)."""
    from twisted.internet.endpoints import SSL4ServerEndpoint

    from .._compat import twisted_parse_ssl

    from ..errors import ConfigurationError

    if not store or not sessionIdContext:
        raise ConfigurationError(
            "the sesscache-ssl: endpoint needs store=URL and sessionIdContext=NAME, e.g. "
            "sesscache-ssl:443:privateKey=key.pem:store=sqlite\\:/var/lib/app/tls.db:sessionIdContext=app "
            "(colons inside a value are escaped with a backslash)")
    cache_options: dict = {} if lifetime is None else {"lifetime": float(lifetime)}
    if metricsListen is not None:  # one /metrics for every process of the server (sesscache.metrics)
        cache_options["metrics_listen"] = metricsListen
    (port, _, options), listen = twisted_parse_ssl()(None, *args, **kwargs)
    factory = with_session_cache(options, store, session_id_context=sessionIdContext, on_store_error=onStoreError,
                                 **cache_options)
    return SSL4ServerEndpoint(reactor, port, factory, **listen)
