"""RedisStore on the topologies a fleet runs, all real local processes: a 3-master Redis
Cluster losing a master, a Sentinel failover under traffic, TLS with an ACL user, and clients
the user built (wrapped so that no call outlives the store's timeout).

Handshakes run through ``SessionCache(RedisStore(...))`` with default arguments (so through
the ResilientStore the cache puts around a network store)."""
from __future__ import annotations

import os
import time

import pytest

redis = __import__("redis") if os.environ.get("CI") else pytest.importorskip("redis")

from sesscache import SessionCache  # noqa: E402
from sesscache.errors import ConfigurationError, StoreError, StorePaused  # noqa: E402
from sesscache.stores import ResilientStore  # noqa: E402
from sesscache.stores.breaker import DEFAULT_RETRY_AFTER, DEFAULT_TRIP_AFTER  # noqa: E402
from sesscache.stores.redis import RedisStore  # noqa: E402
from tests.fleet_fixtures import ACL_PASSWORD, ACL_USER, redis_cluster, redis_sentinel, redis_tls  # noqa: E402,F401
from tests.reliability.helpers import HANDSHAKE_BOUND  # noqa: E402
from tests.reliability.traffic import Traffic  # noqa: E402
from tests.server_fixtures import unique_prefix  # noqa: E402
from tests.tls import TLS12, LinkedStack  # noqa: E402

pytestmark = pytest.mark.needs_redis

SLACK = 2.0  # seconds allowed beyond the store timeout (a loaded machine), never a speed goal
THREADS = 3


def _fails_within(call, timeout):
    start = time.monotonic()
    with pytest.raises(StoreError) as info:
        call()
    assert time.monotonic() - start < timeout + SLACK
    return info.value


def _traffic_through(cache, certs):
    stack = LinkedStack(certs)
    context = stack.server_context(TLS12)
    cache.attach(context, internal_cache=False)  # every resumption asks the store
    return Traffic(stack, context, threads=THREADS).start()


def _traffic_for_a_while(cache, certs, phase, seconds=0.5):
    """Traffic through ``cache`` for ``seconds``; every handshake must complete."""
    traffic = _traffic_through(cache, certs)
    try:
        traffic.enter(phase, seconds)
    finally:
        traffic.stop()
    assert not traffic.failures, traffic.failures[0]
    return traffic


def _until_resumed(store, traffic, phase, timeout=20.0):
    """Traffic in ``phase`` until no breaker of ``store`` is open (the store recovered by
    itself: trial calls every retry_after); a generous bound, not a speed goal."""
    traffic.phase = phase
    deadline = time.monotonic() + timeout
    time.sleep(DEFAULT_RETRY_AFTER)
    while any(store.paused().values()):
        assert time.monotonic() < deadline, f"still paused after {timeout} s: {store.paused()}"
        time.sleep(0.1)


def _delta(store, run):
    before = store.stats.as_dict()
    run()
    after = store.stats.as_dict()
    return {k: after[k] - before[k] for k in after}


# -- Redis Cluster ------------------------------------------------------------------------------


def test_cluster_url_and_keyword_reach_every_master(redis_cluster):
    by_url = RedisStore(redis_cluster.url, prefix=unique_prefix())
    by_keyword = RedisStore(cluster=[("127.0.0.1", n.port) for n in redis_cluster.nodes[:1]],
                            prefix=by_url.prefix, timeout=1)
    keys = [b"k%d" % i for i in range(60)]
    for key in keys:
        by_url.set(key, key, 60)
    assert [by_keyword.get(k) for k in keys] == keys
    served = {by_url.health_domain(k) for k in keys}
    assert served == {n.name_in_cluster for n in redis_cluster.nodes}  # slots on all three
    assert by_url.pop(keys[0]) == keys[0] and by_keyword.get(keys[0]) is None
    assert by_url.describe()["server"].startswith("cluster 127.0.0.1:")
    by_url.close()
    by_keyword.close()


