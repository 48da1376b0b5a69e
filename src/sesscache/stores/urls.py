"""A store named by a string: what config files, command lines and picklable factories use.

=============================================  ===============================================
``memory``                                     :class:`~sesscache.stores.MemoryStore` (this
                                               process only)
``shm:NAME[?size=64m]``                         :class:`~sesscache.stores.SharedMemoryStore`
                                               (every process of one host, in C; 32 MiB)
``sqlite:PATH``                                :class:`~sesscache.stores.SQLiteStore` on PATH
                                               (``~`` expanded; every process of one host,
                                               sessions outlive a reboot)
``redis://[user:password@]HOST[:PORT][/DB]``   :class:`~sesscache.stores.RedisStore`
``rediss://...``                               the same over TLS
``unix:///path/to/redis.sock[?db=N]``          Redis on a unix socket
``redis+cluster://H1:P1,H2:P2``                Redis Cluster (``rediss+cluster://`` over TLS)
``redis+sentinel://H1:P1,H2:P2/SERVICE[/DB]``  Redis behind Sentinel (``rediss+sentinel://``)
``memcached://HOST[:PORT]``                    :class:`~sesscache.stores.MemcachedStore`
                                               (port 11211 by default)
``memcached:///path/to/memcached.sock``        memcached on a unix socket
=============================================  ===============================================

A Redis URL (one server, or behind Sentinel) opens the store with a **local replica by
default**: each process keeps a copy of up to :data:`DEFAULT_URL_REPLICA` sessions, fed by
Redis pub/sub, and answers lookups from it before Redis (see
:class:`~sesscache.stores.RedisStore` and ``redis_replica.py``). ``?local_replica=N`` (with
``&`` after other query options) sets the bound; ``?local_replica=0`` or ``?replica=off``
turns it off (every lookup then goes to Redis). A user the server does not allow pub/sub
(an ACL without ``+publish +subscribe``) gets the store without the copy and one warning
saying so, never an error. Single-use lookups (``pop``) always go to Redis. Redis Cluster
URLs (``redis+cluster://``) have no replica (pub/sub there reaches every node): every
lookup goes to the cluster.

Opening is cheap and does not connect: Redis and memcached connect on first use, SQLite opens
its file on first use in each thread (and again after ``fork()``), so a store made from a URL
in a server's master process is safe to use in its forked workers.
"""
from __future__ import annotations

import functools
import re
from typing import Any, Callable
from urllib.parse import unquote, urlsplit

from ..errors import ConfigurationError

__all__ = ["store_from_url", "check_store_url", "redacted_store_url", "STORE_URL_FORMS",
           "DEFAULT_URL_REPLICA"]

#: The forms :func:`store_from_url` accepts, for error and help messages.
STORE_URL_FORMS = ("memory, shm:NAME[?size=64m], sqlite:PATH, redis://HOST:PORT[/DB], rediss://HOST:PORT[/DB], "
                   "unix:///path/to/redis.sock, redis+cluster://HOST:PORT,HOST:PORT, "
                   "redis+sentinel://HOST:PORT,HOST:PORT/SERVICE, memcached://HOST[:PORT] or "
                   "memcached:///path/to.sock")
_TOPOLOGIES = ("redis+cluster://", "rediss+cluster://", "redis+sentinel://", "rediss+sentinel://")

_MEMCACHED_PORT = 11211
_CLUSTERS = ("redis+cluster://", "rediss+cluster://")

#: Sessions each process keeps in its local replica when a Redis URL says nothing (about
#: 0.5 KB each for a server session without client certificates: ~5 MB per process).
#: Measured (benchmarks/redis_store.py, every lookup in the store): through Redis alone
#: 0.65-0.71x of MemoryStore's rate, through the replica 1.00x (TLS 1.2), 0.94-0.97x (TLS 1.3).
DEFAULT_URL_REPLICA = 10000


