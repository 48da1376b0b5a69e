"""Counters that leave the process: Prometheus collectors, per-process records in the
store, and one ``/metrics`` for a whole multi-worker server.

* :class:`CacheCollector` (``registry.register(CacheCollector(cache))``): one process's
  cache, on any ``prometheus_client`` ``CollectorRegistry``.
* :class:`TicketKeysCollector`: a :class:`~sesscache.TicketKeys`' counters, ring
  generation and key age.
* :mod:`sesscache.metrics.records`: each process publishes its counters to the store every
  few seconds; ``python -m sesscache stats --store URL`` reads them.
* :mod:`sesscache.metrics.fleet`: the server-wide ``/metrics`` the integrations serve with
  ``metrics_listen="HOST:PORT"``.

A scrape reads counters the code keeps anyway (the cache's, the C fast path's, OpenSSL's own
``SSL_CTX_sess_*`` through each libssl copy's function table, the store wrapper's): a
handshake takes no lock it did not take before. ``prometheus_client`` is the optional extra
``sesscache[metrics]``; the records and ``stats`` need nothing more than sesscache.
"""
from __future__ import annotations

from typing import Any, Optional

from ..errors import ConfigurationError
from ._snapshot import LOOKUP_RESULTS, cache_snapshot, resumption, ticket_keys_snapshot

__all__ = ["CacheCollector", "TicketKeysCollector", "LOOKUP_RESULTS", "cache_snapshot", "resumption"]


def _need_prometheus_client() -> None:
    try:
        import prometheus_client  # noqa: F401
    except ImportError as exc:
        raise ConfigurationError(
            "sesscache.metrics' collectors need prometheus_client: pip install 'sesscache[metrics]' "
            "(or prometheus_client). The per-process records and python -m sesscache stats work "
            "without it.") from exc


class CacheCollector:
    """A ``prometheus_client`` collector for one process's :class:`~sesscache.SessionCache`::

        from prometheus_client import REGISTRY
        REGISTRY.register(CacheCollector(cache))

    ``ticket_keys`` adds a :class:`~sesscache.TicketKeys`' metrics to the same collector.
    Series carry no labels of their own: the process is the scrape target.
    """

    def __init__(self, cache: Any, *, ticket_keys: Optional[Any] = None) -> None:
        _need_prometheus_client()
        self.cache = cache
        self.ticket_keys = ticket_keys

    def collect(self):
        from ._families import cache_families

        snap = cache_snapshot(self.cache)
        if self.ticket_keys is not None:
            snap["ticket_keys"] = ticket_keys_snapshot(self.ticket_keys)
        return iter(cache_families([({}, snap)]))


class TicketKeysCollector:
    """A ``prometheus_client`` collector for a :class:`~sesscache.TicketKeys` (shared session
    ticket keys): tickets issued, resumed, refused by reason, rotations, the ring's
    generation and the age of the key encrypting new tickets."""

    def __init__(self, ticket_keys: Any) -> None:
        _need_prometheus_client()
        self.ticket_keys = ticket_keys

    def collect(self):
        from ._families import ticket_keys_families

        return iter(ticket_keys_families([({}, ticket_keys_snapshot(self.ticket_keys))]))
