"""``store_from_url``: every form opens the store it names, against real servers, and a string
that names no store is a clear error."""
from __future__ import annotations

import os

import pytest

import sesscache
from sesscache import ConfigurationError, MemoryStore, SQLiteStore, store_from_url
from sesscache.stores.urls import DEFAULT_URL_REPLICA, STORE_URL_FORMS, check_store_url


def _round_trip(store) -> None:
    key = b"sc-url-test:" + os.urandom(8)
    try:
        store.set(key, b"value", 30)
        assert store.get(key) == b"value"
    finally:
        store.close()


def test_exported_from_the_package():
    assert sesscache.store_from_url is store_from_url
    assert sesscache.stores.store_from_url is store_from_url


def test_memory():
    store = store_from_url("memory")
    assert isinstance(store, MemoryStore)
    _round_trip(store)


@pytest.mark.parametrize("form", ["sqlite:{path}", "sqlite://{path}"])
def test_sqlite_path(tmp_path, form):
    path = tmp_path / "s.db"
    store = store_from_url(form.format(path=path))
    assert isinstance(store, SQLiteStore)
    _round_trip(store)
    assert path.exists()


def test_sqlite_expands_the_home_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    _round_trip(store_from_url("sqlite:~/home.db"))
    assert (tmp_path / "home.db").exists()


def test_options_reach_the_store(tmp_path):
    store = store_from_url(f"sqlite:{tmp_path / 't.db'}", table="other_table")
    _round_trip(store)


def test_opening_does_not_create_the_file_until_used(tmp_path):
    # A master process may name the store; only the workers that use it open the file.
    path = tmp_path / "lazy.db"
    store = store_from_url(f"sqlite:{path}")
    assert not path.exists()
    store.close()


@pytest.mark.needs_redis
def test_redis(redis_url):
    store = store_from_url(redis_url, prefix=b"sc-url:")
    assert type(store).__name__ == "RedisStore"
    _round_trip(store)


@pytest.mark.needs_redis
def test_redis_local_replica_in_the_url(redis_url):
    """Where only a URL is given (the integrations), ?local_replica=N asks for the copy; the
    rest of the query stays redis-py's."""
    joiner = "&" if "?" in redis_url else "?"
    store = store_from_url(redis_url + joiner + "local_replica=50", prefix=b"sc-url-replica:")
    assert store._replica is not None and store._replica.max_sessions == 50
    assert store._replica.wait_subscribed(10)
    _round_trip(store)
    plain = store_from_url(redis_url)  # the default (issue 22): a bounded copy
    assert plain._replica is not None and plain._replica.max_sessions == DEFAULT_URL_REPLICA
    plain.close()
    off = store_from_url(redis_url + joiner + "replica=off")
    assert off._replica is None
    off.close()


def test_redis_local_replica_must_be_a_number():
    with pytest.raises(ConfigurationError, match="local_replica is a number of sessions"):
        store_from_url("redis://127.0.0.1:6379/0?local_replica=lots")


@pytest.mark.needs_redis
def test_redis_does_not_connect_when_opened():
    # Nothing listens there: opening must not fail, using it is a StoreError.
    store = store_from_url("redis://127.0.0.1:1/0")
    with pytest.raises(sesscache.StoreError):
        store.get(b"k")
    store.close()


@pytest.mark.needs_memcached
def test_memcached(memcached_server):
    if isinstance(memcached_server, tuple):
        host, port = memcached_server
        url = f"memcached://{host}:{port}"
    else:
        url = "memcached://" + ("" if memcached_server.startswith("/") else "/") + memcached_server
    store = store_from_url(url)
    assert type(store).__name__ == "MemcachedStore"
    _round_trip(store)


def test_memcached_default_port():
    from sesscache.stores.urls import _memcached_server

    assert _memcached_server("memcached://cache.internal") == ("cache.internal", 11211)
    assert _memcached_server("memcached://10.0.0.2:11222") == ("10.0.0.2", 11222)
    assert _memcached_server("memcached:///run/memcached.sock") == "/run/memcached.sock"


@pytest.mark.parametrize("url, words", [
    ("mongodb://x", ["unknown store", "sqlite:PATH", "redis://"]),
    ("", ["unknown store"]),
    ("sqlite:", ["needs a path"]),
    ("redis://", ["names no host"]),
    ("redis://host:port", ["port must be a number"]),
    ("redis://host:6379/zero", ["database", "number"]),
    ("unix://", ["names no socket"]),
    ("memcached://", ["names no server"]),
    ("memcached://host:99999", ["port must be a number"]),
    ("memcached://host:11211/3", ["no databases"]),
])
def test_bad_urls_are_clear_errors(url, words):
    with pytest.raises(ConfigurationError) as caught:
        store_from_url(url)
    for word in words:
        assert word in str(caught.value)


def test_not_a_string():
    with pytest.raises(ConfigurationError, match="is a string"):
        store_from_url(None)  # type: ignore[arg-type]
    assert "memcached://" in STORE_URL_FORMS


