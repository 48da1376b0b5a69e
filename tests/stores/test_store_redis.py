"""RedisStore and AsyncRedisStore against real redis-server processes: layout, faults, fallbacks."""
from __future__ import annotations

import asyncio
import json
import os
import socket
import threading
import time
import uuid

import pytest

# CI must run these: there a missing client library is an error, not a skip.
redis = __import__("redis") if os.environ.get("CI") else pytest.importorskip("redis")

from sesscache.errors import ConfigurationError, StoreError, ValueTooLarge  # noqa: E402
from sesscache.stores import AsyncStore, Store  # noqa: E402
from sesscache.stores.redis import AsyncRedisStore, RedisStore  # noqa: E402

pytestmark = pytest.mark.needs_redis

SLACK = 2.0  # seconds allowed beyond the store timeout for a call to a dead or paused server


def _prefix() -> bytes:
    return b"t" + uuid.uuid4().hex[:12].encode() + b":"


def _raises_store_error_in_time(call, timeout: float) -> StoreError:
    start = time.monotonic()
    with pytest.raises(StoreError) as info:
        call()
    assert time.monotonic() - start < timeout + SLACK
    assert info.value.__cause__ is not None  # the redis-py error is chained
    return info.value


def test_layout_prefix_px_and_nothing_else(redis_url):
    prefix = _prefix()
    store = RedisStore(redis_url, prefix=prefix, timeout=5)
    raw = redis.Redis.from_url(redis_url)
    store.set(b"\x00key", b"value", 1.5)
    assert raw.get(prefix + b"\x00key") == b"value"
    assert 0 < raw.pttl(prefix + b"\x00key") <= 1500
    assert raw.keys(prefix + b"*") == [prefix + b"\x00key"]
    assert store.pop(b"\x00key") == b"value"
    assert raw.keys(prefix + b"*") == []
    store.close()
    raw.close()


def test_sub_millisecond_ttl_leaves_nothing_behind(redis_url):
    store = RedisStore(redis_url, prefix=_prefix(), timeout=5)
    store.set(b"k", b"old", 60)
    store.set(b"k", b"new", 0.0004)  # expired before anyone could read it
    assert store.get(b"k") is None
    store.close()


def test_str_prefix_is_encoded(redis_url):
    store = RedisStore(redis_url, prefix="tls:" + uuid.uuid4().hex[:8] + ":", timeout=5)
    store.set(b"k", b"v", 60)
    assert store.get(b"k") == b"v"
    store.close()


@pytest.mark.parametrize("tcp", [False, True], ids=["unix-socket", "tcp"])
def test_unix_and_tcp_urls(redis_servers, tcp):
    server = redis_servers(tcp=tcp)
    assert server.url.startswith("redis://" if tcp else "unix:///")
    store = RedisStore(server.url, timeout=5)
    store.set(b"k", b"v", 60)
    assert store.get(b"k") == b"v"
    assert store.describe()["server"].startswith("127.0.0.1:" if tcp else "unix:/")
    store.close()


def test_dead_unix_socket_fails_fast(tmp_path):
    store = RedisStore(f"unix://{tmp_path}/no-redis-here.sock", timeout=0.05)
    for call in (lambda: store.get(b"k"), lambda: store.set(b"k", b"v", 60),
                 lambda: store.pop(b"k"), lambda: store.delete(b"k")):
        error = _raises_store_error_in_time(call, 0.05)
        assert "cannot reach Redis" in str(error)
    assert "cannot reach" in store.describe()["error"]


def test_closed_tcp_port_fails_fast():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nobody listens once this closes
    store = RedisStore(f"redis://127.0.0.1:{port}/0", timeout=0.05)
    _raises_store_error_in_time(lambda: store.get(b"k"), 0.05)


def test_killed_server_is_a_store_error(redis_servers):
    server = redis_servers()
    store = RedisStore(server.url, timeout=0.1)
    store.set(b"k", b"v", 60)
    server.kill()
    _raises_store_error_in_time(lambda: store.get(b"k"), 0.1)
    _raises_store_error_in_time(lambda: store.set(b"k", b"v", 60), 0.1)


