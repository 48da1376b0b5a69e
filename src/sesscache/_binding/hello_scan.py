"""The ClientHello reader of :mod:`sesscache.aio`'s hot path: the C scan of
``csrc/clienthello.c``, with :mod:`sesscache.clienthello` (pure Python) as the reference.

The C scan makes the Python reader's decisions (incomplete, never a ClientHello, complete) on
the same bytes and under the same limits, but keeps only what the prefetch needs: the first two
distinct :meth:`ClientHello.lookup_keys`, the SNI name, the legacy session id and whether TLS
1.3 is offered. Where it finds the bytes invalid, the Python parser reads them again to raise
its :class:`ClientHelloError` with the reason; it is never the only judge of a hello the
server acts on. ``tests/test_clienthello.py`` holds the two to agreement.

Measured on the benchmark's TLS 1.3 hellos (about 500 bytes): the Python reader takes about
58 us per hello, the scan 1-2 us.
"""
from __future__ import annotations

from typing import Optional, Tuple

from . import ffi, lib
from ..clienthello import ClientHello, ClientHelloError, ClientHelloReader

_COMPLETE = lib.SC_HELLO_COMPLETE
_MORE = lib.SC_HELLO_MORE


class HelloScan:
    """Feed a connection's bytes as they arrive; ``feed`` returns the lookup keys (a tuple,
    maybe empty) once the ClientHello is complete, ``None`` while it is not, and raises
    :class:`ClientHelloError` as soon as the bytes can never be one (then on every call).

    ``data`` holds every byte fed (the first piece as given, without a copy), to replay into
    TLS afterwards; ``consumed`` is how many of them the hello's records took.
    """

    __slots__ = ("data", "keys", "server_name", "consumed", "_scan", "_error")

    def __init__(self) -> None:
        self.data = b""
        #: Up to two store lookup keys (session ids), most likely first, once complete.
        self.keys: Optional[Tuple[bytes, ...]] = None
        #: The SNI host name, once complete (``None`` without SNI).
        self.server_name: Optional[str] = None
        self.consumed = 0
        self._scan = ffi.new("sc_hello_scan *")  # zeroed: the walk starts at offset 0
        self._error: Optional[ClientHelloError] = None

    def feed(self, data: bytes) -> Optional[Tuple[bytes, ...]]:
        if self._error is not None:
            raise self._error
        if not self.data:
            self.data = data if type(data) is bytes else bytes(data)
        elif type(self.data) is bytes:
            # A second piece: from here on a bytearray, so growth stays linear.
            self.data = bytearray(self.data)
            self.data += data
        else:
            self.data += data
        if self.keys is not None:
            return self.keys
        buffer = self.data
        scan = self._scan
        if type(buffer) is bytes:
            rc = lib.sc_hello_scan_feed(scan, buffer, len(buffer))
        else:
            rc = lib.sc_hello_scan_feed(scan, ffi.from_buffer(buffer), len(buffer))
        if rc == _MORE:
            return None
        if rc == _COMPLETE:
            keys = tuple(ffi.buffer(scan.keys[i], scan.key_lens[i])[:] for i in range(scan.nkeys))
            self.keys = keys
            self.consumed = scan.consumed
            if scan.sni_len >= 0:
                self.server_name = ffi.string(scan.sni, scan.sni_len).decode("ascii")
            return keys
        return self._judge()

    def append(self, data: bytes) -> None:
        """Keep bytes read after the hello was decided, to replay them with it."""
        if type(self.data) is bytes:
            self.data = bytearray(self.data)
        self.data += data

    def _judge(self) -> Tuple[bytes, ...]:
        """The scan refused the bytes (or ran out of memory): the Python reader says why. Should
        it accept them after all, its answer stands: the reference decides."""
        reader = ClientHelloReader()
        try:
            hello = reader.feed(self.data)
        except ClientHelloError as exc:
            self._error = exc
            raise
        if hello is None:  # pragma: no cover - the tests hold the scan to the reference
            self._error = ClientHelloError("incomplete ClientHello refused by the C scan")
            raise self._error
        return self._accept(hello, reader.consumed)

    def _accept(self, hello: ClientHello, consumed: int) -> Tuple[bytes, ...]:
        self.keys = tuple(hello.lookup_keys()[:2])
        self.server_name = hello.server_name
        self.consumed = consumed
        return self.keys
