"""Ticket-key rings poisoned by hand (issue 23 item 1): a malformed ring never raises out
of ``TicketKeys(store)``, ``refresh()`` or ``python -m sesscache keys show``; the process
serves from a local key (logged, counted) and rejoins the fleet's ring once the store
holds a readable one.

Real handshakes on pyOpenSSL and the stdlib; SQLite rows written with the sqlite3 module.
"""
from __future__ import annotations

import json
import logging
import sqlite3
import subprocess
import sys

import pytest

from sesscache import MemoryStore, SQLiteStore, TicketKeys
from sesscache.stores.base import BaseStore
from sesscache.ticket_keys import RING_KEY, RingFormatError, decode_ring, read_ring

from tests.tls import STACKS, TLS12, TLS13


def _ring_json(**changes):
    """A well-formed unsealed ring's JSON object, with ``changes`` applied (keys.N.field for
    the N-th key)."""
    store = MemoryStore()
    TicketKeys(store, background=False).close()
    data = json.loads(store.get(RING_KEY)[6:])
    for name, value in changes.items():
        if name.startswith("keys."):
            _, index, field = name.split(".")
            data["keys"][int(index)][field] = value
        else:
            data[name] = value
    return data


def _plain(body: bytes) -> bytes:
    return b"SCTK\x01\x00" + body


def _dumps(data) -> bytes:
    return json.dumps(data).encode()


BAD_RINGS = {
    "generation-1e999": lambda: _dumps(_ring_json()).replace(b'"generation": 1', b'"generation": 1e999'),
    "keep-1e999": lambda: _dumps(_ring_json()).replace(b'"keep": 3', b'"keep": 1e999'),
    "not_after-1e19": lambda: _dumps(_ring_json(**{"keys.1.not_after": 1e19})),
    "not_after-Infinity": lambda: _dumps(_ring_json(**{"keys.1.not_after": float("inf")})),
    "created-NaN": lambda: _dumps(_ring_json(**{"keys.0.created": float("nan")})),
    "next_rotation-negative": lambda: _dumps(_ring_json(next_rotation=-5)),
    "nested-100000": lambda: b"[" * 100_000 + b"]" * 100_000,
    "nested-in-a-key": lambda: _dumps(_ring_json(**{"keys.0.role": "R"})).replace(
        b'"R"', b"[" * 100_000 + b"]" * 100_000),
    "keys-an-object": lambda: _dumps(_ring_json(keys={"a": 1})),
    "keys-100000": lambda: _dumps(_ring_json(keys=[{"x": 1}] * 100_000)),
    "key-not-an-object": lambda: _dumps(_ring_json(keys=[7])),
    "material-a-number": lambda: _dumps(_ring_json(**{"keys.0.material": 12})),
    "generation-a-string": lambda: _dumps(_ring_json(generation="1")),
    "generation-true": lambda: _dumps(_ring_json(generation=True)),
    "a-json-list": lambda: b"[1, 2, 3]",
    "not-utf8": lambda: b"\xff\xfe{}",
}


def _bad(name: str) -> bytes:
    return _plain(BAD_RINGS[name]())


def _resumes(stack, server_ctx):
    client = stack.client_context()
    hs = stack.handshake(server_ctx, client)
    session = hs.client_session
    stack.close(hs)
    hs = stack.handshake(server_ctx, client, session=session)
    reused = hs.server_reused
    stack.close(hs)
    return reused


@pytest.mark.parametrize("name", sorted(BAD_RINGS))
def test_the_decoder_refuses_every_malformed_ring_with_ring_format_error(name):
    with pytest.raises(RingFormatError):
        decode_ring(_bad(name), None, RING_KEY)


@pytest.mark.parametrize("value", [17, 1.5, "SCTK text", ["a"], object()])
def test_a_store_value_that_is_not_bytes_is_refused_with_ring_format_error(value):
    with pytest.raises(RingFormatError, match="not bytes"):
        decode_ring(value, None, RING_KEY)