def test_paused_server_times_out_then_works_after_sigcont(redis_servers):
    server = redis_servers()
    store = RedisStore(server.url, timeout=0.1)
    store.set(b"k", b"v", 60)
    server.pause()
    try:
        # Only reads while paused: a write that timed out may still be applied on SIGCONT.
        error = _raises_store_error_in_time(lambda: store.get(b"k"), 0.1)
        assert "did not answer within timeout=0.1s" in str(error)
        _raises_store_error_in_time(lambda: store.get(b"other"), 0.1)
    finally:
        server.resume()
    assert store.get(b"k") == b"v"


@pytest.mark.parametrize("tcp", [False, True], ids=["unix-socket", "tcp"])
def test_first_call_after_a_restart_succeeds(redis_servers, tcp):
    server = redis_servers(tcp=tcp)
    store = RedisStore(server.url, timeout=1)
    # fill the pool with several connections, all of which go stale on restart
    barrier = threading.Barrier(4)

    def use():
        barrier.wait()
        for _ in range(20):
            store.set(b"warm", b"up", 60)

    threads = [threading.Thread(target=use) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    server.restart()  # data is gone (no persistence), connections are dead
    for i in range(10):  # every pooled connection is checked and replaced on checkout
        store.set(b"k%d" % i, b"v", 60)
        assert store.get(b"k%d" % i) == b"v"
    assert store.get(b"warm") is None


def test_out_of_memory_names_maxmemory(redis_servers):
    server = redis_servers(extra_args=["--maxmemory-policy", "noeviction"])
    raw = redis.Redis.from_url(server.url)
    raw.config_set("maxmemory", raw.info("memory")["used_memory"] + 1024 * 1024)  # 1 MB of room
    store = RedisStore(server.url, timeout=5)
    store.set(b"first", b"kept", 60)
    with pytest.raises(StoreError) as info:
        for i in range(100):  # 6.4 MB into 1 MB
            store.set(b"fill%d" % i, os.urandom(64 * 1024), 60)
    assert not isinstance(info.value, ValueTooLarge)
    message = str(info.value)
    assert "out of memory (OOM command not allowed" in message and "maxmemory-policy" in message
    assert isinstance(info.value.__cause__, redis.exceptions.ResponseError)
    # reads and removals still work on a full Redis
    assert store.get(b"first") == b"kept"
    assert store.pop(b"first") == b"kept"
    store.delete(b"fill0")
    info = store.describe()
    assert info["maxmemory_policy"] == "noeviction" and info["maxmemory"] > 0
    raw.close()


def test_pop_falls_back_to_multi_exec_without_getdel(redis_servers):
    server = redis_servers(extra_args=["--rename-command", "GETDEL", ""])
    store = RedisStore(server.url, timeout=5)
    store.set(b"k", b"v", 60)
    assert store.pop(b"k") == b"v"
    assert store.pop(b"k") is None
    assert store.describe()["atomic_pop"] == "multi-exec"
    keys = [b"s%d" % i for i in range(60)]
    for key in keys:
        store.set(key, key, 60)
    wins = []
    barrier = threading.Barrier(6)

    def popper():
        barrier.wait()
        wins.extend(v for v in (store.pop(k) for k in keys) if v is not None)

    threads = [threading.Thread(target=popper) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(wins) == sorted(keys)


def test_password_never_appears_in_describe_or_repr(redis_servers):
    server = redis_servers(extra_args=["--requirepass", "s3cret-pw"])
    store = RedisStore(server.url + "?password=s3cret-pw", timeout=5)
    store.set(b"k", b"v", 60)
    assert store.get(b"k") == b"v"
    text = json.dumps(store.describe()) + repr(store)
    assert "s3cret" not in text
    wrong = RedisStore(server.url + "?password=wrong", timeout=5)
    error = _raises_store_error_in_time(lambda: wrong.get(b"k"), 5)
    assert "authentication" in str(error)
    assert "wrong" not in str(error).replace("wrong password", "")
    store.close()
    wrong.close()


def test_client_passed_in_is_used_and_left_open(redis_url):
    client = redis.Redis.from_url(redis_url)
    store = RedisStore(client=client, prefix=_prefix())
    assert isinstance(store, Store)
    store.set(b"k", b"v", 60)
    assert store.get(b"k") == b"v"
    store.close()
    assert client.ping()
    client.close()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"url": "redis://localhost", "client": object()},
        {"client": object(), "max_connections": 5},
        {"url": "redis://localhost", "decode_responses": True},
        {"url": "redis://localhost", "timeout": 0},
        {"url": "redis://localhost", "timeout": -1},
        {"url": "redis://localhost", "prefix": 5},
    ],
    ids=repr,
)
def test_bad_configuration(kwargs):
    with pytest.raises(ConfigurationError):
        RedisStore(**kwargs)


