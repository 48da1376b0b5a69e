"""The asyncio servers of :mod:`sesscache.aio`: read the ClientHello, await the lookup, then
hand the connection (hello replayed) to TLS with ``loop.start_tls``."""
from __future__ import annotations

import asyncio
import asyncio.sslproto as _sslproto
import logging
import ssl as _ssl
from typing import Any, Callable, Dict, Optional, Tuple

from .._hello_scan import HelloScan
from ..cache import SessionCache
from ..clienthello import ClientHelloError
from ..errors import ConfigurationError

from .prefetch import PrefetchingStore, _check_seconds

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
    is upgraded with ``loop.start_tls(..., ssl)``. ``protocol_factory()`` is called after the
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
            "SessionCache(PrefetchingStore(AsyncRedisStore(url))) (or around MemoryStore(), "
            "SQLiteStore(path))")
    for name in ("ssl_handshake_timeout", "ssl_shutdown_timeout", "server_hostname"):
        if name in kwds:  # pragma: no cover - they are named parameters here
            raise ConfigurationError(f"{name} is not a create_server argument here")
    _check_seconds("hello_timeout", hello_timeout, 3600)
    sid_ctx = _attached_session_id_context(cache, ssl, session_id_context, internal_cache)
    store.bind(loop)
    tls_kwargs: Dict[str, Any] = {}
    if ssl_handshake_timeout is not None:
        tls_kwargs["ssl_handshake_timeout"] = ssl_handshake_timeout
    if ssl_shutdown_timeout is not None:
        tls_kwargs["ssl_shutdown_timeout"] = ssl_shutdown_timeout
    front = _Front(loop, protocol_factory, ssl, cache, store, sid_ctx, hello_timeout, tls_kwargs)
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


class _Front:
    """What every connection of one server shares."""

    def __init__(self, loop, protocol_factory, context, cache, store, sid_ctx, hello_timeout,
                 tls_kwargs) -> None:
        self.loop = loop
        self.protocol_factory = protocol_factory
        self.context = context
        self.cache = cache
        self.store: PrefetchingStore = store
        self.sid_ctx = sid_ctx
        self.hello_timeout = hello_timeout
        self.tls_kwargs = tls_kwargs
        self.tasks: set = set()
        # Every store key of this server starts with it (SessionCache.key_for of an empty id).
        self.key_prefix = SessionCache.key_for(sid_ctx, b"")

    def upgrade(self, transport: asyncio.Transport, source: HelloScan,
                keys: Optional[Tuple[bytes, ...]]) -> None:
        """Start the connection's upgrade. A lookup that needs no waiting (an inline store,
        nothing to look up) is done right here; only the handshake itself runs in a task."""
        store = self.store
        prefetched: Dict[bytes, bytes] = {}
        lookup: Optional[list] = None
        if keys:
            prefix = self.key_prefix
            lookup = [prefix + key for key in keys]
            if store._inline:
                prefetched = store._prefetch_inline(lookup, self.cache.single_use)
                lookup = None
        task = self.loop.create_task(self._upgrade(transport, source, lookup, prefetched))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _upgrade(self, transport: asyncio.Transport, source: HelloScan, lookup: Optional[list],
                       prefetched: Dict[bytes, bytes]) -> None:
        try:
            if lookup is not None:
                prefetched = await self.store.prefetch(lookup, pop=self.cache.single_use)
            if transport.is_closing():
                return
            pending = _PendingApp()
            replay = _Replay(transport, source, self.store, prefetched)
            replay.install()
            try:
                tls_transport = await self.loop.start_tls(
                    transport, pending, self.context, server_side=True, **self.tls_kwargs)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # TLS alert, client gone, handshake timeout: nothing to serve
                self.store._count("handshake_failures")
                logger.debug("sesscache.aio: TLS handshake failed: %s: %s", type(exc).__name__, exc)
                return
            finally:
                replay.remove()
        except asyncio.CancelledError:  # the loop is shutting down
            transport.abort()
            raise
        try:
            protocol = self.protocol_factory()
        except Exception as exc:
            self.loop.call_exception_handler({
                "message": "sesscache.aio: protocol_factory() failed; connection closed",
                "exception": exc, "transport": tls_transport})
            tls_transport.abort()
            return
        pending.hand_over(protocol, tls_transport, self.loop)


