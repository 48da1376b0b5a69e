"""No session is ever leaked: thousands of new/get/remove cycles over each store (10,000 in
the slow run), then the count of live SSL_SESSIONs (OpenSSL's own object life cycle) is back
where it started.

Each cycle is one real TLS 1.3 resumption on sesscache's linked libssl, the stack with the
least overhead of its own: OpenSSL asks the store for the offered session (get, a hit), the
resumed handshake issues a new stateful ticket (new, stored, and kept in OpenSSL's internal
cache), and a flush of the internal cache drops it again (remove).
"""
from __future__ import annotations

import os

import pytest

import sesscache
from sesscache import SessionCache
from tests.reliability.helpers import live
from tests.server_fixtures import STORE_KINDS
from tests.tls import TLS13, LinkedStack

# 2,000 cycles per store in the normal run (about 12 s for the four); the slow run does 10,000.
CYCLES = int(os.environ.get("SESSCACHE_LEAK_CYCLES", "2000"))


@pytest.mark.parametrize("kind", STORE_KINDS)
def test_new_get_remove_cycles_leak_nothing(certs, store_factory, kind):
    cycles_leak_nothing(certs, store_factory(kind), CYCLES)


@pytest.mark.slow
@pytest.mark.parametrize("kind", STORE_KINDS)
def test_ten_thousand_new_get_remove_cycles_leak_nothing(certs, store_factory, kind):
    cycles_leak_nothing(certs, store_factory(kind), 10_000)


def cycles_leak_nothing(certs, store, cycles):
    stack = LinkedStack(certs)
    baseline = live(sesscache.libssl_info())
    cache = SessionCache(store, lifetime=3600)
    server = stack.server_context(TLS13, internal_cache=True)
    cache.attach(server, internal_cache=True)  # internal cache on, so OpenSSL has sessions to remove...
    # ...but every lookup still goes to the store
    sesscache.set_session_cache_mode(server, sesscache.SESS_CACHE_SERVER | sesscache.SESS_CACHE_NO_INTERNAL_LOOKUP)
    client = stack.client_context()
    first = stack.handshake(server, client)
    session = first.client_session
    stack.close(first)
    del first
    for _ in range(cycles):
        hs = stack.handshake(server, client, session)
        assert hs.server_reused
        session = hs.client_session  # the newest ticket: its own new session
        stack.close(hs)
        sesscache.flush_sessions(server, 0)  # empties the internal cache: remove fires
    del hs, session
    stats = cache.stats
    assert stats.hits == cycles, stats
    assert stats.stores == 2 + cycles, stats  # two tickets after the full handshake, one per resumption
    # each cycle caches two sessions (the hit is copied into the internal cache, and the new
    # ticket); the flushes removed them all
    assert stats.removes >= 2 * cycles, stats
    assert (stats.errors, stats.rejected, stats.expired, stats.misses) == (0, 0, 0, 0), stats
    assert sesscache.internal_cache_size(server) == 0
    del server, client, cache
    # What is still alive is what the store keeps decoded beside its entries (the fast path
    # copies those rather than decode again): bounded, and gone with the store.
    kept = store.describe().get("decoded", 0)
    assert kept <= 2048
    assert live(sesscache.libssl_info()) == baseline + kept, "sessions leaked"
    store.close()
    assert live(sesscache.libssl_info()) == baseline, "sessions leaked"
