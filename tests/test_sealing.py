"""Sealer: round trips, rotation, and SealError for every kind of bad blob."""
from __future__ import annotations

import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sesscache import sealing
from sesscache.errors import ConfigurationError, SealError
from sesscache.sealing import OVERHEAD, Sealer, generate_key, key_id

K1, K2, K3 = (bytes([i]) * 32 for i in (1, 2, 3))
STORE_KEY = b"\x00session-id\xff"

store_keys = st.binary(max_size=100)
blobs = st.binary(max_size=2048)


def test_round_trip_and_overhead():
    sealer = Sealer([generate_key()])
    for blob in (b"", b"\x00", b"session" * 1000):
        sealed = sealer.seal(STORE_KEY, blob)
        assert len(sealed) == len(blob) + OVERHEAD == len(blob) + sealer.overhead
        assert sealer.open(STORE_KEY, sealed) == blob
    assert OVERHEAD == 1 + 4 + 12 + 16


def test_format_version_key_id_nonce():
    sealed = Sealer([K1]).seal(STORE_KEY, b"blob")
    assert sealed[0] == 1
    assert sealed[1:5] == key_id(K1)
    assert key_id(K1) not in K1  # a hash, not a slice of the key
    again = Sealer([K1]).seal(STORE_KEY, b"blob")
    assert sealed[5:17] != again[5:17]  # fresh nonce per blob
    assert sealed != again


def test_ciphertext_does_not_contain_the_plaintext():
    blob = b"MASTER-SECRET-" * 8
    assert b"MASTER-SECRET" not in Sealer([K1]).seal(STORE_KEY, blob)


@pytest.mark.parametrize("size", [16, 24, 32])
def test_aes_key_sizes(size):
    sealer = Sealer([b"k" * size])
    assert sealer.open(b"k", sealer.seal(b"k", b"v")) == b"v"


def test_rotation_new_key_first_old_key_still_opens():
    old = Sealer([K1])
    sealed_old = old.seal(STORE_KEY, b"before rotation")
    rotated = Sealer([K2, K1])
    assert rotated.open(STORE_KEY, sealed_old) == b"before rotation"
    sealed_new = rotated.seal(STORE_KEY, b"after rotation")
    assert sealed_new[1:5] == key_id(K2)  # the first key seals
    assert Sealer([K2]).open(STORE_KEY, sealed_new) == b"after rotation"
    with pytest.raises(SealError, match="not among"):
        old.open(STORE_KEY, sealed_new)  # old deployments cannot read new blobs
    with pytest.raises(SealError, match="retired"):
        Sealer([K2]).open(STORE_KEY, sealed_old)  # K1 retired


def test_foreign_key_is_refused():
    sealed = Sealer([K3]).seal(STORE_KEY, b"theirs")
    with pytest.raises(SealError):
        Sealer([K1, K2]).open(STORE_KEY, sealed)


def test_every_key_sharing_an_id_is_tried():
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    sealer = Sealer([K1])
    sealed = sealer.seal(STORE_KEY, b"v")
    # simulate a 4-byte key id collision: another key with the same id, tried first
    sealer._by_id[key_id(K1)].insert(0, AESGCM(K2))
    assert sealer.open(STORE_KEY, sealed) == b"v"


def test_unknown_version_and_short_blobs():
    sealer = Sealer([K1])
    sealed = bytearray(sealer.seal(STORE_KEY, b"v"))
    sealed[0] = 2
    with pytest.raises(SealError, match="version 2"):
        sealer.open(STORE_KEY, bytes(sealed))
    with pytest.raises(SealError, match="shorter"):
        sealer.open(STORE_KEY, b"")
    with pytest.raises(SealError, match="shorter"):
        sealer.open(STORE_KEY, b"\x01" * (OVERHEAD - 1))
    with pytest.raises(SealError):
        sealer.open(STORE_KEY, b"plain unsealed session bytes, long enough to parse")


def test_bytes_like_sealed_blobs_open():
    sealer = Sealer([K1])
    sealed = sealer.seal(STORE_KEY, b"v")
    assert sealer.open(STORE_KEY, bytearray(sealed)) == b"v"
    assert sealer.open(bytearray(STORE_KEY), memoryview(sealed)) == b"v"


