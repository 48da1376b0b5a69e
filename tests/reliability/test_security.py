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


def offer_with_server_name(stack, version, name, *, internal_cache):
    """A client free to send any ClientHello (a real one, rewritten, with the TLS 1.3 binder
    recomputed from the session's secret as such a client would) offers a session made for
    example.com with another server_name extension (None: none). (resumed, the cache)"""
    store = MemoryStore()
    cache = SessionCache(store)
    server = stack.server_context(version, internal_cache=internal_cache)
    cache.attach(server, internal_cache=internal_cache)
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
    return answer.reused and not answer.alert, cache


@pytest.mark.parametrize("version, label, name", _name_cases())
def test_unreadable_server_names_are_refused(stack, version, label, name):
    """Only the same name may resume, every lookup through the store."""
    resumed, cache = offer_with_server_name(stack, version, name, internal_cache=False)
    if label == "same":
        assert resumed, "the harness itself is broken: the unchanged name did not resume"
        assert cache.stats.hits == 1
    else:
        assert not resumed, f"a session made for example.com resumed for server name {label}"
        assert cache.stats.rejected == 1 and cache.stats.hits == 0, cache.stats


# --- the other promises, in the default mode (OpenSSL's internal cache in front) --------

def test_a_reloaded_certificate_refuses_the_old_certificates_sessions(certs, version):
    """Certificate rotation by reloading the context (stdlib: pyOpenSSL 26.2+ refuses changes
    to a used context). OpenSSL's internal cache still holds sessions made under the old
    certificate and never looks at certificates: the bound session id context, which
    carries the certificate's fingerprint, makes OpenSSL refuse them itself."""
    from tests.tls import StdlibStack

    stack = StdlibStack(certs)
    cache = SessionCache()
    server = stack.server_context(version, internal_cache=True)
    cache.attach(server)
    client = stack.client_context()
    made = stack.handshake(server, client, server_name="example.com")
    stack.close(made)
    server.load_cert_chain(certs.other_server_pem)
    offered = stack.handshake(server, client, made.client_session, server_name="example.com")
    stack.close(offered)
    assert not offered.server_reused, "a session made under the old certificate resumed"
    assert cache.stats.rejected == 1 and cache.stats.hits == 0, cache.stats
    again = stack.handshake(server, client, offered.client_session, server_name="example.com")
    stack.close(again)
    assert again.server_reused, "a session made under the new certificate did not resume"
    assert cache.stats.rejected == 1


def test_two_contexts_with_other_certificates_sharing_one_cache(stack, version):
    cache = SessionCache()
    first = stack.server_context(version, internal_cache=True)
    second = stack.server_context(version, internal_cache=True, certfile=stack.certs.other_server_pem)
    cache.attach(first)
    cache.attach(second)
    client = stack.client_context()
    made = stack.handshake(first, client, server_name="example.com")
    stack.close(made)
    offered = stack.handshake(second, client, made.client_session, server_name="example.com")
    stack.close(offered)
    assert not offered.server_reused, "a session made under another certificate resumed"
    assert cache.stats.rejected == 1 and cache.stats.hits == 0, cache.stats
    again = stack.handshake(first, client, made.client_session, server_name="example.com")
    stack.close(again)
    assert again.server_reused and cache.stats.rejected == 1


def test_two_services_sharing_a_store_never_resume_each_others_sessions(stack, version):
    store = MemoryStore()
    shop, mail = SessionCache(store), SessionCache(store)
    shop_server = stack.server_context(version, internal_cache=True)
    mail_server = stack.server_context(version, internal_cache=True)
    shop.attach(shop_server, session_id_context=b"shop:443")
    mail.attach(mail_server, session_id_context=b"mail:443")
    client = stack.client_context()
    made = stack.handshake(shop_server, client, server_name="example.com")
    stack.close(made)
    offered = stack.handshake(mail_server, client, made.client_session, server_name="example.com")
    stack.close(offered)
    assert not offered.server_reused, "a session of another service resumed"
    # the store key carries the service's id context: the other service finds nothing
    assert mail.stats.misses == 1 and mail.stats.hits == 0 and mail.stats.rejected == 0, mail.stats


def test_a_copy_of_openssl_that_cannot_read_the_server_name_fails_closed(stack, version):
    """SSL_client_hello_get0_ext is optional in sesscache's function table (a copy may lack
    it). Without it nobody can compare names: attach refuses, and a context attached before
    it went missing resumes nothing rather than anything."""
    import sesscache
    from sesscache._binding import ffi
    from sesscache.errors import ConfigurationError

    server = stack.server_context(version)
    cache = SessionCache()
    cache.attach(server, internal_cache=False)
    client = stack.client_context()
    made = stack.handshake(server, client, server_name="example.com")
    stack.close(made)
    api = sesscache.libssl_info(server).api
    saved = api.SSL_client_hello_get0_ext
    api.SSL_client_hello_get0_ext = ffi.NULL
    try:
        with pytest.raises(ConfigurationError, match="server name"):
            SessionCache().attach(stack.server_context(version))
        offered = stack.handshake(server, client, made.client_session, server_name="example.com")
        stack.close(offered)
    finally:
        api.SSL_client_hello_get0_ext = saved
    assert not offered.server_reused, "resumed although no name could be compared"
    assert cache.stats.rejected == 1 and cache.stats.hits == 0, cache.stats
