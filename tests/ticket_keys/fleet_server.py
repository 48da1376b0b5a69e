"""A TLS server of N worker processes sharing one listening socket, as gunicorn or
uvicorn run them, each worker with its own context and its own TicketKeys over a shared
store (default tickets: nothing else configured). Answers each connection with one line:
``<worker pid> <resumed 0|1>``.

    python fleet_server.py STORE_URL|none CERTFILE WORKERS STACK [TLS_VERSION]

Prints the port, then serves until SIGTERM.
"""
from __future__ import annotations

import os
import signal
import socket
import ssl
import sys


def make_context(stack: str, certfile: str, version: str):
    import sesscache

    if stack == "stdlib":
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(certfile)
        if version != "default":
            ctx.minimum_version = ctx.maximum_version = getattr(ssl.TLSVersion, version.replace(".", "_"))
        return ctx
    from OpenSSL import SSL

    ctx = SSL.Context(SSL.TLS_SERVER_METHOD)
    ctx.use_certificate_chain_file(certfile)
    ctx.use_privatekey_file(certfile)
    if version != "default":
        number = {"TLSv1.2": SSL.TLS1_2_VERSION, "TLSv1.3": SSL.TLS1_3_VERSION}[version]
        ctx.set_min_proto_version(number)
        ctx.set_max_proto_version(number)
    return ctx


def serve_stdlib(ctx, conn) -> None:
    with ctx.wrap_socket(conn, server_side=True) as tls:
        tls.recv(64)
        tls.sendall(f"{os.getpid()} {int(tls.session_reused)}\n".encode())
        try:
            tls.unwrap()
        except (ssl.SSLError, OSError):
            pass


def serve_pyopenssl(ctx, conn) -> None:
    import sesscache
    from OpenSSL import SSL

    conn.settimeout(None)  # pyOpenSSL treats a socket with a timeout as non-blocking
    tls = SSL.Connection(ctx, conn)
    tls.set_accept_state()
    tls.do_handshake()
    tls.recv(64)
    tls.sendall(f"{os.getpid()} {int(sesscache.session_reused(tls))}\n".encode())
    try:
        tls.shutdown()
    except SSL.Error:
        pass


def worker(listener, store_url: str, certfile: str, stack: str, version: str) -> None:
    import sesscache
    from sesscache.cli import open_store

    ctx = make_context(stack, certfile, version)
    if store_url != "none":  # "none": OpenSSL's own per-context key, for comparison
        store = getattr(sesscache, "store_from_url", open_store)(store_url)
        keys = sesscache.TicketKeys(store)  # lives as long as this worker
        keys.attach(ctx)
    serve = serve_stdlib if stack == "stdlib" else serve_pyopenssl
    while True:
        conn, _ = listener.accept()
        conn.settimeout(5)
        try:
            serve(ctx, conn)
        except Exception as exc:  # one bad connection must not end the worker
            print(f"worker {os.getpid()}: {exc!r}", file=sys.stderr, flush=True)
        finally:
            conn.close()


def main() -> None:
    store_url, certfile, workers, stack = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    version = sys.argv[5] if len(sys.argv) > 5 else "default"
    listener = socket.create_server(("127.0.0.1", 0), backlog=64)
    children = []
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:
            try:
                worker(listener, store_url, certfile, stack, version)
            finally:
                os._exit(1)
        children.append(pid)

    def stop(*_):
        for pid in children:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    print(listener.getsockname()[1], flush=True)
    while True:
        signal.pause()


if __name__ == "__main__":
    main()
