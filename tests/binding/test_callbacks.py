"""The raw callbacks on every TLS stack, TLS 1.2 session ids and TLS 1.3 stateful
resumption, with OpenSSL's internal cache off so resumption can only come through them."""
from __future__ import annotations

import gc
import logging
import threading

import pytest

import sesscache
from sesscache import Session
from tests.tls import TLS12, TLS13


class DictCache:
    """The smallest external cache: DER bytes in a dict, keyed by session id."""

    def __init__(self) -> None:
        self.store = {}
        self.gets = []
        self.news = []
        self.conns = []

    def new(self, conn, session: Session) -> None:
        self.news.append(session.id)
        self.conns.append(type(conn).__name__)
        self.store[session.id] = session.to_bytes()

    def get(self, conn, session_id: bytes):
        self.gets.append(session_id)
        return self.store.get(session_id)

    def attach(self, ctx) -> "DictCache":
        sesscache.set_new_session_callback(ctx, self.new)
        sesscache.set_get_session_callback(ctx, self.get)
        return self


def test_resumes_from_a_dict_through_the_get_callback(stack, version):
    server = stack.server_context(version)
    cache = DictCache().attach(server)
    client = stack.client_context()

    first = stack.handshake(server, client)
    assert not first.server_reused and first.version == version
    assert cache.store, "the new-session callback stored nothing"
    assert sesscache.internal_cache_size(server) == 0, "internal cache should be off"

    for _ in range(3):
        again = stack.handshake(server, client, first.client_session)
        assert again.server_reused, "no resumption although the session is in the dict"
        assert again.version == version
        # A clean close: freeing a connection without close_notify would mark the
        # client's session not resumable (see test_gotchas).
        stack.close(again)
    # Every resumption asked the get callback for a session id it holds.
    assert sum(1 for sid in cache.gets if sid in cache.store) >= 3
    stack.close(first)


def test_new_session_callback_sees_the_connection(stack, version):
    server = stack.server_context(version)
    cache = DictCache().attach(server)
    hs = stack.handshake(server, stack.client_context())
    expected = {"pyopenssl": "Connection", "stdlib": "SSLObject", "linked": "NoneType"}[stack.name]
    assert cache.conns and set(cache.conns) == {expected}
    stack.close(hs)


def test_session_properties_in_the_callback(stack, version):
    seen = []
    server = stack.server_context(version)
    sesscache.set_new_session_callback(server, lambda conn, s: seen.append(
        (s.protocol, s.id, s.id_context, s.cipher, s.timeout, s.time, s.is_resumable)))
    hs = stack.handshake(server, stack.client_context())
    protocol, sid, sid_ctx, cipher, timeout, made, resumable = seen[0]
    assert protocol == version
    assert 1 <= len(sid) <= 32
    assert sid_ctx == b"sesscache-tests"
    assert cipher
    assert timeout > 0 and made > 1_600_000_000
    assert resumable
    stack.close(hs)


def test_get_and_remove_callback_accessors_and_removal(stack):
    server = stack.server_context(TLS12)
    new, get, remove = (lambda *a: None), (lambda *a: None), (lambda *a: None)
    assert sesscache.get_new_session_callback(server) is None
    sesscache.set_new_session_callback(server, new)
    sesscache.set_get_session_callback(server, get)
    sesscache.set_remove_session_callback(server, remove)
    assert sesscache.get_new_session_callback(server) is new
    assert sesscache.get_get_session_callback(server) is get
    assert sesscache.get_remove_session_callback(server) is remove
    sesscache.set_get_session_callback(server, None)
    assert sesscache.get_get_session_callback(server) is None
    assert sesscache.get_new_session_callback(server) is new
    for setter in (sesscache.set_new_session_callback, sesscache.set_remove_session_callback):
        setter(server, None)
    assert sesscache.get_new_session_callback(server) is None


def test_replaced_callback_is_the_one_that_runs(stack):
    server = stack.server_context(TLS12)
    first, second = DictCache(), DictCache()
    first.attach(server)
    second.attach(server)
    client = stack.client_context()
    hs = stack.handshake(server, client)
    assert not first.news and second.news
    again = stack.handshake(server, client, hs.client_session)
    assert again.server_reused
    stack.close(hs)
    stack.close(again)


def test_removed_get_callback_means_no_resumption(stack, version):
    server = stack.server_context(version)
    cache = DictCache().attach(server)
    sesscache.set_get_session_callback(server, None)  # before any connection: allowed
    client = stack.client_context()
    hs = stack.handshake(server, client)
    assert cache.store
    again = stack.handshake(server, client, hs.client_session)
    assert not again.server_reused
    stack.close(hs)
    stack.close(again)


