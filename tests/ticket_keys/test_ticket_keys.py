"""Shared ticket keys, through real handshakes: stack (pyOpenSSL's bundled OpenSSL, the
stdlib's, sesscache's linked one) x TLS 1.2/1.3, tickets left on as OpenSSL defaults them.

Two contexts never share anything but the store: each has its own ``TicketKeys``.
"""
from __future__ import annotations

import logging
import time

import pytest

import sesscache
from sesscache import MemoryStore, TicketKeys
from sesscache.ticket_keys import FORMAT_VERSION, RING_KEY, decode_ring

from tests.tls import TLS12, TLS13


@pytest.fixture
def make_keys():
    made = []

    def make(store, **kwargs):
        kwargs.setdefault("background", False)
        keys = TicketKeys(store, **kwargs)
        made.append(keys)
        return keys

    yield make
    for keys in made:
        keys.close()


def server(stack, version):
    # Tickets on and OpenSSL's own cache mode (SERVER): the configuration users get.
    return stack.server_context(version, tickets=True, internal_cache=True)


def ticket_from(stack, server_ctx, client_ctx, session=None):
    hs = stack.handshake(server_ctx, client_ctx, session=session)
    reused, session = hs.server_reused, hs.client_session
    stack.close(hs)
    return reused, session


def test_without_shared_keys_a_ticket_resumes_only_where_it_was_issued(stack, version):
    """The problem: OpenSSL's own ticket key is random per context."""
    a, b, client = server(stack, version), server(stack, version), stack.client_context()
    _, session = ticket_from(stack, a, client)
    assert ticket_from(stack, a, client, session)[0]
    assert not ticket_from(stack, b, client, session)[0]


def test_a_ticket_from_one_context_resumes_on_another_sharing_only_the_store(stack, version, make_keys):
    store = MemoryStore()
    a, b, client = server(stack, version), server(stack, version), stack.client_context()
    keys_a, keys_b = make_keys(store), make_keys(store)
    keys_a.attach(a)
    keys_b.attach(b)
    assert keys_a.keys() == keys_b.keys()

    reused, session = ticket_from(stack, a, client)
    assert not reused
    reused, _ = ticket_from(stack, b, client, session)
    assert reused
    assert keys_a.stats.issued == (2 if version == TLS13 else 1)  # OpenSSL's TLS 1.3 default: 2
    stats = keys_b.stats
    assert (stats.resumed, stats.renewed, stats.unknown_key, stats.rejected) == (1, 0, 0, 0)
    assert keys_a.stats.rotations + keys_b.stats.rotations == 1, "the ring is made once"


def test_after_rotate_and_refresh_old_tickets_resume_renewed_and_new_ones_everywhere(stack, version, make_keys):
    store = MemoryStore()
    a, b, client = server(stack, version), server(stack, version), stack.client_context()
    keys_a, keys_b = make_keys(store), make_keys(store)
    keys_a.attach(a)
    keys_b.attach(b)
    _, old_ticket = ticket_from(stack, a, client)
    old_current = keys_a.keys()[1]
    assert old_current.role == "current"

    keys_a.rotate()
    assert keys_a.keys()[2].key_id == old_current.key_id and keys_a.keys()[2].role == "previous"
    # B has not refreshed: A's new current key is B's next one, so A's new tickets
    # already resume on B, without renewal.
    _, lagging_ticket = ticket_from(stack, a, client)
    assert ticket_from(stack, b, client, lagging_ticket)[0]
    assert (keys_b.stats.resumed, keys_b.stats.renewed) == (1, 0)

    keys_b.refresh()
    assert keys_b.keys() == keys_a.keys()
    reused, renewed_ticket = ticket_from(stack, b, client, old_ticket)
    assert reused, "a ticket under the previous key still resumes"
    assert (keys_b.stats.resumed, keys_b.stats.renewed) == (2, 1)
    # The renewal gave the client a ticket under the current key: it resumes on A as is.
    before = keys_a.stats
    assert ticket_from(stack, a, client, renewed_ticket)[0]
    after = keys_a.stats
    assert (after.resumed - before.resumed, after.renewed - before.renewed) == (1, 0)


