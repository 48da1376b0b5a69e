"""uvicorn: resume TLS sessions across ``--workers`` processes.

Run from Python (uvicorn >= 0.47; there is no command-line flag for it)::

    import uvicorn
    from sesscache.integrations.uvicorn import ssl_context_factory

    uvicorn.run("shop:app", workers=4, ssl_certfile="/etc/ssl/shop.pem", ssl_keyfile="/etc/ssl/shop.key",
                ssl_context_factory=ssl_context_factory("sqlite:/var/lib/shop/tls-sessions.db",
                                                        session_id_context="shop:443"))

uvicorn calls the factory in each worker, once (``Config.load``); ``--workers`` starts the
workers with ``multiprocessing``'s spawn method, so the factory is pickled: it holds only its
settings, and each worker opens the store itself.

Made (in the parent), the factory checks what needs no connection (the URL, a SQLite
directory); called (in each worker), it routes sesscache's log to ``uvicorn.error``, opens the
store and tries it. A store that cannot work makes the worker exit with uvicorn's
``STARTUP_FAILURE`` (3), on which uvicorn's supervisor stops instead of respawning it; one that
is unreachable is logged and uvicorn starts (see ``on_store_error``).

Under gunicorn with ``uvicorn-worker`` (whose worker ignores gunicorn's ``ssl_context`` hook),
use this module's worker class, which passes gunicorn's hook on to uvicorn::

    # gunicorn.conf.py
    from sesscache.integrations.gunicorn import ssl_context_hook
    worker_class = "sesscache.integrations.uvicorn.UvicornWorker"   # or UvicornH11Worker
    ssl_context = ssl_context_hook("sqlite:/var/lib/shop/tls-sessions.db", session_id_context="shop:443")
"""
from __future__ import annotations

import os
import ssl
import sys
from typing import Any, Callable, Optional, Union

from ._logs import route_to_logger
from ._process import ProcessCache
from ._startup import BOOT_ERROR_EXIT, REFUSE

__all__ = ["ssl_context_factory", "SSLContextFactory", "UvicornWorker", "UvicornH11Worker"]