class _HelloSniffer(asyncio.Protocol):
    """The first protocol of every connection: reads the ClientHello, then upgrades."""

    def __init__(self, front: _Front) -> None:
        self._front = front
        self._scan = HelloScan()
        self._transport: Optional[asyncio.Transport] = None
        self._timer: Optional[asyncio.TimerHandle] = None
        self._done = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        self._timer = self._front.loop.call_later(self._front.hello_timeout, self._late)

    def data_received(self, data: bytes) -> None:
        if self._done:  # read in the same turn as the end of the hello: replayed with it
            self._scan.append(data)
            return
        try:
            keys = self._scan.feed(data)
        except ClientHelloError as exc:
            self._front.store._count("hellos_unparsable")
            logger.debug("sesscache.aio: not a ClientHello, handing it to OpenSSL as is: %s", exc)
            self._finish(None)
            return
        if keys is not None:
            self._front.store._count("hellos")
            self._finish(keys)

    def eof_received(self) -> bool:
        # The client stopped sending before its hello was complete: there is no handshake
        # to have. Returning False lets the transport close.
        if self._timer is not None:
            self._timer.cancel()
        return False

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        if self._timer is not None:
            self._timer.cancel()

    def _late(self) -> None:
        self._timer = None
        if self._done or self._transport is None or self._transport.is_closing():
            return
        self._front.store._count("hellos_late")
        self._front.store._burst.log(
            logging.INFO, "hello-late",
            "sesscache.aio: a client did not finish its ClientHello within hello_timeout=%.1fs; "
            "it gets a full handshake", self._front.hello_timeout)
        self._finish(None)

    def _finish(self, keys: Optional[Tuple[bytes, ...]]) -> None:
        self._done = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        transport = self._transport
        assert transport is not None
        transport.pause_reading()
        self._front.upgrade(transport, self._scan, keys)


