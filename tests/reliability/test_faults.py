"""Faults with real servers, under traffic: Redis killed, paused, restarted and full; SQLite
locked, deleted and read-only; memcached killed and paused.

Whatever the store does, every handshake completes (a full one when the store cannot
answer) within the store timeout plus a full handshake (asserted as a generous bound,
never as a speed goal), every fault is counted in ``stats.errors`` (exactly: the cache's
counters are checked against the calls the store saw), and once the fault is gone the
same cache, with the same store object, resumes sessions again: no restart needed.
"""
from __future__ import annotations

import multiprocessing
import os
import shutil
import sqlite3
import tempfile
import time

import pytest

from sesscache import SessionCache, SQLiteStore
from tests.reliability.helpers import HANDSHAKE_BOUND, CountingStore, client_for
from tests.reliability.traffic import Traffic
from tests.tls import TLS12

STORE_TIMEOUT = 0.1
PHASE = 0.3  # seconds of traffic in each phase


class Phases:
    """Runs traffic through named phases, remembering the cache's counters in each."""

    def __init__(self, traffic: Traffic, cache: SessionCache) -> None:
        self.traffic, self.cache = traffic, cache
        self.deltas = {}

    def run(self, name: str, seconds: float = PHASE) -> None:
        before = self.cache.stats.as_dict()
        self.traffic.enter(name, seconds)
        after = self.cache.stats.as_dict()
        self.deltas[name] = {k: after[k] - before[k] for k in after}

    def errors(self, name: str) -> int:
        return self.deltas[name]["errors"]

    def report(self) -> str:
        lines = []
        for name, summary in self.traffic.summary().items():
            delta = self.deltas.get(name, {})
            lines.append(f"{name:>12}: {summary}; errors +{delta.get('errors', 0)}, hits +{delta.get('hits', 0)}")
        return "\n".join(lines)


def _check(traffic: Traffic, cache: SessionCache, counting: CountingStore, phases: Phases) -> None:
    traffic.stop()
    report = phases.report()
    print(report)
    assert not traffic.failures, traffic.failures[0]
    assert traffic.slowest() < HANDSHAKE_BOUND, report
    counting.check(cache.stats)  # every fault counted, exactly
    assert cache.stats.rejected == 0 and cache.stats.expired == 0


def server_of(cache):
    return cache._test_server


def _with_traffic(stack, store, threads=3):
    counting = CountingStore(store)
    cache = SessionCache(counting, lifetime=600)
    server = stack.server_context(TLS12)
    cache.attach(server, internal_cache=False)
    cache._test_server = server
    traffic = Traffic(stack, server, threads=threads).start()
    return counting, cache, traffic, Phases(traffic, cache)


# --- Redis ------------------------------------------------------------------------------------


