"""``sesscache.aio``: session lookups that never block the event loop.

OpenSSL asks for a session synchronously, from inside the handshake. In an asyncio server a
store on the network (Redis) answered from that callback freezes the whole event loop for the
round trip: measured with 50 reconnecting clients and a store answering in 5 ms, the loop
stalled 226 ms at a time and throughput fell from 880 to 179 handshakes/s. Node.js avoids it by
reading the ClientHello itself and looking the session up asynchronously before OpenSSL sees
the hello; this module does the same for asyncio::

    from sesscache import SessionCache
    from sesscache.aio import PrefetchingStore, start_server
    from sesscache.stores import AsyncRedisStore

    store = PrefetchingStore(AsyncRedisStore("redis://cache:6379/0"))
    cache = SessionCache(store)
    server = await start_server(handle, "0.0.0.0", 443, ssl=context, cache=cache)

Each connection, in order:

1. The ClientHello is read off the socket (plain TCP, no TLS yet) with a scan in C that makes
   the decisions of :class:`~sesscache.clienthello.ClientHelloReader` (its reference, which
   says why when bytes are refused) and stays linear however the client splits the hello.
2. Its lookup keys (:meth:`ClientHello.lookup_keys`: the TLS 1.2 session id or the TLS 1.3
   stateful ticket) are looked up in the store with ``await``, under a timeout. A store
   called inline (``MemoryStore``) is read at once, and a hello with nothing to look up
   (no session id, a stateless ticket) goes straight on: no task, no await.
3. A hit is held by the :class:`PrefetchingStore` for this handshake, in a C table the
   cache's fast path reads (a ``single_use`` cache's popped session goes in a map that
   belongs to this connection alone instead).
4. The connection is upgraded as ``loop.start_tls`` would (its SSL protocol, its arguments,
   its handshake timeout), without the coroutine; the bytes already read are replayed
   into the TLS protocol, and OpenSSL's synchronous get callback, through
   :class:`SessionCache`, finds the prefetched session without touching the network (in
   C: no Python runs for the lookup). It is held until the handshake is over: after a
   HelloRetryRequest OpenSSL asks for the session a second time, for the second hello.
5. New sessions are written to a local copy at once (by the cache's C fast path, which
   notes each in a journal the server drains after every handshake) and to the real store
   in the background.

**Limits** (each a keyword argument; every one ends in a full handshake, never in a dropped
client):

``MAX_CLIENT_HELLO`` (64 KiB, from :mod:`sesscache.clienthello`)
    A larger hello, or one spread over more than 128 KiB of records, is not parsed further:
    the bytes are handed to OpenSSL, which decides (and no lookup is made).
``hello_timeout`` (default 2 s, :func:`create_server`)
    Deadline for the whole ClientHello to arrive after the connection is accepted. A slower
    client is handed to OpenSSL with what it sent so far and gets a full handshake (no
    lookup); ``ssl_handshake_timeout`` (asyncio's, 60 s by default) then bounds the rest of
    the handshake, as it does for any asyncio TLS server.
``lookup_timeout`` (default 50 ms, :class:`PrefetchingStore`)
    Longest wait for the store, for all the keys of one hello together. Past it the lookup
    is abandoned (cancelled for asyncio stores) and the handshake goes on without it.
``max_lookups`` (default 100, :class:`PrefetchingStore`)
    Lookups in flight at once, counted until the store really answers (a lookup running
    in a thread counts until the thread returns, even after its timeout). Beyond it, a new
    hello gets no lookup: clients offering random session ids cannot make the server an
    amplifier that multiplies its connection rate onto the store.
``trip_after`` (default 5) and ``retry_after`` (default 1 s, :class:`PrefetchingStore`)
    A store that fails ``trip_after`` times in a row (lookups or writes timing out or
    raising) is paused: for ``retry_after`` seconds hellos get no lookup, so a client waits
    no ``lookup_timeout`` before its full handshake, and new sessions stay in the local copy
    (this process still resumes them). Then one call tries the store; its success ends the
    pause. Counted in ``store_pauses``, ``lookups_shed`` and ``writes_shed``, logged once per
    pause. ``trip_after=None`` never pauses.
Two keys per hello
    A hello names one session in practice (a session id, or one stateful TLS 1.3 ticket); only
    the first two of its lookup keys are looked up, so a hello listing many PSK identities
    buys no more store traffic than any other.
``max_pending_writes`` (default 1024, :class:`PrefetchingStore`)
    Background writes waiting or running. Beyond it a new session is kept only in the local
    copy (this process still resumes it; others do not), counted in ``writes_dropped``.
``max_concurrent_writes`` (default 32) and ``write_timeout`` (default 1 s)
    Writes running at once, and how long one may take before it counts as failed (the local
    copy then stays until the session's lifetime ends).

**Bytes that are not a ClientHello** (HTTP on the TLS port, a scanner, an SSLv2-format hello
the strict parser refuses): no lookup is made and the bytes are handed to OpenSSL unchanged,
so the server behaves exactly as a plain asyncio TLS server would: OpenSSL sends its alert (or,
if it accepts what the parser did not, completes a full handshake). The parser is never the
reason a client is refused.

**The application protocol**: as with ``loop.start_tls``, the SSL protocol does not call
``connection_made``, and data may be delivered as the handshake completes. The protocol
made by ``protocol_factory`` is created after the handshake succeeds; data, end of file or a
connection loss that arrive before it exists are held and delivered right after its
``connection_made``, in order. A client whose handshake fails never reaches the application.

**OpenSSL's internal cache** (``internal_cache=True``; ``attach``'s default in front of a store
answered in Python): sessions
this process made still resume without the store, but every hello that names a session is
looked up anyway, because that cache cannot be consulted before OpenSSL reads the hello. With
``internal_cache=False`` the store is the only cache, as nginx and Apache use a shared one.

**Event loop**: asyncio's own loops. The upgrade does what ``loop.start_tls`` does (make
``asyncio.sslproto.SSLProtocol`` with its arguments, set it on the transport, call its
``connection_made``, wait for its waiter), the same from Python 3.9 to 3.13, where this is
tested on the selector loop; the proactor loop is untested. An asyncio whose SSLProtocol
takes other arguments gets its connections closed, with the reason logged.
uvloop's transports are not supported; :func:`create_server` says so. Only ``ssl.SSLContext``
can be used, as with any asyncio server.
"""
from __future__ import annotations

from ..clienthello import MAX_CLIENT_HELLO
from .breaker import DEFAULT_RETRY_AFTER, DEFAULT_TRIP_AFTER
from .prefetch import (
    DEFAULT_LOOKUP_TIMEOUT,
    DEFAULT_MAX_CONCURRENT_WRITES,
    DEFAULT_MAX_LOOKUPS,
    DEFAULT_MAX_PENDING_WRITES,
    DEFAULT_WRITE_TIMEOUT,
    PrefetchingStore,
    PrefetchStats,
)
from .server import DEFAULT_HELLO_TIMEOUT, create_server, start_server

__all__ = [
    "PrefetchingStore",
    "PrefetchStats",
    "create_server",
    "start_server",
    "MAX_CLIENT_HELLO",
    "DEFAULT_HELLO_TIMEOUT",
    "DEFAULT_LOOKUP_TIMEOUT",
    "DEFAULT_MAX_LOOKUPS",
    "DEFAULT_MAX_PENDING_WRITES",
    "DEFAULT_MAX_CONCURRENT_WRITES",
    "DEFAULT_WRITE_TIMEOUT",
    "DEFAULT_TRIP_AFTER",
    "DEFAULT_RETRY_AFTER",
]
