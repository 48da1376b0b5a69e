"""Oversized values are refused without being read whole (issue 23 item 5).

A value written by hand under a session's key, far larger than anything sesscache
writes, was read whole on every lookup: 64 MiB cost 164 to 280 ms and 290 MB of peak
memory per lookup with Redis, 108 to 422 ms with SQLite. Now Redis reads at most
``max_value_bytes + 1`` bytes (GETRANGE pipelined with EXISTS: one round trip), SQLite
reads none of it (length() of a BLOB), memcached's item size bounds it; the value is a
miss, counted in ``oversize_reads`` and logged once per burst.

Real redis-server, SQLite files and memcached; the poisoned values are made by the
servers themselves (SETRANGE, zeroblob), never in this process.
"""
from __future__ import annotations

import logging
import sqlite3
import time
import tracemalloc

import pytest

from sesscache import SessionCache
from sesscache.stores import SQLiteStore
from sesscache.stores._read_bounds import DEFAULT_MAX_VALUE_BYTES

from tests.fleet_fixtures import redis_tls  # noqa: F401 (a fixture)
from tests.server_fixtures import unique_prefix
from tests.tls import STACKS, TLS12, TLS13

MIB = 1024 * 1024
POISON = 8 * MIB


def _poison_redis(store, key, size):
    import redis

    raw = redis.Redis.from_url(store._url) if hasattr(store, "_url") else store.client
    name = store.prefix + key
    raw.delete(name)
    raw.setrange(name, size - 1, b"x")  # made by the server: size bytes
    raw.expire(name, 600)


def _poison_sqlite(store, key, size):
    store.set(b"the table", b"x", 60)
    conn = sqlite3.connect(store.path)
    with conn:
        conn.execute("INSERT OR REPLACE INTO sesscache (key, value, expires) VALUES (?, zeroblob(?), ?)",
                     (key, size, time.time() + 600))
    conn.close()


def _make(kind, store_factory):
    return store_factory(kind)


def _poison(kind, store, key, size):
    (_poison_redis if kind == "redis" else _poison_sqlite)(store, key, size)


def _redis_bytes_sent(store):
    return int(store.client.info("stats")["total_net_output_bytes"])


@pytest.mark.parametrize("kind", [pytest.param("redis", marks=pytest.mark.needs_redis), "sqlite"])
def test_an_oversized_value_is_a_counted_miss_read_no_further_than_the_limit(kind, store_factory, caplog):
    store = _make(kind, store_factory)
    assert store.max_value_bytes == DEFAULT_MAX_VALUE_BYTES == MIB
    _poison(kind, store, b"poisoned", POISON)
    store.get(b"warm-up")
    sent = _redis_bytes_sent(store) if kind == "redis" else 0
    tracemalloc.start()
    with caplog.at_level(logging.WARNING, logger="sesscache.stores"):
        assert [store.get(b"poisoned") for _ in range(3)] == [None, None, None]
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert store.oversize_reads == 3
    assert peak < 3 * MIB, f"{peak} bytes at the peak of reading an {POISON}-byte value"
    if kind == "redis":
        # What the server sent for the 3 lookups (and the INFO call): the limit's worth each.
        assert _redis_bytes_sent(store) - sent < 3 * (MIB + 4096) + 64 * 1024
    refusals = [r for r in caplog.records if "refused a stored value" in r.getMessage()]
    assert len(refusals) == 1, "once per burst"
    assert "max_value_bytes=1048576" in refusals[0].getMessage()


