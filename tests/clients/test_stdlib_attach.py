"""ClientSessionCache.attach(ssl.SSLContext): every connection offers the stored session
of its server, with no other code, and only to that server (checked on the server side:
what its ClientHello carried)."""
from __future__ import annotations

import asyncio
import socket
import ssl

import pytest

from sesscache import ClientSessionCache, ConfigurationError, SQLiteStore
from tests.clients.server import OfferServer

VERSIONS = ["TLSv1.2", "TLSv1.3"]


def client_context(certs, *, verify: bool = True, cafile=None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=cafile or certs.ca_pem)
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def request(ctx: ssl.SSLContext, port: int, host: str = "localhost") -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        with ctx.wrap_socket(sock, server_hostname=host) as tls:
            tls.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            data = b""
            while True:  # to the end: TLS 1.3 tickets arrive after the handshake
                chunk = tls.recv(1024)
                if not chunk:
                    return data
                data += chunk


def fresh(certs, path, **kw) -> ssl.SSLContext:
    """A restarted client: a new cache over the same store file, a new context."""
    cache = ClientSessionCache(SQLiteStore(str(path)))
    ctx = client_context(certs, **kw)
    cache.attach(ctx)
    return ctx


@pytest.mark.parametrize("version,tickets", [("TLSv1.2", True), ("TLSv1.2", False),
                                             ("TLSv1.3", True)],
                         ids=["1.2-tickets", "1.2-session-ids", "1.3-tickets"])
def test_a_restarted_stdlib_client_resumes(certs, tmp_path, version, tickets):
    db = tmp_path / "c.db"
    with OfferServer(certs, version, tickets=tickets) as server:
        for _ in range(3):
            assert request(fresh(certs, db), server.port).endswith(b"ok")
    assert not server.errors, server.errors
    assert [(s.offered, s.reused) for s in server.seen] == [(False, False), (True, True), (True, True)]


@pytest.mark.parametrize("version", VERSIONS)
def test_never_offered_to_another_server_or_settings(certs, tmp_path, version):
    db = tmp_path / "c.db"
    with OfferServer(certs, version) as server, OfferServer(certs, version) as other:
        request(fresh(certs, db, verify=False), server.port)  # made without verification
        request(fresh(certs, db, verify=False), server.port)  # resumes (the same settings)
        request(fresh(certs, db), server.port)  # verification on: not offered
        request(fresh(certs, db), server.port, host="127.0.0.1")  # another name: not offered
        request(fresh(certs, db), other.port)  # another port: not offered
    assert not server.errors and not other.errors, (server.errors, other.errors)
    assert [s.offered for s in server.seen] == [False, True, False, False]
    assert [s.offered for s in other.seen] == [False]


def test_another_trust_store_is_never_offered(certs, tmp_path):
    import trustme

    db = tmp_path / "c.db"
    other_ca = trustme.CA()
    other_ca_file = tmp_path / "other-ca.pem"
    other_ca.cert_pem.write_to_path(str(other_ca_file))
    both = tmp_path / "both.pem"
    both.write_bytes(open(certs.ca_pem, "rb").read() + other_ca_file.read_bytes())
    with OfferServer(certs, "TLSv1.2") as server:
        request(fresh(certs, db), server.port)
        request(fresh(certs, db, cafile=str(both)), server.port)  # another trust store
        request(fresh(certs, db), server.port)
    assert [s.offered for s in server.seen] == [False, False, True]


@pytest.mark.parametrize("version", VERSIONS)
def test_asyncio_open_connection_offers_from_memory(certs, tmp_path, version):
    """On an event loop the store is not read: prefetch first; a memory-BIO connection's
    port comes from attach(port=...)."""
    db = tmp_path / "c.db"

    async def one(port, prefetch):
        cache = ClientSessionCache(SQLiteStore(str(db)))
        ctx = client_context(certs)
        cache.attach(ctx, port=port)
        if prefetch:
            assert await cache.aprefetch(ctx, "localhost", port)
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx,
                                                       server_hostname="localhost")
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        body = await reader.read()
        writer.close()
        cache.flush()  # the store writes queued on the loop
        return body

    with OfferServer(certs, version) as server:
        assert asyncio.run(one(server.port, False)).endswith(b"ok")
        assert asyncio.run(one(server.port, True)).endswith(b"ok")
    assert [(s.offered, s.reused) for s in server.seen] == [(False, False), (True, True)]


def test_a_memory_bio_without_a_port_is_neither_offered_nor_kept(certs, tmp_path):
    cache = ClientSessionCache()
    ctx = client_context(certs)
    cache.attach(ctx)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    assert cache.unkeyed == 1 and cache.offered == 0


def test_an_info_callback_held_by_another_is_refused(certs):
    ctx = client_context(certs)
    ClientSessionCache().attach(ctx)
    with pytest.raises(ConfigurationError, match="another ClientSessionCache"):
        ClientSessionCache().attach(ctx)


def test_tls13_tickets_are_taken_once(certs, tmp_path):
    cache = ClientSessionCache(SQLiteStore(str(tmp_path / "c.db")))
    ctx = client_context(certs)
    cache.attach(ctx)
    with OfferServer(certs, "TLSv1.3") as server:
        request(ctx, server.port)
        key = next(iter(cache._memory))
        first = cache.store.get(key)
        request(ctx, server.port)
        second = cache.store.get(key)
    assert first is not None and second is not None and first != second, \
        "the offered ticket was not replaced by the server's new one"
    assert [s.reused for s in server.seen] == [False, True]