def test_cluster_master_killed_pauses_only_its_keys_and_recovers(redis_cluster, certs):
    cache = SessionCache(RedisStore(redis_cluster.url))
    store = cache.store
    assert isinstance(store, ResilientStore)
    traffic = _traffic_through(cache, certs)
    victim = redis_cluster.nodes[1]
    try:
        traffic.enter("healthy", 0.5)
        traffic.phase = "killed"
        victim.kill()  # kill -9: its slots have no server, the other two masters are fine
        killed = _delta(store, lambda: traffic.enter("killed", 1.5))
        traffic.phase = "restarting"
        victim.start()  # same nodes.conf: the same node, its slots, no data
        redis_cluster.wait_ok()
        _until_resumed(store, traffic, "restarted")
        recovered = _delta(store, lambda: traffic.enter("recovered", 1.0))
    finally:
        traffic.stop()
        victim.start() if victim.proc.poll() is not None else None
    summary = traffic.summary()
    assert not traffic.failures, traffic.failures[0]
    assert traffic.slowest() < HANDSHAKE_BOUND, summary
    paused = store.paused()
    # One dead master paused its own keys; lookups of the others' kept reaching the store.
    assert killed["pauses"] >= 1 and killed["lookups_shed"] > 0, (killed, summary)
    assert killed["found"] > 0, (killed, summary)
    # Calls tried against the dead master: the writer sends queued writes in batches, so
    # one failed call may carry several writes (write_errors counts writes).
    tried = killed["lookup_errors"] + killed["write_calls_failed"]
    assert tried <= DEFAULT_TRIP_AFTER + THREADS + 2 * (1.5 / DEFAULT_RETRY_AFTER + 1), (killed, summary)
    assert paused["store"] is False  # the store-wide breaker never opened
    assert recovered["lookup_errors"] == 0 and recovered["lookups_shed"] == 0, (recovered, summary)
    assert traffic.resumed_in("recovered") > 0, summary
    cache.close()


def test_cluster_client_given_is_rebuilt_with_the_store_timeout(redis_cluster):
    from redis.cluster import ClusterNode, RedisCluster

    node = redis_cluster.nodes[0]
    theirs = RedisCluster(startup_nodes=[ClusterNode("127.0.0.1", node.port)])  # redis-py defaults
    store = RedisStore(client=theirs, prefix=unique_prefix(), timeout=0.05)
    assert store.client is not theirs
    keys = [b"k%d" % i for i in range(30)]
    for key in keys:
        store.set(key, b"v", 60)
    on_victim = [k for k in keys if store.health_domain(k) == node.name_in_cluster]
    node.pause()  # SIGSTOP: its connections stay open and nothing answers
    try:
        _fails_within(lambda: store.get(on_victim[0]), 0.05)
    finally:
        node.resume()
    store.close()
    assert theirs.ping()  # the user's client: untouched, open
    theirs.close()


# -- Sentinel ---------------------------------------------------------------------------------------


def test_sentinel_failover_during_traffic(redis_sentinel, certs):
    setup = redis_sentinel
    backend = RedisStore(setup.url)
    assert backend.describe()["server"].startswith("sentinel 127.0.0.1:")
    cache = SessionCache(backend)
    store = cache.store
    traffic = _traffic_through(cache, certs)
    try:
        traffic.enter("healthy", 0.5)
        traffic.phase = "master killed"
        setup.master.kill()  # kill -9 the master: the sentinel promotes the replica
        setup.wait_master(setup.replica.port)
        _until_resumed(store, traffic, "failover")
        after = _delta(store, lambda: traffic.enter("promoted", 1.0))
    finally:
        traffic.stop()
    summary = traffic.summary()
    assert not traffic.failures, traffic.failures[0]
    assert traffic.slowest() < HANDSHAKE_BOUND, summary
    assert after["found"] > 0 and after["lookup_errors"] == 0 and after["lookups_shed"] == 0, (after, summary)
    assert traffic.resumed_in("promoted") > 0, summary
    assert store.flush(5)
    raw = redis.Redis(host="127.0.0.1", port=setup.replica.port)  # the new master has the sessions
    assert raw.dbsize() > 0
    raw.close()
    cache.close()


