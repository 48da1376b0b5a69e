"""memcached store (pymemcache).

Keys: memcached keys are at most 250 printable bytes without spaces, so a session key becomes
``prefix + b"x" + hex(key)``; a key whose hex form would not fit becomes
``prefix + b"h" + sha256(key).hexdigest()`` (the marker keeps the two forms apart).

Values: ``b"\\x01" + 8-byte big-endian float (expiry, wall-clock seconds) + value``. memcached
counts expiry in whole seconds on a clock that ticks once per second, so an item may outlive its
ttl by up to a second or two; the stored expiry lets the store refuse it the moment the ttl has
passed. The memcached expiry is ``ceil(ttl) + 1`` seconds (the extra second because memcached's
clock can tick right after the write); lifetimes over 30 days are sent as a Unix timestamp,
as memcached reads any number above 30 days that way.

``pop`` is atomic: ``gets`` reads the value and its CAS token, then ``cas`` overwrites it with
an expired tombstone. Of several concurrent pops only one ``cas`` succeeds; the losers get None.

Values over ``max_value_bytes`` (1 MiB, memcached's default item size) raise
:class:`~sesscache.errors.ValueTooLarge`, as does the server's "object too large". Every other
fault (refused, timeout, out of memory) is :class:`~sesscache.errors.StoreError`.
"""
from __future__ import annotations

import binascii
import hashlib
import logging
import math
import os
import socket
import struct
import threading
import time
from typing import Any, Callable, Dict, Optional, Tuple, Union

from ..errors import ConfigurationError, StoreError, ValueTooLarge
from ._read_bounds import refuse_oversize
from .base import BaseStore, as_bytes, checked_entry, closed_error

try:
    from pymemcache import exceptions as _mexc
    from pymemcache.client.base import PooledClient as _PooledClient
except ImportError:  # pragma: no cover - exercised only without pymemcache installed
    _PooledClient = None

__all__ = ["MemcachedStore"]

log = logging.getLogger(__name__)

_MAX_KEY = 250  # memcached's key length limit
_RELATIVE_LIMIT = 30 * 24 * 3600  # memcached reads larger expiry values as Unix timestamps
_HEADER = struct.Struct("!Bd")
_VERSION = 1
_TOMBSTONE = _HEADER.pack(_VERSION, 0.0)  # expired at the epoch: reads as missing

ServerSpec = Union[Tuple[str, int], str]

if _PooledClient is not None:
    _STALE: Tuple[type, ...] = (
        BrokenPipeError,
        ConnectionResetError,
        _mexc.MemcacheUnexpectedCloseError,
    )


def memcached_expiry(ttl: float, now: float) -> int:
    """memcached ``exptime`` keeping an item for at least ``ttl`` seconds after ``now``."""
    seconds = math.ceil(ttl) + 1
    if seconds > _RELATIVE_LIMIT:
        return int(now) + seconds  # absolute Unix time
    return seconds


