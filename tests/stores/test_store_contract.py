"""The Store contract, checked once against every bundled store on real backends: memory,
SQLite, Redis, memcached, the same behind a ResilientStore, and a PrefetchingStore. Each
store's own file keeps only what is specific to it."""
from __future__ import annotations

import json
import math
import os
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sesscache.aio import PrefetchingStore
from sesscache.errors import ConfigurationError, StoreError, ValueTooLarge
from sesscache.stores import MAX_TTL, BaseStore, ResilientStore, Store

# Expiry tests sleep: a short ttl and a wait comfortably past it.
SHORT_TTL = 0.2
PAST_SHORT_TTL = 0.45
LONG_TTL = 300.0

#: Every store the contract runs against: the bundled ones, and the wrappers over them.
CONTRACT_KINDS = [
    pytest.param("memory"),
    pytest.param("sqlite"),
    pytest.param("shm"),
    pytest.param("redis", marks=pytest.mark.needs_redis),
    pytest.param("memcached", marks=pytest.mark.needs_memcached),
    pytest.param("resilient-memory"),
    pytest.param("resilient-redis", marks=pytest.mark.needs_redis),
    pytest.param("resilient-memcached", marks=pytest.mark.needs_memcached),
    # Called inline (a MemoryStore backend): no event loop needed for its writes.
    pytest.param("prefetching-memory"),
]


@pytest.fixture(params=CONTRACT_KINDS)
def store_kind(request):
    return request.param


@pytest.fixture
def store_factory(store_factory):
    """``make(kind)``: the plain stores of tests/server_fixtures.py, wrapped as ``kind`` says."""
    made = []

    def make(kind, **kwargs):
        wrapper, _, base = kind.rpartition("-")
        store = store_factory(base, **kwargs)
        if wrapper == "resilient":
            store = ResilientStore(store)
        elif wrapper == "prefetching":
            store = PrefetchingStore(store)
        made.append(store)
        return store

    yield make
    for store in made:
        store.close()


def _base_kind(store_kind):
    return store_kind.rpartition("-")[2]


def test_is_a_store(store):
    assert isinstance(store, Store)
    assert isinstance(store, BaseStore)


def test_describe_is_plain_data(store, store_kind):
    store.set(b"k", b"value", LONG_TTL)
    info = store.describe()
    assert info["kind"] == ("prefetching" if store_kind.startswith("prefetching") else _base_kind(store_kind))
    assert "entries" in info and "bytes" in info
    assert "error" not in info
    json.dumps(info)  # plain data, fit for a status page
    if store_kind in ("memory", "sqlite", "resilient-memory"):
        assert info["entries"] == 1
        assert info["bytes"] == len(b"k") + len(b"value")


def test_missing_key(store):
    assert store.get(b"absent") is None
    assert store.pop(b"absent") is None
    store.delete(b"absent")  # no error


def test_set_then_get(store):
    store.set(b"session-id", b"session bytes", LONG_TTL)
    assert store.get(b"session-id") == b"session bytes"
    assert store.get(b"session-id") == b"session bytes"  # get does not consume


def test_overwrite_replaces_value(store):
    store.set(b"k", b"first", LONG_TTL)
    store.set(b"k", b"second", LONG_TTL)
    assert store.get(b"k") == b"second"
    assert store.pop(b"k") == b"second"
    assert store.get(b"k") is None


def test_overwrite_replaces_ttl(store):
    store.set(b"shortened", b"v1", LONG_TTL)
    store.set(b"shortened", b"v2", SHORT_TTL)
    store.set(b"lengthened", b"v1", SHORT_TTL)
    store.set(b"lengthened", b"v2", LONG_TTL)
    time.sleep(PAST_SHORT_TTL)
    assert store.get(b"shortened") is None
    assert store.get(b"lengthened") == b"v2"


def test_delete(store):
    store.set(b"k", b"v", LONG_TTL)
    store.set(b"other", b"w", LONG_TTL)
    store.delete(b"k")
    assert store.get(b"k") is None
    assert store.pop(b"k") is None
    assert store.get(b"other") == b"w"


