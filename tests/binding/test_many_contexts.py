"""Any number of live hooked contexts keeps every protection (gunicorn's gthread worker
keeps one context per open connection): the SNI binding with the internal cache in front,
the session context after an SNI switch, the TLS 1.3 lifetime cap, and no warning.

Until 3493e9f each copy of libssl had 32 per-context trampolines; past them attach()
logged three warnings per context and the protections quietly degraded."""
from __future__ import annotations

import logging
import time

import pytest

from sesscache import MemoryStore, SessionCache
from tests.tls import STACKS, TLS12, TLS13

LIVE = 200


@pytest.mark.parametrize("version", [TLS12, TLS13])
def test_every_protection_holds_past_two_hundred_live_contexts(stack, version, caplog):
    caplog.set_level(logging.WARNING, logger="sesscache")
    cache = SessionCache(MemoryStore(), lifetime=60)
    contexts = []
    for _ in range(LIVE):
        context = stack.server_context(version, internal_cache=True)
        cache.attach(context)
        contexts.append(context)
    assert not [r for r in caplog.records if r.name.startswith("sesscache")], caplog.text
    client = stack.client_context()
    for context in (contexts[0], contexts[LIVE // 2], contexts[-1]):
        rejected = cache.stats.rejected
        made = stack.handshake(context, client, server_name="example.com")
        stack.close(made)
        other = stack.handshake(context, client, made.client_session, server_name="other.example")
        stack.close(other)
        assert not other.server_reused and cache.stats.rejected == rejected + 1, cache.stats
        capped = version == TLS13 and stack.name != "stdlib"  # stdlib shows no session timeout
        if capped and context is contexts[-1]:
            time.sleep(1.1)  # so that a resumption's new session shows the cap
        same = stack.handshake(context, client, made.client_session, server_name="example.com")
        assert same.server_reused
        if capped and context is contexts[-1]:
            assert stack.to_session(same.server.get_session()).timeout <= 59, "not capped"
        stack.close(same)


@pytest.mark.parametrize("stack_name", ["pyopenssl", "stdlib"])
def test_the_session_context_is_found_after_an_sni_switch_past_the_old_pool(certs, stack_name):
    """Connections start on the last of many contexts and switch to a virtual host's: the
    cache of the context they started on stores and serves their sessions."""
    from tests.reliability.test_sni_every_mode import _switch_to

    stack = STACKS[stack_name](certs)
    caches = [SessionCache(MemoryStore()) for _ in range(LIVE)]
    entries = []
    for cache in caches:
        entry = stack.server_context(TLS12)
        _switch_to(stack, entry, {"example.com": stack.server_context(TLS12)})
        cache.attach(entry, internal_cache=False)
        entries.append(entry)
    client = stack.client_context()
    made = stack.handshake(entries[-1], client, server_name="example.com")
    stack.close(made)
    again = stack.handshake(entries[-1], client, made.client_session, server_name="example.com")
    stack.close(again)
    assert again.server_reused
    assert caches[-1].stats.stores == 1 and caches[-1].stats.hits == 1, caches[-1].stats
    assert all(c.stats.stores == 0 for c in caches[:-1])


def test_a_context_per_connection_leaves_nothing_behind(stack):
    """gunicorn's pattern: a new context for every connection, the cache attached to each.
    What an attachment keeps goes with its context; the fast path's policy is shared."""
    import gc

    cache = SessionCache(MemoryStore())
    client = stack.client_context()
    for _ in range(50):
        context = stack.server_context(TLS12, internal_cache=True)
        cache.attach(context)
        stack.close(stack.handshake(context, client, server_name="example.com"))
        del context
    gc.collect()
    assert len(cache._attached) == 0, "attachments of freed contexts are still held"
    assert len(cache._fast_policies) <= 1
    assert cache.stats.stores == 50
