"""SessionCache over real handshakes: policy, sealing, lifetimes, SNI, faults."""
from __future__ import annotations

import threading
import time

import pytest

import sesscache
from sesscache._binding.find_context import bind_context
from sesscache import MemoryStore, SessionCache, SQLiteStore
from sesscache.errors import ConfigurationError, StoreError
from sesscache.sealing import generate_key
from tests.tls import TLS12, TLS13


class RecordingStore(MemoryStore):
    """A MemoryStore that remembers the ttl of every write."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.ttls = []
        self.keys = []

    def set(self, key, value, ttl):
        self.ttls.append(ttl)
        self.keys.append(key)
        super().set(key, value, ttl)


class FlakyStore(MemoryStore):
    """Fails on demand, the way a store that is down does."""

    def __init__(self, failure=StoreError):
        super().__init__()
        self.down = False
        self.failure = failure  # a class: a fresh exception each time, as a real store raises

    def get(self, key):
        if self.down:
            raise self.failure("connection refused (the test took the store down)")
        return super().get(key)

    def set(self, key, value, ttl):
        if self.down:
            raise self.failure("connection refused (the test took the store down)")
        super().set(key, value, ttl)


def _resume_n(stack, server, client, n, server_name=None):
    first = stack.handshake(server, client, server_name=server_name)
    stack.close(first)
    results = []
    for _ in range(n):
        hs = stack.handshake(server, client, first.client_session, server_name=server_name)
        results.append(hs.server_reused)
        stack.close(hs)
    return results


@pytest.mark.parametrize("internal_cache", [True, False], ids=["with-internal", "store-only"])
def test_resumes_through_the_cache(stack, version, internal_cache):
    cache = SessionCache()
    server = stack.server_context(version, internal_cache=True)
    cache.attach(server, internal_cache=internal_cache)
    assert _resume_n(stack, server, stack.client_context(), 5) == [True] * 5
    stats = cache.stats
    assert stats.stores >= 1 and stats.errors == 0 and stats.rejected == 0
    if not internal_cache:
        assert stats.hits == 5, stats


def test_a_second_server_resumes_from_the_shared_store(stack, version, tmp_path):
    """Two contexts (two worker processes, or two hosts) share one store: a session made
    on one resumes on the other, whose own internal cache never saw it."""
    store = SQLiteStore(str(tmp_path / "sessions.db"))
    a, b = SessionCache(store), SessionCache(store)
    server_a = stack.server_context(version, internal_cache=True)
    server_b = stack.server_context(version, internal_cache=True)
    a.attach(server_a, session_id_context=b"shop:443")
    b.attach(server_b, session_id_context=b"shop:443")
    client = stack.client_context()
    first = stack.handshake(server_a, client)
    again = stack.handshake(server_b, client, first.client_session)
    assert again.server_reused, "server b did not resume a's session from the store"
    assert b.stats.hits == 1 and a.stats.stores >= 1
    stack.close(first)
    stack.close(again)


def test_other_session_id_contexts_never_share(stack, version):
    store = MemoryStore()
    a, b = SessionCache(store), SessionCache(store)
    server_a = stack.server_context(version)
    server_b = stack.server_context(version)
    a.attach(server_a, session_id_context=b"service-a", internal_cache=False)
    b.attach(server_b, session_id_context=b"service-b", internal_cache=False)
    client = stack.client_context()
    first = stack.handshake(server_a, client)
    other = stack.handshake(server_b, client, first.client_session)
    assert not other.server_reused
    assert b.stats.hits == 0 and b.stats.misses >= 1
    stack.close(first)
    stack.close(other)


def test_tls13_stateless_tickets_are_not_stored(stack):
    cache = SessionCache()
    server = stack.server_context(TLS13, tickets=True)
    cache.attach(server)
    assert _resume_n(stack, server, stack.client_context(), 2) == [True, True]
    stats = cache.stats
    assert stats.stores == 0
    assert stats.stateless == 2 + 2, "two tickets after the full handshake, one per resumption"


def test_lifetime_is_the_smaller_of_the_cache_and_session_timeouts(stack, version):
    store = RecordingStore()
    cache = SessionCache(store, lifetime=120)
    server = stack.server_context(version)
    cache.attach(server, internal_cache=False)
    stack.close(stack.handshake(server, stack.client_context()))
    assert store.ttls and all(0 < ttl <= 120 for ttl in store.ttls)


def test_tls13_resumption_never_extends_the_original_lifetime(stack):
    """Each TLS 1.3 resumption issues a new session; OpenSSL alone would let a client
    keep a session alive forever. Every descendant carries the first handshake's time."""
    store = RecordingStore()
    cache = SessionCache(store, lifetime=60)
    server = stack.server_context(TLS13)
    cache.attach(server, internal_cache=False)
    client = stack.client_context()
    first = stack.handshake(server, client)
    origins = set()
    session = first.client_session
    for _ in range(3):
        time.sleep(1.1)  # let the clock move on so a refreshed session would show it
        hs = stack.handshake(server, client, session)
        assert hs.server_reused
        session = hs.client_session
        stack.close(hs)
    for key in store.keys:
        blob = store.get(key)
        if blob is not None:
            origins.add(cache._unwrap(key, blob).origin)
    assert len(origins) == 1, f"descendants got new origins: {origins}"
    assert store.ttls[-1] <= 60 - 3, store.ttls
    stack.close(first)


