"""Minimal TLS endpoints on a libssl of their own, for tests and the OpenSSL matrix.

Not a TLS library: just enough to run real handshakes over memory BIOs on an OpenSSL
that no Python TLS stack in the process uses (for example Debian's 1.1.1w in the
version matrix), so the callbacks, reference counts and DER round trips are exercised
on that very library. Contexts made here work with every sesscache API that takes a
context.

The endpoints call libssl directly, so they live in a separately built module that
links it (``sesscache._sesscache_testing_cffi``, built with ``SESSCACHE_BUILD_TESTING=1``;
never in the wheel). sesscache's core reaches that libssl as it reaches any other shared
copy: the dynamic linker resolves the table in the test module's lookup scope, so what
the matrix's linked rows test is the same run-time resolution users get.
"""
from __future__ import annotations

import os
from typing import Optional, Tuple

from ._binding import copies as _instances
from ._binding import address, ffi, lib
from ._binding.find_context import BoundContext
from .errors import BindingError, SesscacheError
from .session import Session, adopt_session, session_pointer

try:
    from . import _sesscache_testing_cffi
except ImportError as exc:  # pragma: no cover - depends on how sesscache was built
    raise BindingError(
        f"sesscache.testing needs its linked test module, which this install lacks ({exc}). "
        "It is built for development only: SESSCACHE_BUILD_TESTING=1 pip install -e . "
        "(make .venv/.sesscache-installed does this); wheels never carry it.") from exc

tffi, tlib = _sesscache_testing_cffi.ffi, _sesscache_testing_cffi.lib

TLS1_2 = lib.TLS1_2_VERSION
TLS1_3 = lib.TLS1_3_VERSION


class TLSError(SesscacheError):
    pass


_linked: Optional[_instances.LibsslInstance] = None


def linked_instance() -> _instances.LibsslInstance:
    """The libssl the test module links (the system's, or the matrix row's OPENSSL_DIR)."""
    global _linked
    if _linked is None:
        _linked = _instances.instance_for_library_handle(_sesscache_testing_cffi.__file__)
    return _linked


def _core(ctype: str, pointer):
    """A test-module pointer as the core's cdata (two FFIs: handed over by address)."""
    return ffi.cast(ctype, address(pointer))


def _error_text() -> str:
    code = tlib.ERR_get_error()
    if not code:
        return "no OpenSSL error"
    buf = tffi.new("char[256]")
    tlib.ERR_error_string_n(code, buf, 256)
    while tlib.ERR_get_error():
        pass
    return tffi.string(buf).decode()


class TestContext:
    """An ``SSL_CTX`` of the linked libssl (server or client)."""

    __test__ = False  # not a pytest test class

    def __init__(self, server: bool, *, certfile: Optional[str] = None, cafile: Optional[str] = None,
                 version: Optional[int] = None, tickets: bool = True,
                 session_id_context: Optional[bytes] = b"sesscache-testing",
                 cache_mode: Optional[int] = None, num_tickets: Optional[int] = None,
                 timeout: Optional[int] = None) -> None:
        instance = linked_instance()
        api = instance.api
        method = tlib.TLS_server_method() if server else tlib.TLS_client_method()
        ctx = tlib.SSL_CTX_new(method)
        if ctx == tffi.NULL:
            raise TLSError(_error_text())
        self._ctx = tffi.gc(ctx, tlib.SSL_CTX_free)
        self.server = server
        if certfile:
            if tlib.SSL_CTX_use_certificate_chain_file(ctx, os.fsencode(certfile)) != 1 or \
                    tlib.SSL_CTX_use_PrivateKey_file(ctx, os.fsencode(certfile), tlib.SSL_FILETYPE_PEM) != 1:
                raise TLSError(f"cannot load {certfile}: {_error_text()}")
        if cafile:
            if tlib.SSL_CTX_load_verify_locations(ctx, os.fsencode(cafile), tffi.NULL) != 1:
                raise TLSError(f"cannot load {cafile}: {_error_text()}")
            tlib.SSL_CTX_set_verify(ctx, tlib.SSL_VERIFY_PEER, tffi.NULL)
        core_ctx = _core("SSL_CTX *", ctx)
        if version is not None:
            api.SSL_CTX_ctrl(core_ctx, lib.SSL_CTRL_SET_MIN_PROTO_VERSION, version, ffi.NULL)
            api.SSL_CTX_ctrl(core_ctx, lib.SSL_CTRL_SET_MAX_PROTO_VERSION, version, ffi.NULL)
        if not tickets:
            tlib.SSL_CTX_set_options(ctx, lib.SSL_OP_NO_TICKET)
        if server and session_id_context is not None:
            api.SSL_CTX_set_session_id_context(core_ctx, session_id_context, len(session_id_context))
        if cache_mode is not None:
            api.SSL_CTX_ctrl(core_ctx, lib.SSL_CTRL_SET_SESS_CACHE_MODE, cache_mode, ffi.NULL)
        if num_tickets is not None:
            api.SSL_CTX_set_num_tickets(core_ctx, num_tickets)
        if timeout is not None:
            api.SSL_CTX_set_timeout(core_ctx, timeout)
        self._sesscache_bound = BoundContext(instance, address(ctx), "sesscache", self)

    @property
    def pointer(self):
        """The SSL_CTX as the core's cdata (what sesscache's function tables take)."""
        return None if self._ctx is None else _core("SSL_CTX *", self._ctx)

    def connection(self) -> "TestConnection":
        return TestConnection(self)

    def free(self) -> None:
        """Free the SSL_CTX now (connections still hold references of their own)."""
        pointer, self._ctx = self._ctx, None
        if pointer is not None:
            tffi.release(pointer)


