"""Benchmark 3: a pre-fork server, per-process internal caches vs one shared SQLiteStore.

The parent makes the server context (and attaches the cache), opens one listening
socket on 127.0.0.1 and forks 4 workers that all block in ``accept()`` on it: the
kernel hands each connection to one of them. Clients (pyOpenSSL, in the parent) each
make one full handshake, then reconnect many times in random order offering their
newest session. Arms:

* ``internal``: OpenSSL's internal cache of each worker (no sesscache): a client
  resumes only when it lands on the worker that made its session (~1 in 4).
* ``sqlite``: ``SessionCache(SQLiteStore(path))`` with the internal cache as L1, the
  file on tmpfs (``/dev/shm``: sessions are disposable, and that is where one would put
  them).
* ``sqlite-disk``: the same with the file on the disk (the system temporary directory).
  WAL checkpoints then wait for the disk now and then (set p99 of milliseconds here).
* ``sqlite-only``: tmpfs, ``internal_cache=False`` (every lookup in SQLite).

Handshakes per second are what the clients see, one connection at a time (latency
bound): full handshakes, SQLite writes and the kernel's loopback all count.

Every worker tells the client which worker it is and whether it resumed (two bytes
after the handshake), and writes its cache counters to a file when it stops. Stopping:
the parent sends one plain-text ``STOP`` connection per worker (a stopped worker no
longer accepts, so each reaches a different one); ``signal.alarm`` ends a worker that
is never told.
"""
from __future__ import annotations

import json
import os
import random
import signal
import socket
import ssl
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import sesscache

import common as C

WORKERS = 4
ARMS = ("internal", "sqlite", "sqlite-disk", "sqlite-only")
TMPFS = "/dev/shm"


def _server_context(stack_name: str, version: str, arm: str, folder: Path, db_folder: Path):
    st = C.stack(stack_name)
    if arm == "internal":
        return st.server_context(version, "ecdsa", mode=sesscache.SESS_CACHE_SERVER), None
    ctx = st.server_context(version, "ecdsa")
    where = folder if arm == "sqlite-disk" else db_folder
    store = sesscache.SQLiteStore(str(where / f"sessions-{arm}-{version}-{time.monotonic_ns()}.db"))
    cache = sesscache.SessionCache(store=store, lifetime=300)
    cache.attach(ctx, session_id_context=C.SID_CTX, internal_cache=(arm == "sqlite"))
    if stack_name == "stdlib":
        ctx.options |= getattr(ssl, "OP_IGNORE_UNEXPECTED_EOF", 0)
    return ctx, cache


def _worker(index: int, listener: socket.socket, stack_name: str, ctx, cache, folder: Path,
            limit: int) -> None:
    """The body of a forked worker: accept, handshake, report, close cleanly; never returns."""
    code = 0
    served = reused_count = errors = 0
    try:
        signal.alarm(limit)
        if stack_name == "pyopenssl":
            from OpenSSL import SSL
        while True:
            sock, _ = listener.accept()
            try:
                sock.settimeout(10)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # no 40 ms Nagle stalls
                if sock.recv(4, socket.MSG_PEEK) == b"STOP":
                    break
                if stack_name == "stdlib":
                    tls = ctx.wrap_socket(sock, server_side=True)
                    reused = tls.session_reused
                    tls.sendall(bytes((index, reused)))
                    try:
                        tls.unwrap()  # close_notify both ways: the session stays resumable
                    except (ssl.SSLError, OSError):
                        pass
                else:
                    sock.settimeout(None)
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _timeval(10))
                    conn = SSL.Connection(ctx, sock)
                    conn.set_accept_state()
                    conn.do_handshake()
                    reused = bool(SSL._lib.SSL_session_reused(conn._ssl))
                    conn.sendall(bytes((index, reused)))
                    conn.shutdown()
                    try:
                        conn.recv(1)
                    except (SSL.ZeroReturnError, SSL.SysCallError, SSL.Error):
                        pass
                served += 1
                reused_count += reused
            except Exception:
                errors += 1
            finally:
                sock.close()
    except BaseException:
        code = 1
    finally:
        try:
            report = {"index": index, "served": served, "reused": reused_count, "errors": errors}
            if cache is not None:
                report["stats"] = cache.stats.as_dict()
            (folder / f"worker-{index}.json").write_text(json.dumps(report))
        finally:
            os._exit(code)


def _timeval(seconds: int) -> bytes:
    import struct

    return struct.pack("ll", seconds, 0)


def _client_connect(client_ctx, address, session):
    from OpenSSL import SSL

    sock = socket.create_connection(address, timeout=10)
    sock.settimeout(None)  # pyOpenSSL treats a socket with a timeout as non-blocking
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _timeval(10))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        conn = SSL.Connection(client_ctx, sock)
        conn.set_connect_state()
        conn.set_tlsext_host_name(C.SERVER_NAME.encode())
        if session is not None:
            conn.set_session(session)
        conn.do_handshake()
        data = b""
        while len(data) < 2:
            chunk = conn.recv(2 - len(data))
            if not chunk:
                raise RuntimeError("worker closed before reporting")
            data += chunk
        newest = conn.get_session()  # TLS 1.3: the ticket came before the report
        conn.shutdown()
        return data[0], bool(data[1]), bool(SSL._lib.SSL_session_reused(conn._ssl)), newest
    finally:
        sock.close()


