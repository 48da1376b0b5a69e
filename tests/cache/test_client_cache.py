"""ClientSessionCache: a pyOpenSSL client that restarts still resumes."""
from __future__ import annotations

import pytest

import sesscache
from sesscache import ClientSessionCache, SessionCache, SQLiteStore
from sesscache.sealing import generate_key
from tests.servers import EchoServer, _retry
from tests.tls import TLS12, StdlibStack


def _connect(certs, cache, port):
    """A fresh client context and connection each time: a restarted client."""
    import socket

    from OpenSSL import SSL

    ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
    ctx.load_verify_locations(certs.ca_pem)
    ctx.set_verify(SSL.VERIFY_PEER)
    cache.attach(ctx)
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.setblocking(False)
    conn = SSL.Connection(ctx, sock)
    conn.set_connect_state()
    offered = cache.prepare(conn, "localhost", port)
    _retry(sock, conn.do_handshake)
    _retry(sock, lambda: conn.sendall(b"ping\n"))
    echoed = _retry(sock, lambda: conn.recv(100))  # TLS 1.3 tickets arrive by now
    reused = sesscache.session_reused(conn)
    try:
        conn.shutdown()
    except SSL.Error:
        pass
    sock.close()
    return offered, reused, echoed


@pytest.mark.parametrize("sealed", [False, True], ids=["plain", "sealed"])
def test_a_restarted_client_resumes_from_the_store(certs, version, tmp_path, sealed):
    server_cache = SessionCache()
    server = StdlibStack(certs).server_context(version)
    server_cache.attach(server)
    keys = [generate_key()] if sealed else None
    path = str(tmp_path / "client.db")
    with EchoServer(server, max_connections=3) as echo:
        first = _connect(certs, ClientSessionCache(SQLiteStore(path), seal_keys=keys), echo.port)
        second = _connect(certs, ClientSessionCache(SQLiteStore(path), seal_keys=keys), echo.port)
        third = _connect(certs, ClientSessionCache(SQLiteStore(path), seal_keys=keys), echo.port)
    assert first[:2] == (False, False)
    assert second[:2] == (True, True), "the restarted client did not resume"
    assert third[:2] == (True, True)
    assert echo.reused == [False, True, True]


def test_sessions_are_kept_per_server(certs, tmp_path):
    server = StdlibStack(certs).server_context(TLS12)
    SessionCache().attach(server)
    store = SQLiteStore(str(tmp_path / "client.db"))
    with EchoServer(server, max_connections=2) as echo:
        _connect(certs, ClientSessionCache(store), echo.port)
        cache = ClientSessionCache(store)
        # Another port is another server: nothing to offer.
        assert cache.store.get(cache.key_for("localhost", echo.port + 1)) is None
        assert cache.store.get(cache.key_for("localhost", echo.port)) is not None


def test_only_tls_client_contexts(certs):
    """ssl.SSLContext is supported since issue 25 (tests/clients/); anything else that is
    no TLS context is refused, naming what is supported."""
    with pytest.raises(sesscache.ConfigurationError, match="ssl.SSLContext and pyOpenSSL"):
        ClientSessionCache().attach(object())


def test_close_stops_recording_and_closes_the_store(certs, version):
    """ClientSessionCache.close() means what SessionCache.close() does: no more sessions
    recorded, the store closed for good; a context manager too."""
    from OpenSSL import SSL

    server_cache = SessionCache()
    server = StdlibStack(certs).server_context(version)
    server_cache.attach(server)
    with EchoServer(server, max_connections=1) as echo:
        with ClientSessionCache() as cache:
            assert _connect(certs, cache, echo.port)[0] is False
            assert cache.stored >= 1
            context = SSL.Context(SSL.TLS_CLIENT_METHOD)
            cache.attach(context)
        assert sesscache.get_new_session_callback(context) is None
        with pytest.raises(sesscache.errors.StoreError, match="closed"):
            cache.store.get(b"anything")


def test_a_forked_child_counts_its_own_connections(certs):
    """Counters start at zero in a forked worker, as SessionCache's do."""
    import os

    server_cache = SessionCache()
    server = StdlibStack(certs).server_context(TLS12)
    server_cache.attach(server)
    cache = ClientSessionCache()
    with EchoServer(server, max_connections=2) as echo:
        _connect(certs, cache, echo.port)
        assert cache.stored == 1
        pid = os.fork()
        if pid == 0:  # the child: its counters start at zero, and it still resumes
            code = 1
            try:
                fresh = (cache.stored, cache.offered, cache.errors) == (0, 0, 0)
                offered, reused, _ = _connect(certs, cache, echo.port)
                code = 0 if fresh and offered and reused and cache.offered == 1 else 2
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert cache.stored == 1 and cache.offered == 0
