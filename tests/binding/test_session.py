"""Session objects: serialization, properties, bridging to pyOpenSSL, bad bytes."""
from __future__ import annotations


import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import sesscache
from sesscache import Session, SessionError
from tests.binding.test_callbacks import DictCache
from tests.tls import TLS12, PyOpenSSLStack


@pytest.fixture
def made(stack, version):
    """A real server-side session's DER, and the server context it belongs to."""
    server = stack.server_context(version)
    cache = DictCache().attach(server)
    hs = stack.handshake(server, stack.client_context())
    stack.close(hs)
    der = next(iter(cache.store.values()))
    return server, der


def test_round_trip_keeps_every_property(made, version):
    server, der = made
    with Session.from_bytes(der, server) as session:
        assert session.to_bytes() == der
        again = Session.from_bytes(session.to_bytes(), server)
        for name in ("id", "id_context", "time", "timeout", "protocol", "cipher", "is_resumable",
                     "server_name"):
            assert getattr(again, name) == getattr(session, name), name
        assert session.protocol == version
        assert session.libssl is sesscache.libssl_info(server)
        assert "Session" in repr(session)
        again.close()


def test_closed_session_says_so(made):
    server, der = made
    session = Session.from_bytes(der, server)
    session.close()
    session.close()  # idempotent
    assert session.closed
    with pytest.raises(SessionError, match="closed"):
        session.to_bytes()
    assert repr(session) == "<Session closed>"


def test_sessions_are_not_made_directly():
    with pytest.raises(TypeError, match="from_bytes"):
        Session()


@pytest.mark.parametrize("bad", [b"", b"\x00", b"not a session at all", b"\x30\x03\x02\x01\x01"])
def test_bad_bytes_raise_a_clear_error(made, bad):
    server, _ = made
    with pytest.raises(SessionError, match="not a TLS session|empty"):
        Session.from_bytes(bad, server)


def test_trailing_bytes_are_refused(made):
    server, der = made
    with pytest.raises(SessionError):
        Session.from_bytes(der + b"\x00", server)


def test_non_bytes_are_a_type_error(made):
    server, _ = made
    with pytest.raises(TypeError):
        Session.from_bytes("text", server)


def test_oversized_input_is_refused_before_parsing(made):
    server, _ = made
    with pytest.raises(SessionError, match="larger than any TLS session"):
        Session.from_bytes(b"\x30" * (sesscache.session.MAX_DER_SIZE + 1), server)


def test_from_bytes_of_a_non_context_is_refused():
    with pytest.raises(sesscache.UnsupportedContext, match="OpenSSL.SSL.Context .*or an ssl.SSLContext"):
        Session.from_bytes(b"\x30\x00", object())


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutated_sessions_never_crash(made, data):
    """Random bit flips, truncations and splices of a real session: a Session or a
    SessionError, never a crash, and the OpenSSL error queue is left clean."""
    server, der = made
    mutated = bytearray(der)
    for _ in range(data.draw(st.integers(1, 4))):
        kind = data.draw(st.sampled_from(["flip", "cut", "insert", "set"]))
        if not mutated:
            break
        at = data.draw(st.integers(0, len(mutated) - 1))
        if kind == "flip":
            mutated[at] ^= 1 << data.draw(st.integers(0, 7))
        elif kind == "cut":
            del mutated[at:]
        elif kind == "insert":
            mutated[at:at] = data.draw(st.binary(min_size=1, max_size=8))
        else:
            mutated[at] = data.draw(st.integers(0, 255))
    try:
        session = Session.from_bytes(bytes(mutated), server)
    except SessionError:
        return
    # Whatever parsed is a real session object that serializes again.
    assert isinstance(session.to_bytes(), bytes)
    session.close()


@given(junk=st.binary(max_size=600))
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_random_bytes_never_crash(made, junk):
    server, _ = made
    try:
        Session.from_bytes(junk, server).close()
    except SessionError:
        pass


def test_failed_parse_leaves_no_error_for_pyopenssl(certs):
    """d2i failures push errors onto OpenSSL's queue; left there, pyOpenSSL would blame
    the next, unrelated call. sesscache clears them."""
    stack = PyOpenSSLStack(certs)
    server = stack.server_context(TLS12)
    for _ in range(5):
        with pytest.raises(SessionError):
            Session.from_bytes(b"\x30\x82\x01\x00garbage", server)
    from OpenSSL import SSL

    assert SSL._lib.ERR_peek_error() == 0
    hs = stack.handshake(server, stack.client_context())
    stack.close(hs)


def test_pyopenssl_bridge_both_ways(certs, version):
    stack = PyOpenSSLStack(certs)
    server = stack.server_context(version, internal_cache=True)
    client = stack.client_context()
    hs = stack.handshake(server, client)
    ours = Session.from_pyopenssl(hs.client_session)
    assert ours.protocol == version
    back = ours.to_pyopenssl(client)
    again = stack.handshake(server, client, back)
    assert again.server_reused
    # Through bytes: what a client-side cache does across restarts.
    revived = Session.from_bytes(ours.to_bytes(), client).to_pyopenssl(client)
    third = stack.handshake(server, client, revived)
    assert third.server_reused
    for h in (hs, again, third):
        stack.close(h)


def test_to_pyopenssl_refuses_a_session_of_another_openssl(certs):
    from tests.tls import LinkedStack

    linked = LinkedStack(certs)
    server = linked.server_context(TLS12)
    cache = DictCache().attach(server)
    linked.close(linked.handshake(server, linked.client_context()))
    session = Session.from_bytes(next(iter(cache.store.values())), server)
    if session.libssl is sesscache.libssl_info(PyOpenSSLStack(certs).client_context()):
        pytest.skip("pyOpenSSL runs on the linked libssl here")
    with pytest.raises(SessionError, match="cannot move between copies of OpenSSL"):
        session.to_pyopenssl()
    session.close()


def test_from_pyopenssl_rejects_other_objects():
    with pytest.raises(TypeError, match="OpenSSL.SSL.Session"):
        Session.from_pyopenssl(object())
