"""Teardown in every order: caches, contexts and stores collected or closed in any order,
SSL_CTX_free flushing sessions when their Python owners are gone, and the interpreter
shutting down while threads handshake. Never a crash, never a leaked session."""
from __future__ import annotations

import gc
import os
import subprocess
import sys
import weakref
from pathlib import Path

import pytest

import sesscache
from sesscache import MemoryStore, SessionCache, SQLiteStore
from tests.reliability.helpers import live
from tests.tls import TLS12, TLS13, LinkedStack

CHILD = Path(__file__).with_name("shutdown_child.py")


def _serve(stack, version, store, internal_cache=True):
    """A server with sessions in its internal cache (so freeing it flushes them through
    the remove hook) and in the store, and a client holding one."""
    cache = SessionCache(store)
    server = stack.server_context(version, internal_cache=internal_cache)
    cache.attach(server, internal_cache=internal_cache)
    client = stack.client_context()
    first = stack.handshake(server, client)
    again = stack.handshake(server, client, first.client_session)
    assert again.server_reused
    stack.close(first)
    stack.close(again)
    return cache, server, client, again.client_session


ORDERS = ["cache-first", "context-first", "store-closed-first", "client-session-last", "cycle"]


@pytest.mark.parametrize("order, store_kind", [(order, "memory") for order in ORDERS] + [
    ("store-closed-first", "sqlite"), ("context-first", "sqlite")])
def test_collected_in_any_order(stack, order, store_kind, tmp_path):
    version = TLS13  # stateful tickets: more sessions per handshake than TLS 1.2
    baseline = live(stack.client_context())
    store = MemoryStore() if store_kind == "memory" else SQLiteStore(tmp_path / "s.db")
    # with the store closed, only lookups that reach the store show the fault
    cache, server, client, session = _serve(stack, version, store, internal_cache=order != "store-closed-first")
    cache_ref, server_ref = weakref.ref(cache), weakref.ref(server)
    if order == "cache-first":
        del cache
        gc.collect()
        # the context's hooks keep the cache alive while the context serves
        assert cache_ref() is not None
        hs = stack.handshake(server, client, session)
        assert hs.server_reused
        stack.close(hs)
        del hs, server
    elif order == "context-first":
        del server
        gc.collect()
        assert server_ref() is None, "the cache kept the context alive"
        # the cache outlives it and serves another context
        other = stack.server_context(version, internal_cache=True)
        cache.attach(other)
        hs = stack.handshake(other, client, session)
        assert hs.server_reused, "a new context did not resume from the cache's store"
        stack.close(hs)
        del hs, other, cache
    elif order == "store-closed-first":
        cache.store.close()  # (cache.close() would detach the cache too)
        # a closed store is a store fault: full handshakes, counted, no crash (a closed
        # MemoryStore is closed for good too: the C fast path hands the lookup to Python,
        # which counts the fault)
        for _ in range(3):
            hs = stack.handshake(server, client, session)
            stack.close(hs)
        assert cache.stats.errors >= 1
        cache.close()  # detaches, and closing the store again does nothing
        del hs, server, cache
    elif order == "client-session-last":
        del server, cache
        gc.collect()
        assert session is not None  # the client's session outlives the server and its cache
    else:  # a reference cycle: context -> hooks -> callback -> context, collected by gc
        cache.cycle = server
        server.cycle_back = cache if hasattr(server, "__dict__") else None
        del server, cache
    gc.collect()
    assert server_ref() is None and cache_ref() is None, "something kept them alive"
    del session, client
    store.close()
    assert live(stack.client_context()) == baseline


def test_ssl_ctx_free_flushes_into_a_cache_that_is_still_there(certs, version):
    """An explicit SSL_CTX_free (the linked stack can do one) while the cache lives: each
    internally cached session goes through the cache's remove hook, counted."""
    stack = LinkedStack(certs)
    cache, server, client, session = _serve(stack, version, MemoryStore())
    cached = sesscache.internal_cache_size(server)
    assert cached >= 1
    before = cache.stats.removes
    server.free()
    assert cache.stats.removes - before == cached
    del server, session, client


def test_ssl_ctx_free_after_the_cache_and_the_context_object_are_gone(certs, version):
    """The last reference to the SSL_CTX is a connection's: the Python context and the
    cache die first, the connection is freed later, and only then does OpenSSL free the
    context and flush its cache through hooks whose owners are gone."""
    stack = LinkedStack(certs)
    cache, server, client, session = _serve(stack, version, MemoryStore())
    conn = server.connection()  # holds its own reference to the SSL_CTX
    conn.context = None  # ...and only that: not the Python context object
    server._ctx = None  # drop the Python object's reference without freeing (as if collected)
    server_ref, cache_ref = weakref.ref(server), weakref.ref(cache)
    del server, cache
    gc.collect()
    assert server_ref() is None and cache_ref() is None
    conn.free()  # SSL_free -> SSL_CTX_free -> flush -> remove hook: must be a no-op
    del conn, session, client
    gc.collect()


@pytest.mark.parametrize("mode, expected, store_kind", [
    ("return", 0, "memory"), ("return", 0, "sqlite"), ("sys.exit", 3, "sqlite"), ("os._exit", 4, "memory"),
    ("raise", 1, "sqlite"), ("signal", -15, "memory")])
def test_interpreter_exits_while_threads_handshake(certs, tmp_path, mode, expected, store_kind):
    folder = Path(certs.ca_pem).parent
    env = dict(os.environ, PYTHONFAULTHANDLER="1")
    result = subprocess.run([sys.executable, str(CHILD), str(folder), store_kind, mode],
                            capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == expected, output[-3000:]
    assert "traffic 6 of 6" in result.stdout, output[-3000:]
    assert "Fatal Python error" not in output, output[-3000:]
    assert "Segmentation fault" not in output
    if mode == "raise":
        assert "main gives up" in result.stderr
    # no traceback that sesscache caused (the "raise" mode's own one names only the child)
    tracebacks = [block for block in result.stderr.split("Traceback")[1:] if "sesscache" in block
                  and "main gives up" not in block]
    assert not tracebacks, output[-3000:]
    assert "callback raised" not in output, output[-3000:]
