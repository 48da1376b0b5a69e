"""Rewriting a real ClientHello, to show a server what no well-behaved client sends.

The hello comes from a real client (so everything else in it is what OpenSSL would send);
only the field under test is changed and every enclosing length fixed up. The server side
is then driven with those bytes alone: what it answers (a ServerHello that resumes, a full
handshake, an alert) and what the session callbacks saw are the result.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

EXT_SERVER_NAME = 0
EXT_PRE_SHARED_KEY = 41


@dataclass
class Hello:
    """A ClientHello taken apart: enough to change one field and put it back together."""

    record_version: bytes
    legacy_version: bytes
    random: bytes
    session_id: bytes
    cipher_suites: bytes
    compression: bytes
    extensions: List[Tuple[int, bytes]] = field(default_factory=list)
    trailing: bytes = b""  # bytes after the hello's record (none from a fresh client)

    @classmethod
    def parse(cls, data: bytes) -> "Hello":
        if data[0] != 22:
            raise ValueError("not a handshake record")
        length = struct.unpack(">H", data[3:5])[0]
        record, trailing = data[5:5 + length], data[5 + length:]
        if record[0] != 1:
            raise ValueError("not a ClientHello")
        body_length = int.from_bytes(record[1:4], "big")
        body = record[4:4 + body_length]
        if len(body) != body_length:
            raise ValueError("the hello spans several records")
        pos = 0
        legacy_version = body[pos:pos + 2]
        pos += 2
        random = body[pos:pos + 32]
        pos += 32
        sid_len = body[pos]
        session_id = body[pos + 1:pos + 1 + sid_len]
        pos += 1 + sid_len
        cs_len = struct.unpack(">H", body[pos:pos + 2])[0]
        cipher_suites = body[pos + 2:pos + 2 + cs_len]
        pos += 2 + cs_len
        comp_len = body[pos]
        compression = body[pos + 1:pos + 1 + comp_len]
        pos += 1 + comp_len
        ext_total = struct.unpack(">H", body[pos:pos + 2])[0]
        pos += 2
        end = pos + ext_total
        extensions = []
        while pos < end:
            ext_type, ext_len = struct.unpack(">HH", body[pos:pos + 4])
            extensions.append((ext_type, bytes(body[pos + 4:pos + 4 + ext_len])))
            pos += 4 + ext_len
        return cls(bytes(data[1:3]), bytes(legacy_version), bytes(random), bytes(session_id),
                   bytes(cipher_suites), bytes(compression), extensions, bytes(trailing))

    def extension(self, ext_type: int) -> Optional[bytes]:
        for kind, data in self.extensions:
            if kind == ext_type:
                return data
        return None

    def replace_extension(self, ext_type: int, data: Optional[bytes]) -> None:
        """Replace (or with None remove) one extension, keeping its place in the list."""
        out = []
        for kind, old in self.extensions:
            if kind == ext_type:
                if data is not None:
                    out.append((kind, data))
            else:
                out.append((kind, old))
        self.extensions = out

    def to_bytes(self) -> bytes:
        exts = b"".join(struct.pack(">HH", kind, len(data)) + data for kind, data in self.extensions)
        body = (self.legacy_version + self.random + bytes((len(self.session_id),)) + self.session_id
                + struct.pack(">H", len(self.cipher_suites)) + self.cipher_suites
                + bytes((len(self.compression),)) + self.compression
                + struct.pack(">H", len(exts)) + exts)
        message = b"\x01" + len(body).to_bytes(3, "big") + body
        return b"\x16" + self.record_version + struct.pack(">H", len(message)) + message + self.trailing


def server_name_extension(name: bytes) -> bytes:
    """A server_name extension holding one host_name entry of any length (even 0 or > 255)."""
    entry = b"\x00" + struct.pack(">H", len(name)) + name
    return struct.pack(">H", len(entry)) + entry


def psk_identities(ext: bytes) -> List[bytes]:
    count = struct.unpack(">H", ext[:2])[0]
    pos, end, out = 2, 2 + count, []
    while pos < end:
        n = struct.unpack(">H", ext[pos:pos + 2])[0]
        out.append(ext[pos + 2:pos + 2 + n])
        pos += 2 + n + 4
    return out


def replace_psk_identity(ext: bytes, identity: bytes) -> bytes:
    """A pre_shared_key extension with its one identity replaced (the binder is kept: it
    is checked only after the session lookup this is meant to reach)."""
    count = struct.unpack(">H", ext[:2])[0]
    first_len = struct.unpack(">H", ext[2:4])[0]
    age = ext[4 + first_len:8 + first_len]
    binders = ext[2 + count:]
    ids = struct.pack(">H", len(identity)) + identity + age
    return struct.pack(">H", len(ids)) + ids + binders


# --- TLS 1.3: a changed hello needs a new PSK binder -----------------------------------------

def _expand_label(secret: bytes, label: bytes, context: bytes, length: int, digest) -> bytes:
    import hmac

    info = struct.pack(">H", length) + bytes((len(b"tls13 " + label),)) + b"tls13 " + label \
        + bytes((len(context),)) + context
    out, block, counter = b"", b"", 1
    while len(out) < length:
        block = hmac.new(secret, block + info + bytes((counter,)), digest).digest()
        out += block
        counter += 1
    return out[:length]


def rebind(hello_bytes: bytes, psk: bytes, digest) -> bytes:
    """Recompute the (single) resumption binder of a TLS 1.3 hello whose other fields were
    changed: what a client holding the session, and free to send any hello, would do."""
    import hashlib
    import hmac

    size = hashlib.new(digest).digest_size
    early = hmac.new(b"\x00" * size, psk, digest).digest()
    binder_key = _expand_label(early, b"res binder", hashlib.new(digest).digest(), size, digest)
    finished_key = _expand_label(binder_key, b"finished", b"", size, digest)
    message = hello_bytes[5:]  # one record: the handshake message follows its header
    # The binders list is the end of the pre_shared_key extension, the last extension.
    binders_len = 2 + 1 + size
    truncated = message[:len(message) - binders_len]
    binder = hmac.new(finished_key, hashlib.new(digest, truncated).digest(), digest).digest()
    return hello_bytes[:len(hello_bytes) - size] + binder


# --- DER of an SSL_SESSION ---------------------------------------------------------------------

def _der_length(data: bytes, pos: int) -> Tuple[int, int]:
    first = data[pos]
    if first < 0x80:
        return first, pos + 1
    count = first & 0x7F
    return int.from_bytes(data[pos + 1:pos + 1 + count], "big"), pos + 1 + count


def _encode_length(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((0x80 | len(raw),)) + raw


def der_fields(der: bytes) -> List[bytes]:
    """The encoded (tag, length, value) elements of the top-level SEQUENCE."""
    assert der[0] == 0x30
    length, pos = _der_length(der, 1)
    end = pos + length
    out = []
    while pos < end:
        start = pos
        n, value_at = _der_length(der, pos + 1)
        pos = value_at + n
        out.append(der[start:pos])
    return out


def der_value(element: bytes) -> bytes:
    n, at = _der_length(element, 1)
    return element[at:at + n]


def der_sequence(elements: List[bytes]) -> bytes:
    body = b"".join(elements)
    return b"\x30" + _encode_length(len(body)) + body


def der_octets(value: bytes) -> bytes:
    return b"\x04" + _encode_length(len(value)) + value


# SSL_SESSION_ASN1: version, ssl_version, cipher, session_id, master_key, ... (ssl/ssl_asn1.c)
SESSION_ID_FIELD = 3
MASTER_KEY_FIELD = 4


def with_session_id(der: bytes, session_id: bytes) -> bytes:
    """The same session with another session id (any length, even ones OpenSSL never makes)."""
    fields = der_fields(der)
    fields[SESSION_ID_FIELD] = der_octets(session_id)
    return der_sequence(fields)


def master_key(der: bytes) -> bytes:
    return der_value(der_fields(der)[MASTER_KEY_FIELD])