class SSLContextFactory:
    """The picklable callable :func:`ssl_context_factory` returns; see there."""

    def __init__(self, process_cache: ProcessCache) -> None:
        self.process_cache = process_cache
        problem = process_cache.spawning_parent_problem()
        if process_cache.refuse_or_warn(problem, "uvicorn", log_refusal=False):
            from ..errors import ConfigurationError

            raise ConfigurationError(problem.message(process_cache.on_store_error))

    def __call__(self, config: Any, default_factory: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
        route_to_logger("uvicorn", "uvicorn.error")
        if not self.process_cache.started:
            problem = self.process_cache.start_in_process()
            if self.process_cache.refuse_or_warn(problem, f"uvicorn worker {os.getpid()}"):
                sys.exit(BOOT_ERROR_EXIT)  # uvicorn's STARTUP_FAILURE: the supervisor stops
        return self.process_cache.prepare(default_factory())

    def __repr__(self) -> str:
        return f"<sesscache uvicorn ssl_context_factory: {self.process_cache.describe_settings()}>"


def ssl_context_factory(store_url: str, *, session_id_context: Union[str, bytes], internal_cache: Optional[bool] = None,
                        stateful_tickets: bool = True, on_store_error: str = REFUSE,
                        **cache_options: Any) -> SSLContextFactory:
    """A value for uvicorn's ``ssl_context_factory`` that serves sessions from a shared store.

    :param store_url: the store (:func:`sesscache.store_from_url`): ``sqlite:PATH`` for the
        workers of one host, ``redis://...`` for several hosts.
    :param session_id_context: a short service name, the same in every worker and host that
        shares the store.
    :param internal_cache: see :meth:`sesscache.SessionCache.attach`.
    :param stateful_tickets: True (default) sets ``OP_NO_TICKET``; False leaves tickets as the
        context has them (for a deployment that shares ticket keys itself).
    :param on_store_error: ``"refuse"`` (default): a store that cannot work as configured (a
        SQLite directory missing or not writable, a Redis password or ACL user refused) stops
        uvicorn at start, naming the store and the cause (raised here for what can be told
        without connecting; else each worker exits with status 3 and uvicorn's supervisor
        stops). ``"warn"``: uvicorn starts anyway and logs it. A store that is only unreachable
        never stops uvicorn: it is logged at once, then once per burst.
    :param cache_options: :class:`~sesscache.SessionCache` arguments (``lifetime``,
        ``seal_keys``, ``max_session_size``, ``single_use``).
    :param metrics_listen: ``"HOST:PORT"``: one ``/metrics`` for all of uvicorn's workers, as
        for gunicorn (:func:`sesscache.integrations.gunicorn.ssl_context_hook`; with
        ``process_records`` and ``records_interval``): docs/monitoring.md.

    On the context uvicorn's default factory makes (from ``ssl_certfile``, ``ssl_keyfile``,
    ``ssl_ca_certs``, ``ssl_ciphers``, ..., which stay uvicorn's) it sets:

    * ``OP_NO_TICKET``: TLS 1.2 resumes by session id and TLS 1.3 issues stateful tickets,
      both served by the store, so a client resumes in whichever worker it reaches (uvicorn's
      own tickets are sealed with a key random to each worker: out of the box a client resumes
      only when it happens to reach the same worker again).
    * The session id context, the cache's session callbacks, the server cache mode and a session
      timeout of at most ``lifetime`` (:meth:`sesscache.SessionCache.attach`).

    Needs ``ssl_certfile`` on uvicorn's ``Config`` (the default factory reads it).
    """
    return SSLContextFactory(ProcessCache(store_url, session_id_context=session_id_context,
                                          internal_cache=internal_cache, stateful_tickets=stateful_tickets,
                                          on_store_error=on_store_error, **cache_options))


def _worker_classes():
    """The gunicorn worker classes, made when first named: only they need ``uvicorn-worker``."""
    try:
        from uvicorn_worker import UvicornH11Worker as BaseH11Worker, UvicornWorker as BaseWorker
    except ImportError as exc:
        from ..errors import ConfigurationError

        raise ConfigurationError("the sesscache uvicorn worker classes need the uvicorn-worker package: "
                                 "pip install uvicorn-worker") from exc

    class _GunicornHook:
        """gunicorn's ``ssl_context(conf, default_ssl_context_factory)`` as uvicorn's
        ``ssl_context_factory(config, default_factory)``: same shape, gunicorn's config passed."""

        def __init__(self, cfg: Any) -> None:
            self.cfg = cfg

        def __call__(self, config: Any, default_factory: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
            return self.cfg.ssl_context(self.cfg, default_factory)

    def with_hook(base: type) -> Callable[..., None]:
        def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
            base.__init__(self, *args, **kwargs)
            if self.cfg.is_ssl:  # Config.load(), in the worker's serve(), calls it
                self.config.ssl_context_factory = _GunicornHook(self.cfg)
        return __init__

    doc = ("{0} that honours gunicorn's ``ssl_context`` setting (uvicorn-worker's own {0} ignores "
           "it): set ``ssl_context = ssl_context_hook(...)`` in gunicorn.conf.py.")
    worker = type("UvicornWorker", (BaseWorker,), {"__init__": with_hook(BaseWorker),
                                                    "__doc__": doc.format("UvicornWorker"),
                                                    "__module__": __name__})
    h11 = type("UvicornH11Worker", (BaseH11Worker,), {"__init__": with_hook(BaseH11Worker),
                                                      "__doc__": doc.format("UvicornH11Worker"),
                                                      "__module__": __name__})
    return {"UvicornWorker": worker, "UvicornH11Worker": h11}


def __getattr__(name: str) -> Any:
    if name in ("UvicornWorker", "UvicornH11Worker"):
        classes = _worker_classes()
        globals().update(classes)
        return classes[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