class MemcachedStore(BaseStore):
    """Sessions in memcached.

    Args:
        server: ``(host, port)``, ``"host:port"``, or a unix socket path (``"/run/memcached.sock"``).
        prefix: prepended to every key (printable ASCII, no spaces).
        timeout: socket connect and read timeout in seconds.
        max_value_bytes: largest value accepted (memcached's ``-I``, 1 MiB by default).
        max_pool_size: most connections held (one per concurrent caller); None: no limit.
        clock: wall-clock seconds for the stored expiry; injectable for tests.

    Thread-safe (pymemcache's pool) and fork-safe (a child process builds its own pool).
    """

    kind = "memcached"
    _closed = False  #: set by close(): for good
    #: It answers over the network: SessionCache wraps it in a ResilientStore (writes behind
    #: the handshake, a breaker); see stores/resilient.py.
    remote = True

    def __init__(
        self,
        server: ServerSpec = ("127.0.0.1", 11211),
        *,
        prefix: Union[bytes, str] = b"sesscache:",
        timeout: float = 0.05,
        max_value_bytes: int = 1024 * 1024,
        max_pool_size: Optional[int] = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if _PooledClient is None:
            raise ConfigurationError(
                "MemcachedStore needs the pymemcache package: pip install pymemcache "
                "(or pip install 'sesscache[memcached]')"
            )
        if isinstance(prefix, str):
            prefix = prefix.encode("ascii")
        if not isinstance(prefix, (bytes, bytearray)):
            raise ConfigurationError(f"prefix must be bytes or str, got {type(prefix).__name__}")
        prefix = bytes(prefix)
        if len(prefix) > _MAX_KEY - 65 or any(b <= 32 or b >= 127 for b in prefix):
            raise ConfigurationError(
                f"prefix {prefix!r} is not a memcached key prefix: use at most {_MAX_KEY - 65} "
                "printable ASCII bytes without spaces"
            )
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout < 3600:
            raise ConfigurationError(f"timeout must be seconds > 0, got {timeout!r}")
        if isinstance(max_value_bytes, bool) or not isinstance(max_value_bytes, int) or max_value_bytes < 1:
            raise ConfigurationError(f"max_value_bytes must be an int >= 1, got {max_value_bytes!r}")
        if isinstance(server, str) and server.startswith("unix:"):
            server = server[5:]
        if not isinstance(server, (str, tuple)):
            raise ConfigurationError(
                f"server must be (host, port), 'host:port' or a socket path, got {server!r}"
            )
        self.server = server
        self.prefix = prefix
        self.timeout = float(timeout)
        self.max_value_bytes = max_value_bytes
        self.max_pool_size = max_pool_size
        self._clock = clock
        self._max_hex = (_MAX_KEY - len(prefix) - 1) // 2
        self._client: Any = None
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._warned_foreign = False
        self._where = server if isinstance(server, str) else f"{server[0]}:{server[1]}"

    # -- the Store contract ----------------------------------------------------------------

    oversize_reads = 0  #: values over max_value_bytes refused by get() (see _read_bounds)

    def get(self, key: bytes) -> Optional[bytes]:
        raw = self._call("get", self._key(key))
        if raw is None:
            return None
        # memcached's item size (-I) bounds what it sends; a value over this store's limit
        # (another writer, or -I raised past it) is refused like the other stores do.
        if len(raw) > self.max_value_bytes + _HEADER.size:
            refuse_oversize(self, f"{len(raw) - _HEADER.size} bytes")
            return None
        return self._unpack(raw)

    def set(self, key: bytes, value: bytes, ttl: float) -> None:
        key, value, ttl = checked_entry(key, value, ttl)
        mkey = self._key(key)
        if len(value) > self.max_value_bytes:
            raise ValueTooLarge(
                f"value of {len(value)} bytes exceeds MemcachedStore max_value_bytes="
                f"{self.max_value_bytes} (memcached's item size, -I); raise both or store less"
            )
        now = self._clock()
        data = _HEADER.pack(_VERSION, now + ttl) + value
        stored = self._call("set", mkey, data, expire=memcached_expiry(ttl, now), noreply=False)
        if not stored:
            raise StoreError(f"memcached at {self._where} did not store the value (NOT_STORED)")

    def delete(self, key: bytes) -> None:
        self._call("delete", self._key(key), noreply=False)

    def pop(self, key: bytes) -> Optional[bytes]:
        """Atomic get + delete with gets/cas (see the module docstring)."""
        mkey = self._key(key)
        raw, cas = self._call("gets", mkey)
        if raw is None:
            return None
        value = self._unpack(raw)
        if value is None:
            return None
        # True: ours. False: someone popped or replaced it first. None: it vanished meanwhile.
        if self._call("cas", mkey, _TOMBSTONE, cas, expire=1, noreply=False):
            return value
        return None

    def close(self) -> None:
        """Close this process's connections, for good: later calls raise StoreError."""
        self._closed = True
        client = self._client
        if client is not None and self._pid == os.getpid():
            client.close()
        self._client = None

    def describe(self) -> Dict[str, Any]:
        """Server-wide numbers (``server_items`` counts every key on the server). Never raises
        StoreError: on a fault ``error`` says why."""
        info: Dict[str, Any] = {
            # memcached cannot count one prefix's keys: entries/bytes are unknown.
            "kind": self.kind,
            "entries": None,
            "bytes": None,
            "server": self._where,
            "prefix": self.prefix.decode("ascii"),
            "timeout": self.timeout,
            "max_value_bytes": self.max_value_bytes,
        }
        try:
            stats = self._call("stats")
        except StoreError as exc:
            info["error"] = str(exc)
            return info
        for ours, theirs in (
            ("version", b"version"),
            ("server_items", b"curr_items"),
            ("server_bytes", b"bytes"),
            ("limit_maxbytes", b"limit_maxbytes"),
            ("evictions", b"evictions"),
        ):
            value = stats.get(theirs)
            info[ours] = value.decode("ascii", "replace") if isinstance(value, bytes) else value
        return info

    def __repr__(self) -> str:
        return f"<MemcachedStore {self._where} prefix={self.prefix!r}>"

    # -- helpers ---------------------------------------------------------------------------

    def _key(self, key: bytes) -> bytes:
        if type(key) is not bytes:
            key = as_bytes(key, "key")
        if len(key) <= self._max_hex:
            return self.prefix + b"x" + binascii.hexlify(key)
        return self.prefix + b"h" + hashlib.sha256(key).hexdigest().encode("ascii")

    def _unpack(self, raw: bytes) -> Optional[bytes]:
        if len(raw) < _HEADER.size or raw[0] != _VERSION:
            if not self._warned_foreign:  # once: a shared prefix would flood the log
                self._warned_foreign = True
                log.warning(
                    "memcached at %s holds values under prefix %r that sesscache did not "
                    "write; ignoring them (give sesscache a prefix of its own)",
                    self._where, self.prefix,
                )
            return None
        _, expires = _HEADER.unpack_from(raw)
        if self._clock() >= expires:
            return None
        return raw[_HEADER.size:]

    def _pool(self) -> Any:
        if self._closed:  # every call to the server comes here first
            raise closed_error(self)
        client = self._client
        pid = os.getpid()
        if client is not None and self._pid == pid:
            return client
        if self._pid != pid:
            # Forked: the parent's lock may be held forever here and its pooled sockets are
            # shared with the parent. Start over without closing them (that is the parent's job).
            self._lock = threading.Lock()
            self._client = None
            self._pid = pid
        with self._lock:
            if self._client is None:
                self._client = _PooledClient(
                    self.server,
                    connect_timeout=self.timeout,
                    timeout=self.timeout,
                    no_delay=True,
                    max_pool_size=self.max_pool_size,
                    default_noreply=False,
                )
            return self._client

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        client = self._pool()
        try:
            budget = -1
            while True:
                try:
                    return getattr(client, method)(*args, **kwargs)
                except _STALE:
                    # A pooled connection the server closed (restart, idle timeout). pymemcache
                    # dropped it; after a restart every idle pooled connection is stale, so try
                    # once per idle connection plus one fresh one. A dead server fails fast
                    # (refused) and a cas retried after a lost reply only loses the pop (False).
                    if budget < 0:
                        budget = min(len(client.client_pool.free), 64) + 1
                    budget -= 1
                    if budget < 0:
                        raise
        except (_mexc.MemcacheError, OSError) as exc:
            raise self._fault(exc) from exc
        except RuntimeError as exc:  # pymemcache's pool: "Too many objects"
            raise StoreError(
                f"memcached connection pool for {self._where} is exhausted ({exc}): "
                f"raise max_pool_size (now {self.max_pool_size})"
            ) from exc

    def _fault(self, exc: BaseException) -> StoreError:
        where = f"memcached at {self._where}"
        text = str(exc) or type(exc).__name__
        if isinstance(exc, (socket.timeout, TimeoutError)):
            return StoreError(
                f"{where} did not answer within timeout={self.timeout}s: the server is overloaded, "
                "paused or far away; check it or raise timeout"
            )
        if isinstance(exc, _mexc.MemcacheServerError):
            if "too large" in text:
                return ValueTooLarge(
                    f"{where} refused the value as too large ({text}): raise memcached's item "
                    "size (-I) or lower max_value_bytes"
                )
            if "out of memory" in text:
                return StoreError(
                    f"{where} is out of memory ({text}): raise its memory (-m) or drop -M so it evicts"
                )
            return StoreError(f"{where} reported an error: {text}")
        if isinstance(exc, OSError):
            return StoreError(
                f"cannot reach {where} ({text}): check that memcached runs and the address; "
                "the store reconnects on the next call"
            )
        return StoreError(f"{where} failed: {text}")

    # -- compare-and-set (session-ticket key rings; see sesscache.ticket_keys) ------------

    def compare_and_set(self, key: bytes, expected: Optional[bytes], value: bytes, ttl: float) -> bool:
        """Set ``key`` to ``value`` only if its live value is ``expected`` (None: absent or
        expired); True when written. Atomic: ``gets`` then ``cas`` with its token, or
        ``add`` when memcached holds no item at all."""
        key, value, ttl = checked_entry(key, value, ttl)
        mkey = self._key(key)
        now = self._clock()
        data = _HEADER.pack(_VERSION, now + ttl) + value
        expire = memcached_expiry(ttl, now)
        raw, token = self._call("gets", mkey)
        if raw is None:
            return expected is None and bool(self._call("add", mkey, data, expire=expire, noreply=False))
        if self._unpack(raw) != expected:
            return False
        return bool(self._call("cas", mkey, data, token, expire=expire, noreply=False))
