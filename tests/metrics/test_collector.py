"""CacheCollector and TicketKeysCollector over real handshakes: what a Prometheus scrape
(text format, parsed by prometheus_client's own parser) reads equals the cache's counters
and what the clients saw."""
from __future__ import annotations

import subprocess
import sys

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from sesscache import MemoryStore, SessionCache, TicketKeys
from sesscache.errors import StoreError
from sesscache.metrics import CacheCollector, TicketKeysCollector
from sesscache.metrics._families import HELP
from tests.tls import TLS12, TLS13


def scrape(*collectors):
    """{(name, sorted label items): value} of a scrape, parsed as Prometheus parses it."""
    registry = CollectorRegistry(auto_describe=False)
    for collector in collectors:
        registry.register(collector)
    text = generate_latest(registry).decode()
    samples, helps = {}, {}
    for family in text_string_to_metric_families(text):
        helps[family.name] = family.documentation
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples, helps


def value(samples, name, **labels):
    return samples[(name, tuple(sorted(labels.items())))]


class PythonPathStore:
    """A three-method store: lookups go through Python (no C fast path), so the store call
    histogram sees them; ``down`` makes every call fail as a store that is down does."""

    def __init__(self):
        self.inner = MemoryStore()
        self.down = False

    def get(self, key):
        if self.down:
            raise StoreError("connection refused (the test took the store down)")
        return self.inner.get(key)

    def set(self, key, value, ttl):
        if self.down:
            raise StoreError("connection refused (the test took the store down)")
        self.inner.set(key, value, ttl)

    def delete(self, key):
        self.inner.delete(key)


@pytest.mark.parametrize("internal_cache", [True, False])
def test_a_scrape_equals_the_cache_counters_and_the_clients_resumptions(stack, version, internal_cache):
    store = PythonPathStore()
    a, b = SessionCache(store), SessionCache(store)
    server_a, server_b = stack.server_context(version), stack.server_context(version)
    a.attach(server_a, internal_cache=internal_cache)
    b.attach(server_b, internal_cache=internal_cache)
    client = stack.client_context()
    resumed_on = {"a": 0, "b": 0}
    offered_on = {"a": 0, "b": 0}
    for _ in range(3):
        first = stack.handshake(server_a, client)
        stack.close(first)
        session = first.client_session
        for name, server in (("a", server_a), ("b", server_b), ("b", server_b), ("a", server_a)):
            hs = stack.handshake(server, client, session)
            offered_on[name] += 1
            resumed_on[name] += hs.server_reused
            session = hs.client_session
            stack.close(hs)
    fresh = stack.handshake(server_a, client)  # a session B never held
    stack.close(fresh)
    session = fresh.client_session
    store.down = True  # two lookups that fail, and the writes of the full handshakes fail
    for _ in range(2):
        hs = stack.handshake(server_b, client, session)
        offered_on["b"] += 1
        resumed_on["b"] += hs.server_reused
        stack.close(hs)
    store.down = False
    for name, cache in (("a", a), ("b", b)):
        samples, helps = scrape(CacheCollector(cache))
        stats = cache.stats
        assert value(samples, "sesscache_lookups_total", result="hit") == stats.hits
        assert value(samples, "sesscache_sessions_stored_total") == stats.stores
        assert value(samples, "sesscache_session_removes_total") == stats.removes
        lookups = {r: value(samples, "sesscache_lookups_total", result=r)
                   for r in ("hit", "miss", "rejected", "expired", "error")}
        assert lookups["error"] + value(samples, "sesscache_sessions_not_stored_total", reason="error") \
            == stats.errors
        # What the clients saw, from OpenSSL's own counter.
        assert value(samples, "sesscache_openssl_resumed_total") == resumed_on[name]
        internal = value(samples, "sesscache_openssl_internal_hits_total")
        assert internal + lookups["hit"] == resumed_on[name]
        if not internal_cache:
            assert internal == 0
        assert value(samples, "sesscache_resumed_sessions_total") == resumed_on[name]
        assert value(samples, "sesscache_offered_sessions_total") >= offered_on[name]
        lookups_timed = value(samples, "sesscache_store_call_duration_seconds_count", operation="lookup")
        assert lookups_timed == sum(lookups.values())
        assert value(samples, "sesscache_store_call_duration_seconds_count", operation="write") \
            == stats.stores + cache.outcomes()["not_stored"]["error"]
    b_samples, _ = scrape(CacheCollector(b))
    assert value(b_samples, "sesscache_lookups_total", result="error") == 2
    assert value(b_samples, "sesscache_lookups_total", result="hit") >= 3
    assert resumed_on["b"] == 6  # every offer resumed while the store was up
    assert value(b_samples, "sesscache_sessions_not_stored_total", reason="error") == b.outcomes()["not_stored"]["error"]


def test_every_family_has_the_help_text_of_the_docs_table_and_prometheus_names():
    cache = SessionCache()
    samples, helps = scrape(CacheCollector(cache))
    for name, text in helps.items():
        assert name.startswith("sesscache_")
        assert text == HELP.get(name + "_total", HELP.get(name))
    assert "Can exceed sessions stored" in helps["sesscache_session_removes"]
    assert value(samples, "sesscache_lookups_total", result="hit") == 0


