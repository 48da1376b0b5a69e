"""Four pre-forked TLS worker processes: OpenSSL's per-process cache vs. one shared SQLite file.

A pre-fork server (gunicorn, uWSGI, Apache prefork...) binds one listening socket and forks
workers that all accept on it; the kernel hands each new connection to whichever worker takes
it. OpenSSL keeps resumable sessions in the memory of the process that made them, so a client
coming back usually lands on a worker that has never seen its session and pays for a full
handshake again. With 4 workers, about 1 reconnection in 4 resumes.

This example runs the same 4-worker pyOpenSSL echo server twice on 127.0.0.1:

  (a) OpenSSL's internal cache only, one per worker process;
  (b) ``SessionCache(SQLiteStore(path))``: every worker also reads and writes one SQLite file,
      so any worker can resume a session any other worker made.

A stdlib ``ssl`` client makes one full handshake, then reconnects 200 times offering that
session, and counts how often the server resumed it. It needs no network: certificates are made
on the fly with trustme, everything runs on loopback and in a temporary directory.

Run it from a checkout (a few seconds; Linux or macOS, since it forks):

    pip install -e '.[test]'        # or: pip install sesscache pyOpenSSL trustme
    python examples/prefork_sqlite.py

It prints, for each run, how many reconnections resumed and how many connections each worker
took, then the cache's counters added up over the workers::

    per-process cache (OpenSSL internal): 51/200 resumed (26%), 298 handshakes/s
        connections per worker: 52 47 51 51
    shared SQLite store (SessionCache)  : 200/200 resumed (100%), 362 handshakes/s
        connections per worker: 46 61 49 45
        SessionCache counters over all workers: hits=3, misses=0, stores=202, ...

Handshakes/s is what one client making one connection after another sees over loopback, so it
mostly measures Python. On a real network a resumption saves what a full handshake costs: the
server's certificate signature (CPU) and the certificate bytes, and with TLS 1.2 a round trip.
"""
from __future__ import annotations

import json
import logging
import os
import select
import signal
import socket
import ssl
import sys
import tempfile
import time
from typing import Callable, Dict, List, Optional, TypeVar

try:
    import trustme
    from OpenSSL import SSL
except ImportError as exc:
    print(f"this example needs pyOpenSSL and trustme ({exc}): pip install pyOpenSSL trustme",
          file=sys.stderr)
    sys.exit(2)

from sesscache import SessionCache, SQLiteStore

WORKERS = 4
RECONNECTIONS = 200
# The session id context names the service a session belongs to. OpenSSL only resumes a session
# whose id context matches the server's, and SessionCache makes it part of the store key, so two
# services sharing a file (or a Redis) never resume each other's sessions. Every worker, and
# every host that shares the store, must use the same value, or they stop sharing.
SERVICE = b"prefork-demo:443"
WORKER_SECONDS = 60  # a worker gives up after this long, whatever happens to the parent

T = TypeVar("T")


def make_certificates(folder: str):
    """A throwaway CA and a certificate for localhost; returns (CA file, cert+key file)."""
    # RSA 2048, still the most common kind of server key: a full handshake costs the server
    # an RSA signature, a resumption does not.
    ca = trustme.CA(key_type=trustme.KeyType.RSA)
    ca_path = os.path.join(folder, "ca.pem")
    server_path = os.path.join(folder, "server.pem")
    ca.cert_pem.write_to_path(ca_path)
    ca.issue_cert("localhost").private_key_and_cert_chain_pem.write_to_path(server_path)
    return ca_path, server_path


def server_context(cert_path: str) -> SSL.Context:
    ctx = SSL.Context(SSL.TLS_SERVER_METHOD)
    ctx.use_certificate_chain_file(cert_path)
    ctx.use_privatekey_file(cert_path)
    # No session tickets. With tickets (OpenSSL's default) the client carries its own session,
    # encrypted under a ticket key, and no cache is ever asked; here the workers would even
    # share that key, since it is made with the context before the fork. Servers that run
    # a shared session cache usually turn tickets off: a ticket key is one more secret every
    # server must share and rotate, and with TLS 1.2 whoever steals it can decrypt the
    # recorded traffic it protected. TLS 1.3 then hands out "stateful" tickets that only
    # carry a session id, looked up in the cache like TLS 1.2 sessions.
    ctx.set_options(SSL.OP_NO_TICKET)
    # Many clients drop the TCP connection without a TLS close_notify; OpenSSL 3 treats that
    # as an error and forgets the session. This keeps it resumable.
    ctx.set_options(SSL.OP_IGNORE_UNEXPECTED_EOF)
    return ctx


