"""Load: 8 threads handshaking on one server context, over each store and each TLS stack.

Every thread mixes full handshakes, resumptions of its own sessions and offers of sessions
the store never saw; half the threads speak TLS 1.2, half TLS 1.3 (stateful tickets). The
cache's counters must then equal, exactly, what the threads did and what the store was
asked, and every SSL_SESSION made must be freed once the traffic is gone.
"""
from __future__ import annotations

import os

import pytest

from sesscache import SessionCache
from tests.reliability.helpers import (
    CountingStore,
    Tally,
    allow_tls12_and_13,
    client_for,
    describe_durations,
    expected_gets,
    expected_news,
    live,
    run_threads,
    timed_handshake,
)
from tests.server_fixtures import STORE_KINDS
from tests.tls import TLS12, TLS13

THREADS = 8
# 1,000 handshakes per store and stack in the normal run (3,000 per store); the slow run does 20,000.
PER_THREAD = int(os.environ.get("SESSCACHE_LOAD_PER_THREAD", "125"))


def _traffic(stack, server, foreign_server, per_thread, tallies, versions):
    def worker(index):
        version = TLS12 if index % 2 == 0 else TLS13
        versions[index] = version
        client = client_for(stack, version)
        tally = Tally()
        foreign_hs = stack.handshake(foreign_server, client)
        foreign = foreign_hs.client_session
        stack.close(foreign_hs)
        current = None
        for i in range(per_thread):
            step = i % 10
            if step == 0 or current is None:
                hs, took = timed_handshake(stack, server, client)
                tally.full += 1
                if hs.server_reused:
                    tally.failures.append("a handshake without a session resumed")
                current = hs.client_session
            elif step == 5:
                hs, took = timed_handshake(stack, server, client, foreign)
                tally.foreign += 1
                if hs.server_reused:
                    tally.failures.append("a session the store never had resumed")
            else:
                hs, took = timed_handshake(stack, server, client, current)
                if hs.server_reused:
                    tally.resumed += 1
                else:
                    tally.not_resumed += 1
                    tally.failures.append(f"stored session not resumed ({version})")
            if hs.version != version:
                tally.failures.append(f"negotiated {hs.version}, expected {version}")
            tally.durations.append(took)
            stack.close(hs)
        tallies[index] = tally

    return worker


def run_load(stack, store, per_thread):
    """``store=None``: the cache's own default (a MemoryStore served by the C fast path),
    counted through the cache's stats alone; else the store wrapped in a CountingStore
    (which the cache serves from Python), whose calls must match the stats too."""
    counting = CountingStore(store) if store is not None else None
    cache = SessionCache(counting, lifetime=3600) if counting is not None else SessionCache(lifetime=3600)
    server = stack.server_context(TLS13)
    allow_tls12_and_13(stack, server)
    cache.attach(server, internal_cache=False)
    foreign_server = stack.server_context(TLS13, internal_cache=True, sid_ctx=b"elsewhere")
    allow_tls12_and_13(stack, foreign_server)
    baseline = live(server)
    tallies, versions = {}, {}
    run_threads(THREADS, _traffic(stack, server, foreign_server, per_thread, tallies, versions))

    total = Tally()
    gets = news = 0
    for index, tally in tallies.items():
        total.add(tally)
        gets += expected_gets(versions[index], tally)
        news += expected_news(versions[index], tally)
    assert not total.failures, total.failures[:5]
    assert total.full + total.resumed + total.foreign == THREADS * per_thread

    stats = cache.stats
    if counting is not None:
        counting.check(stats)
        assert counting.count("get-value") + counting.count("get-none") == gets
    else:  # the C fast path answered (all but first sightings of the certificate)
        fast = cache._fast_counts()  # (the first sighting of the certificate goes to Python)
        assert cache.handed_over() <= THREADS, fast
        assert fast["hits"] + fast["misses"] >= gets - cache.handed_over(), (fast, gets)
    assert stats.hits == total.resumed, stats
    assert stats.hits + stats.misses == gets, (stats, gets)
    assert stats.stores == news, (stats, news)
    assert (stats.errors, stats.rejected, stats.expired, stats.oversize, stats.stateless) == (0, 0, 0, 0, 0), stats
    # With the internal cache off, OpenSSL holds no session of its own to remove.
    assert stats.removes == 0, stats

    del server, foreign_server, cache
    assert live(stack.client_context()) == baseline, "sessions outlived the load run"
    return total


@pytest.mark.parametrize("kind", STORE_KINDS)
def test_eight_threads_on_one_context_count_every_handshake(stack, store_factory, kind):
    store = store_factory(kind)
    total = run_load(stack, store, PER_THREAD)
    print(f"{stack.name}/{kind}: {describe_durations(total.durations)}")


def test_eight_threads_on_the_default_cache_count_every_handshake(stack):
    """What users run: SessionCache() with its default MemoryStore, so the C fast path
    answers under the 8-thread load, counted through the cache's own stats."""
    total = run_load(stack, None, PER_THREAD)
    print(f"{stack.name}/default: {describe_durations(total.durations)}")


@pytest.mark.slow
@pytest.mark.parametrize("kind", STORE_KINDS)
def test_eight_threads_twenty_thousand_handshakes(stack, store_factory, kind):
    store = store_factory(kind)
    total = run_load(stack, store, 2500)
    print(f"{stack.name}/{kind}: {describe_durations(total.durations)}")
