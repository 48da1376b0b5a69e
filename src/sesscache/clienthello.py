"""Parse a TLS ClientHello from raw socket bytes, before OpenSSL sees them.

An asyncio server that wants to look a session up asynchronously (in redis, say) must know
*which* session the client asks for before libssl starts the handshake, because libssl's
session callbacks are synchronous. This module reads the first TLS records a client sends and
extracts what such a lookup needs: the legacy session id, the TLS 1.3 PSK identities, SNI,
ALPN and the offered versions. It is pure Python, has no dependency and does not touch libssl.

Usage, on a connection whose bytes arrive in pieces::

    reader = ClientHelloReader()
    try:
        while reader.feed(await stream.readexactly(reader.needed)) is None:
            pass
    except ClientHelloError:
        ...  # close the connection, or let OpenSSL read reader.data and send the alert
    keys = reader.hello.lookup_keys()  # fetch these from the store, then
    # feed reader.data to OpenSSL unchanged.

``needed`` never exceeds what is left of the hello's records, so reading exactly that many
bytes never takes anything that follows the hello (0-RTT data) off the socket.
:func:`parse_client_hello` is the one-shot form, for a buffer already in hand (a
``MSG_PEEK``, a test). Re-calling it on a growing buffer re-walks every record each time,
which is quadratic for a client that sends thousands of 1-byte records a byte at a time
(measured: 45 s of CPU for a 4 KiB hello); the reader keeps its place and stays linear.

The parser is strict: every length is checked against its container and against the limits
of RFC 8446/5246/6066/7301, and any inconsistency raises :class:`ClientHelloError` rather than
guessing. Input that is a valid prefix of a ClientHello raises :class:`NeedMoreData`. Nothing
else escapes (no IndexError, no struct.error). The work is one linear pass over the bytes,
however many records the hello is split into.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

from .errors import SesscacheError

__all__ = [
    "MAX_CLIENT_HELLO",
    "ClientHello",
    "ClientHelloReader",
    "ClientHelloError",
    "NeedMoreData",
    "parse_client_hello",
]

#: Largest ClientHello handshake message accepted, counting its 4-byte handshake header.
#: Real hellos are 200 bytes to 2 KiB (post-quantum key shares push them toward 1.5 KiB);
#: a very long ALPN list or many PSK identities can reach tens of KiB, 64 KiB cannot be
#: reached by any client we know of.
MAX_CLIENT_HELLO = 64 * 1024

# Bound on the wire bytes (record headers included) the hello may occupy. Every record adds 5
# bytes of header, so a client splitting its hello into 1-byte records makes us buffer six
# times its size; twice the handshake limit leaves room for any real fragmentation while
# keeping what one connection can make the server hold bounded.
_MAX_WIRE = 2 * MAX_CLIENT_HELLO

_RECORD_HEADER = 5
_HANDSHAKE_HEADER = 4
_MAX_RECORD_PLAINTEXT = 1 << 14  # RFC 8446 5.1 / RFC 5246 6.2.1: a record carries <= 2^14 bytes

_CT_CHANGE_CIPHER_SPEC = 20
_CT_ALERT = 21
_CT_HANDSHAKE = 22
_CT_APPLICATION_DATA = 23
_CONTENT_TYPE_NAMES = {
    _CT_CHANGE_CIPHER_SPEC: "change_cipher_spec",
    _CT_ALERT: "alert",
    _CT_HANDSHAKE: "handshake",
    _CT_APPLICATION_DATA: "application_data",
}
_HT_CLIENT_HELLO = 1

_EXT_SERVER_NAME = 0
_EXT_ALPN = 16
_EXT_PRE_SHARED_KEY = 41
_EXT_EARLY_DATA = 42
_EXT_SUPPORTED_VERSIONS = 43

_TLS13 = 0x0304
_SNI_HOST_NAME = 0
_MAX_HOST_NAME = 255  # DNS limit; OpenSSL rejects longer (TLSEXT_MAXLEN_host_name)
_MAX_SESSION_ID = 32

_u16 = struct.Struct(">H").unpack_from
_u32 = struct.Struct(">I").unpack_from


class ClientHelloError(SesscacheError, ValueError):
    """The bytes can never become a valid ClientHello: not TLS, malformed or oversized.

    The message says which check failed and at which byte offset of the handshake body (or
    of the input, for record-layer faults). A server should close the connection, or let
    OpenSSL process the same bytes so that it sends the proper alert.
    """


class NeedMoreData(Exception):
    """The bytes so far are a valid but incomplete prefix of a ClientHello.

    ``needed`` is a lower bound on how many more bytes must arrive before a new call can
    succeed: waiting for at least that many avoids re-parsing for nothing.
    :func:`parse_client_hello` always sets it; ``None`` means "unknown" for other raisers.
    """

    def __init__(self, needed: int | None = None) -> None:
        self.needed = needed
        if needed is None:
            super().__init__("incomplete ClientHello: more bytes needed")
        else:
            super().__init__(f"incomplete ClientHello: at least {needed} more bytes needed")


@dataclass(frozen=True)
class ClientHello:
    """What a ClientHello says about the session the client wants to resume, and a little more.

    Values are kept as sent (including GREASE values, RFC 8701), in the client's order.
    """

    #: ``ClientHello.legacy_version`` (``client_version`` before TLS 1.3), e.g. 0x0303.
    legacy_version: int
    #: 0 to 32 bytes. The real session id when resuming a TLS <= 1.2 session; a random
    #: 32-byte value from a TLS 1.3 client in middlebox compatibility mode.
    legacy_session_id: bytes
    #: The SNI ``host_name`` decoded as ASCII, case kept as sent; ``None`` without SNI.
    server_name: str | None
    #: From the supported_versions extension; empty if the extension is absent.
    supported_versions: tuple[int, ...]
    #: Identities of the pre_shared_key extension (TLS 1.3 resumption tickets or external PSKs).
    psk_identities: tuple[bytes, ...]
    #: The early_data extension is present (the client sends 0-RTT data after the hello).
    has_early_data: bool
    cipher_suites: tuple[int, ...]
    #: Protocol names of the ALPN extension; empty if absent.
    alpn: tuple[bytes, ...]
    #: 0x0304 (TLS 1.3) is in ``supported_versions``.
    offers_tls13: bool

    def lookup_keys(self) -> tuple[bytes, ...]:
        """Session ids that a server-side *stateful* session cache could be asked for.

        At most one of them can hit; order them as returned (most likely first):

        - No TLS 1.3 offered (no 0x0304 in supported_versions): the ``legacy_session_id`` if it
          is 1 to 32 bytes long (TLS <= 1.2 resumption by session id), else nothing. With an
          RFC 5077 ticket the client also sends a session id, random or the old one; looking
          it up is a harmless miss or a correct hit.
        - TLS 1.3 offered: every PSK identity of 1 to 32 bytes, in the client's order. A server
          using stateful TLS 1.3 tickets (OpenSSL with ``SSL_OP_NO_TICKET``) sends the session
          id itself (32 bytes) as the ticket, and the client returns it verbatim as the PSK
          identity. Stateless tickets are encrypted sessions, well over 32 bytes, and yield
          nothing: the server decrypts them without any cache. The ``legacy_session_id`` is
          *not* a key in this case, except when there is no pre_shared_key extension at all:
          then it comes last.
        """
        sid = self.legacy_session_id
        if not self.offers_tls13:
            return (sid,) if 1 <= len(sid) <= _MAX_SESSION_ID else ()
        keys = [i for i in self.psk_identities if 1 <= len(i) <= _MAX_SESSION_ID]
        # A TLS 1.3 client fills legacy_session_id with 32 random bytes (RFC 8446 D.4,
        # middlebox compatibility), so it is normally not a key. But a client that offers
        # TLS 1.3 *and* 1.2 while resuming a TLS 1.2 session has no PSK to send (PSKs carry
        # only TLS 1.3 sessions) and puts that session's real id there; a server limited to
        # TLS 1.2 resumes it by id. With a pre_shared_key extension the client is resuming a
        # TLS 1.3 session and the id is random. Without one, looking the id up is safe: a
        # random 32-byte value matches no stored session (2^-256), it costs one store miss.
        if not self.psk_identities and 1 <= len(sid) <= _MAX_SESSION_ID:
            keys.append(sid)
        return tuple(dict.fromkeys(keys))


# --------------------------------------------------------------------------- record layer


def parse_client_hello(data) -> tuple[ClientHello, int]:
    """Parse the ClientHello at the start of ``data``; return it and the bytes it used.

    ``data`` is what the client sent, from its first byte (``bytes``, ``bytearray`` or a
    ``memoryview``). The ClientHello handshake message may be split over several TLS
    records, and the last record may be incomplete. The count returned covers whole records
    only: the bytes after it (early data, a change_cipher_spec record) belong to what follows.

    Raises :class:`NeedMoreData` while ``data`` is a valid but incomplete prefix, and
    :class:`ClientHelloError` as soon as it can never be one: not a TLS handshake record
    (HTTP, SSLv2-format hello, other record types), record version not 3.x, empty or
    oversized record, handshake type other than ClientHello, a hello larger than
    :data:`MAX_CLIENT_HELLO` (raised from its 4-byte header, without waiting for the body),
    a record holding bytes beyond the hello, or any malformed field.

    One call is linear in ``len(data)``. Calling it again on a growing buffer re-walks the
    records already seen, which costs O(records) per call: a client sending thousands of tiny
    records a byte at a time makes that quadratic. :class:`ClientHelloReader` keeps its place
    between calls and is linear overall; use it on untrusted connections.
    """
    return _run(_RecordWalk(), data)


class ClientHelloReader:
    """Incremental form of :func:`parse_client_hello`: feed bytes as they arrive.

    The records already complete are not walked again, so the total work is linear in the
    bytes received however the client splits them into records and TCP segments (see the
    module docstring for a loop). ``data`` keeps every byte fed, to hand to OpenSSL afterwards.

    ``feed`` raises :class:`ClientHelloError` as soon as the bytes can never be a ClientHello,
    and again on every later call.
    """

    def __init__(self) -> None:
        #: Every byte fed so far, including any beyond the hello.
        self.data = bytearray()
        #: Lower bound on the bytes still to feed before the hello can be complete.
        self.needed = _RECORD_HEADER + _HANDSHAKE_HEADER
        #: The parsed hello, once complete.
        self.hello: ClientHello | None = None
        #: Bytes of ``data`` taken by the hello's records (0 until complete).
        self.consumed = 0
        self._walk = _RecordWalk()
        self._error: ClientHelloError | None = None

    def feed(self, data) -> ClientHello | None:
        """Append ``data``; return the ClientHello once complete, ``None`` while incomplete."""
        if self._error is not None:
            raise self._error
        self.data += data
        if self.hello is not None:
            return self.hello
        try:
            self.hello, self.consumed = _run(self._walk, self.data)
        except NeedMoreData as more:
            self.needed = more.needed
            return None
        except ClientHelloError as exc:
            self._error = exc
            raise
        self.needed = 0
        return self.hello


def _run(walk: _RecordWalk, data) -> tuple[ClientHello, int]:
    try:
        view = memoryview(data)
    except TypeError:
        raise TypeError(f"parse_client_hello needs bytes-like data, not {type(data).__name__}") from None
    # The exception is re-raised from here without its traceback: the frames below hold
    # slices of `data`, and a bytearray with live slices cannot grow. The caller typically
    # appends to its buffer right in the except clause.
    with view:
        try:
            mv = view
            if not mv.c_contiguous:
                mv = memoryview(mv.tobytes())
            elif mv.format != "B" or mv.ndim != 1:
                mv = mv.cast("B")  # items must be ints 0..255: a 'c' or 'b' view would index differently
            walk.advance(mv)
            return _parse_body(walk.message(mv)[_HANDSHAKE_HEADER:]), walk.pos
        except (ClientHelloError, NeedMoreData) as exc:
            error = exc.with_traceback(None)
    raise error


class _RecordWalk:
    """Where the walk over the hello's records stands; updated only at whole records.

    Offsets, not memoryview slices, so that nothing holds on to the caller's buffer between
    calls (a bytearray with an exported view cannot grow).
    """

    __slots__ = ("pos", "spans", "got", "header", "total")

    def __init__(self) -> None:
        self.pos = 0  # offset of the next record header
        self.spans: list[tuple[int, int]] = []  # (start, stop) of each handshake fragment
        self.got = 0  # handshake bytes in `spans`
        self.header = b""  # first bytes of the handshake message, until its 4-byte header is complete
        self.total: int | None = None  # handshake message length, header included, once known

    def message(self, mv: memoryview) -> memoryview:
        if len(self.spans) == 1:
            start, stop = self.spans[0]
            return mv[start:stop]
        return memoryview(b"".join([mv[start:stop] for start, stop in self.spans]))

    def advance(self, mv: memoryview) -> None:
        """Walk the whole records from ``pos`` on; return once the hello is complete."""
        n = len(mv)
        pos, got, header, total = self.pos, self.got, self.header, self.total
        while total is None or got < total:
            have = n - pos
            if have < _RECORD_HEADER:
                _check_record_header_prefix(mv[pos:n], pos)
                more = total - got if total is not None else max(1, _HANDSHAKE_HEADER - len(header))
                raise NeedMoreData(_RECORD_HEADER - have + more)

            _check_record_header_prefix(mv[pos : pos + 3], pos)
            rlen = _u16(mv, pos + 3)[0]
            if rlen == 0:
                raise ClientHelloError(
                    f"empty handshake record at offset {pos}: zero-length handshake fragments are forbidden "
                    "(RFC 8446 5.1)"
                )
            if rlen > _MAX_RECORD_PLAINTEXT:
                raise ClientHelloError(
                    f"record at offset {pos} claims {rlen} bytes, more than the 2^14 a plaintext record may carry"
                )
            end = pos + _RECORD_HEADER + rlen
            if end > _MAX_WIRE:
                raise ClientHelloError(
                    f"ClientHello spread over more than {_MAX_WIRE} bytes of records (offset {pos}); "
                    "no real client fragments its hello that finely"
                )

            body_start = pos + _RECORD_HEADER
            avail = min(rlen, n - body_start)
            if total is None:
                # Complete the handshake header from this record, even from an incomplete one, so
                # that a wrong type or an oversized length fails now instead of after 64 KiB.
                header += bytes(mv[body_start : body_start + min(_HANDSHAKE_HEADER - len(header), avail)])
                if header and header[0] != _HT_CLIENT_HELLO:
                    raise ClientHelloError(
                        f"handshake message type {header[0]}, expected ClientHello (1): "
                        "this is not the start of a client's TLS connection"
                    )
                if len(header) == _HANDSHAKE_HEADER:
                    total = _HANDSHAKE_HEADER + int.from_bytes(header[1:4], "big")
                    if total > MAX_CLIENT_HELLO:
                        raise ClientHelloError(
                            f"ClientHello claims {total} bytes, more than MAX_CLIENT_HELLO ({MAX_CLIENT_HELLO})"
                        )
            if total is not None and got + rlen > total:
                raise ClientHelloError(
                    f"record at offset {pos} carries {got + rlen - total} bytes after the end of the "
                    "ClientHello; nothing may follow it in the same record"
                )

            if avail < rlen:
                needed = rlen - avail
                # Once this record is complete, `after` handshake bytes are still missing (at least
                # the rest of the 4-byte header while the length is unknown); they need a record.
                after = (total if total is not None else _HANDSHAKE_HEADER) - got - rlen
                if after > 0:
                    needed += _RECORD_HEADER + after
                raise NeedMoreData(needed)

            # A whole record: commit it.
            self.spans.append((body_start, end))
            got += rlen
            pos = end
            self.pos, self.got, self.header, self.total = pos, got, header, total


def _check_record_header_prefix(head: memoryview, pos: int) -> None:
    """Reject the first 1-3 bytes of a record header that can never start a handshake record."""
    if not head:
        return
    ctype = head[0]
    if ctype != _CT_HANDSHAKE:
        if pos == 0:
            raise ClientHelloError(_describe_not_tls(head))
        name = _CONTENT_TYPE_NAMES.get(ctype, "unknown")
        raise ClientHelloError(
            f"record at offset {pos} has content type {ctype} ({name}) before the ClientHello is "
            "complete; only handshake records (22) may carry it"
        )
    if len(head) >= 2 and head[1] != 3:
        raise ClientHelloError(
            f"record at offset {pos} has version major byte {head[1]:#04x}, expected 0x03 (SSL 3.0 / TLS 1.x)"
            + ("; not TLS" if pos == 0 else "")
        )


def _describe_not_tls(head: memoryview) -> str:
    first = head[0]
    if first & 0x80 and (len(head) < 3 or head[2] == 1):
        return (
            f"not TLS: first byte {first:#04x} starts an SSLv2-format ClientHello, which is not "
            "supported; the client must send a TLS ClientHello (SSLv2 compatibility was removed "
            "from clients around 2010)"
        )
    if 0x20 <= first < 0x7F:
        text = bytes(head[:3]).decode("ascii", "replace")
        return (
            f"not TLS: first byte {first:#04x} ({chr(first)!r}) is printable text, "
            f"{text!r}... looks like plaintext (HTTP?) sent to a TLS port"
        )
    name = _CONTENT_TYPE_NAMES.get(first)
    if name is not None:
        return f"not a ClientHello: the first record is {name} ({first}), expected handshake (22)"
    return f"not TLS: first byte {first:#04x} is not a TLS record type, expected handshake (22)"


# --------------------------------------------------------------------------- handshake body


class _Body:
    """A cursor over the ClientHello body; every read checks its bounds against ``end``."""

    __slots__ = ("mv", "pos")

    def __init__(self, mv: memoryview) -> None:
        self.mv = mv
        self.pos = 0

    def fail(self, what: str, at: int | None = None) -> ClientHelloError:
        at = self.pos if at is None else at
        return ClientHelloError(f"malformed ClientHello at body offset {at}: {what}")

    def need(self, count: int, end: int, what: str) -> None:
        if end - self.pos < count:
            raise self.fail(f"{what} needs {count} bytes, only {max(0, end - self.pos)} left")

    def u8(self, end: int, what: str) -> int:
        self.need(1, end, what)
        value = self.mv[self.pos]
        self.pos += 1
        return value

    def u16(self, end: int, what: str) -> int:
        self.need(2, end, what)
        value = _u16(self.mv, self.pos)[0]
        self.pos += 2
        return value

    def vector(self, length_size: int, end: int, what: str, low: int, high: int) -> tuple[int, int]:
        """Read a length prefix; return (start, stop) of the vector after checking it fits."""
        length = self.u8(end, what + " length") if length_size == 1 else self.u16(end, what + " length")
        if not low <= length <= high:
            raise self.fail(f"{what} is {length} bytes, must be {low}..{high}", self.pos - length_size)
        self.need(length, end, what)
        start = self.pos
        self.pos += length
        return start, self.pos

    def enter(self, length_size: int, end: int, what: str, low: int, high: int) -> int:
        """Read a length prefix like :meth:`vector`, stay at its first byte, return its stop."""
        start, stop = self.vector(length_size, end, what, low, high)
        self.pos = start
        return stop


def _parse_body(mv: memoryview) -> ClientHello:
    b = _Body(mv)
    end = len(mv)
    legacy_version = b.u16(end, "legacy_version")
    if legacy_version >> 8 != 3:
        raise b.fail(f"legacy_version {legacy_version:#06x} is not 3.x", 0)
    b.need(32, end, "random")
    b.pos += 32
    s, e = b.vector(1, end, "legacy_session_id", 0, _MAX_SESSION_ID)
    session_id = bytes(mv[s:e])
    s, e = b.vector(2, end, "cipher_suites", 2, 0xFFFE)
    if (e - s) % 2:
        raise b.fail(f"cipher_suites is {e - s} bytes, an odd number", s - 2)
    cipher_suites = struct.unpack_from(f">{(e - s) // 2}H", mv, s)
    b.vector(1, end, "legacy_compression_methods", 1, 0xFF)

    server_name = None
    supported_versions: tuple[int, ...] = ()
    psk_identities: tuple[bytes, ...] = ()
    has_early_data = False
    alpn: tuple[bytes, ...] = ()
    if b.pos < end:  # extensions are optional before TLS 1.3; absent means nothing follows
        e = b.enter(2, end, "extensions", 0, 0xFFFF)
        if e != end:
            raise b.fail(f"{end - e} bytes after the extensions block")
        seen = set()
        while b.pos < e:
            ext_at = b.pos
            ext_type = b.u16(e, "extension type")
            if ext_type in seen:
                raise b.fail(f"extension {ext_type} appears twice (RFC 8446 4.2)", ext_at)
            seen.add(ext_type)
            xs, xe = b.vector(2, e, f"extension {ext_type}", 0, 0xFFFF)
            if _EXT_PRE_SHARED_KEY in seen and ext_type != _EXT_PRE_SHARED_KEY:
                raise b.fail("pre_shared_key is not the last extension (RFC 8446 4.2.11)", ext_at)
            if ext_type == _EXT_SERVER_NAME:
                server_name = _parse_server_name(b, xs, xe)
            elif ext_type == _EXT_SUPPORTED_VERSIONS:
                supported_versions = _parse_supported_versions(b, xs, xe)
            elif ext_type == _EXT_PRE_SHARED_KEY:
                psk_identities = _parse_pre_shared_key(b, xs, xe)
            elif ext_type == _EXT_EARLY_DATA:
                if xe != xs:
                    raise b.fail(f"early_data extension carries {xe - xs} bytes, must be empty in a ClientHello", xs)
                has_early_data = True
            elif ext_type == _EXT_ALPN:
                alpn = _parse_alpn(b, xs, xe)
            b.pos = xe

    return ClientHello(
        legacy_version=legacy_version,
        legacy_session_id=session_id,
        server_name=server_name,
        supported_versions=supported_versions,
        psk_identities=psk_identities,
        has_early_data=has_early_data,
        cipher_suites=cipher_suites,
        alpn=alpn,
        offers_tls13=_TLS13 in supported_versions,
    )


def _parse_server_name(b: _Body, start: int, end: int) -> str:
    # RFC 6066 3: ServerNameList server_name_list<1..2^16-1>; one name per name_type.
    b.pos = start
    le = b.enter(2, end, "server_name_list", 1, 0xFFFF)
    if le != end:
        raise b.fail(f"{end - le} bytes after server_name_list")
    host = None
    while b.pos < le:
        entry_at = b.pos
        name_type = b.u8(le, "server name type")
        ns, ne = b.vector(2, le, "server name", 1, 0xFFFF)
        if name_type != _SNI_HOST_NAME:
            continue  # no other type is defined; its body is length-checked and skipped
        if host is not None:
            raise b.fail("two host_name entries in server_name (RFC 6066 3)", entry_at)
        if ne - ns > _MAX_HOST_NAME:
            raise b.fail(f"SNI host_name is {ne - ns} bytes, more than {_MAX_HOST_NAME}", ns)
        raw = bytes(b.mv[ns:ne])
        if not all(0x21 <= c < 0x7F for c in raw):
            raise b.fail(f"SNI host_name {raw[:64]!r} is not printable ASCII", ns)
        host = raw.decode("ascii")
    if host is None:
        raise b.fail("server_name extension without a host_name entry", start)
    return host


def _parse_supported_versions(b: _Body, start: int, end: int) -> tuple[int, ...]:
    # RFC 8446 4.2.1: ProtocolVersion versions<2..254> in a ClientHello.
    b.pos = start
    vs, ve = b.vector(1, end, "supported_versions", 2, 254)
    if ve != end:
        raise b.fail(f"{end - ve} bytes after supported_versions")
    if (ve - vs) % 2:
        raise b.fail(f"supported_versions is {ve - vs} bytes, an odd number", vs - 1)
    return struct.unpack_from(f">{(ve - vs) // 2}H", b.mv, vs)


def _parse_pre_shared_key(b: _Body, start: int, end: int) -> tuple[bytes, ...]:
    # RFC 8446 4.2.11: PskIdentity identities<7..2^16-1>; PskBinderEntry binders<33..2^16-1>,
    # PskIdentity = opaque identity<1..2^16-1> + uint32 obfuscated_ticket_age,
    # PskBinderEntry = opaque<32..255>. One binder per identity.
    b.pos = start
    ie = b.enter(2, end, "PSK identities", 7, 0xFFFF)
    identities = []
    while b.pos < ie:
        s, e = b.vector(2, ie, "PSK identity", 1, 0xFFFF)
        identities.append(bytes(b.mv[s:e]))
        b.need(4, ie, "obfuscated_ticket_age")
        b.pos += 4
    be = b.enter(2, end, "PSK binders", 33, 0xFFFF)
    binders = 0
    while b.pos < be:
        b.vector(1, be, "PSK binder", 32, 255)
        binders += 1
    if be != end:
        raise b.fail(f"{end - be} bytes after PSK binders")
    if binders != len(identities):
        raise b.fail(f"{len(identities)} PSK identities but {binders} binders", start)
    return tuple(identities)


def _parse_alpn(b: _Body, start: int, end: int) -> tuple[bytes, ...]:
    # RFC 7301 3.1: ProtocolName protocol_name_list<2..2^16-1>, ProtocolName = opaque<1..2^8-1>.
    b.pos = start
    le = b.enter(2, end, "ALPN protocol_name_list", 2, 0xFFFF)
    if le != end:
        raise b.fail(f"{end - le} bytes after ALPN protocol_name_list")
    names = []
    while b.pos < le:
        s, e = b.vector(1, le, "ALPN protocol name", 1, 0xFF)
        names.append(bytes(b.mv[s:e]))
    return tuple(names)
