"""sesscache.aio servers over real loopback sockets, with stdlib TLS clients.

Most tests start two servers over one backend store, like two hosts of a fleet: a session made
on A can only resume on B through the store, so B resuming it proves the asynchronous lookup,
the prefetch map and the replay of the ClientHello all worked.
"""
from __future__ import annotations

import asyncio
import logging
import ssl

import pytest

from sesscache import MemoryStore, SessionCache, SQLiteStore
from sesscache.aio import PrefetchingStore, create_server, start_server
from sesscache.errors import ConfigurationError
from tests.aio.client import HandshakeFailed, TLSClient, resumed
from tests.aio.conftest import SID_CTX, LagMeter, Servers, SlowStore, handle_lines, run, wait_until
from tests.tls import TLS12, TLS13


async def _session_from(port, client_ctx, **kwargs):
    reused, session, client = await resumed(port, client_ctx, None, **kwargs)
    assert not reused
    return session


def _count_hellos(client_ctx):
    """ClientHellos the client sends, seen through the ssl module's message callback."""
    sent = []

    def callback(conn, direction, version, content_type, msg_type, data):
        if direction == "write" and msg_type == ssl._TLSMessageType.CLIENT_HELLO:
            sent.append(msg_type)

    client_ctx._msg_callback = callback
    return sent


@pytest.mark.parametrize("kind", ["asyncio", "inline"])
@pytest.mark.parametrize("version", [TLS12, TLS13])
def test_a_session_made_on_one_server_resumes_on_another_through_the_store(servers, version, kind):
    """``asyncio``: the store is awaited before the handshake. ``inline``: a MemoryStore,
    which the bridge reads directly (and still prefetches, at no cost)."""
    async def main():
        backend = MemoryStore()
        _, port_a, _, store_a = await servers.start(backend, version=version)
        remote = SlowStore(backend) if kind == "asyncio" else backend
        _, port_b, cache_b, store_b = await servers.start(remote, version=version)
        client_ctx = servers.client_context()
        session = await _session_from(port_a, client_ctx)
        assert await store_a.flush(5)
        assert len(backend) >= 1  # landed in the shared store
        for _ in range(3):
            reused, session, client = await resumed(port_b, client_ctx, session)
            assert reused and client.version() == version
        stats = store_b.stats
        assert stats.found >= 3 and stats.prefetch_hits >= 3, stats
        assert stats.lookup_timeouts == stats.lookup_errors == stats.handshake_failures == 0, stats
        assert cache_b.stats.hits >= 3
        await servers.close()

    run(main())


@pytest.mark.parametrize("version", [TLS12, TLS13])
def test_prefetched_sessions_are_answered_in_c_and_counted_once(servers, version):
    """The cache's C fast path reads the sessions the store holds for running handshakes,
    and stores new ones in the local copy: no Python runs for either. The writes to the
    store are still Python's, scheduled from C's journal after each handshake."""
    async def main():
        backend = MemoryStore()
        _, port_a, _, store_a = await servers.start(backend, version=version)
        _, port_b, cache_b, store_b = await servers.start(SlowStore(backend), version=version)
        client_ctx = servers.client_context()
        session = await _session_from(port_a, client_ctx)
        assert await store_a.flush(5)
        before = len(backend)
        assert cache_b._fast_policies, "no fast path for a PrefetchingStore over an asyncio store"
        for _ in range(4):
            reused, _, _ = await resumed(port_b, client_ctx, session)
            assert reused
        fast = cache_b._fast_counts()
        stats = store_b.stats
        # C knows the context's certificate itself (its fingerprint is in the context's
        # state): every lookup is answered there.
        assert fast["hits"] == 4 and stats.prefetch_hits == 4 and stats.local_hits == 0, (fast, stats)
        assert cache_b.stats.hits == 4
        # A TLS 1.3 resumption makes a new session: C stores it in the local copy and notes
        # it; the server drains the note after the handshake and writes it on to the store.
        new_sessions = 4 if version == TLS13 else 0
        assert fast["handed_over"] == 0 and fast["stores"] == new_sessions
        assert cache_b.stats.stores == new_sessions
        assert store_b._holds == {} and len(store_b._held) == 0  # released after each handshake
        assert await store_b.flush(5)
        assert store_b.stats.writes == new_sessions and len(backend) == before + new_sessions
        assert store_b.describe()["entries"] == 0  # landed: the local copy let them go

    run(main())


