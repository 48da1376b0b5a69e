"""A small threaded TLS echo server on loopback, for tests with outside clients.

Serves a stdlib ``ssl.SSLContext`` or a pyOpenSSL ``Context``: reads a line, echoes it,
then closes cleanly (close_notify), so sessions stay resumable. Bounded: it stops after
``max_connections`` or when the test closes it.
"""
from __future__ import annotations

import socket
import ssl
import threading
from typing import Any, List

import sesscache


def _retry(sock, operation, timeout: float = 5.0):
    """Run a pyOpenSSL call on a non-blocking socket, waiting for it as OpenSSL asks."""
    import select
    import time

    from OpenSSL import SSL

    deadline = time.monotonic() + timeout
    while True:
        try:
            return operation()
        except SSL.WantReadError:
            wait = ([sock], [], [])
        except SSL.WantWriteError:
            wait = ([], [sock], [])
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not any(select.select(*wait, remaining)):
            raise TimeoutError("the peer did not answer in time")


class EchoServer:
    def __init__(self, context: Any, max_connections: int = 100, timeout: float = 10.0) -> None:
        self.context = context
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(timeout)
        self.port = self.listener.getsockname()[1]
        self.reused: List[bool] = []
        self.errors: List[BaseException] = []
        self.max_connections = max_connections
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        for _ in range(self.max_connections):
            try:
                sock, _ = self.listener.accept()
            except (OSError, socket.timeout):
                return
            try:
                sock.settimeout(5)
                if isinstance(self.context, ssl.SSLContext):
                    self._serve_stdlib(sock)
                else:
                    self._serve_pyopenssl(sock)
            except Exception as exc:  # recorded for the test to look at
                self.errors.append(exc)
            finally:
                sock.close()

    def _serve_stdlib(self, sock) -> None:
        with self.context.wrap_socket(sock, server_side=True) as tls:
            self.reused.append(tls.session_reused)
            data = tls.recv(1024)
            if data:
                tls.sendall(data)
            try:
                tls.unwrap()
            except (ssl.SSLError, OSError):
                pass

    def _serve_pyopenssl(self, sock) -> None:
        from OpenSSL import SSL

        sock.setblocking(False)  # pyOpenSSL sees a socket with a timeout as non-blocking
        conn = SSL.Connection(self.context, sock)
        conn.set_accept_state()
        _retry(sock, conn.do_handshake)
        self.reused.append(sesscache.session_reused(conn))
        try:
            data = _retry(sock, lambda: conn.recv(1024))
            if data:
                _retry(sock, lambda: conn.sendall(data))
        except (SSL.ZeroReturnError, SSL.SysCallError):
            pass
        try:
            conn.shutdown()
        except SSL.Error:
            pass

    def close(self) -> None:
        self.listener.close()
        self._thread.join(timeout=10)

    def __enter__(self) -> "EchoServer":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
