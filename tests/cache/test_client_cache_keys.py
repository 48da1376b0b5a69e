"""ClientSessionCache keys and stored values (issue 23 items 4 and 8).

A key exists for every (host, port, name): the old key IDNA-encoded "host|port|name" as
one string, fusing the host's last label, the port and the name's first label, so a
first label of 56+ characters raised UnicodeError before any I/O. Whatever a store
returns under a client key (a SQLite TEXT or INTEGER value, another version's envelope)
is a counted miss and a full handshake, never an exception.

Real handshakes: a pyOpenSSL client (the only one that takes a session from outside)
against stdlib and pyOpenSSL servers; real SQLite files.
"""
from __future__ import annotations

import socket
import sqlite3
import struct
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import sesscache
from sesscache import ClientSessionCache, SessionCache, SQLiteStore
from tests.servers import EchoServer, _retry
from tests.tls import TLS12, TLS13, PyOpenSSLStack, StdlibStack

LONG_LABEL_HOST = "a" * 60 + ".example.com"


def _connect(cache, port, host, server_name=None):
    """A fresh client context and connection (a restarted client), verification off: the
    server's certificate is for localhost, the names here are not."""
    from OpenSSL import SSL

    ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
    cache.attach(ctx)
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.setblocking(False)
    conn = SSL.Connection(ctx, sock)
    conn.set_connect_state()
    offered = cache.prepare(conn, host, port, server_name)
    _retry(sock, conn.do_handshake)
    _retry(sock, lambda: conn.sendall(b"ping\n"))
    _retry(sock, lambda: conn.recv(100))  # TLS 1.3 tickets arrive by now
    reused = sesscache.session_reused(conn)
    try:
        conn.shutdown()
    except SSL.Error:
        pass
    sock.close()
    return offered, reused


def _server(stack_name, certs, version):
    stack = (StdlibStack if stack_name == "stdlib" else PyOpenSSLStack)(certs)
    ctx = stack.server_context(version)
    SessionCache().attach(ctx)
    return ctx


@pytest.mark.parametrize("server_stack", ["stdlib", "pyopenssl"])
@pytest.mark.parametrize("host, server_name", [
    (LONG_LABEL_HOST, None),
    (LONG_LABEL_HOST, "b" * 63 + ".example.net"),
    ("localhost", "c" * 63),
    ("bücher.example", None),
    ("127.0.0.1", ""),
], ids=["long-first-label", "long-labels-both", "63-char-name", "idn", "no-sni"])
def test_a_restarted_client_resumes_for_any_valid_name(server_stack, host, server_name, certs, tmp_path, version):
    server = _server(server_stack, certs, version)
    path = str(tmp_path / "client.db")
    with EchoServer(server, max_connections=2) as echo:
        first = _connect(ClientSessionCache(SQLiteStore(path)), echo.port, host, server_name)
        second = _connect(ClientSessionCache(SQLiteStore(path)), echo.port, host, server_name)
    assert echo.errors == []
    assert first == (False, False)
    assert second == (True, True), "the restarted client resumed"


@settings(max_examples=300, deadline=None)
@given(a=st.tuples(st.text(), st.integers(0, 65535), st.none() | st.text()),
       b=st.tuples(st.text(), st.integers(0, 65535), st.none() | st.text()))
def test_keys_exist_for_any_text_and_differ_when_the_servers_differ(a, b):
    key_a, key_b = ClientSessionCache.key_for(*a), ClientSessionCache.key_for(*b)
    assert isinstance(key_a, bytes) and key_a.startswith(b"scc2:")

    def server(t):
        host, port, name = t
        return host.lower(), port, (host if name is None else name).lower()

    assert (key_a == key_b) == (server(a) == server(b))


