"""An aiohttp application served through sesscache.aio: sessions resumed across two servers.

aiohttp's ``web.AppRunner`` gives a protocol factory (``runner.server``) that its own sites hand
to ``loop.create_server``. :func:`sesscache.aio.create_server` takes the same factory: it reads
each client's ClientHello, looks the session up in the store without blocking the event loop,
and gives the connection to aiohttp once the TLS handshake is done, so the application sees an
ordinary HTTPS request (``request.secure``, ``request.transport.get_extra_info("ssl_object")``).

Two servers, A and B, share one store (think: two hosts behind a load balancer; here a
``MemoryStore`` in this process, with ``AsyncRedisStore`` the same code spans hosts). A client
(the standard library, in a thread) gets a page from A, then offers A's session to B, which has
never seen it and resumes it from the store; then it reconnects to B 20 times.

Run it from a checkout (about a second):

    pip install -e '.[test]'        # or: pip install 'sesscache[aiohttp]' trustme
    python examples/aiohttp_server.py

Without aiohttp it says how to install it and exits with status 2. It prints::

    GET from A, no session : 200 hello from A over TLSv1.3 (full handshake)
    GET from B, A's session: 200 hello from B over TLSv1.3 (resumed)
    B, 20 reconnections    : 20/20 resumed
    store B: hellos=21 lookups=21 found=21 prefetch_hits=21
"""
from __future__ import annotations

import asyncio
import http.client
import socket
import ssl
import sys

try:
    from aiohttp import web
except ImportError:
    print("examples/aiohttp_server.py needs aiohttp: pip install -e '.[test]' "
          "(or pip install 'sesscache[aiohttp]')", file=sys.stderr)
    sys.exit(2)
try:
    import trustme
except ImportError:
    print("examples/aiohttp_server.py needs trustme: pip install -e '.[test]'", file=sys.stderr)
    sys.exit(2)

from sesscache import MemoryStore, SessionCache
from sesscache.aio import PrefetchingStore, create_server

SID_CTX = b"aiohttp-example"


def server_context(cert: trustme.LeafCert) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert.configure_cert(ctx)  # one certificate for the fleet: a session only resumes under it
    ctx.options |= ssl.OP_NO_TICKET  # stateful tickets: the session id is what the store keys
    return ctx


async def serve(name: str, cert: trustme.LeafCert, shared: MemoryStore):
    async def hello(request: web.Request) -> web.Response:
        tls = request.transport.get_extra_info("ssl_object")
        how = "resumed" if tls.session_reused else "full handshake"
        return web.Response(text=f"hello from {name} over {tls.version()} ({how})")

    app = web.Application()
    app.router.add_get("/", hello)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    store = PrefetchingStore(shared)
    cache = SessionCache(store)
    server = await create_server(runner.server, "127.0.0.1", 0, ssl=server_context(cert), cache=cache,
                                 session_id_context=SID_CTX, internal_cache=False)
    return runner, server, store


def fetch(port: int, ctx: ssl.SSLContext, session=None):
    """GET / on a new TLS connection offering ``session``; (status, body, the connection's
    session when none was offered). The session is read once: CPython before 3.12.7 leaks an
    SSL_SESSION per read."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    with ctx.wrap_socket(raw, server_hostname="localhost", session=session) as tls:
        tls.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        response = http.client.HTTPResponse(tls)
        response.begin()
        body = response.read().decode()
        return response.status, body, (tls.session if session is None else None)


async def main() -> int:
    ca = trustme.CA()
    cert = ca.issue_cert("localhost")
    shared = MemoryStore()
    runner_a, server_a, store_a = await serve("A", cert, shared)
    runner_b, server_b, store_b = await serve("B", cert, shared)
    port_a = server_a.sockets[0].getsockname()[1]
    port_b = server_b.sockets[0].getsockname()[1]
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ca.configure_trust(client)
    try:
        status, body, session = await asyncio.to_thread(fetch, port_a, client)
        print(f"GET from A, no session : {status} {body}")
        await store_a.flush(5)
        status, body, _ = await asyncio.to_thread(fetch, port_b, client, session)
        print(f"GET from B, A's session: {status} {body}")
        resumed = 0
        for _ in range(20):
            _, body, _ = await asyncio.to_thread(fetch, port_b, client, session)
            resumed += body.endswith("(resumed)")
        print(f"B, 20 reconnections    : {resumed}/20 resumed")
        stats = store_b.stats
        print(f"store B: hellos={stats.hellos} lookups={stats.lookups} found={stats.found} "
              f"prefetch_hits={stats.prefetch_hits}")
    finally:
        for server in (server_a, server_b):
            server.close()
            await server.wait_closed()
        for runner in (runner_a, runner_b):
            await runner.cleanup()
        for store in (store_a, store_b):
            await store.aclose()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
