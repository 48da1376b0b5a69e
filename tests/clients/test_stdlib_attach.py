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


def test_an_offered_tls13_ticket_is_taken_out_of_the_store(certs, tmp_path):
    """A server that sends no new ticket on resumption (num_tickets = 0 after the first
    connection): the ticket offered is gone from the store; with tls13_single_use=False it
    stays and is offered again."""
    for single_use in (True, False):
        cache = ClientSessionCache(SQLiteStore(str(tmp_path / f"c{single_use}.db")),
                                   tls13_single_use=single_use)
        ctx = client_context(certs)
        cache.attach(ctx)
        with OfferServer(certs, "TLSv1.3") as server:
            request(ctx, server.port)
            (key,) = cache._memory
            server.context.num_tickets = 0
            request(ctx, server.port)
            request(ctx, server.port)
        assert (cache.store.get(key) is None) == single_use
        expected = [(False, False), (True, True), (False, False)] if single_use else \
            [(False, False), (True, True), (True, True)]
        assert [(s.offered, s.reused) for s in server.seen] == expected


def test_a_client_certificate_has_sessions_of_its_own(certs, tmp_path):
    import trustme

    db = tmp_path / "c.db"
    ca = trustme.CA()
    client_pem = tmp_path / "client.pem"
    ca.issue_cert("client@example").private_key_and_cert_chain_pem.write_to_path(str(client_pem))

    def with_cert():
        cache = ClientSessionCache(SQLiteStore(str(db)))
        ctx = client_context(certs)
        ctx.load_cert_chain(str(client_pem))
        cache.attach(ctx)
        return ctx

    with OfferServer(certs, "TLSv1.2") as server:
        request(fresh(certs, db), server.port)
        request(with_cert(), server.port)  # another client certificate: not offered
        request(with_cert(), server.port)
    assert [s.offered for s in server.seen] == [False, False, True]


def test_close_unhooks_the_context(certs, tmp_path):
    from sesscache._binding import lib
    from sesscache._binding.find_context import bind_context

    cache = ClientSessionCache(SQLiteStore(str(tmp_path / "c.db")))
    ctx = client_context(certs)
    cache.attach(ctx)
    bound = bind_context(ctx)
    assert lib.sc_client_installed(bound.instance.slot, bound.pointer) == 1
    with OfferServer(certs, "TLSv1.2") as server:
        request(ctx, server.port)
        cache.close()
        assert lib.sc_client_installed(bound.instance.slot, bound.pointer) == 0
        request(ctx, server.port)
    assert [s.offered for s in server.seen] == [False, False]
    ClientSessionCache().attach(ctx)  # free again for another cache


def test_an_info_callback_set_by_someone_else_is_refused(certs):
    from sesscache._binding import ffi
    from sesscache._binding.find_context import bind_context

    ctx = client_context(certs)
    bound = bind_context(ctx)
    theirs = ffi.callback("sc_info_cb_t", lambda ssl, where, ret: None)
    bound.instance.api.SSL_CTX_set_info_callback(bound.pointer, theirs)
    with pytest.raises(ConfigurationError, match="info callback that sesscache did not set"):
        ClientSessionCache().attach(ctx)
    bound.instance.api.SSL_CTX_set_info_callback(bound.pointer, ffi.NULL)


def test_the_store_is_never_touched_on_the_event_loop(certs, tmp_path):
    import threading

    calls = []

    class Watched(SQLiteStore):
        def get(self, key):
            calls.append(("get", threading.get_ident()))
            return super().get(key)

        def set(self, key, value, ttl):
            calls.append(("set", threading.get_ident()))
            return super().set(key, value, ttl)

    async def one(port):
        cache = ClientSessionCache(Watched(str(tmp_path / "c.db")))
        ctx = client_context(certs)
        cache.attach(ctx, port=port)
        await cache.aprefetch(ctx, "localhost", port)
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx,
                                                       server_hostname="localhost")
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        await reader.read()
        writer.close()
        cache.close()
        return threading.get_ident()

    with OfferServer(certs, "TLSv1.3") as server:
        loops = [asyncio.run(one(server.port)) for _ in range(2)]
    assert calls and all(ident not in loops for _, ident in calls), calls
    assert [s.reused for s in server.seen] == [False, True]


def test_a_tls13_ticket_another_process_took_first_is_not_offered(certs, tmp_path):
    """Between this process's read and its atomic pop, another one takes the ticket: the
    offer is withdrawn (the server sees no PSK), the connection does a full handshake."""
    class TakenMeanwhile(SQLiteStore):
        steal = False

        def get(self, key):
            value = super().get(key)
            if self.steal and value is not None:
                SQLiteStore(self._path_for_test).pop(key)  # the other process
            return value

    path = str(tmp_path / "c.db")
    with OfferServer(certs, "TLSv1.3") as server:
        request(fresh(certs, tmp_path / "c.db"), server.port)
        store = TakenMeanwhile(path)
        store._path_for_test = path
        store.steal = True
        cache = ClientSessionCache(store)
        ctx = client_context(certs)
        cache.attach(ctx)
        request(ctx, server.port)
    assert cache.taken_by_another == 1 and cache.offered == 0
    assert [(s.offered, s.reused) for s in server.seen] == [(False, False), (False, False)]