class TestConnection:
    """An ``SSL`` over a pair of memory BIOs."""

    __test__ = False

    def __init__(self, context: TestContext) -> None:
        ssl = tlib.SSL_new(context._ctx)
        if ssl == tffi.NULL:
            raise TLSError(_error_text())
        self._ssl = tffi.gc(ssl, tlib.SSL_free)
        self.context = context
        self._incoming = tlib.BIO_new(tlib.BIO_s_mem())
        self._outgoing = tlib.BIO_new(tlib.BIO_s_mem())
        tlib.SSL_set_bio(ssl, self._incoming, self._outgoing)  # the SSL owns both BIOs now
        if context.server:
            tlib.SSL_set_accept_state(ssl)
        else:
            tlib.SSL_set_connect_state(ssl)

    def set_server_name(self, name: str) -> None:
        tlib.SSL_ctrl(self._ssl, tlib.SSL_CTRL_SET_TLSEXT_HOSTNAME, tlib.TLSEXT_NAMETYPE_host_name,
                      tffi.new("char[]", name.encode()))

    def set_session(self, session: Session) -> None:
        if session.libssl is not linked_instance():
            raise TLSError("that session belongs to another copy of OpenSSL")
        if tlib.SSL_set_session(self._ssl, tffi.cast("SSL_SESSION *", address(session_pointer(session)))) != 1:
            raise TLSError(_error_text())

    def get_session(self) -> Optional[Session]:
        pointer = tlib.SSL_get1_session(self._ssl)
        if pointer == tffi.NULL:
            return None
        return adopt_session(linked_instance(), _core("SSL_SESSION *", pointer))

    @property
    def session_reused(self) -> bool:
        return bool(linked_instance().api.SSL_session_reused(_core("SSL *", self._ssl)))

    @property
    def version(self) -> str:
        return tffi.string(tlib.SSL_get_version(self._ssl)).decode()

    def pending_output(self) -> bytes:
        size = tlib.BIO_ctrl_pending(self._outgoing)
        if not size:
            return b""
        buf = tffi.new("char[]", size)
        n = tlib.BIO_read(self._outgoing, buf, size)
        return tffi.unpack(buf, max(n, 0))

    def feed(self, data: bytes) -> None:
        if data:
            tlib.BIO_write(self._incoming, data, len(data))

    def step(self) -> bool:
        """Advance the handshake; True once it is complete."""
        result = tlib.SSL_do_handshake(self._ssl)
        if result == 1:
            return True
        error = tlib.SSL_get_error(self._ssl, result)
        if error in (tlib.SSL_ERROR_WANT_READ, tlib.SSL_ERROR_WANT_WRITE):
            return False
        raise TLSError(f"handshake failed: {_error_text()}")

    def read_pending(self) -> bytes:
        """Process whatever arrived (TLS 1.3 tickets included); return application data."""
        buf = tffi.new("char[]", 16384)
        out = b""
        while True:
            n = tlib.SSL_read(self._ssl, buf, 16384)
            if n > 0:
                out += tffi.unpack(buf, n)
                continue
            error = tlib.SSL_get_error(self._ssl, n)
            if error in (tlib.SSL_ERROR_WANT_READ, tlib.SSL_ERROR_ZERO_RETURN):
                return out
            raise TLSError(f"read failed: {_error_text()}")

    def write(self, data: bytes) -> None:
        if tlib.SSL_write(self._ssl, data, len(data)) != len(data):
            raise TLSError(f"write failed: {_error_text()}")

    def shutdown(self) -> None:
        tlib.SSL_shutdown(self._ssl)

    def free(self) -> None:
        pointer, self._ssl = self._ssl, None
        if pointer is not None:
            tffi.release(pointer)


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