def test_a_plain_asyncio_server_over_a_prefetching_store_resumes_from_the_local_copy(certs):
    """Without sesscache.aio nothing is prefetched: the local copy of sessions written here
    (and not landed yet) still answers, in C (which learnt the certificate from the new session)."""
    async def main():
        slow = SlowStore(write_delay=5.0)
        store = PrefetchingStore(slow)
        cache = SessionCache(store)
        servers = Servers(certs)
        ctx = servers.server_context(TLS12)
        cache.attach(ctx, session_id_context=SID_CTX, internal_cache=False)
        store.bind(asyncio.get_running_loop())
        server = await asyncio.start_server(handle_lines, "127.0.0.1", 0, ssl=ctx)
        port = server.sockets[0].getsockname()[1]
        client_ctx = servers.client_context()
        session = await _session_from(port, client_ctx)
        for _ in range(3):
            reused, _, _ = await resumed(port, client_ctx, session)
            assert reused
        assert store.stats.local_hits == 3 and store.stats.prefetch_hits == 0
        assert cache._fast_counts()["hits"] == 3 and len(slow.backend) == 0  # C; not landed
        server.close()
        await server.wait_closed()

    run(main())


def test_new_sessions_beyond_the_journal_go_through_python_and_none_is_lost(certs):
    """The journal of sessions C stored holds a bounded number until the loop drains it;
    with no room, a new session is handed to Python, which writes it on as before. Here
    nothing drains between handshakes (a plain asyncio server): flush does."""
    async def main():
        backend = MemoryStore()
        store = PrefetchingStore(SlowStore(backend))
        store._journal_capacity = 2
        cache = SessionCache(store)
        servers = Servers(certs)
        ctx = servers.server_context(TLS12)
        cache.attach(ctx, session_id_context=SID_CTX, internal_cache=False)
        store.bind(asyncio.get_running_loop())
        store._journal_new_sessions()
        server = await asyncio.start_server(handle_lines, "127.0.0.1", 0, ssl=ctx)
        port = server.sockets[0].getsockname()[1]
        client_ctx = servers.client_context()
        for _ in range(5):
            await _session_from(port, client_ctx)
        fast = cache._fast_counts()
        # the first taught C the certificate; two fit the journal; two found it full
        assert fast["stores"] == 2 and fast["handed_over"] == 3, fast
        await wait_until(lambda: len(backend) == 3)  # Python's three, scheduled at once
        await asyncio.sleep(0.05)
        assert len(backend) == 3  # the journaled two wait for a drain
        assert await store.flush(5)
        assert len(backend) == 5 and store.stats.writes == 5 and cache.stats.stores == 5
        server.close()
        await server.wait_closed()

    run(main())


def test_concurrent_handshakes_resuming_one_session_each_find_it(servers):
    """A browser resumes one session on several connections at once: the session is held
    for each handshake, and one ending does not take it from the others."""
    async def main():
        backend = MemoryStore()
        _, port_a, _, store_a = await servers.start(backend)
        _, port_b, _, store_b = await servers.start(SlowStore(backend, delay=0.02))
        client_ctx = servers.client_context()
        session = await _session_from(port_a, client_ctx)
        assert await store_a.flush(5)
        for _ in range(3):
            results = await asyncio.gather(*(resumed(port_b, client_ctx, session) for _ in range(8)))
            assert [r[0] for r in results] == [True] * 8
        assert store_b.stats.prefetch_hits == 24 and store_b._holds == {}

    run(main())


@pytest.mark.parametrize("version", [TLS12, TLS13])
def test_the_same_server_resumes_with_or_without_the_internal_cache(servers, version):
    async def main():
        for internal in (True, False):
            _, port, cache, store = await servers.start(MemoryStore(), version=version,
                                                        internal_cache=internal)
            client_ctx = servers.client_context()
            session = await _session_from(port, client_ctx)
            await store.flush(5)
            reused, _, _ = await resumed(port, client_ctx, session)
            assert reused, internal
        await servers.close()

    run(main())


