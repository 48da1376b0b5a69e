"""The client offer mechanism (csrc/client_offer.c) on every OpenSSL of the version matrix.

ClientSessionCache offers sessions to stdlib contexts, whose libssl is the system's; the
matrix's "bundled" rows run only tests named for pyOpenSSL, on cryptography wheels'
OpenSSL 1.1.1 to 4.0. So this test drives the same C on a pyOpenSSL client context: the
info callback at SSL_CB_HANDSHAKE_START, SSL_set_session there, SSL_set_session(NULL) to
withdraw, the peer port of the socket. Only the Python policy above it is replaced by a
small stand-in (the stdlib's is tested in test_stdlib_attach.py), so what is checked is
that libssl itself takes the session at that moment, and the server resumes it.
"""
from __future__ import annotations

import socket

import pytest

import sesscache
from sesscache import SessionCache
from sesscache._binding import lib
from sesscache._binding.find_context import bind_context
from sesscache.client_cache import _CLIENT_ATTRIBUTE
from sesscache.contexts import SESS_CACHE_CLIENT, SESS_CACHE_NO_INTERNAL_STORE, set_session_cache_mode
from tests.servers import EchoServer, _retry
from tests.tls import StdlibStack


class _StandIn:
    """What sc_py_client_offer finds on the context: offers the last session kept."""

    def __init__(self, slot: int, withdraw: bool = False) -> None:
        self.slot, self.withdraw = slot, withdraw
        self.kept = []
        self.offers = []  # (peer port, version offered)

    def cache_ref(self):
        return self

    def _offer_stdlib(self, attached, context, ssl_ptr) -> None:
        port = lib.sc_client_peer_port(self.slot, ssl_ptr)
        version = lib.sc_client_offer(self.slot, ssl_ptr, self.kept[-1], len(self.kept[-1])) if self.kept else 0
        if version and self.withdraw:
            assert lib.sc_client_unoffer(self.slot, ssl_ptr) == 1
        self.offers.append((port, version))


def _client(certs, stand_in=None, withdraw=False):
    from OpenSSL import SSL

    ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
    ctx.load_verify_locations(certs.ca_pem)
    ctx.set_verify(SSL.VERIFY_PEER)
    set_session_cache_mode(ctx, SESS_CACHE_CLIENT | SESS_CACHE_NO_INTERNAL_STORE)
    bound = bind_context(ctx)
    stand_in = stand_in or _StandIn(bound.instance.slot, withdraw)
    sesscache.set_new_session_callback(ctx, lambda conn, session: stand_in.kept.append(session.to_bytes()))
    assert lib.sc_client_install(bound.instance.slot, bound.pointer, 1) == 1
    ctx.__dict__[_CLIENT_ATTRIBUTE] = stand_in
    return ctx, stand_in


def _connect(ctx, port) -> bool:
    from OpenSSL import SSL

    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.setblocking(False)
    conn = SSL.Connection(ctx, sock)
    conn.set_connect_state()
    conn.set_tlsext_host_name(b"localhost")
    _retry(sock, conn.do_handshake)
    _retry(sock, lambda: conn.sendall(b"ping\n"))
    _retry(sock, lambda: conn.recv(100))  # TLS 1.3 tickets arrive by now
    reused = sesscache.session_reused(conn)
    try:
        conn.shutdown()
    except SSL.Error:
        pass
    sock.close()
    return reused


@pytest.mark.parametrize("withdraw", [False, True], ids=["offered", "withdrawn"])
def test_pyopenssl_client_offers_at_handshake_start(certs, version, withdraw):
    server = StdlibStack(certs).server_context(version)
    SessionCache().attach(server)
    with EchoServer(server, max_connections=3) as echo:
        ctx, stand_in = _client(certs, withdraw=withdraw)
        client_side = [_connect(ctx, echo.port) for _ in range(3)]
    assert not echo.errors, echo.errors
    assert [port for port, _ in stand_in.offers] == [echo.port] * 3  # from the socket
    assert stand_in.offers[0][1] == 0 and all(v for _, v in stand_in.offers[1:])
    expected = [False, False, False] if withdraw else [False, True, True]
    assert client_side == expected and echo.reused == expected
