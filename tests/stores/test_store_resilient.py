"""ResilientStore: the store contract still holds with writes behind and a breaker, and a sick
Redis (paused, killed, restarted) never makes a caller wait more than the first few timeouts.

The store contract itself runs over wrapped stores in test_store_contract.py."""
from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from sesscache import SessionCache
from sesscache.errors import ConfigurationError, StoreError, StorePaused
from sesscache.stores import MemoryStore, ResilientStore
from tests.forking import run_in_forked_child
from tests.server_fixtures import _need_module, unique_prefix

TIMEOUT = 0.05


# -- write-behind -------------------------------------------------------------------------------


class SlowStore(MemoryStore):
    """A MemoryStore whose writes wait on an event: the queue fills while it is held."""

    def __init__(self):
        super().__init__()
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def set(self, key, value, ttl):
        self.entered.set()
        self.gate.wait(10)
        super().set(key, value, ttl)


def test_writes_wait_in_the_queue_and_are_answered_from_it():
    backend = SlowStore()
    store = ResilientStore(backend, max_pending_writes=3, write_wait=0)  # always queued
    backend.gate.clear()
    store.set(b"a", b"1", 60)  # taken by the writer, which now waits on the gate
    assert backend.entered.wait(10)
    store.set(b"b", b"2", 60)
    store.set(b"c", b"3", 60)
    store.set(b"d", b"4", 60)
    with pytest.raises(StoreError, match="max_pending_writes"):
        for i in range(3):
            store.set(b"e%d" % i, b"5", 60)
    assert backend.get(b"b") is None  # not landed...
    assert store.get(b"b") == b"2"  # ...but this process answers for it
    assert store.pop(b"c") == b"3" and store.get(b"c") is None  # taken once, a delete queued
    backend.gate.set()
    assert store.flush(5)
    assert backend.get(b"b") == b"2" and backend.get(b"c") is None
    stats = store.stats
    assert stats.writes_dropped >= 1 and stats.pending == 0
    assert stats.writes_queued == stats.writes + stats.write_errors + stats.writes_shed + stats.writes_expired
    store.close()


class DelayedStore(MemoryStore):
    delay = 0.0

    def set(self, key, value, ttl):
        time.sleep(self.delay)
        super().set(key, value, ttl)


def test_writes_go_behind_once_the_store_is_slow_and_inline_again_once_it_is_fast():
    backend = DelayedStore()
    store = ResilientStore(backend, write_wait=0.05, trip_after=2)
    backend.delay = 0.3  # slower than write_wait
    for i in range(4):
        store.set(b"slow%d" % i, b"v", 60)
        assert store.flush(5)
    assert store.stats.write_waits == 2  # trip_after slow writes inline, then queued
    backend.delay = 0.0
    store.set(b"fast", b"v", 60)  # queued, but lands fast: inline writes resume
    assert store.flush(5)
    store.set(b"next", b"v", 60)
    assert store.stats.write_waits == 3
    store.close()


def test_close_flushes_then_refuses():
    backend = MemoryStore()
    store = ResilientStore(backend)
    for i in range(200):
        store.set(b"k%d" % i, b"v", 60)
    store.close()  # the queue is flushed before the backend is closed
    assert store.stats.writes == 200 and store.stats.pending == 0
    store.close()  # idempotent
    with pytest.raises(StoreError, match="closed"):
        store.get(b"k1")
    with pytest.raises(StoreError, match="closed"):
        store.set(b"k1", b"v", 60)


def test_bad_arguments_are_refused():
    for kwargs in ({"max_pending_writes": 0}, {"trip_after": 0}, {"retry_after": -1},
                   {"flush_timeout": float("nan")}):
        with pytest.raises(ConfigurationError):
            ResilientStore(MemoryStore(), **kwargs)
    with pytest.raises(ConfigurationError):
        ResilientStore(object())
    with pytest.raises(ConfigurationError):
        ResilientStore(ResilientStore(MemoryStore()))


# -- a sick Redis ---------------------------------------------------------------------------------


def _redis_store(server, **kwargs):
    _need_module("redis")
    from sesscache.stores.redis import RedisStore

    return ResilientStore(RedisStore(server.url, timeout=TIMEOUT), **kwargs)