@pytest.mark.parametrize("cuts", [[1], [3], [5, 40], list(range(1, 60, 7))],
                         ids=["1", "header-3", "5-40", "many"])
def test_a_client_hello_split_across_tcp_segments(servers, cuts):
    async def main():
        backend = MemoryStore()
        _, port_a, _, store_a = await servers.start(backend)
        _, port_b, _, store_b = await servers.start(SlowStore(backend))
        client_ctx = servers.client_context()
        session = await _session_from(port_a, client_ctx)
        await store_a.flush(5)
        reused, _, _ = await resumed(port_b, client_ctx, session, split=cuts, pause=0.03)
        assert reused
        assert store_b.stats.hellos == 1 and store_b.stats.found == 1

    run(main())


def test_hello_retry_request_finds_the_prefetched_session_twice(servers):
    """Server B accepts only P-256; the stdlib client sends an X25519 key share first, so B
    answers with a HelloRetryRequest and the client sends a second ClientHello. OpenSSL asks
    for the session for each hello: the prefetched entry must outlive the first."""
    async def main():
        backend = MemoryStore()
        _, port_a, _, store_a = await servers.start(backend)
        _, port_b, cache_b, store_b = await servers.start(
            SlowStore(backend), context=servers.server_context(TLS13, groups="prime256v1"))
        client_ctx = servers.client_context()
        hellos = _count_hellos(client_ctx)
        session = await _session_from(port_a, client_ctx)
        assert len(hellos) == 1  # no HRR on A
        await store_a.flush(5)
        hellos.clear()
        reused, _, _ = await resumed(port_b, client_ctx, session)
        assert len(hellos) == 2, "server B did not send a HelloRetryRequest"
        assert reused
        stats = store_b.stats
        assert stats.hellos == 1  # the sniffer saw the first hello; the second went to OpenSSL
        assert stats.lookups == 1 and stats.prefetch_hits == 2, stats

    run(main())


def test_sni_the_session_resumes_only_for_the_name_it_was_made_for(servers):
    async def main():
        backend = MemoryStore()
        _, port_a, _, store_a = await servers.start(backend)
        _, port_b, cache_b, store_b = await servers.start(SlowStore(backend))
        client_ctx = servers.client_context()
        session = await _session_from(port_a, client_ctx, server_hostname="example.com")
        await store_a.flush(5)
        reused, _, _ = await resumed(port_b, client_ctx, session, server_hostname="example.com")
        assert reused
        # The same session offered for another name: prefetched, then refused by the cache.
        rejected = cache_b.stats.rejected
        reused, _, _ = await resumed(port_b, client_ctx, session, server_hostname="other.example")
        assert not reused
        assert cache_b.stats.rejected == rejected + 1

    run(main())


def test_a_client_without_a_session_id_gets_no_lookup(servers):
    """A TLS 1.2-only client with nothing to resume sends an empty session id: nothing to
    look up, the hello goes straight to OpenSSL."""
    async def main():
        backend = SlowStore(delay=0.0)
        _, port, _, store = await servers.start(backend, version=TLS12)
        client = await TLSClient.connect(port, servers.client_context(max_version=TLS12))
        assert await client.request() == b"pong\n"
        assert not client.reused
        await client.close()
        assert store.stats.hellos == 1 and store.stats.lookups == 0
        assert backend.calls["get"] == 0

    run(main())


@pytest.mark.parametrize("garbage", [
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    b"\x16\x03\x01\x00\x05\x02\x00\x00\x01\x00",  # a handshake record holding a ServerHello
    # a whole SSLv2-format hello (TLS_RSA_WITH_AES_128_CBC_SHA, 16-byte challenge)
    b"\x80\x1a\x01\x03\x03\x00\x03\x00\x00\x00\x10\x00\x00\x2f" + b"A" * 16,
], ids=["http", "server-hello", "sslv2"])
def test_bytes_that_are_no_client_hello_go_to_openssl_and_the_server_lives_on(servers, garbage):
    async def main():
        _, port, _, store = await servers.start(MemoryStore())
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(garbage)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 5)  # OpenSSL's alert (or nothing), then EOF
        writer.close()
        if answer:
            assert answer[0] == 21, answer  # an alert record: OpenSSL, not us, refused
        await wait_until(lambda: store.stats.handshake_failures == 1)
        assert store.stats.hellos_unparsable == 1 and store.stats.lookups == 0
        # and a real client is served as before
        client = await TLSClient.connect(port, servers.client_context())
        assert await client.request() == b"pong\n"
        await client.close()

    run(main())


