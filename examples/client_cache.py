"""A TLS client that still resumes after it restarts: ClientSessionCache over an SQLite file.

A client resumes by offering the server a session it kept from an earlier connection. OpenSSL
(and pyOpenSSL) keep those sessions in memory only, so a client that restarts (a cron job, a
CLI tool, a worker recycled every N requests) starts every time with a full handshake.
``ClientSessionCache(SQLiteStore(path))`` keeps them in a file, per (host, port, server name),
and offers the right one before each handshake.

This example starts a TLS server on 127.0.0.1 (stdlib ssl, in a thread, no sesscache: any
server that resumes sessions will do), then runs a pyOpenSSL client three times, each time in
a new process that shares nothing with the previous one but the SQLite file. The server says
whether each handshake resumed. Certificates are made on the fly with trustme.

Run it from a checkout (about a second):

    pip install -e '.[test]'        # or: pip install sesscache pyOpenSSL trustme
    python examples/client_cache.py

It prints::

    client run 1 (new process): offered a stored session: no  -> server: full handshake
    client run 2 (new process): offered a stored session: yes -> server: resumed
    client run 3 (new process): offered a stored session: yes -> server: resumed
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import socket
import ssl
import sys
import tempfile
import threading
from typing import List

try:
    import trustme
    from OpenSSL import SSL
except ImportError as exc:
    print(f"this example needs pyOpenSSL and trustme ({exc}): pip install pyOpenSSL trustme",
          file=sys.stderr)
    sys.exit(2)

from sesscache import ClientSessionCache, SQLiteStore

RUNS = 3


# --- the server: any TLS server that resumes ----------------------------------------------


def serve(listener: socket.socket, ctx: ssl.SSLContext, connections: int, errors: List) -> None:
    """Answer ``connections`` clients with whether their handshake resumed, then return."""
    for _ in range(connections):
        try:
            sock, _ = listener.accept()
        except OSError:  # timed out, or closed at the end
            return
        sock.settimeout(5)
        try:
            with ctx.wrap_socket(sock, server_side=True) as tls:
                tls.recv(1024)
                tls.sendall(b"resumed\n" if tls.session_reused else b"full handshake\n")
                try:
                    tls.unwrap()  # close_notify, so OpenSSL keeps the session resumable
                except (OSError, ssl.SSLError):
                    pass
        except (OSError, ssl.SSLError) as exc:
            errors.append(exc)


# --- the client: a new process each run ----------------------------------------------------


def check_name(conn: SSL.Connection, name: str) -> None:
    """pyOpenSSL verifies the certificate chain but not the name in it: check it (a resumed
    session remembers the server's certificate, so this works on every connection)."""
    from cryptography import x509

    cert = conn.get_peer_certificate().to_cryptography()
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    if name not in names.get_values_for_type(x509.DNSName):
        raise SSL.Error(f"the server's certificate is not for {name}")


def client(port: int, ca_path: str, db_path: str, pipe) -> None:
    logging.basicConfig(level=logging.WARNING, format="client %(levelname)s %(name)s: %(message)s")
    ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
    ctx.load_verify_locations(ca_path)
    ctx.set_verify(SSL.VERIFY_PEER)
    # The file holds each session's secrets: keep it readable by this user only, or pass
    # seal_keys=[key] (sesscache.sealing.generate_key()) to encrypt what is stored.
    cache = ClientSessionCache(SQLiteStore(db_path), lifetime=3600)
    cache.attach(ctx)  # before the first connection: from now on new sessions are stored

    # A blocking socket: pyOpenSSL treats a socket with a timeout as non-blocking. The parent
    # bounds the whole run instead.
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.settimeout(None)
        conn = SSL.Connection(ctx, sock)
        conn.set_connect_state()
        # Sets the SNI name and offers the session stored for (localhost, port, localhost).
        offered = cache.prepare(conn, "localhost", port)
        conn.do_handshake()
        check_name(conn, "localhost")
        conn.sendall(b"hello\n")
        # TLS 1.3 sends the session after the handshake; reading the reply reads it too,
        # and ClientSessionCache stores it as it arrives.
        answer = conn.recv(1024).decode().strip()
        try:
            conn.shutdown()
        except SSL.Error:
            pass
    pipe.send({"offered": offered, "answer": answer, "stored": cache.stored, "errors": cache.errors})


def main() -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    with tempfile.TemporaryDirectory(prefix="sesscache-client-") as folder:
        ca = trustme.CA()
        ca_path = os.path.join(folder, "ca.pem")
        cert_path = os.path.join(folder, "server.pem")
        ca.cert_pem.write_to_path(ca_path)
        ca.issue_cert("localhost").private_key_and_cert_chain_pem.write_to_path(cert_path)

        server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server_ctx.load_cert_chain(cert_path)
        listener = socket.create_server(("127.0.0.1", 0))
        listener.settimeout(30)
        port = listener.getsockname()[1]
        errors: List = []
        thread = threading.Thread(target=serve, args=(listener, server_ctx, RUNS, errors), daemon=True)
        thread.start()

        db_path = os.path.join(folder, "client-sessions.db")
        # "spawn": every run starts from a fresh interpreter, as a restarted client would.
        spawn = multiprocessing.get_context("spawn")
        results = []
        try:
            for run in range(1, RUNS + 1):
                parent_end, child_end = spawn.Pipe()
                process = spawn.Process(target=client, args=(port, ca_path, db_path, child_end))
                process.start()
                process.join(30)
                if process.is_alive():
                    process.kill()
                    process.join()
                if process.exitcode != 0 or not parent_end.poll():
                    print(f"client run {run} failed (exit status {process.exitcode})", file=sys.stderr)
                    return 1
                result = parent_end.recv()
                results.append(result)
                print(f"client run {run} (new process): offered a stored session: "
                      f"{'yes' if result['offered'] else 'no ':3} -> server: {result['answer']}")
        finally:
            listener.close()
            thread.join(10)
    if errors or any(r["errors"] for r in results):
        print(f"errors: server {errors}, client {[r['errors'] for r in results]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
