"""One ``/metrics`` for a whole multi-worker server, from the per-process records.

Several workers cannot share one port, and prometheus_client's multiprocess mode does not
take custom collectors. So every worker publishes its record (``records.py``) and tries to
listen on the one metrics address, at start and after each publish; the worker that holds it
serves the records of every process of its server on its host, each series labelled with
``host`` and ``pid``. When that worker goes, another takes the address within an interval.
A scrape writes the serving worker's own record first, then reads the others from the store:
they are at most one interval old.
"""
from __future__ import annotations

import logging
import os
import socket
from typing import Any, List, Optional, Tuple

from ..errors import ConfigurationError
from .records import RecordPublisher, read_records

logger = logging.getLogger(__name__)


def parse_listen(listen: str) -> Tuple[str, int]:
    """``"HOST:PORT"`` (or ``":PORT"``, ``"[::1]:PORT"``) as (host, port)."""
    if not isinstance(listen, str) or ":" not in listen:
        raise ConfigurationError(f"metrics_listen must be 'HOST:PORT' (e.g. '127.0.0.1:9464'), got {listen!r}")
    host, _, port = listen.rpartition(":")
    host = host.strip("[]") or "0.0.0.0"
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigurationError(f"metrics_listen needs a port from 1 to 65535, got {listen!r}")
    return host, int(port)


class RecordsCollector:
    """A prometheus_client collector over the records of one server on one host."""

    def __init__(self, store: Any, *, server: str, host: Optional[str] = None,
                 publisher: Optional[RecordPublisher] = None) -> None:
        self.store = store
        self.server = server
        self.host = socket.gethostname() if host is None else host
        self.publisher = publisher

    def records(self) -> List[dict]:
        """This server's records on this host. A store that cannot be read fails the scrape
        (Prometheus then marks the target down) rather than serve some processes only,
        whose sums would look like counter resets."""
        if self.publisher is not None:
            self.publisher.publish()
        try:
            found = read_records(self.store)
        except Exception as exc:
            logger.warning("sesscache: /metrics cannot read the processes' records from the store "
                           "(%s: %s); this scrape fails", type(exc).__name__, exc)
            raise
        return [r for r in found if r.get("server") == self.server and r.get("host") == self.host]

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily

        from ._families import HELP, cache_families

        records = self.records()
        labelled = [({"host": str(r["host"]), "pid": str(r["pid"])}, r["counters"]) for r in records]
        yield from cache_families(labelled, ("host", "pid"))
        processes = GaugeMetricFamily("sesscache_processes", HELP["sesscache_processes"], labels=["state"])
        processes.add_metric(["running"], sum(1 for r in records if not r.get("closed")))
        processes.add_metric(["closed"], sum(1 for r in records if r.get("closed")))
        yield processes
        served_by = GaugeMetricFamily("sesscache_metrics_served_by", HELP["sesscache_metrics_served_by"],
                                      labels=["host", "pid"])
        served_by.add_metric([self.host, str(os.getpid())], 1)
        yield served_by


class MetricsEndpoint:
    """Serves ``/metrics`` (a :class:`RecordsCollector`) at ``listen`` when this process
    can take the address; :meth:`try_listen` is called again after each publish."""

    def __init__(self, listen: str, collector: RecordsCollector) -> None:
        self.address = parse_listen(listen)
        self.collector = collector
        self._server: Any = None
        self._told = False

    @property
    def serving(self) -> bool:
        return self._server is not None

    def try_listen(self) -> bool:
        if self._server is not None:
            return True
        from prometheus_client import CollectorRegistry, start_http_server

        registry = CollectorRegistry(auto_describe=False)
        registry.register(self.collector)
        host, port = self.address
        try:
            self._server, _ = start_http_server(port, host, registry)
        except OSError as exc:  # another worker serves it (EADDRINUSE), or the address is wrong
            if not self._told and exc.errno not in (98, 48):  # EADDRINUSE on Linux, macOS
                self._told = True
                logger.warning("sesscache: cannot serve /metrics on %s:%d (%s)", host, port, exc)
            return False
        logger.info("sesscache: this process serves the server's /metrics on %s:%d", host, port)
        return True

    def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()


class ProcessMetrics:
    """What an integration starts in each worker process: the records, and the bid for the
    server's ``/metrics`` address when ``listen`` is given."""

    def __init__(self, cache: Any, *, server: str, listen: Optional[str] = None,
                 interval: float = 5.0) -> None:
        from .records import publisher_for_cache

        self.publisher = publisher_for_cache(cache, server=server, interval=interval)
        self.endpoint: Optional[MetricsEndpoint] = None
        if listen is not None:
            collector = RecordsCollector(cache.store, server=server, publisher=self.publisher)
            self.endpoint = MetricsEndpoint(listen, collector)
            # After each publish, in the publisher's thread: the first bid comes right after
            # this process's first record is in the store.
            self.publisher.on_tick.append(self.endpoint.try_listen)

    def close(self) -> None:
        if self.endpoint is not None:
            self.endpoint.close()
        self.publisher.close()


def check_metrics_options(listen: Optional[str], interval: float) -> None:
    """Refuse at configuration time what cannot work (in the master, before any worker)."""
    if listen is not None:
        parse_listen(listen)
        try:
            import prometheus_client  # noqa: F401
        except ImportError as exc:
            raise ConfigurationError("metrics_listen serves /metrics with prometheus_client: pip install "
                                     "'sesscache[metrics]'") from exc
    if isinstance(interval, bool) or not isinstance(interval, (int, float)) or not 0.05 <= interval <= 3600:
        raise ConfigurationError(f"records_interval must be 0.05 to 3600 seconds, got {interval!r}")
