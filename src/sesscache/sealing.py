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

Needs ``cryptography`` (``pip install cryptography`` or ``pip install 'sesscache[seal]'``),
imported when the first Sealer is built.
"""
from __future__ import annotations

import hashlib
import os
from typing import Any, Dict, List, Sequence, Tuple

from .errors import ConfigurationError, SealError

__all__ = ["Sealer", "generate_key", "OVERHEAD"]

VERSION = 1
_KEY_ID_LABEL = b"sesscache/seal/key-id/v1\x00"
_KEY_ID_SIZE = 4
_NONCE_SIZE = 12
_TAG_SIZE = 16
_HEADER_SIZE = 1 + _KEY_ID_SIZE
_KEY_SIZES = (16, 24, 32)

#: Bytes a sealed blob adds to the session: version, key id, nonce and tag.
OVERHEAD = _HEADER_SIZE + _NONCE_SIZE + _TAG_SIZE

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

    def __repr__(self) -> str:
        return f"<Sealer key_ids={self.key_ids}>"
