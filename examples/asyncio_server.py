"""An asyncio TLS server (stdlib ssl) with a SessionCache, and a client that reconnects.

``asyncio.start_server(..., ssl=ctx)`` serves TLS with the standard library's ``ssl`` module.
One line, ``cache.attach(ctx)``, puts a SessionCache behind that context: OpenSSL asks it for
sessions during each handshake, on the event loop's thread. Here the cache is the only one the
server uses (``internal_cache=False``), so every resumption shows in ``cache.stats``; in a
single process that buys counters you can export, a lifetime counted from the full handshake,
an SNI check and a bounded LRU, and switching to ``SQLiteStore(path)`` later shares the
sessions with other processes without touching the server (a store on the network wants
``sesscache.aio``, which looks sessions up without blocking the event loop).

A stdlib client (in a thread: asyncio's own streams cannot offer a saved session) makes one
full handshake, then reconnects 100 times, each time offering the newest session it got, as
browsers do. Certificates are made on the fly with trustme; everything stays on 127.0.0.1.

Run it from a checkout (about a second):

    pip install -e '.[test]'        # or: pip install sesscache trustme
    python examples/asyncio_server.py

It prints::

    resumed 100/100 reconnections (100%), 223 handshakes/s
    cache.stats: hits=100 misses=0 stores=102 removes=0 evictions=0 expired=0 rejected=0 ...

(The client shares this process, and its GIL, with the server: handshakes/s is not a benchmark.)
"""
from __future__ import annotations

import asyncio
import logging
import os
import socket
import ssl
import sys
import tempfile
import time
from typing import Dict

try:
    import trustme
except ImportError:
    print("this example needs trustme to make its throwaway certificates: pip install trustme",
          file=sys.stderr)
    sys.exit(2)

from sesscache import MemoryStore, SessionCache

RECONNECTIONS = 100


def make_certificates(folder: str):
    """A throwaway CA and a certificate for localhost; returns (CA file, cert+key file)."""
    ca = trustme.CA()
    ca_path = os.path.join(folder, "ca.pem")
    server_path = os.path.join(folder, "server.pem")
    ca.cert_pem.write_to_path(ca_path)
    ca.issue_cert("localhost").private_key_and_cert_chain_pem.write_to_path(server_path)
    return ca_path, server_path


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        line = await asyncio.wait_for(reader.readline(), timeout=5)
        writer.write(line)
        await writer.drain()
    finally:
        writer.close()  # asyncio sends close_notify, so the session stays resumable
        try:
            await writer.wait_closed()
        except (ConnectionError, ssl.SSLError):
            pass  # the client may leave before the TLS shutdown ends; its session is kept


def client(port: int, ca_path: str) -> Dict:
    """Blocking client: one full handshake, then RECONNECTIONS resumption attempts."""
    ctx = ssl.create_default_context(cafile=ca_path)
    session = None
    resumed = 0
    started = time.perf_counter()
    for attempt in range(RECONNECTIONS + 1):
        if attempt == 1:
            started = time.perf_counter()  # time the reconnections only
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with ctx.wrap_socket(raw, server_hostname="localhost", session=session) as tls:
                tls.sendall(b"hello\n")
                if tls.recv(1024) != b"hello\n":
                    raise RuntimeError("the server did not echo")
                if attempt:
                    resumed += tls.session_reused
                # TLS 1.3 hands out a fresh session after every handshake; it arrives after
                # the handshake itself, so read it once the reply is in.
                session = tls.session
    elapsed = time.perf_counter() - started
    return {"resumed": resumed, "rate": RECONNECTIONS / elapsed}


async def main() -> int:
    # sesscache never prints; it logs store faults (at most once per burst) with logging.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    with tempfile.TemporaryDirectory(prefix="sesscache-asyncio-") as folder:
        ca_path, cert_path = make_certificates(folder)

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert_path)
        # No session tickets: with tickets (the default) the client carries its session,
        # encrypted with a key only this process knows, and no cache is ever asked. Without
        # them TLS 1.3 sends "stateful" tickets holding a session id the cache looks up.
        ctx.options |= ssl.OP_NO_TICKET

        cache = SessionCache(MemoryStore(max_sessions=10_000), lifetime=300)
        # The session id context names the service; every process sharing a store must use
        # the same one (irrelevant with a MemoryStore, essential once the store is shared).
        # Attach before the first connection: the callbacks then see every session.
        cache.attach(ctx, session_id_context=b"asyncio-demo:443", internal_cache=False)
        # The cache's callbacks run inside the handshake, on the event loop thread, so a
        # store call blocks the loop while it runs: microseconds for MemoryStore and
        # SQLiteStore, a network round trip for Redis. For a store on the network, use
        # sesscache.aio (PrefetchingStore and its start_server), which looks the session
        # up with await before OpenSSL sees the ClientHello.

        server = await asyncio.start_server(echo, "127.0.0.1", 0, ssl=ctx)
        port = server.sockets[0].getsockname()[1]
        async with server:
            result = await asyncio.wait_for(asyncio.to_thread(client, port, ca_path), timeout=60)

    resumed = result["resumed"]
    print(f"resumed {resumed}/{RECONNECTIONS} reconnections ({100 * resumed / RECONNECTIONS:.0f}%), "
          f"{result['rate']:.0f} handshakes/s")
    # hits: resumptions the cache answered; misses: sessions it did not have; stores: sessions
    # written (TLS 1.3 gives 2 after a full handshake, 1 after each resumption); removes:
    # OpenSSL dropping a session it held (counted only); errors: store faults, each one a full
    # handshake instead of a resumption, never a failed connection.
    print("cache.stats: " + " ".join(f"{k}={v}" for k, v in cache.stats.as_dict().items()))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