def test_removes_can_exceed_stores_and_the_help_says_why(stack):
    """B resumes sessions A stored (OpenSSL's in-process cache then holds them too) and drops
    each connection without close_notify: OpenSSL removes each of them, B stored none."""
    store = PythonPathStore()
    a, b = SessionCache(store), SessionCache(store)
    server_a, server_b = stack.server_context(TLS12), stack.server_context(TLS12)
    a.attach(server_a)
    b.attach(server_b)
    client = stack.client_context()
    for _ in range(3):
        first = stack.handshake(server_a, client)
        stack.close(first)
        hs = stack.handshake(server_b, client, first.client_session)
        assert hs.server_reused
        stack.close(hs, clean=False)
    samples, helps = scrape(CacheCollector(b))
    assert value(samples, "sesscache_sessions_stored_total") == 0
    assert value(samples, "sesscache_session_removes_total") == 3
    assert value(samples, "sesscache_lookups_total", result="hit") == 3
    assert "Can exceed sessions stored" in helps["sesscache_session_removes"]


def test_the_store_wrapper_breaker_and_queue_are_gauges(stack, version, store_factory):
    cache = SessionCache(store_factory("redis"))
    server = stack.server_context(version)
    cache.attach(server, internal_cache=False)
    client = stack.client_context()
    hs = stack.handshake(server, client)
    stack.close(hs)
    cache.store.flush(5)
    samples, _ = scrape(CacheCollector(cache))
    assert value(samples, "sesscache_store_paused") == 0
    assert value(samples, "sesscache_store_pending_writes") == 0
    assert value(samples, "sesscache_sessions_stored_total") == cache.stats.stores >= 1
    cache.close()


def test_ticket_keys_collector_counts_tickets_and_shows_the_ring(stack, version):
    keys = TicketKeys(MemoryStore(), rotate_every=3600)
    try:
        server = stack.server_context(version, tickets=True)
        keys.attach(server)
        client = stack.client_context()
        hs = stack.handshake(server, client)
        stack.close(hs)
        hs = stack.handshake(server, client, hs.client_session)
        assert hs.server_reused
        stack.close(hs)
        samples, helps = scrape(TicketKeysCollector(keys))
        stats = keys.stats
        assert value(samples, "sesscache_ticket_keys_issued_total") == stats.issued >= 1
        assert value(samples, "sesscache_ticket_keys_resumed_total") == stats.resumed == 1
        assert value(samples, "sesscache_ticket_keys_generation") >= 1
        assert 0 <= value(samples, "sesscache_ticket_keys_current_key_age_seconds") < 60
        assert value(samples, "sesscache_ticket_keys_local_key") == 0
    finally:
        keys.close()


def test_sesscache_imports_without_prometheus_client_and_the_collector_says_what_to_install():
    code = ("import sys; sys.modules['prometheus_client'] = None\n"
            "import sesscache, sesscache.metrics, sesscache.metrics.records\n"
            "from sesscache.errors import ConfigurationError\n"
            "try:\n    sesscache.metrics.CacheCollector(sesscache.SessionCache())\n"
            "except ConfigurationError as exc:\n    print(exc)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "pip install 'sesscache[metrics]'" in out.stdout


def test_a_forked_child_counts_its_own_handshakes_only(stack):
    """OpenSSL's counters live in the SSL_CTX, which a forked worker inherits with the
    parent's counts in it: the child starts from zero, as the cache's own counters do."""
    from tests.forking import run_in_forked_child

    cache = SessionCache()
    server = stack.server_context(TLS12)
    cache.attach(server)
    client = stack.client_context()
    first = stack.handshake(server, client)
    stack.close(first)
    for _ in range(3):
        hs = stack.handshake(server, client, first.client_session)
        assert hs.server_reused
        stack.close(hs)
    assert cache.openssl_counts()["hits"] == 3

    def child():
        before = cache.openssl_counts()["hits"]
        hs = stack.handshake(server, client, first.client_session)
        stack.close(hs)
        samples, _ = scrape(CacheCollector(cache))
        return before, value(samples, "sesscache_openssl_resumed_total"), hs.server_reused

    assert run_in_forked_child(child) == (0, 1, True)
    assert cache.openssl_counts()["hits"] == 3


def test_the_sessions_openssl_holds_are_a_gauge(stack, version):
    cache = SessionCache()
    server = stack.server_context(version)
    cache.attach(server, internal_cache=True)  # the gauge counts OpenSSL's internal cache
    client = stack.client_context()
    for _ in range(3):
        hs = stack.handshake(server, client)
        stack.close(hs)
    samples, _ = scrape(CacheCollector(cache))
    held = value(samples, "sesscache_openssl_cached_sessions")
    # TLS 1.2: one session per full handshake; TLS 1.3: one per stateful ticket (two each).
    assert held == (3 if version == TLS12 else 6)


def test_a_redis_local_replica_shows_its_size_and_when_it_last_heard_redis(stack, version, store_factory):
    import time

    redis = store_factory("redis", local_replica=100)
    assert redis._replica.wait_subscribed(10)
    # A store with a replica publishes its writes to every replica (one without does not).
    other = store_factory("redis", prefix=redis.prefix, local_replica=100)
    assert other._replica.wait_subscribed(10)
    writer, reader = SessionCache(other), SessionCache(redis)
    server = stack.server_context(version)
    writer.attach(server, internal_cache=False)
    reader.attach(stack.server_context(version), internal_cache=False)
    client = stack.client_context()
    started = time.time()
    hs = stack.handshake(server, client)
    stack.close(hs)
    writer.store.flush(5)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        samples, _ = scrape(CacheCollector(reader))
        if value(samples, "sesscache_replica_sessions") >= 1:
            break
        time.sleep(0.05)
    assert value(samples, "sesscache_replica_sessions") >= 1
    assert value(samples, "sesscache_replica_max_sessions") == 100
    assert value(samples, "sesscache_replica_last_message_timestamp_seconds") >= started - 1
    assert value(samples, "sesscache_replica_messages_total") >= 1
    writer.close()
    reader.close()