def test_pyopenssl_context_cannot_change_after_use(certs):
    """pyOpenSSL 26.2+ forbids changing a Context once a Connection exists: so do we.
    (Older pyOpenSSL has no such rule, and neither does sesscache there.)"""
    from OpenSSL import SSL

    from tests.tls import PyOpenSSLStack

    stack = PyOpenSSLStack(certs)
    server = stack.server_context(TLS12)
    cache = DictCache().attach(server)
    hs = stack.handshake(server, stack.client_context())
    pyopenssl_has_the_rule = hasattr(server, "_used")
    for change in (lambda: sesscache.set_get_session_callback(server, cache.get),
                   lambda: sesscache.set_new_session_callback(server, cache.new),
                   lambda: sesscache.set_session_cache_mode(server, sesscache.SESS_CACHE_SERVER)):
        if pyopenssl_has_the_rule:
            with pytest.raises(sesscache.ConfigurationError, match="before the first Connection"):
                change()
        else:
            change()
    assert sesscache.get_get_session_callback(server) == cache.get
    assert pyopenssl_has_the_rule == hasattr(SSL.Context(SSL.TLS_METHOD), "_used")
    stack.close(hs)


BAD_ANSWERS = ["raise", "wrong-type", "corrupt", "truncated", "other-id", "garbage-session"]


@pytest.mark.parametrize("answer", BAD_ANSWERS)
def test_bad_get_callbacks_fall_back_to_a_full_handshake(stack, version, answer, caplog):
    server = stack.server_context(version)
    cache = DictCache()
    behaviour = {"bad": False}

    def get(conn, session_id):
        good = cache.get(conn, session_id)
        if not behaviour["bad"] or good is None:
            return good
        if answer == "raise":
            raise RuntimeError("store exploded")
        if answer == "wrong-type":
            return 42
        if answer == "corrupt":
            return b"\x30\x82" + bytes(reversed(good))
        if answer == "truncated":
            return good[: len(good) // 2]
        if answer == "garbage-session":
            return b"\x00" * 40
        other = [der for sid, der in cache.store.items() if sid != session_id]
        return Session.from_bytes(other[0], server)

    sesscache.set_new_session_callback(server, cache.new)
    sesscache.set_get_session_callback(server, get)
    client = stack.client_context()
    hs = stack.handshake(server, client)
    other = stack.handshake(server, client)  # a second session, for "other-id"
    stack.close(other)
    behaviour["bad"] = True
    caplog.set_level(logging.ERROR, logger="sesscache.callbacks")
    if stack.name == "pyopenssl":
        # pyOpenSSL's pattern: the callback's exception surfaces from the Connection call
        # that drove OpenSSL, after OpenSSL got a safe answer.
        expected = {"raise": RuntimeError, "wrong-type": sesscache.CallbackError}.get(
            answer, sesscache.SessionError)
        with pytest.raises(expected):
            stack.handshake(server, client, hs.client_session)
    else:
        retry = stack.handshake(server, client, hs.client_session)
        assert not retry.server_reused
        stack.close(retry)
    assert any("get-session callback raised" in r.getMessage() for r in caplog.records)
    # The server is still healthy: with good answers again, resumption works.
    behaviour["bad"] = False
    good = stack.handshake(server, client, hs.client_session)
    assert good.server_reused
    stack.close(good)
    stack.close(hs)


def test_raising_new_session_callback_keeps_the_handshake(stack, version, caplog):
    server = stack.server_context(version)

    def bad_new(conn, session):
        raise ValueError("cannot store")

    sesscache.set_new_session_callback(server, bad_new)
    caplog.set_level(logging.ERROR, logger="sesscache.callbacks")
    client = stack.client_context()
    if stack.name == "pyopenssl":
        with pytest.raises(ValueError, match="cannot store"):
            stack.handshake(server, client)
    else:
        hs = stack.handshake(server, client)
        assert hs.client_session is not None
        stack.close(hs)
    assert any("new-session callback raised" in r.getMessage() for r in caplog.records)


def test_threads_handshaking_on_one_context(stack, version):
    server = stack.server_context(version)
    cache = DictCache().attach(server)
    lock = threading.Lock()
    results = []

    def worker():
        client = stack.client_context()
        first = stack.handshake(server, client)
        local = [first.server_reused]
        for _ in range(20):
            hs = stack.handshake(server, client, first.client_session)
            local.append(hs.server_reused)
            stack.close(hs)
        stack.close(first)
        with lock:
            results.append(local)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 6
    for local in results:
        assert local[0] is False and all(local[1:]), local


def test_thousands_of_cycles_leak_no_session(stack):
    server = stack.server_context(TLS12)
    cache = DictCache().attach(server)
    removed = []
    sesscache.set_remove_session_callback(server, lambda ctx, s: removed.append(s.id))
    client = stack.client_context()
    gc.collect()
    before = _live(server)
    first = stack.handshake(server, client)
    session = first.client_session
    stack.close(first)
    for _ in range(300):
        hs = stack.handshake(server, client, session)
        assert hs.server_reused
        stack.close(hs)
    for _ in range(300):  # bytes returned, then Session objects returned
        with Session.from_bytes(cache.store[next(iter(cache.store))], server) as s:
            assert s.to_bytes()
    del session, first, hs, client
    cache.store.clear()
    gc.collect()
    assert _live(server) == before


def _live(server) -> int:
    """Live sessions of the server's libssl, less those CPython leaked (#116810)."""
    from tests.tls import cpython_leaked_sessions

    where = sesscache.libssl_info(server)
    return sesscache.live_session_count(where) - cpython_leaked_sessions.get(where.describe(), 0)
