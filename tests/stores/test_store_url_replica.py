"""A Redis store URL opens a store with a local replica by default (issue 22, "Redis at 0.8
by default"): what ``store_from_url("redis://...")`` and every server integration open.

Real handshakes between real OpenSSL endpoints, a real ``redis-server`` (``redis_url``): the
default is on and bounded (Redis Cluster's default, none: test_store_redis_fleet.py), its opt-outs, the fallback when the server's ACL does not allow
pub/sub (off, one warning, never an error), single-use lookups that go to Redis and stay
exact, and sessions made on one server context resumed on another through the copy.
"""
from __future__ import annotations

import logging
import os
import time
import uuid

import pytest

redis = __import__("redis") if os.environ.get("CI") else pytest.importorskip("redis")

from sesscache import SessionCache, store_from_url  # noqa: E402
from sesscache.errors import ConfigurationError  # noqa: E402
from sesscache.stores.urls import DEFAULT_URL_REPLICA  # noqa: E402
from tests.server_fixtures import unique_prefix  # noqa: E402
from tests.tls import STACKS, TLS12, TLS13  # noqa: E402


def _with_query(url: str, query: str) -> str:
    return url + ("&" if "?" in url else "?") + query


def _handshakes_across(stack, version, store_a, store_b, rounds=6, **cache_options):
    """Full handshakes on server A, each session offered to server B at once: how many B
    resumed, and the two caches (closed by the caller)."""
    caches = [SessionCache(store_a, **cache_options), SessionCache(store_b, **cache_options)]
    servers = []
    for cache in caches:
        servers.append(stack.server_context(version))
        cache.attach(servers[-1], internal_cache=False)
    client = stack.client_context()
    resumed = 0
    for _ in range(rounds):
        made = stack.handshake(servers[0], client)
        stack.close(made)
        again = stack.handshake(servers[1], client, made.client_session)
        resumed += again.server_reused
        stack.close(again)
    return resumed, caches


def test_a_redis_url_opens_a_bounded_replica_by_default(redis_url):
    store = store_from_url(redis_url, prefix=unique_prefix())
    try:
        assert store.replica is not None
        assert store.replica.max_sessions == DEFAULT_URL_REPLICA
        assert store.replica_optional  # the default: refused pub/sub is a warning
        assert store.replica.wait_subscribed(10)
    finally:
        store.close()
    # The bound holds: a copy of at most N sessions.
    small = store_from_url(_with_query(redis_url, "local_replica=3"), prefix=unique_prefix())
    try:
        for i in range(10):
            small.set(b"k%d" % i, b"v" * 100, 60)
        assert len(small.replica.table) <= 3
        assert small.get(b"k0") == b"v" * 100  # evicted from the copy: Redis answers
    finally:
        small.close()


@pytest.mark.parametrize("how", ["replica=off", "local_replica=0", "keyword"])
def test_the_replica_can_be_turned_off(redis_url, how):
    if how == "keyword":
        store = store_from_url(redis_url, local_replica=0)
    else:
        store = store_from_url(_with_query(redis_url, how))
    try:
        assert store.replica is None
        store.set(b"k", b"v", 60)
        assert store.get(b"k") == b"v"
    finally:
        store.close()


@pytest.mark.parametrize("url, message", [
    ("redis://127.0.0.1:6379/0?replica=maybe", "replica is on or off"),
    ("redis://127.0.0.1:6379/0?local_replica=-4", "local_replica is a number"),
    ("redis+cluster://127.0.0.1:7000,127.0.0.1:7001?local_replica=5", "Redis Cluster has no local replica"),
])
def test_bad_replica_options_are_named(url, message):
    with pytest.raises(ConfigurationError, match=message):
        store_from_url(url)


@pytest.mark.parametrize("version", [TLS12, TLS13])
@pytest.mark.parametrize("stack_name", sorted(STACKS))
def test_sessions_resume_on_another_server_through_the_default_replica(redis_url, certs, stack_name, version):
    stack = STACKS[stack_name](certs)
    prefix = unique_prefix()
    store_a, store_b = store_from_url(redis_url, prefix=prefix), store_from_url(redis_url, prefix=prefix)
    assert store_a.replica.wait_subscribed(10) and store_b.replica.wait_subscribed(10)
    resumed, caches = _handshakes_across(stack, version, store_a, store_b)
    try:
        assert resumed == 6
        # B answered from its copy (fed by A's PUBLISH): its lookups reached no Redis GET.
        assert caches[1].stats.hits == 6
        assert len(store_b.replica.table) >= 1
    finally:
        for cache in caches:
            cache.close()


@pytest.mark.parametrize("version", [TLS12, TLS13])
def test_single_use_goes_to_redis_and_stays_exact(redis_url, certs, version):
    """pop never reads the copy: a session resumes once, on either server, never twice."""
    stack = STACKS["pyopenssl"](certs)
    prefix = unique_prefix()
    store_a, store_b = store_from_url(redis_url, prefix=prefix), store_from_url(redis_url, prefix=prefix)
    assert store_a.replica.wait_subscribed(10) and store_b.replica.wait_subscribed(10)
    caches = [SessionCache(store_a, single_use=True), SessionCache(store_b, single_use=True)]
    servers = []
    for cache in caches:
        servers.append(stack.server_context(version))
        cache.attach(servers[-1], internal_cache=False)
    client = stack.client_context()
    try:
        for _ in range(4):
            made = stack.handshake(servers[0], client)
            stack.close(made)
            caches[0].store.flush(5)
            deadline = time.monotonic() + 5  # the session reached B's copy too
            while len(store_b.replica.table) == 0 and time.monotonic() < deadline:
                time.sleep(0.01)
            first = stack.handshake(servers[1], client, made.client_session)
            stack.close(first)
            second = stack.handshake(servers[0], client, made.client_session)
            stack.close(second)
            assert first.server_reused and not second.server_reused
            caches[1].store.flush(5)
    finally:
        for cache in caches:
            cache.close()


