"""Two versions side by side, as in a rolling deploy (issue 23 item 8): what a "next format
version" writes, made by hand from the format docs, is a quiet, counted miss for this one.

* Sessions (cache.py: the envelope's format byte is the 0xE0 family, this version 0xE1;
  sealing.py: sealing's format byte, this version 1): a later version's session is a
  miss, counted in ``misses``, logged at debug level only, never ``rejected``.
* Ticket-key rings (ticket_keys.py: ``SCTK``, format version, sealing flag): refused, a
  local key, never overwritten; and the reverse, a next version's reader over this one's
  ring, where a process can play it (the format constant patched).
* Session-id stamps (session_ids.py: ``b"sc"`` then milliseconds): a later marker is no
  stamp for this version: no wait for a write, a plain miss.
* Client sessions: tests/cache/test_client_cache_keys.py (and the reverse below).

Real handshakes on pyOpenSSL and the stdlib; real SQLite; real Redis for the stamps.
"""
from __future__ import annotations

import logging
import sqlite3
import time

import pytest

from sesscache import MemoryStore, SessionCache, SQLiteStore, TicketKeys
from sesscache.sealing import Sealer, generate_key
from sesscache.ticket_keys import RING_KEY

from tests.reliability.drive import client_hello, feed_server
from tests.reliability.hello import Hello
from tests.server_fixtures import unique_prefix
from tests.tls import STACKS, TLS12, TLS13


def _rows(path):
    conn = sqlite3.connect(path)
    rows = conn.execute("SELECT key, value FROM sesscache").fetchall()
    conn.close()
    return rows


def _replace(path, key, value):
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("UPDATE sesscache SET value = ? WHERE key = ?", (value, key))
    conn.close()


def _next_envelope(blob: bytes) -> bytes:
    """This version's envelope as the next one might write it: format byte 0xE2, and a
    field it added at the end (this version cannot know where its DER would start)."""
    assert blob[0] == 0xE1
    return bytes([0xE2]) + blob[1:] + b"\x00\x05added"


NEXT = {
    "envelope-plain": (False, lambda key, blob, sealer: _next_envelope(blob)),
    "envelope-sealed": (True, lambda key, blob, sealer: sealer.seal(key, _next_envelope(sealer.open(key, blob)))),
    "sealing-format-2": (True, lambda key, blob, sealer: bytes([2]) + blob[1:]),
}


@pytest.mark.parametrize("stack_name", ["pyopenssl", "stdlib"])
@pytest.mark.parametrize("version", [TLS12, TLS13])
@pytest.mark.parametrize("case", sorted(NEXT))
def test_sessions_of_the_next_format_version_are_quiet_counted_misses(case, version, stack_name, certs,
                                                                      tmp_path, caplog):
    sealed, rewrite = NEXT[case]
    stack = STACKS[stack_name](certs)
    seal_keys = [generate_key()] if sealed else None
    path = str(tmp_path / "sessions.db")
    cache = SessionCache(SQLiteStore(path), seal_keys=seal_keys)
    server, client = stack.server_context(version), stack.client_context()
    cache.attach(server, internal_cache=False)
    hs = stack.handshake(server, client)
    session = hs.client_session
    stack.close(hs)
    sealer = Sealer(seal_keys) if sealed else None
    for key, blob in _rows(path):
        _replace(path, key, rewrite(key, blob, sealer))
    before = cache.stats.as_dict()
    with caplog.at_level(logging.DEBUG, logger="sesscache"):
        hs = stack.handshake(server, client, session=session)
    assert not hs.server_reused
    stack.close(hs)
    after = cache.stats.as_dict()
    delta = {k: after[k] - before[k] for k in ("hits", "misses", "rejected", "expired", "errors")
             if after[k] != before[k]}
    assert delta == {"misses": 1}
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], "quiet"
    assert "another sesscache version" in caplog.text  # at debug level
    cache.close()


