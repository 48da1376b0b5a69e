"""The digest behind each connection's session id context (csrc/sni_binding.c), against
Python's own SHA-256: sesscache digests with each libssl copy's own libcrypto (EVP_Digest,
resolved per copy), so the C entry points are checked byte for byte here."""
from __future__ import annotations

import hashlib
import os

import pytest

from sesscache._binding import ffi, lib
from sesscache._binding.copies import stdlib_instance

TAG = b"sesscache/bound-session-id-context/1\0"


@pytest.fixture(autouse=True)
def _a_copy_that_digests():
    """The slot-less entry points digest with the first registered copy: register one."""
    stdlib_instance()


def _c_sha256(data: bytes) -> bytes:
    out = ffi.new("unsigned char[32]")
    lib.sc_sha256(data, len(data), out)
    return bytes(out)


@pytest.mark.parametrize("length", list(range(0, 130)) + [1000, 4096, 65537])
def test_sha256_matches_hashlib_at_every_block_boundary(length):
    data = os.urandom(length)
    assert _c_sha256(data) == hashlib.sha256(data).digest()


def _c_bound(sid: bytes, fp: bytes, name) -> bytes:
    out = ffi.new("unsigned char[32]")
    if name is None:
        lib.sc_bound_session_id_context(sid, len(sid), fp, ffi.NULL, -2, out)
    else:
        lib.sc_bound_session_id_context(sid, len(sid), fp, name, len(name), out)
    return bytes(out)


def _python_bound(sid: bytes, fp: bytes, name: bytes) -> bytes:
    kind = b"\x01" if name else b"\x00"
    return hashlib.sha256(TAG + bytes([len(sid)]) + sid + fp + kind + name.lower()).digest()


@pytest.mark.parametrize("name", [b"", b"example.com", b"EXAMPLE.com", b"a" * 255])
@pytest.mark.parametrize("sid", [b"s", b"sesscache", b"x" * 32])
def test_the_bound_context_is_the_documented_digest(sid, name):
    fp = os.urandom(16)
    first = _c_bound(sid, fp, name)
    assert first == _python_bound(sid, fp, name)
    assert _c_bound(sid, fp, name) == first  # the per-thread memo gives the same answer


def test_names_differ_by_case_only_are_one_name_and_others_are_not():
    fp = bytes(16)
    assert _c_bound(b"svc", fp, b"Example.COM") == _c_bound(b"svc", fp, b"example.com")
    assert _c_bound(b"svc", fp, b"example.com") != _c_bound(b"svc", fp, b"example.org")
    assert _c_bound(b"svc", fp, b"example.com") != _c_bound(b"svc", bytes([1]) + bytes(15), b"example.com")
    assert _c_bound(b"svc", fp, b"") != _c_bound(b"svc2", fp, b"")


def test_an_unreadable_name_gets_a_context_no_other_connection_has():
    fp = bytes(16)
    seen = {_c_bound(b"svc", fp, None) for _ in range(100)}
    assert len(seen) == 100
