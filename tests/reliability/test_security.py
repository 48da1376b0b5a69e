"""Security boundaries, with real handshakes: a session resumes only for the server name,
certificate and session id context it was made for.

The certificate and unreadable-name tests found two holes (fixed in dbae585): a session made
under one certificate resumed on a server with another key sharing the store and id
context, and a ClientHello whose server name was empty or over 255 bytes skipped the SNI
check (OpenSSL itself checks neither an empty name nor, on a TLS 1.2 resumption, the length).
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

@pytest.mark.parametrize("warm", [False, True], ids=["cold", "certificate-known-in-c"])
def test_a_session_of_another_certificate_is_refused(stack, version, certs, warm):
    """``warm``: the second server has served a handshake first, so the C fast path knows its
    certificate and meets the foreign session with its own fingerprint check."""
    store = MemoryStore()
    first_cache, second_cache = SessionCache(store), SessionCache(store)
    first = stack.server_context(version)
    second = stack.server_context(version, certfile=certs.other_server_pem)
    first_cache.attach(first, internal_cache=False)
    second_cache.attach(second, internal_cache=False)
    client = stack.client_context()
    if warm:
        stack.close(stack.handshake(second, client, server_name="example.com"))
    made = stack.handshake(first, client, server_name="example.com")
    stack.close(made)
    offered = stack.handshake(second, client, made.client_session, server_name="example.com")
    stack.close(offered)
    assert not offered.server_reused, "a session made under another certificate resumed"
    assert second_cache.stats.rejected == 1 and second_cache.stats.hits == 0
    # the same certificate still resumes it (the refusal is about the certificate, nothing else)
    again = stack.handshake(first, client, made.client_session, server_name="example.com")
    stack.close(again)
    assert again.server_reused


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
            cases.append(pytest.param(version, label, name, id=f"{version}-{label}"))
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
        der = cache._unwrap(key, store.get(key)).der
        with Session.from_bytes(bytes(der), server) as session:
            digest = "sha384" if "SHA384" in session.cipher.upper() else "sha256"
        data = rebind(data, master_key(bytes(der)), digest)
    answer = feed_server(stack, server, data)
    resumed = answer.reused and not answer.alert
    if label == "same":
        assert resumed, "the harness itself is broken: the unchanged name did not resume"
        assert cache.stats.hits == 1
    else:
        assert not resumed, f"a session made for example.com resumed for server name {label}"
        assert cache.stats.rejected == 1 and cache.stats.hits == 0, cache.stats
