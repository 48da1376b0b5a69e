"""attach's default for OpenSSL's internal cache (issue 22): off in front of a store C
answers itself (MemoryStore, shm:, a Redis replica), on in front of a store answered in
Python, off with ``single_use``; an explicit ``internal_cache=`` always wins.

Why off over C tables: OpenSSL keeps its internal cache sorted by expiry, and a TLS 1.3
resumption's new session, capped at its first handshake's lifetime, expires before every
session made since, so OpenSSL walks past them all to insert it (OpenSSL 3.0.19: +400 us per
resumption with 5,000 sessions cached; ``benchmarks/run.py walk``), while the C table's own
lookup costs 1.6-2.5 us. The cost is a benchmark's to show; these tests pin what is set and
that sessions still resume, in no OpenSSL cache but the store.
"""
from __future__ import annotations

import pytest

import sesscache
from sesscache import MemoryStore, SessionCache
from sesscache.errors import ConfigurationError
from tests.tls import TLS12, TLS13

NO_INTERNAL = sesscache.SESS_CACHE_SERVER | sesscache.SESS_CACHE_NO_INTERNAL


class PythonOnlyStore(MemoryStore):
    """A store C cannot read (a method overridden): every event goes through Python, as
    for SQLite, memcached or a store of your own."""

    def get(self, key):
        return super().get(key)


def _resume_chain(stack, server, version, rounds=4):
    client = stack.client_context()
    hs = stack.handshake(server, client)
    session = hs.client_session
    stack.close(hs)
    resumed = 0
    for _ in range(rounds):
        hs = stack.handshake(server, client, session=session)
        resumed += bool(hs.server_reused)
        session = hs.client_session
        stack.close(hs)
    return resumed


@pytest.mark.parametrize("version", [TLS12, TLS13])
def test_over_c_tables_the_store_is_the_only_cache(stack, version):
    cache = SessionCache(MemoryStore())
    server = stack.server_context(version, internal_cache=True)
    cache.attach(server)
    assert sesscache.get_session_cache_mode(server) == NO_INTERNAL
    assert _resume_chain(stack, server, version) == 4
    assert cache.stats.hits >= 4  # every resumption was a lookup in the store


def test_in_front_of_a_python_store_the_internal_cache_stays(stack):
    cache = SessionCache(PythonOnlyStore())
    server = stack.server_context(TLS13, internal_cache=False)
    cache.attach(server)
    assert sesscache.get_session_cache_mode(server) == sesscache.SESS_CACHE_SERVER
    assert _resume_chain(stack, server, TLS13) == 4


def test_an_explicit_choice_wins(stack):
    over_c = stack.server_context(TLS12)
    SessionCache(MemoryStore()).attach(over_c, internal_cache=True)
    assert sesscache.get_session_cache_mode(over_c) == sesscache.SESS_CACHE_SERVER
    in_front = stack.server_context(TLS12)
    SessionCache(PythonOnlyStore()).attach(in_front, internal_cache=False)
    assert sesscache.get_session_cache_mode(in_front) == NO_INTERNAL


def test_single_use_defaults_to_the_store_only_and_refuses_an_internal_cache(stack):
    server = stack.server_context(TLS13)
    cache = SessionCache(PythonOnlyStore(), single_use=True)
    cache.attach(server)
    assert sesscache.get_session_cache_mode(server) == NO_INTERNAL
    with pytest.raises(ConfigurationError, match="internal_cache=False"):
        SessionCache(single_use=True).attach(stack.server_context(TLS13), internal_cache=True)