@pytest.mark.parametrize("version", VERSIONS)
def test_one_process_resumes_every_connection_after_unclean_closes(certs, tmp_path, version):
    """Most HTTP clients close without a close_notify, after which libssl marks the
    connection's own session not resumable: the copy the cache offers from memory is not
    that one, so every later connection of the process still resumes."""
    cache = ClientSessionCache(SQLiteStore(str(tmp_path / "c.db")))
    ctx = client_context(certs)
    cache.attach(ctx)
    with OfferServer(certs, version) as server:
        for _ in range(4):
            with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
                tls = ctx.wrap_socket(sock, server_hostname="localhost")
                tls.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                while tls.recv(1024):
                    pass
                tls.close()  # no unwrap
    assert [(s.offered, s.reused) for s in server.seen] == [(False, False)] + [(True, True)] * 3
    assert cache.offered == 3


def test_a_ca_directory_loaded_lazily_keeps_the_key_stable(certs, tmp_path):
    """With capath, OpenSSL loads the CA into the store while verifying: the digest is of
    the trust store as attach saw it, so the session a connection makes is stored under
    the key the next process looks for."""
    import shutil
    import subprocess

    cadir = tmp_path / "cadir"
    cadir.mkdir()
    name = subprocess.run(["openssl", "x509", "-hash", "-noout", "-in", certs.ca_pem], check=True,
                          capture_output=True, text=True).stdout.strip()
    shutil.copy(certs.ca_pem, cadir / f"{name}.0")
    db = tmp_path / "c.db"

    def with_capath():
        cache = ClientSessionCache(SQLiteStore(str(db)))
        ctx = ssl.create_default_context(capath=str(cadir))
        cache.attach(ctx)
        return ctx

    with OfferServer(certs, "TLSv1.2") as server:
        for _ in range(3):
            request(with_capath(), server.port)
    assert [(s.offered, s.reused) for s in server.seen] == [(False, False), (True, True), (True, True)]


def test_sealed_sessions_resume_and_expired_ones_are_not_offered(certs, tmp_path):
    import time

    from sesscache.sealing import generate_key

    keys = [generate_key()]
    db = str(tmp_path / "c.db")

    def sealed(lifetime=3600.0):
        cache = ClientSessionCache(SQLiteStore(db), seal_keys=keys, lifetime=lifetime)
        ctx = client_context(certs)
        cache.attach(ctx)
        return cache, ctx

    with OfferServer(certs, "TLSv1.2") as server:
        first, ctx = sealed(lifetime=1)
        request(ctx, server.port)
        (key,) = first._memory
        assert b"TLS" not in first.store.get(key) and first.stats["stored"] == 1
        time.sleep(1.2)  # past the cache's lifetime
        late, ctx = sealed()
        request(ctx, server.port)  # not offered: expired; stores a fresh one
        again, ctx = sealed()
        request(ctx, server.port)
    assert late.stats["offered"] == 0 and again.stats["offered"] == 1
    assert [s.offered for s in server.seen] == [False, False, True]


def test_an_asyncio_store_is_refused_with_what_to_use():
    from sesscache.stores import AsyncRedisStore

    with pytest.raises(ConfigurationError, match="synchronous store"):
        ClientSessionCache(AsyncRedisStore("redis://127.0.0.1:1/0"))


def test_set_port_names_a_memory_bio_connections_port(certs, tmp_path):
    """wrap_bio with set_port (no attach port): offered and kept under that port."""
    db = str(tmp_path / "c.db")

    def bio_request(port):
        cache = ClientSessionCache(SQLiteStore(db))
        ctx = client_context(certs)
        cache.attach(ctx)
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
        ClientSessionCache.set_port(obj, port)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            def pump(call):
                while True:
                    try:
                        result = call()
                    except ssl.SSLWantReadError:
                        sock.sendall(outgoing.read())
                        data = sock.recv(65536)
                        if not data:
                            incoming.write_eof()
                        else:
                            incoming.write(data)
                        continue
                    sock.sendall(outgoing.read())
                    return result
            pump(obj.do_handshake)
            pump(lambda: obj.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
            body = b""
            while not body.endswith(b"ok"):
                body += pump(lambda: obj.read(1024))
        return cache.stats

    with OfferServer(certs, "TLSv1.3") as server:
        first = bio_request(server.port)
        second = bio_request(server.port)
    assert first["stored"] >= 1 and first["unkeyed"] == 0
    assert second["offered"] == 1
    assert [(s.offered, s.reused) for s in server.seen] == [(False, False), (True, True)]


def test_an_event_loop_miss_reads_the_store_for_the_next_connection(certs, tmp_path):
    """No prefetch: the first connection on the loop misses, and queues a store read off
    the loop; the next connection of the same process resumes."""
    db = str(tmp_path / "c.db")
    with OfferServer(certs, "TLSv1.2") as server:
        request(fresh(certs, db), server.port)  # another process made the session

        async def two():
            cache = ClientSessionCache(SQLiteStore(db))
            ctx = client_context(certs)
            cache.attach(ctx, port=server.port)
            for _ in range(2):
                reader, writer = await asyncio.open_connection("127.0.0.1", server.port, ssl=ctx,
                                                               server_hostname="localhost")
                writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                await reader.read()
                writer.close()
                cache.flush()  # (the queued read, for the test to be deterministic)
            return cache.stats

        stats = asyncio.run(two())
    assert stats["missed"] == 1 and stats["offered"] == 1
    assert [s.offered for s in server.seen] == [False, False, True]
