"""Shared ticket keys when the store fails: a real Redis, killed and restarted.

The ring in memory keeps serving; the refresh thread retries (its timer is re-armed after
every error, unlike Caddy's distributed STEK, which stops rotating after one); past the
current key's safe age a local key takes over, and says so.
"""
from __future__ import annotations

import logging
import time

import pytest

import sesscache
from sesscache import TicketKeys
from sesscache.stores.redis import RedisStore

from tests.tls import TLS13

pytestmark = pytest.mark.needs_redis


def wait_for(predicate, timeout=20.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def resumes(stack, server_ctx, other_ctx=None):
    """A fresh ticket from server_ctx, offered at once to other_ctx (default: the same)."""
    client = stack.client_context()
    hs = stack.handshake(server_ctx, client)
    session = hs.client_session
    stack.close(hs)
    hs = stack.handshake(other_ctx or server_ctx, client, session=session)
    reused = hs.server_reused
    stack.close(hs)
    return reused


def test_store_down_at_start_a_local_key_then_the_fleet_ring(stack, redis_servers, caplog):
    redis = redis_servers()
    redis.kill()
    store = RedisStore(redis.url, timeout=0.2)
    with caplog.at_level(logging.ERROR, logger="sesscache.ticket_keys"):
        keys = TicketKeys(store, background=False)
        other = TicketKeys(RedisStore(redis.url, timeout=0.2), background=False)
    assert "unreachable at start; using a local random key" in caplog.text
    assert [k.role for k in keys.keys()] == ["local"] and keys.stats.local_keys == 1
    a, b = (stack.server_context(TLS13, tickets=True, internal_cache=True) for _ in range(2))
    keys.attach(a)
    other.attach(b)
    assert resumes(stack, a), "resumption stays local"
    assert not resumes(stack, a, b), "...and only local: each process has its own key"

    client = stack.client_context()
    hs = stack.handshake(a, client)
    local_ticket = hs.client_session
    stack.close(hs)

    redis.start()
    keys.refresh()
    other.refresh()
    assert keys.keys()[1].role == "current" and keys.keys()[1] == other.keys()[1]
    assert resumes(stack, a, b), "the fleet's ring is in use again"
    hs = stack.handshake(a, client, session=local_ticket)
    assert hs.server_reused, "the local key still decrypts until it ages out"
    stack.close(hs)
    assert keys.stats.renewed == 1
    keys.close()
    other.close()
    store.close()


def test_store_down_during_rotation_keeps_serving_retries_then_a_local_key(stack, redis_servers, caplog):
    """TLS 1.3 only: the refresh thread's behaviour does not depend on the version (the
    handshake tests cover both)."""
    redis = redis_servers()
    store = RedisStore(redis.url, timeout=0.2)
    # A rotation every 2 s: a key may encrypt for 2.5 periods (5 s) before it is too old.
    keys = TicketKeys(store, rotate_every=2, keep=1, refresh_every=0.2)
    ctx = stack.server_context(TLS13, tickets=True, internal_cache=True)
    keys.attach(ctx)
    wait_for(lambda: keys.stats.rotations >= 1 or keys.stats.refreshes >= 3, what="a refresh")
    redis.kill()
    with caplog.at_level(logging.WARNING, logger="sesscache.ticket_keys"):
        wait_for(lambda: keys.stats.store_errors >= 2, what="retries")
        assert resumes(stack, ctx), "the ring in memory keeps serving"
        wait_for(lambda: keys.stats.local_keys >= 1, what="the local key")
    assert "past the current key's maximum age; using a local random key" in caplog.text
    assert keys.keys()[0].role == "local"
    assert resumes(stack, ctx)
    assert keys._thread.is_alive(), "the refresh thread never stops"

    redis.start()  # empty (no persistence): the process makes the fleet's ring anew
    wait_for(lambda: keys.keys()[0].role != "local", what="the fleet's ring again")
    rotations = keys.stats.rotations
    wait_for(lambda: keys.stats.rotations >= rotations + 2, what="rotations going on")
    assert resumes(stack, ctx)
    keys.close()
    store.close()
