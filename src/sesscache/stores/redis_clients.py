"""The redis-py clients ``RedisStore`` talks through: built by the store, with the store's
timeouts, no retries and a bounded pool, for every topology a fleet runs.

* one server: ``redis://``, ``rediss://`` (TLS), ``unix://``;
* Redis Cluster: ``redis+cluster://host:port[,host:port...]`` (``rediss+cluster://`` for
  TLS), or ``RedisStore(cluster=[("host", port), ...])``;
* Sentinel: ``redis+sentinel://host:port[,host:port...]/service_name[/db]``, or
  ``RedisStore(sentinel=[("host", port), ...], service_name="mymaster")``;
* a client you built yourself (``redis.Redis``, ``redis.cluster.RedisCluster``, or one from
  ``Sentinel.master_for``): the store makes its own client to the same servers, with the same
  credentials and TLS settings, and the store's timeouts. Yours is left untouched (and open).

Why rebuild rather than use the client given: redis-py's defaults retry (three times, with
backoff) and wait for a connection with no timeout; a ``RedisCluster`` that loses a master
retries, re-reads the slot map and backs off, which took 6-9 s per call in the measurement
behind issue 14. A session lookup runs inside a TLS handshake; it must fail within the
store's ``timeout``, once.
"""
from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union
from urllib.parse import unquote, urlsplit

from ..errors import ConfigurationError

log = logging.getLogger(__name__)

Address = Tuple[str, int]
#: Connections per node a store keeps at most (redis-py's default is 2**31: unbounded).
DEFAULT_MAX_CONNECTIONS = 64

# Connection settings copied from a client the user built (credentials, TLS, database).
# Timeouts and retries are the store's own, never copied.
_NOT_COPIED = {"socket_timeout", "socket_connect_timeout", "retry", "retry_on_timeout",
               "retry_on_error", "health_check_interval", "connection_pool"}


# What a rebuilt Sentinel client takes from the user's connections to the sentinels.
_SENTINEL_COPIED = {"username", "password", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs",
                    "ssl_check_hostname", "ssl_ca_path", "ssl_ca_data"}


def store_client_kwargs(timeout: float, extra: Dict[str, Any], retry_cls: Any = None) -> Dict[str, Any]:
    """redis-py arguments for a call that fails within ``timeout``, once (``retry_cls``:
    ``redis.asyncio.retry.Retry`` for an asyncio client; the sync one by default)."""
    from redis.backoff import NoBackoff

    if retry_cls is None:
        from redis.retry import Retry as retry_cls

    kwargs: Dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        # No retries: a callback must not wait several timeouts and backoffs. redis-py still
        # replaces a stale pooled connection before use.
        "retry": retry_cls(NoBackoff(), 0),
        "retry_on_timeout": False,
        "decode_responses": False,
    }
    kwargs.update(extra)
    if kwargs.get("decode_responses"):
        raise ConfigurationError("decode_responses must stay False: sessions are bytes")
    return kwargs


