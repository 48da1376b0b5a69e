"""One end of a handshake, driven by hand: capture what a client sends first, feed a server
chosen bytes and see what it answers. Works on every stack of tests/tls.py."""
from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any, Optional

import sesscache
from sesscache import testing


@dataclass
class ServerAnswer:
    reused: bool  # the server decided to resume (a ServerHello echoing the session)
    output: bytes  # what it sent back (a ServerHello flight, or an alert)
    error: Optional[str]  # the TLS error it stopped with, if any

    @property
    def alert(self) -> bool:
        return self.error is not None or self.output[:1] == b"\x15"


def client_hello(stack, client_ctx, session=None, server_name: Optional[str] = "localhost") -> bytes:
    """The first flight a real client of ``stack`` sends (its ClientHello)."""
    name = stack.name
    if name == "linked":
        conn = client_ctx.connection()
        if server_name:
            conn.set_server_name(server_name)
        if session is not None:
            conn.set_session(session)
        assert conn.step() is False
        data = conn.pending_output()
        conn.free()
        return data
    if name == "pyopenssl":
        SSL = stack.SSL
        conn = SSL.Connection(client_ctx)
        conn.set_connect_state()
        if server_name:
            conn.set_tlsext_host_name(server_name.encode())
        if session is not None:
            conn.set_session(session)
        try:
            conn.do_handshake()
        except SSL.WantReadError:
            pass
        return conn.bio_read(1 << 16)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    client_ctx.check_hostname = bool(server_name)
    conn = client_ctx.wrap_bio(incoming, outgoing, server_hostname=server_name or None, session=session)
    try:
        conn.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


def feed_server(stack, server_ctx, data: bytes) -> ServerAnswer:
    """A fresh server connection of ``stack`` reads ``data`` and answers; freed afterwards
    without close_notify (there is no handshake to close)."""
    name = stack.name
    error = None
    if name == "linked":
        conn = server_ctx.connection()
        conn.feed(data)
        try:
            conn.step()
        except testing.TLSError as exc:
            error = str(exc)
        answer = ServerAnswer(conn.session_reused, conn.pending_output(), error)
        conn.free()
        return answer
    if name == "pyopenssl":
        SSL = stack.SSL
        conn = SSL.Connection(server_ctx)
        conn.set_accept_state()
        conn.bio_write(data)
        try:
            conn.do_handshake()
        except SSL.WantReadError:
            pass
        except SSL.Error as exc:
            error = repr(exc)
        try:
            output = conn.bio_read(1 << 16)
        except SSL.WantReadError:
            output = b""
        return ServerAnswer(sesscache.session_reused(conn), output, error)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    conn = server_ctx.wrap_bio(incoming, outgoing, server_side=True)
    incoming.write(data)
    try:
        conn.do_handshake()
    except ssl.SSLWantReadError:
        pass
    except ssl.SSLError as exc:
        error = str(exc)
    return ServerAnswer(conn.session_reused, outgoing.read(), error)