def test_pop_takes_the_value_once(store):
    store.set(b"k", b"v", LONG_TTL)
    assert store.pop(b"k") == b"v"
    assert store.pop(b"k") is None
    assert store.get(b"k") is None


def test_value_is_never_returned_after_its_ttl(store):
    written = time.monotonic()
    store.set(b"brief", b"v", SHORT_TTL)
    store.set(b"brief-pop", b"v", SHORT_TTL)
    store.set(b"lasting", b"w", LONG_TTL)
    got = store.get(b"brief")
    if time.monotonic() - written < SHORT_TTL / 2:  # unless a loaded machine stalled us
        assert got == b"v"
    time.sleep(PAST_SHORT_TTL)
    assert store.get(b"brief") is None
    assert store.pop(b"brief-pop") is None
    assert store.get(b"lasting") == b"w"


def test_keys_are_independent(store):
    for i in range(50):
        store.set(b"key-%d" % i, b"value-%d" % i, LONG_TTL)
    for i in range(0, 50, 2):
        store.delete(b"key-%d" % i)
    for i in range(50):
        expected = None if i % 2 == 0 else b"value-%d" % i
        assert store.get(b"key-%d" % i) == expected


@pytest.mark.parametrize(
    "key",
    [b"", b"\x00", b"\x00\x00\x00", b"a\x00b", b"\xff" * 32, b"\x00\xff" * 50, bytes(range(256))],
    ids=["empty", "nul", "nuls", "inner-nul", "ff32", "mixed100", "all-bytes"],
)
def test_binary_keys(store, key):
    store.set(key, b"value for " + key, LONG_TTL)
    assert store.get(key) == b"value for " + key
    # a key is not confused with its neighbours
    assert store.get(key + b"\x00") is None
    assert store.pop(key) == b"value for " + key
    assert store.get(key) is None


@pytest.mark.parametrize(
    "value",
    [b"", b"\x00", b"\x00" * 100, bytes(range(256)) * 4, b"\r\nEND\r\n", b"VALUE x 0 5\r\n"],
    ids=["empty", "nul", "nuls", "all-bytes", "memcached-end", "memcached-value"],
)
def test_binary_values(store, value):
    store.set(b"k", value, LONG_TTL)
    got = store.get(b"k")
    assert type(got) is bytes
    assert got == value
    assert store.pop(b"k") == value


@pytest.mark.parametrize("size", [16 * 1024, 64 * 1024, 512 * 1024])
def test_large_values(store, size):
    value = os.urandom(size)
    store.set(b"big", value, LONG_TTL)
    assert store.get(b"big") == value
    assert store.pop(b"big") == value


def test_bytes_like_input_comes_back_as_bytes(store):
    store.set(bytearray(b"k"), bytearray(b"value"), LONG_TTL)
    assert store.get(memoryview(b"k")) == b"value"
    assert type(store.get(b"k")) is bytes


@pytest.mark.parametrize("key", ["text", 42, None])
def test_non_bytes_key_is_a_type_error(store, key):
    with pytest.raises(TypeError):
        store.set(key, b"v", LONG_TTL)
    with pytest.raises(TypeError):
        store.get(key)


BAD_TTLS = [0, 0.0, -0.0, -1, -0.001, -1e18, math.nan, math.inf, -math.inf, MAX_TTL * 2, 2**64]
BAD_TTL_TYPES = ["60", None, True, b"60", [60]]


@pytest.mark.parametrize("ttl", BAD_TTLS + BAD_TTL_TYPES, ids=repr)
def test_bad_ttl_is_refused_and_changes_nothing(store, ttl):
    store.set(b"k", b"kept", LONG_TTL)
    with pytest.raises(ConfigurationError) as info:
        store.set(b"k", b"replaced", ttl)
    assert isinstance(info.value, ValueError)
    assert "ttl" in str(info.value)
    with pytest.raises(ConfigurationError):
        store.set(b"new", b"v", ttl)
    assert store.get(b"k") == b"kept"
    assert store.get(b"new") is None


