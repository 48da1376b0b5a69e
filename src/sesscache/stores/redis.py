"""Redis store (redis-py), sync and asyncio.

Keys are ``prefix + key``; values are written with ``SET key value PX <ms>`` so Redis expires
them itself (millisecond precision, never later than the ttl). ``pop`` is ``GETDEL``
(Redis >= 6.2), or ``MULTI GET DEL EXEC`` on servers that do not know ``GETDEL``; both are
atomic, so a single-use TLS 1.3 session is handed to one handshake only.

Connections come from redis-py's pool (fork-safe: redis-py resets it in a child process).
Socket connect and read timeouts are the store's ``timeout`` and redis-py's own retries are
switched off, so a call against a dead or stalled server fails within about ``timeout``.
A pooled connection that went stale (server restarted) is detected and reopened by redis-py
when it is taken from the pool, so the first call after a restart succeeds.

Every redis-py error becomes :class:`~sesscache.errors.StoreError` naming the cause (timeout,
unreachable, out of memory, read-only replica, authentication, still loading).

Give Redis a ``maxmemory`` and ``maxmemory-policy volatile-ttl`` (or ``volatile-lru``): every
session key has a TTL, and with ``noeviction`` a full Redis refuses new sessions.
"""
from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from ..errors import ConfigurationError, StoreError, ValueTooLarge
from ._read_bounds import DEFAULT_MAX_VALUE_BYTES, refuse_oversize
from .base import MAX_TTL, BaseStore, as_bytes, check_ttl, closed_error
from .capabilities import CTableView
from .redis_replica import LocalReplica, batch_message, delete_entry, no_permission, set_entry
from .redis_clients import (
    cluster_client,
    describe_topology,
    parse_addresses,
    rebuild_client,
    sentinel_client,
    split_topology_url,
    store_client_kwargs,
)

try:
    import redis as _redis
    import redis.exceptions as _rexc
    from redis.backoff import NoBackoff as _NoBackoff
    from redis.retry import Retry as _Retry
    # Cluster faults (no node for a slot, ...) are not RedisError.
    _FAULTS = (_rexc.RedisError, OSError, _rexc.RedisClusterException)
except ImportError:  # pragma: no cover - exercised only without redis installed
    _redis = None

__all__ = ["RedisStore", "AsyncRedisStore"]

log = logging.getLogger(__name__)

_DEFAULT_URL = "redis://localhost:6379/0"


def _require_redis() -> None:
    if _redis is None:
        raise ConfigurationError(
            "RedisStore needs the redis package: pip install redis (or pip install 'sesscache[redis]')"
        )


