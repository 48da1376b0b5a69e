"""Real TLS endpoints for the tests: one driver per TLS stack, same interface.

* ``pyopenssl``: pyOpenSSL as pip installs it (the OpenSSL inside the cryptography wheel).
* ``stdlib``: the ``ssl`` module (the OpenSSL ``_ssl`` links).
* ``linked``: ``sesscache.testing`` on the OpenSSL sesscache itself links (the only
  stack on rows of the version matrix where no Python TLS library uses that OpenSSL).

Every handshake is a real one between two endpoints of the same stack over memory BIOs.
"""
from __future__ import annotations

import ssl
import threading
from dataclasses import dataclass
from typing import Any, Optional

import sesscache
from sesscache import testing

TLS12 = "TLSv1.2"
TLS13 = "TLSv1.3"
SID_CTX = b"sesscache-tests"


@dataclass
class Handshake:
    server: Any
    client: Any
    server_reused: bool
    client_session: Any  # the stack's own session object, for the next handshake
    version: str


class Stack:
    name = "?"

    def __init__(self, certs) -> None:
        self.certs = certs

    def server_context(self, version: str, *, tickets: bool = False, internal_cache: bool = False,
                       sid_ctx: Optional[bytes] = SID_CTX, num_tickets: Optional[int] = None,
                       certfile: Optional[str] = None) -> Any:
        raise NotImplementedError

    def client_context(self, *, client_cache: bool = False) -> Any:
        raise NotImplementedError

    def handshake(self, server_ctx, client_ctx, session=None, server_name=None) -> Handshake:
        raise NotImplementedError

    def to_session(self, stack_session) -> sesscache.Session:
        raise NotImplementedError

    def close(self, hs: Handshake, clean: bool = True) -> None:
        """Free both ends; ``clean`` sends close_notify first (else the server's session
        is marked not resumable by OpenSSL)."""

    def close_server_uncleanly(self, hs: Handshake) -> None:
        """The client says goodbye properly; the server drops the connection without its
        own close_notify (CPython's SSLSocket.close() without unwrap() does that)."""
        self._client_goodbye(hs)
        hs.server = hs.client = None

    def _client_goodbye(self, hs: Handshake) -> None:
        raise NotImplementedError

    def server_cache_mode(self, internal_cache: bool) -> int:
        mode = sesscache.SESS_CACHE_SERVER
        return mode if internal_cache else mode | sesscache.SESS_CACHE_NO_INTERNAL

    def full_then_resumed(self, server_ctx, client_ctx) -> Handshake:
        """A full handshake, then a resumption of its session (asserted), both closed
        cleanly; returns the resumption. After it every steady-state event has happened
        once (the C fast path has learned the certificate's fingerprint)."""
        first = self.handshake(server_ctx, client_ctx)
        self.close(first)
        warm = self.handshake(server_ctx, client_ctx, first.client_session)
        assert warm.server_reused, "the second handshake did not resume the first's session"
        self.close(warm)
        return warm

    def resume_repeatedly(self, server_ctx, client_ctx, session, times: int) -> Any:
        """``times`` resumptions, each asserted and closed cleanly, each offering the newest
        session (TLS 1.3 hands out a new one per resumption); returns the last."""
        for _ in range(times):
            hs = self.handshake(server_ctx, client_ctx, session)
            assert hs.server_reused
            session = hs.client_session if hs.version == TLS13 else session
            self.close(hs)
        return session