def test_a_session_past_its_lifetime_is_refused(stack, version):
    store = RecordingStore()
    cache = SessionCache(store, lifetime=100)
    server = stack.server_context(version)
    cache.attach(server, internal_cache=False)
    client = stack.client_context()
    first = stack.handshake(server, client)
    # Rewrite every stored session as if its full handshake were 101 s ago.
    for key in set(store.keys):
        stored = cache._unwrap(key, store.get(key))
        store.set(key, cache._wrap(key, stored.origin - 101, stored.server_name or b"",
                                   stored.certificate, bytes(stored.der)), 50)
    again = stack.handshake(server, client, first.client_session)
    assert not again.server_reused
    assert cache.stats.expired >= 1
    stack.close(first)
    stack.close(again)


def test_sealed_sessions(stack, version):
    store = RecordingStore()
    old, new = generate_key(), generate_key()
    writer = SessionCache(store, seal_keys=[old])
    reader = SessionCache(store, seal_keys=[new, old])  # rotated: new seals, old still opens
    stranger = SessionCache(store, seal_keys=[generate_key()])
    server_w = stack.server_context(version)
    server_r = stack.server_context(version)
    server_s = stack.server_context(version)
    writer.attach(server_w, internal_cache=False)
    reader.attach(server_r, internal_cache=False)
    stranger.attach(server_s, internal_cache=False)
    client = stack.client_context()
    first = stack.handshake(server_w, client)
    blobs = [store.get(key) for key in set(store.keys)]
    assert blobs
    for blob in blobs:  # no DER (which starts with a SEQUENCE tag) and no id in clear
        assert blob[:1] != b"\x30" and _sid(stack, first) not in blob
    again = stack.handshake(server_r, client, first.client_session)
    assert again.server_reused, "the rotated key ring could not open the old key's blob"
    refused = stack.handshake(server_s, client, first.client_session)
    assert not refused.server_reused and stranger.stats.rejected >= 1
    for h in (first, again, refused):
        stack.close(h)