def test_check_store_url_opens_nothing(tmp_path):
    from sesscache.stores.urls import check_store_url

    check_store_url(f"sqlite:{tmp_path / 'never.db'}")
    check_store_url("redis://127.0.0.1:1/0")
    assert not (tmp_path / "never.db").exists()
    with pytest.raises(ConfigurationError, match="unknown store"):
        check_store_url("sqlite3:/x")


@pytest.mark.parametrize("url, shown", [
    ("redis://app:s3cret@cache:6379/0", "redis://app:***@cache:6379/0"),
    ("rediss://:s3cret@cache:6380", "rediss://:***@cache:6380"),
    ("redis://cache:6379/0", "redis://cache:6379/0"),
    ("sqlite:/var/lib/x.db", "sqlite:/var/lib/x.db"),
])
def test_passwords_never_shown(url, shown):
    from sesscache.stores.urls import redacted_store_url

    assert redacted_store_url(url) == shown


def test_integrations_do_not_show_the_password():
    from sesscache.integrations.gunicorn import ssl_context_hook

    hook = ssl_context_hook("redis://app:s3cret@127.0.0.1:1/0", session_id_context="shop")
    assert "s3cret" not in repr(hook) and "***" in repr(hook)


def test_errors_do_not_show_the_password():
    with pytest.raises(ConfigurationError) as caught:
        store_from_url("redis://app:s3cret@cache:port/0")
    assert "s3cret" not in str(caught.value) and "port must be a number" in str(caught.value)


@pytest.mark.parametrize("url", ["redis+cluster://127.0.0.1:7000,127.0.0.1:7001",
                                 "rediss+cluster://user:pw@10.0.0.5:7000",
                                 "redis+sentinel://127.0.0.1:26379,127.0.0.2:26379/sessions",
                                 "rediss+sentinel://127.0.0.1:26379/sessions/2"])
def test_cluster_and_sentinel_urls_are_accepted(url):
    check_store_url(url)  # without opening anything


def test_a_sentinel_url_without_its_service_says_what_to_write():
    with pytest.raises(ConfigurationError, match="service name"):
        check_store_url("redis+sentinel://127.0.0.1:26379")


@pytest.mark.parametrize("url, shown", [
    # Issue 23 item 7: secrets in the query string, for every scheme.
    ("redis://h:6379/0?password=secret", "redis://h:6379/0?password=***"),
    ("redis+sentinel://s1:26379,s2:26379/svc?sentinel_password=secret&password=s2",
     "redis+sentinel://s1:26379,s2:26379/svc?sentinel_password=***&password=***"),
    ("rediss+sentinel://u:pw1@s1:26379,s2:26379/svc/0?sentinel_password=pw2&socket_timeout=1",
     "rediss+sentinel://u:***@s1:26379,s2:26379/svc/0?sentinel_password=***&socket_timeout=1"),
    ("redis+cluster://n1:7000,n2:7000?password=secret", "redis+cluster://n1:7000,n2:7000?password=***"),
    ("rediss://h:6380/0?ssl_cert_reqs=none&Password=x&local_replica=5",
     "rediss://h:6380/0?ssl_cert_reqs=none&Password=***&local_replica=5"),
    ("unix:///run/redis.sock?db=2&password=secret", "unix:///run/redis.sock?db=2&password=***"),
    ("memcached://h:11211?auth_token=abc;sasl_pwd=def", "memcached://h:11211?auth_token=***;sasl_pwd=***"),
    ("sqlite:/var/lib/x.db?api_key=abc&client_secret=d&passwd=e",
     "sqlite:/var/lib/x.db?api_key=***&client_secret=***&passwd=***"),
    ("redis://h/0?pass%77ord=secret", "redis://h/0?pass%77ord=***"),
    ("redis://h/0?password=", "redis://h/0?password="),
    ("redis://h/0#password=secret", "redis://h/0#password=***"),
    # Found by fuzz/fuzz_decoders.py: a secret name inside another parameter's value.
    ("redis://h/0?note=a=b?password=secret&db=1", "redis://h/0?note=a=b?password=***&db=1"),
    ("redis://h/0?x=dU=\"},{\"rold?sentinel_password=x&y", "redis://h/0?x=dU=\"},{\"rold?sentinel_password=***&y"),
    # Passwords the URL parser cannot read are hidden too (urlsplit raised: shown whole before).
    ("redis://app:s3cr/t@cache:6379/0", "redis://app:***@cache:6379/0"),
    ("redis://app:s3@cret@[::1:6379/0", "redis://app:***@[::1:6379/0"),
    ("redis://app:s3cret@cache:port/0", "redis://app:***@cache:port/0"),
])
def test_secrets_in_query_strings_never_shown(url, shown):
    from sesscache.stores.urls import redacted_store_url

    assert redacted_store_url(url) == shown


def test_errors_and_reprs_do_not_show_a_query_password():
    with pytest.raises(ConfigurationError) as caught:
        store_from_url("redis://cache:port/0?password=s3cret&sentinel_password=t0ken")
    assert "s3cret" not in str(caught.value) and "t0ken" not in str(caught.value)
    with pytest.raises(ConfigurationError) as caught:
        store_from_url("redis://cache:6379/0?local_replica=x&password=s3cret")
    assert "s3cret" not in str(caught.value)
