"""Benchmark 4: RedisStore on loopback vs MemoryStore, and the store's own latency.

A private ``redis-server`` is started for the run (``--save '' --appendonly no``,
listening on a Unix socket and on 127.0.0.1 at a free port), unless
``SESSCACHE_TEST_REDIS_URL`` names one to use instead (then only that URL is measured).

1. Resumed handshakes per second with every lookup going to the store (the
   "another process" arm of benchmark 1: ``internal_cache=False``), RedisStore over the
   Unix socket and over TCP, and over the Unix socket with ``local_replica`` (a pub/sub-fed
   copy in each process), relative to MemoryStore, interleaved; and what a user gets by
   default, ``store_from_url(url)`` ("url:redis-unix": the local replica on), and with
   ``--cluster`` a private 3-master Redis Cluster opened by its URL ("url:cluster": no
   replica, every lookup a round trip to a node).
2. Latency of ``store.get`` (a hit on a real blob) and ``store.set``, one call at a
   time with ``perf_counter_ns``: p50/p99 for Redis (unix, tcp), SQLite (tmpfs) and
   MemoryStore, interleaved in chunks of 100 calls so that they share the machine's mood;
   and for the ``ResilientStore`` the cache puts around a RedisStore (its ``set`` queues).
3. A paused Redis (SIGSTOP on a second private server, the breaker already tripped): full
   handshakes, and handshakes offering a session this process does not hold, against full
   handshakes with no store at all, interleaved (issue 14's goal: at most 1.5x).
4. Cross-server resumption with writes behind the handshake (TLS 1.2 and 1.3): a client
   makes a full handshake on server A and at once offers the session to server B (each with
   its own ``SessionCache(RedisStore(url))``), with the real Redis and with a store whose
   writes take 20 ms, B waiting for writes on their way (the default) or not: the share of
   reconnections B resumes.

The RedisStore arms use ``SessionCache(RedisStore(url))`` as a user gets it, so through the
``ResilientStore`` the cache wraps around a network store.
"""
from __future__ import annotations

import os
import shutil
import signal
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


