"""A TLS server for client tests that sees, on its own side, what each client offered.

Every ClientHello is read through the stdlib's message callback: a connection *offered*
a session when its ClientHello carries a TLS 1.3 pre_shared_key, a non-empty TLS 1.2
session ticket, or a session id this server issued (a TLS 1.3 client's random
compatibility id is no offer). It answers HTTP/1.1 (one response, then close) and, for
anything else, echoes the first read.
"""
from __future__ import annotations

import socket
import ssl
import threading
from dataclasses import dataclass, field
from typing import List, Optional, Set

import sesscache

_PRE_SHARED_KEY = 41
_SESSION_TICKET = 35


def parse_client_hello(data: bytes):
    """(session id, {extension type: data}) of a ClientHello handshake message."""
    if data and data[0] == 1:  # with its handshake header
        data = data[4:]
    pos = 2 + 32
    sid_len = data[pos]
    sid = bytes(data[pos + 1:pos + 1 + sid_len])
    pos += 1 + sid_len
    pos += 2 + int.from_bytes(data[pos:pos + 2], "big")
    pos += 1 + data[pos]
    extensions = {}
    if pos + 2 <= len(data):
        end = pos + 2 + int.from_bytes(data[pos:pos + 2], "big")
        pos += 2
        while pos + 4 <= end:
            etype = int.from_bytes(data[pos:pos + 2], "big")
            elen = int.from_bytes(data[pos + 2:pos + 4], "big")
            extensions[etype] = bytes(data[pos + 4:pos + 4 + elen])
            pos += 4 + elen
    return sid, extensions


@dataclass
class Seen:
    offered: bool
    reused: bool


@dataclass
class _State:
    issued: Set[bytes] = field(default_factory=set)
    hellos: List[bytes] = field(default_factory=list)


class OfferServer:
    """A threaded TLS server on 127.0.0.1; ``seen`` lists each handshake's offer and reuse."""

    def __init__(self, certs, version: str = "TLSv1.3", *, tickets: bool = True,
                 certfile: Optional[str] = None) -> None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(certfile or certs.server_pem)
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2 if version == "TLSv1.2" else ssl.TLSVersion.TLSv1_3
        if not tickets:
            ctx.options |= ssl.OP_NO_TICKET
        self._state = _State()
        self._lock = threading.Lock()
        ctx._msg_callback = self._on_message
        # The ids this server issued, from its own new-session callback (reading
        # SSLSocket.session would leak: python/cpython#116810).
        issued = self._state.issued
        sesscache.set_new_session_callback(ctx, lambda conn, session: issued.add(session.id))
        self.context = ctx
        self.seen: List[Seen] = []
        self.errors: List[BaseException] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self._stop = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _on_message(self, conn, direction, version, content_type, msg_type, data) -> None:
        if direction == "read" and msg_type == ssl._TLSMessageType.CLIENT_HELLO:
            conn._sesscache_hello = bytes(data)

    def _serve(self) -> None:
        self.listener.settimeout(0.1)  # (a blocked accept() does not see close())
        while not self._stop:
            try:
                sock, _ = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            threading.Thread(target=self._one, args=(sock,), daemon=True).start()

    def _one(self, sock: socket.socket) -> None:
        sock.settimeout(10)
        try:
            with self.context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False) as tls:
                tls.do_handshake()
                sid, ext = parse_client_hello(getattr(tls, "_sesscache_hello", b""))
                with self._lock:
                    offered = (_PRE_SHARED_KEY in ext or bool(ext.get(_SESSION_TICKET))
                               or (bool(sid) and sid in self._state.issued))
                with self._lock:
                    self.seen.append(Seen(offered, tls.session_reused))
                self._answer(tls)
        except Exception as exc:  # recorded for the test to look at
            self.errors.append(exc)
        finally:
            sock.close()

    @staticmethod
    def _answer(tls: ssl.SSLSocket) -> None:
        data = b""
        while True:
            chunk = tls.recv(65536)
            if not chunk:
                return
            data += chunk
            if data[:4] in (b"GET ", b"POST", b"HEAD") and b"\r\n\r\n" not in data:
                continue
            break
        if b"upgrade: websocket" in data.lower():
            OfferServer._websocket(tls, data)
        elif data[:4] in (b"GET ", b"POST", b"HEAD"):
            tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n"
                        b"Connection: close\r\n\r\nok")
        else:
            tls.sendall(data)
        try:
            tls.unwrap()
        except (ssl.SSLError, OSError):
            pass

    @staticmethod
    def _websocket(tls: ssl.SSLSocket, request: bytes) -> None:
        """Accept a WebSocket upgrade, echo one short message, answer the close."""
        import base64
        import hashlib

        key = next(line.split(b":", 1)[1].strip() for line in request.split(b"\r\n")
                   if line.lower().startswith(b"sec-websocket-key:"))
        accept = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
        tls.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                    b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n")
        while True:
            frame = tls.recv(65536)
            if len(frame) < 6:
                return
            opcode, length = frame[0] & 0x0F, frame[1] & 0x7F
            mask, payload = frame[2:6], frame[6:6 + length]
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            if opcode == 8:  # close: answer it
                tls.sendall(b"\x88\x02\x03\xe8")
                return
            tls.sendall(bytes([0x80 | opcode, len(payload)]) + payload)

    def close(self) -> None:
        self._stop = True
        self._thread.join(5)
        self.listener.close()
        self.context._msg_callback = None  # (a cycle through the context gc cannot see)

    def __enter__(self) -> "OfferServer":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