def test_sentinel_client_given_is_rebuilt(redis_sentinel):
    from redis.sentinel import Sentinel

    theirs = Sentinel([("127.0.0.1", redis_sentinel.sentinel.port)]).master_for(redis_sentinel.service)
    store = RedisStore(client=theirs, prefix=unique_prefix(), timeout=1)
    assert store.client is not theirs and store.describe()["server"].startswith("sentinel 127.0.0.1:")
    kwargs = store.client.connection_pool.connection_kwargs
    assert kwargs["socket_timeout"] == 1 and kwargs["socket_connect_timeout"] == 1
    store.set(b"k", b"v", 60)
    assert theirs.get(store.prefix + b"k") == b"v"
    store.close()
    theirs.close()


def test_sentinel_keyword_form(redis_sentinel):
    store = RedisStore(sentinel=[("127.0.0.1", redis_sentinel.sentinel.port)],
                       service_name=redis_sentinel.service, prefix=unique_prefix(), timeout=1)
    store.set(b"k", b"v", 60)
    assert store.get(b"k") == b"v"
    store.close()


# -- TLS and ACL ------------------------------------------------------------------------------------


def test_tls_with_acl_user(redis_tls, certs):
    store = RedisStore(redis_tls.url(), ssl_ca_certs=redis_tls.ca_path, prefix=unique_prefix(), timeout=1)
    store.set(b"k", b"v", 60)
    assert store.get(b"k") == b"v" and store.pop(b"k") == b"v" and store.get(b"k") is None
    assert ACL_PASSWORD not in repr(store) + str(store.describe())
    assert store.describe()["server"].endswith("tls")
    # Sessions through it, default cache arguments.
    cache = SessionCache(RedisStore(redis_tls.url(), ssl_ca_certs=redis_tls.ca_path))
    _traffic_for_a_while(cache, certs, "tls")
    assert cache.store.flush(5) and cache.store.stats.writes > 0 and cache.stats.errors == 0
    cache.close()
    store.close()


def test_tls_wrong_certificate_and_wrong_password_are_named(redis_tls, certs):
    untrusting = RedisStore(redis_tls.url(), ssl_ca_certs=certs.ca_pem, timeout=1)  # another CA
    error = _fails_within(lambda: untrusting.get(b"k"), 1)
    assert "certificate" in str(error) and "ssl_ca_certs" in str(error)
    wrong = RedisStore(redis_tls.url(password="not-it"), ssl_ca_certs=redis_tls.ca_path, timeout=1)
    error = _fails_within(lambda: wrong.get(b"k"), 1)
    assert "authentication" in str(error) and "not-it" not in str(error)
    # Every handshake still completes against a store it cannot trust, and no handshake
    # waits once the store is paused.
    # How soon the breaker opens depends on how many failed calls fit in the time (each a
    # TLS connection attempt that the certificate check ends; under load fewer, and while
    # writes fail every resumption is answered from the write queue, never asking Redis):
    # traffic runs until it has, bounded, rather than for a fixed half second.
    cache = SessionCache(RedisStore(redis_tls.url(), ssl_ca_certs=certs.ca_pem))
    traffic = _traffic_through(cache, certs)
    try:
        traffic.enter("untrusted", 0.5)
        deadline = time.monotonic() + 30
        while not (cache.store.stats.pauses >= 1 and cache.store.stats.lookups_shed > 0):
            assert time.monotonic() < deadline, f"the store never paused: {cache.store.stats}"
            time.sleep(0.1)
    finally:
        traffic.stop()
    assert not traffic.failures, traffic.failures[0]
    cache.close()
    untrusting.close()
    wrong.close()


# -- clients the user built -----------------------------------------------------------------------------


def test_client_given_never_outlives_the_store_timeout(redis_servers):
    server = redis_servers()
    theirs = redis.Redis.from_url(server.url)  # no socket timeout, retries: redis-py defaults
    store = RedisStore(client=theirs, prefix=unique_prefix(), timeout=0.05)
    store.set(b"k", b"v", 60)
    server.pause()
    try:
        error = _fails_within(lambda: store.get(b"k"), 0.05)
        assert "timeout=0.05" in str(error)
    finally:
        server.resume()
    assert store.get(b"k") == b"v"
    store.close()
    assert theirs.get(store.prefix + b"k") == b"v"  # the user's client still works
    theirs.close()


