"""Hypercorn: resume TLS sessions across workers.

Hypercorn has no hook for its TLS context: each worker calls ``Config.create_ssl_context()``
(``hypercorn/asyncio/run.py``, ``trio/run.py``). :class:`SessionCachedConfig` is a ``Config``
whose contexts get the cache; workers are spawned and get the ``Config`` pickled, which carries
only the cache's settings::

    import sys
    from hypercorn.run import run
    from sesscache.integrations.hypercorn import SessionCachedConfig

    if __name__ == "__main__":   # workers are spawned: they import this file again
        config = SessionCachedConfig.from_toml("hypercorn.toml")   # or SessionCachedConfig()
        config.use_session_cache("sqlite:/var/lib/shop/tls-sessions.db", session_id_context="shop:443")
        config.application_path = "shop:app"
        sys.exit(run(config))

The ``hypercorn`` command builds its own ``Config`` from ``--config``: run Hypercorn from Python,
as above, to use this class.

``use_session_cache`` (in the parent) checks what needs no connection (the URL, a SQLite
directory); each worker's ``create_ssl_context`` routes sesscache's log to ``hypercorn.error``,
opens the store and tries it. A store that cannot work makes the worker exit with status 3,
on which Hypercorn stops every worker and ``run`` returns 3; one that is unreachable is
logged and Hypercorn starts (see ``on_store_error``).
"""
from __future__ import annotations

import os
from ssl import SSLContext
from typing import Any, Optional, Union

from hypercorn.config import Config

from ._logs import route_to_logger
from ._process import ProcessCache
from ._startup import BOOT_ERROR_EXIT, REFUSE

__all__ = ["SessionCachedConfig"]


class SessionCachedConfig(Config):
    """Hypercorn's ``Config`` with a session cache on the TLS context of each worker."""

    sesscache: Optional[ProcessCache] = None

    def use_session_cache(self, store_url: str, *, session_id_context: Union[str, bytes],
                          internal_cache: Optional[bool] = None, stateful_tickets: bool = True,
                          on_store_error: str = REFUSE, **cache_options: Any) -> "SessionCachedConfig":
        """Serve sessions from the store ``store_url`` names; returns the config.

        On the context Hypercorn makes (its certificate, ciphers, ALPN and verification stay
        Hypercorn's) it sets ``OP_NO_TICKET`` (unless ``stateful_tickets=False``: TLS 1.2 then
        resumes by session id and TLS 1.3 with stateful tickets, both from the store, in
        whichever worker a client reaches), the session id context, the cache's session
        callbacks, the server cache mode and a session timeout of at most ``lifetime``
        (:meth:`sesscache.SessionCache.attach`). Each worker opens the store itself.

        ``on_store_error``: ``"refuse"`` (default) stops Hypercorn at start when the store
        cannot work as configured (raised here for what needs no connection; else the worker
        exits with status 3 and Hypercorn stops); ``"warn"`` starts anyway and logs. An
        unreachable store never stops Hypercorn: it is logged at once, then once per burst.

        ``metrics_listen="HOST:PORT"`` serves one ``/metrics`` for every worker (and
        ``process_records=True`` publishes each worker's counters for ``python -m sesscache
        stats``): see docs/monitoring.md.
        """
        cache = ProcessCache(store_url, session_id_context=session_id_context, internal_cache=internal_cache,
                             stateful_tickets=stateful_tickets, on_store_error=on_store_error, **cache_options)
        problem = cache.spawning_parent_problem()
        if cache.refuse_or_warn(problem, "hypercorn", log_refusal=False):
            from ..errors import ConfigurationError

            raise ConfigurationError(problem.message(cache.on_store_error))
        self.sesscache = cache
        return self

    def create_ssl_context(self) -> Optional[SSLContext]:
        context = super().create_ssl_context()
        if context is not None and self.sesscache is not None:
            self.log  # noqa: B018  Hypercorn configures hypercorn.error when its logger is first made
            route_to_logger("hypercorn", "hypercorn.error")
            if not self.sesscache.started:
                problem = self.sesscache.start_in_process()
                if self.sesscache.refuse_or_warn(problem, f"hypercorn worker {os.getpid()}"):
                    raise SystemExit(BOOT_ERROR_EXIT)
            self.sesscache.prepare(context)
        return context
