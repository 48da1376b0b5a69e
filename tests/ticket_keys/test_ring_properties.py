"""Property-based tests of the ticket-key ring decoder (issue 23): whatever bytes a store
holds, ``decode_ring`` returns a ring within its bounds or raises RingFormatError, nothing
else; what ``encode_ring`` writes reads back the same; ``TicketKeys(store)`` over any of it
never raises and always has a key to encrypt with.
"""
from __future__ import annotations

import base64
import json
import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sesscache import MemoryStore, TicketKeys
from sesscache.sealing import Sealer, generate_key
from sesscache.ticket_keys import (
    _MAX_RING_KEYS,
    _MAX_TIME,
    RING_KEY,
    RingFormatError,
    _Key,
    _Ring,
    decode_ring,
    encode_ring,
)

HEADER = b"SCTK\x01\x00"
SEALER = Sealer([generate_key()])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=20,
)
times = st.floats(min_value=0, max_value=_MAX_TIME, allow_nan=False)
materials = st.binary(min_size=80, max_size=80)


def _check(ring):
    """A decoded ring is within the bounds the rest of the code relies on."""
    for _, key in ring.keys():
        assert len(key.material) == 80
        for value in (key.created, key.not_after):
            assert math.isfinite(value) and 0 <= value <= _MAX_TIME
            int(value)  # fits C's long long
    assert math.isfinite(ring.next_rotation) and 0 <= ring.next_rotation <= _MAX_TIME
    assert len(ring.keys()) <= _MAX_RING_KEYS + 2


def _decodes_or_refuses(blob, sealer=None):
    try:
        ring = decode_ring(blob, sealer, RING_KEY)
    except RingFormatError:
        return None
    _check(ring)
    return ring


@settings(max_examples=500, deadline=None)
@given(blob=st.binary(max_size=512))
def test_any_bytes(blob):
    _decodes_or_refuses(blob)
    _decodes_or_refuses(HEADER + blob)
    _decodes_or_refuses(blob, SEALER)


@settings(max_examples=500, deadline=None)
@given(value=json_values)
def test_any_json_body(value):
    body = json.dumps(value, allow_nan=True).encode()
    _decodes_or_refuses(HEADER + body)


def _valid_ring_json(draw):
    keys = draw(st.lists(st.tuples(st.sampled_from(["current", "next", "previous"]), times, times, materials),
                         max_size=6))
    return {
        "generation": draw(st.integers(0, 2 ** 53)),
        "next_rotation": draw(times),
        "rotate_every": draw(times),
        "keep": draw(st.integers(0, 2 ** 53)),
        "keys": [{"role": r, "created": c, "not_after": n, "material": base64.b64encode(m).decode()}
                 for r, c, n, m in keys],
    }


@st.composite
def rings_with_one_field_replaced(draw):
    data = _valid_ring_json(draw)
    path = draw(st.sampled_from(["generation", "next_rotation", "rotate_every", "keep", "keys", "key"]))
    value = draw(json_values)
    if path == "key" and data["keys"]:
        entry = draw(st.sampled_from(data["keys"]))
        entry[draw(st.sampled_from(["role", "created", "not_after", "material"]))] = value
    elif path != "key":
        data[path] = value
    return data


@settings(max_examples=500, deadline=None)
@given(data=rings_with_one_field_replaced())
def test_a_valid_ring_with_any_one_field_replaced(data):
    _decodes_or_refuses(HEADER + json.dumps(data, allow_nan=True).encode())


@st.composite
def rings(draw):
    def key():
        return _Key(bytearray(draw(materials)), draw(times), draw(times))

    return _Ring(draw(st.integers(0, 2 ** 53)), draw(times), key() if draw(st.booleans()) else None,
                 key() if draw(st.booleans()) else None, [key() for _ in range(draw(st.integers(0, 3)))],
                 rotate_every=draw(times), keep=draw(st.integers(0, 100)))


@settings(max_examples=200, deadline=None)
@given(ring=rings(), sealed=st.booleans())
def test_what_encode_writes_decodes_the_same(ring, sealed):
    sealer = SEALER if sealed else None
    back = decode_ring(encode_ring(ring, sealer, RING_KEY), sealer, RING_KEY)
    assert [(r, bytes(k.material), k.created, k.not_after) for r, k in back.keys()] == \
        [(r, bytes(k.material), k.created, k.not_after) for r, k in ring.keys()]
    assert (back.generation, back.next_rotation, back.rotate_every, back.keep) == \
        (ring.generation, ring.next_rotation, ring.rotate_every, ring.keep)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=st.one_of(st.binary(max_size=256).map(lambda b: HEADER + b),
                       json_values.map(lambda v: HEADER + json.dumps(v, allow_nan=True).encode()),
                       rings_with_one_field_replaced().map(
                           lambda d: HEADER + json.dumps(d, allow_nan=True).encode()),
                       st.integers(), st.text(max_size=20)))
def test_ticket_keys_over_any_stored_ring_never_raises_and_can_encrypt(value):
    store = MemoryStore()
    store.set(RING_KEY, value, 3600) if isinstance(value, bytes) else None
    if not isinstance(value, bytes):
        store.get = lambda key, _value=value: _value  # a custom store returning another type
    keys = TicketKeys(store, background=False)
    try:
        keys.refresh()
        served = keys.keys()
        assert served, "a key to encrypt with, always"
        assert served[0].role in ("local", "next", "current")
    finally:
        keys.close()