class _RedisCommon:
    """Key building, ttl conversion and error mapping shared by the sync and async stores."""

    kind = "redis"
    _closed = False  #: set by close(): for good

    def _setup(self, prefix: Union[bytes, str], timeout: float) -> None:
        if isinstance(prefix, str):
            prefix = prefix.encode("utf-8")
        if not isinstance(prefix, (bytes, bytearray)):
            raise ConfigurationError(f"prefix must be bytes or str, got {type(prefix).__name__}")
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout < 3600:
            raise ConfigurationError(f"timeout must be seconds > 0, got {timeout!r}")
        self.prefix = bytes(prefix)
        self.timeout = float(timeout)
        self._has_getdel = True
        self._where = "redis"

    def _key(self, key: bytes) -> bytes:
        if self._closed:  # every call makes its key first
            raise closed_error(self)
        if type(key) is not bytes:
            key = as_bytes(key, "key")
        return self.prefix + key

    @staticmethod
    def _ttl_ms(ttl: float) -> int:
        if not (type(ttl) is float and 0.0 < ttl <= MAX_TTL):
            ttl = check_ttl(ttl)
        # Round down: Redis must drop the value no later than the ttl. A ttl under 1 ms
        # gives 0: the value would be expired before anyone could read it.
        return int(ttl * 1000.0)

    def _connect(self, prefix: Union[bytes, str], timeout: float, url: Optional[str], client: Any,
                 client_kwargs: Dict[str, Any], redis_cls: Any, retry_cls: Any) -> None:
        """Use the given client, or make one from the URL (sync and asyncio alike)."""
        self._setup(prefix, timeout)
        if client is not None:
            if url is not None or client_kwargs:
                raise ConfigurationError("pass either url (and client options) or client, not both")
            self._owns_client = False
            self.client = client
        else:
            self._owns_client = True
            self.client = redis_cls.from_url(url or _DEFAULT_URL, **self._client_kwargs(client_kwargs, retry_cls))
        self._where = self._describe_where(self.client)

    def _describe_where(self, client: Any) -> str:
        # From the pool's connection arguments, so no password can leak into logs.
        return describe_topology(client)

    def _fault(self, exc: BaseException) -> StoreError:
        where = f"Redis at {self._where}"
        text = str(exc) or type(exc).__name__
        if isinstance(exc, (_rexc.TimeoutError, TimeoutError, asyncio.TimeoutError)):
            return StoreError(
                f"{where} did not answer within timeout={self.timeout}s ({text}): the server is "
                "overloaded, paused or far away; check it or raise timeout"
            )
        if isinstance(exc, _rexc.AuthenticationError) or "NOAUTH" in text or "WRONGPASS" in text:
            return StoreError(
                f"{where} refused authentication ({text}): put the right user and password in the URL"
            )
        if isinstance(exc, _rexc.BusyLoadingError) or text.startswith("LOADING"):
            return StoreError(f"{where} is still loading its dataset ({text}); it will answer soon")
        if "CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text:
            return StoreError(
                f"{where} presented a TLS certificate this store does not trust ({text}): pass "
                "ssl_ca_certs= naming the CA that signed it, and a host name the certificate holds"
            )
        if isinstance(exc, (_rexc.ConnectionError, OSError)):
            return StoreError(
                f"cannot reach {where} ({text}): check that redis-server runs and the URL; "
                "the store reconnects on the next call"
            )
        if text.startswith("OOM") or isinstance(exc, getattr(_rexc, "OutOfMemoryError", ())):
            oom = text if text.startswith("OOM") else f"OOM {text}"  # redis-py may strip "OOM"
            return StoreError(
                f"{where} is out of memory ({oom}): maxmemory is reached and maxmemory-policy "
                "does not evict; set maxmemory-policy volatile-ttl (or volatile-lru) or raise maxmemory"
            )
        if isinstance(exc, _rexc.ReadOnlyError) or text.startswith("READONLY"):
            return StoreError(f"{where} is a read-only replica ({text}): point the URL at the primary")
        if text.startswith("NOPERM") or isinstance(exc, getattr(_rexc, "NoPermissionError", ())):
            return StoreError(f"{where} denied the command ({text}): the ACL user needs GET, GETRANGE, EXISTS, SET, DEL, GETDEL")
        if text.startswith("MISCONF"):
            return StoreError(f"{where} refuses writes because snapshots fail ({text}); fix its disk or dir")
        if "max" in text and ("bulk" in text or "size" in text or "exceeds" in text):
            return ValueTooLarge(f"{where} rejected the value as too large ({text}); see proto-max-bulk-len")
        return StoreError(f"{where} failed: {text}")

    @staticmethod
    def _is_unknown_command(exc: BaseException) -> bool:
        return isinstance(exc, _rexc.ResponseError) and "unknown command" in str(exc).lower()

    def _client_kwargs(self, extra: Dict[str, Any], retry_cls: Any) -> Dict[str, Any]:
        return store_client_kwargs(self.timeout, extra, retry_cls)

    def _info_fields(self, server: Dict[str, Any], memory: Dict[str, Any], dbsize: int) -> Dict[str, Any]:
        return {
            "redis_version": server.get("redis_version"),
            "db_keys": dbsize,  # every key in the db, not only this store's
            "used_memory": memory.get("used_memory"),
            "maxmemory": memory.get("maxmemory"),
            "maxmemory_policy": memory.get("maxmemory_policy"),
        }

    def _base_description(self) -> Dict[str, Any]:
        return {
            # Redis cannot count one prefix's keys without a scan: entries/bytes are unknown.
            "kind": self.kind,
            "entries": None,
            "bytes": None,
            "server": self._where,
            "prefix": self.prefix.decode("ascii", "backslashreplace"),
            "timeout": self.timeout,
            "atomic_pop": "getdel" if self._has_getdel else "multi-exec",
        }