def _user_without_pubsub(redis_url) -> str:
    """A URL for a fresh ACL user allowed the session keys but no pub/sub."""
    admin = redis.Redis.from_url(redis_url)
    user, password = "sc-nopubsub-" + uuid.uuid4().hex[:8], "pw-" + uuid.uuid4().hex
    admin.acl_setuser(user, enabled=True, passwords=["+" + password], keys=["*"],
                      commands=["+@all", "-subscribe", "-publish", "-psubscribe", "-ssubscribe",
                                "-spublish"])
    admin.close()
    return _with_query(redis_url, f"username={user}&password={password}"), user


@pytest.mark.parametrize("version", [TLS12, TLS13])
def test_a_server_that_refuses_pub_sub_gets_no_replica_and_one_warning(redis_url, certs, caplog, version):
    url, user = _user_without_pubsub(redis_url)
    stack = STACKS["pyopenssl"](certs)
    prefix = unique_prefix()
    store_a, store_b = store_from_url(url, prefix=prefix), store_from_url(url, prefix=prefix)
    try:
        with caplog.at_level(logging.WARNING, logger="sesscache"):
            deadline = time.monotonic() + 10  # SUBSCRIBE is refused in the subscriber thread
            while store_b.replica is not None and time.monotonic() < deadline:
                time.sleep(0.01)
            resumed, caches = _handshakes_across(stack, version, store_a, store_b)
            for cache in caches:
                assert cache.store.flush(5)
        assert store_a.replica is None and store_b.replica is None
        assert resumed == 6  # through Redis
        for cache in caches:
            assert cache.stats.errors == 0
            stats = cache.store.stats
            assert stats.write_errors == 0 and stats.lookup_errors == 0 and stats.pauses == 0, stats
        assert caches[0].store.stats.writes >= 6  # A's sessions landed in Redis
        said = [r for r in caplog.records if "+publish +subscribe" in r.getMessage()]
        assert len(said) == 2, caplog.text  # one per store (each is a process's copy)
        assert all(r.levelno == logging.WARNING for r in said), caplog.text
        assert {id(r) for r in said} == {id(r) for r in caplog.records if "replica" in r.getMessage()}
        assert "password" not in caplog.text and "pw-" not in caplog.text
        for cache in caches:
            cache.close()
    finally:
        admin = redis.Redis.from_url(redis_url)
        admin.acl_deluser(user)
        admin.close()


@pytest.mark.parametrize("version", [TLS12, TLS13])
def test_a_copy_turned_off_by_a_refused_publish_takes_nothing_more_from_c(redis_url, certs, caplog, version):
    """An ACL user allowed SUBSCRIBE but not PUBLISH: the copy subscribes, then the first
    write's PUBLISH is refused and the store turns the copy off. Its table is closed, not
    only emptied: the cache's C fast path steps aside, and the handshakes after it leave no
    session in the table (a merely emptied one went on taking this process's new sessions
    from C, decoded too, with no deletes arriving: seen in CI as 100 live SSL_SESSIONs
    held through the refusal's log record)."""
    admin = redis.Redis.from_url(redis_url)
    user, password = "sc-nopublish-" + uuid.uuid4().hex[:8], "pw-" + uuid.uuid4().hex
    admin.acl_setuser(user, enabled=True, passwords=["+" + password], keys=["*"], channels=["*"],
                      commands=["+@all", "-publish", "-spublish"])
    stack = STACKS["pyopenssl"](certs)
    store = store_from_url(_with_query(redis_url, f"username={user}&password={password}"),
                           prefix=unique_prefix())
    try:
        replica = store.replica
        assert replica is not None and replica.wait_subscribed(10)
        cache = SessionCache(store)
        server = stack.server_context(version)
        cache.attach(server)
        client = stack.client_context()
        with caplog.at_level(logging.WARNING, logger="sesscache"):
            stack.close(stack.handshake(server, client))
            assert cache.store.flush(5)  # the write whose PUBLISH is refused
            assert store.replica is None and replica.closed
            session = stack.full_then_resumed(server, client).client_session
            stack.resume_repeatedly(server, client, session, 10)
            assert cache.store.flush(5)
        assert replica.table.describe()["entries"] == 0 and replica.table.describe()["decoded"] == 0
        assert cache.stats.errors == 0
        stats = cache.store.stats
        assert stats.write_errors == 0 and stats.lookup_errors == 0 and stats.pauses == 0, stats
        assert any("refuses PUBLISH" in r.getMessage() for r in caplog.records), caplog.text
        cache.close()
    finally:
        admin.acl_deluser(user)
        admin.close()


def test_the_docs_snippet_runs_as_written():
    """docs/stores.md's opt-out example, taken from the page's own text."""
    import pathlib
    import re

    page = (pathlib.Path(__file__).resolve().parents[2] / "docs" / "stores.md").read_text()
    section = page[page.index("### Redis URLs open a local replica"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert "replica=off" in code
    exec(compile(code, "docs/stores.md", "exec"), {})