# --- the worker ------------------------------------------------------------------------------


def wait_for(sock: socket.socket, operation: Callable[[], T], timeout: float = 5.0) -> T:
    """Run a pyOpenSSL call on a non-blocking socket, waiting for the socket as OpenSSL asks.

    pyOpenSSL treats a socket with a timeout as non-blocking (it raises WantReadError instead
    of waiting), so the worker makes sockets non-blocking and waits itself, with a deadline.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            return operation()
        except SSL.WantReadError:
            readers, writers = [sock], []
        except SSL.WantWriteError:
            readers, writers = [], [sock]
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not any(select.select(readers, writers, [], remaining)):
            raise TimeoutError("the client did not answer in time")


def handle(ctx: SSL.Context, sock: socket.socket) -> None:
    """One connection: handshake, echo one line, close_notify."""
    sock.setblocking(False)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # see client()
    conn = SSL.Connection(ctx, sock)
    conn.set_accept_state()
    wait_for(sock, conn.do_handshake)
    try:
        line = wait_for(sock, lambda: conn.recv(1024))
        wait_for(sock, lambda: conn.sendall(line))
        conn.shutdown()  # close_notify: a server that closes without it loses the session
    except SSL.Error:
        pass


def stopped(stop_fd: int) -> bool:
    """True once the parent has closed its end of the stop pipe."""
    return bool(select.select([stop_fd], [], [], 0)[0])


def worker(listener: socket.socket, ctx: SSL.Context, stop_fd: int) -> int:
    """Serve connections until the parent says stop; return how many."""
    signal.alarm(WORKER_SECONDS)  # never outlive the example, whatever happens to the parent
    served = 0
    for _ in range(100 * RECONNECTIONS):
        if stopped(stop_fd):
            break
        # Blocking accept() in every worker: the kernel wakes one waiting worker per connection.
        sock, _ = listener.accept()
        with sock:
            if stopped(stop_fd):  # the parent's wake-up call, not a client
                break
            try:
                handle(ctx, sock)
                served += 1
            except (OSError, SSL.Error) as exc:
                print(f"worker {os.getpid()}: connection failed: {exc!r}", file=sys.stderr)
    return served


def run_workers(ctx: SSL.Context, cache: Optional[SessionCache], ca_path: str) -> Dict:
    """Fork WORKERS processes on one listening socket, run the client, stop the workers."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=128)
    port = listener.getsockname()[1]
    stop_read, stop_write = os.pipe()
    report_read, report_write = os.pipe()
    pids: List[int] = []
    for number in range(WORKERS):
        pid = os.fork()
        if pid == 0:  # the worker
            status = 1
            try:
                os.close(stop_write)
                os.close(report_read)
                served = worker(listener, ctx, stop_read)
                # Each worker's counters start at zero at the fork (sesscache resets them in
                # the child), so adding up the workers' stats counts each handshake once.
                stats = cache.stats.as_dict() if cache is not None else {}
                os.write(report_write, (json.dumps({"worker": number, "served": served,
                                                    "stats": stats}) + "\n").encode())
                status = 0
            except BaseException:
                import traceback

                traceback.print_exc()
            finally:
                os._exit(status)
        pids.append(pid)
    listener.close()  # the workers hold it open
    os.close(stop_read)
    os.close(report_write)
    try:
        result = client(port, ca_path)
    finally:
        os.close(stop_write)
        for _ in range(WORKERS):  # wake the workers waiting in accept(): they see the pipe closed
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
            except OSError:
                pass
        with os.fdopen(report_read) as reports:
            workers = [json.loads(line) for line in reports]
        failed = [pid for pid in pids if os.waitpid(pid, 0)[1] != 0]
    if failed or len(workers) != WORKERS:
        raise RuntimeError(f"worker processes {failed} failed (see their traceback above)")
    result["workers"] = workers
    return result