def test_a_client_that_sends_half_a_hello_and_stalls_is_handed_to_tls_then_timed_out(servers):
    async def main():
        _, port, _, store = await servers.start(MemoryStore(), hello_timeout=0.2,
                                                ssl_handshake_timeout=0.5)
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = servers.client_context().wrap_bio(incoming, outgoing, server_hostname="localhost")
        with pytest.raises(ssl.SSLWantReadError):
            obj.do_handshake()
        hello = outgoing.read()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(hello[: len(hello) // 2])
        await writer.drain()
        loop = asyncio.get_running_loop()
        start = loop.time()
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the server
        took = loop.time() - start
        assert 0.5 <= took < 4, took  # hello_timeout + ssl_handshake_timeout, generously
        writer.close()
        assert store.stats.hellos_late == 1 and store.stats.handshake_failures == 1

    run(main())


def test_bytes_sent_after_the_hello_during_a_lookup_are_held_bounded_then_replayed(servers, monkeypatch):
    """The socket is still read while the store is awaited. A client that sends on after its
    hello (nothing a TLS client does) is paused beyond a bound, and what it sent goes to
    OpenSSL with the hello, which refuses it: a failed handshake, nothing held unbounded."""
    from sesscache.aio import server as aio_server

    held = []
    original = aio_server._HelloSniffer.data_received

    def watched(self, data):
        original(self, data)
        held.append(len(self._scan.data))

    monkeypatch.setattr(aio_server._HelloSniffer, "data_received", watched)

    async def main():
        backend = MemoryStore()
        _, port_a, _, store_a = await servers.start(backend)
        _, port_b, _, store_b = await servers.start(SlowStore(backend, delay=0.3),
                                                    store_kwargs={"lookup_timeout": 2.0})
        client_ctx = servers.client_context()
        session = await _session_from(port_a, client_ctx)
        await store_a.flush(5)
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = client_ctx.wrap_bio(incoming, outgoing, server_hostname="localhost", session=session)
        with pytest.raises(ssl.SSLWantReadError):
            obj.do_handshake()
        hello = outgoing.read()
        reader, writer = await asyncio.open_connection("127.0.0.1", port_b)
        writer.write(hello + b"\x17" * (16 * aio_server._MAX_HELD))
        try:
            await asyncio.wait_for(writer.drain(), 0.2)  # the server stops reading
        except asyncio.TimeoutError:
            pass
        try:  # answered with an alert and closed, or reset: the client left bytes unread
            await asyncio.wait_for(reader.read(), 5)
        except ConnectionResetError:
            pass
        writer.close()
        await wait_until(lambda: store_b.stats.handshake_failures == 1)
        assert max(held) <= aio_server._MAX_HELD + 256 * 1024, max(held)  # one read past it at most
        assert store_b.stats.found == 1  # the lookup was made and answered meanwhile
        reused, _, _ = await resumed(port_b, client_ctx, session)  # the server lives on
        assert reused

    run(main())


def test_a_slow_hello_still_completes_as_a_full_handshake(servers):
    """Past hello_timeout the client is not dropped: its hello goes to OpenSSL without a
    lookup and the handshake completes (full, though it offered a valid session)."""
    async def main():
        backend = MemoryStore()
        _, port_a, _, store_a = await servers.start(backend)
        _, port_b, _, store_b = await servers.start(SlowStore(backend), hello_timeout=0.1)
        client_ctx = servers.client_context()
        session = await _session_from(port_a, client_ctx)
        await store_a.flush(5)
        reused, _, _ = await resumed(port_b, client_ctx, session, split=[20], pause=0.4)
        assert not reused
        assert store_b.stats.hellos_late == 1 and store_b.stats.lookups == 0

    run(main())


def test_a_hanging_store_costs_a_full_handshake_and_never_blocks_the_loop(servers):
    async def main():
        backend = MemoryStore()
        _, port_a, _, store_a = await servers.start(backend)
        hanging = SlowStore(backend, hang=True)
        _, port_b, cache_b, store_b = await servers.start(
            hanging, store_kwargs={"lookup_timeout": 0.05, "write_timeout": 0.2,
                                   "trip_after": None})  # never paused: every call waits
        client_ctx = servers.client_context()
        sessions = [await _session_from(port_a, client_ctx) for _ in range(10)]
        await store_a.flush(5)
        with LagMeter() as meter:
            results = await asyncio.gather(*(resumed(port_b, client_ctx, s) for s in sessions))
        assert [r[0] for r in results] == [False] * 10  # all served, none resumed
        assert meter.ticks > 0 and meter.max_lag < 0.5, meter.max_lag
        stats = store_b.stats
        assert stats.lookup_timeouts == 10 and stats.handshake_failures == 0, stats
        assert hanging.cancelled >= 10  # abandoned lookups are cancelled, not left running
        await wait_until(lambda: store_b.lookups_in_flight == 0)
        await servers.close()
        assert store_b.stats.write_errors >= 10  # the writes timed out too, counted

    run(main())


def test_a_hanging_store_is_paused_and_resumptions_come_back_once_it_answers(servers):
    """Host B's store hangs: the first hellos wait lookup_timeout, then the store is paused
    and hellos get their full handshake without a lookup (nothing more is sent to the
    store). Once the store answers again, a trial lookup ends the pause and sessions made on
    host A resume on B again."""
    async def main():
        backend = MemoryStore()
        _, port_a, _, store_a = await servers.start(backend)
        hanging = SlowStore(backend, hang=True)
        _, port_b, _, store_b = await servers.start(
            hanging, store_kwargs={"lookup_timeout": 0.05, "trip_after": 5, "retry_after": 0.3})
        client_ctx = servers.client_context()
        sessions = [await _session_from(port_a, client_ctx) for _ in range(10)]
        assert await store_a.flush(5)
        first = await asyncio.gather(*(resumed(port_b, client_ctx, s) for s in sessions))
        assert [r[0] for r in first] == [False] * 10
        stats = store_b.stats
        # The hellos come together: most wait out their lookup; on a slow machine the last
        # ones may already find the store paused.
        assert stats.lookup_timeouts >= 5 and stats.store_pauses == 1, stats
        shed_first = stats.lookups_shed
        assert stats.lookup_timeouts + shed_first == 10, stats
        calls = dict(hanging.calls)
        with LagMeter() as meter:
            second = await asyncio.gather(*(resumed(port_b, client_ctx, s) for s in sessions))
        assert [r[0] for r in second] == [False] * 10  # served at once, with full handshakes
        assert hanging.calls == calls  # nothing sent to the paused store
        stats = store_b.stats
        assert stats.lookups_shed == shed_first + 10 and stats.writes_shed >= 10, stats
        assert stats.handshake_failures == 0 and meter.max_lag < 0.5

        hanging.hang = False
        await asyncio.sleep(0.35)
        reused, _, _ = await resumed(port_b, client_ctx, sessions[0])  # the trial
        assert reused
        for session in sessions[1:]:
            reused, _, _ = await resumed(port_b, client_ctx, session)
            assert reused
        stats = store_b.stats
        assert stats.found == 10 and stats.store_pauses == 1, stats
        assert stats.lookups_shed == shed_first + 10, stats

    run(main())


def test_a_client_that_reconnects_before_the_write_lands_resumes_from_the_local_copy(servers):
    async def main():
        slow = SlowStore(delay=0.0, write_delay=0.6)
        _, port, cache, store = await servers.start(slow)
        client_ctx = servers.client_context()
        session = await _session_from(port, client_ctx)
        assert len(slow.backend) == 0 and store.pending_writes >= 1  # not landed yet
        reused, _, _ = await resumed(port, client_ctx, session)
        assert reused
        assert store.stats.local_skips >= 1 and store.stats.prefetch_hits >= 1
        assert await store.flush(5)
        assert len(slow.backend) >= 1
        assert store.describe()["entries"] == 0  # landed: the store answers for it now
        reused, _, _ = await resumed(port, client_ctx, session)
        assert reused and store.stats.found >= 1

    run(main())


def test_beyond_max_lookups_hellos_get_no_lookup_and_no_client_is_dropped(servers):
    async def main():
        backend = MemoryStore()
        _, port_a, _, store_a = await servers.start(backend)
        slow = SlowStore(backend, delay=0.3)
        _, port_b, _, store_b = await servers.start(
            slow, store_kwargs={"max_lookups": 2, "lookup_timeout": 1.0})
        client_ctx = servers.client_context()
        sessions = [await _session_from(port_a, client_ctx) for _ in range(8)]
        await store_a.flush(5)
        results = await asyncio.gather(*(resumed(port_b, client_ctx, s) for s in sessions))
        resumed_count = sum(r[0] for r in results)
        stats = store_b.stats
        assert stats.lookups_skipped >= 1 and stats.lookups <= 8, stats
        assert resumed_count == stats.found  # every lookup made resumed, the others were full
        assert slow.calls["get"] == stats.lookups

    run(main())


def test_sqlite_store_shared_by_two_servers(servers, tmp_path):
    async def main():
        path = tmp_path / "sessions.db"
        _, port_a, _, store_a = await servers.start(SQLiteStore(path, timeout=2.0))
        _, port_b, _, store_b = await servers.start(SQLiteStore(path, timeout=2.0))
        assert store_b.describe()["backend_calls"] == "thread"
        client_ctx = servers.client_context()
        session = await _session_from(port_a, client_ctx)
        assert await store_a.flush(5)
        reused, _, _ = await resumed(port_b, client_ctx, session)
        assert reused and store_b.stats.found == 1
        await servers.close()
        await store_a.aclose()
        await store_b.aclose()

    run(main())


def test_single_use_sessions_resume_once_across_servers(servers):
    async def main():
        backend = MemoryStore()
        single = {"single_use": True}
        _, port_a, _, store_a = await servers.start(backend, cache_kwargs=single)
        _, port_b, _, store_b = await servers.start(SlowStore(backend), cache_kwargs=single)
        _, port_c, _, store_c = await servers.start(SlowStore(backend), cache_kwargs=single)
        client_ctx = servers.client_context()
        session = await _session_from(port_a, client_ctx)
        await store_a.flush(5)
        results = await asyncio.gather(resumed(port_b, client_ctx, session),
                                       resumed(port_c, client_ctx, session))
        assert sorted(r[0] for r in results) == [False, True]

    run(main())


def test_data_sent_with_the_client_finished_reaches_the_handler(servers):
    """TLS 1.3: the client's first request travels in the same segment as its Finished, so
    the server has application data before start_tls returns."""
    async def main():
        got = []

        async def handler(reader, writer):
            got.append(await reader.readline())
            writer.write(b"pong\n")
            await writer.drain()
            writer.close()

        _, port, _, _ = await servers.start(MemoryStore(), handler=handler)
        client_ctx = servers.client_context()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = client_ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
        while True:
            try:
                obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                writer.write(outgoing.read())
                incoming.write(await asyncio.wait_for(reader.read(65536), 5))
        obj.write(b"first line\n")
        writer.write(outgoing.read())  # Finished + request, one write
        await writer.drain()
        while True:
            try:
                if obj.read(100) == b"pong\n":
                    break
            except ssl.SSLWantReadError:
                incoming.write(await asyncio.wait_for(reader.read(65536), 5))
        writer.close()
        assert got == [b"first line\n"]

    run(main())


class RecordingProtocol(asyncio.Protocol):
    def __init__(self, events):
        self.events = events

    def connection_made(self, transport):
        self.transport = transport
        assert transport.get_extra_info("ssl_object") is not None
        self.events.append("made")

    def data_received(self, data):
        self.events.append(data)
        self.transport.write(b"pong\n")

    def eof_received(self):
        self.events.append("eof")

    def connection_lost(self, exc):
        self.events.append("lost")


class RecordingBufferedProtocol(asyncio.BufferedProtocol):
    def __init__(self, events):
        self.events = events
        self.buffer = bytearray(4)  # small: data arrives in several pieces

    def connection_made(self, transport):
        self.transport = transport
        self.events.append("made")

    def get_buffer(self, sizehint):
        return self.buffer

    def buffer_updated(self, nbytes):
        self.events.append(bytes(self.buffer[:nbytes]))
        if b"\n" in self.buffer[:nbytes]:
            self.transport.write(b"pong\n")

    def eof_received(self):
        self.events.append("eof")

    def connection_lost(self, exc):
        self.events.append("lost")


@pytest.mark.parametrize("kind", [RecordingProtocol, RecordingBufferedProtocol])
def test_create_server_calls_connection_made_first_with_the_tls_transport(servers, kind):
    async def main():
        events = []
        _, port, _, _ = await servers.start(MemoryStore(), protocol_factory=lambda: kind(events))
        client = await TLSClient.connect(port, servers.client_context())
        assert await client.request(b"ping\n") == b"pong\n"
        await client.close()
        await wait_until(lambda: "lost" in events)
        assert events[0] == "made" and events[-1] == "lost"
        assert b"".join(e for e in events if isinstance(e, bytes)) == b"ping\n"

    run(main())


def test_a_client_that_closes_before_its_hello_leaves_nothing_behind(servers):
    async def main():
        server, port, _, store = await servers.start(MemoryStore())
        for data in (b"", b"\x16\x03\x01"):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(data)
            writer.write_eof()
            assert await asyncio.wait_for(reader.read(), 5) == b""
            writer.close()
        assert store.stats.hellos == 0 and store.stats.lookups == 0

    run(main())


def test_configuration_errors(servers, certs):
    async def main():
        ctx = servers.server_context()
        with pytest.raises(ConfigurationError, match="PrefetchingStore"):
            await start_server(lambda r, w: None, "127.0.0.1", 0, ssl=ctx,
                               cache=SessionCache(MemoryStore()))
        from OpenSSL import SSL

        with pytest.raises(ConfigurationError, match="ssl.SSLContext"):
            await start_server(lambda r, w: None, "127.0.0.1", 0, ssl=SSL.Context(SSL.TLS_METHOD),
                               cache=SessionCache(PrefetchingStore(MemoryStore())))
        cache = SessionCache(PrefetchingStore(MemoryStore()))
        cache.attach(ctx, session_id_context=b"one")
        with pytest.raises(ConfigurationError, match="session_id_context"):
            await create_server(asyncio.Protocol, "127.0.0.1", 0, ssl=ctx, cache=cache,
                                session_id_context=b"two")
        server = await create_server(asyncio.Protocol, "127.0.0.1", 0, ssl=ctx, cache=cache)
        server.close()
        await server.wait_closed()
        with pytest.raises(ConfigurationError, match="hello_timeout"):
            await start_server(lambda r, w: None, "127.0.0.1", 0, ssl=servers.server_context(),
                               cache=SessionCache(PrefetchingStore(MemoryStore())), hello_timeout=0)

    run(main())


def test_a_store_bound_to_one_loop_refuses_another(servers):
    store = PrefetchingStore(MemoryStore())

    async def serve():
        cache = SessionCache(store)
        server = await start_server(lambda r, w: None, "127.0.0.1", 0,
                                    ssl=servers.server_context(), cache=cache)
        return server

    loop = asyncio.new_event_loop()
    try:
        server = loop.run_until_complete(serve())
        other = asyncio.new_event_loop()
        try:
            with pytest.raises(ConfigurationError, match="another event loop"):
                other.run_until_complete(serve())
        finally:
            other.close()
        server.close()
        loop.run_until_complete(server.wait_closed())
    finally:
        loop.close()


def test_an_asyncio_whose_start_tls_does_not_match_closes_connections_and_says_why(
        servers, monkeypatch, caplog):
    """The replay relies on start_tls putting asyncio's SSLProtocol on the transport; if a
    future asyncio does otherwise, connections are closed with a logged reason, not fed to
    an unknown protocol."""
    import types

    import sesscache.aio.server as aio

    monkeypatch.setattr(aio, "_sslproto", types.SimpleNamespace(SSLProtocol=type("Other", (), {})))

    async def main():
        _, port, _, store = await servers.start(MemoryStore(), ssl_handshake_timeout=2)
        with caplog.at_level(logging.ERROR, logger="sesscache.aio"):
            with pytest.raises((HandshakeFailed, ConnectionError)):
                await TLSClient.connect(port, servers.client_context(), timeout=5)
        assert any("not supported by sesscache.aio" in r.getMessage() for r in caplog.records)

    run(main())
