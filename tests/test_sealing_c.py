"""Sealing in C (csrc/seal.c) against sealing in Python (sesscache.sealing): the same bytes.

Each libssl copy a process can hold seals through its own libcrypto: the stdlib's, the one
cryptography bundles (what pyOpenSSL runs on) and the test module's linked one. For each,
a value C seals opens in Python and the other way round, with every key size and through a
rotation; and every value that is not one of ours (tampered anywhere, truncated, extended,
stored under another key, sealed with another key, another format) is refused, counted,
and never written past what it may write.
"""
from __future__ import annotations

import os

import pytest

from sesscache._binding import ffi, lib
from sesscache._binding.copies import instance_for_cryptography, stdlib_instance
from sesscache.errors import SealError
from sesscache.sealing import OVERHEAD, Sealer, generate_key, key_id

STORE_KEY = b"sc1:\x09sesscache" + bytes(range(32))
ENVELOPE = b"\xe1" + os.urandom(300)  # what the cache seals: an envelope, then the DER


def _linked():
    from sesscache import testing

    return testing.linked_instance()


#: By the stack each copy serves: "pyopenssl" is cryptography's bundled OpenSSL (the id the
#: version matrix's bundled rows select, tests/conftest.py).
COPIES = {"stdlib": stdlib_instance, "pyopenssl": instance_for_cryptography, "linked": _linked}


@pytest.fixture(params=sorted(COPIES))
def slot(request):
    instance = COPIES[request.param]()
    assert lib.sc_seal_supported(instance.slot), f"{instance.describe()} cannot seal in C"
    return instance.slot


def c_seal(slot, sealer, key, plain):
    out = ffi.new("unsigned char[]", len(plain) + OVERHEAD)
    n = lib.sc_seal_blob(slot, sealer.c_ring(), key, len(key), plain, len(plain), out, len(out))
    assert n == len(plain) + OVERHEAD, "C did not seal"
    return ffi.unpack(ffi.cast("char *", out), n)


def c_open(slot, sealer, key, sealed, room=None):
    """What C opens sealed into (bytes), or None; checks it writes nothing past its output."""
    size = max(len(sealed) - OVERHEAD, 0) if room is None else room
    out = ffi.new("unsigned char[]", size + 64)
    ffi.memmove(out + size, b"\xa5" * 64, 64)
    n = lib.sc_seal_open(slot, sealer.c_ring(), key, len(key), sealed, len(sealed), out, size)
    assert ffi.unpack(ffi.cast("char *", out) + size, 64) == b"\xa5" * 64, "C wrote past the room it was given"
    if n == 0:
        assert ffi.unpack(ffi.cast("char *", out), size) == bytes(size), "C left unauthenticated bytes behind"
        return None
    return ffi.unpack(ffi.cast("char *", out), n)


@pytest.mark.parametrize("size", [16, 24, 32])
def test_c_seals_what_python_opens_and_opens_what_python_seals(slot, size):
    key = os.urandom(size)
    c_side, py_side = Sealer([key]), Sealer([key])
    sealed = c_seal(slot, c_side, STORE_KEY, ENVELOPE)
    assert sealed[0] == 1 and sealed[1:5] == key_id(key)
    assert py_side.open(STORE_KEY, sealed) == ENVELOPE
    assert c_open(slot, c_side, STORE_KEY, py_side.seal(STORE_KEY, ENVELOPE)) == ENVELOPE
    assert c_open(slot, c_side, STORE_KEY, sealed) == ENVELOPE
    assert c_side.c_counts() == {"sealed": 1, "opened": 2, "refused": 0, "errors": 0}


def test_fresh_nonces_and_no_plaintext(slot):
    sealer = Sealer([generate_key()])
    secret = b"MASTER-SECRET-" * 20
    a, b = c_seal(slot, sealer, STORE_KEY, secret), c_seal(slot, sealer, STORE_KEY, secret)
    assert a[5:17] != b[5:17] and a != b
    assert b"MASTER-SECRET" not in a


def test_rotation_the_first_key_seals_every_key_opens(slot):
    old, new = generate_key(), generate_key()
    before = Sealer([old]).seal(STORE_KEY, ENVELOPE)
    rotated = Sealer([new, old])
    assert c_open(slot, rotated, STORE_KEY, before) == ENVELOPE
    after = c_seal(slot, rotated, STORE_KEY, ENVELOPE)
    assert after[1:5] == key_id(new)
    assert Sealer([new]).open(STORE_KEY, after) == ENVELOPE
    with pytest.raises(SealError):
        Sealer([old]).open(STORE_KEY, after)  # an older deployment cannot read it: a miss there
    assert c_open(slot, Sealer([old]), STORE_KEY, after) is None
    assert c_open(slot, Sealer([new]), STORE_KEY, before) is None  # old key retired