# --- the client ------------------------------------------------------------------------------


def client(port: int, ca_path: str) -> Dict:
    """One full handshake, then RECONNECTIONS connections offering its session."""
    ctx = ssl.create_default_context(cafile=ca_path)

    def connect(session=None):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            # Without TCP_NODELAY, a small write that follows the handshake's last flight
            # waits for a delayed ACK: 40 ms per TLS 1.2 resumption on Linux.
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with ctx.wrap_socket(raw, server_hostname="localhost", session=session) as tls:
                tls.sendall(b"hello\n")
                if tls.recv(1024) != b"hello\n":
                    raise RuntimeError("the server did not echo")
                # Read after the first reply: a TLS 1.3 session only arrives after the handshake.
                return tls.session if session is None else session, tls.session_reused

    # A browser would offer the newest session each time; offering the first one again and
    # again makes the count simple (the per-process run resumes on the one worker that made
    # it). Both resume every time with the shared store.
    session, _ = connect()
    resumed = 0
    started = time.perf_counter()
    for _ in range(RECONNECTIONS):
        _, reused = connect(session)
        resumed += reused
    elapsed = time.perf_counter() - started
    return {"resumed": resumed, "rate": RECONNECTIONS / elapsed}


# --- main ------------------------------------------------------------------------------------


def report(label: str, result: Dict) -> None:
    resumed = result["resumed"]
    workers = sorted(result["workers"], key=lambda w: w["worker"])
    print(f"{label}: {resumed}/{RECONNECTIONS} resumed ({100 * resumed / RECONNECTIONS:.0f}%), "
          f"{result['rate']:.0f} handshakes/s")
    print(f"    connections per worker: {' '.join(str(w['served']) for w in workers)}")


def main() -> int:
    # sesscache never prints; it logs store faults (at most once per burst) with logging.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    with tempfile.TemporaryDirectory(prefix="sesscache-prefork-") as folder:
        ca_path, cert_path = make_certificates(folder)

        # (a) No sesscache: each worker keeps the sessions it made in its own memory.
        per_process = run_workers(server_context(cert_path), None, ca_path)
        report("per-process cache (OpenSSL internal)", per_process)

        # (b) One SQLite file shared by the workers. Set up once, in the parent, before the
        # fork, so every worker inherits the same configuration:
        # * attach() must come before the context makes its first connection (pyOpenSSL 26.2+
        #   refuses to change a context after that), and no connection exists before the fork;
        # * the store opens its SQLite connection on first use and opens a new one in a process
        #   whose pid differs, so no SQLite connection is ever shared across the fork.
        # OpenSSL's internal cache stays in front of the store (internal_cache=True, the
        # default): a worker resumes its own sessions without touching the file.
        # The file holds every session's secrets: keep it in a directory only the server user
        # can read, or pass seal_keys= to encrypt them (see fleet_redis.py).
        cache = SessionCache(SQLiteStore(os.path.join(folder, "sessions.db")), lifetime=300)
        ctx = server_context(cert_path)
        cache.attach(ctx, session_id_context=SERVICE)
        shared = run_workers(ctx, cache, ca_path)
        cache.close()
        report("shared SQLite store (SessionCache)  ", shared)

        totals: Dict[str, int] = {}
        for w in shared["workers"]:
            for name, value in w["stats"].items():
                totals[name] = totals.get(name, 0) + value
        # What the counters mean:
        # * stores: sessions written to the file. TLS 1.3 hands the client 2 sessions after a
        #   full handshake and a fresh one after each resumption: 2 + 200 here.
        # * hits: sessions a worker found in the file, made by another worker. A hit is also
        #   copied into that worker's own internal cache, which answers first from then on,
        #   so with one client session this is at most 3 (one per other worker).
        # * misses: lookups of a session the file did not have (expired, or never stored).
        # * errors: store faults (locked, full, unreadable); each one costs a full handshake,
        #   never a failed one. rejected/expired/oversize: sessions refused, see SessionCache.
        print("    SessionCache counters over all workers: "
              + ", ".join(f"{name}={value}" for name, value in totals.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
