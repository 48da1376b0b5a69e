"""The asyncio servers of :mod:`sesscache.aio`: read the ClientHello, look the session up
(awaited only for a store that must be), then hand the connection (hello replayed) to
asyncio's SSL protocol as ``loop.start_tls`` does."""
from __future__ import annotations

import asyncio
import asyncio.sslproto as _sslproto
import functools
import logging
import ssl as _ssl
from typing import Any, Callable, Dict, Optional, Tuple

from .. import _compat
from .._binding.hello_scan import HelloScan
from ..cache import SessionCache
from ..clienthello import MAX_CLIENT_HELLO, ClientHelloError
from ..errors import ConfigurationError

from .deadlines import Deadline, DeadlineQueue
from .prefetch import PrefetchingStore, ServerSide, check_seconds

logger = logging.getLogger(__name__)

#: Seconds for the whole ClientHello to arrive; then the client gets a full handshake.
DEFAULT_HELLO_TIMEOUT = 2.0


# ------------------------------------------------------------------------------------ servers


async def start_server(client_connected_cb: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Any],
                       host: Any = None, port: Any = None, *, ssl: _ssl.SSLContext,
                       cache: SessionCache, limit: int = 2 ** 16, **kwds: Any) -> asyncio.AbstractServer:
    """:func:`asyncio.start_server` with asynchronous session lookups.

    ``client_connected_cb(reader, writer)`` is called once the TLS handshake is done, as with
    ``asyncio.start_server(..., ssl=ctx)``. ``cache`` is a :class:`~sesscache.SessionCache`
    over a :class:`PrefetchingStore`. Every other keyword goes to :func:`create_server`.
    """
    loop = asyncio.get_running_loop()

    def factory() -> asyncio.StreamReaderProtocol:
        reader = asyncio.StreamReader(limit=limit, loop=loop)
        return asyncio.StreamReaderProtocol(reader, client_connected_cb, loop=loop)

    return await create_server(factory, host, port, ssl=ssl, cache=cache, **kwds)


async def create_server(protocol_factory: Callable[[], asyncio.BaseProtocol], host: Any = None,
                        port: Any = None, *, ssl: _ssl.SSLContext, cache: SessionCache,
                        session_id_context: Optional[bytes] = None, internal_cache: bool = True,
                        hello_timeout: float = DEFAULT_HELLO_TIMEOUT,
                        ssl_handshake_timeout: Optional[float] = None,
                        ssl_shutdown_timeout: Optional[float] = None,
                        **kwds: Any) -> asyncio.AbstractServer:
    """:meth:`loop.create_server <asyncio.loop.create_server>` with asynchronous session lookups.

    The listening socket is plain TCP; each connection is read up to its ClientHello, the
    session is fetched from ``cache.store`` (a :class:`PrefetchingStore`) and the connection
    is upgraded as ``loop.start_tls(..., ssl)`` would. ``protocol_factory()`` is called after the
    handshake succeeded and its protocol gets ``connection_made`` with the TLS transport.

    :param ssl: the server's ``ssl.SSLContext``.
    :param cache: a :class:`~sesscache.SessionCache` whose store is a :class:`PrefetchingStore`.
        If it is not attached to ``ssl`` yet it is attached here, with ``session_id_context``
        and ``internal_cache`` (see :meth:`SessionCache.attach`); if it is, those two must be
        left out or agree.
    :param hello_timeout: seconds for the ClientHello to arrive (see the module docstring).
    :param ssl_handshake_timeout: ``ssl_shutdown_timeout``: as for ``loop.start_tls``.
    :param kwds: ``family``, ``backlog``, ``sock``, ``reuse_port``, ``start_serving`` ... as for
        ``loop.create_server`` (not ``ssl_*``: TLS is done here).
    :returns: the ``asyncio.Server``.
    """
    loop = asyncio.get_running_loop()
    if not isinstance(loop, asyncio.BaseEventLoop):
        raise ConfigurationError(
            f"sesscache.aio needs one of asyncio's own event loops, not {type(loop).__module__}."
            f"{type(loop).__qualname__}: the ClientHello replay relies on asyncio's start_tls "
            "sequence (uvloop is not supported; use the default loop for TLS listeners)")
    if not isinstance(ssl, _ssl.SSLContext):
        raise ConfigurationError(
            f"ssl must be an ssl.SSLContext (asyncio's start_tls takes no other), got {type(ssl).__name__}")
    if not isinstance(cache, SessionCache):
        raise ConfigurationError(f"cache must be a sesscache.SessionCache, got {type(cache).__name__}")
    store = cache.store
    if not isinstance(store, PrefetchingStore):
        raise ConfigurationError(
            f"cache.store is a {type(store).__name__}; sesscache.aio needs a PrefetchingStore in "
            "front of it so that OpenSSL's synchronous lookup never waits for the network: "
            "SessionCache(PrefetchingStore(AsyncRedisStore(url))) (or around SQLiteStore(path)). "
            "A plain MemoryStore never waits: attach the cache to the ssl.SSLContext and use "
            "asyncio.start_server(..., ssl=context) instead, which is faster")
    for name in ("ssl_handshake_timeout", "ssl_shutdown_timeout", "server_hostname"):
        if name in kwds:  # pragma: no cover - they are named parameters here
            raise ConfigurationError(f"{name} is not a create_server argument here")
    check_seconds("hello_timeout", hello_timeout, 3600)
    sid_ctx = _attached_session_id_context(cache, ssl, session_id_context, internal_cache)
    store.bind(loop)
    side = store.server_side()
    side.start()  # drained after every handshake, in _Listener._handshake_done
    tls_kwargs: Dict[str, Any] = {}
    if ssl_handshake_timeout is not None:
        tls_kwargs["ssl_handshake_timeout"] = ssl_handshake_timeout
    if ssl_shutdown_timeout is not None:
        tls_kwargs["ssl_shutdown_timeout"] = ssl_shutdown_timeout
    front = _Listener(loop, protocol_factory, ssl, cache, side, sid_ctx, hello_timeout, tls_kwargs)
    return await loop.create_server(lambda: _HelloSniffer(front), host, port, **kwds)


