"""SessionCache over every store, with real handshakes: a session made on one server
resumes on another that shares only the store (two processes, or two hosts)."""
from __future__ import annotations

from sesscache import SessionCache
from sesscache.sealing import generate_key


def test_every_store_serves_resumptions(stack, version, store_kind, store_factory):
    store = store_factory(store_kind)
    key = generate_key()
    first_server, second_server = (stack.server_context(version) for _ in range(2))
    writer = SessionCache(store, seal_keys=[key])
    reader = SessionCache(store, seal_keys=[key])
    writer.attach(first_server, session_id_context=b"fleet")
    reader.attach(second_server, session_id_context=b"fleet")
    client = stack.client_context()
    first = stack.handshake(first_server, client)
    outcomes = []
    for _ in range(3):
        hs = stack.handshake(second_server, client, first.client_session)
        outcomes.append(hs.server_reused)
        stack.close(hs)
    assert outcomes == [True, True, True], (store_kind, reader.stats)
    assert writer.stats.stores >= 1 and writer.stats.errors == 0
    assert reader.stats.errors == 0 and reader.stats.rejected == 0
    stack.close(first)
