"""A stdlib TLS client for the aio tests: ``ssl.SSLObject`` over an asyncio TCP stream.

``asyncio.open_connection(ssl=...)`` cannot offer a session (no ``session=``), and the tests
need to control how the ClientHello reaches the server (split across TCP segments, stalled
half way). This client is the ``ssl`` module's own memory-BIO machinery driven by hand: the
same OpenSSL client code, with the socket writes in the test's hands.
"""
from __future__ import annotations

import asyncio
import ssl
from typing import List, Optional

from tests.tls import _stdlib_session


class HandshakeFailed(ConnectionError):
    pass


class TLSClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 obj: ssl.SSLObject, incoming: ssl.MemoryBIO, outgoing: ssl.MemoryBIO) -> None:
        self.reader = reader
        self.writer = writer
        self.obj = obj
        self.incoming = incoming
        self.outgoing = outgoing
        self._session = None

    @classmethod
    async def connect(cls, port: int, context: ssl.SSLContext, *, session=None,
                      server_hostname: Optional[str] = "localhost", host: str = "127.0.0.1",
                      split: Optional[List[int]] = None, pause: float = 0.0,
                      timeout: float = 10.0) -> "TLSClient":
        """Connect and handshake. ``split``: offsets at which the first flight (the ClientHello)
        is cut into separate TCP writes, with ``pause`` seconds between them."""
        reader, writer = await asyncio.open_connection(host, port)
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = context.wrap_bio(incoming, outgoing, server_side=False,
                               server_hostname=server_hostname, session=session)
        client = cls(reader, writer, obj, incoming, outgoing)
        try:
            await asyncio.wait_for(client._handshake(split, pause), timeout)
        except BaseException:
            writer.transport.abort()
            raise
        return client

    async def _handshake(self, split, pause) -> None:
        first = True
        while True:
            try:
                self.obj.do_handshake()
                done = True
            except ssl.SSLWantReadError:
                done = False
            except ssl.SSLError as exc:
                raise HandshakeFailed(f"handshake failed: {exc}") from exc
            out = self.outgoing.read()
            if out:
                if first and split:
                    start = 0
                    for cut in split:
                        self.writer.write(out[start:cut])
                        await self.writer.drain()
                        await asyncio.sleep(pause)
                        start = cut
                    self.writer.write(out[start:])
                else:
                    self.writer.write(out)
                await self.writer.drain()
                first = False
            if done:
                return
            data = await self.reader.read(65536)
            if not data:
                raise HandshakeFailed("the server closed the connection during the handshake")
            self.incoming.write(data)

    @property
    def session(self):
        # Through the shared helper: CPython < 3.12.7 leaks a session per read
        # (python/cpython#116810) and the suite's leak check allows exactly those reads.
        if self._session is None:
            self._session = _stdlib_session(self.obj)
        return self._session

    @property
    def reused(self) -> bool:
        return self.obj.session_reused

    def version(self) -> str:
        return self.obj.version()

    async def send(self, data: bytes) -> None:
        self.obj.write(data)
        self.writer.write(self.outgoing.read())
        await self.writer.drain()

    async def recv_until(self, end: bytes = b"\n", timeout: float = 10.0) -> bytes:
        """Read application data up to ``end`` (TLS 1.3 tickets are read on the way)."""
        got = b""

        async def loop():
            nonlocal got
            while end not in got:
                try:
                    got += self.obj.read(65536)
                    continue
                except ssl.SSLWantReadError:
                    pass
                except ssl.SSLZeroReturnError:
                    return
                data = await self.reader.read(65536)
                if not data:
                    return
                self.incoming.write(data)
                out = self.outgoing.read()
                if out:
                    self.writer.write(out)

        await asyncio.wait_for(loop(), timeout)
        return got

    async def request(self, line: bytes = b"ping\n") -> bytes:
        await self.send(line)
        return await self.recv_until(b"\n")

    async def close(self) -> None:
        """close_notify, then close the socket (a clean close keeps the session resumable)."""
        try:
            self.obj.unwrap()
        except (ssl.SSLWantReadError, ssl.SSLError):
            pass
        out = self.outgoing.read()
        try:
            if out:
                self.writer.write(out)
                await self.writer.drain()
        except ConnectionError:
            pass
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except (ConnectionError, ssl.SSLError):
            pass


async def resumed(port, context, session, **kwargs):
    """One connection offering ``session``: (reused, its session, the client)."""
    client = await TLSClient.connect(port, context, session=session, **kwargs)
    reply = await client.request()
    assert reply == b"pong\n", reply
    await client.close()
    return client.reused, client.session, client