@pytest.mark.parametrize("tamper", ["flip", "truncate", "swap", "garbage"])
def test_tampered_blobs_are_a_counted_miss(stack, tamper):
    store = RecordingStore()
    cache = SessionCache(store, seal_keys=[generate_key()])
    server = stack.server_context(TLS12)
    cache.attach(server, internal_cache=False)
    client = stack.client_context()
    first = stack.handshake(server, client)
    second = stack.handshake(server, client)
    keys = list(dict.fromkeys(store.keys))
    assert len(keys) == 2
    blob = store.get(keys[0])
    if tamper == "flip":
        changed = bytearray(blob)
        changed[len(changed) // 2] ^= 0x40
        store.set(keys[0], bytes(changed), 60)
    elif tamper == "truncate":
        store.set(keys[0], blob[:20], 60)
    elif tamper == "swap":
        store.set(keys[0], store.get(keys[1]), 60)
    else:
        store.set(keys[0], b"\x00" * 64, 60)
    session = first.client_session if cache.key_for(b"sesscache", _sid(stack, first)) == keys[0] \
        else second.client_session
    again = stack.handshake(server, client, session)
    assert not again.server_reused
    assert cache.stats.rejected == 1
    for h in (first, second, again):
        stack.close(h)


def _sid(stack, hs):
    """The server-side session id of a handshake's session (client view of it)."""
    if stack.name == "pyopenssl":
        return sesscache.Session.from_pyopenssl(hs.client_session).id
    if stack.name == "stdlib":
        return hs.client_session.id
    return hs.client_session.id


def test_oversize_sessions_are_counted_and_skipped(stack, caplog):
    cache = SessionCache(max_session_size=100)
    server = stack.server_context(TLS12)
    cache.attach(server, internal_cache=False)
    hs = stack.handshake(server, stack.client_context())
    assert cache.stats.oversize == 1 and cache.stats.stores == 0
    assert any("over max_session_size" in r.getMessage() for r in caplog.records)
    stack.close(hs)


@pytest.mark.parametrize("asked", ["example.com", "other.example", ""], ids=["same", "other", "none"])
def test_a_session_is_never_resumed_for_another_server_name(stack, version, asked):
    """Cross-SNI resumption skips the name's own certificate and verification settings
    (nginx CVE-2025-23419): refused, whatever OpenSSL would allow. ("" sends no SNI.)"""
    cache = SessionCache()
    server = stack.server_context(version)
    cache.attach(server, internal_cache=False)
    client = stack.client_context()
    first = stack.handshake(server, client, server_name="example.com")
    again = stack.handshake(server, client, first.client_session, server_name=asked)
    if asked == "example.com":
        assert again.server_reused
    else:
        assert not again.server_reused
        assert cache.stats.rejected >= 1
    stack.close(first)
    stack.close(again)


def assert_single_use(stack, version, cache):
    """A single_use cache: a session resumes once, then never again."""
    server = stack.server_context(version)
    cache.attach(server, internal_cache=False)
    client = stack.client_context()
    first = stack.handshake(server, client)
    once = stack.handshake(server, client, first.client_session)
    twice = stack.handshake(server, client, first.client_session)
    assert once.server_reused and not twice.server_reused
    for h in (first, once, twice):
        stack.close(h)


def test_single_use_sessions_resume_once(stack, version):
    assert_single_use(stack, version, SessionCache(single_use=True))


@pytest.mark.parametrize("failure", [StoreError, RuntimeError], ids=["store-error", "store-bug"])
def test_store_faults_fall_back_to_full_handshakes_and_recover(stack, failure, caplog):
    store = FlakyStore(failure)
    cache = SessionCache(store)
    server = stack.server_context(TLS12)
    cache.attach(server, internal_cache=False)
    client = stack.client_context()
    first = stack.handshake(server, client)
    store.down = True
    results = []
    for _ in range(5):
        hs = stack.handshake(server, client, first.client_session)
        results.append(hs.server_reused)
        stack.close(hs)
    assert results == [False] * 5
    errors = cache.stats.errors
    assert errors >= 5
    logged = [r for r in caplog.records if "session store" in r.getMessage()]
    assert 1 <= len(logged) <= 2, "store errors are logged once per burst"
    store.down = False
    hs = stack.handshake(server, client, first.client_session)
    assert hs.server_reused, "the cache did not recover when the store came back"
    stack.close(hs)
    stack.close(first)


def test_counts_add_up_under_threads(stack):
    cache = SessionCache()
    server = stack.server_context(TLS12)
    cache.attach(server, internal_cache=False)
    per_thread = 40
    outcomes = []
    lock = threading.Lock()

    def worker():
        client = stack.client_context()
        reused = _resume_n(stack, server, client, per_thread)
        with lock:
            outcomes.extend(reused)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stats = cache.stats
    assert outcomes.count(True) == 8 * per_thread
    assert stats.hits == 8 * per_thread
    assert stats.stores == 8
    assert stats.errors == 0


def test_attach_checks_its_arguments(stack):
    server = stack.server_context(TLS12)
    with pytest.raises(ConfigurationError, match="1 to 32 bytes"):
        SessionCache().attach(server, session_id_context=b"x" * 33)
    with pytest.raises(ConfigurationError, match="internal_cache=False"):
        SessionCache(single_use=True).attach(server, internal_cache=True)
    with pytest.raises(ConfigurationError, match="7 days"):
        SessionCache(lifetime=8 * 24 * 3600)
    with pytest.raises(ConfigurationError, match="more than 0"):
        SessionCache(lifetime=0)


def test_detach_stops_serving(stack):
    cache = SessionCache()
    server = stack.server_context(TLS12)
    cache.attach(server, internal_cache=False)
    cache.detach(server)
    client = stack.client_context()
    stack.close(stack.handshake(server, client))
    assert cache.stats.stores == 0
    with pytest.raises(ConfigurationError, match="not attached"):
        cache.detach(server)


def test_session_id_context_changed_after_attach_changes_nothing(stack):
    """What Twisted's CertificateOptions does: a random id context set on the context after
    attach. Each connection's id context is the one the cache binds (the configured one,
    with the server name and certificate), so sessions are still stored, and resume on
    another context attached with the same value (another process of the service)."""
    store = MemoryStore()
    cache, other_cache = SessionCache(store), SessionCache(store)
    server, other = stack.server_context(TLS12), stack.server_context(TLS12)
    cache.attach(server, session_id_context=b"shared", internal_cache=False)
    other_cache.attach(other, session_id_context=b"shared", internal_cache=False)
    if stack.name == "pyopenssl":
        server.set_session_id(b"random-per-process")  # pyOpenSSL's own API
    else:  # what any library calling OpenSSL directly does
        bound = bind_context(server)
        assert bound.instance.api.SSL_CTX_set_session_id_context(bound.pointer, b"random", 6) == 1
    client = stack.client_context()
    made = stack.handshake(server, client, server_name="example.com")
    stack.close(made)
    assert cache.stats.stores == 1 and cache.stats.rejected == 0, cache.stats
    resumed = stack.handshake(other, client, made.client_session, server_name="example.com")
    stack.close(resumed)
    assert resumed.server_reused and other_cache.stats.hits == 1


def test_session_id_context_of_a_served_context_is_the_caches(stack):
    """sesscache's own setter refuses to change it behind the cache's back, and works again
    once the cache is detached."""
    cache = SessionCache()
    server = stack.server_context(TLS12)
    cache.attach(server, session_id_context=b"shared")
    with pytest.raises(ConfigurationError, match="attach"):
        sesscache.set_session_id_context(server, b"other")
    cache.detach(server)
    sesscache.set_session_id_context(server, b"other")


def test_unclean_close_loses_nothing_with_the_cache(stack):
    """OpenSSL throws away the session of a server connection freed without
    close_notify (and fires remove); the store keeps it, so the client still resumes."""
    cache = SessionCache()
    server = stack.server_context(TLS12, internal_cache=True)
    cache.attach(server, internal_cache=True)
    client = stack.client_context()
    first = stack.handshake(server, client)
    session = first.client_session
    stack.close_server_uncleanly(first)
    del first
    import gc

    gc.collect()
    assert cache.stats.removes == 1, "OpenSSL removed the session from its internal cache"
    assert sesscache.internal_cache_size(server) == 0
    again = stack.handshake(server, client, session)
    assert again.server_reused and cache.stats.hits == 1
    stack.close(again)


# Not on the stdlib stack: it shows no session's timeout (the linked stack runs its libssl).
@pytest.mark.parametrize("stack_name", ["pyopenssl", "linked"])
def test_tls13_resumed_sessions_are_capped_inside_openssl_too(certs, stack_name):
    """The ticket a TLS 1.3 resumption issues carries what is left of the first handshake's
    lifetime, not a fresh one: the cap is applied before OpenSSL caches the new session
    (shortening it afterwards makes OpenSSL 4.0 re-sort its whole cache)."""
    from tests.tls import STACKS

    stack = STACKS[stack_name](certs)
    cache = SessionCache(lifetime=60)
    server = stack.server_context(TLS13)
    cache.attach(server)
    client = stack.client_context()
    first = stack.handshake(server, client)
    # The server's own session objects (the client keeps its own timeout).
    assert stack.to_session(first.server.get_session()).timeout == 60, "new sessions get the lifetime"
    time.sleep(1.1)
    again = stack.handshake(server, client, first.client_session)
    assert again.server_reused
    assert stack.to_session(again.server.get_session()).timeout <= 59
    stack.close(first)
    stack.close(again)


@pytest.mark.parametrize("version", [TLS12, TLS13])
def test_attach_says_once_when_tickets_starve_the_cache(stack, version, caplog):
    """OpenSSL's default: tickets on. A TLS 1.2 server then sends an empty session id and
    a ticket, and TLS 1.3 stateless tickets: the cache gets nothing to share. attach()
    says so once, naming the fix; with OP_NO_TICKET it says nothing."""
    cache = SessionCache()
    for _ in range(3):
        cache.attach(stack.server_context(version, tickets=True))
    warnings = [r for r in caplog.records if "OP_NO_TICKET" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].levelname == "WARNING"
    server = stack.server_context(version, tickets=True)
    fresh = SessionCache()
    fresh.attach(server)
    client = stack.client_context()
    stack.close(stack.handshake(server, client))
    if version == TLS12:  # the measurement behind the warning: nothing reaches the cache
        assert fresh.stats.stores == 0 and fresh.stats.stateless == 0, fresh.stats
    caplog.clear()
    SessionCache().attach(stack.server_context(version))
    assert not [r for r in caplog.records if "OP_NO_TICKET" in r.getMessage()]