def _attached_session_id_context(cache: SessionCache, context: _ssl.SSLContext,
                                 session_id_context: Optional[bytes], internal_cache: bool) -> bytes:
    """The session id context the cache serves ``context`` with (it is part of every store
    key), attaching the cache first if needed."""
    attached = cache.session_id_context(context)
    if attached is None:
        cache.attach(context, session_id_context=session_id_context, internal_cache=internal_cache)
        attached = cache.session_id_context(context)
    elif session_id_context is not None and session_id_context != attached:
        raise ConfigurationError(
            f"the cache is attached to this context with session_id_context={attached!r}, "
            f"not {session_id_context!r}; leave session_id_context out or attach it with that value")
    return attached


class _Listener:
    """What every connection of one server shares."""

    def __init__(self, loop, protocol_factory, context, cache, side: ServerSide, sid_ctx, hello_timeout,
                 tls_kwargs) -> None:
        self.loop = loop
        self.protocol_factory = protocol_factory
        self.context = context
        self.cache = cache
        self.side = side  #: the store's seam for this server
        self.sid_ctx = sid_ctx
        self.hello_timeout = hello_timeout
        self.tls_kwargs = tls_kwargs
        self.tasks: set = set()
        # hello_timeout for every connection, on one loop timer
        self.hello_deadlines = DeadlineQueue(loop, hello_timeout)
        # Every store key of this server starts with it (SessionCache.key_for of an empty id).
        self.key_prefix = SessionCache.key_for(sid_ctx, b"")

    def upgrade(self, transport: asyncio.Transport, source: HelloScan,
                keys: Optional[Tuple[bytes, ...]]) -> None:
        """Hand the connection to TLS once its hello is in (or given up on). A lookup that
        needs no waiting (an inline store, or nothing to look up) is made right here and the
        handshake starts in the same call; only a store that must be awaited takes a task."""
        if keys:
            lookup = [self.key_prefix + key for key in keys]
            if not self.side.inline:
                # The socket is still read during the lookup (pausing and resuming it costs
                # two system calls per connection): a TLS client sends nothing more until the
                # server answers, and a client that does is paused by the sniffer.
                task = self.loop.create_task(self._lookup_then_tls(transport, source, lookup))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)
                return
            prefetched = self.side.lookup_now(lookup, self.cache.single_use)
        else:
            prefetched = {}
        self.start_tls(transport, source, prefetched)

    async def _lookup_then_tls(self, transport: asyncio.Transport, source: HelloScan,
                               lookup: list) -> None:
        try:
            prefetched = await self.side.lookup(lookup, self.cache.single_use)
        except asyncio.CancelledError:  # the loop is shutting down
            transport.abort()
            raise
        if transport.is_closing():
            return
        self.start_tls(transport, source, prefetched)
        transport.resume_reading()  # if the sniffer paused it (bytes beyond _MAX_HELD)

    def start_tls(self, transport: asyncio.Transport, source: HelloScan,
                  prefetched: Dict[bytes, bytes]) -> None:
        """What ``loop.start_tls(transport, ..., server_side=True)`` does, at once instead of
        from a coroutine and two ``call_soon``: asyncio's SSLProtocol, made with start_tls's
        arguments, goes on the transport, its ``connection_made`` starts the handshake (and
        its timeout), and the bytes read so far are replayed into it before the socket is read
        again. The end of the handshake is a callback on the protocol's waiter, as
        ``start_tls`` awaits it.

        Sessions prefetched are held by the store until the handshake is over (after a
        HelloRetryRequest OpenSSL asks again), where OpenSSL's get callback finds them, in C
        when the cache's fast path serves the context. A ``single_use`` cache's session was
        popped for this connection alone: a tap between the transport and the SSL protocol
        makes the connection's own map visible to the store while OpenSSL reads this
        connection's bytes."""
        loop = self.loop
        waiter = loop.create_future()
        pending = _PendingApp()
        try:
            ssl_protocol = _sslproto.SSLProtocol(
                loop, pending, self.context, waiter, server_side=True,
                call_connection_made=False, **self.tls_kwargs)
        except TypeError as exc:
            # Not the SSLProtocol this relies on (a future asyncio?): never guess how to
            # drive it. The client is closed and told nothing; the log says why.
            self.side.log(
                logging.ERROR, "replay",
                "asyncio's SSLProtocol does not take loop.start_tls's arguments "
                "(%s); this Python's asyncio is not supported by sesscache.aio, connections "
                "are closed", exc)
            transport.abort()
            return
        buffered = isinstance(ssl_protocol, asyncio.BufferedProtocol)
        tap: Optional[_TapBase] = None
        held: Optional[Dict[bytes, bytes]] = None
        if prefetched and self.cache.single_use:
            tap = (_BufferedTap if buffered else _Tap)(ssl_protocol, self.side, prefetched)
            transport.set_protocol(tap)
        else:
            if prefetched:
                self.side.hold(prefetched)
                held = prefetched
            transport.set_protocol(ssl_protocol)
        data, source.data = source.data, b""
        try:
            ssl_protocol.connection_made(transport)
            if tap is not None:
                tap.feed(data)
            elif buffered:
                _feed_buffered(ssl_protocol, data)
            elif data:  # Python < 3.11: SSLProtocol is a plain Protocol
                ssl_protocol.data_received(bytes(data))
        except Exception as exc:  # a bug here must not leave the handshake hanging
            loop.call_exception_handler({
                "message": "replaying the ClientHello failed; connection closed",
                "exception": exc, "transport": transport})
            transport.abort()
            if held:
                self.side.handshake_done(held)
            return
        waiter.add_done_callback(
            functools.partial(self._handshake_done, transport, ssl_protocol, pending, tap, held))

    def _handshake_done(self, transport: asyncio.Transport, ssl_protocol: Any,
                        pending: "_PendingApp", tap: Optional["_TapBase"],
                        held: Optional[Dict[bytes, bytes]], waiter: "asyncio.Future") -> None:
        self.side.handshake_done(held)  # the new sessions of this handshake: written on
        if tap is not None:  # the SSL protocol reads the socket directly again
            tap.prefetched = None
            if transport.get_protocol() is tap:
                transport.set_protocol(ssl_protocol)
        exc = None if waiter.cancelled() else waiter.exception()
        tls_transport = _compat.sslproto_app_transport(ssl_protocol)  # what start_tls returns
        if waiter.cancelled() or exc is not None or tls_transport is None:
            # TLS alert, client gone, handshake timeout: nothing to serve
            transport.close()  # as start_tls does
            self.side.count("handshake_failures")
            logger.debug("TLS handshake failed: %s: %s", type(exc).__name__, exc)
            return
        try:
            protocol = self.protocol_factory()
        except Exception as exc:
            self.loop.call_exception_handler({
                "message": "protocol_factory() failed; connection closed",
                "exception": exc, "transport": tls_transport})
            tls_transport.abort()
            return
        pending.hand_over(protocol, tls_transport, self.loop)


