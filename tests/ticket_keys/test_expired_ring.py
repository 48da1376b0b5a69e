"""A ring whose keys have all expired while its next rotation is still in the future
(issue 23 item 3): a fleet stopped for longer than its keys live, or a ring written with a
wrong time. Ticket resumption must not stop silently: the ring is rotated at once, or,
when the store cannot be written, a local key serves (logged) until the next refresh
rejoins the fleet. ``keys()`` never shows an expired key as current.
"""
from __future__ import annotations

import logging
import time

import pytest

from sesscache import MemoryStore, SQLiteStore, TicketKeys
from sesscache.errors import StoreError
from sesscache.stores.base import BaseStore
from sesscache.ticket_keys import RING_KEY, _Key, _Ring, encode_ring

from tests.tls import STACKS, TLS12, TLS13

DAY = 86400.0


def _dead_ring(now: float) -> bytes:
    """Keys made 10 days ago that expired 2 days ago; the next rotation an hour away."""
    made, gone = now - 10 * DAY, now - 2 * DAY
    ring = _Ring(7, now + 3600, _Key.fresh(made, gone - made), _Key.fresh(made, gone - made),
                 [_Key.fresh(made, gone - made)], rotate_every=12 * 3600.0, keep=3)
    return encode_ring(ring, None, RING_KEY)


def _ticket(stack, server_ctx, client):
    hs = stack.handshake(server_ctx, client)
    session = hs.client_session
    stack.close(hs)
    return session


def _resumes(stack, issuer, other=None):
    client = stack.client_context()
    session = _ticket(stack, issuer, client)
    hs = stack.handshake(other or issuer, client, session=session)
    reused = hs.server_reused
    stack.close(hs)
    return reused


class _ReadOnly(BaseStore):
    """Writes fail while ``broken`` (a replica, a full disk, an ACL without SET)."""

    def __init__(self, inner):
        self.inner, self.broken = inner, True

    def get(self, key):
        return self.inner.get(key)

    def set(self, key, value, ttl):
        self._check()
        self.inner.set(key, value, ttl)

    def delete(self, key):
        self._check()
        self.inner.delete(key)

    def compare_and_set(self, key, expected, value, ttl):
        self._check()
        return self.inner.compare_and_set(key, expected, value, ttl)

    def _check(self):
        if self.broken:
            raise StoreError("READONLY You can't write against a read only replica")


@pytest.mark.parametrize("stack_name", ["pyopenssl", "stdlib"])
@pytest.mark.parametrize("version", [TLS12, TLS13])
def test_a_ring_of_expired_keys_is_rotated_and_resumption_goes_on(stack_name, version, certs, tmp_path, caplog):
    stack = STACKS[stack_name](certs)
    store = SQLiteStore(str(tmp_path / "keys.db"))
    store.set(RING_KEY, _dead_ring(time.time()), 3600)
    with caplog.at_level(logging.WARNING, logger="sesscache.ticket_keys"):
        keys = TicketKeys(store, background=False)
        peer = TicketKeys(SQLiteStore(str(tmp_path / "keys.db")), background=False)
    try:
        assert "no current key that is still valid" in caplog.text
        assert keys.stats.rotations + peer.stats.rotations == 1, "rotated once, for the fleet"
        now = time.time()
        assert all(now < k.not_after for k in keys.keys()), "no expired key listed"
        assert [k.role for k in keys.keys()] == ["next", "current"] and keys.keys() == peer.keys()
        a = stack.server_context(version, tickets=True, internal_cache=True)
        b = stack.server_context(version, tickets=True, internal_cache=True)
        keys.attach(a)
        peer.attach(b)
        assert sum(_resumes(stack, a) for _ in range(20)) == 20
        assert _resumes(stack, a, b), "one fleet again"
        assert keys.stats.no_key == 0
    finally:
        keys.close()
        peer.close()
        peer.store.close()
        store.close()


@pytest.mark.parametrize("stack_name", ["pyopenssl", "stdlib"])
def test_a_ring_of_expired_keys_in_a_store_that_refuses_writes_a_local_key_then_the_fleet(
        stack_name, certs, caplog):
    stack = STACKS[stack_name](certs)
    inner = MemoryStore()
    inner.set(RING_KEY, _dead_ring(time.time()), 3600)
    store = _ReadOnly(inner)
    with caplog.at_level(logging.WARNING, logger="sesscache.ticket_keys"):
        keys = TicketKeys(store, background=False)
    try:
        assert "using a local random key" in caplog.text
        assert [k.role for k in keys.keys()] == ["local"], "the expired keys are not listed"
        assert keys.stats.local_keys == 1
        ctx = stack.server_context(TLS13, tickets=True, internal_cache=True)
        keys.attach(ctx)
        assert sum(_resumes(stack, ctx) for _ in range(20)) == 20
        keys.refresh()
        assert keys.stats.local_keys == 1, "one local key serves until the store takes writes"

        store.broken = False
        keys.refresh()  # rotates the dead ring: the fleet's again
        peer = TicketKeys(inner, background=False)
        other = stack.server_context(TLS13, tickets=True, internal_cache=True)
        peer.attach(other)
        assert [k.role for k in keys.keys()][:2] == ["next", "current"]
        assert keys.keys()[:2] == peer.keys()
        assert _resumes(stack, ctx, other) and _resumes(stack, other, ctx)
        peer.close()
    finally:
        keys.close()


def test_keys_lists_no_key_past_its_age():
    """A running process whose ring aged out (its refresh thread stuck): what keys() lists
    is what the C ring serves, never an expired key."""
    store = MemoryStore()
    keys = TicketKeys(store, background=False, rotate_every=60, keep=1)
    try:
        later = time.time() + keys.key_lifetime + 10
        keys._clock = lambda: later
        assert keys.keys() == []
    finally:
        keys.close()