def store_from_url(url: str, **options: Any) -> Any:
    """The store ``url`` names (see the module docstring for the forms).

    ``options`` go to the store's constructor as keyword arguments (``timeout=0.1``,
    ``prefix=b"shop:"``, ...). Raises :class:`~sesscache.errors.ConfigurationError` for a
    string that names no store, saying which forms exist.
    """
    return _opener(url)(**options)


def check_store_url(url: str) -> None:
    """Raise :class:`~sesscache.errors.ConfigurationError` if ``url`` names no store, without
    opening anything: for a server's master process, which names the store its workers open."""
    _opener(url)


def redacted_store_url(url: str) -> str:
    """``url`` with every secret replaced by ``***``: for logs, reprs and messages.

    Hidden: the password of the user part (``redis://user:***@host``, also before a list
    of hosts), and the value of every query parameter whose name looks secret
    (``password``, ``sentinel_password``, anything with ``pass``, ``pwd``, ``secret``,
    ``token``, ``auth``, ``credential`` or ``key`` in its name), for every scheme. Works on
    the text itself, so a URL that does not parse is redacted too.
    """
    if not isinstance(url, str):
        return url
    base, mark, fragment = url.partition("#")
    base, qmark, query = base.partition("?")
    scheme, slashes, rest = base.partition("//")
    if slashes:
        # The last "@": a password with an unencoded "/" or "@" is hidden whole too.
        userinfo, at, hosts = rest.rpartition("@")
        if at and ":" in userinfo:
            rest = userinfo.partition(":")[0] + ":***@" + hosts
        base = scheme + slashes + rest
    if qmark:
        query = _redacted_query(query)
    if mark:
        fragment = _redacted_query(fragment)
    return base + qmark + query + mark + fragment


_SECRET_NAME = re.compile(r"pass|pwd|secret|token|auth|credential|key", re.IGNORECASE)


def _redacted_query(query: str) -> str:
    """Every value after a secret-looking ``name=``, up to the next ``&``, ``;`` or ``#``,
    wherever the name stands (also inside another parameter's value)."""
    spans = []
    for match in re.finditer(r"([^&;=?#]*)=", query):
        if _SECRET_NAME.search(unquote(match.group(1))):
            stop = re.search(r"[&;#]", query[match.end():])
            end = match.end() + (stop.start() if stop else len(query) - match.end())
            if end > match.end():
                spans.append((match.end(), end))
    out, at = [], 0
    for begin, end in spans:
        if begin < at:  # inside a span already hidden
            begin = at
            if begin >= end:
                continue
        out.append(query[at:begin] + "***")
        at = end
    return "".join(out) + query[at:]


def _opener(url: str) -> Callable[..., Any]:
    """A function of the store's options that opens the store ``url`` names."""
    if not isinstance(url, str):
        raise ConfigurationError(f"a store URL is a string such as 'sqlite:/var/lib/app/sessions.db', "
                                 f"got {type(url).__name__}; forms: {STORE_URL_FORMS}")
    spec = url.strip()
    from . import MemoryStore, SharedMemoryStore, SQLiteStore

    if spec == "memory":
        return MemoryStore
    if spec.startswith("shm:"):
        from .shm import shm_url_options

        name, shm_options = shm_url_options(spec)
        return functools.partial(SharedMemoryStore, name, **shm_options)
    if spec.startswith("sqlite:"):
        return functools.partial(SQLiteStore, _sqlite_path(spec))
    if spec.startswith(("redis://", "rediss://", "unix://") + _TOPOLOGIES):
        spec, url_options = _store_options(spec)
        if "local_replica" not in url_options and not spec.startswith(_CLUSTERS):
            # The default: a bounded copy, turned off with one warning where the server
            # does not allow pub/sub (replica_optional).
            url_options = {"local_replica": DEFAULT_URL_REPLICA, "replica_optional": True}
        if spec.startswith(_TOPOLOGIES):
            from .redis_clients import split_topology_url

            split_topology_url(spec)  # ConfigurationError for a URL it cannot read
        else:
            _check_redis(spec)

        def redis_store(**options: Any) -> Any:
            from .redis import RedisStore

            return RedisStore(url=spec, **{**url_options, **options})
        return redis_store
    if spec.startswith("memcached://"):
        server = _memcached_server(spec)

        def memcached_store(**options: Any) -> Any:
            from .memcached import MemcachedStore

            return MemcachedStore(server=server, **options)
        return memcached_store
    raise ConfigurationError(f"unknown store {redacted_store_url(url)!r}: use {STORE_URL_FORMS}")


