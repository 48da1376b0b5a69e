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

Stdlib clients (``ssl.SSLContext``: httpx, requests/urllib3, aiohttp, asyncio streams,
websockets) need no ``prepare``: ``attach`` hooks the context in libssl itself, so every
connection made with it offers the stored session for its server::

    ctx = ssl.create_default_context()
    cache.attach(ctx)                             # before or after first use
    httpx.get("https://example.com", verify=ctx)  # resumes in a fresh process

How it works, and what decides which session a connection is offered:

* the offer happens in libssl's info callback at ``SSL_CB_HANDSHAKE_START`` (before the
  ClientHello is built; see ``csrc/client_offer.c``), new sessions (TLS 1.2 ids and
  tickets, TLS 1.3 tickets) come through the new-session callback. A context has one
  info-callback slot: when something else holds it, ``attach`` refuses with
  :class:`ConfigurationError` rather than replace or chain it.
* the key is the server's name (``server_hostname``, else the SNI name), the peer's TCP
  port (``getpeername`` of the socket), and a digest of the context's verification
  settings (verify mode, ``check_hostname``, verify flags, the trust store's
  certificates, the client certificate). A session made with verification off, another
  trust store or another client certificate is never offered on a context that differs.
* a connection with no socket (``wrap_bio``: memory BIOs, which asyncio uses) has no
  peer port: it uses ``ClientSessionCache.set_port(sslobject, port)`` when called before
  the handshake, else ``attach(ctx, port=...)``, else it is neither offered nor stored.
* on an event loop thread the store is never read or written: offers come from this
  process's memory (fill it with ``prefetch``/``aprefetch`` at start), writes go to the
  store from a background thread.
* TLS 1.3 tickets are used once (RFC 8446 C.4): an offered TLS 1.3 session is taken out
  of the store (``tls13_single_use=False`` keeps it); the server's new tickets replace it.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import ssl
import struct
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, Optional, Sequence, Tuple

from . import _fork
from ._binding import hooks as _hooks
from . import callbacks as _callbacks
from ._burstlog import BurstLogger
from .cache import DEFAULT_LIFETIME, MAX_LIFETIME
from .contexts import SESS_CACHE_CLIENT, SESS_CACHE_NO_INTERNAL_STORE, set_session_cache_mode
from .errors import ConfigurationError
from ._binding import ffi, lib
from ._binding.find_context import BoundContext, bind_context, connection_for
from ._compat import running_loop
from .session import Session, adopt_session, borrow_session, session_pointer
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
_CLIENT_ATTRIBUTE = "_sesscache_client"  # on an attached ssl.SSLContext: its _Attached
_PORT_ATTRIBUTE = "_sesscache_port"  # on an SSLObject: set_port()
_TLS1_3 = 0x0304


class _Attached:
    """What ``attach`` keeps for one stdlib context: the cache (weakly), the libssl copy,
    the default port of socketless connections, and the verification digest with the
    settings it was computed from."""

    __slots__ = ("cache_ref", "instance", "ctx", "context_ref", "port", "settings", "digest")

    def __init__(self, cache: "ClientSessionCache", bound: BoundContext, port: Optional[int]) -> None:
        self.cache_ref = weakref.ref(cache)
        self.instance = bound.instance
        self.ctx = bound.ctx
        self.context_ref = weakref.ref(bound.owner)
        self.port = port
        self.settings: Any = None
        self.digest = ""


def verification_digest(context: ssl.SSLContext) -> str:
    """What a stdlib client context checks of a server, as a hex digest: verify mode,
    ``check_hostname``, verify flags, the trust store's certificates (DER) and the client
    certificate, if any. Sessions are kept per digest."""
    bound = bind_context(context)
    parts = [b"v1", str(int(context.verify_mode)).encode(), str(bool(context.check_hostname)).encode(),
             str(int(context.verify_flags)).encode()]
    cas = sorted(context.get_ca_certs(binary_form=True))
    parts.append(hashlib.sha256(b"".join(hashlib.sha256(c).digest() for c in cas)).digest())
    buffer = ffi.new("unsigned char[]", 16384)
    length = lib.sc_certificate_der(bound.instance.slot, bound.pointer, buffer, 16384)
    if length < 0:
        buffer = ffi.new("unsigned char[]", -length)
        length = lib.sc_certificate_der(bound.instance.slot, bound.pointer, buffer, -length)
    parts.append(hashlib.sha256(ffi.buffer(buffer, max(length, 0))[:]).digest())
    return hashlib.sha256(b"|".join(parts)).hexdigest()[:32]