@pytest.mark.needs_redis
def test_paused_redis_is_paused_for_every_caller_and_recovers_by_itself(redis_servers, caplog):
    server = redis_servers()
    store = _redis_store(server, trip_after=3, retry_after=0.3)
    store.set(b"k", b"v", 60)
    assert store.flush(5) and store.get(b"k") == b"v"
    caplog.set_level(logging.INFO, logger="sesscache.stores.resilient")
    server.pause()
    try:
        outcomes = []
        for _ in range(3):  # these wait the timeout: the store is not known to be sick yet
            with pytest.raises(StoreError) as info:
                store.get(b"k")
            outcomes.append(type(info.value))
        assert StorePaused not in outcomes
        waited = []
        for _ in range(50):  # paused: no call reaches Redis, nobody waits
            start = time.monotonic()
            with pytest.raises(StorePaused):
                store.get(b"other")
            waited.append(time.monotonic() - start)
        for i in range(20):  # writes go behind: the caller never waits, the writer sheds them
            store.set(b"new%d" % i, b"v", 60)
        stats = store.stats
        assert stats.pauses == 1 and stats.paused_now == 1 and stats.lookups_shed == 50
        assert stats.lookup_errors == 3
        # Other threads see the same pause (one breaker for all callers).
        seen = []
        t = threading.Thread(target=lambda: seen.append(_raises(store.get, b"x")))
        t.start()
        t.join()
        assert seen == [StorePaused]
        pauses = [r for r in caplog.records if "failed 3 times in a row" in r.getMessage()]
        assert len(pauses) == 1  # logged once per pause
    finally:
        server.resume()
    time.sleep(0.35)  # retry_after: the next call is the trial, and Redis answers again
    assert store.get(b"k") == b"v"
    assert store.stats.paused_now == 0
    assert any("answers again" in r.getMessage() for r in caplog.records)
    store.set(b"after", b"v", 60)
    assert store.flush(5)
    assert store.backend.get(b"after") == b"v"
    stats = store.stats
    assert stats.writes_queued == stats.writes + stats.write_errors + stats.writes_shed + stats.writes_expired
    store.close()


def _raises(call, *args):
    try:
        call(*args)
    except Exception as exc:
        return type(exc)
    return None


@pytest.mark.needs_redis
def test_killed_then_restarted_redis(redis_servers):
    server = redis_servers()
    store = _redis_store(server, trip_after=2, retry_after=0.2)
    store.set(b"k", b"v", 60)
    assert store.flush(5)
    server.kill()
    for _ in range(10):
        assert _raises(store.get, b"k") in (StoreError, StorePaused)
    assert store.stats.pauses == 1
    server.start()  # empty: no persistence
    time.sleep(0.25)
    assert store.get(b"k") is None  # the trial call: answered, the pause ends
    store.set(b"k2", b"v2", 60)
    assert store.flush(5) and store.backend.get(b"k2") == b"v2"
    store.close()


@pytest.mark.needs_redis
def test_forked_child_writes_through_its_own_writer(redis_url):
    _need_module("redis")
    from sesscache.stores.redis import RedisStore

    store = ResilientStore(RedisStore(redis_url, prefix=unique_prefix(), timeout=5))
    store.set(b"parent", b"p", 60)  # the parent's writer thread is running when it forks
    assert store.flush(5)
    def child():
        store.set(b"child", b"c", 60)
        return store.flush(5), store.get(b"parent"), store.stats.pending

    assert run_in_forked_child(child) == (True, b"p", 0)
    assert store.backend.get(b"child") == b"c"
    store.set(b"parent2", b"p2", 60)  # the parent's writer still works
    assert store.flush(5) and store.backend.get(b"parent2") == b"p2"
    store.close()


@pytest.mark.needs_redis
def test_queued_writes_land_at_interpreter_exit(redis_url):
    _need_module("redis")
    prefix = unique_prefix()
    script = textwrap.dedent(f"""
        from sesscache.stores import ResilientStore
        from sesscache.stores.redis import RedisStore
        store = ResilientStore(RedisStore({redis_url!r}, prefix={prefix!r}, timeout=5))
        for i in range(300):
            store.set(b"k%d" % i, b"v", 60)
    """)
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    from sesscache.stores.redis import RedisStore

    check = RedisStore(redis_url, prefix=prefix, timeout=5)
    assert all(check.get(b"k%d" % i) == b"v" for i in range(300))
    check.close()


def test_session_cache_wraps_network_stores_only(redis_url):
    _need_module("redis")
    from sesscache.stores.redis import RedisStore

    redis_store = RedisStore(redis_url, prefix=unique_prefix(), timeout=5)
    cache = SessionCache(redis_store)
    assert isinstance(cache.store, ResilientStore) and cache.store.backend is redis_store
    assert "resilience" in cache.store.describe()
    cache.close()
    memory = MemoryStore()
    assert SessionCache(memory).store is memory
    mine = ResilientStore(RedisStore(redis_url, prefix=unique_prefix(), timeout=5), trip_after=2)
    assert SessionCache(mine).store is mine  # configured by the user: used as is
    mine.close()