def parse_addresses(spec: Union[str, Sequence[Any]], what: str) -> List[Address]:
    """``"h:p,h:p"`` or ``[("h", p), "h:p", ...]`` as a list of (host, port)."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    out: List[Address] = []
    for item in items:
        if isinstance(item, str):
            host, sep, port = item.strip().rpartition(":")
            if not sep or not port.isdigit():
                raise ConfigurationError(f"{what} address {item!r} is not host:port")
            out.append((host.strip("[]"), int(port)))
        elif isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], int):
            out.append((str(item[0]), item[1]))
        else:
            raise ConfigurationError(f"{what} address {item!r} is not ('host', port) or 'host:port'")
    if not out:
        raise ConfigurationError(f"{what} needs at least one host:port")
    return out


def _url_credentials(parts: Any) -> Dict[str, Any]:
    kwargs: Dict[str, Any] = {}
    if parts.username:
        kwargs["username"] = unquote(parts.username)
    if parts.password:
        kwargs["password"] = unquote(parts.password)
    return kwargs


def split_topology_url(url: str) -> Tuple[str, Dict[str, Any]]:
    """``("cluster"|"sentinel", arguments)`` for a ``redis+cluster://`` or ``redis+sentinel://``
    URL (``rediss+...`` for TLS); ``("single", {})`` for any other URL."""
    scheme = url.split("://", 1)[0].lower()
    if scheme not in ("redis+cluster", "rediss+cluster", "redis+sentinel", "rediss+sentinel"):
        return "single", {}
    # urlsplit cannot read "h1:p1,h2:p2" as a netloc: take it apart by hand.
    rest = url.split("://", 1)[1]
    netloc, _, path = rest.partition("/")
    userinfo, _, hosts = netloc.rpartition("@")
    parts = urlsplit(f"redis://{userinfo}@x/" if userinfo else "redis://x/")
    args: Dict[str, Any] = {"addresses": parse_addresses(hosts, scheme), "tls": scheme.startswith("rediss"),
                            "credentials": _url_credentials(parts)}
    if scheme.endswith("sentinel"):
        names = [p for p in path.split("?")[0].split("/") if p]
        if not names:
            raise ConfigurationError(
                f"{scheme}:// needs the service name: {scheme}://host:port,host:port/mymaster[/db]")
        args["service_name"] = names[0]
        args["db"] = int(names[1]) if len(names) > 1 and names[1].isdigit() else 0
        return "sentinel", args
    return "cluster", args


def cluster_client(addresses: List[Address], kwargs: Dict[str, Any]) -> Any:
    from redis.cluster import ClusterNode, RedisCluster

    kwargs = dict(kwargs)
    kwargs.setdefault("max_connections", DEFAULT_MAX_CONNECTIONS)
    return RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in addresses],
        # One node down must not stop the client from starting or from serving the others.
        require_full_coverage=False,
        **kwargs,
    )


def sentinel_client(addresses: List[Address], service_name: str, kwargs: Dict[str, Any],
                    sentinel_kwargs: Optional[Dict[str, Any]] = None) -> Any:
    """A client of the master Sentinel names; after a failover, its connections reconnect to
    the new master (redis-py's SentinelConnectionPool asks the sentinels on each connect)."""
    from redis.sentinel import Sentinel

    kwargs = dict(kwargs)
    kwargs.setdefault("max_connections", DEFAULT_MAX_CONNECTIONS)
    # The sentinels themselves: the same timeouts, and the same credentials only if given.
    talk_to_sentinels = {k: kwargs[k] for k in ("socket_timeout", "socket_connect_timeout", "retry")}
    talk_to_sentinels.update(sentinel_kwargs or {})
    sentinel = Sentinel(addresses, sentinel_kwargs=talk_to_sentinels, **{
        k: v for k, v in kwargs.items() if k in ("socket_timeout", "socket_connect_timeout")})
    return sentinel.master_for(service_name, **kwargs)


def rebuild_client(client: Any, timeout: float, extra: Dict[str, Any]) -> Optional[Any]:
    """A client to the same servers as ``client`` (same credentials, TLS, database), with the
    store's timeouts and no retries; None for a client of a kind this function does not know."""
    import redis
    from redis.cluster import RedisCluster
    from redis.sentinel import SentinelConnectionPool

    kwargs = store_client_kwargs(timeout, extra)
    if isinstance(client, RedisCluster):
        manager = client.nodes_manager
        copied = {k: v for k, v in manager.connection_kwargs.items() if k not in _NOT_COPIED
                  and k not in ("host", "port")}
        addresses = [(node.host, node.port) for node in manager.startup_nodes.values()]
        return cluster_client(addresses, {**copied, **kwargs})
    if isinstance(client, redis.Redis):
        pool = client.connection_pool
        copied = {k: v for k, v in pool.connection_kwargs.items() if k not in _NOT_COPIED}
        merged = {**copied, **kwargs}
        merged.setdefault("max_connections", DEFAULT_MAX_CONNECTIONS)
        if isinstance(pool, SentinelConnectionPool):
            # A new Sentinel too: the user's may wait on the sentinels without a timeout.
            pools = [c.connection_pool for c in pool.sentinel_manager.sentinels]
            addresses = [(p.connection_kwargs["host"], p.connection_kwargs["port"]) for p in pools]
            talk = {k: v for k, v in pools[0].connection_kwargs.items() if k in _SENTINEL_COPIED}
            if "SSL" in pools[0].connection_class.__name__:
                talk["ssl"] = True
            merged.pop("max_connections")
            return sentinel_client(addresses, pool.service_name, merged, sentinel_kwargs=talk)
        connection_class = pool.connection_class
        max_connections = merged.pop("max_connections")
        new_pool = redis.ConnectionPool(connection_class=connection_class,
                                        max_connections=max_connections, **merged)
        return redis.Redis(connection_pool=new_pool)
    return None


def describe_topology(client: Any) -> str:
    """Where the client connects, without credentials."""
    from redis.cluster import RedisCluster

    if isinstance(client, RedisCluster):
        nodes = ",".join(sorted(client.nodes_manager.startup_nodes))
        return f"cluster {nodes}"
    pool = getattr(client, "connection_pool", None)
    service = getattr(pool, "service_name", None)
    if service is not None:
        sentinels = ",".join(f"{c.connection_pool.connection_kwargs.get('host')}:"
                             f"{c.connection_pool.connection_kwargs.get('port')}"
                             for c in pool.sentinel_manager.sentinels)
        return f"sentinel {sentinels} service={service}"
    kw = getattr(pool, "connection_kwargs", None)
    if kw is None:
        return "redis"
    if kw.get("path"):
        return f"unix:{kw['path']} db={kw.get('db', 0)}"
    tls = " tls" if "SSL" in pool.connection_class.__name__ else ""
    return f"{kw.get('host', '?')}:{kw.get('port', '?')} db={kw.get('db', 0)}{tls}"