@pytest.mark.parametrize("sealed", [None, "text", 5])
def test_non_bytes_blob_is_a_type_error(sealed):
    with pytest.raises(TypeError):
        Sealer([K1]).open(STORE_KEY, sealed)


def test_seal_error_is_a_value_error():
    assert issubclass(SealError, ValueError)


@settings(max_examples=200, deadline=None)
@given(key=store_keys, blob=blobs, data=st.data())
def test_any_single_bit_flip_is_refused(key, blob, data):
    sealer = Sealer([K1, K2])
    sealed = bytearray(sealer.seal(key, blob))
    bit = data.draw(st.integers(0, len(sealed) * 8 - 1))
    sealed[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(SealError):
        sealer.open(key, bytes(sealed))


@settings(max_examples=200, deadline=None)
@given(key=store_keys, blob=blobs, data=st.data())
def test_any_truncation_is_refused(key, blob, data):
    sealer = Sealer([K1])
    sealed = sealer.seal(key, blob)
    cut = data.draw(st.integers(0, len(sealed) - 1))
    with pytest.raises(SealError):
        sealer.open(key, sealed[:cut])
    with pytest.raises(SealError):
        sealer.open(key, sealed[:cut] + sealed[cut + 1:])  # one byte dropped anywhere


@settings(max_examples=200, deadline=None)
@given(key=store_keys, blob=blobs, extra=st.binary(min_size=1, max_size=64))
def test_any_extension_is_refused(key, blob, extra):
    sealer = Sealer([K1])
    sealed = sealer.seal(key, blob)
    with pytest.raises(SealError):
        sealer.open(key, sealed + extra)


@settings(max_examples=200, deadline=None)
@given(key=store_keys, other=store_keys, blob=blobs)
def test_swap_to_another_store_key_is_refused(key, other, blob):
    sealer = Sealer([K1])
    sealed = sealer.seal(key, blob)
    if other == key:
        assert sealer.open(other, sealed) == blob
    else:
        with pytest.raises(SealError, match="another store key"):
            sealer.open(other, sealed)


@settings(max_examples=100, deadline=None)
@given(junk=st.binary(max_size=200))
def test_arbitrary_bytes_raise_only_seal_error(junk):
    with pytest.raises(SealError):
        Sealer([K1]).open(STORE_KEY, junk)


@settings(max_examples=100, deadline=None)
@given(key=store_keys, blob=blobs)
def test_round_trip_property(key, blob):
    sealer = Sealer([K2, K1])
    assert sealer.open(key, sealer.seal(key, blob)) == blob


@pytest.mark.parametrize("length", [0, 1, 8, 15, 17, 23, 25, 31, 33, 48, 64])
def test_wrong_key_length_is_a_configuration_error(length):
    with pytest.raises(ConfigurationError, match="16, 24 or 32 bytes"):
        Sealer([b"k" * length])
    with pytest.raises(ConfigurationError, match="key #1"):
        Sealer([K1, b"k" * length])


@pytest.mark.parametrize(
    "keys, match",
    [
        ([], "at least one key"),
        ((), "at least one key"),
        (K1, r"Sealer\(\[key\]\)"),
        ("a" * 32, r"Sealer\(\[key\]\)"),
        (["a" * 32], "raw bytes"),
        ([None], "raw bytes"),
        (None, "list of bytes keys"),
    ],
    ids=repr,
)
def test_bad_key_lists(keys, match):
    with pytest.raises(ConfigurationError, match=match):
        Sealer(keys)


def test_generate_key():
    a, b = generate_key(), generate_key()
    assert len(a) == 32 and a != b
    Sealer([a])


def test_repr_and_key_ids_never_show_keys():
    sealer = Sealer([K1, K2])
    text = repr(sealer) + str(sealer.key_ids)
    for key in (K1, K2):
        assert key.hex() not in text and repr(key) not in text
    assert sealer.key_ids == [key_id(K1).hex(), key_id(K2).hex()]


def test_missing_cryptography_says_how_to_install(monkeypatch):
    monkeypatch.setattr(sealing, "_aead", None)
    monkeypatch.setitem(sys.modules, "cryptography.hazmat.primitives.ciphers.aead", None)
    with pytest.raises(ConfigurationError, match=r"pip install cryptography.*sesscache\[seal\]"):
        Sealer([K1])