def _store_options(spec: str) -> "tuple[str, dict]":
    """Take ``local_replica=N`` and ``replica=on|off`` out of a Redis URL's query (the rest
    is redis-py's)."""
    base, mark, query = spec.partition("?")
    if not mark:
        return spec, {}
    kept, options = [], {}
    for pair in query.split("&"):
        name, _, value = pair.partition("=")
        if name == "local_replica":
            if not (value.isascii() and value.isdigit()):
                raise ConfigurationError(f"{redacted_store_url(spec)!r}: local_replica is a number of sessions "
                                         f"(local_replica=20000, or 0 for none), got {value!r}")
            options["local_replica"] = int(value)
        elif name == "replica":
            if value not in ("on", "off"):
                raise ConfigurationError(f"{redacted_store_url(spec)!r}: replica is on or off (replica=off: "
                                         f"every lookup goes to Redis), got {value!r}")
            if value == "off":
                options["local_replica"] = 0
        else:
            kept.append(pair)
    if spec.startswith(_CLUSTERS) and options.get("local_replica"):
        raise ConfigurationError(f"{redacted_store_url(spec)!r}: Redis Cluster has no local replica (pub/sub "
                                 "there reaches every node); remove local_replica")
    return (base + "?" + "&".join(kept) if kept else base), options


def _sqlite_path(spec: str) -> str:
    import os

    path = spec[len("sqlite:"):]
    if path.startswith("//"):  # sqlite:///abs/path, as SQLAlchemy writes it
        path = path[2:]
    if not path:
        raise ConfigurationError("sqlite: needs a path, e.g. sqlite:/var/lib/myapp/sessions.db")
    return os.path.expanduser(path)


def _check_redis(spec: str) -> None:
    parts = urlsplit(spec)
    if parts.scheme == "unix":
        if not parts.path:
            raise ConfigurationError(f"{redacted_store_url(spec)!r} names no socket: write unix:///path/to/redis.sock")
        return
    if not parts.hostname:
        raise ConfigurationError(f"{redacted_store_url(spec)!r} names no host: write {parts.scheme}://HOST:PORT[/DB]")
    _port(spec, parts)
    db = parts.path.lstrip("/")
    if db and not db.isdigit():
        raise ConfigurationError(f"{redacted_store_url(spec)!r}: the database after the host is a number (redis://HOST:PORT/0), "
                                 f"got {db!r}")


def _memcached_server(spec: str) -> Any:
    parts = urlsplit(spec)
    if not parts.netloc:
        if not parts.path:
            raise ConfigurationError(f"{redacted_store_url(spec)!r} names no server: write memcached://HOST:PORT or "
                                     "memcached:///path/to/memcached.sock")
        return parts.path  # a unix socket
    if parts.path not in ("", "/"):
        raise ConfigurationError(f"{redacted_store_url(spec)!r}: memcached has no databases; write memcached://HOST:PORT")
    port = _port(spec, parts)
    return (parts.hostname or "127.0.0.1", _MEMCACHED_PORT if port is None else port)


def _port(spec: str, parts: Any) -> Any:
    try:
        return parts.port
    except ValueError:
        raise ConfigurationError(f"{redacted_store_url(spec)!r}: the port must be a number from 1 to 65535") from None
