"""Benchmark 4: RedisStore on loopback vs MemoryStore, and the store's own latency.

A private ``redis-server`` is started for the run (``--save '' --appendonly no``,
listening on a Unix socket and on 127.0.0.1 at a free port), unless
``SESSCACHE_TEST_REDIS_URL`` names one to use instead (then only that URL is measured).

1. Resumed handshakes per second with every lookup going to the store (the
   "another process" arm of benchmark 1: ``internal_cache=False``), RedisStore over the
   Unix socket and over TCP, relative to MemoryStore, interleaved.
2. Latency of ``store.get`` (a hit on a real blob) and ``store.set``, one call at a
   time with ``perf_counter_ns``: p50/p99 for Redis (unix, tcp), SQLite (tmpfs) and
   MemoryStore, interleaved in chunks of 100 calls so that they share the machine's mood.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import sesscache

import common as C


class PrivateRedis:
    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server), "
                               "or set SESSCACHE_TEST_REDIS_URL")
        self.folder = tempfile.TemporaryDirectory(prefix="sesscache-bench-redis-")
        self.socket_path = str(Path(self.folder.name) / "redis.sock")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--unixsocket", self.socket_path,
             "--unixsocketperm", "700", "--save", "", "--appendonly", "no", "--dir", self.folder.name,
             "--daemonize", "no", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not self._ping():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the private redis-server did not start")
            time.sleep(0.02)
        self.version = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout.split()[2]

    def _ping(self) -> bool:
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(0.5)
                s.connect(self.socket_path)
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    @property
    def urls(self) -> Dict[str, str]:
        return {"redis-unix": f"unix://{self.socket_path}?db=0", "redis-tcp": f"redis://127.0.0.1:{self.port}/0"}

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.folder.cleanup()


def _latency(stores: Dict[str, Any], blob: bytes, calls: int) -> Dict[str, Any]:
    keys = [b"sc1:\x05bench" + os.urandom(32) for _ in range(100)]
    for store in stores.values():
        for key in keys:
            store.set(key, blob, 300.0)
    gets: Dict[str, List[int]] = {name: [] for name in stores}
    sets: Dict[str, List[int]] = {name: [] for name in stores}
    clock = time.perf_counter_ns
    for _ in range(max(1, calls // len(keys))):
        for name, store in stores.items():
            g, s = gets[name], sets[name]
            for key in keys:
                t = clock()
                store.get(key)
                g.append(clock() - t)
            for key in keys:
                t = clock()
                store.set(key, blob, 300.0)
                s.append(clock() - t)
    out = {}
    for name in stores:
        g = sorted(x / 1000 for x in gets[name])
        s = sorted(x / 1000 for x in sets[name])
        out[name] = {"get_p50_us": C.percentile(g, 50), "get_p99_us": C.percentile(g, 99),
                     "set_p50_us": C.percentile(s, 50), "set_p99_us": C.percentile(s, 99), "calls": len(g)}
    return out


def run(p, progress) -> Dict[str, Any]:
    env_url = os.environ.get("SESSCACHE_TEST_REDIS_URL")
    server: Optional[PrivateRedis] = None
    if env_url:
        urls = {"redis": env_url}
        where = "SESSCACHE_TEST_REDIS_URL"
    else:
        server = PrivateRedis()
        urls = server.urls
        where = f"private redis-server {server.version} (unix socket and 127.0.0.1)"
    made: List[Any] = []

    def factory(kind: str) -> Callable[[], Any]:
        def make():
            if kind == "memory":
                store = sesscache.MemoryStore()
            else:
                store = sesscache.RedisStore(url=urls[kind], timeout=0.25,
                                             prefix=b"sesscache-bench:%d:" % time.monotonic_ns())
            made.append(store)
            return store
        return make

    kinds = ["memory"] + list(urls)
    out: Dict[str, Any] = {"server": where, "configs": []}
    try:
        for stack_name in p.stacks:
            st = C.stack(stack_name)
            for version in p.versions:
                arms = {kind: C.build_arm(st, C.SC_STORE, version, "ecdsa", pool=p.pool,
                                          store_factory=factory(kind)) for kind in kinds}
                blocks = C.interleave({kind: (lambda arm=arm: C.run_block(st, arm, p.redis_block))
                                       for kind, arm in arms.items()}, p.redis_rounds, seed=p.seed,
                                      progress=progress)
                entry: Dict[str, Any] = {"stack": stack_name, "version": version, "arms": {}, "ratios": {}}
                for kind, rs in blocks.items():
                    cache = arms[kind].keep[0]
                    entry["arms"][kind] = {
                        "pair_rate": C.summarize([r.rate for r in rs]),
                        "server_rate": C.summarize([r.server_rate for r in rs]),
                        "resumed_fraction": sum(r.reused for r in rs) / sum(r.n for r in rs),
                        "stats": cache.stats.as_dict(),
                    }
                    if kind != "memory":
                        entry["ratios"][kind] = {
                            "pair": C.summarize([a.rate / b.rate for a, b in zip(rs, blocks["memory"])]),
                            "server": C.summarize([a.server_rate / b.server_rate
                                                   for a, b in zip(rs, blocks["memory"])]),
                        }
                out["configs"].append(entry)
                del arms
        # store latency on a real blob
        arm = C.build_arm(C.stack(p.stacks[0]), C.SC_L1, C.TLS13, "ecdsa", pool=2)
        blob = arm.keep[0].store.entries()[0][1]
        with tempfile.TemporaryDirectory(prefix="sesscache-bench-sqlite-",
                                         dir="/dev/shm" if os.path.isdir("/dev/shm") else None) as tmp:
            stores = {kind: factory(kind)() for kind in urls}
            stores["sqlite-tmpfs"] = sesscache.SQLiteStore(os.path.join(tmp, "s.db"))
            stores["memory"] = sesscache.MemoryStore()
            out["latency"] = _latency(stores, blob, p.redis_latency_calls)
            out["latency_blob_bytes"] = len(blob)
            stores["sqlite-tmpfs"].close()
    finally:
        for store in made:
            try:
                store.close()
            except Exception:
                pass
        if server is not None:
            server.stop()
    return out


def total_rounds(p) -> int:
    return p.redis_rounds * len(p.stacks) * len(p.versions)