@pytest.mark.parametrize("stack_name", ["pyopenssl", "stdlib"])
@pytest.mark.parametrize("name", sorted(BAD_RINGS))
def test_a_malformed_ring_never_raises_a_local_key_serves_and_the_fleet_ring_comes_back(
        name, stack_name, certs, caplog):
    stack = STACKS[stack_name](certs)
    store = MemoryStore()
    bad = _bad(name)
    store.set(RING_KEY, bad, 3600)
    with caplog.at_level(logging.ERROR, logger="sesscache.ticket_keys"):
        keys = TicketKeys(store, background=False)
    try:
        assert "malformed" in caplog.text and "cannot be used; using a local random key" in caplog.text
        assert [k.role for k in keys.keys()] == ["local"]
        assert (keys.stats.store_errors, keys.stats.local_keys) == (1, 1)
        version = TLS13 if "not_after" in name else TLS12
        ctx = stack.server_context(version, tickets=True, internal_cache=True)
        keys.attach(ctx)
        assert _resumes(stack, ctx), "tickets resume under the local key"
        keys.refresh()  # never raises either
        assert keys.stats.store_errors == 2 and keys.stats.local_keys == 1, "one local key is enough"
        assert store.get(RING_KEY) == bad, "a ring this process cannot read is never overwritten"
        # The operator clears the entry: the next refresh makes and adopts the fleet's ring.
        store.delete(RING_KEY)
        keys.refresh()
        peer = TicketKeys(store, background=False)
        assert keys.keys()[1].role == "current" and keys.keys()[1] == peer.keys()[1]
        other = stack.server_context(version, tickets=True, internal_cache=True)
        peer.attach(other)
        client = stack.client_context()
        hs = stack.handshake(ctx, client)
        session = hs.client_session
        stack.close(hs)
        hs = stack.handshake(other, client, session=session)
        assert hs.server_reused, "back in the fleet: a ticket from one resumes on the other"
        stack.close(hs)
        peer.close()
    finally:
        keys.close()


def _sqlite_with_value(path, value):
    store = SQLiteStore(str(path))
    store.set(b"probe", b"x", 60)  # makes the table
    conn = sqlite3.connect(str(path))
    with conn:
        conn.execute("INSERT OR REPLACE INTO sesscache (key, value, expires) VALUES (?, ?, ?)",
                     (RING_KEY, value, 4e9))
    conn.close()
    return store


@pytest.mark.parametrize("value", [42, 4.5, "SCTK\x01\x00{}"], ids=["integer", "real", "text"])
def test_a_sqlite_row_of_another_type_never_raises(stack, tmp_path, value):
    store = _sqlite_with_value(tmp_path / "keys.db", value)
    keys = TicketKeys(store, background=False)
    try:
        assert [k.role for k in keys.keys()] == ["local"]
        keys.refresh()
        ctx = stack.server_context(TLS13, tickets=True, internal_cache=True)
        keys.attach(ctx)
        assert _resumes(stack, ctx)
        with pytest.raises(RingFormatError):
            read_ring(store)
    finally:
        keys.close()
        store.close()


class _CasRaises(BaseStore):
    """A custom store whose compare_and_set is broken (raises RuntimeError)."""

    def __init__(self):
        self.inner = MemoryStore()

    def get(self, key):
        return self.inner.get(key)

    def set(self, key, value, ttl):
        self.inner.set(key, value, ttl)

    def delete(self, key):
        self.inner.delete(key)

    def compare_and_set(self, key, expected, value, ttl):
        raise RuntimeError("compare_and_set is broken")


def test_a_store_whose_compare_and_set_raises_never_raises_out_of_the_constructor(stack, caplog):
    store = _CasRaises()
    with caplog.at_level(logging.ERROR, logger="sesscache.ticket_keys"):
        keys = TicketKeys(store, background=False)
    try:
        assert "RuntimeError" in caplog.text and "compare_and_set is broken" in caplog.text
        assert [k.role for k in keys.keys()] == ["local"] and keys.stats.store_errors == 1
        keys.refresh()
        assert keys.stats.store_errors == 2
        ctx = stack.server_context(TLS13, tickets=True, internal_cache=True)
        keys.attach(ctx)
        assert _resumes(stack, ctx)
        from sesscache.errors import StoreError

        with pytest.raises(StoreError, match="RuntimeError: compare_and_set is broken"):
            keys.rotate()  # an explicit rotation says it failed, as a StoreError
    finally:
        keys.close()


@pytest.mark.parametrize("name", ["generation-1e999", "not_after-Infinity", "nested-100000", "integer",
                                  "next-format"])
def test_keys_show_prints_a_clear_error_and_exits_non_zero(tmp_path, name):
    path = tmp_path / "keys.db"
    if name == "integer":
        _sqlite_with_value(path, 42).close()
    elif name == "next-format":
        store = SQLiteStore(str(path))
        store.set(RING_KEY, b"SCTK\x02\x00{}", 3600)
        store.close()
    else:
        store = SQLiteStore(str(path))
        store.set(RING_KEY, _bad(name), 3600)
        store.close()
    for action in ("show", "rotate"):
        done = subprocess.run([sys.executable, "-m", "sesscache", "keys", action, "--store", f"sqlite:{path}"],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode != 0, done.stdout
        assert "Traceback" not in done.stderr, done.stderr
        assert "ticket key ring" in done.stderr, done.stderr
        assert any(why in done.stderr for why in ("malformed", "not bytes", "format version 2")), done.stderr