class RedisStore(_RedisCommon, BaseStore):
    """Sessions in Redis.

    Args:
        url: ``redis://[user:password@]host:port/db``, ``rediss://...`` (TLS),
            ``unix:///path/to/redis.sock?db=0``, ``redis+cluster://host:port[,host:port...]``
            or ``redis+sentinel://host:port[,host:port...]/service_name[/db]``
            (``rediss+...`` for TLS). Default ``redis://localhost:6379/0``.
        client: an existing ``redis.Redis``, ``RedisCluster`` or Sentinel client to take the
            servers, credentials and TLS settings from: the store builds its own client from
            it with the store's timeouts and no retries (see ``redis_clients.py``) and
            :meth:`close` leaves yours open. A client of another kind is used as is.
        prefix: prepended to every key, to share a Redis with other data.
        timeout: socket connect and read timeout in seconds.
        cluster: Redis Cluster nodes to start from, ``[("host", port), ...]`` or
            ``"host:port,host:port"``.
        sentinel: Sentinel addresses, with ``service_name`` (default ``"mymaster"``).
        local_replica: keep a copy of up to this many sessions in each process, fed by Redis
            pub/sub, and answer ``get`` from it first (see ``redis_replica.py``); 0: none
            (the default here; :func:`~sesscache.store_from_url` turns one on for Redis URLs).
        replica_optional: what happens when the server does not allow the replica's pub/sub
            (an ACL user without ``+publish +subscribe``): the copy is turned off for this
            store and lookups go to Redis, said in one log message: a warning when True (the
            URL default, which nobody asked for), an error when False (asked for).
        **client_kwargs: more ``redis.Redis.from_url`` arguments (``max_connections``,
            ``ssl_ca_certs``, ...).
    """

    #: It answers over the network: SessionCache wraps it in a ResilientStore (writes behind
    #: the handshake, a breaker); see stores/resilient.py.
    remote = True

    def __init__(
        self,
        url: Optional[str] = None,
        *,
        client: Any = None,
        prefix: Union[bytes, str] = b"sesscache:",
        timeout: float = 0.05,
        cluster: Any = None,
        sentinel: Any = None,
        service_name: Optional[str] = None,
        local_replica: int = 0,
        replica_optional: bool = False,
        **client_kwargs: Any,
    ) -> None:
        _require_redis()
        self._cluster = False
        self._replica: Optional[LocalReplica] = None
        self.replica_optional = bool(replica_optional)
        self._refusal_lock = threading.Lock()
        if client is None and cluster is None and sentinel is None and \
                split_topology_url(url or _DEFAULT_URL)[0] == "single":
            self._connect(prefix, timeout, url, client, client_kwargs, _redis.Redis, _Retry)
        else:
            self._connect_fleet(prefix, timeout, url, client, cluster, sentinel, service_name,
                                client_kwargs)
        self._choose_call_path()
        if local_replica:
            self._start_replica(local_replica)

    # -- a process-local replica fed by pub/sub (see redis_replica.py) ---------------------------

    @property
    def replica(self) -> Optional[LocalReplica]:
        """This process's local copy of the fleet's sessions (``local_replica=N``), or None:
        for monitoring (its size, capacity, messages, last message)."""
        return self._replica

    def _start_replica(self, max_sessions: int) -> None:
        if isinstance(max_sessions, bool) or not isinstance(max_sessions, int) or max_sessions < 1:
            raise ConfigurationError(
                f"local_replica is the number of sessions each process keeps a copy of (>= 1), "
                f"or 0 for none; got {max_sessions!r}")
        if self._cluster:
            raise ConfigurationError("local_replica does not work with Redis Cluster (pub/sub there "
                                     "reaches every node); leave it 0")
        self._replica_channel = self.prefix + b"__sessions"
        self._replica = LocalReplica(self.client, self._replica_channel, max_sessions, prefix=self.prefix,
                                     refused=self._replica_refused)

    def _replica_refused(self, command: str, exc: BaseException) -> None:
        """The server refused the replica's PUBLISH or SUBSCRIBE (an ACL without channel
        rights): the copy is turned off for this store, said once whichever came first;
        lookups go to Redis. Never an exception: the store works without it."""
        with self._refusal_lock:
            replica = self._replica
            if replica is None:
                return
            self._replica = None
        replica.close()  # emptied for good: the cache's C fast path may still read it
        channel = self._replica_channel.decode("latin-1")
        log.log(logging.WARNING if self.replica_optional else logging.ERROR,
                "sesscache: %s refuses %s on %r (%s): the local replica is off for this store, "
                "so every lookup goes to Redis (slower). Grant the user '+publish +subscribe &%s' "
                "to have it, or turn it off yourself (local_replica=0, or ?replica=off in a store "
                "URL) to silence this", self._where, command, channel, exc, channel)

    def _replicated(self, replica: LocalReplica, command: tuple, entry: bytes) -> Any:
        """``command`` and the PUBLISH that tells every replica, in one round trip.
        ``replica`` is read once by the caller: another thread may turn it off meanwhile."""
        return self._published([command], batch_message(replica.writer_id, [entry]))[0]

    def _published(self, commands: List[tuple], message: bytes) -> List[Any]:
        """``commands`` and the PUBLISH of ``message``, in one round trip. A PUBLISH the
        server does not allow (an ACL user without channel rights) turns the copy off, once,
        saying what to grant: the writes themselves landed and must not count as failed."""
        replies = self._pipeline(commands + [("PUBLISH", self._replica_channel, message)], raise_on_error=False)
        published = replies.pop()
        if isinstance(published, Exception):
            if not no_permission(published):
                replies.append(published)
            else:
                self._replica_refused("PUBLISH", published)
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return replies

    def _pipeline(self, commands: List[tuple], raise_on_error: bool = True) -> List[Any]:
        """Several commands in one round trip (not a transaction); a command Redis refused
        raises its error once every reply is read (or, with ``raise_on_error=False``, is in
        the list where its reply would be)."""
        if self._command == self._pooled_command:  # the lean path: all on one connection
            pool = self._pool
            connection = pool.get_connection()
            try:
                connection.send_packed_command(connection.pack_commands(commands))
                replies = []
                for _ in commands:
                    try:
                        replies.append(connection.read_response())
                    except _rexc.ResponseError as refused:  # read whole: the next one follows
                        replies.append(refused)
            except BaseException:
                connection.disconnect()  # a reply may be half-read
                raise
            finally:
                pool.release(connection)
            for reply in replies:
                if raise_on_error and isinstance(reply, Exception):
                    raise reply
            return replies
        pipe = self.client.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command)
        return pipe.execute(raise_on_error=raise_on_error)

    def write_many(self, ops: Sequence[Tuple[str, bytes, Optional[bytes], float]]) -> None:
        """Sets (``("set", key, value, ttl)``) and deletes (``("delete", key, None, 0)``)
        in one round trip, with one PUBLISH for them all when there is a local replica:
        how ``ResilientStore``'s writer sends what queued up. Not atomic: on an error some
        may have landed (as with one call each). Redis Cluster: one call each."""
        if self._cluster:
            for op, key, value, ttl in ops:
                if op == "set":
                    self.set(key, value or b"", ttl)
                else:
                    self.delete(key)
            return
        replica = self._replica
        commands: List[tuple] = []
        entries: List[bytes] = []
        for op, key, value, ttl in ops:
            k = self._key(key)
            ms = self._ttl_ms(ttl) if op == "set" and value is not None else 0
            if ms > 0:
                commands.append(("SET", k, value, "PX", ms))
                if replica is not None:
                    replica.put(key, value, ttl)
                    entries.append(set_entry(k, value, ms))
            else:
                commands.append(("DEL", k))
                if replica is not None:
                    replica.forget(key)
                    entries.append(delete_entry(k))
        try:
            if replica is not None:
                self._published(commands, batch_message(replica.writer_id, entries))
            else:
                self._pipeline(commands)
        except _FAULTS as exc:
            raise self._fault(exc) from exc

    def forget_local(self, key: bytes) -> None:
        """Drop ``key`` from this process's replica now (a delete that is still queued must
        not leave it readable here meanwhile)."""
        replica = self._replica
        if replica is not None:
            replica.forget(key)

    def c_tables(self) -> Optional[CTableView]:
        """The "C tables" capability, for ``SessionCache`` (through ``ResilientStore``): the
        replica's table, which its C fast path reads lookups from; a miss there still comes
        to :meth:`get` (``complete=False``), new sessions to :meth:`set`. None without a
        replica."""
        replica = self._replica
        if replica is None or type(self) is not RedisStore:
            return None
        view = replica.table.c_tables()
        return None if view is None else CTableView(table=view.table, complete=False)

    def wait_for_key(self, key: bytes, timeout: float) -> Optional[bool]:
        """With a local replica: wait up to ``timeout`` seconds for ``key`` to arrive in it
        (True when it did, False when not). None at once without one, or while its
        subscription is down: the caller then waits some other way."""
        replica = self._replica
        return None if replica is None else replica.wait_for(key, timeout)

    # -- the call path ---------------------------------------------------------------------------

    def _choose_call_path(self) -> None:
        """A lean path for a client this store built (one server or Sentinel): take a pooled
        connection, send, read, give it back. redis-py's command layer around that (retry
        wrapper, response callbacks, observability hooks) cost ~6 us of a ~25 us GET over a
        unix socket here; the store needs none of it (no retries, raw bytes). A cluster or a
        client used as given goes through redis-py's ``execute_command``."""
        pool = getattr(self.client, "connection_pool", None)
        if self._owns_client and not self._cluster and type(self.client) is _redis.Redis and pool is not None:
            self._pool = pool
            self._command = self._pooled_command
        else:
            self._command = self.client.execute_command

    def _pooled_command(self, *args: Any) -> Any:
        pool = self._pool
        connection = pool.get_connection()
        try:
            connection.send_command(*args)
            return connection.read_response()
        except _rexc.ResponseError:
            raise  # the reply was read whole: the connection is fine
        except BaseException:
            connection.disconnect()  # a half-read reply must not reach the next caller
            raise
        finally:
            pool.release(connection)

    # -- fleets: Cluster, Sentinel, a client built by the user (see redis_clients.py) ------------

    def _connect_fleet(self, prefix: Union[bytes, str], timeout: float, url: Optional[str], client: Any,
                       cluster: Any, sentinel: Any, service_name: Optional[str],
                       client_kwargs: Dict[str, Any]) -> None:
        self._setup(prefix, timeout)
        given = [name for name, value in (("url", url), ("client", client), ("cluster", cluster),
                                          ("sentinel", sentinel)) if value is not None]
        if len(given) > 1:
            raise ConfigurationError(f"pass one of url, client, cluster or sentinel, not {' and '.join(given)}")
        if client is not None and client_kwargs:
            raise ConfigurationError("pass either url (and client options) or client, not both")
        self._owns_client = True
        if client is not None:
            built = rebuild_client(client, self.timeout, {})
            if built is None:
                log.warning("RedisStore cannot rebuild a %s with its own timeouts; it uses it as is, "
                            "so a call may take as long as that client allows", type(client).__name__)
                self._owns_client = False
                built = client
            self.client = built
        else:
            kwargs = store_client_kwargs(self.timeout, client_kwargs)
            topology, args = split_topology_url(url) if url is not None else ("single", {})
            if topology == "cluster" or cluster is not None:
                addresses = args["addresses"] if cluster is None else parse_addresses(cluster, "cluster")
                if args.get("tls"):
                    kwargs.setdefault("ssl", True)
                self.client = cluster_client(addresses, {**args.get("credentials", {}), **kwargs})
            else:
                if sentinel is not None:
                    addresses, db, creds = parse_addresses(sentinel, "sentinel"), 0, {}
                    service = service_name or "mymaster"
                else:
                    addresses, db, creds = args["addresses"], args["db"], args["credentials"]
                    service = service_name or args["service_name"]
                    if args["tls"]:
                        from redis.connection import SSLConnection

                        kwargs.setdefault("connection_class", SSLConnection)
                self.client = sentinel_client(addresses, service, {"db": db, **creds, **kwargs})
        from redis.cluster import RedisCluster

        self._cluster = isinstance(self.client, RedisCluster)
        self._where = describe_topology(self.client)

    def health_domain(self, key: bytes) -> Optional[str]:
        """For Redis Cluster: the node (``host:port``) serving ``key``'s slot, so that
        :class:`~sesscache.stores.resilient.ResilientStore` pauses one dead master's keys only.
        None (one store-wide breaker) otherwise."""
        if not self._cluster:
            return None
        slot = self.client.keyslot(self._key(key))
        return self.client.nodes_manager.get_node_from_slot(slot).name

    #: Largest value get() hands back; a larger one is refused (a miss, counted in
    #: ``oversize_reads``) after reading at most this many bytes + 1 (see _read_bounds).
    max_value_bytes = DEFAULT_MAX_VALUE_BYTES
    oversize_reads = 0
    _bounded_reads = True  # False once the ACL user was refused GETRANGE or EXISTS

    def get(self, key: bytes) -> Optional[bytes]:
        k = self._key(key)
        replica = self._replica
        if replica is not None:
            value = replica.get(key)
            if value is not None:
                return value
        try:
            if self._bounded_reads:
                try:
                    # One round trip: at most max_value_bytes + 1 bytes, and whether the
                    # key exists (GETRANGE answers b"" for a missing key and an empty value).
                    value, exists = self._pipeline([("GETRANGE", k, 0, self.max_value_bytes), ("EXISTS", k)])
                except _rexc.ResponseError as exc:
                    if not no_permission(exc):
                        raise
                    self._bounded_reads = False
                    log.warning("%s: the ACL user may not run GETRANGE or EXISTS (%s); reading "
                                "values whole with GET, unbounded: grant +getrange +exists", self._where, exc)
                    return self._command("GET", k)
                if len(value) > self.max_value_bytes:
                    refuse_oversize(self, f"more than {self.max_value_bytes} bytes")
                    return None
                return value if value or exists else None
            return self._command("GET", k)
        except _FAULTS as exc:
            raise self._fault(exc) from exc

    def set(self, key: bytes, value: bytes, ttl: float) -> None:
        k = self._key(key)
        if type(value) is not bytes:
            value = as_bytes(value, "value")
        ms = self._ttl_ms(ttl)
        replica = self._replica
        try:
            if replica is not None:
                if ms > 0:
                    replica.put(key, value, ttl)
                    self._replicated(replica, ("SET", k, value, "PX", ms), set_entry(k, value, ms))
                else:
                    replica.forget(key)
                    self._replicated(replica, ("DEL", k), delete_entry(k))
            elif ms > 0:
                self._command("SET", k, value, "PX", ms)
            else:
                self._command("DEL", k)
        except _FAULTS as exc:
            raise self._fault(exc) from exc

    def delete(self, key: bytes) -> None:
        k = self._key(key)
        replica = self._replica
        try:
            if replica is not None:
                replica.forget(key)
                self._replicated(replica, ("DEL", k), delete_entry(k))
                return
            self._command("DEL", k)
        except _FAULTS as exc:
            raise self._fault(exc) from exc

    def pop(self, key: bytes) -> Optional[bytes]:
        """Atomic get + delete (GETDEL, or MULTI/EXEC GET+DEL on Redis < 6.2)."""
        k = self._key(key)
        replica = self._replica
        try:
            if replica is not None:
                replica.forget(key)
                if self._has_getdel:
                    return self._replicated(replica, ("GETDEL", k), delete_entry(k))
            if self._has_getdel:
                try:
                    return self._command("GETDEL", k)
                except _rexc.ResponseError as exc:
                    if not self._is_unknown_command(exc):
                        raise
                    log.info("%s has no GETDEL (Redis < 6.2?); popping with MULTI/EXEC", self._where)
                    self._has_getdel = False
            pipe = self.client.pipeline(transaction=True)
            pipe.get(k)
            pipe.delete(k)
            value, _ = pipe.execute()
            return value
        except _FAULTS as exc:
            raise self._fault(exc) from exc

    def close(self) -> None:
        """Disconnect the pool, if this store created the client (one passed in stays
        open: it is yours), and stop the per-process copy; later calls raise StoreError."""
        self._closed = True
        if self._replica is not None:
            self._replica.close()
        if self._owns_client:
            try:
                self.client.close()
            except (_rexc.RedisError, OSError):  # pragma: no cover - closing a broken pool
                log.debug("closing the Redis client failed", exc_info=True)

    def describe(self) -> Dict[str, Any]:
        """Server-wide numbers (``db_keys``, ``used_memory``, ``maxmemory_policy``...). Never
        raises StoreError: on a fault ``error`` says why."""
        info = self._base_description()
        try:
            info.update(
                self._info_fields(
                    self.client.info("server"), self.client.info("memory"), self.client.dbsize()
                )
            )
        except _FAULTS as exc:
            info["error"] = str(self._fault(exc))
        return info

    def __repr__(self) -> str:
        return f"<RedisStore {self._where} prefix={self.prefix!r}>"

    # -- compare-and-set (session-ticket key rings; see sesscache.ticket_keys) ------------

    # KEYS[1]; ARGV: "1" when the key must be absent (else "0"), the expected value, the
    # new value, the lifetime in ms. One script, which Redis runs alone: atomic.
    _CAS_SCRIPT = """
local current = redis.call('GET', KEYS[1])
if ARGV[1] == '1' then
  if current then return 0 end
elseif current ~= ARGV[2] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4])
return 1
"""

    def compare_and_set(self, key: bytes, expected: Optional[bytes], value: bytes, ttl: float) -> bool:
        """Set ``key`` to ``value`` only if its value is ``expected`` (None: absent); True
        when written. Atomic: one Lua script (``EVAL``)."""
        k = self._key(key)
        if type(value) is not bytes:
            value = as_bytes(value, "value")
        ms = self._ttl_ms(check_ttl(ttl))
        absent = expected is None
        try:
            done = self.client.eval(self._CAS_SCRIPT, 1, k, b"1" if absent else b"0",
                                    b"" if absent else as_bytes(expected, "value"), value, ms)
        except (_rexc.RedisError, OSError) as exc:
            raise self._fault(exc) from exc
        return int(done) == 1


