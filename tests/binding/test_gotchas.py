"""Every known OpenSSL session-cache gotcha, with real handshakes."""
from __future__ import annotations

import gc
import weakref

import pytest

import sesscache
from sesscache import Session
from tests.binding.test_callbacks import DictCache, _live
from tests.tls import TLS12, TLS13, StdlibStack, PyOpenSSLStack


class Recorder:
    """Callbacks as methods of an object, to watch what happens once it is gone."""

    def __init__(self) -> None:
        self.removed = []
        self.removed_contexts = []
        self.der_ok = []

    def remove(self, context, session: Session) -> None:
        self.removed.append(session.id)
        self.removed_contexts.append(context)
        self.der_ok.append(bool(session.to_bytes()))


def test_remove_callback_runs_inside_ssl_ctx_free(certs, version):
    """SSL_CTX_free flushes the internal cache through the remove callback, in the middle
    of freeing the context. An explicit free (the Python object still alive) runs the
    callback once per cached session, then OpenSSL's free hook empties the registry."""
    from tests.tls import LinkedStack

    stack = LinkedStack(certs)
    server = stack.server_context(version, internal_cache=True)
    recorder = Recorder()
    sesscache.set_remove_session_callback(server, recorder.remove)
    client = stack.client_context()
    for _ in range(5):
        stack.close(stack.handshake(server, client))
    cached = sesscache.internal_cache_size(server)
    assert cached >= 5 and not recorder.removed
    key = (sesscache.libssl_info(server).slot, server._sesscache_bound.ctx)
    assert key in sesscache.callbacks._registry
    server.free()  # SSL_CTX_free now
    assert len(recorder.removed) == cached
    assert all(recorder.der_ok), "sessions were still whole inside the callback"
    assert key not in sesscache.callbacks._registry


def test_context_collected_with_callbacks_that_close_over_it(stack, version):
    """The natural callback closes over its context (it needs it for Session.from_bytes).
    That must not keep the context alive forever, and collecting it (which frees the
    SSL_CTX and flushes its internal cache through the remove hook) must be safe."""
    server = stack.server_context(version, internal_cache=True)
    store = {}
    removed = []
    sesscache.set_new_session_callback(server, lambda conn, s: store.__setitem__(s.id, s.to_bytes()))
    sesscache.set_get_session_callback(
        server, lambda conn, sid: Session.from_bytes(store[sid], server) if sid in store else None)
    sesscache.set_remove_session_callback(server, lambda ctx, s: removed.append(s.id))
    client = stack.client_context()
    first = stack.handshake(server, client)
    stack.close(first)
    assert sesscache.internal_cache_size(server) >= 1
    registry_before = len(sesscache.callbacks._registry)
    alive = weakref.ref(server)
    del server, first, client
    gc.collect()
    assert alive() is None, "the callbacks' closures kept the context alive"
    assert len(sesscache.callbacks._registry) == registry_before - 1
    # The garbage collector frees the context and its hooks in no set order, so the flush
    # may or may not reach the remove callback; what does reach it is whole and real.
    assert set(removed) <= set(store)


def test_tls13_stateless_tickets_are_reported_but_never_looked_up(stack):
    """With tickets on, TLS 1.3 resumption is stateless: new fires per ticket, get never."""
    server = stack.server_context(TLS13, tickets=True)
    cache = DictCache().attach(server)
    client = stack.client_context()
    first = stack.handshake(server, client)
    assert len(cache.news) == 2, "OpenSSL sends two tickets after a full handshake"
    again = stack.handshake(server, client, first.client_session)
    assert again.server_reused, "stateless resumption needs no cache"
    assert len(cache.news) == 3, "one more ticket after a resumption"
    assert not any(sid in cache.store for sid in cache.gets), \
        "no stored ticket session was ever asked for: storing them is waste"
    stack.close(first)
    stack.close(again)


@pytest.mark.parametrize("clean", [True, False], ids=["close_notify", "no_close_notify"])
def test_connection_freed_without_close_notify_kills_its_session(stack, clean):
    """OpenSSL marks a session bad (and removes it, firing remove) when a server
    connection is freed before it sent close_notify."""
    server = stack.server_context(TLS12, internal_cache=True)
    recorder = Recorder()
    sesscache.set_remove_session_callback(server, recorder.remove)
    client = stack.client_context()
    hs = stack.handshake(server, client)
    session = hs.client_session
    stack.close(hs, clean=clean)
    del hs
    gc.collect()
    if clean:
        assert not recorder.removed
        again = stack.handshake(server, client, session)
        assert again.server_reused
        stack.close(again)
    else:
        assert len(recorder.removed) == 1, "the unclean close removed the session"
        assert sesscache.internal_cache_size(server) == 0


def test_sessions_returned_as_session_objects_do_not_leak(stack):
    """The get callback's answer is handed to OpenSSL with copy = 0: a Session returned
    many times costs one reference each time, given back by OpenSSL."""
    server = stack.server_context(TLS12)
    held = {}
    sesscache.set_new_session_callback(server, lambda conn, s: held.__setitem__(s.id, s))
    sesscache.set_get_session_callback(server, lambda conn, sid: held.get(sid))
    client = stack.client_context()
    gc.collect()
    before = _live(server)
    first = stack.handshake(server, client)
    for _ in range(200):
        hs = stack.handshake(server, client, first.client_session)
        assert hs.server_reused
        stack.close(hs)
    stack.close(first)
    del first, hs, client
    held.clear()
    gc.collect()
    assert _live(server) == before


