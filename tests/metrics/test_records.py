"""Per-process records in every shared store kind: published, listed through their own index
(no store lists keys; memcached cannot), bounded, expiring, closed at close, silent after fork."""
from __future__ import annotations

import json
import os
import time

import pytest

from sesscache import SessionCache
from sesscache.errors import ConfigurationError
from sesscache.metrics import records
from sesscache.metrics.records import INDEX_KEY, RecordPublisher, publisher_for_cache, read_records
from tests.forking import run_in_forked_child

SHARED = ["sqlite", "redis", "memcached"]


def fixed(**counters):
    return lambda: {"lookups": {"hit": counters.get("hit", 0), "miss": counters.get("miss", 0)},
                    "openssl": {"hits": counters.get("resumed", 0), "timeouts": 0}}


@pytest.mark.parametrize("kind", SHARED)
def test_processes_publish_and_stats_lists_each_once(kind, store_factory):
    store = store_factory(kind)
    one = RecordPublisher(store, fixed(hit=3, resumed=5, miss=1), server="shop", interval=60, start=False)
    two = RecordPublisher(store, fixed(resumed=7), server="shop", interval=60, start=False)
    other = RecordPublisher(store, fixed(), server="admin", interval=60, start=False)
    for publisher in (one, two, other, one):  # a second publish replaces, never adds
        assert publisher.publish()
    found = read_records(store)
    assert sorted((r["server"], r["counters"]["openssl"]["hits"]) for r in found) == \
        [("admin", 0), ("shop", 5), ("shop", 7)]
    assert {r["pid"] for r in found} == {os.getpid()}
    assert all(r["host"] == one.host and not r["closed"] for r in found)
    one.close()
    closed = [r for r in read_records(store) if r["counters"]["openssl"]["hits"] == 5]
    assert closed and closed[0]["closed"]
    assert not one.publish()  # closed for good


@pytest.mark.parametrize("kind", SHARED)
def test_the_index_drops_expired_entries_and_stays_bounded(kind, store_factory, monkeypatch):
    store = store_factory(kind)
    monkeypatch.setattr(records, "MAX_RECORDS", 3)
    stale = {RECORD.decode(): time.time() - 1 for RECORD in (b"sc1-record:gone-1", b"sc1-record:gone-2")}
    store.set(INDEX_KEY, json.dumps(stale).encode(), 60)
    publishers = [RecordPublisher(store, fixed(resumed=n), server="s", interval=60, start=False) for n in range(5)]
    for publisher in publishers:
        assert publisher.publish()
    index = json.loads(store.get(INDEX_KEY))
    assert len(index) == 3
    assert not any(key.startswith("sc1-record:gone") for key in index)
    assert publishers[-1].key.decode() in index


def test_a_damaged_index_is_rebuilt(store_factory):
    store = store_factory("sqlite")
    store.set(INDEX_KEY, b"\xff not json", 60)
    publisher = RecordPublisher(store, fixed(resumed=1), server="s", interval=60, start=False)
    assert publisher.publish()
    assert [r["counters"]["openssl"]["hits"] for r in read_records(store)] == [1]


def test_the_thread_publishes_every_interval_and_a_forked_child_does_not_publish_the_parents(store_factory):
    store = store_factory("sqlite")
    cache = SessionCache(store)
    publisher = publisher_for_cache(cache, server="s", interval=0.1)
    try:
        deadline = time.monotonic() + 10
        while publisher.published < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert publisher.published >= 3
        assert [r["pid"] for r in read_records(store)] == [os.getpid()]
        child = run_in_forked_child(lambda: (publisher.publish(), publisher.published, os.getpid()))
        assert child[0] is False and child[1] == 0
        assert [r["pid"] for r in read_records(store)] == [os.getpid()]
    finally:
        publisher.close()


def test_an_unreachable_store_is_counted_and_logged_never_raised(redis_servers, caplog):
    from sesscache.stores.redis import RedisStore

    server = redis_servers()
    store = RedisStore(server.url, timeout=0.5)
    publisher = RecordPublisher(store, fixed(), server="s", interval=60, start=False)
    assert publisher.publish()
    server.kill()
    assert not publisher.publish()
    assert publisher.failures == 1
    assert "could not publish this process's counters" in caplog.text
    store.close()


def test_records_and_metrics_need_a_shared_store():
    from sesscache.integrations._process import ProcessCache

    with pytest.raises(ConfigurationError, match="need a store the workers share"):
        ProcessCache("memory", session_id_context="s", process_records=True)
    with pytest.raises(ConfigurationError, match="HOST:PORT"):
        ProcessCache("sqlite:/tmp/x.db", session_id_context="s", metrics_listen="9464")
    with pytest.raises(ConfigurationError, match="records_interval"):
        ProcessCache("sqlite:/tmp/x.db", session_id_context="s", process_records=True, records_interval=0)
