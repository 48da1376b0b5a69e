"""``python -m sesscache stats``: exit codes that say whether it could do its job."""
from __future__ import annotations

import json
import subprocess
import sys

from sesscache import SessionCache, SQLiteStore
from sesscache.metrics.records import publisher_for_cache


def run(*args):
    return subprocess.run([sys.executable, "-m", "sesscache", "stats", *args], capture_output=True, text=True,
                          timeout=60)


def test_a_store_nobody_serves_exits_1_naming_the_store_without_its_password():
    result = run("--store", "redis://:hunter2@127.0.0.1:1/0")
    assert result.returncode == 1, result
    assert "cannot read the store redis://" in result.stderr
    assert "127.0.0.1:1" in result.stderr and "hunter2" not in result.stderr + result.stdout


def test_memory_is_refused_saying_why():
    result = run("--store", "memory")
    assert result.returncode == 2
    assert "inside this command's own process" in result.stderr and "sqlite:PATH" in result.stderr


def test_a_process_publishing_into_sqlite_is_listed_in_json_and_in_the_table(tmp_path):
    path = tmp_path / "s.db"
    cache = SessionCache(SQLiteStore(str(path)))
    publisher = publisher_for_cache(cache, server="shop:443", interval=60)
    publisher.publish()
    try:
        result = run("--store", f"sqlite:{path}")
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout)
        assert report["kind"] == "sqlite"
        assert [(p["server"], p["closed"], p["resumed"], p["offered"]) for p in report["processes"]] == \
            [("shop:443", False, 0, 0)]
        assert report["total"]["processes"] == 1 and report["total"]["rate"] is None
        publisher.close()
        table = run("--store", f"sqlite:{path}", "--table")
        assert table.returncode == 0, table.stderr
        assert "shop:443" in table.stdout and "closed" in table.stdout
        assert "total: 1 processes on 1 hosts" in table.stdout
    finally:
        publisher.close()
        cache.close()


def test_a_cache_over_redis_publishes_through_the_wrapper_and_stats_reads_it(redis_url):
    from sesscache import store_from_url

    cache = SessionCache(store_from_url(redis_url))  # a ResilientStore around the RedisStore
    publisher = publisher_for_cache(cache, server="redis-shop", interval=60)
    try:
        assert publisher.publish()
        assert cache.store.stats.writes_queued == 0  # the record did not go through the write queue
        result = run("--store", redis_url)
        assert result.returncode == 0, result.stderr
        mine = [p for p in json.loads(result.stdout)["processes"] if p["server"] == "redis-shop"]
        assert [p["pid"] for p in mine] == [publisher.pid]
    finally:
        publisher.close()
        cache.close()