# Bytes held for replay while a lookup runs (the hello and whatever came after it); beyond
# it the socket is not read until TLS takes over. A hello is at most MAX_CLIENT_HELLO.
_MAX_HELD = MAX_CLIENT_HELLO + 16 * 1024


class _HelloSniffer(asyncio.Protocol):
    """The first protocol of every connection: reads the ClientHello, then upgrades."""

    def __init__(self, front: _Listener) -> None:
        self._front = front
        self._scan = HelloScan()
        self._transport: Optional[asyncio.Transport] = None
        self._done = False
        self._deadline: Optional[Deadline] = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        self._deadline = self._front.hello_deadlines.add(self._late)

    def _stop_reading_hello(self) -> None:
        self._done = True
        if self._deadline is not None:
            self._deadline.cancel()

    def data_received(self, data: bytes) -> None:
        if self._done:  # read after the hello, before TLS takes over: replayed with it
            self._scan.append(data)
            if len(self._scan.data) > _MAX_HELD and self._transport is not None:
                self._transport.pause_reading()  # resumed once TLS takes over
            return
        try:
            keys = self._scan.feed(data)
        except ClientHelloError as exc:
            self._front.side.count("hellos_unparsable")
            logger.debug("not a ClientHello, handing it to OpenSSL as is: %s", exc)
            self._finish(None)
            return
        if keys is not None:
            self._front.side.count("hellos")
            self._finish(keys)

    def eof_received(self) -> bool:
        # The client stopped sending before its hello was complete: there is no handshake
        # to have. Returning False lets the transport close.
        self._stop_reading_hello()
        return False

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        self._stop_reading_hello()

    def _late(self) -> None:
        if self._done or self._transport is None or self._transport.is_closing():
            return
        self._front.side.count("hellos_late")
        self._front.side.log(
            logging.INFO, "hello-late",
            "a client did not finish its ClientHello within hello_timeout=%.1fs; "
            "it gets a full handshake", self._front.hello_timeout)
        self._finish(None)

    def _finish(self, keys: Optional[Tuple[bytes, ...]]) -> None:
        self._stop_reading_hello()
        transport = self._transport
        assert transport is not None
        self._front.upgrade(transport, self._scan, keys)