@pytest.mark.parametrize("kwargs", [
    {"url": "redis+cluster://127.0.0.1:1", "cluster": "127.0.0.1:2"},
    {"cluster": "no-port-here"},
    {"url": "redis+sentinel://127.0.0.1:26379"},  # no service name
    {"sentinel": [("127.0.0.1", "port")]},
], ids=repr)
def test_bad_fleet_configuration(kwargs):
    with pytest.raises(ConfigurationError):
        RedisStore(**kwargs)


# -- a process-local replica ------------------------------------------------------------------------


def test_local_replica_answers_what_another_store_wrote(redis_url):
    # The copy is keyed by the store's keys without the prefix (the cache's own keys, as
    # SessionCache's C fast path reads them).
    prefix = unique_prefix()
    writer = RedisStore(redis_url, prefix=prefix, timeout=5, local_replica=100)
    reader = RedisStore(redis_url, prefix=prefix, timeout=5, local_replica=100)
    assert writer._replica.wait_subscribed(10) and reader._replica.wait_subscribed(10)
    writer.set(b"k", b"v", 60)
    deadline = time.monotonic() + 10
    while reader._replica.get(b"k") is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert reader._replica.get(b"k") == b"v"  # in the copy, no round trip
    assert reader.get(b"k") == b"v"
    # pop goes to Redis (atomic) and tells every copy
    assert reader.pop(b"k") == b"v" and writer.pop(b"k") is None
    deadline = time.monotonic() + 10
    while writer._replica.get(b"k") is not None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert writer.get(b"k") is None
    writer.set(b"brief", b"v", 0.2)
    time.sleep(0.45)
    assert reader.get(b"brief") is None  # the copy keeps the ttl
    writer.close()
    reader.close()


def test_local_replica_refuses_a_cluster_and_bad_sizes(redis_cluster):
    with pytest.raises(ConfigurationError, match="Cluster"):
        RedisStore(redis_cluster.url, local_replica=10)
    with pytest.raises(ConfigurationError, match="local_replica"):
        RedisStore("redis://127.0.0.1:1", local_replica=-1)


def test_a_cluster_url_opens_no_replica_by_default(redis_cluster):
    """Redis Cluster's default (issue 22): no local copy (pub/sub there reaches every node),
    every lookup goes to the node serving the key's slot."""
    from sesscache import store_from_url

    store = store_from_url(redis_cluster.url, prefix=unique_prefix())
    try:
        assert store.replica is None
        store.set(b"k", b"v", 60)
        assert store.get(b"k") == b"v" and store.pop(b"k") == b"v" and store.get(b"k") is None
    finally:
        store.close()


def test_async_store_names_the_way_to_a_cluster():
    from sesscache.stores.redis import AsyncRedisStore

    with pytest.raises(ConfigurationError, match="PrefetchingStore"):
        AsyncRedisStore("redis+cluster://127.0.0.1:7000")


# -- cross-server resumption ------------------------------------------------------------------------


# The cross-server promise (a client reconnecting at once to another server resumes
# there, though writes go behind the handshake) is tested in test_store_write_behind.py.


def test_local_replica_without_channel_rights_turns_itself_off(redis_tls, certs, caplog):
    """An ACL user allowed the keys but no pub/sub: the first write turns the copy off with
    an error naming what to grant; the writes themselves land and nothing pauses."""
    store = RedisStore(redis_tls.url(), ssl_ca_certs=redis_tls.ca_path, timeout=1, local_replica=100)
    cache = SessionCache(store)
    with caplog.at_level("ERROR", logger="sesscache"):
        _traffic_for_a_while(cache, certs, "tls-no-pubsub")
        assert cache.store.flush(5)
    stats = cache.store.stats
    assert store._replica is None
    assert stats.writes > 0 and stats.write_errors == 0 and stats.pauses == 0, stats
    assert cache.stats.errors == 0
    assert any("+publish +subscribe" in r.getMessage() for r in caplog.records), caplog.text
    cache.close()