def test_a_format_byte_outside_the_family_is_still_refused(stack, tmp_path):
    """0x02 is no sesscache envelope at all: refused and counted as before (bad-input
    table, format-2), not taken for a rolling deploy."""
    path = str(tmp_path / "sessions.db")
    cache = SessionCache(SQLiteStore(path))
    server, client = stack.server_context(TLS12), stack.client_context()
    cache.attach(server, internal_cache=False)
    hs = stack.handshake(server, client)
    session = hs.client_session
    stack.close(hs)
    for key, blob in _rows(path):
        _replace(path, key, bytes([2]) + blob[1:])
    before = cache.stats
    hs = stack.handshake(server, client, session=session)
    assert not hs.server_reused
    stack.close(hs)
    after = cache.stats
    assert (after.rejected - before.rejected, after.misses - before.misses) == (1, 0)
    cache.close()


# -- ticket-key rings ------------------------------------------------------------------------


def test_a_ring_of_the_next_version_and_this_versions_ring_under_the_next_reader(stack, monkeypatch, caplog):
    import sesscache.ticket_keys as tk

    store = MemoryStore()
    now = TicketKeys(store, background=False)  # this version writes its ring
    ours = store.get(RING_KEY)
    try:
        # The reverse: the next version's reader (format 2) over this version's ring.
        monkeypatch.setattr(tk, "FORMAT_VERSION", 2)
        with caplog.at_level(logging.ERROR, logger="sesscache.ticket_keys"):
            later = TicketKeys(store, background=False)
        monkeypatch.setattr(tk, "FORMAT_VERSION", 1)
        assert "format version 1" in caplog.text
        assert [k.role for k in later.keys()] == ["local"] and later.stats.store_errors == 1
        assert store.get(RING_KEY) == ours, "never overwritten by a reader of another version"
        ctx = stack.server_context(TLS13, tickets=True, internal_cache=True)
        now.attach(ctx)
        client = stack.client_context()
        hs = stack.handshake(ctx, client)
        session = hs.client_session
        stack.close(hs)
        hs = stack.handshake(ctx, client, session=session)
        assert hs.server_reused, "this version's processes keep resuming from their ring"
        stack.close(hs)
        # And this version over a ring the next one wrote (format 2, a body it cannot know).
        newer = b"SCTK" + bytes([2, 0]) + b'{"v2": "fields this version does not know"}'
        store.set(RING_KEY, newer, 3600)
        now.refresh()
        assert now.stats.store_errors == 1 and store.get(RING_KEY) == newer
        hs = stack.handshake(ctx, client)
        session = hs.client_session
        stack.close(hs)
        hs = stack.handshake(ctx, client, session=session)
        assert hs.server_reused, "served on from the ring in memory"
        stack.close(hs)
        later.close()
    finally:
        now.close()


# -- session-id stamps ----------------------------------------------------------------------


@pytest.mark.needs_redis
@pytest.mark.parametrize("stack_name", ["pyopenssl", "stdlib"])
def test_an_id_stamped_by_the_next_stamp_format_is_a_miss_without_waiting(stack_name, certs, redis_url):
    """A TLS 1.2 ClientHello offering an unknown session id whose stamp is in this version's
    layout waits for its write (up to new_session_wait); the same id with the next format's
    marker is no stamp here: a miss at once."""
    from sesscache.stores import ResilientStore
    from sesscache.stores.redis import RedisStore

    stack = STACKS[stack_name](certs)
    store = ResilientStore(RedisStore(redis_url, prefix=unique_prefix()), new_session_wait=0.05)
    cache = SessionCache(store)
    server, client = stack.server_context(TLS12), stack.client_context()
    cache.attach(server, internal_cache=False)
    hs = stack.handshake(server, client)
    session = hs.client_session
    stack.close(hs)
    hello = Hello.parse(client_hello(stack, client, session=session))
    ms = int(time.time() * 1000).to_bytes(6, "big")

    def offer(marker):
        hello.session_id = b"\x07" * 24 + marker + ms
        answer = feed_server(stack, server, hello.to_bytes())
        assert not answer.reused and not answer.alert

    offer(b"sc")  # this version's stamp: it waits for the write
    assert store.stats.new_session_waits == 1
    misses = cache.stats.misses
    offer(b"sd")  # the next format's marker: no stamp for this version
    assert store.stats.new_session_waits == 1, "no wait"
    assert cache.stats.misses == misses + 1 and cache.stats.rejected == 0
    cache.close()
