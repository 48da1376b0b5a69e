"""The session hooks of a context a SessionCache serves belong to the cache (issue 16, 1).

A raw callback set there would be accepted and never run (the cache's C fast path
answers first), so it is refused with a message that says what to do; after detach
the raw callbacks are the context's again, and they run.
"""
from __future__ import annotations

import pytest

import sesscache
from sesscache import SessionCache
from sesscache.errors import ConfigurationError
from tests.tls import TLS12

SETTERS = {
    "new": (sesscache.set_new_session_callback, sesscache.get_new_session_callback),
    "get": (sesscache.set_get_session_callback, sesscache.get_get_session_callback),
    "remove": (sesscache.set_remove_session_callback, sesscache.get_remove_session_callback),
}


@pytest.mark.parametrize("hook", sorted(SETTERS))
def test_a_raw_callback_on_a_cache_served_context_is_refused(stack, hook):
    setter, getter = SETTERS[hook]
    cache = SessionCache()
    server = stack.server_context(TLS12)
    cache.attach(server, internal_cache=False)
    client = stack.client_context()
    first = stack.handshake(server, client)
    stack.close(first)
    calls = []
    with pytest.raises(ConfigurationError, match=r"detach|stats") as refused:
        setter(server, lambda *args: calls.append(args))
    assert "SessionCache" in str(refused.value)
    with pytest.raises(ConfigurationError, match="detach"):
        setter(server, None)  # clearing the cache's hook behind its back: refused too
    assert getter(server) is None, "no raw callback is set: the getter must not claim one"
    # The cache still serves the context, from C and Python alike.
    again = stack.handshake(server, client, first.client_session)
    assert again.server_reused and cache.stats.hits == 1
    stack.close(again)
    assert calls == []


def test_after_detach_a_raw_callback_is_the_one_that_runs(stack):
    """Handing over for real: detach, then the raw new-session callback runs on every
    new session (the stdlib allows changing a used context; pyOpenSSL 26.2+ does not,
    so there the cache is detached before the first connection)."""
    cache = SessionCache()
    server = stack.server_context(TLS12)
    cache.attach(server, internal_cache=False)
    client = stack.client_context()
    if stack.name != "pyopenssl":
        stack.close(stack.handshake(server, client))
        assert cache.stats.stores == 1
    cache.detach(server)
    seen = []
    sesscache.set_new_session_callback(server, lambda conn, session: seen.append(session.id))
    assert sesscache.get_new_session_callback(server) is not None
    hs = stack.handshake(server, client)
    stack.close(hs)
    assert len(seen) == 1
