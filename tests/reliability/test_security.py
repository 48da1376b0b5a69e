"""Security boundaries, with real handshakes: a session resumes only for the server name,
certificate and session id context it was made for.

Where sesscache does not refuse yet, the test expects refusal and is marked
``xfail(strict=True)`` with the reason: it turns into a failure (a reminder to remove the
mark) the day the library is fixed.
"""
from __future__ import annotations

import pytest

from sesscache import MemoryStore, Session, SessionCache
from tests.reliability.drive import client_hello, feed_server
from tests.reliability.hello import (
    EXT_PRE_SHARED_KEY,
    EXT_SERVER_NAME,
    Hello,
    master_key,
    psk_identities,
    rebind,
    server_name_extension,
)
from tests.tls import TLS12, TLS13

OTHER_CERTIFICATE = (
    "sesscache keys sessions by session id context and session id only: a session made by a "
    "server with one certificate resumes on a server with another certificate (other key, same "
    "names) that shares the store and the id context, so the client never sees the second "
    "certificate. Proposed fix: put a fingerprint of the context's certificate in the store key.")

UNREADABLE_NAME = (
    "the cache skips its SNI check when sc_requested_server_name cannot read the name (empty, "
    "or 256 bytes and more): OpenSSL checks neither an empty name nor, on a TLS 1.2 resumption, "
    "the 255-byte limit, so a session made for one name resumes for a client sending such a "
    "name, which the check refuses for a client sending no name at all.")


@pytest.mark.xfail(strict=True, reason=OTHER_CERTIFICATE)
def test_a_session_of_another_certificate_is_refused(stack, version, certs):
    store = MemoryStore()
    first_cache, second_cache = SessionCache(store), SessionCache(store)
    first = stack.server_context(version)
    second = stack.server_context(version, certfile=certs.other_server_pem)
    first_cache.attach(first, internal_cache=False)
    second_cache.attach(second, internal_cache=False)
    client = stack.client_context()
    made = stack.handshake(first, client, server_name="example.com")
    stack.close(made)
    offered = stack.handshake(second, client, made.client_session, server_name="example.com")
    stack.close(offered)
    assert not offered.server_reused, "a session made under another certificate resumed"


def test_a_session_of_another_server_name_is_refused_across_servers(stack, version):
    """Two virtual hosts (two contexts, one per name) share the store and the id context:
    a session made on one is refused on the other for the other's name, and still resumes
    there for its own name (that is the name it was made for)."""
    store = MemoryStore()
    a_cache, b_cache = SessionCache(store), SessionCache(store)
    a, b = stack.server_context(version), stack.server_context(version)
    a_cache.attach(a, internal_cache=False)
    b_cache.attach(b, internal_cache=False)
    client = stack.client_context()
    made = stack.handshake(a, client, server_name="example.com")
    stack.close(made)
    other = stack.handshake(b, client, made.client_session, server_name="other.example")
    stack.close(other)
    assert not other.server_reused and b_cache.stats.rejected == 1
    same = stack.handshake(b, client, made.client_session, server_name="example.com")
    stack.close(same)
    assert same.server_reused and b_cache.stats.hits == 1


def _name_cases():
    cases = []
    for version in (TLS12, TLS13):
        for label, name in (("same", b"example.com"), ("other", b"other.example"), ("absent", None),
                            ("empty", b""), ("256", b"a" * 256), ("300", b"b" * 300)):
            fails_today = label == "empty" or (version == TLS12 and label in ("256", "300"))
            marks = [pytest.mark.xfail(strict=True, reason=UNREADABLE_NAME)] if fails_today else []
            cases.append(pytest.param(version, label, name, marks=marks, id=f"{version}-{label}"))
    return cases


@pytest.mark.parametrize("version, label, name", _name_cases())
def test_unreadable_server_names_are_refused(stack, version, label, name):
    """A client free to send any ClientHello (a real one, rewritten, with the TLS 1.3 binder
    recomputed from the session's secret as such a client would) offers a session made for
    example.com with another server_name extension. Only the same name may resume."""
    store = MemoryStore()
    cache = SessionCache(store)
    server = stack.server_context(version)
    cache.attach(server, internal_cache=False)
    client = stack.client_context()
    made = stack.handshake(server, client, server_name="example.com")
    stack.close(made)
    hello = Hello.parse(client_hello(stack, client, made.client_session, "example.com"))
    hello.replace_extension(EXT_SERVER_NAME, None if name is None else server_name_extension(name))
    data = hello.to_bytes()
    if version == TLS13:
        identity = psk_identities(hello.extension(EXT_PRE_SHARED_KEY))[0]
        key = cache.key_for(b"sesscache", identity)
        _, _, der = cache._unwrap(key, store.get(key))
        with Session.from_bytes(bytes(der), server) as session:
            digest = "sha384" if "SHA384" in session.cipher.upper() else "sha256"
        data = rebind(data, master_key(bytes(der)), digest)
    answer = feed_server(stack, server, data)
    resumed = answer.reused and not answer.alert
    if label == "same":
        assert resumed, "the harness itself is broken: the unchanged name did not resume"
    else:
        assert not resumed, f"a session made for example.com resumed for server name {label}"