def test_session_id_context_mismatch_is_a_miss(stack, version):
    """Two servers share a dict but not a session id context: OpenSSL refuses the
    other's sessions even though the get callback returns them."""
    shared = DictCache()
    server_a = stack.server_context(version, sid_ctx=b"service-a")
    server_b = stack.server_context(version, sid_ctx=b"service-b")
    shared.attach(server_a)
    shared.attach(server_b)
    client = stack.client_context()
    hs = stack.handshake(server_a, client)
    if stack.name == "pyopenssl":
        # pyOpenSSL pins a session to its Context: use the same client context on b.
        pass
    other = stack.handshake(server_b, client, hs.client_session)
    assert any(sid in shared.store for sid in shared.gets), "b was asked for a's session"
    assert not other.server_reused, "a session from another session id context resumed"
    same = stack.handshake(server_a, client, hs.client_session)
    assert same.server_reused
    for h in (hs, other, same):
        stack.close(h)


@pytest.mark.parametrize("stack_name", ["pyopenssl", "stdlib"])
def test_sni_switch_runs_the_hooks_of_the_session_context(certs, stack_name, version):
    """An SNI callback moves the connection to another SSL_CTX; OpenSSL still caches in
    the original (session) context, so its hooks, not the new context's, must run."""
    stack = {"pyopenssl": PyOpenSSLStack, "stdlib": StdlibStack}[stack_name](certs)
    front = stack.server_context(version)
    vhost = stack.server_context(version, certfile=certs.other_server_pem)
    front_cache, vhost_cache = DictCache().attach(front), DictCache().attach(vhost)
    if stack_name == "pyopenssl":
        front.set_tlsext_servername_callback(lambda conn: conn.set_context(vhost))
    else:
        def switch(sslobj, name, _ctx):
            sslobj.context = vhost
        front.sni_callback = switch
    client = stack.client_context()
    hs = stack.handshake(front, client, server_name="example.com")
    assert front_cache.news and not vhost_cache.news
    again = stack.handshake(front, client, hs.client_session, server_name="example.com")
    assert again.server_reused
    assert not vhost_cache.gets
    stack.close(hs)
    stack.close(again)


def test_client_context_new_session_callback(stack, version):
    """Client side: new-session fires where client caching is on, TLS 1.3 tickets too,
    and what it hands over resumes a later connection."""
    server = stack.server_context(version, tickets=(version == TLS13), internal_cache=True)
    client = stack.client_context(client_cache=True)
    got = []
    sesscache.set_new_session_callback(client, lambda conn, s: got.append(s))
    hs = stack.handshake(server, client, server_name="localhost")
    assert got, "no client-side new-session callback"
    assert all(s.protocol == version for s in got)
    if stack.name != "stdlib":  # the stdlib cannot take a session from outside
        latest = got[-1]
        session = latest.to_pyopenssl(client) if stack.name == "pyopenssl" else latest
        again = stack.handshake(server, client, session, server_name="localhost")
        assert again.server_reused
        stack.close(again)
    stack.close(hs)
    got.clear()


def test_session_from_another_copy_of_openssl_is_refused(certs, caplog):
    """A pyOpenSSL (bundled OpenSSL) session returned for a stdlib context: refused,
    never handed to the other library's functions."""
    py = PyOpenSSLStack(certs)
    std = StdlibStack(certs)
    py_server = py.server_context(TLS12)
    py_cache = DictCache().attach(py_server)
    py_hs = py.handshake(py_server, py.client_context())
    foreign = Session.from_bytes(next(iter(py_cache.store.values())), py_server)
    if foreign.libssl is sesscache.libssl_info(std.server_context(TLS12)):
        pytest.skip("pyOpenSSL runs on the same libssl as the stdlib here: nothing foreign")
    server = std.server_context(TLS12)
    cache = DictCache().attach(server)
    client = std.client_context()
    hs = std.handshake(server, client)
    sesscache.set_get_session_callback(server, lambda conn, sid: foreign)
    again = std.handshake(server, client, hs.client_session)
    assert not again.server_reused
    assert any("cannot cross copies of OpenSSL" in r.getMessage() for r in caplog.records)
    foreign.close()
    for h in (hs, again):
        std.close(h)
    py.close(py_hs)


def test_sessions_outlive_their_freed_context(stack, version):
    """A Session holds its own reference: the context (and its internal cache) can be
    freed while Python still holds sessions made on it."""
    server = stack.server_context(version, internal_cache=True)
    kept = []
    sesscache.set_new_session_callback(server, lambda conn, s: kept.append(s))
    client = stack.client_context()
    hs = stack.handshake(server, client)
    stack.close(hs)
    del hs, server, client
    gc.collect()
    assert kept
    for session in kept:
        assert session.to_bytes() and session.protocol == version
        session.close()


def test_context_freed_while_python_unwinds(tmp_path):
    """A context whose last reference goes as a coroutine returns is freed while Python
    has an exception pending (StopIteration). The free hook must still reach Python and
    leave no error behind (Python 3.9 lost the call with a SystemError)."""
    import subprocess
    import sys

    script = tmp_path / "unwind.py"
    script.write_text(
        "import asyncio, gc, ssl, sesscache\n"
        "async def main():\n"
        "    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)\n"
        "    sesscache.SessionCache().attach(ctx)\n"
        "    assert sesscache.callbacks._registry\n"
        "    return 1\n"
        "asyncio.run(main())\n"
        "gc.collect()\n"
        "print('registry', len(sesscache.callbacks._registry))\n")
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "registry 0" in result.stdout
    assert "Exception ignored" not in result.stderr and "SystemError" not in result.stderr, result.stderr
