"""Hypercorn: resume TLS sessions across workers.

Hypercorn has no hook for its TLS context: each worker calls ``Config.create_ssl_context()``
(``hypercorn/asyncio/run.py``, ``trio/run.py``). :class:`SessionCachedConfig` is a ``Config``
whose contexts get the cache; workers are spawned and get the ``Config`` pickled, which carries
only the cache's settings::

    from hypercorn.run import run
    from sesscache.integrations.hypercorn import SessionCachedConfig

    config = SessionCachedConfig.from_toml("hypercorn.toml")   # or SessionCachedConfig()
    config.use_session_cache("sqlite:/var/lib/shop/tls-sessions.db", session_id_context="shop:443")
    config.application_path = "shop:app"
    run(config)

The ``hypercorn`` command builds its own ``Config`` from ``--config``: run Hypercorn from Python,
as above, to use this class.
"""
from __future__ import annotations

from ssl import SSLContext
from typing import Any, Optional, Union

from hypercorn.config import Config

from ._process import ProcessCache

__all__ = ["SessionCachedConfig"]


class SessionCachedConfig(Config):
    """Hypercorn's ``Config`` with a session cache on the TLS context of each worker."""

    sesscache: Optional[ProcessCache] = None

    def use_session_cache(self, store_url: str, *, session_id_context: Union[str, bytes],
                          internal_cache: bool = True, stateful_tickets: bool = True,
                          **cache_options: Any) -> "SessionCachedConfig":
        """Serve sessions from the store ``store_url`` names; returns the config.

        On the context Hypercorn makes (its certificate, ciphers, ALPN and verification stay
        Hypercorn's) it sets ``OP_NO_TICKET`` (unless ``stateful_tickets=False``: TLS 1.2 then
        resumes by session id and TLS 1.3 with stateful tickets, both from the store, in
        whichever worker a client reaches), the session id context, the cache's session
        callbacks, the server cache mode and a session timeout of at most ``lifetime``
        (:meth:`sesscache.SessionCache.attach`). Each worker opens the store itself.
        ``metrics_listen="HOST:PORT"`` serves one ``/metrics`` for every worker (and
        ``process_records=True`` publishes each worker's counters for ``python -m sesscache
        stats``): see docs/monitoring.md.
        """
        self.sesscache = ProcessCache(store_url, session_id_context=session_id_context,
                                      internal_cache=internal_cache, stateful_tickets=stateful_tickets,
                                      **cache_options)
        return self

    def create_ssl_context(self) -> Optional[SSLContext]:
        context = super().create_ssl_context()
        if context is not None and self.sesscache is not None:
            self.sesscache.prepare(context)
        return context
