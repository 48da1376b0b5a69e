"""attach and detach in one C call each (issue 22: csrc/attach.c).

What one call makes newly reachable: detaching and attaching again, one cache on many
contexts sharing one settings struct, and a refused attach (or detach) that leaves the
context exactly as it was, never half served.
"""
from __future__ import annotations

import pytest

import sesscache
from sesscache import SessionCache
from sesscache._binding import ffi, lib
from sesscache._binding import hooks as _hooks
from sesscache._binding.find_context import bind_context
from sesscache.cache import DEFAULT_SESSION_ID_CONTEXT
from sesscache.errors import ConfigurationError
from tests.tls import TLS12


def _state(context):
    """What attach changes on a context, read back through its libssl copy."""
    bound = bind_context(context)
    api = bound.instance.api
    states = ffi.new("int[3]")
    lib.sc_hooks_of(bound.instance.slot, bound.pointer, states, states + 1, states + 2)
    return {
        "mode": sesscache.get_session_cache_mode(context),
        "timeout": int(api.SSL_CTX_get_timeout(bound.pointer)),
        "hooks": tuple(states),
        "pin": lib.sc_pin_of(bound.instance.slot, bound.pointer),
        "registered": _hooks.hooks_for(context) is not None,
    }


def _resumes(stack, cache, server, other=None):
    """A full handshake on server, then its session offered to other (or server again)."""
    client = stack.client_context()
    first = stack.handshake(server, client)
    stack.close(first)
    again = stack.handshake(other if other is not None else server, client, first.client_session)
    stack.close(again)
    return again.server_reused


def test_detach_then_attach_again_serves_the_context(stack):
    cache = SessionCache()
    server = stack.server_context(TLS12)
    cache.attach(server, internal_cache=False)
    if stack.name != "pyopenssl":  # (pyOpenSSL 26.2+: a used context may not change)
        assert _resumes(stack, cache, server)
    cache.detach(server)
    assert cache.session_id_context(server) is None
    cache.attach(server, session_id_context=b"again", internal_cache=False)
    assert cache.session_id_context(server) == b"again"
    hits = cache.stats.hits
    assert _resumes(stack, cache, server), "attached again, the store did not serve the context"
    assert cache.stats.hits == hits + 1
    cache.close()


def test_detach_undoes_what_attach_set(stack):
    server = stack.server_context(TLS12, internal_cache=True)
    cache = SessionCache(lifetime=60)
    cache.attach(server, internal_cache=False)
    attached = _state(server)
    assert attached["mode"] == sesscache.SESS_CACHE_SERVER | sesscache.SESS_CACHE_NO_INTERNAL
    assert attached["timeout"] == 60
    assert attached["hooks"] == (1, 1, 1) and attached["registered"]
    assert attached["pin"] == lib.SC_PIN_BOUND
    cache.detach(server)
    detached = _state(server)
    assert detached["mode"] == sesscache.SESS_CACHE_SERVER
    assert detached["hooks"] == (0, 0, 0) and not detached["registered"]
    assert detached["pin"] == lib.SC_PIN_CONTEXT, "the session id context is still bound"
    with pytest.raises(ConfigurationError, match="not attached"):
        cache.detach(server)


def test_one_cache_on_many_contexts(stack):
    """gunicorn's sync workers attach one context per connection: every context shares
    the cache's one settings struct, a session made on one resumes on another, and each
    detaches on its own."""
    cache = SessionCache()
    servers = [stack.server_context(TLS12) for _ in range(60)]
    for server in servers:
        cache.attach(server, internal_cache=False)
    assert len(cache._settings) == 1, "one settings struct per session id context and mode"
    assert _resumes(stack, cache, servers[0], servers[-1]), "a session did not cross contexts"
    for server in servers[1:-1]:
        cache.detach(server)
        assert cache.session_id_context(server) is None
    assert cache.session_id_context(servers[0]) == DEFAULT_SESSION_ID_CONTEXT
    assert _resumes(stack, cache, servers[-1], servers[0])
    cache.close()


def test_a_refused_attach_changes_nothing(stack):
    """Another library's get-session callback: refused, before the session id context,
    the mode, the timeout or any of sesscache's callbacks were set. Without it, the same
    context attaches and resumes."""
    server = stack.server_context(TLS12)
    bound = bind_context(server)
    api = bound.instance.api
    foreign = ffi.callback("SSL_SESSION *(SSL *, const unsigned char *, int, int *)",
                           lambda ssl, sid, length, copy: ffi.NULL)
    api.SSL_CTX_sess_set_get_cb(bound.pointer, foreign)
    before = _state(server)
    assert before["hooks"] == (0, 2, 0)
    cache = SessionCache(lifetime=60)
    with pytest.raises(ConfigurationError, match="get-session callback that sesscache did not install"):
        cache.attach(server, internal_cache=False)
    assert _state(server) == before
    assert cache.session_id_context(server) is None
    api.SSL_CTX_sess_set_get_cb(bound.pointer, ffi.NULL)
    cache.attach(server, internal_cache=False)
    assert _state(server)["timeout"] == 60
    assert _resumes(stack, cache, server)
    cache.close()


def test_a_used_pyopenssl_context_is_refused_before_detach_changes_anything(certs):
    """pyOpenSSL 26.2+ forbids changing a context that made connections: detach says so
    and the cache goes on serving it (it used to lose its C fast path and its entry
    first)."""
    from tests.tls import PyOpenSSLStack

    stack = PyOpenSSLStack(certs)
    server = stack.server_context(TLS12)
    cache = SessionCache()
    cache.attach(server, internal_cache=False)
    client = stack.client_context()
    first = stack.handshake(server, client)
    stack.close(first)
    if not hasattr(server, "_used"):  # an older pyOpenSSL: the detach is allowed, and done
        cache.detach(server)
        assert cache.session_id_context(server) is None
        return
    with pytest.raises(ConfigurationError, match="already been used"):
        cache.detach(server)
    assert cache.session_id_context(server) == DEFAULT_SESSION_ID_CONTEXT
    again = stack.handshake(server, client, first.client_session)
    stack.close(again)
    assert again.server_reused and cache.stats.hits == 1
    cache.close()


def test_a_cache_attached_over_another_takes_the_context_from_its_fast_path(stack):
    """Attaching cache A to a context cache B serves (without detaching B) hands every
    event to A, also when A has no C fast path (sealed sessions) and B has one: B's fast
    path used to stay in front of the context and store A's sessions in B's store."""
    server = stack.server_context(TLS12)
    b = SessionCache()
    b.attach(server, internal_cache=False)
    a = SessionCache(seal_keys=[b"k" * 32])
    a.attach(server, internal_cache=False)
    assert _resumes(stack, a, server)
    assert (a.stats.stores, a.stats.hits) == (1, 1)
    assert (b.stats.stores, b.stats.hits) == (0, 0)
    a.close()
    b.close()
