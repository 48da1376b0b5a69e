"""``ClientSessionCache``: resume TLS sessions from a client, across client restarts.

A TLS client resumes by offering a session it kept from an earlier connection to the
same server. pyOpenSSL keeps sessions only in memory; this cache keeps them in any
store, keyed by (host, port, SNI name), so a client process that restarts, or a fleet of
workers, still resumes::

    cache = ClientSessionCache(SQLiteStore("client-sessions.db"))
    cache.attach(client_context)                  # an OpenSSL.SSL.Context, before use
    conn = SSL.Connection(client_context, sock)
    cache.prepare(conn, "example.com", 443)       # offers a stored session, if any
    conn.do_handshake()                           # new sessions are stored as they come

pyOpenSSL only: the stdlib cannot take a session from outside (``ssl.SSLSession`` has
no constructor), so there is nothing to hand it.
"""
from __future__ import annotations

import json
import logging
import struct
import time
import weakref
from typing import Any, Optional, Sequence

from . import _fork
from ._binding import hooks as _hooks
from . import callbacks as _callbacks
from ._burstlog import BurstLogger
from .cache import DEFAULT_LIFETIME, MAX_LIFETIME
from .contexts import SESS_CACHE_CLIENT, SESS_CACHE_NO_INTERNAL_STORE, set_session_cache_mode
from .errors import ConfigurationError
from .session import Session
from .stores import MemoryStore, Store
from .stores.capabilities import capabilities_of, check_store

logger = logging.getLogger(__name__)

_KEY_ATTRIBUTE = "_sesscache_client_key"
_ENVELOPE = struct.Struct(">Bq")  # format version, expiry (seconds since the epoch)
_FORMAT_VERSION = 1
# scc1: keys were f"{host}|{port}|{name}".encode("idna"), which fused the host's last
# label, the port and the name's first label into one label (UnicodeError past 63
# characters). scc2: keys are JSON, valid for any str; sessions kept under scc1: keys are
# not found after an upgrade (one full handshake per server, then stored anew) and age
# out of the store by their own ttl.
_KEY_PREFIX = b"scc2:"


