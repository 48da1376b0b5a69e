"""HTTPS from plain asyncio, sessions in Redis, looked up without ever blocking the event loop.

OpenSSL asks for a session synchronously, in the middle of the handshake. Attached to a normal
``asyncio.start_server(..., ssl=ctx)``, a cache over Redis would make that request a network
round trip on the event loop's thread, during which no other connection of the server moves.
``sesscache.aio.start_server`` reads each client's ClientHello first, awaits the lookup in Redis
(``AsyncRedisStore``, redis.asyncio) with a timeout, and only then hands the connection, hello
included, to OpenSSL, which finds the session already fetched.

Two HTTPS servers, A and B, run here on one event loop (think: two hosts behind a load
balancer); they share nothing but a private Redis and a sealing key. A client (the standard
library, in a thread) gets a page from A, then from B offering A's session: B resumes it from
Redis. Then another client gets a page from A, Redis is frozen (SIGSTOP), and that client
goes to B: B answers anyway, with a full handshake once the 50 ms lookup timeout passes, while
a ticker task shows that the event loop never stalled.

Everything is local and thrown away at the end: a private redis-server on a unix socket in a
temporary directory, certificates made with trustme, servers on 127.0.0.1.

Run it from a checkout (about a second):

    apt-get install redis-server    # or: brew install redis (it needs the redis-server binary)
    pip install -e '.[test]'        # or: pip install 'sesscache[redis,seal]' trustme
    python examples/asyncio_http_server.py

Without redis-server it says how to install it and exits with status 2. It prints::

    GET from A, no session              : 200 hello from A (full handshake)
    GET from B, A's session             : 200 hello from B (resumed)
    GET from A, another client          : 200 hello from A (full handshake)
    GET from B, its session, Redis frozen: 200 hello from B (full handshake), in 60 ms
    event loop: longest stall 3 ms while Redis was frozen
    store B: hellos=2 lookups=2 found=1 lookup_timeouts=1 prefetch_hits=1 writes=3
"""
from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from typing import Optional, Tuple

try:
    import redis  # noqa: F401  (AsyncRedisStore's client library, redis.asyncio)
    import trustme
except ImportError as exc:
    print(f"this example needs the redis and trustme packages ({exc}): pip install redis trustme",
          file=sys.stderr)
    sys.exit(2)

from sesscache import SessionCache
from sesscache.aio import PrefetchingStore, start_server
from sesscache.sealing import generate_key
from sesscache.stores import AsyncRedisStore

# Every server of the fleet uses the same session id context: it is part of every key in Redis.
SERVICE = b"www.example:443"


# --- the HTTP server -------------------------------------------------------------------------


def make_handler(name: str):
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """A minimal HTTP/1.1 server: one request per connection, then close."""
        try:
            request = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
            method, path, _ = request.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
            reused = writer.get_extra_info("ssl_object").session_reused
            body = f"hello from {name} ({'resumed' if reused else 'full handshake'})\n".encode()
            status = "200 OK" if (method, path) == ("GET", "/") else "404 Not Found"
            writer.write(f"HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: "
                         f"{len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
            await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError, ConnectionError):
            pass
        finally:
            writer.close()  # sends close_notify: the session stays resumable

    return handle


async def serve(name: str, cert_path: str, redis_url: str, key: bytes):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert_path)
    # No session tickets: with tickets, a TLS 1.3 client carries its session encrypted under a
    # key only this server knows, and no cache is asked. Without them, TLS 1.3 hands out
    # "stateful" tickets holding a session id, which is what the cache looks up.
    ctx.options |= ssl.OP_NO_TICKET
    # PrefetchingStore is the bridge: OpenSSL's synchronous callback reads what the lookup
    # fetched for this connection, and new sessions go to Redis in the background.
    # lookup_timeout: how long a handshake may wait for Redis before it goes on as a full one.
    # The Redis client's own timeout (for the background writes) is longer: the lookup's is
    # the one a waiting handshake sees.
    store = PrefetchingStore(AsyncRedisStore(redis_url, timeout=0.5), lookup_timeout=0.05)
    cache = SessionCache(store, seal_keys=[key], lifetime=300)
    server = await start_server(make_handler(name), "127.0.0.1", 0, ssl=ctx, cache=cache,
                                session_id_context=SERVICE)
    return server, store


# --- the client (blocking, in a thread) ----------------------------------------------------------


def get(port: int, ctx: ssl.SSLContext, session: Optional[ssl.SSLSession]) -> Tuple[str, ssl.SSLSession, float]:
    """GET / over a new connection offering ``session``: (status and body, newest session, seconds).
    (The ssl module only offers a session on the client context that got it.)"""
    started = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost", session=session) as tls:
            tls.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            response = b""
            while True:
                chunk = tls.recv(4096)
                if not chunk:
                    break
                response += chunk
            took = time.perf_counter() - started
            head, _, body = response.partition(b"\r\n\r\n")
            status = head.split(b"\r\n")[0].split(b" ", 1)[1].split(b" ")[0].decode()
            return f"{status} {body.decode().strip()}", tls.session, took