@pytest.mark.parametrize("value", [
    "a TEXT value", 12345, 2.5, b"", b"\x01", struct.pack(">Bq", 1, 4_000_000_000),
    struct.pack(">Bq", 1, 4_000_000_000) + b"not DER",
    struct.pack(">Bq", 1, 4_000_000_000) + b"\x30\x82\xff\xff" + b"\x00" * 10,
], ids=["text", "integer", "real", "empty", "one-byte", "no-session", "not-der", "short-der"])
def test_whatever_a_sqlite_row_holds_is_a_counted_miss(value, certs, tmp_path):
    server = _server("stdlib", certs, TLS13)
    path = str(tmp_path / "client.db")
    cache = ClientSessionCache(SQLiteStore(path))
    with EchoServer(server, max_connections=2) as echo:
        key = cache.key_for("localhost", echo.port)
        SQLiteStore(path).set(b"probe", b"x", 60)  # the table
        conn = sqlite3.connect(path)
        with conn:
            conn.execute("INSERT OR REPLACE INTO sesscache (key, value, expires) VALUES (?, ?, ?)",
                         (key, value, time.time() + 3600))
        conn.close()
        assert _connect(cache, echo.port, "localhost") == (False, False)
        assert cache.errors == 1 and cache.offered == 0
        # The new session replaced the bad value: the next connection resumes.
        assert _connect(cache, echo.port, "localhost") == (True, True)


def test_a_session_stored_under_the_old_key_format_is_a_miss_then_stored_anew(certs, tmp_path):
    """What an upgrade does to stored client sessions: one full handshake per server."""
    server = _server("stdlib", certs, TLS12)
    path = str(tmp_path / "client.db")
    with EchoServer(server, max_connections=3) as echo:
        cache = ClientSessionCache(SQLiteStore(path))
        _connect(cache, echo.port, "localhost")
        store = SQLiteStore(path)
        new_key = cache.key_for("localhost", echo.port)
        old_key = b"scc1:" + f"localhost|{echo.port}|localhost".encode("idna")
        store.set(old_key, store.get(new_key), 3600)
        store.delete(new_key)
        assert _connect(ClientSessionCache(SQLiteStore(path)), echo.port, "localhost") == (False, False)
        assert _connect(ClientSessionCache(SQLiteStore(path)), echo.port, "localhost") == (True, True)


@pytest.mark.parametrize("sealed", [False, True], ids=["plain", "sealed"])
def test_a_session_of_the_next_format_version_is_a_quiet_counted_miss(certs, tmp_path, caplog, sealed):
    """Item 8, the client side: a rolling deploy where a newer sesscache wrote version 2
    envelopes (format: docs, the version byte first) under the same key."""
    import logging

    from sesscache.sealing import Sealer, generate_key

    seal_keys = [generate_key()] if sealed else None
    server = _server("stdlib", certs, TLS13)
    path = str(tmp_path / "client.db")
    cache = ClientSessionCache(SQLiteStore(path), seal_keys=seal_keys)
    with EchoServer(server, max_connections=3) as echo:
        _connect(cache, echo.port, "localhost")
        key = cache.key_for("localhost", echo.port)
        blob = cache.store.get(key)
        if sealed:
            blob = Sealer(seal_keys).open(key, blob)
        newer = bytes([2]) + blob[1:] + b"\x00fields a version 2 adds"
        if sealed:
            newer = Sealer(seal_keys).seal(key, newer)
        cache.store.set(key, newer, 3600)
        with caplog.at_level(logging.DEBUG, logger="sesscache"):
            assert _connect(cache, echo.port, "localhost") == (False, False)
        assert (cache.other_format, cache.errors, cache.offered) == (1, 0, 0)
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING], "quiet"
        # This version's own session replaces it (the newer one reads version 1 or misses).
        assert _connect(cache, echo.port, "localhost") == (True, True)


def test_the_reverse_this_versions_session_under_the_next_versions_reader(certs, tmp_path, monkeypatch):
    """Where one process can play both: the reader's format constant patched to 2 (a next
    version built the same way) finds this version's session a quiet miss too, and this
    version still resumes from it."""
    import sesscache.client_cache as client_cache

    server = _server("stdlib", certs, TLS13)
    path = str(tmp_path / "client.db")
    with EchoServer(server, max_connections=3) as echo:
        _connect(ClientSessionCache(SQLiteStore(path)), echo.port, "localhost")
        monkeypatch.setattr(client_cache, "_FORMAT_VERSION", 2)
        later = ClientSessionCache(SQLiteStore(path))
        assert _connect(later, echo.port, "localhost")[0] is False, "nothing offered"
        assert (later.other_format, later.errors) == (1, 0)
        monkeypatch.setattr(client_cache, "_FORMAT_VERSION", 1)
        # The next version stored its own session (format 2) meanwhile: a miss here, then ours.
        now = ClientSessionCache(SQLiteStore(path))
        assert _connect(now, echo.port, "localhost")[0] is False and now.other_format == 1
        assert now.errors == 0