def test_a_ticket_of_another_deployment_gets_a_full_handshake_counted(stack, version, make_keys):
    a, b, client = server(stack, version), server(stack, version), stack.client_context()
    make_keys(MemoryStore()).attach(a)
    keys_b = make_keys(MemoryStore())  # another store: another fleet
    keys_b.attach(b)
    _, session = ticket_from(stack, a, client)
    assert not ticket_from(stack, b, client, session)[0]
    stats = keys_b.stats
    assert (stats.unknown_key, stats.resumed) == (1, 0)


def test_a_ticket_under_an_expired_key_gets_a_full_handshake_counted(stack, version, make_keys):
    """Keys made 'long ago' by the clock: they expire 1.5 s from now, in real time."""
    store = MemoryStore()
    probe = make_keys(MemoryStore())
    offset = probe.key_lifetime - 1.5
    keys = make_keys(store, clock=lambda: time.time() - offset)
    a, client = server(stack, version), stack.client_context()
    keys.attach(a)
    _, session = ticket_from(stack, a, client)
    assert keys.stats.issued >= 1
    time.sleep(1.7)
    reused, _ = ticket_from(stack, a, client, session)
    assert not reused
    stats = keys.stats
    assert (stats.expired_key, stats.resumed) == (1, 0)
    # And no ticket is issued under an expired key.
    assert stats.no_key >= 1


def _tamper(stack, session, client_ctx, key_name: bytes):
    der = bytearray(stack.to_session(session).to_bytes())
    at = der.find(key_name)
    assert at > 0, "the ticket (key name first) is in the session's DER"
    der[at + 16 + 16 + 4] ^= 0x01  # a bit of the encrypted state, after name and IV
    tampered = sesscache.Session.from_bytes(bytes(der), client_ctx)
    return tampered.to_pyopenssl(client_ctx) if stack.name == "pyopenssl" else tampered


@pytest.mark.parametrize("stack_name", ["pyopenssl", "linked"])
def test_a_tampered_ticket_gets_a_full_handshake_counted(stack_name, version, certs, make_keys):
    from tests.tls import STACKS

    stack = STACKS[stack_name](certs)
    a, client = server(stack, version), stack.client_context()
    keys = make_keys(MemoryStore())
    keys.attach(a)
    _, session = ticket_from(stack, a, client)
    assert ticket_from(stack, a, client, session)[0], "untouched, it resumes"
    current = bytes.fromhex(keys.keys()[1].key_id)
    tampered = _tamper(stack, session, client, current)
    assert not ticket_from(stack, a, client, tampered)[0]
    stats = keys.stats
    assert (stats.resumed, stats.rejected) == (1, 1)


def test_a_ring_written_by_a_newer_format_is_refused_not_overwritten(stack, caplog, make_keys):
    store = MemoryStore()
    newer = b"SCTK" + bytes([FORMAT_VERSION + 1, 0]) + b'{"whatever": "v2 holds"}'
    store.set(RING_KEY, newer, 3600)
    with caplog.at_level(logging.ERROR, logger="sesscache.ticket_keys"):
        keys = make_keys(store)
    assert "format version 2" in caplog.text
    assert keys.stats.store_errors == 1 and keys.stats.local_keys == 1
    assert [k.role for k in keys.keys()] == ["local"]
    keys.refresh()
    assert store.get(RING_KEY) == newer, "never overwritten by an older reader"
    # Still serving, with the local key.
    a, client = server(stack, TLS13), stack.client_context()
    keys.attach(a)
    _, session = ticket_from(stack, a, client)
    assert ticket_from(stack, a, client, session)[0]