class PyOpenSSLStack(Stack):
    name = "pyopenssl"

    def __init__(self, certs) -> None:
        super().__init__(certs)
        from OpenSSL import SSL
        self.SSL = SSL

    def _versions(self, ctx, version):
        SSL = self.SSL
        number = {TLS12: SSL.TLS1_2_VERSION, TLS13: SSL.TLS1_3_VERSION}[version]
        ctx.set_min_proto_version(number)
        ctx.set_max_proto_version(number)

    def server_context(self, version, *, tickets=False, internal_cache=False, sid_ctx=SID_CTX,
                       num_tickets=None, certfile=None):
        SSL = self.SSL
        ctx = SSL.Context(SSL.TLS_SERVER_METHOD)
        ctx.use_certificate_chain_file(certfile or self.certs.server_pem)
        ctx.use_privatekey_file(certfile or self.certs.server_pem)
        self._versions(ctx, version)
        if not tickets:
            ctx.set_options(SSL.OP_NO_TICKET)
        if sid_ctx is not None:
            ctx.set_session_id(sid_ctx)
        ctx.set_session_cache_mode(self.server_cache_mode(internal_cache))
        if num_tickets is not None:
            sesscache.set_num_tickets(ctx, num_tickets)
        return ctx

    def client_context(self, *, client_cache=False):
        SSL = self.SSL
        ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
        ctx.load_verify_locations(self.certs.ca_pem)
        ctx.set_verify(SSL.VERIFY_PEER)
        if client_cache:
            ctx.set_session_cache_mode(SSL.SESS_CACHE_CLIENT)
        return ctx

    def handshake(self, server_ctx, client_ctx, session=None, server_name=None):
        SSL = self.SSL
        server = SSL.Connection(server_ctx)
        server.set_accept_state()
        client = SSL.Connection(client_ctx)
        client.set_connect_state()
        if server_name:
            client.set_tlsext_host_name(server_name.encode())
        if session is not None:
            client.set_session(session)
        done = [False, False]
        for _ in range(20):
            for index, conn in enumerate((client, server)):
                if not done[index]:
                    try:
                        conn.do_handshake()
                        done[index] = True
                    except SSL.WantReadError:
                        pass
            self._pump(client, server)
            self._pump(server, client)
            if all(done):
                break
        else:
            raise AssertionError("pyOpenSSL handshake did not complete")
        try:  # TLS 1.3 tickets arrive after the handshake
            client.recv(1)
        except SSL.WantReadError:
            pass
        reused = sesscache.session_reused(server)
        return Handshake(server, client, reused, client.get_session(),
                         client.get_protocol_version_name())

    def _pump(self, source, sink):
        try:
            data = source.bio_read(1 << 16)
        except self.SSL.WantReadError:
            return
        if data:
            sink.bio_write(data)

    def to_session(self, stack_session):
        return sesscache.Session.from_pyopenssl(stack_session)

    def _client_goodbye(self, hs):
        hs.client.shutdown()
        self._pump(hs.client, hs.server)

    def close(self, hs, clean=True):
        if clean:
            for conn, peer in ((hs.server, hs.client), (hs.client, hs.server)):
                try:
                    conn.shutdown()
                except self.SSL.Error:
                    pass
                self._pump(conn, peer)
        hs.server = hs.client = None


# CPython 3.10, 3.11 and 3.12 before 3.12.7 leak one SSL_SESSION each time
# SSLObject.session / SSLSocket.session is read (python/cpython#116810: a duplicate is
# made, then overwritten). The leak check would rightly catch it, so the stdlib driver
# counts its reads and the check allows exactly that many: measured here, not assumed.
cpython_leaked_sessions = {}  # libssl description -> SSL_SESSIONs leaked by CPython
_leak_per_read = []
_leak_lock = threading.RLock()  # the load tests read sessions from many threads


def _stdlib_session(sslobj):
    """``sslobj.session``, with CPython's own leak (if this Python has it) accounted for."""
    where = sesscache.libssl_info(sslobj.context)
    with _leak_lock:
        if not _leak_per_read:
            _measure_leak_per_read(sslobj, where)
    session = sslobj.session
    _note_leak(where)
    return session


def _measure_leak_per_read(sslobj, where) -> None:
    """How many sessions one read of .session leaks on this Python, measured once.
    tests/conftest.py triggers it before the first test, while no other thread makes
    sessions that would blur the count."""
    import gc

    gc.collect()
    before = sesscache.live_session_count(where)
    probe = sslobj.session
    del probe
    gc.collect()
    _leak_per_read.append(sesscache.live_session_count(where) - before)
    _note_leak(where)


def _note_leak(where) -> None:
    key = where.describe()
    with _leak_lock:
        cpython_leaked_sessions[key] = cpython_leaked_sessions.get(key, 0) + _leak_per_read[0]