@pytest.mark.parametrize("kind", [pytest.param("redis", marks=pytest.mark.needs_redis), "sqlite"])
def test_values_up_to_the_limit_and_empty_values_are_read_whole(kind, store_factory):
    store = _make(kind, store_factory)
    store.max_value_bytes = 4096
    for size in (0, 1, 4095, 4096):
        value = bytes(range(256)) * (size // 256) + bytes(size % 256)
        store.set(b"k%d" % size, value, 60)
        assert store.get(b"k%d" % size) == value
    store.set(b"over", b"x" * 4097, 60)
    assert store.get(b"over") is None and store.oversize_reads == 1
    assert store.get(b"missing") is None and store.oversize_reads == 1


def test_an_expired_oversized_sqlite_row_is_neither_read_nor_returned(tmp_path):
    store = SQLiteStore(str(tmp_path / "s.db"))
    _poison_sqlite(store, b"old", POISON)
    conn = sqlite3.connect(store.path)
    with conn:
        conn.execute("UPDATE sesscache SET expires = 1 WHERE key = ?", (b"old",))
    conn.close()
    assert store.get(b"old") is None
    store.set(b"small", b"v", 60)
    conn = sqlite3.connect(store.path)
    with conn:
        conn.execute("UPDATE sesscache SET expires = 1 WHERE key = ?", (b"small",))
    conn.close()
    assert store.get(b"small") is None, "expired small values are still misses"
    store.close()


@pytest.mark.needs_memcached
def test_memcached_refuses_a_value_over_its_limit(memcached_servers):
    from sesscache.stores.memcached import MemcachedStore

    server = memcached_servers(extra_args=["-I", "8m"])
    prefix = unique_prefix()
    writer = MemcachedStore(server.spec, prefix=prefix, max_value_bytes=4 * MIB)
    reader = MemcachedStore(server.spec, prefix=prefix)  # the default limit, 1 MiB
    writer.set(b"big", b"x" * (2 * MIB), 60)
    writer.set(b"fits", b"y" * MIB, 60)
    assert writer.get(b"big") == b"x" * (2 * MIB)
    assert reader.get(b"big") is None and reader.oversize_reads == 1
    assert reader.get(b"fits") == b"y" * MIB
    writer.close()
    reader.close()


@pytest.mark.needs_redis
def test_acl_user_without_getrange_falls_back_to_whole_reads_and_says_what_to_grant(redis_tls, caplog):
    from tests.fleet_fixtures import ACL_USER
    from sesscache.stores.redis import RedisStore

    plain = RedisStore(redis_tls.url(), ssl_ca_certs=redis_tls.ca_path, prefix=unique_prefix(), timeout=2)
    plain.set(b"k", b"v", 60)
    with caplog.at_level(logging.WARNING, logger="sesscache.stores.redis"):
        assert plain.get(b"k") == b"v" and plain.get(b"k") == b"v"
    assert "grant +getrange +exists" in caplog.text and caplog.text.count("grant +getrange") == 1
    bounded = RedisStore(redis_tls.url(user=f"{ACL_USER}-bounded"), ssl_ca_certs=redis_tls.ca_path,
                         prefix=plain.prefix, timeout=2)
    bounded.max_value_bytes = 1
    assert bounded.get(b"k") == b"v" and bounded.get(b"missing") is None
    plain.set(b"two", b"vv", 60)
    assert bounded.get(b"two") is None and bounded.oversize_reads == 1
    assert bounded._bounded_reads, "the user with +getrange +exists reads bounded"
    plain.close()
    bounded.close()


def _session_keys(kind, store):
    """Every key the cache wrote (TLS 1.3: two sessions per full handshake)."""
    if kind == "redis":
        keys = [k[len(store.prefix):] for k in store.client.scan_iter(match=store.prefix + b"*")]
    else:
        conn = sqlite3.connect(store.path)
        keys = [row[0] for row in conn.execute("SELECT key FROM sesscache WHERE key != ?", (b"the table",))]
        conn.close()
    assert keys
    return keys


@pytest.mark.parametrize("stack_name", ["pyopenssl", "stdlib"])
@pytest.mark.parametrize("version", [TLS12, TLS13])
@pytest.mark.parametrize("kind", [pytest.param("redis", marks=pytest.mark.needs_redis), "sqlite"])
def test_a_poisoned_session_is_a_full_handshake_and_a_counted_refusal(kind, version, stack_name, certs,
                                                                      store_factory):
    stack = STACKS[stack_name](certs)
    store = _make(kind, store_factory)
    cache = SessionCache(store)
    server, client = stack.server_context(version), stack.client_context()
    cache.attach(server, internal_cache=False)  # every lookup goes to the store
    hs = stack.handshake(server, client)
    session = hs.client_session
    stack.close(hs)
    if hasattr(cache.store, "flush"):
        cache.store.flush(5)
    keys = _session_keys(kind, store)
    hs = stack.handshake(server, client, session=session)
    assert hs.server_reused, "untouched, it resumes"
    stack.close(hs)
    for key in keys:
        _poison(kind, store, key, POISON)
    hs = stack.handshake(server, client, session=session)
    assert not hs.server_reused
    stack.close(hs)
    # >= 1: a session issued moments ago is polled for while its write may be on its way.
    assert store.oversize_reads >= 1
    assert cache.stats.misses >= 1 and cache.stats.errors == 0
    cache.close()


@pytest.mark.needs_redis
def test_the_asyncio_redis_store_reads_bounded_too(redis_url):
    import asyncio

    from sesscache.stores.redis import AsyncRedisStore

    async def run():
        store = AsyncRedisStore(redis_url, prefix=unique_prefix())
        store.max_value_bytes = 4
        await store.set(b"fits", b"1234", 60)
        await store.set(b"over", b"12345", 60)
        await store.set(b"empty", b"", 60)
        got = [await store.get(k) for k in (b"fits", b"over", b"empty", b"missing")]
        await store.close()
        return got, store.oversize_reads

    assert asyncio.run(run()) == ([b"1234", None, b"", None], 1)
