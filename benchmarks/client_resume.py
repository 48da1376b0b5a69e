"""Client-side resumption (issue 25): what ClientSessionCache.attach(ssl.SSLContext) saves a
stdlib client, per connection and per fresh process.

A stdlib TLS server (RSA-2048 leaf under a test CA, OpenSSL's own session cache and
tickets) runs in a process of its own, so none of its work is counted as the client's.

1. Client CPU per new connection (``time.process_time`` of the client process around
   connect, handshake, one HTTP request and close), in one client process, two arms in
   interleaved rounds: ``plain`` (an ssl.SSLContext, every connection a full handshake)
   and ``cache`` (the same context with a ClientSessionCache over a SQLiteStore attached:
   every connection offers the stored session, the TLS 1.3 ticket is taken out and the
   new one written back). Median of per-round means, and of per-round ratios.
2. Fresh processes through a delaying TCP proxy on loopback (10 ms each way: a 20 ms round
   trip): each process makes ONE request (an ssl socket, as http clients do) and reports
   whether it resumed and the wall time of that first request (connect to the end of the
   response). ``--processes`` (200) with the cache over one shared SQLite file, and a
   quarter as many without, interleaved. Goal: >= 99 % of the cache's processes resume.

    .venv/bin/python benchmarks/client_resume.py            # both TLS versions, 200 processes each
    .venv/bin/python benchmarks/client_resume.py --quick    # 40 processes, fewer rounds

Writes results/<UTC stamp>-client_resume.md and .json and prints the table. Run it on an
idle machine if you can; the table says the load average it ran under.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Dict, List

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

REQUEST = b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"


# --- the server (its own process) ------------------------------------------------------------

def serve(server_pem: str, version: str, port_file: str) -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(server_pem)
    ctx.maximum_version = ssl.TLSVersion[version.replace("v", "v").replace(".", "_")]
    listener = socket.create_server(("127.0.0.1", 0), backlog=128)
    Path(port_file).write_text(str(listener.getsockname()[1]))

    def one(sock: socket.socket) -> None:
        try:
            sock.settimeout(10)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with ctx.wrap_socket(sock, server_side=True) as tls:
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = tls.recv(4096)
                    if not chunk:
                        return
                    data += chunk
                tls.sendall(RESPONSE)
                try:
                    tls.unwrap()
                except (ssl.SSLError, OSError):
                    pass
        except (ssl.SSLError, OSError):
            pass

    while True:
        sock, _ = listener.accept()
        threading.Thread(target=one, args=(sock,), daemon=True).start()


def start_server(server_pem: str, version: str) -> "tuple[subprocess.Popen, int]":
    folder = tempfile.mkdtemp(prefix="sesscache-client-bench-")
    port_file = os.path.join(folder, "port")
    proc = subprocess.Popen([sys.executable, __file__, "--serve", server_pem, version, port_file])
    for _ in range(200):
        if os.path.exists(port_file) and Path(port_file).read_text():
            return proc, int(Path(port_file).read_text())
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("the benchmark server did not start")


# --- the delaying proxy (a thread of this process) --------------------------------------------

class DelayProxy:
    """TCP on 127.0.0.1 that forwards every chunk ``delay`` seconds later, each way."""

    def __init__(self, target_port: int, delay: float) -> None:
        self.target_port, self.delay = target_port, delay
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        self.port = 0

        async def start() -> None:
            server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
            self.port = server.sockets[0].getsockname()[1]
            ready.set()

        threading.Thread(target=lambda: (self.loop.run_until_complete(start()), self.loop.run_forever()),
                         daemon=True).start()
        ready.wait(10)

    async def _handle(self, reader, writer) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    async def _pipe(self, reader, writer) -> None:
        queue: asyncio.Queue = asyncio.Queue()

        async def send() -> None:
            while True:
                due, chunk = await queue.get()
                await asyncio.sleep(max(0.0, due - self.loop.time()))
                if not chunk:
                    writer.close()
                    return
                writer.write(chunk)
                await writer.drain()

        sender = asyncio.ensure_future(send())
        try:
            while True:
                chunk = await reader.read(65536)
                queue.put_nowait((self.loop.time() + self.delay, chunk))
                if not chunk:
                    break
            await sender
        except (ConnectionError, OSError):
            sender.cancel()


# --- one client process ----------------------------------------------------------------------

def child(ca_pem: str, port: int, db: str) -> None:
    """One fresh client process: one request, JSON on stdout."""
    t_import = time.perf_counter()
    ctx = ssl.create_default_context(cafile=ca_pem)
    cache = None
    if db:
        from sesscache import ClientSessionCache, SQLiteStore

        cache = ClientSessionCache(SQLiteStore(db))
        cache.attach(ctx)
    ready = time.perf_counter()
    start = time.perf_counter()
    reused = _request(ctx, port)
    wall = time.perf_counter() - start
    if cache is not None:
        cache.close()
    print(json.dumps({"reused": reused, "wall_ms": wall * 1e3, "setup_ms": (ready - t_import) * 1e3}))


def _request(ctx: ssl.SSLContext, port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as urllib3 and httpcore do
        with ctx.wrap_socket(sock, server_hostname="localhost") as tls:
            tls.sendall(REQUEST)
            data = b""
            while not data.endswith(b"\r\n\r\nok"):  # the response (TLS 1.3 tickets come first)
                chunk = tls.recv(4096)
                if not chunk:
                    break
                data += chunk
            return tls.session_reused


def run_processes(ca_pem: str, port: int, n_cache: int, n_plain: int, db: str) -> Dict[str, List[dict]]:
    order = ["cache"] * n_cache + ["plain"] * n_plain
    random.Random(7).shuffle(order)
    order.insert(0, "cache")  # the first process of all makes the session
    out: Dict[str, List[dict]] = {"cache": [], "plain": []}
    env = dict(os.environ, PYTHONPATH=str(HERE.parent / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    for arm in order:
        done = subprocess.run([sys.executable, __file__, "--child", ca_pem, str(port),
                               db if arm == "cache" else ""], capture_output=True, text=True,
                              timeout=60, env=env)
        if done.returncode != 0:
            out[arm].append({"reused": False, "wall_ms": float("nan"), "error": done.stderr[-500:]})
        else:
            out[arm].append(json.loads(done.stdout.strip().splitlines()[-1]))
    out["cache"] = out["cache"][1:]  # not counted: it had nothing to resume
    return out


# --- client CPU per connection, in one process ------------------------------------------------

def cpu_per_connection(ca_pem: str, port: int, rounds: int, block: int, db: str) -> Dict[str, List[float]]:
    from sesscache import ClientSessionCache, SQLiteStore

    plain = ssl.create_default_context(cafile=ca_pem)
    cached = ssl.create_default_context(cafile=ca_pem)
    cache = ClientSessionCache(SQLiteStore(db))
    cache.attach(cached)
    _request(cached, port)  # the first session
    arms = {"plain": plain, "cache": cached}
    per_round: Dict[str, List[float]] = {"plain": [], "cache": [], "resumed": []}
    rng = random.Random(3)
    for _ in range(rounds):
        names = list(arms)
        rng.shuffle(names)
        for name in names:
            resumed = 0
            t0 = time.process_time()
            for _ in range(block):
                resumed += _request(arms[name], port)
            per_round[name].append((time.process_time() - t0) / block * 1e6)
            if name == "cache":
                per_round["resumed"].append(resumed / block)
    cache.close()
    return per_round


# --- the report --------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--processes", type=int, default=200)
    parser.add_argument("--versions", default="TLSv1.2,TLSv1.3")
    args = parser.parse_args()
    if args.quick:
        args.processes = min(args.processes, 40)
    rounds, block = (5, 20) if args.quick else (15, 40)
    from common import certs

    cert = certs("rsa")
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    results = {"uptime_before": uptime, "processes": args.processes, "rounds": rounds, "block": block}
    lines = [f"# Client resumption (issue 25), {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", "",
             f"`uptime` before: {uptime}", "",
             "| TLS | client CPU / connection, plain | with the cache | ratio | fresh processes resumed "
             "| first request over 20 ms RTT, plain (median, p90) | with the cache |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for version in args.versions.split(","):
        server, port = start_server(cert.server_pem, version)
        folder = tempfile.mkdtemp(prefix="sesscache-client-bench-")
        try:
            cpu = cpu_per_connection(cert.ca_pem, port, rounds, block, os.path.join(folder, "cpu.db"))
            proxy = DelayProxy(port, 0.010)
            procs = run_processes(cert.ca_pem, proxy.port, args.processes, max(1, args.processes // 4),
                                  os.path.join(folder, "procs.db"))
        finally:
            server.kill()
            server.wait()
        ratios = [c / p for c, p in zip(cpu["cache"], cpu["plain"])]
        resumed = sum(1 for r in procs["cache"] if r["reused"])
        plain_resumed = sum(1 for r in procs["plain"] if r["reused"])

        def stats(rows):
            walls = sorted(r["wall_ms"] for r in rows if r["wall_ms"] == r["wall_ms"])
            return statistics.median(walls), walls[int(0.9 * (len(walls) - 1))]

        pm, p90 = stats(procs["plain"])
        cm, c90 = stats(procs["cache"])
        results[version] = {"cpu_us": cpu, "ratios": ratios, "processes": procs}
        lines.append(
            f"| {version} | {statistics.median(cpu['plain']):.0f} us | {statistics.median(cpu['cache']):.0f} us "
            f"(resumed {statistics.mean(cpu['resumed']) * 100:.0f} %) | {statistics.median(ratios):.2f}x "
            f"| {resumed}/{len(procs['cache'])} ({resumed / len(procs['cache']) * 100:.1f} %; "
            f"without the cache {plain_resumed}/{len(procs['plain'])}) "
            f"| {pm:.1f} ms, {p90:.1f} ms | {cm:.1f} ms, {c90:.1f} ms |")
    uptime_after = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    results["uptime_after"] = uptime_after
    lines += ["", f"`uptime` after: {uptime_after}", "",
              f"CPU: {rounds} interleaved rounds of {block} connections per arm, median of per-round means "
              "(and of per-round ratios); a connection is connect + handshake + one request + close, "
              "the client process's time only (the server runs in its own process). Processes: each one "
              "request through a proxy delaying every chunk 10 ms each way, wall time from connect to "
              "the end of the response; cache and plain processes interleaved."]
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    out = HERE / "results" / f"{stamp}-client_resume"
    out.with_suffix(".json").write_text(json.dumps(results, indent=1))
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        serve(*sys.argv[2:5])
    elif len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], int(sys.argv[3]), sys.argv[4])
    else:
        main()