def _one_run(stack_name: str, version: str, arm: str, clients: int, reconnects: int,
             seed: int) -> Dict[str, Any]:
    tmpfs = TMPFS if os.path.isdir(TMPFS) and os.access(TMPFS, os.W_OK) else None
    with tempfile.TemporaryDirectory(prefix="sesscache-prefork-") as tmp, \
            tempfile.TemporaryDirectory(prefix="sesscache-prefork-", dir=tmpfs) as shm:
        folder = Path(tmp)
        ctx, cache = _server_context(stack_name, version, arm, folder, Path(shm))
        listener = socket.create_server(("127.0.0.1", 0), backlog=128)
        address = listener.getsockname()
        pids: List[int] = []
        for index in range(WORKERS):
            pid = os.fork()
            if pid == 0:  # the worker
                _worker(index, listener, stack_name, ctx, cache, folder, limit=600)
            pids.append(pid)
        client_ctx = C.stack("pyopenssl").client_context("ecdsa")
        rng = random.Random(seed)
        try:
            sessions: List[Optional[Any]] = [None] * clients
            for i in range(clients):  # each client's first, full handshake
                _, _, _, sessions[i] = _client_connect(client_ctx, address, None)
            workers_hit = [0] * WORKERS
            resumed = client_resumed = errors = 0
            t0 = time.perf_counter()
            for _ in range(reconnects):
                i = rng.randrange(clients)
                try:
                    worker, reused, seen, sessions[i] = _client_connect(client_ctx, address, sessions[i])
                except Exception:
                    errors += 1
                    continue
                workers_hit[worker] += 1
                resumed += reused
                client_resumed += seen
            elapsed = time.perf_counter() - t0
        finally:
            for _ in pids:  # one STOP per worker: a stopped worker accepts no more
                try:
                    with socket.create_connection(address, timeout=5) as s:
                        s.sendall(b"STOP")
                except OSError:
                    pass
            deadline = time.monotonic() + 20
            for pid in pids:
                while True:
                    done, _ = os.waitpid(pid, os.WNOHANG)
                    if done or time.monotonic() > deadline:
                        break
                    time.sleep(0.01)
                if not done:
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
            listener.close()
        reports = []
        for index in range(WORKERS):
            path = folder / f"worker-{index}.json"
            if path.exists():
                reports.append(json.loads(path.read_text()))
        if cache is not None:
            cache.close()
    done = reconnects - errors
    return {"resumed": resumed / done if done else 0.0, "client_saw_resumed": client_resumed / max(done, 1),
            "handshakes_per_s": done / elapsed, "errors": errors, "workers": workers_hit,
            "worker_reports": reports}


def run(p, progress) -> Dict[str, Any]:
    out: Dict[str, Any] = {"workers": WORKERS, "clients": p.prefork_clients,
                           "reconnects": p.prefork_reconnects, "tmpfs": TMPFS,
                           "disk": tempfile.gettempdir(), "configs": []}
    for stack_name in p.prefork_stacks:
        for version in p.versions:
            runs: Dict[str, List[Dict[str, Any]]] = {arm: [] for arm in ARMS}
            rng = random.Random(p.seed)
            for r in range(p.prefork_rounds):
                order = list(ARMS)
                rng.shuffle(order)
                for arm in order:
                    runs[arm].append(_one_run(stack_name, version, arm, p.prefork_clients,
                                              p.prefork_reconnects, seed=p.seed + r))
                progress(1)
            entry: Dict[str, Any] = {"stack": stack_name, "version": version, "arms": {}}
            for arm, rs in runs.items():
                entry["arms"][arm] = {
                    "resumed": C.summarize([x["resumed"] for x in rs]),
                    "handshakes_per_s": C.summarize([x["handshakes_per_s"] for x in rs]),
                    "errors": sum(x["errors"] for x in rs),
                    "workers": [sum(x["workers"][w] for x in rs) for w in range(WORKERS)],
                    "store_errors": sum(rep.get("stats", {}).get("errors", 0)
                                        for x in rs for rep in x["worker_reports"]),
                    "worker_reports": [x["worker_reports"] for x in rs],
                }
            base = runs["internal"]
            entry["speedup"] = {
                arm: C.summarize([a["handshakes_per_s"] / b["handshakes_per_s"] for a, b in zip(runs[arm], base)])
                for arm in ARMS if arm != "internal"}
            out["configs"].append(entry)
    return out


def total_rounds(p) -> int:
    return p.prefork_rounds * len(p.prefork_stacks) * len(p.versions)