class _TapBase:
    """Forwards the transport's calls to the SSL protocol, with the connection's prefetch map
    set for the store meanwhile (OpenSSL's get callback runs inside those calls)."""

    def __init__(self, inner, side: ServerSide, prefetched: Dict[bytes, bytes]) -> None:
        self.inner = inner
        self.side = side
        self.prefetched: Optional[Dict[bytes, bytes]] = prefetched

    def connection_made(self, transport) -> None:  # pragma: no cover - never called
        self.inner.connection_made(transport)

    def connection_lost(self, exc) -> None:
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    def eof_received(self):
        with self.side.connection(self.prefetched):
            return self.inner.eof_received()


class _BufferedTap(_TapBase, asyncio.BufferedProtocol):
    def get_buffer(self, sizehint: int):
        return self.inner.get_buffer(sizehint)

    def buffer_updated(self, nbytes: int) -> None:
        with self.side.connection(self.prefetched):
            self.inner.buffer_updated(nbytes)

    def feed(self, data: bytes) -> None:
        _feed_buffered(self, data)


class _Tap(_TapBase, asyncio.Protocol):
    def data_received(self, data: bytes) -> None:
        with self.side.connection(self.prefetched):
            self.inner.data_received(data)

    def feed(self, data: bytes) -> None:
        if data:
            self.data_received(bytes(data))


class _PendingApp(asyncio.Protocol):
    """The application's stand-in during the handshake: the SSL protocol never calls
    ``connection_made`` and may deliver data before it returns. Everything is held and handed
    to the real protocol, in order, after its ``connection_made``."""

    def __init__(self) -> None:
        self._data: list = []
        self._eof = False
        self._lost: Optional[tuple] = None
        self._writing_paused = False

    def data_received(self, data: bytes) -> None:
        self._data.append(bytes(data))

    def eof_received(self) -> None:
        self._eof = True

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        self._lost = (exc,)

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False

    def hand_over(self, protocol: asyncio.BaseProtocol, transport: asyncio.Transport,
                  loop: asyncio.AbstractEventLoop) -> None:
        transport.set_protocol(protocol)
        try:
            protocol.connection_made(transport)
            if self._writing_paused:
                protocol.pause_writing()
            for chunk in self._data:
                if isinstance(protocol, asyncio.BufferedProtocol):
                    _feed_buffered(protocol, chunk)
                else:
                    protocol.data_received(chunk)  # type: ignore[attr-defined]
            self._data = []
            if self._eof:
                protocol.eof_received()  # type: ignore[attr-defined]
            if self._lost is not None:
                protocol.connection_lost(self._lost[0])
        except Exception as exc:
            loop.call_exception_handler({
                "message": "the protocol failed while taking over the connection",
                "exception": exc, "protocol": protocol, "transport": transport})
            transport.abort()


def _feed_buffered(protocol: asyncio.BufferedProtocol, data: bytes) -> None:
    view = memoryview(data)
    while view:
        buffer = protocol.get_buffer(len(view))
        size = min(len(buffer), len(view))
        if not size:
            raise RuntimeError("get_buffer() returned an empty buffer")
        buffer[:size] = view[:size]
        view = view[size:]
        protocol.buffer_updated(size)