class StdlibStack(Stack):
    name = "stdlib"

    def server_context(self, version, *, tickets=False, internal_cache=False, sid_ctx=SID_CTX,
                       num_tickets=None, certfile=None):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(certfile or self.certs.server_pem)
        ctx.minimum_version = ctx.maximum_version = {
            TLS12: ssl.TLSVersion.TLSv1_2, TLS13: ssl.TLSVersion.TLSv1_3}[version]
        if not tickets:
            ctx.options |= ssl.OP_NO_TICKET
        if num_tickets is not None:
            ctx.num_tickets = num_tickets
        if sid_ctx is not None:
            sesscache.set_session_id_context(ctx, sid_ctx)
        sesscache.set_session_cache_mode(ctx, self.server_cache_mode(internal_cache))
        return ctx

    def client_context(self, *, client_cache=False):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(self.certs.ca_pem)
        if client_cache:
            sesscache.set_session_cache_mode(ctx, sesscache.SESS_CACHE_CLIENT)
        return ctx

    def handshake(self, server_ctx, client_ctx, session=None, server_name=None):
        c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
        if server_name == "":  # no SNI at all: only possible without hostname checking
            client_ctx.check_hostname = False
            hostname = None
        else:
            client_ctx.check_hostname = True
            hostname = server_name or "localhost"
        client = client_ctx.wrap_bio(c_in, c_out, server_hostname=hostname, session=session)
        server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
        done = [False, False]
        for _ in range(20):
            for index, conn in enumerate((client, server)):
                if not done[index]:
                    try:
                        conn.do_handshake()
                        done[index] = True
                    except ssl.SSLWantReadError:
                        pass
            s_in.write(c_out.read())
            c_in.write(s_out.read())
            if all(done):
                break
        else:
            raise AssertionError("stdlib handshake did not complete")
        try:
            client.read(1)
        except ssl.SSLWantReadError:
            pass
        hs = Handshake(server, client, server.session_reused, _stdlib_session(client), client.version())
        hs.bios = (c_in, c_out, s_in, s_out)
        return hs

    def to_session(self, stack_session):
        raise NotImplementedError("stdlib sessions cannot be bridged")

    def _client_goodbye(self, hs):
        try:
            hs.client.unwrap()
        except (ssl.SSLWantReadError, ssl.SSLError):
            pass
        hs.bios[2].write(hs.bios[1].read())

    def close(self, hs, clean=True):
        if clean:
            c_in, c_out, s_in, s_out = hs.bios
            for conn in (hs.client, hs.server):
                try:
                    conn.unwrap()
                except (ssl.SSLWantReadError, ssl.SSLError):
                    pass
                s_in.write(c_out.read())
                c_in.write(s_out.read())
        hs.server = hs.client = None


class LinkedStack(Stack):
    name = "linked"

    def server_context(self, version, *, tickets=False, internal_cache=False, sid_ctx=SID_CTX,
                       num_tickets=None, certfile=None):
        return testing.TestContext(
            True, certfile=certfile or self.certs.server_pem,
            version={TLS12: testing.TLS1_2, TLS13: testing.TLS1_3}[version], tickets=tickets,
            session_id_context=sid_ctx, cache_mode=self.server_cache_mode(internal_cache),
            num_tickets=num_tickets)

    def client_context(self, *, client_cache=False):
        return testing.TestContext(False, cafile=self.certs.ca_pem,
                                   cache_mode=sesscache.SESS_CACHE_CLIENT if client_cache else None)

    def handshake(self, server_ctx, client_ctx, session=None, server_name=None):
        server, client = testing.handshake(server_ctx, client_ctx, session, server_name)
        return Handshake(server, client, server.session_reused, client.get_session(), client.version)

    def to_session(self, stack_session):
        return stack_session

    def _client_goodbye(self, hs):
        hs.client.shutdown()
        hs.server.feed(hs.client.pending_output())
        hs.client.free()
        hs.server.free()

    def close(self, hs, clean=True):
        if clean:
            hs.server.shutdown()
            hs.client.feed(hs.server.pending_output())
            hs.client.shutdown()
            hs.server.feed(hs.client.pending_output())
        hs.server.free()
        hs.client.free()
        hs.server = hs.client = None


STACKS = {"pyopenssl": PyOpenSSLStack, "stdlib": StdlibStack, "linked": LinkedStack}