class AsyncRedisStore(_RedisCommon):
    """:class:`RedisStore` for asyncio servers: the same arguments, methods are coroutines.

    Uses ``redis.asyncio``; the client belongs to the event loop that first uses it.
    Supports ``async with``. Cancellation (``asyncio.CancelledError``) propagates as is,
    never as StoreError.
    """

    def __init__(
        self,
        url: Optional[str] = None,
        *,
        client: Any = None,
        prefix: Union[bytes, str] = b"sesscache:",
        timeout: float = 0.05,
        **client_kwargs: Any,
    ) -> None:
        _require_redis()
        import redis.asyncio as aredis
        from redis.asyncio.retry import Retry as AsyncRetry

        if url is not None and split_topology_url(url)[0] != "single":
            raise ConfigurationError(
                "AsyncRedisStore talks to one Redis server; for Redis Cluster or Sentinel in an "
                "asyncio server use PrefetchingStore(RedisStore(url)), which calls it in threads")

        self._connect(prefix, timeout, url, client, client_kwargs, aredis.Redis, AsyncRetry)

    max_value_bytes = DEFAULT_MAX_VALUE_BYTES  #: as RedisStore's
    oversize_reads = 0
    _bounded_reads = True

    async def get(self, key: bytes) -> Optional[bytes]:
        k = self._key(key)
        try:
            if self._bounded_reads:
                try:
                    pipe = self.client.pipeline(transaction=False)
                    pipe.getrange(k, 0, self.max_value_bytes)
                    pipe.exists(k)
                    value, exists = await pipe.execute()
                except _rexc.ResponseError as exc:
                    if not no_permission(exc):
                        raise
                    self._bounded_reads = False
                    log.warning("%s: the ACL user may not run GETRANGE or EXISTS (%s); reading "
                                "values whole with GET, unbounded: grant +getrange +exists", self._where, exc)
                    return await self.client.get(k)
                if len(value) > self.max_value_bytes:
                    refuse_oversize(self, f"more than {self.max_value_bytes} bytes")
                    return None
                return value if value or exists else None
            return await self.client.get(k)
        except (_rexc.RedisError, OSError, asyncio.TimeoutError) as exc:
            raise self._fault(exc) from exc

    async def set(self, key: bytes, value: bytes, ttl: float) -> None:
        k = self._key(key)
        if type(value) is not bytes:
            value = as_bytes(value, "value")
        ms = self._ttl_ms(ttl)
        try:
            if ms > 0:
                await self.client.set(k, value, px=ms)
            else:
                await self.client.delete(k)
        except (_rexc.RedisError, OSError, asyncio.TimeoutError) as exc:
            raise self._fault(exc) from exc

    async def delete(self, key: bytes) -> None:
        k = self._key(key)
        try:
            await self.client.delete(k)
        except (_rexc.RedisError, OSError, asyncio.TimeoutError) as exc:
            raise self._fault(exc) from exc

    async def pop(self, key: bytes) -> Optional[bytes]:
        k = self._key(key)
        try:
            if self._has_getdel:
                try:
                    return await self.client.getdel(k)
                except _rexc.ResponseError as exc:
                    if not self._is_unknown_command(exc):
                        raise
                    log.info("%s has no GETDEL (Redis < 6.2?); popping with MULTI/EXEC", self._where)
                    self._has_getdel = False
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.get(k)
                pipe.delete(k)
                value, _ = await pipe.execute()
            return value
        except (_rexc.RedisError, OSError, asyncio.TimeoutError) as exc:
            raise self._fault(exc) from exc

    async def close(self) -> None:
        """As RedisStore.close(), awaited."""
        self._closed = True
        if self._owns_client:
            try:
                closer = getattr(self.client, "aclose", None) or self.client.close
                await closer()
            except (_rexc.RedisError, OSError):  # pragma: no cover
                log.debug("closing the Redis client failed", exc_info=True)

    async def describe(self) -> Dict[str, Any]:
        info = self._base_description()
        try:
            info.update(
                self._info_fields(
                    await self.client.info("server"),
                    await self.client.info("memory"),
                    await self.client.dbsize(),
                )
            )
        except (_rexc.RedisError, OSError, asyncio.TimeoutError) as exc:
            info["error"] = str(self._fault(exc))
        return info

    async def __aenter__(self) -> "AsyncRedisStore":
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<AsyncRedisStore {self._where} prefix={self.prefix!r}>"
