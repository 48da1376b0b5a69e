"""Minimal TLS endpoints on sesscache's own linked libssl, for tests and the matrix.

Not a TLS library: just enough to run real handshakes over memory BIOs on an OpenSSL
that no Python TLS stack in the process uses (for example Debian's 1.1.1w in the
version matrix), so the callbacks, reference counts and DER round trips are exercised
on that very library. Contexts made here work with every sesscache API that takes a
context.
"""
from __future__ import annotations

import os
from typing import Optional, Tuple

from . import _instances
from ._binding import address, ffi, lib
from ._contexts import BoundContext
from .errors import SesscacheError
from .session import Session

TLS1_2 = lib.TLS1_2_VERSION
TLS1_3 = lib.TLS1_3_VERSION


class TLSError(SesscacheError):
    pass


def _error_text() -> str:
    code = lib.ERR_get_error()
    if not code:
        return "no OpenSSL error"
    buf = ffi.new("char[256]")
    lib.ERR_error_string_n(code, buf, 256)
    while lib.ERR_get_error():
        pass
    return ffi.string(buf).decode()


class TestContext:
    """An ``SSL_CTX`` of the linked libssl (server or client)."""

    __test__ = False  # not a pytest test class

    def __init__(self, server: bool, *, certfile: Optional[str] = None, cafile: Optional[str] = None,
                 version: Optional[int] = None, tickets: bool = True,
                 session_id_context: Optional[bytes] = b"sesscache-testing",
                 cache_mode: Optional[int] = None, num_tickets: Optional[int] = None,
                 timeout: Optional[int] = None) -> None:
        instance = _instances.linked_instance()
        api = instance.api
        method = lib.TLS_server_method() if server else lib.TLS_client_method()
        ctx = lib.SSL_CTX_new(method)
        if ctx == ffi.NULL:
            raise TLSError(_error_text())
        self._ctx = ffi.gc(ctx, lib.SSL_CTX_free)
        self.server = server
        if certfile:
            if lib.SSL_CTX_use_certificate_chain_file(ctx, os.fsencode(certfile)) != 1 or \
                    lib.SSL_CTX_use_PrivateKey_file(ctx, os.fsencode(certfile), lib.SSL_FILETYPE_PEM) != 1:
                raise TLSError(f"cannot load {certfile}: {_error_text()}")
        if cafile:
            if lib.SSL_CTX_load_verify_locations(ctx, os.fsencode(cafile), ffi.NULL) != 1:
                raise TLSError(f"cannot load {cafile}: {_error_text()}")
            lib.SSL_CTX_set_verify(ctx, lib.SSL_VERIFY_PEER, ffi.NULL)
        if version is not None:
            api.SSL_CTX_ctrl(ctx, lib.SSL_CTRL_SET_MIN_PROTO_VERSION, version, ffi.NULL)
            api.SSL_CTX_ctrl(ctx, lib.SSL_CTRL_SET_MAX_PROTO_VERSION, version, ffi.NULL)
        if not tickets:
            lib.SSL_CTX_set_options(ctx, lib.SSL_OP_NO_TICKET)
        if server and session_id_context is not None:
            api.SSL_CTX_set_session_id_context(ctx, session_id_context, len(session_id_context))
        if cache_mode is not None:
            api.SSL_CTX_ctrl(ctx, lib.SSL_CTRL_SET_SESS_CACHE_MODE, cache_mode, ffi.NULL)
        if num_tickets is not None:
            api.SSL_CTX_set_num_tickets(ctx, num_tickets)
        if timeout is not None:
            lib.SSL_CTX_set_timeout(ctx, timeout)
        self._sesscache_bound = BoundContext(instance, address(ctx), "sesscache", self)

    @property
    def pointer(self):
        return self._ctx

    def connection(self) -> "TestConnection":
        return TestConnection(self)

    def free(self) -> None:
        """Free the SSL_CTX now (connections still hold references of their own)."""
        pointer, self._ctx = self._ctx, None
        if pointer is not None:
            ffi.release(pointer)