class PrivateCluster:
    """Three redis-server masters on 127.0.0.1 made one Redis Cluster (no replicas), in a
    temporary folder, as tests/fleet_fixtures.py starts one."""

    def __init__(self) -> None:
        for binary in ("redis-server", "redis-cli"):
            if shutil.which(binary) is None:
                raise RuntimeError(f"{binary} is not installed: a cluster cannot be started here")
        self.folder = tempfile.TemporaryDirectory(prefix="sesscache-bench-cluster-")
        self.processes: List[subprocess.Popen] = []
        self.ports: List[int] = []
        for i in range(3):
            port = _free_port(lambda p: p + 10000 < 65536)
            work = Path(self.folder.name) / str(i)
            work.mkdir()
            self.ports.append(port)
            self.processes.append(subprocess.Popen(
                ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", str(work), "--cluster-enabled", "yes",
                 "--cluster-config-file", str(work / "nodes.conf"), "--loglevel", "warning"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        try:
            for port in self.ports:
                self._wait(lambda: self._cli(port, "ping").strip() == "PONG")
            subprocess.run(["redis-cli", "--cluster", "create", *[f"127.0.0.1:{p}" for p in self.ports],
                            "--cluster-replicas", "0", "--cluster-yes"], check=True,
                           capture_output=True, timeout=60)
            for port in self.ports:
                self._wait(lambda: "cluster_state:ok" in self._cli(port, "cluster", "info"))
        except BaseException:
            self.stop()
            raise
        self.url = "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports)

    @staticmethod
    def _cli(port: int, *args: str) -> str:
        done = subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True, text=True, timeout=10)
        return done.stdout

    @staticmethod
    def _wait(ready: Callable[[], bool], timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            if time.monotonic() > deadline:
                raise RuntimeError("the private Redis Cluster did not come up")
            time.sleep(0.05)

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.folder.cleanup()


def _free_port(fits: Callable[[int], bool]) -> int:
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if fits(port):
            return port


def _close_all(stores: List[Any]) -> None:
    for store in stores:
        try:
            store.close()
        except Exception:
            pass


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


def _seconds(rs) -> Dict[str, Any]:
    return {"pair": C.summarize([r.pair_seconds for r in rs]), "server": C.summarize([r.server_seconds for r in rs])}


def _paused_redis(p, progress, url: str, pause: Callable[[], None]) -> List[Dict[str, Any]]:
    """Full handshakes with a paused Redis (breaker tripped) vs with no store, interleaved."""
    out = []
    for stack_name in p.stacks:
        st = C.stack(stack_name)
        for version in p.versions:
            client = st.client_context("ecdsa")
            plain = st.server_context(version, "ecdsa", mode=sesscache.SESS_CACHE_SERVER)
            cache = sesscache.SessionCache(sesscache.RedisStore(url, prefix=b"bench-paused:"))
            sick = st.server_context(version, "ecdsa")
            cache.attach(sick, session_id_context=C.SID_CTX)  # default: internal cache on
            other = st.server_context(version, "ecdsa", mode=sesscache.SESS_CACHE_SERVER)
            foreign = [st.connect(other, client)[2] for _ in range(p.pool)]  # not held by `sick`
            arms = {
                "no store: full": C.Arm("none", plain, client, [None] * p.pool, [plain]),
                "paused redis: full": C.Arm("paused", sick, client, [None] * p.pool, [cache]),
                "paused redis: unknown session": C.Arm("foreign", sick, client, foreign, [cache]),
            }
            pause()
            for _ in range(cache.store.trip_after or 0):  # the first trip_after calls wait
                try:
                    cache.store.get(b"trip")
                except sesscache.StoreError:
                    pass
            blocks = C.interleave({name: (lambda arm=arm: C.run_block(st, arm, p.redis_block))
                                   for name, arm in arms.items()}, p.redis_rounds, seed=p.seed,
                                  progress=progress)
            base = blocks["no store: full"]
            entry: Dict[str, Any] = {"stack": stack_name, "version": version, "arms": {}, "cost": {}}
            for name, rs in blocks.items():
                entry["arms"][name] = {**_seconds(rs), "resumed": sum(r.reused for r in rs)}
                if name != "no store: full":
                    entry["cost"][name] = {
                        "pair": C.summarize([a.pair_seconds / b.pair_seconds for a, b in zip(rs, base)]),
                        "server": C.summarize([a.server_seconds / b.server_seconds for a, b in zip(rs, base)])}
            entry["store"] = cache.store.stats.as_dict()
            entry["cache"] = cache.stats.as_dict()
            out.append(entry)
            pause(resume=True)
            time.sleep(cache.store.retry_after + 0.1)
            cache.close()
    return out


class _SlowWrites(sesscache.RedisStore if hasattr(sesscache, "RedisStore") else object):
    """A RedisStore whose writes take ``delay`` seconds more (a store far away)."""

    delay = 0.0

    def set(self, key, value, ttl):
        time.sleep(self.delay)
        super().set(key, value, ttl)

    def write_many(self, ops):  # one round trip for the batch: one delay
        time.sleep(self.delay)
        super().write_many(ops)


def _cross_server(p, url: str, setups=((0.0, 0.1), (0.0, 0.0), (0.02, 0.1), (0.02, 0.0))
                  ) -> List[Dict[str, Any]]:
    """Full handshake on A, then at once the session offered to B (another cache sharing
    the store), TLS 1.2 and 1.3. The share B resumes, by how long A's store takes to write
    (writes go behind the handshake) and B's ``new_session_wait`` (0.1 s: the default;
    0: B never waits for a write on its way)."""
    out = []
    st = C.stack(p.stacks[0])
    for version in (C.TLS12, C.TLS13):
        for delay, new_session_wait in setups:
            store_a = _SlowWrites(url, prefix=b"bench-x:%d:" % time.monotonic_ns())
            store_b = _SlowWrites(url, prefix=store_a.prefix)
            store_a.delay = delay
            caches = [sesscache.SessionCache(store_a),
                      sesscache.SessionCache(sesscache.ResilientStore(store_b,
                                                                      new_session_wait=new_session_wait))]
            a, b = st.server_context(version, "ecdsa"), st.server_context(version, "ecdsa")
            caches[0].attach(a, session_id_context=C.SID_CTX)
            caches[1].attach(b, session_id_context=C.SID_CTX)
            client = st.client_context("ecdsa")
            n = p.redis_cross if delay == 0 else max(50, p.redis_cross // 3)
            resumed = 0
            gaps: List[float] = []
            for _ in range(n):
                _, _, session = st.connect(a, client)
                t = time.perf_counter()
                reused, _, _ = st.connect(b, client, session)
                gaps.append(time.perf_counter() - t)
                resumed += reused
                if delay:
                    caches[0].store.flush(1.0)  # one reconnection at a time: no queue builds up
            for cache in caches:
                cache.store.flush(2.0)
            gaps.sort()
            out.append({"stack": st.name, "version": version, "store_write_delay_ms": delay * 1000,
                        "new_session_wait_ms": new_session_wait * 1000, "reconnections": n,
                        "resumed_on_b": resumed, "resumed_fraction": resumed / n,
                        "reconnect_ms_p50": C.percentile(gaps, 50) * 1000,
                        "reconnect_ms_p99": C.percentile(gaps, 99) * 1000,
                        "a_store": caches[0].store.stats.as_dict(), "b_store": caches[1].store.stats.as_dict(),
                        "b_cache": caches[1].stats.as_dict()})
            for cache in caches:
                cache.close()
    return out


def _rates(p, progress, kinds: List[str], factory: Callable[[str], Callable[[], Any]]) -> List[Dict[str, Any]]:
    """Resumed handshakes per second, every lookup in the store, each kind against
    "memory" (the first kind), interleaved; per stack and TLS version."""
    configs = []
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
                    "store": getattr(getattr(cache.store, "stats", None), "as_dict", lambda: None)(),
                }
                if kind != "memory":
                    entry["ratios"][kind] = {
                        "pair": C.summarize([a.rate / b.rate for a, b in zip(rs, blocks["memory"])]),
                        "server": C.summarize([a.server_rate / b.server_rate
                                               for a, b in zip(rs, blocks["memory"])]),
                    }
            configs.append(entry)
            del arms
    return configs


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
            elif kind.startswith("url:"):  # as every server integration opens it
                store = sesscache.store_from_url(urls[kind[4:]], timeout=0.25,
                                                 prefix=b"sesscache-bench:%d:" % time.monotonic_ns())
                if store.replica is not None:
                    store.replica.wait_subscribed(10)
            else:
                base, _, replica = kind.partition("+")
                store = sesscache.RedisStore(url=urls[base], timeout=0.25,
                                             prefix=b"sesscache-bench:%d:" % time.monotonic_ns(),
                                             local_replica=20000 if replica else 0)
                if replica:
                    store._replica.wait_subscribed(10)
            made.append(store)
            return store
        return make

    # "+replica": every lookup still goes to the store, which answers from its pub/sub-fed
    # copy in this process (what another process of the fleet would hold) before Redis.
    # "url:": store_from_url's default, what every server integration opens.
    first = next(iter(urls))
    kinds = ["memory"] + list(urls) + [f"{first}+replica", f"url:{first}"]
    out: Dict[str, Any] = {"server": where, "configs": []}
    try:
        out["configs"] = _rates(p, progress, kinds, factory)
        # store latency on a real blob
        arm = C.build_arm(C.stack(p.stacks[0]), C.SC_L1, C.TLS13, "ecdsa", pool=2)
        blob = arm.keep[0].store.entries()[0][1]
        with tempfile.TemporaryDirectory(prefix="sesscache-bench-sqlite-",
                                         dir="/dev/shm" if os.path.isdir("/dev/shm") else None) as tmp:
            stores = {kind: factory(kind)() for kind in urls}
            first = next(iter(urls))
            wrapped = sesscache.ResilientStore(factory(first)())  # as SessionCache wraps it
            made.append(wrapped)
            stores[first + " (ResilientStore)"] = wrapped
            stores["sqlite-tmpfs"] = sesscache.SQLiteStore(os.path.join(tmp, "s.db"))
            stores["memory"] = sesscache.MemoryStore()
            out["latency"] = _latency(stores, blob, p.redis_latency_calls)
            out["latency_blob_bytes"] = len(blob)
            stores["sqlite-tmpfs"].close()
        if server is not None:
            sick = PrivateRedis()
            try:
                def pause(resume: bool = False) -> None:
                    os.kill(sick.process.pid, signal.SIGCONT if resume else signal.SIGSTOP)

                out["paused"] = _paused_redis(p, progress, sick.urls["redis-unix"], pause)
            finally:
                os.kill(sick.process.pid, signal.SIGCONT)
                sick.stop()
        out["cross_server"] = _cross_server(p, urls[next(iter(urls))])
    finally:
        _close_all(made)
        if server is not None:
            server.stop()
    return out


def total_rounds(p) -> int:
    return 2 * p.redis_rounds * len(p.stacks) * len(p.versions)


def main(argv: Optional[List[str]] = None) -> int:
    """Only part 1 (rates), the default a user gets against what it is measured by:
    ``python benchmarks/redis_store.py [--cluster] [--rounds N] [--block N]``."""
    import argparse
    import datetime
    import json
    import logging

    import run as runner

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--cluster", action="store_true", help="also a private 3-master Redis Cluster by its URL")
    parser.add_argument("--rounds", type=int, default=runner.Params.redis_rounds)
    parser.add_argument("--block", type=int, default=runner.Params.redis_block)
    parser.add_argument("--stacks", default="pyopenssl,stdlib")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    p = runner.Params(redis_rounds=args.rounds, redis_block=args.block,
                      stacks=tuple(args.stacks.split(",")))
    started = datetime.datetime.now(datetime.timezone.utc)
    load_before = os.getloadavg()
    server, cluster = PrivateRedis(), None
    urls = {"redis-unix": server.urls["redis-unix"]}
    made: List[Any] = []
    try:
        if args.cluster:
            cluster = PrivateCluster()
            urls["cluster"] = cluster.url

        def factory(kind: str) -> Callable[[], Any]:
            def make():
                prefix = b"sesscache-bench:%d:" % time.monotonic_ns()
                if kind == "memory":
                    store = sesscache.MemoryStore()
                elif kind == "redis-unix":  # RedisStore(url): no replica unless asked
                    store = sesscache.RedisStore(urls[kind], timeout=0.25, prefix=prefix)
                else:  # url:NAME, as every server integration opens it
                    store = sesscache.store_from_url(urls[kind[4:]], timeout=0.25, prefix=prefix)
                    if store.replica is not None:
                        store.replica.wait_subscribed(10)
                made.append(store)
                return store
            return make

        kinds = ["memory", "redis-unix", "url:redis-unix"] + (["url:cluster"] if cluster else [])
        configs = _rates(p, lambda n=1: None, kinds, factory)
    finally:
        _close_all(made)
        server.stop()
        if cluster is not None:
            cluster.stop()
    result = {"date": started.strftime("%Y-%m-%d %H:%M UTC"), "loadavg_before": load_before,
              "loadavg_after": os.getloadavg(), "rounds": p.redis_rounds, "block": p.redis_block,
              "redis": server.version, "configs": configs}
    lines = [f"# store_from_url(redis) by default vs MemoryStore ({result['date']}, load "
             f"{load_before[0]:.2f} -> {result['loadavg_after'][0]:.2f}, {p.redis_rounds} rounds of "
             f"{p.redis_block})", "", "| stack | TLS | store | pair ratio (p25-p75) | server ratio (p25-p75) | resumed |",
             "|---|---|---|---|---|---|"]
    for entry in configs:
        for kind, ratio in entry["ratios"].items():
            pr, sr = ratio["pair"], ratio["server"]
            lines.append(f"| {entry['stack']} | {entry['version']} | {kind} | {pr['median']:.2f} "
                         f"({pr['p25']:.2f}-{pr['p75']:.2f}) | {sr['median']:.2f} ({sr['p25']:.2f}-"
                         f"{sr['p75']:.2f}) | {entry['arms'][kind]['resumed_fraction']:.2f} |")
    table = "\n".join(lines) + "\n"
    out = Path(args.out)
    stamp = started.strftime("%Y%m%d-%H%M%S") + "-redis-default"
    (out / f"{stamp}.json").write_text(json.dumps(result, indent=1, default=str) + "\n")
    (out / f"{stamp}.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