def test_keys_sharing_an_id_are_both_tried(slot):
    """A 4-byte key id collision (1 in 2**32), made here by giving a ring the sealing key's
    id for another key, ahead of it."""
    key = generate_key()
    sealed = Sealer([key]).seal(STORE_KEY, ENVELOPE)
    other = generate_key()
    material = other + key
    ring = lib.sc_seal_new(material, [32, 32], key_id(key) * 2, 2)
    out = ffi.new("unsigned char[]", len(ENVELOPE))
    assert lib.sc_seal_open(slot, ring, STORE_KEY, len(STORE_KEY), sealed, len(sealed), out,
                            len(out)) == len(ENVELOPE)
    assert ffi.unpack(ffi.cast("char *", out), len(ENVELOPE)) == ENVELOPE
    lib.sc_seal_retire(ring)


def _refusals(sealed, key):
    yield "other-store-key", STORE_KEY[:-1] + b"\x00", sealed
    yield "truncated", key, sealed[:-1]
    yield "header-only", key, sealed[:OVERHEAD]
    yield "empty", key, b""
    yield "extended", key, sealed + b"\x00"
    yield "other-format", key, b"\x02" + sealed[1:]
    yield "unsealed-envelope", key, ENVELOPE
    for at in sorted({0, 1, 4, 5, 16, 17, len(sealed) // 2, len(sealed) - 17, len(sealed) - 1}):
        flipped = bytearray(sealed)
        flipped[at] ^= 0x01
        yield f"flipped-{at}", key, bytes(flipped)


def test_anything_not_ours_is_refused_and_counted(slot):
    sealer = Sealer([generate_key()])
    sealed = c_seal(slot, sealer, STORE_KEY, ENVELOPE)
    cases = list(_refusals(sealed, STORE_KEY))
    for name, key, value in cases:
        assert c_open(slot, sealer, key, value, room=len(ENVELOPE)) is None, name
        with pytest.raises(SealError):
            sealer.open(key, value)  # Python refuses the same
    stranger = c_open(slot, Sealer([generate_key()]), STORE_KEY, sealed)
    assert stranger is None
    counts = sealer.c_counts()
    assert counts["refused"] == len(cases) and counts["opened"] == 0 and counts["errors"] == 0


def test_a_value_larger_than_the_room_is_refused_not_written(slot):
    sealer = Sealer([generate_key()])
    sealed = c_seal(slot, sealer, STORE_KEY, ENVELOPE)
    assert c_open(slot, sealer, STORE_KEY, sealed, room=len(ENVELOPE) - 1) is None
    out = ffi.new("unsigned char[]", 16)
    assert lib.sc_seal_blob(slot, sealer.c_ring(), STORE_KEY, len(STORE_KEY), ENVELOPE,
                            len(ENVELOPE), out, 16) == 0


def test_a_retired_ring_seals_and_opens_nothing(slot):
    sealer = Sealer([generate_key()])
    sealed = c_seal(slot, sealer, STORE_KEY, ENVELOPE)
    sealer.retire_c_ring()
    out = ffi.new("unsigned char[]", len(ENVELOPE) + OVERHEAD)
    assert lib.sc_seal_blob(slot, sealer.c_ring(), STORE_KEY, len(STORE_KEY), ENVELOPE,
                            len(ENVELOPE), out, len(out)) == 0
    assert c_open(slot, sealer, STORE_KEY, sealed) is None
    assert sealer.open(STORE_KEY, sealed) == ENVELOPE  # the Python side is untouched


def test_the_format_numbers_are_envelope_h_s():
    assert (lib.SC_SEAL_VERSION, lib.SC_SEAL_KEY_ID_LEN, lib.SC_SEAL_NONCE_LEN, lib.SC_SEAL_TAG_LEN,
            lib.SC_SEAL_OVERHEAD) == (1, 4, 12, 16, OVERHEAD)
    # Sealed envelopes are never mistaken for plain ones, nor the other way round.
    assert lib.SC_ENVELOPE_VERSION != lib.SC_SEAL_VERSION
    assert lib.SC_SEAL_OVERHEAD < lib.SC_ENVELOPE_OVERHEAD
