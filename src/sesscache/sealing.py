"""Sealing sessions at rest with AES-GCM.

A serialized session holds the TLS master secret (or resumption secret): anyone who reads it
from Redis, memcached or an SQLite file can decrypt the recorded traffic of every connection
that resumed it. A :class:`Sealer` encrypts and authenticates each value before it reaches a
store, and binds it to its store key so a blob copied under another key does not open.

Format of a sealed blob (``Sealer.overhead`` = 33 bytes added)::

    offset  size  field
    0       1     version, 0x01
    1       4     key id: SHA-256(b"sesscache/seal/key-id/v1\\x00" + key)[:4]
    5       12    nonce, random (os.urandom) per blob
    17      n+16  AES-GCM ciphertext of the session, then the 16-byte tag

The associated data is ``version || key id || store key`` (the first two have fixed sizes, so
the concatenation is unambiguous). The key id is a hash of the key, never the key; it only
picks which keys to try, and two keys sharing an id (1 in 2**32) are both tried.

Rotation: ``Sealer([new, old])`` seals with ``new`` and opens blobs sealed with either. Drop
``old`` once the longest session lifetime has passed since ``new`` was put first. With random
96-bit nonces, seal fewer than 2**32 blobs per key (NIST SP 800-38D); rotating daily keeps far
below that.

The same format is written and read in C (``csrc/seal.c``, its numbers in
``csrc/envelope.h``, which this module reads from the compiled module): a cache whose store
hands C its tables keeps the C fast path when sealed, and hands C the keys through
:meth:`Sealer.c_ring`. Either side opens what the other sealed.

Needs ``cryptography`` (``pip install cryptography`` or ``pip install 'sesscache[seal]'``),
imported when the first Sealer is built.
"""
from __future__ import annotations

import hashlib
import os
import threading
import weakref
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ._binding import ffi, lib
from .errors import ConfigurationError, SealError

__all__ = ["Sealer", "generate_key", "OVERHEAD"]

# The format's numbers, defined once in csrc/envelope.h (the C side seals the same bytes).
VERSION = lib.SC_SEAL_VERSION
_KEY_ID_LABEL = b"sesscache/seal/key-id/v1\x00"
_KEY_ID_SIZE = lib.SC_SEAL_KEY_ID_LEN
_NONCE_SIZE = lib.SC_SEAL_NONCE_LEN
_TAG_SIZE = lib.SC_SEAL_TAG_LEN
_HEADER_SIZE = 1 + _KEY_ID_SIZE
_KEY_SIZES = (16, 24, 32)

#: Bytes a sealed blob adds to the session: version, key id, nonce and tag.
OVERHEAD = _HEADER_SIZE + _NONCE_SIZE + _TAG_SIZE
assert (OVERHEAD, _HEADER_SIZE, _HEADER_SIZE + _NONCE_SIZE) == (
    lib.SC_SEAL_OVERHEAD, lib.SC_SEAL_NONCE_AT, lib.SC_SEAL_HEADER_SIZE)
_C_COUNTERS = {"sealed": lib.SC_SEAL_SEALED, "opened": lib.SC_SEAL_OPENED,
               "refused": lib.SC_SEAL_REFUSED, "errors": lib.SC_SEAL_ERRORS}

_aead: Any = None  # (AESGCM, InvalidTag) once cryptography is imported


def _load_aead() -> Any:
    global _aead
    if _aead is None:
        try:
            from cryptography.exceptions import InvalidTag
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM
        except ImportError as exc:
            raise ConfigurationError(
                "sealing needs the cryptography package: pip install cryptography "
                "(or pip install 'sesscache[seal]')"
            ) from exc
        _aead = (AESGCM, InvalidTag)
    return _aead


def generate_key() -> bytes:
    """A new random 32-byte (AES-256) sealing key. Keep it out of the store it protects."""
    return os.urandom(32)


def key_id(key: bytes) -> bytes:
    """The 4-byte id written in blobs sealed with ``key``: a hash, not the key."""
    return hashlib.sha256(_KEY_ID_LABEL + bytes(key)).digest()[:_KEY_ID_SIZE]