def _settings_of(context: ssl.SSLContext, attached: "_Attached") -> Tuple[Any, ...]:
    """Cheap to read per connection: when these change, the verification digest is
    computed again. The trust store is read at ``attach`` only: certificates OpenSSL
    loads lazily from a CA directory (``capath``) while verifying would otherwise change
    the digest between a connection's offer and its new session. Load CAs before
    ``attach`` (or attach again after loading more)."""
    cert = attached.instance.api.SSL_CTX_get0_certificate(ffi.cast("SSL_CTX *", attached.ctx))
    return (int(context.verify_mode), bool(context.check_hostname), int(context.verify_flags),
            int(ffi.cast("uintptr_t", cert)))


def _on_event_loop() -> bool:
    return running_loop() is not None


@ffi.def_extern()
def sc_py_client_offer(slot, ctx, ssl_ptr):
    hooks = _hooks.lookup(slot, ctx)
    context = hooks.context_ref() if hooks is not None else None
    attached = getattr(context, "__dict__", {}).get(_CLIENT_ATTRIBUTE) if context is not None else None
    cache = attached.cache_ref() if attached is not None else None
    if cache is None:
        return
    try:
        cache._offer_stdlib(attached, context, ssl_ptr)
    except BaseException as exc:  # nothing may cross into C
        cache._failed("offer", exc)