class _Replay:
    """Gives the bytes read so far to the TLS protocol that ``start_tls`` made, exactly once,
    before the socket is read again; and makes the connection's prefetch map visible to the
    store while that protocol handles this connection's bytes.

    ``loop.start_tls`` pauses reading, sets its SSL protocol on the transport, then schedules
    ``ssl_protocol.connection_made`` (which starts the handshake) followed by
    ``transport.resume_reading``. The ``resume_reading`` it schedules is looked up on the
    transport when ``start_tls`` runs, so an instance attribute set just before takes its
    place: it runs right after ``connection_made``, when the protocol is ready for data and
    before any further byte is read, replays, and then really resumes reading.
    """

    def __init__(self, transport: asyncio.Transport, source: HelloScan, store: PrefetchingStore,
                 prefetched: Dict[bytes, bytes]) -> None:
        self.transport = transport
        self.source: Optional[HelloScan] = source  # its .data: every byte read so far
        self.store = store
        self.prefetched = prefetched
        self.tap: Optional[asyncio.BaseProtocol] = None

    def install(self) -> None:
        self.transport.resume_reading = self._resume  # type: ignore[method-assign]

    def _resume(self) -> None:
        transport = self.transport
        del transport.resume_reading  # the class's method again
        ssl_protocol = transport.get_protocol()
        if not isinstance(ssl_protocol, _sslproto.SSLProtocol):
            # Not the sequence this relies on (a future asyncio?): never guess where the
            # bytes go. The client is closed and told nothing; the log says why.
            self.store._burst.log(
                logging.ERROR, "replay",
                "sesscache.aio: start_tls put a %s on the transport, not asyncio's SSLProtocol; "
                "this Python's asyncio is not supported by sesscache.aio, connections are closed",
                type(ssl_protocol).__name__)
            transport.abort()
            return
        buffered = isinstance(ssl_protocol, asyncio.BufferedProtocol)
        if not self.prefetched:
            # Nothing prefetched: the store has nothing to find in a map, so the SSL protocol
            # gets the bytes and the socket directly, without a tap in between.
            tap: Any = _Untapped(ssl_protocol, buffered)
        elif buffered:
            tap = _BufferedTap(ssl_protocol, self.store, self.prefetched)
        else:  # Python < 3.11: SSLProtocol is a plain Protocol
            tap = _Tap(ssl_protocol, self.store, self.prefetched)
        if not isinstance(tap, _Untapped):
            self.tap = tap
            transport.set_protocol(tap)
        assert self.source is not None
        data, self.source = self.source.data, None
        try:
            tap.feed(data)
        except Exception as exc:  # a bug here must not leave the handshake hanging
            asyncio.get_running_loop().call_exception_handler({
                "message": "sesscache.aio: replaying the ClientHello failed; connection closed",
                "exception": exc, "transport": transport})
            transport.abort()
            return
        transport.resume_reading()

    def remove(self) -> None:
        """After the handshake: the SSL protocol reads the socket directly again and the
        prefetched sessions are dropped."""
        vars(self.transport).pop("resume_reading", None)
        tap = self.tap
        if tap is not None:
            tap.prefetched = None  # type: ignore[attr-defined]
            if self.transport.get_protocol() is tap:
                self.transport.set_protocol(tap.inner)  # type: ignore[attr-defined]
        self.prefetched = {}


class _Untapped:
    """Replays into the SSL protocol itself."""

    __slots__ = ("inner", "buffered")

    def __init__(self, inner, buffered: bool) -> None:
        self.inner = inner
        self.buffered = buffered

    def feed(self, data) -> None:
        if self.buffered:
            _feed_buffered(self.inner, data)
        elif data:
            self.inner.data_received(bytes(data))


class _TapBase:
    """Forwards the transport's calls to the SSL protocol, with the connection's prefetch map
    set for the store meanwhile (OpenSSL's get callback runs inside those calls)."""

    def __init__(self, inner, store: PrefetchingStore, prefetched: Dict[bytes, bytes]) -> None:
        self.inner = inner
        self.store = store
        self.prefetched: Optional[Dict[bytes, bytes]] = prefetched

    def _enter(self):
        serving = self.store._serving
        previous = getattr(serving, "prefetched", None)
        serving.prefetched = self.prefetched
        return previous

    def connection_made(self, transport) -> None:  # pragma: no cover - never called
        self.inner.connection_made(transport)

    def connection_lost(self, exc) -> None:
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    def eof_received(self):
        previous = self._enter()
        try:
            return self.inner.eof_received()
        finally:
            self.store._serving.prefetched = previous


class _BufferedTap(_TapBase, asyncio.BufferedProtocol):
    def get_buffer(self, sizehint: int):
        return self.inner.get_buffer(sizehint)

    def buffer_updated(self, nbytes: int) -> None:
        previous = self._enter()
        try:
            self.inner.buffer_updated(nbytes)
        finally:
            self.store._serving.prefetched = previous

    def feed(self, data: bytes) -> None:
        _feed_buffered(self, data)


class _Tap(_TapBase, asyncio.Protocol):
    def data_received(self, data: bytes) -> None:
        previous = self._enter()
        try:
            self.inner.data_received(data)
        finally:
            self.store._serving.prefetched = previous

    def feed(self, data: bytes) -> None:
        if data:
            self.data_received(bytes(data))


class _PendingApp(asyncio.Protocol):
    """The application's stand-in during the handshake: ``start_tls`` never calls
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
                "message": "sesscache.aio: the protocol failed while taking over the connection",
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
