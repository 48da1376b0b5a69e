"""A sick network store, as a user gets it: ``SessionCache(RedisStore(url))`` (and memcached),
default arguments, under handshake traffic while the server is killed, restarted, paused and
(Redis) full.

``SessionCache`` wraps a network store in a ``ResilientStore``: new sessions are written
behind the handshake and a store that keeps failing is paused for every thread. So: every
handshake completes; once the store is known to be sick no handshake waits for it (the calls
that still reach it are the first ``trip_after`` and one trial per ``retry_after``); the
cache's counters and the wrapper's add up exactly; and the cache resumes again by itself.
"""
from __future__ import annotations

import pytest

from sesscache import SessionCache
from sesscache.stores import ResilientStore
from sesscache.stores.breaker import DEFAULT_RETRY_AFTER, DEFAULT_TRIP_AFTER
from tests.reliability.helpers import HANDSHAKE_BOUND
from tests.reliability.traffic import Traffic
from tests.server_fixtures import _need_module
from tests.tls import TLS12, LinkedStack

STORE_TIMEOUT = 0.05  # RedisStore's and MemcachedStore's default
THREADS = 3
PHASE = 0.4
RECOVERY = DEFAULT_RETRY_AFTER + 0.5  # a pause ends at the first trial call after retry_after


def _store(kind, request):
    if kind == "redis":
        _need_module("redis")
        from sesscache.stores.redis import RedisStore

        server = request.getfixturevalue("redis_servers")()
        return server, RedisStore(server.url)
    _need_module("pymemcache")
    from sesscache.stores.memcached import MemcachedStore

    server = request.getfixturevalue("memcached_servers")()
    return server, MemcachedStore(server.spec)


def _fill(server) -> None:
    """maxmemory below what is in use, noeviction: every write is refused, reads work."""
    import redis

    raw = redis.Redis.from_url(server.url)
    raw.config_set("maxmemory-policy", "noeviction")
    raw.config_set("maxmemory", max(1, raw.info("memory")["used_memory"] // 2))
    raw.close()


def _empty(server) -> None:
    import redis

    raw = redis.Redis.from_url(server.url)
    raw.config_set("maxmemory", 0)
    raw.close()


class Phases:
    def __init__(self, traffic: Traffic, store: ResilientStore) -> None:
        self.traffic, self.store = traffic, store
        self.deltas = {}

    def run(self, name: str, seconds: float = PHASE, fault=None) -> None:
        """Traffic in phase ``name``; ``fault`` (kill, pause...) runs first, inside the
        phase's counting (a dead server trips the breaker within milliseconds)."""
        before = self.store.stats.as_dict()
        self.traffic.phase = name
        if fault is not None:
            fault()
        self.traffic.enter(name, seconds)
        after = self.store.stats.as_dict()
        self.deltas[name] = {k: after[k] - before[k] for k in after}

    def report(self) -> str:
        return "\n".join(f"{name:>10}: {summary}; {self.deltas.get(name)}"
                         for name, summary in self.traffic.summary().items())


@pytest.mark.parametrize("kind", [pytest.param("redis", marks=pytest.mark.needs_redis),
                                  pytest.param("memcached", marks=pytest.mark.needs_memcached)])
def test_default_network_store_killed_restarted_paused(kind, request, certs):
    stack = LinkedStack(certs)  # the store layer is the same for every stack
    server, backend = _store(kind, request)
    assert backend.timeout == STORE_TIMEOUT
    cache = SessionCache(backend, lifetime=600)
    store = cache.store
    assert isinstance(store, ResilientStore) and store.backend is backend  # the default
    context = stack.server_context(TLS12)
    cache.attach(context, internal_cache=False)  # every resumption is a store lookup
    traffic = Traffic(stack, context, threads=THREADS).start()
    phases = Phases(traffic, store)
    try:
        phases.run("healthy")
        phases.run("killed", fault=server.kill)
        # empty, same address: the cache must find it again by itself
        phases.run("restarted", RECOVERY, fault=server.start)
        try:
            phases.run("paused", RECOVERY, fault=server.pause)
        finally:
            server.resume()
        phases.run("recovered", RECOVERY)
        if kind == "redis":
            phases.run("full", RECOVERY, fault=lambda: _fill(server))
            phases.run("emptied", RECOVERY, fault=lambda: _empty(server))
    finally:
        traffic.stop()
        server.resume()
    report = phases.report()
    print(report)
    assert not traffic.failures, traffic.failures[0]
    assert traffic.slowest() < HANDSHAKE_BOUND, report
    for healthy in ("healthy", "restarted", "recovered"):
        assert traffic.resumed_in(healthy) > 0, f"nothing resumed while {kind} was {healthy}\n{report}"
    if kind == "redis":  # refused writes (OOM) pause the store like any fault, named in the log
        assert phases.deltas["full"]["write_errors"] > 0 and phases.deltas["full"]["pauses"] >= 1, report
        assert traffic.resumed_in("emptied") > 0, report
    for fault in ("killed", "paused"):
        delta = phases.deltas[fault]
        assert delta["pauses"] >= 1 and delta["lookups_shed"] > 0, report
        # Calls that still met the sick store: the first trip_after, then one trial per
        # retry_after (plus a call in flight per thread when the fault began).
        # (A batch of queued writes is one call: write_calls_failed, not write_errors.)
        tried = delta["lookup_errors"] + delta["write_calls_failed"]
        assert tried <= DEFAULT_TRIP_AFTER + THREADS + 2 * (RECOVERY / DEFAULT_RETRY_AFTER + 1), report
    assert store.flush(5)
    stats, counts = cache.stats, store.stats
    # The two sets of counters add up, exactly.
    assert stats.errors == counts.lookup_errors + counts.lookups_shed + counts.writes_dropped, (stats, counts)
    assert stats.stores == counts.writes_queued, (stats, counts)
    assert stats.hits + stats.misses + stats.rejected + stats.expired == counts.lookups + counts.pending_hits
    assert counts.writes_queued == counts.writes + counts.write_errors + counts.writes_shed + counts.writes_expired
    assert counts.pending == 0 and counts.paused_now == 0
    assert phases.deltas["recovered"]["lookup_errors"] == 0, report
    cache.close()