def test_redis_killed_restarted_paused_and_full_mid_run(stack, redis_servers):
    import redis

    from sesscache.stores.redis import RedisStore

    server = redis_servers()
    store = RedisStore(server.url, timeout=STORE_TIMEOUT)
    counting, cache, traffic, phases = _with_traffic(stack, store)
    try:
        phases.run("healthy")
        server.kill()  # SIGKILL: connections vanish, nothing answers
        phases.run("killed")
        server.start()  # same socket, empty (no persistence): the store must reconnect by itself
        phases.run("restarted")
        server.pause()  # SIGSTOP: connections stay open, nothing answers
        try:
            phases.run("paused")
        finally:
            server.resume()
        phases.run("resumed")
        raw = redis.Redis.from_url(server.url)
        for i in range(16):  # 1 MiB of other data, then a limit below what is in use:
            raw.set(b"fill:%d" % i, os.urandom(64 * 1024))
        raw.config_set("maxmemory-policy", "noeviction")
        raw.config_set("maxmemory", raw.info("memory")["used_memory"] // 2)
        with pytest.raises(redis.exceptions.ResponseError, match="OOM|maxmemory"):
            raw.set(b"probe", b"x")  # full: every write is refused, reads still work
        phases.run("full")
        raw.config_set("maxmemory", 0)
        raw.delete(*[b"fill:%d" % i for i in range(16)])
        raw.close()
        phases.run("settle", 0.2)
        phases.run("recovered")
    finally:
        traffic.stop()
        server.resume()
    _check(traffic, cache, counting, phases)
    for fault in ("killed", "paused", "full"):
        assert phases.errors(fault) > 0, f"no store error counted while Redis was {fault}"
    for healthy in ("healthy", "restarted", "resumed", "recovered"):
        assert traffic.resumed_in(healthy) > 0, f"nothing resumed while Redis was {healthy}\n{phases.report()}"
    # Calls already in flight when a fault ended may still fail ("settle"); after that, none.
    assert phases.errors("recovered") == 0, phases.report()


# --- memcached ----------------------------------------------------------------------------------


def test_memcached_killed_restarted_and_paused_mid_run(certs, memcached_servers):
    # The store layer is the same for every stack: the linked one is enough here.
    from sesscache.stores.memcached import MemcachedStore
    from tests.tls import LinkedStack

    stack = LinkedStack(certs)

    server = memcached_servers()
    store = MemcachedStore(server.spec, timeout=STORE_TIMEOUT)
    counting, cache, traffic, phases = _with_traffic(stack, store)
    try:
        phases.run("healthy")
        server.kill()
        phases.run("killed")
        server.start()
        phases.run("restarted")
        server.pause()
        try:
            phases.run("paused")
        finally:
            server.resume()
        phases.run("recovered")
    finally:
        traffic.stop()
        server.resume()
    _check(traffic, cache, counting, phases)
    for fault in ("killed", "paused"):
        assert phases.errors(fault) > 0, f"no store error counted while memcached was {fault}"
    for healthy in ("healthy", "restarted", "recovered"):
        assert traffic.resumed_in(healthy) > 0, f"nothing resumed while memcached was {healthy}\n{phases.report()}"


# --- SQLite -------------------------------------------------------------------------------------


def test_sqlite_locked_then_deleted_mid_run(stack, tmp_path):
    db = tmp_path / "sessions.db"
    store = SQLiteStore(db, timeout=STORE_TIMEOUT, recheck_interval=0.05)
    counting, cache, traffic, phases = _with_traffic(stack, store)
    try:
        phases.run("healthy")
        client = client_for(stack, TLS12)
        stored = stack.handshake(server_of(cache), client)
        stack.close(stored)
        holder = sqlite3.connect(db, isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")  # another process holding a write transaction
        holder.execute("INSERT INTO sesscache VALUES (x'00', x'00', 1e12)")
        try:
            phases.run("locked")
            # WAL: readers do not wait for the writer, so a session stored before resumes.
            during = stack.handshake(server_of(cache), client, stored.client_session)
            stack.close(during)
        finally:
            holder.execute("COMMIT")
            holder.close()
        phases.run("unlocked")
        for suffix in ("", "-wal", "-shm"):  # an operator "cleaning up" the file
            try:
                os.remove(str(db) + suffix)
            except FileNotFoundError:
                pass
        phases.run("deleted")
        phases.run("recovered")
    finally:
        traffic.stop()
    _check(traffic, cache, counting, phases)
    assert phases.errors("locked") > 0, phases.report()
    assert during.server_reused, "a stored session did not resume while a writer held the lock"
    for healthy in ("healthy", "unlocked", "deleted", "recovered"):
        assert traffic.resumed_in(healthy) > 0, f"nothing resumed in phase {healthy}\n{phases.report()}"
    assert db.exists(), "the store did not recreate the deleted file"


def _read_only_run(stack, directory, queue):
    """In a forked child: the contexts are made as root (the certificates are root's), then
    the child becomes nobody, for whom file permissions apply (root ignores them)."""
    try:
        server = stack.server_context(TLS12)
        client = client_for(stack, TLS12)
        if os.geteuid() == 0:
            os.setgid(65534)
            os.setuid(65534)
        path = os.path.join(directory, "sessions.db")
        counting = CountingStore(SQLiteStore(path, timeout=STORE_TIMEOUT, recheck_interval=0))
        cache = SessionCache(counting)
        cache.attach(server, internal_cache=False)
        result = {"slowest": 0.0, "resumed": {}, "errors": {}}

        def pairs(phase, count=15):
            before = cache.stats.errors
            resumed = 0
            for _ in range(count):
                start = time.monotonic()
                first = stack.handshake(server, client)
                again = stack.handshake(server, client, first.client_session)
                result["slowest"] = max(result["slowest"], time.monotonic() - start)
                resumed += again.server_reused
                stack.close(first)
                stack.close(again)
            result["resumed"][phase] = resumed
            result["errors"][phase] = cache.stats.errors - before

        pairs("healthy")
        # Read-only: the file is replaced by a read-only copy in a read-only directory
        # (no -wal/-shm can be made next to it); the store notices the new file and reopens.
        copy = path + ".ro"
        shutil.copyfile(path, copy)
        for suffix in ("-wal", "-shm"):
            if os.path.exists(path + suffix):
                os.remove(path + suffix)
        os.chmod(copy, 0o444)
        os.replace(copy, path)
        os.chmod(directory, 0o555)
        pairs("read-only")
        os.chmod(directory, 0o755)
        os.chmod(path, 0o644)
        pairs("writable")
        counting.check(cache.stats)
        result["stats"] = cache.stats.as_dict()
        queue.put(("ok", result))
    except BaseException as exc:
        import traceback

        queue.put(("raised", "".join(traceback.format_exception(exc))))


@pytest.fixture
def nobodys_dir():
    """A directory the unprivileged child owns (pytest's tmp_path is root's, mode 700)."""
    path = tempfile.mkdtemp(prefix="sesscache-reliability-ro-")
    os.chmod(path, 0o755)
    if os.geteuid() == 0:
        os.chown(path, 65534, 65534)
    yield path
    os.chmod(path, 0o755)
    shutil.rmtree(path, ignore_errors=True)


def test_sqlite_on_a_read_only_path_then_writable_again(stack, nobodys_dir):
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_read_only_run, args=(stack, nobodys_dir, queue))
    child.start()
    try:
        status, result = queue.get(timeout=120)
    finally:
        child.join(30)
    assert status == "ok", result
    print(result)
    assert child.exitcode == 0
    assert result["slowest"] < 2 * HANDSHAKE_BOUND  # two handshakes per pair
    assert result["resumed"]["healthy"] == 15
    assert result["resumed"]["read-only"] == 0 and result["errors"]["read-only"] > 0
    assert result["resumed"]["writable"] == 15 and result["errors"]["writable"] == 0