# -- asyncio ------------------------------------------------------------------------------------


def test_async_store_contract(redis_url):
    async def main():
        async with AsyncRedisStore(redis_url, prefix=_prefix(), timeout=5) as store:
            assert isinstance(store, AsyncStore)
            assert await store.get(b"k") is None
            await store.set(b"k\x00", b"v\x00", 60)
            assert await store.get(b"k\x00") == b"v\x00"
            assert await store.pop(b"k\x00") == b"v\x00"
            assert await store.pop(b"k\x00") is None
            await store.set(b"d", b"v", 60)
            await store.delete(b"d")
            assert await store.get(b"d") is None
            await store.set(b"brief", b"v", 0.2)
            await asyncio.sleep(0.45)
            assert await store.get(b"brief") is None
            with pytest.raises(ConfigurationError):
                await store.set(b"k", b"v", -1)
            info = await store.describe()
            assert info["kind"] == "redis" and "error" not in info
            results = await asyncio.gather(*(store.pop(b"k\x00") for _ in range(5)))
            assert results == [None] * 5
            await store.set(b"race", b"once", 60)
            results = await asyncio.gather(*(store.pop(b"race") for _ in range(5)))
            assert sorted(results, key=lambda r: r is None) == [b"once"] + [None] * 4

    asyncio.run(main())


def test_async_dead_server_fails_fast(tmp_path):
    async def main():
        store = AsyncRedisStore(f"unix://{tmp_path}/no-redis-here.sock", timeout=0.05)
        start = time.monotonic()
        with pytest.raises(StoreError, match="cannot reach"):
            await store.get(b"k")
        assert time.monotonic() - start < 0.05 + SLACK
        assert "error" in await store.describe()
        await store.close()

    asyncio.run(main())


def test_async_paused_server_times_out(redis_servers):
    server = redis_servers()

    async def main():
        store = AsyncRedisStore(server.url, timeout=0.1)
        await store.set(b"k", b"v", 60)
        server.pause()
        try:
            start = time.monotonic()
            with pytest.raises(StoreError, match="did not answer"):
                await store.get(b"k")
            assert time.monotonic() - start < 0.1 + SLACK
        finally:
            server.resume()
        assert await store.get(b"k") == b"v"
        await store.close()

    asyncio.run(main())


def test_async_pop_falls_back_without_getdel(redis_servers):
    server = redis_servers(extra_args=["--rename-command", "GETDEL", ""])

    async def main():
        async with AsyncRedisStore(server.url, timeout=5) as store:
            await store.set(b"k", b"v", 60)
            assert await store.pop(b"k") == b"v"
            assert await store.pop(b"k") is None
            assert (await store.describe())["atomic_pop"] == "multi-exec"

    asyncio.run(main())


def test_forked_child_gets_its_own_connections(redis_url):
    import multiprocessing

    store = RedisStore(redis_url, prefix=_prefix(), timeout=5)
    store.set(b"parent", b"p", 60)  # the parent's pool holds a connection when it forks
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()

    def child():
        try:
            got = store.get(b"parent")
            store.set(b"child", b"c", 60)
            queue.put(got)
        except BaseException as exc:
            queue.put(repr(exc))

    proc = ctx.Process(target=child)
    proc.start()
    result = queue.get(timeout=60)
    proc.join(10)
    assert result == b"p"
    assert store.get(b"child") == b"c"
    assert store.get(b"parent") == b"p"  # the parent's pooled connection is intact
    store.close()
