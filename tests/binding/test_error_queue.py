"""sesscache's callbacks leave OpenSSL's error queue as they found it.

Errors left on a thread's queue by a libssl call made inside a callback reach the
application's next call: SSL_get_error after SSL_do_handshake reads the queue (a
"want read" becomes SSL_ERROR_SSL, a failed handshake), and pyOpenSSL and CPython turn
anything on it into an exception of their own. So each callback brackets its work with
ERR_set_mark/ERR_pop_to_mark, and the parse entry point Python calls pops only what the
parse pushed. The queue is read through the linked test module: the same copy of
libcrypto as the connections', so the same queue.
"""
from __future__ import annotations

import time

import pytest

from sesscache import MemoryStore, SessionCache, testing
from sesscache._binding import ffi, lib
from sesscache.testing import tlib

STORES = {
    "c-fast-path": MemoryStore,
    # Any clock but time.monotonic itself turns the fast path off: Python parses alone.
    "python-path": lambda: MemoryStore(clock=lambda: time.monotonic()),
}
VERSIONS = {"TLS1.2": testing.TLS1_2, "TLS1.3": testing.TLS1_3}
MISSING = b"/nonexistent/sesscache.pem"


def _drain() -> list:
    codes = []
    while True:
        code = tlib.ERR_get_error()
        if not code:
            return codes
        codes.append(code)


def _fail_a_call_of_this_copy(context) -> None:
    """A libssl call of the connections' copy that fails and queues errors."""
    assert tlib.SSL_CTX_use_certificate_chain_file(context._ctx, MISSING) != 1


def _server_reads_the_hello(server, client, session):
    """The server's first handshake step on a resumption attempt: the get callback runs.
    Returns the connections and what SSL_get_error says of that step."""
    s, c = server.connection(), client.connection()
    c.set_server_name("example.com")
    c.set_session(session)
    assert not c.step()
    s.feed(c.pending_output())
    result = tlib.SSL_do_handshake(s._ssl)
    return s, c, tlib.SSL_get_error(s._ssl, result)


def _finish(s, c) -> None:
    for _ in range(20):
        done_c = c.step()
        s.feed(c.pending_output())
        done_s = s.step()
        c.feed(s.pending_output())
        if done_c and done_s:
            return
    raise AssertionError("the handshake did not complete")


@pytest.mark.parametrize("version", sorted(VERSIONS))
@pytest.mark.parametrize("store", sorted(STORES))
def test_a_stored_der_that_fails_to_parse_leaves_no_error_behind(certs, store, version):
    cache = SessionCache(STORES[store](), lifetime=300)
    server = testing.TestContext(True, certfile=certs.server_pem, version=VERSIONS[version], tickets=False)
    cache.attach(server, internal_cache=False)
    client = testing.TestContext(False, cafile=certs.ca_pem)
    first_s, first_c = testing.handshake(server, client, server_name="example.com")
    # The envelope stays whole, the DER inside it is cut: d2i_SSL_SESSION fails inside
    # the get callback (in C, and again in Python for the fast path's hand-over).
    entries = cache.store.entries()
    assert entries
    for key, blob, _ in entries:
        cache.store.set(key, blob[:-9], 60.0)
    tlib.ERR_clear_error()

    s, c, error = _server_reads_the_hello(server, client, first_c.get_session())

    assert cache.stats.rejected == 1, "the broken session was not looked up"
    assert tlib.ERR_peek_error() == 0, [hex(code) for code in _drain()]
    assert error == tlib.SSL_ERROR_WANT_READ
    _finish(s, c)
    assert not s.session_reused
    for conn in (s, c, first_s, first_c):
        conn.free()


class _StoreThatTripsOpenSSL(MemoryStore):
    """A store whose lookup makes a libssl call of the connection's copy fail (as a
    store or a hook built on the same OpenSSL may) before it answers. (A subclass: the
    lookup runs in Python.)"""

    def __init__(self, context) -> None:
        super().__init__()
        self.context = context
        self.tripped = 0

    def get(self, key):
        _fail_a_call_of_this_copy(self.context)
        self.tripped += 1
        return super().get(key)


@pytest.mark.parametrize("version", sorted(VERSIONS))
def test_errors_queued_inside_the_get_callback_do_not_reach_the_handshake(certs, version):
    client = testing.TestContext(False, cafile=certs.ca_pem)
    store = _StoreThatTripsOpenSSL(client)
    cache = SessionCache(store, lifetime=300)
    server = testing.TestContext(True, certfile=certs.server_pem, version=VERSIONS[version], tickets=False)
    cache.attach(server, internal_cache=False)
    first_s, first_c = testing.handshake(server, client, server_name="example.com")
    tlib.ERR_clear_error()

    s, c, error = _server_reads_the_hello(server, client, first_c.get_session())

    assert store.tripped >= 1
    assert tlib.ERR_peek_error() == 0, [hex(code) for code in _drain()]
    assert error == tlib.SSL_ERROR_WANT_READ  # without the mark: SSL_ERROR_SSL, a failure
    _finish(s, c)
    assert s.session_reused and cache.stats.hits == 1
    for conn in (s, c, first_s, first_c):
        conn.free()


def test_parsing_a_bad_der_pops_its_own_errors_only(certs):
    """The parse entry point Python calls pops what the parse pushed and nothing else
    (it used to clear the whole queue)."""
    slot = testing.linked_instance().slot
    context = testing.TestContext(False, cafile=certs.ca_pem)
    tlib.ERR_clear_error()
    _fail_a_call_of_this_copy(context)
    oldest, newest = tlib.ERR_peek_error(), tlib.ERR_peek_last_error()
    queued = len(_drain())
    assert queued >= 1
    _fail_a_call_of_this_copy(context)
    for bad in (b"", b"\x30\x03\x02\x01\x01", b"\x30\x82\xff\xff" + bytes(64), b"garbage" * 20):
        assert lib.sc_session_from_der(slot, bad, len(bad)) == ffi.NULL
        assert (tlib.ERR_peek_error(), tlib.ERR_peek_last_error()) == (oldest, newest)
    assert len(_drain()) == queued