@pytest.mark.parametrize("ttl", [1.5, 2, 3600, MAX_TTL, 40 * 24 * 3600])
def test_good_ttls_are_accepted(store, ttl):
    store.set(b"k", b"v", ttl)
    assert store.get(b"k") == b"v"


def test_context_manager_closes(store_kind, store_factory):
    with store_factory(store_kind) as store:
        store.set(b"k", b"v", LONG_TTL)
        assert store.get(b"k") == b"v"
    with pytest.raises(StoreError, match="closed"):
        store.get(b"k")


def test_close_is_for_good_and_idempotent(store):
    """One meaning of close() for every store: resources released for good, every later
    call a StoreError that says the store was closed, a second close() harmless."""
    store.set(b"k", b"v", LONG_TTL)
    store.close()
    store.close()
    for call, args in (("get", (b"k",)), ("set", (b"k", b"v", LONG_TTL)), ("delete", (b"k",)),
                       ("pop", (b"k",))):
        with pytest.raises(StoreError, match="closed"):
            getattr(store, call)(*args)


def test_concurrent_pops_have_one_winner(store_kind, store_factory):
    store = store_factory(store_kind)
    keys = [b"shared-%d" % i for i in range(100)]
    for key in keys:
        store.set(key, key, LONG_TTL)
    wins = []
    errors = []
    barrier = threading.Barrier(8)

    def popper():
        try:
            barrier.wait()
            for key in keys:
                value = store.pop(key)
                if value is not None:
                    assert value == key
                    wins.append(value)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=popper) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(wins) == sorted(keys)  # every session handed out exactly once


# Random operation sequences against a dict model (ttl long enough never to expire here).
_keys = st.sampled_from([b"", b"a", b"b", b"\x00", b"\x00\xff" * 20])
_ops = st.lists(
    st.one_of(
        st.tuples(st.just("set"), _keys, st.binary(max_size=64)),
        st.tuples(st.just("get"), _keys),
        st.tuples(st.just("pop"), _keys),
        st.tuples(st.just("delete"), _keys),
    ),
    max_size=30,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=_ops)
def test_behaves_like_a_dict(store_kind, store_factory, ops):
    store = store_factory(store_kind)  # fresh per example (new file or new prefix)
    model = {}
    for op in ops:
        if op[0] == "set":
            store.set(op[1], op[2], LONG_TTL)
            model[op[1]] = op[2]
        elif op[0] == "get":
            assert store.get(op[1]) == model.get(op[1])
        elif op[0] == "pop":
            assert store.pop(op[1]) == model.pop(op[1], None)
        else:
            store.delete(op[1])
            model.pop(op[1], None)
    for key, value in model.items():
        assert store.get(key) == value


def test_store_error_is_the_only_fault_class():
    # The cache catches StoreError; ValueTooLarge must be one too, and also a ValueError.
    assert issubclass(ValueTooLarge, StoreError)
    assert issubclass(ValueTooLarge, ValueError)


def _docstring_example_store():
    """The DictStore from sesscache.stores.base's docstring, executed as written."""
    import textwrap

    from sesscache.stores import base

    lines = base.__doc__.split("Writing your own store", 1)[1].split("::\n", 1)[1].splitlines()
    block = []
    for line in lines:
        if line.strip() and not line.startswith("    "):
            break
        block.append(line)
    namespace = {}
    exec(textwrap.dedent("\n".join(block)), namespace)
    return namespace["DictStore"]


def test_the_documented_ten_line_store_works():
    DictStore = _docstring_example_store()
    with DictStore() as store:
        assert isinstance(store, Store)
        store.set(b"k", b"v", LONG_TTL)
        assert store.get(b"k") == b"v"
        assert store.pop(b"k") == b"v"  # BaseStore's (non-atomic) pop
        assert store.pop(b"k") is None
        with pytest.raises(ConfigurationError):
            store.set(b"k", b"v", -1)
        store.set(b"brief", b"v", SHORT_TTL)
        time.sleep(PAST_SHORT_TTL)
        assert store.get(b"brief") is None
        assert store.describe() == {"kind": "dict", "entries": None, "bytes": None}