def test_sealed_keys_resume_with_the_same_seal_keys_and_the_store_holds_no_key(stack, make_keys):
    from sesscache.sealing import generate_key

    seal = [generate_key()]
    store = MemoryStore()
    keys_a = make_keys(store, seal_keys=seal)
    keys_b = make_keys(store, seal_keys=seal)
    blob = store.get(RING_KEY)
    assert blob[5] == 1, "sealed"
    ring = decode_ring(blob, keys_a._sealer, RING_KEY)
    for _, key in ring.keys():
        assert bytes(key.material[16:]) not in blob
        assert bytes(key.material[16:32]).hex().encode() not in blob
    ring.wipe()
    a, b, client = server(stack, TLS13), server(stack, TLS13), stack.client_context()
    keys_a.attach(a)
    keys_b.attach(b)
    _, session = ticket_from(stack, a, client)
    assert ticket_from(stack, b, client, session)[0]
    # Without the seal keys the ring is refused: a local key, so no cross resumption.
    keys_c = make_keys(store)
    assert [k.role for k in keys_c.keys()] == ["local"]


def test_one_context_keeps_one_ring(stack, make_keys):
    a = server(stack, TLS13)
    make_keys(MemoryStore()).attach(a)
    with pytest.raises(sesscache.ConfigurationError, match="already served by another TicketKeys"):
        make_keys(MemoryStore()).attach(a)


def test_lifetimes_beyond_seven_days_are_refused():
    with pytest.raises(sesscache.ConfigurationError, match="TLS 1.3 allows 7"):
        TicketKeys(MemoryStore(), rotate_every=2 * 86400, keep=3, background=False)


def test_attach_caps_the_session_timeout_to_what_the_keys_outlive(stack, make_keys):
    keys = make_keys(MemoryStore(), rotate_every=60, keep=2)
    a = server(stack, TLS12)
    keys.attach(a)
    bound = sesscache._binding.find_context.bind_context(a)
    assert bound.instance.api.SSL_CTX_get_timeout(bound.pointer) == 120


def test_detach_gives_the_context_openssls_own_key_back(stack, make_keys):
    store = MemoryStore()
    a, b, client = server(stack, TLS12), server(stack, TLS12), stack.client_context()
    keys_a, keys_b = make_keys(store), make_keys(store)
    keys_a.attach(a)
    keys_b.attach(b)
    keys_b.detach(b)
    _, session = ticket_from(stack, a, client)
    assert not ticket_from(stack, b, client, session)[0]
    _, own = ticket_from(stack, b, client)
    assert ticket_from(stack, b, client, own)[0], "OpenSSL's own key works again"


@pytest.mark.parametrize("stack_name", ["pyopenssl", "stdlib"])
def test_session_cache_and_ticket_keys_on_one_context_serve_both_kinds_of_client(stack_name, certs, make_keys):
    """TLS 1.2: a client that sends tickets resumes from the shared keys, one that does
    not (no ticket support) from the shared session cache, on another context."""
    from tests.tls import STACKS

    stack = STACKS[stack_name](certs)
    store = MemoryStore()
    a, b = server(stack, TLS12), server(stack, TLS12)
    cache = sesscache.SessionCache(store)
    keys_a, keys_b = make_keys(store), make_keys(store)
    for ctx, keys in ((a, keys_a), (b, keys_b)):
        cache.attach(ctx)
        keys.attach(ctx)
    with_tickets = stack.client_context()
    _, session = ticket_from(stack, a, with_tickets)
    assert ticket_from(stack, b, with_tickets, session)[0]
    assert keys_b.stats.resumed == 1

    without_tickets = stack.client_context()
    if stack.name == "pyopenssl":
        without_tickets.set_options(stack.SSL.OP_NO_TICKET)
    else:
        import ssl
        without_tickets.options |= ssl.OP_NO_TICKET
    _, session = ticket_from(stack, a, without_tickets)
    assert ticket_from(stack, b, without_tickets, session)[0]
    assert cache.stats.hits >= 1 and keys_b.stats.resumed == 1
    cache.close()