class ClientSessionCache:
    """Client-side sessions in a store, keyed by (host, port, server name).

    :param store: where sessions live (``MemoryStore()`` by default).
    :param lifetime: the longest a stored session is offered, in seconds (the server's
        own ticket lifetime applies too).
    :param seal_keys: AES-GCM keys to seal sessions at rest, as for ``SessionCache``.
    """

    def __init__(self, store: Optional[Store] = None, *, lifetime: float = DEFAULT_LIFETIME,
                 seal_keys: Optional[Sequence[bytes]] = None, log_interval: float = 10.0) -> None:
        if not (isinstance(lifetime, (int, float)) and 0 < lifetime <= MAX_LIFETIME):
            raise ConfigurationError(f"lifetime must be more than 0 and at most {MAX_LIFETIME:.0f} s")
        self.store: Store = check_store(store) if store is not None else MemoryStore()
        self._close_store = capabilities_of(self.store).close  # asked once (optional)
        self.lifetime = float(lifetime)
        self._sealer = None
        if seal_keys is not None:
            from .sealing import Sealer

            self._sealer = Sealer(seal_keys)
        self._log_interval = log_interval
        self._contexts: "weakref.WeakSet[Any]" = weakref.WeakSet()  # those attach() hooked
        self._renew_after_fork()
        _fork.renew_in_child(self._renew_after_fork)

    def _renew_after_fork(self) -> None:
        """Counters from zero and a fresh burst logger: at __init__, and in a forked child
        (a worker counts its own connections only)."""
        self._burst = BurstLogger(logger, self._log_interval)
        self.stored = 0
        self.offered = 0
        self.errors = 0
        self.other_format = 0  # stored values of another format version (another sesscache)

    def attach(self, context: Any) -> None:
        """Record every new session of this pyOpenSSL client context in the store."""
        if type(context).__module__ != "OpenSSL.SSL":
            raise ConfigurationError(
                "ClientSessionCache works with pyOpenSSL client contexts (OpenSSL.SSL.Context): "
                "the stdlib ssl module cannot be given a session from outside")
        # Client caching must be on for OpenSSL to report sessions; its own internal
        # store is useless to a client (it never looks sessions up by id).
        set_session_cache_mode(context, SESS_CACHE_CLIENT | SESS_CACHE_NO_INTERNAL_STORE)
        _callbacks.set_new_session_callback(context, self._on_new)
        self._contexts.add(context)

    def close(self) -> None:
        """Stop recording the sessions of every context this cache was attached to, then
        close the store (when it has ``close``): for good, as ``SessionCache.close()``. A
        context that already made connections (pyOpenSSL 26.2+ forbids changing it) keeps
        its callback, which then keeps nothing."""
        for context in list(self._contexts):
            if _hooks.may_change(context):
                _callbacks.set_new_session_callback(context, None)
            else:
                hooks = _hooks.hooks_for(context)
                if hooks is not None:
                    _hooks.turn_off(hooks)
        self._contexts.clear()
        if self._close_store is not None:
            self._close_store()

    def __enter__(self) -> "ClientSessionCache":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    @staticmethod
    def key_for(host: str, port: int, server_name: Optional[str] = None) -> bytes:
        """The store key of (host, port, server name): one per distinct lowercased triple,
        for any str (no IDNA: a name IDNA cannot encode still has a key)."""
        name = host if server_name is None else server_name
        triple = [str(host).lower(), int(port), str(name or "").lower()]
        return _KEY_PREFIX + json.dumps(triple, ensure_ascii=True, separators=(",", ":")).encode("ascii")

    def prepare(self, connection: Any, host: str, port: int, server_name: Optional[str] = None) -> bool:
        """Before the handshake: set the SNI name and offer a stored session, if any.

        Returns whether a session was offered (the server may still decline it).
        """
        key = self.key_for(host, port, server_name)
        connection.__dict__[_KEY_ATTRIBUTE] = key
        name = host if server_name is None else server_name
        if name:
            connection.set_tlsext_host_name(name.encode("idna"))
        try:
            blob = self.store.get(key)
        except Exception as exc:
            self._failed("read", exc)
            return False
        if blob is None:
            return False
        # Bytes from a store: whatever they are, a counted miss, never an exception.
        try:
            if not isinstance(blob, (bytes, bytearray, memoryview)):
                raise TypeError(f"the store returned a {type(blob).__name__}, not bytes")
            if self._sealer is not None:
                blob = self._sealer.open(key, blob)
            if len(blob) >= _ENVELOPE.size and blob[0] != _FORMAT_VERSION:
                # Written by another version of sesscache (a rolling deploy): not ours to read.
                self.other_format += 1
                return False
            _version, expires = _ENVELOPE.unpack_from(blob)
            if expires <= time.time():
                return False
            context = connection.get_context()
            session = Session.from_bytes(memoryview(blob)[_ENVELOPE.size:], context)
            connection.set_session(session.to_pyopenssl(context))
            session.close()
        except Exception as exc:  # SealError, SessionError, struct.error, TypeError, ...
            self._failed("open", exc)
            return False
        self.offered += 1
        return True

    def _on_new(self, connection: Any, session: Session) -> None:
        key = connection.__dict__.get(_KEY_ATTRIBUTE) if connection is not None else None
        if key is None:
            return  # a connection nobody prepared: we do not know which server it was
        now = time.time()
        expires = min(now + self.lifetime, session.time + session.timeout)
        if expires <= now or not session.is_resumable:
            return
        blob = _ENVELOPE.pack(_FORMAT_VERSION, int(expires)) + session.to_bytes()
        if self._sealer is not None:
            blob = self._sealer.seal(key, blob)
        try:
            self.store.set(key, blob, expires - now)
        except Exception as exc:
            self._failed("write", exc)
            return
        self.stored += 1

    def _failed(self, what: str, exc: BaseException) -> None:
        self.errors += 1
        self._burst.log(logging.WARNING, what, "client session %s failed (%s: %s); "
                        "the connection does a full handshake", what, type(exc).__name__, str(exc))
