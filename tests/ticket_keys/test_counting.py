"""TicketKeys.stats counts what happened (issue 23 item 2): a ticket counts as resumed once
the handshake has resumed, not when its key name was found and it was decrypted.

Real ClientHellos from real clients, with one byte of the ticket's encrypted part
flipped (key name intact, so the ring finds the key), fed to a real server connection
that is then dropped after its ServerHello flight: the full handshakes the server
started must not count as resumptions.
"""
from __future__ import annotations

import gc

import pytest

from sesscache import MemoryStore, TicketKeys

from tests.reliability.drive import client_hello, feed_server
from tests.tls import STACKS, TLS12, TLS13


@pytest.fixture
def keys():
    made = TicketKeys(MemoryStore(), background=False)
    yield made
    made.close()


def _server(stack, version):
    return stack.server_context(version, tickets=True, internal_cache=True)


def _session(stack, server_ctx, client_ctx):
    hs = stack.handshake(server_ctx, client_ctx)
    session = hs.client_session
    stack.close(hs)
    return session


def _flipped(hello: bytes, key_name: bytes, offset: int) -> bytes:
    at = hello.find(key_name)
    assert at > 0, "the ticket (key name first) is in the ClientHello"
    out = bytearray(hello)
    out[at + 16 + 16 + offset] ^= 0x01  # past the name and the IV: the encrypted state
    return bytes(out)


def _settled(keys):
    gc.collect()  # connections dropped mid-handshake are counted when OpenSSL frees them
    return keys.stats


@pytest.mark.parametrize("stack_name", ["pyopenssl", "stdlib", "linked"])
@pytest.mark.parametrize("version", [TLS12, TLS13])
def test_tampered_tickets_dropped_after_the_server_hello_are_never_counted_resumed(
        stack_name, version, certs, keys):
    stack = STACKS[stack_name](certs)
    server, client = _server(stack, version), stack.client_context()
    keys.attach(server)
    session = _session(stack, server, client)
    key_name = bytes.fromhex(keys.keys()[1].key_id)
    hello = client_hello(stack, client, session=session)
    before = _settled(keys)
    for i in range(50):
        answer = feed_server(stack, server, _flipped(hello, key_name, 4 + i))
        assert not answer.reused and not answer.alert, "a full handshake begins"
        del answer
    stats = _settled(keys)
    assert stats.resumed - before.resumed == 0, "50 full handshakes are no resumption"
    assert stats.rejected - before.rejected == 50
    assert stats.unknown_key == 0


@pytest.mark.parametrize("stack_name", ["pyopenssl", "stdlib"])
@pytest.mark.parametrize("version", [TLS12, TLS13])
def test_a_valid_ticket_counts_once_its_handshake_resumed(stack_name, version, certs, keys):
    stack = STACKS[stack_name](certs)
    server, client = _server(stack, version), stack.client_context()
    keys.attach(server)
    session = _session(stack, server, client)
    # Dropped after the ServerHello: the server chose to resume, the handshake never
    # finished: not a resumption.
    answer = feed_server(stack, server, client_hello(stack, client, session=session))
    assert answer.reused
    del answer
    stats = _settled(keys)
    assert (stats.resumed, stats.rejected) == (0, 1)
    # A whole resumed handshake: counted once.
    hs = stack.handshake(server, client, session=session)
    assert hs.server_reused
    stack.close(hs)
    del hs
    stats = _settled(keys)
    assert (stats.resumed, stats.rejected) == (1, 1)