class TestConnection:
    """An ``SSL`` over a pair of memory BIOs."""

    __test__ = False

    def __init__(self, context: TestContext) -> None:
        ssl = lib.SSL_new(context.pointer)
        if ssl == ffi.NULL:
            raise TLSError(_error_text())
        self._ssl = ffi.gc(ssl, lib.SSL_free)
        self.context = context
        self._incoming = lib.BIO_new(lib.BIO_s_mem())
        self._outgoing = lib.BIO_new(lib.BIO_s_mem())
        lib.SSL_set_bio(ssl, self._incoming, self._outgoing)  # the SSL owns both BIOs now
        if context.server:
            lib.SSL_set_accept_state(ssl)
        else:
            lib.SSL_set_connect_state(ssl)

    def set_server_name(self, name: str) -> None:
        lib.SSL_ctrl(self._ssl, lib.SSL_CTRL_SET_TLSEXT_HOSTNAME, lib.TLSEXT_NAMETYPE_host_name,
                     ffi.new("char[]", name.encode()))

    def set_session(self, session: Session) -> None:
        if session.libssl is not _instances.linked_instance():
            raise TLSError("that session belongs to another copy of OpenSSL")
        if lib.SSL_set_session(self._ssl, ffi.cast("SSL_SESSION *", session._ptr)) != 1:
            raise TLSError(_error_text())

    def get_session(self) -> Optional[Session]:
        pointer = lib.SSL_get1_session(self._ssl)
        if pointer == ffi.NULL:
            return None
        return Session._adopt(_instances.linked_instance(), pointer)

    @property
    def session_reused(self) -> bool:
        return bool(_instances.linked_instance().api.SSL_session_reused(self._ssl))

    @property
    def version(self) -> str:
        return ffi.string(lib.SSL_get_version(self._ssl)).decode()

    def pending_output(self) -> bytes:
        size = lib.BIO_ctrl_pending(self._outgoing)
        if not size:
            return b""
        buf = ffi.new("char[]", size)
        n = lib.BIO_read(self._outgoing, buf, size)
        return ffi.unpack(buf, max(n, 0))

    def feed(self, data: bytes) -> None:
        if data:
            lib.BIO_write(self._incoming, data, len(data))

    def step(self) -> bool:
        """Advance the handshake; True once it is complete."""
        result = lib.SSL_do_handshake(self._ssl)
        if result == 1:
            return True
        error = lib.SSL_get_error(self._ssl, result)
        if error in (lib.SSL_ERROR_WANT_READ, lib.SSL_ERROR_WANT_WRITE):
            return False
        raise TLSError(f"handshake failed: {_error_text()}")

    def read_pending(self) -> bytes:
        """Process whatever arrived (TLS 1.3 tickets included); return application data."""
        buf = ffi.new("char[]", 16384)
        out = b""
        while True:
            n = lib.SSL_read(self._ssl, buf, 16384)
            if n > 0:
                out += ffi.unpack(buf, n)
                continue
            error = lib.SSL_get_error(self._ssl, n)
            if error in (lib.SSL_ERROR_WANT_READ, lib.SSL_ERROR_ZERO_RETURN):
                return out
            raise TLSError(f"read failed: {_error_text()}")

    def write(self, data: bytes) -> None:
        if lib.SSL_write(self._ssl, data, len(data)) != len(data):
            raise TLSError(f"write failed: {_error_text()}")

    def shutdown(self) -> None:
        lib.SSL_shutdown(self._ssl)

    def free(self) -> None:
        pointer, self._ssl = self._ssl, None
        if pointer is not None:
            ffi.release(pointer)


def handshake(server: TestContext, client: TestContext, session: Optional[Session] = None,
              server_name: Optional[str] = None) -> Tuple[TestConnection, TestConnection]:
    """A complete handshake between two fresh connections, tickets delivered."""
    s, c = server.connection(), client.connection()
    if server_name:
        c.set_server_name(server_name)
    if session is not None:
        c.set_session(session)
    done_c = done_s = False
    for _ in range(20):
        if not done_c:
            done_c = c.step()
        s.feed(c.pending_output())
        if not done_s:
            done_s = s.step()
        c.feed(s.pending_output())
        if done_c and done_s:
            break
    else:
        raise TLSError("handshake did not complete in 20 rounds")
    c.read_pending()  # TLS 1.3: the session tickets arrive after the handshake
    s.feed(c.pending_output())
    return s, c