class Sealer:
    """Seals and opens store values with AES-GCM; the first key seals, every key opens.

    Args:
        keys: one or more 16-, 24- or 32-byte AES keys, newest first.

    Raises:
        ConfigurationError: no keys, a key that is not bytes, or a key of another length.
    """

    overhead = OVERHEAD

    def __init__(self, keys: Sequence[bytes]) -> None:
        if isinstance(keys, (bytes, bytearray, memoryview, str)):
            raise ConfigurationError(
                "keys is a list of keys, newest first: write Sealer([key]), not Sealer(key)"
            )
        try:
            keys = list(keys)
        except TypeError:
            raise ConfigurationError(
                f"keys must be a list of bytes keys, got {type(keys).__name__}"
            ) from None
        if not keys:
            raise ConfigurationError(
                "Sealer needs at least one key: generate one with sesscache.sealing.generate_key()"
            )
        AESGCM, self._InvalidTag = _load_aead()
        self._by_id: Dict[bytes, List[Any]] = {}
        ids: List[bytes] = []
        for i, key in enumerate(keys):
            if not isinstance(key, (bytes, bytearray, memoryview)):
                raise ConfigurationError(
                    f"key #{i} is a {type(key).__name__}; keys are raw bytes "
                    "(decode base64 or hex key files first)"
                )
            key = bytes(key)
            if len(key) not in _KEY_SIZES:
                raise ConfigurationError(
                    f"key #{i} is {len(key)} bytes; AES-GCM keys are 16, 24 or 32 bytes "
                    "(generate_key() makes 32)"
                )
            kid = key_id(key)
            ids.append(kid)
            self._by_id.setdefault(kid, []).append(AESGCM(key))
        self._seal_header = bytes((VERSION,)) + ids[0]
        self._seal_aead = self._by_id[ids[0]][0]
        self._ids: Tuple[bytes, ...] = tuple(ids)
        # The C ring (c_ring) is made from these on first use, then they are dropped.
        self._pending_c_keys: Optional[List[bytes]] = [bytes(key) for key in keys]
        self._c_ring: Any = None
        self._c_lock = threading.Lock()

    @property
    def key_ids(self) -> List[str]:
        """Hex key ids, sealing key first: safe to log, to tell which keys are loaded."""
        return [kid.hex() for kid in self._ids]

    def seal(self, key: bytes, blob: bytes) -> bytes:
        """Encrypt and authenticate ``blob`` for store key ``key``. Adds :attr:`overhead` bytes."""
        header = self._seal_header
        nonce = os.urandom(_NONCE_SIZE)
        return header + nonce + self._seal_aead.encrypt(nonce, blob, header + key)

    def open(self, key: bytes, sealed: bytes) -> bytes:
        """Return the blob sealed for store key ``key``.

        Raises:
            SealError: for any bytes that are not a blob sealed by one of our keys for ``key``
                (tampered, truncated, extended, stored under another key, sealed with a
                retired or foreign key, or not sealed at all). Nothing else is raised for
                bytes input; a non-bytes argument is a TypeError.
        """
        if not isinstance(sealed, bytes):
            if not isinstance(sealed, (bytearray, memoryview)):
                raise TypeError(f"sealed blobs are bytes, got {type(sealed).__name__}")
            sealed = bytes(sealed)
        if not isinstance(key, (bytes, bytearray, memoryview)):
            raise TypeError(f"store keys are bytes, got {type(key).__name__}")
        if len(sealed) < OVERHEAD:
            raise SealError(
                f"sealed blob is {len(sealed)} bytes, shorter than the {OVERHEAD}-byte minimum: "
                "truncated, or stored without sealing"
            )
        if sealed[0] != VERSION:
            raise SealError(
                f"sealed blob has format version {sealed[0]}, this sesscache reads {VERSION}: "
                "written by another version or stored without sealing"
            )
        header = sealed[:_HEADER_SIZE]
        candidates = self._by_id.get(header[1:])
        if not candidates:
            raise SealError(
                f"blob was sealed with key id {header[1:].hex()}, which is not among this "
                f"Sealer's keys {self.key_ids}: a retired key, or another deployment's key"
            )
        nonce = sealed[_HEADER_SIZE:_HEADER_SIZE + _NONCE_SIZE]
        ciphertext = sealed[_HEADER_SIZE + _NONCE_SIZE:]
        aad = header + bytes(key)
        for aead in candidates:
            try:
                return aead.decrypt(nonce, ciphertext, aad)
            except self._InvalidTag:
                continue
            except (ValueError, OverflowError) as exc:  # pragma: no cover - defensive
                raise SealError(f"sealed blob could not be opened: {exc}") from None
        raise SealError(
            "sealed blob failed authentication: it was modified, truncated or extended, or it "
            "was sealed for another store key"
        )

    # --- the hand-over to C (csrc/seal.c) ------------------------------------------------

    def c_ring(self) -> Any:
        """These keys as a C ring (``sc_seal *``) for the cache's C fast path, which seals
        and opens with it in the context's own libcrypto; made once, None when C cannot
        hold them (more than ``SC_SEAL_MAX_KEYS`` keys, or no memory: the Python path then
        seals). The ring's keys are zeroed by :meth:`retire_c_ring`, or when this Sealer is
        collected; the ring itself is never freed (a context may still hold it)."""
        with self._c_lock:
            if self._c_ring is None and self._pending_c_keys is not None:
                keys, self._pending_c_keys = self._pending_c_keys, None
                if len(keys) > lib.SC_SEAL_MAX_KEYS:
                    return None
                material = b"".join(keys)
                ring = lib.sc_seal_new(material, [len(key) for key in keys], b"".join(self._ids), len(keys))
                if ring == ffi.NULL:
                    return None
                self._c_ring = ring
                weakref.finalize(self, lib.sc_seal_retire, ring)
            return self._c_ring

    def retire_c_ring(self) -> None:
        """Zero the C ring's keys (when it was made): nothing seals or opens in C with them
        afterwards; a handshake in flight refuses and Python does the work."""
        with self._c_lock:
            self._pending_c_keys = None
            if self._c_ring is not None:
                lib.sc_seal_retire(self._c_ring)

    def c_counts(self) -> Dict[str, int]:
        """What C did with the ring: values ``sealed`` and ``opened``, ``refused`` (another
        format, an unknown key, failed authentication: handed to Python, which counts and
        logs them), ``errors`` (a libcrypto without the functions, a failed call)."""
        if self._c_ring is None:
            return dict.fromkeys(_C_COUNTERS, 0)
        out = ffi.new("long long[]", lib.SC_SEAL_COUNTERS)
        lib.sc_seal_counts_of(self._c_ring, out, lib.SC_SEAL_COUNTERS)
        return {name: int(out[index]) for name, index in _C_COUNTERS.items()}

    def __repr__(self) -> str:
        return f"<Sealer key_ids={self.key_ids}>"