class ClientSessionCache:
    """Client-side sessions in a store, keyed by (host, port, server name).

    :param store: where sessions live (``MemoryStore()`` by default).
    :param lifetime: the longest a stored session is offered, in seconds (the server's
        own ticket lifetime applies too).
    :param seal_keys: AES-GCM keys to seal sessions at rest, as for ``SessionCache``.
    """

    def __init__(self, store: Optional[Store] = None, *, lifetime: float = DEFAULT_LIFETIME,
                 seal_keys: Optional[Sequence[bytes]] = None, log_interval: float = 10.0,
                 tls13_single_use: bool = True) -> None:
        if not (isinstance(lifetime, (int, float)) and 0 < lifetime <= MAX_LIFETIME):
            raise ConfigurationError(f"lifetime must be more than 0 and at most {MAX_LIFETIME:.0f} s")
        self.store: Store = check_store(store) if store is not None else MemoryStore()
        if capabilities_of(self.store).is_async:
            raise ConfigurationError(
                f"{type(self.store).__name__} is an asyncio store; ClientSessionCache reads and "
                "writes its store from threads (never on the event loop): give it the synchronous "
                "store of the same kind (RedisStore for AsyncRedisStore)")
        self._close_store = capabilities_of(self.store).close  # asked once (optional)
        self._pop = capabilities_of(self.store).pop  # atomic pop only, or None
        self.lifetime = float(lifetime)
        self._sealer = None
        if seal_keys is not None:
            from .sealing import Sealer

            self._sealer = Sealer(seal_keys)
        self._log_interval = log_interval
        self.tls13_single_use = bool(tls13_single_use)
        # This process's copy of what it stored or read: what event-loop threads offer.
        self._memory: Dict[bytes, bytes] = {}
        # The sessions behind some of those values, parsed (kept as libssl gave them): an
        # offer from here skips d2i_SSL_SESSION, whose certificate decoding costs a
        # stdlib client more than the resumption saves (OpenSSL 3's decoders, measured in
        # benchmarks/client_resume.py).
        self._live: Dict[bytes, Tuple[bytes, Session]] = {}
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
        self.missed = 0  # stdlib connections that found no session to offer
        self.unkeyed = 0  # stdlib connections with no name or no port: neither offered nor kept
        self.taken_by_another = 0  # TLS 1.3 tickets another process took first: not offered
        self._writer: Optional[ThreadPoolExecutor] = None  # store I/O off the event loop
        self._writer_lock = threading.Lock()

    @property
    def stats(self) -> Dict[str, int]:
        """The counters, as one dict: ``stored``, ``offered``, ``missed`` (no session for
        the server), ``unkeyed`` (no name or port), ``taken_by_another`` (a TLS 1.3 ticket
        another process used first), ``errors``, ``other_format``."""
        return {"stored": self.stored, "offered": self.offered, "missed": self.missed,
                "unkeyed": self.unkeyed, "taken_by_another": self.taken_by_another,
                "errors": self.errors, "other_format": self.other_format}

    def attach(self, context: Any, *, port: Optional[int] = None) -> None:
        """Resume with every connection of this client context.

        ``ssl.SSLContext``: every connection offers the stored session for its server and
        keeps the new ones, with no other code; ``port`` is the port of connections that
        have no socket (memory BIOs, asyncio), unless ``set_port`` names it per
        connection. pyOpenSSL ``OpenSSL.SSL.Context``: new sessions are kept; call
        ``prepare`` on each connection to offer one.
        """
        if isinstance(context, ssl.SSLContext):
            self._attach_stdlib(context, port)
            return
        if type(context).__module__ != "OpenSSL.SSL":
            raise ConfigurationError(
                "ClientSessionCache works with ssl.SSLContext and pyOpenSSL (OpenSSL.SSL.Context) "
                f"client contexts, not {type(context).__module__}.{type(context).__qualname__}")
        # Client caching must be on for OpenSSL to report sessions; its own internal
        # store is useless to a client (it never looks sessions up by id).
        set_session_cache_mode(context, SESS_CACHE_CLIENT | SESS_CACHE_NO_INTERNAL_STORE)
        _callbacks.set_new_session_callback(context, self._on_new)
        self._contexts.add(context)

    def _attach_stdlib(self, context: ssl.SSLContext, port: Optional[int]) -> None:
        if port is not None and not (isinstance(port, int) and 0 < port < 65536):
            raise ConfigurationError(f"port must be a TCP port (1 to 65535), not {port!r}")
        bound = bind_context(context)
        slot = bound.instance.slot
        state = lib.sc_client_installed(slot, bound.pointer)
        if state == 2:
            raise ConfigurationError(
                "this ssl.SSLContext already has an info callback that sesscache did not set "
                "(libssl keeps one per context); ClientSessionCache offers sessions from it and "
                "will not replace or chain another. Use a context of its own for this cache.")
        old = context.__dict__.get(_CLIENT_ATTRIBUTE)
        if old is not None and old.cache_ref() not in (None, self):
            raise ConfigurationError("this ssl.SSLContext is attached to another ClientSessionCache; "
                                     "detach it there first (close())")
        hooks = _hooks.hooks_for(context)
        if hooks is not None and hooks.owner not in (None, self):
            raise ConfigurationError(
                "this ssl.SSLContext is served by another sesscache cache, which owns its session "
                "callbacks; a client cache needs a client context of its own")
        set_session_cache_mode(context, SESS_CACHE_CLIENT | SESS_CACHE_NO_INTERNAL_STORE)
        attached = _Attached(self, bound, port)
        self._attached_digest(attached, context)  # the trust store as it is now
        context.__dict__[_CLIENT_ATTRIBUTE] = attached
        _hooks.install(context, owner=self, new=(self._on_new_stdlib, self._on_new_stdlib))
        if lib.sc_client_install(slot, bound.pointer, 1) != 1:
            raise ConfigurationError(
                f"{bound.instance.describe()} lacks SSL_CTX_set_info_callback or SSL_set_session; "
                "sesscache cannot offer sessions on it")
        self._contexts.add(context)

    @staticmethod
    def set_port(connection: Any, port: int) -> None:
        """The server port of a connection with no socket (an ``ssl.SSLObject`` from
        ``wrap_bio``), before its handshake; it wins over ``attach(ctx, port=...)``."""
        if not (isinstance(port, int) and 0 < port < 65536):
            raise ConfigurationError(f"port must be a TCP port (1 to 65535), not {port!r}")
        setattr(connection, _PORT_ATTRIBUTE, port)

    def prefetch(self, context: ssl.SSLContext, host: str, port: int,
                 server_name: Optional[str] = None) -> bool:
        """Read the session for (host, port) on ``context`` from the store into this
        process's memory, so an event-loop connection can offer it. Blocking: call it
        before the loop, or ``await aprefetch(...)`` on it. Returns whether one was found."""
        key = self.key_for(host, port, server_name, verification=self._digest_of(context))
        try:
            blob = self.store.get(key)
        except Exception as exc:
            self._failed("read", exc)
            return False
        if isinstance(blob, (bytes, bytearray, memoryview)):
            self._memory[key] = bytes(blob)
            return True
        return False

    async def aprefetch(self, context: ssl.SSLContext, host: str, port: int,
                        server_name: Optional[str] = None) -> bool:
        """``prefetch`` from a worker thread, for a coroutine."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, self.prefetch, context, host, port, server_name)

    def _digest_of(self, context: ssl.SSLContext) -> str:
        attached = context.__dict__.get(_CLIENT_ATTRIBUTE)
        if attached is None:
            return verification_digest(context)
        return self._attached_digest(attached, context)

    @staticmethod
    def _attached_digest(attached: _Attached, context: ssl.SSLContext) -> str:
        settings = _settings_of(context, attached)
        if settings != attached.settings:
            attached.digest = verification_digest(context)
            attached.settings = settings
        return attached.digest

    def _stdlib_key(self, attached: _Attached, context: ssl.SSLContext, ssl_ptr) -> Optional[bytes]:
        bound = BoundContext(attached.instance, attached.ctx, "stdlib", context)
        conn = connection_for(bound, ssl_ptr)
        known = getattr(conn, "__dict__", {}).get(_KEY_ATTRIBUTE)
        if known is not None:  # the offer computed it; the new sessions reuse it
            return known or None
        key = self._compute_key(attached, context, ssl_ptr, conn)
        if conn is not None and hasattr(conn, "__dict__"):
            conn.__dict__[_KEY_ATTRIBUTE] = key or b""
        return key

    def _compute_key(self, attached: _Attached, context: ssl.SSLContext, ssl_ptr, conn: Any) -> Optional[bytes]:
        host = getattr(conn, "server_hostname", None)
        if not host:
            name = attached.instance.api.SSL_get_servername(ssl_ptr, 0)
            host = ffi.string(name).decode("ascii", "replace") if name != ffi.NULL else None
        port = lib.sc_client_peer_port(attached.instance.slot, ssl_ptr)
        if port <= 0:
            port = getattr(conn, _PORT_ATTRIBUTE, None) or attached.port
        if not host or not port:
            self.unkeyed += 1
            return None
        return self.key_for(host, port, host, verification=self._attached_digest(attached, context))

    def _offer_stdlib(self, attached: _Attached, context: ssl.SSLContext, ssl_ptr) -> None:
        key = self._stdlib_key(attached, context, ssl_ptr)
        if key is None:
            return
        on_loop = _on_event_loop()
        blob = self._memory.get(key)
        if blob is None and not on_loop:
            try:
                blob = self.store.get(key)
            except Exception as exc:
                self._failed("read", exc)
                return
        if blob is None:
            self.missed += 1
            if on_loop:  # for the next connection: read the store off the loop
                self._store_io(True, self._fetch_into_memory, key, what="read")
            return
        der = self._open(key, blob)
        if der is None:
            self._memory.pop(key, None)
            self._live.pop(key, None)
            return
        live = self._live.get(key)
        version = 0
        if live is not None and live[0] == blob:
            version = lib.sc_client_offer_copy(attached.instance.slot, ssl_ptr, session_pointer(live[1]))
        if version == 0:
            version = lib.sc_client_offer(attached.instance.slot, ssl_ptr, der, len(der))
        if version == 0:
            self._failed("open", ValueError("the stored bytes are no session libssl takes"))
            return
        if version == _TLS1_3 and self.tls13_single_use and not self._take(key, blob, on_loop):
            lib.sc_client_unoffer(attached.instance.slot, ssl_ptr)
            self.taken_by_another += 1
            return
        self.offered += 1
        if version != _TLS1_3 or not self.tls13_single_use:
            self._memory[key] = bytes(blob)

    def _take(self, key: bytes, blob: Any, on_loop: bool) -> bool:
        """Take a TLS 1.3 ticket out of memory and the store, so that no other connection
        or process offers it again. False when another one took it first: an atomic pop
        (Redis GETDEL, SQLite DELETE ... RETURNING, ...) says so; a store without one
        is read and deleted, which narrows the race without closing it."""
        in_memory = self._memory.pop(key, None)
        self._live.pop(key, None)
        if on_loop:  # (the memory copy was what this connection offered)
            self._store_io(True, self.store.delete, key)
            return in_memory is not None
        pop = self._pop
        try:
            if pop is None:
                self.store.delete(key)
                return True
            taken = pop(key)
        except Exception as exc:
            self._failed("write", exc)
            return True  # the store is failing: the server decides
        return taken is not None and bytes(taken) == bytes(blob)

    def _fetch_into_memory(self, key: bytes) -> None:
        blob = self.store.get(key)
        if isinstance(blob, (bytes, bytearray, memoryview)):
            self._memory.setdefault(key, bytes(blob))

    def _open(self, key: bytes, blob: Any) -> Optional[bytes]:
        """The session DER inside a stored value, or None (counted) when it is not one
        or has expired."""
        try:
            if not isinstance(blob, (bytes, bytearray, memoryview)):
                raise TypeError(f"the store returned a {type(blob).__name__}, not bytes")
            if self._sealer is not None:
                blob = self._sealer.open(key, blob)
            if len(blob) >= _ENVELOPE.size and blob[0] != _FORMAT_VERSION:
                # Written by another version of sesscache (a rolling deploy): not ours to read.
                self.other_format += 1
                return None
            _version, expires = _ENVELOPE.unpack_from(blob)
            if expires <= time.time():
                return None
            return bytes(memoryview(blob)[_ENVELOPE.size:])
        except Exception as exc:  # SealError, struct.error, TypeError, ...
            self._failed("open", exc)
            return None

    def _store_io(self, on_loop: bool, fn: Any, *args: Any, what: str = "write") -> None:
        """Run a store call now, or (on an event loop thread) on the cache's writer."""
        def run() -> None:
            try:
                fn(*args)
            except Exception as exc:
                self._failed(what, exc)
        if not on_loop:
            run()
            return
        with self._writer_lock:
            if self._writer is None:
                self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sesscache-client")
            self._writer.submit(run)

    def _on_new_stdlib(self, hooks: Any, ssl_ptr, session_ptr) -> None:
        context = hooks.context_ref()
        attached = context.__dict__.get(_CLIENT_ATTRIBUTE) if context is not None else None
        if attached is None:
            return
        key = self._stdlib_key(attached, context, ssl_ptr)
        if key is None:
            return
        session = borrow_session(attached.instance, session_ptr, context)
        self._keep(key, session, _on_event_loop(), live=self._copy(attached, session_ptr))

    @staticmethod
    def _copy(attached: _Attached, session_ptr) -> Optional[Session]:
        """A copy of a new session for this process's own offers (each offer a copy of
        it again: csrc/client_offer.c's sc_client_offer_copy), or None. A copy, not the
        connection's own: libssl marks that one not resumable when its connection is
        freed without a close_notify (as most HTTP clients close). No context in it:
        self._live keeps it, and the context keeps this cache."""
        api = attached.instance.api
        if api.SSL_SESSION_dup == ffi.NULL:
            return None
        copy = api.SSL_SESSION_dup(session_ptr)
        return adopt_session(attached.instance, copy, None) if copy != ffi.NULL else None

    def flush(self) -> None:
        """Wait for the store writes queued from event-loop threads."""
        with self._writer_lock:
            writer, self._writer = self._writer, None
        if writer is not None:
            writer.shutdown(wait=True)

    def close(self) -> None:
        """Stop recording the sessions of every context this cache was attached to, then
        close the store (when it has ``close``): for good, as ``SessionCache.close()``. A
        context that already made connections (pyOpenSSL 26.2+ forbids changing it) keeps
        its callback, which then keeps nothing."""
        for context in list(self._contexts):
            if isinstance(context, ssl.SSLContext):
                bound = bind_context(context)
                lib.sc_client_install(bound.instance.slot, bound.pointer, 0)
                context.__dict__.pop(_CLIENT_ATTRIBUTE, None)
                _hooks.install(context, owner=self, new=None)
                continue
            if _hooks.may_change(context):
                _callbacks.set_new_session_callback(context, None)
            else:
                hooks = _hooks.hooks_for(context)
                if hooks is not None:
                    _hooks.turn_off(hooks)
        self._contexts.clear()
        self._live.clear()
        self._memory.clear()
        self.flush()
        if self._close_store is not None:
            self._close_store()

    def __enter__(self) -> "ClientSessionCache":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    @staticmethod
    def key_for(host: str, port: int, server_name: Optional[str] = None, *,
                verification: str = "") -> bytes:
        """The store key of (host, port, server name): one per distinct lowercased triple,
        for any str (no IDNA: a name IDNA cannot encode still has a key). Stdlib contexts
        add their ``verification`` digest (see ``verification_digest``)."""
        name = host if server_name is None else server_name
        triple: list = [str(host).lower(), int(port), str(name or "").lower()]
        if verification:
            triple.append(verification)
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
        der = self._open(key, blob)  # bytes from a store: a counted miss, never an exception
        if der is None:
            return False
        try:
            context = connection.get_context()
            session = Session.from_bytes(der, context)
            connection.set_session(session.to_pyopenssl(context))
            session.close()
        except Exception as exc:  # SessionError, ...
            self._failed("open", exc)
            return False
        self.offered += 1
        return True

    def _on_new(self, connection: Any, session: Session) -> None:
        key = connection.__dict__.get(_KEY_ATTRIBUTE) if connection is not None else None
        if key is None:
            return  # a connection nobody prepared: we do not know which server it was
        self._keep(key, session, False)

    def _keep(self, key: bytes, session: Session, on_loop: bool, live: Optional[Session] = None) -> None:
        now = time.time()
        expires = min(now + self.lifetime, session.time + session.timeout)
        if expires <= now or not session.is_resumable:
            return
        blob = _ENVELOPE.pack(_FORMAT_VERSION, int(expires)) + session.to_bytes()
        if self._sealer is not None:
            blob = self._sealer.seal(key, blob)
        if on_loop or live is not None or self._contexts_are_stdlib():
            self._memory[key] = blob
        if live is not None:
            self._live[key] = (blob, live)
        if on_loop:
            self.stored += 1
            self._store_io(True, self.store.set, key, blob, expires - now)
            return
        try:
            self.store.set(key, blob, expires - now)
        except Exception as exc:
            self._failed("write", exc)
            return
        self.stored += 1

    def _contexts_are_stdlib(self) -> bool:
        return any(isinstance(c, ssl.SSLContext) for c in list(self._contexts))

    def _failed(self, what: str, exc: BaseException) -> None:
        self.errors += 1
        self._burst.log(logging.WARNING, what, "client session %s failed (%s: %s); "
                        "the connection does a full handshake", what, type(exc).__name__, str(exc))