def _live():
    from sesscache._binding import ffi, lib

    rings, states = ffi.new("long *"), ffi.new("long *")
    lib.sc_tk_live(rings, states)
    return rings[0], states[0]


def test_a_contexts_ticket_state_and_ring_are_freed_with_the_context(stack):
    import gc

    gc.collect()
    before = _live()
    keys = TicketKeys(MemoryStore(), background=False)
    a, b, client = server(stack, TLS13), server(stack, TLS13), stack.client_context()
    keys.attach(a)
    keys.attach(b)
    _, session = ticket_from(stack, a, client)
    assert ticket_from(stack, b, client, session)[0]
    assert _live() == (before[0] + 1, before[1] + 2)
    keys.close()
    assert _live()[0] == before[0] + 1, "the contexts still hold the (emptied) ring"
    del a, b, session, client, keys
    gc.collect()
    assert _live() == before, "OpenSSL's free of each context released its state and the ring"


@pytest.mark.parametrize("store_kind", ["memory", "sqlite", pytest.param("redis", marks=pytest.mark.needs_redis),
                                        pytest.param("memcached", marks=pytest.mark.needs_memcached)])
def test_every_bundled_store_carries_the_ring(store_kind, store_factory, certs, make_keys):
    from tests.tls import STACKS

    stack = STACKS["stdlib"](certs)
    store = store_factory(store_kind)
    a, b, client = server(stack, TLS13), server(stack, TLS13), stack.client_context()
    keys_a, keys_b = make_keys(store), make_keys(store)
    keys_a.attach(a)
    keys_b.attach(b)
    _, session = ticket_from(stack, a, client)
    assert ticket_from(stack, b, client, session)[0]
    keys_a.rotate()
    keys_b.refresh()
    assert keys_a.keys() == keys_b.keys()
    assert keys_a.stats.rotations + keys_b.stats.rotations == 2


def _switch_on_sni(stack, front, back):
    if stack.name == "pyopenssl":
        front.set_tlsext_servername_callback(lambda conn: conn.set_context(back))
    else:
        def switch(sslobj, name, ctx):
            sslobj.context = back
        front.sni_callback = switch


@pytest.mark.parametrize("stack_name", ["pyopenssl", "stdlib"])
def test_after_an_sni_switch_the_keys_of_the_context_switched_to_serve(stack_name, version, certs, make_keys):
    """The usual set-up: every context an SNI callback may switch to is attached."""
    from tests.tls import STACKS

    stack = STACKS[stack_name](certs)
    store = MemoryStore()
    front, back, other = server(stack, version), server(stack, version), server(stack, version)
    keys = make_keys(store)
    for ctx in (front, back):
        keys.attach(ctx)
    make_keys(store).attach(other)
    _switch_on_sni(stack, front, back)
    client = stack.client_context()
    hs = stack.handshake(front, client, server_name="example.com")
    session = hs.client_session
    stack.close(hs)
    assert keys.stats.issued >= 1
    hs = stack.handshake(other, client, session=session, server_name="example.com")
    assert hs.server_reused
    stack.close(hs)


def test_key_bytes_never_reach_the_log(caplog, make_keys):
    import base64

    store = MemoryStore()
    with caplog.at_level(logging.DEBUG, logger="sesscache"):
        keys = make_keys(store)
        keys.rotate()
        keys.refresh()
        store.set(RING_KEY, b"SCTK" + bytes([FORMAT_VERSION + 1, 0]) + b"{}", 60)
        keys.refresh()  # refused ring: logged
        repr(keys)
    text = caplog.text + repr(keys) + repr(keys.keys())
    assert "rotated" in caplog.text and "format version" in caplog.text
    for key in keys._ring.keys() if keys._ring else []:
        secret = bytes(key[1].material[16:])
        for form in (secret.hex(), secret[:16].hex(), base64.b64encode(secret).decode()[:20]):
            assert form not in text