# --- Redis -----------------------------------------------------------------------------------


def start_redis(folder: str) -> subprocess.Popen:
    """A private redis-server on a unix socket in ``folder``, no TCP port, nothing saved."""
    path = os.path.join(folder, "redis.sock")
    process = subprocess.Popen(
        ["redis-server", "--port", "0", "--unixsocket", path, "--unixsocketperm", "700",
         "--save", "", "--appendonly", "no", "--dir", folder,
         "--maxmemory", "64mb", "--maxmemory-policy", "volatile-ttl"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(200):  # up to 10 s
        try:
            with socket.socket(socket.AF_UNIX) as probe:
                probe.connect(path)
                probe.sendall(b"PING\r\n")
                if probe.recv(16).startswith(b"+PONG"):
                    return process
        except OSError:
            pass
        if process.poll() is not None:
            break
        time.sleep(0.05)
    process.kill()
    raise RuntimeError("redis-server did not start (run it by hand to see why)")


class Ticker:
    """How late the event loop wakes a task that sleeps 2 ms at a time: its longest stall."""

    def __init__(self) -> None:
        self.longest = 0.0

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            start = loop.time()
            await asyncio.sleep(0.002)
            self.longest = max(self.longest, loop.time() - start - 0.002)


async def demo(folder: str, redis_server: subprocess.Popen) -> int:
    ca = trustme.CA()
    ca_path, cert_path = os.path.join(folder, "ca.pem"), os.path.join(folder, "server.pem")
    ca.cert_pem.write_to_path(ca_path)
    ca.issue_cert("localhost").private_key_and_cert_chain_pem.write_to_path(cert_path)
    redis_url = "unix://" + os.path.join(folder, "redis.sock")
    key = generate_key()  # shared by the fleet, kept out of Redis (see fleet_redis.py)

    server_a, store_a = await serve("A", cert_path, redis_url, key)
    server_b, store_b = await serve("B", cert_path, redis_url, key)
    port_a = server_a.sockets[0].getsockname()[1]
    port_b = server_b.sockets[0].getsockname()[1]
    client = ssl.create_default_context(cafile=ca_path)
    try:
        page, session, _ = await asyncio.to_thread(get, port_a, client, None)
        print(f"GET from A, no session              : {page}")
        await store_a.flush(5)  # A's background write to Redis has landed
        page, _, _ = await asyncio.to_thread(get, port_b, client, session)
        print(f"GET from B, A's session             : {page}")

        # Another client, whose session B has never seen (B's own OpenSSL cache would
        # resume the first one without asking Redis).
        other = ssl.create_default_context(cafile=ca_path)
        page, session, _ = await asyncio.to_thread(get, port_a, other, None)
        print(f"GET from A, another client          : {page}")
        await store_a.flush(5)
        ticker = Ticker()
        task = asyncio.get_running_loop().create_task(ticker.run())
        os.kill(redis_server.pid, signal.SIGSTOP)  # connections stay open, nothing answers
        try:
            page, _, took = await asyncio.to_thread(get, port_b, other, session)
            await asyncio.sleep(0.05)
        finally:
            os.kill(redis_server.pid, signal.SIGCONT)
            task.cancel()
        print(f"GET from B, its session, Redis frozen: {page}, in {took * 1e3:.0f} ms")
        print(f"event loop: longest stall {ticker.longest * 1e3:.0f} ms while Redis was frozen")
    finally:
        for server in (server_a, server_b):
            server.close()
            await server.wait_closed()
        # Let background writes land (or fail) and close the Redis connections.
        await store_a.aclose(timeout=2)
        await store_b.aclose(timeout=2)
    counters = {k: v for k, v in store_b.stats.as_dict().items() if v}
    # lookups: hellos looked up in Redis; found: sessions fetched; lookup_timeouts: Redis
    # slower than lookup_timeout (a full handshake, never a failed one); prefetch_hits: OpenSSL
    # asked and got the fetched session; writes: new sessions stored in the background.
    print("store B: " + " ".join(f"{k}={v}" for k, v in counters.items()))
    return 0


def main() -> int:
    if shutil.which("redis-server") is None:
        print("this example starts a private redis-server, which is not installed:\n"
              "    apt-get install redis-server     (Debian, Ubuntu)\n"
              "    brew install redis               (macOS)", file=sys.stderr)
        return 2
    # sesscache never prints; it logs store faults once per burst. Freezing Redis is one.
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    with tempfile.TemporaryDirectory(prefix="sesscache-aio-http-") as folder:
        redis_server = start_redis(folder)
        try:
            return asyncio.run(asyncio.wait_for(demo(folder, redis_server), timeout=60))
        finally:
            redis_server.terminate()
            try:
                redis_server.wait(5)
            except subprocess.TimeoutExpired:
                redis_server.kill()
                redis_server.wait()


if __name__ == "__main__":
    sys.exit(main())
