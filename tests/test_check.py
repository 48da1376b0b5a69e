"""``python -m sesscache check``: against a server without a cache (a context per connection, as
gunicorn makes them), the same server with sesscache, one with stateless tickets, and
``openssl s_server``. The command runs in its own process, as an operator runs it."""
from __future__ import annotations

import re
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time

import pytest

import sesscache

N = 30


class OneShotHTTPS:
    """Answers one HTTP request per connection and closes with close_notify. ``make_context`` is
    called per connection (``per_connection=True``, the gunicorn pattern) or once."""

    def __init__(self, make_context, per_connection: bool, drop_every: int = 0) -> None:
        self.make_context, self.per_connection = make_context, per_connection
        self.drop_every, self.accepted = drop_every, 0
        self.context = None if per_connection else make_context()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            self.accepted += 1
            if self.drop_every and self.accepted % self.drop_every == 0:
                sock.close()  # a server that drops a connection now and then
                continue
            context = self.make_context() if self.per_connection else self.context
            try:
                sock.settimeout(10)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                with context.wrap_socket(sock, server_side=True) as tls:
                    tls.recv(4096)
                    tls.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    tls.unwrap()
            except (ssl.SSLError, OSError):
                pass
            finally:
                sock.close()
                del context  # a per-connection context dies with its connection, as in gunicorn

    def close(self) -> None:
        try:
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() (close alone does not)
        except OSError:
            pass
        self.listener.close()
        self._thread.join(5)


def _check(port: int, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sesscache", "check", f"127.0.0.1:{port}", "-n", str(N), *args],
                          capture_output=True, text=True, timeout=300)


def _line(output: str, protocol: str) -> str:
    return next(line for line in output.splitlines() if line.startswith(f"TLS {protocol} "))


def _resumed(line: str) -> int:
    return int(re.search(r"resumed (\d+)/", line).group(1))


def _base_context(certs, tickets: bool) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certs.server_pem)
    if not tickets:
        context.options |= ssl.OP_NO_TICKET
    return context


@pytest.fixture
def server():
    servers = []

    def start(make_context, per_connection, drop_every=0):
        servers.append(OneShotHTTPS(make_context, per_connection, drop_every))
        return servers[-1]
    yield start
    for s in servers:
        s.close()


def test_without_a_cache_nothing_resumes(certs, server):
    s = server(lambda: _base_context(certs, tickets=True), per_connection=True)
    done = _check(s.port, "--expect", "99")
    assert done.returncode == 1, done.stdout + done.stderr
    for protocol in ("1.2", "1.3"):
        line = _line(done.stdout, protocol)
        assert f"resumed 0/{N}" in line and "kind: none" in line, line
        assert "below the expected 99%" in done.stdout


def test_with_sesscache_every_attempt_resumes_from_the_store(certs, server):
    cache = sesscache.SessionCache()

    def make_context():
        context = _base_context(certs, tickets=False)
        cache.attach(context, session_id_context=b"check-test")
        return context
    s = server(make_context, per_connection=True)
    done = _check(s.port, "--expect", "99")
    assert done.returncode == 0, done.stdout + done.stderr
    tls12, tls13 = _line(done.stdout, "1.2"), _line(done.stdout, "1.3")
    assert f"resumed {N}/{N}" in tls12 and "kind: session id" in tls12, tls12
    assert f"resumed {N}/{N}" in tls13 and "kind: stateful ticket" in tls13, tls13
    assert "speed-up" in tls12 and "speed-up" in tls13
    assert cache.stats.hits >= 2 * N
    cache.close()  # and the sessions its store keeps decoded (pytest may hold the server a while)


def test_stateless_tickets_are_told_apart(certs, server):
    s = server(lambda: _base_context(certs, tickets=True), per_connection=False)
    done = _check(s.port)
    assert done.returncode == 0, done.stdout + done.stderr
    for protocol in ("1.2", "1.3"):
        line = _line(done.stdout, protocol)
        assert f"resumed {N}/{N}" in line and "kind: stateless ticket" in line, line


def test_a_protocol_the_server_refuses_is_reported(certs, server):
    def tls13_only():
        context = _base_context(certs, tickets=True)
        context.minimum_version = ssl.TLSVersion.TLSv1_3
        return context
    s = server(tls13_only, per_connection=False)
    done = _check(s.port, "--expect", "90")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "not probed" in _line(done.stdout, "1.2")
    assert f"resumed {N}/{N}" in _line(done.stdout, "1.3")


def test_connections_that_fail_midway_are_counted_not_fatal(certs, server):
    s = server(lambda: _base_context(certs, tickets=True), per_connection=False, drop_every=7)
    done = _check(s.port)
    assert done.returncode == 0, done.stdout + done.stderr
    for protocol in ("1.2", "1.3"):
        line = _line(done.stdout, protocol)
        assert "connections failed" in line and 0 < _resumed(line) < N, line


def test_nothing_listening_is_exit_2():
    from tests.integrations.harness import free_port

    done = _check(free_port())
    assert done.returncode == 2, done.stdout + done.stderr
    assert "not probed: ConnectionRefusedError" in _line(done.stdout, "1.2")


def test_bad_target_is_a_clear_error():
    done = subprocess.run([sys.executable, "-m", "sesscache", "check", "localhost"], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2 and "HOST:PORT" in done.stderr


def _need_openssl() -> str:
    import os

    path = shutil.which("openssl")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("the openssl command is missing (apt-get install openssl)", pytrace=False)
        pytest.skip("the openssl command is missing")
    return path


@pytest.mark.parametrize("options, kinds", [
    ([], {"1.2": "stateless ticket", "1.3": "stateless ticket"}),
    (["-no_ticket"], {"1.2": "session id", "1.3": "stateful ticket"}),
], ids=["tickets", "no_ticket"])
def test_against_openssl_s_server(certs, options, kinds):
    openssl = _need_openssl()
    from tests.integrations.harness import free_port

    port = free_port()
    process = subprocess.Popen([openssl, "s_server", "-accept", f"127.0.0.1:{port}", "-cert", certs.server_pem,
                                "-www", "-quiet", *options], stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline and process.poll() is None, "s_server did not start"
                time.sleep(0.1)
        done = _check(port, "--expect", "99")
    finally:
        process.terminate()
        process.wait(10)
    assert done.returncode == 0, done.stdout + done.stderr
    for protocol, kind in kinds.items():
        line = _line(done.stdout, protocol)
        assert f"resumed {N}/{N}" in line and f"kind: {kind}" in line, line


def test_it_says_what_each_result_means_for_a_fleet(certs, server):
    """Below the numbers, plain words: what the kind means across workers, and what to change."""
    plain = server(lambda: _base_context(certs, tickets=True), per_connection=True)
    done = _check(plain.port)
    meaning = done.stdout.split("What it means:")[1]
    assert "nothing resumed" in meaning and "OP_NO_TICKET and a store all workers share" in meaning, meaning
    tickets = server(lambda: _base_context(certs, tickets=True), per_connection=False)
    meaning = _check(tickets.port).stdout.split("What it means:")[1]
    assert "only if they share ticket keys" in meaning, meaning
    cache = sesscache.SessionCache()

    def cached():
        context = _base_context(certs, tickets=False)
        cache.attach(context, session_id_context=b"check-words")
        return context
    meaning = _check(server(cached, per_connection=True).port).stdout.split("What it means:")[1]
    assert "session id: the server looked the session up in its cache" in meaning
    assert "stateful ticket: the ticket is a lookup key" in meaning
    assert "share that cache" in meaning
    cache.close()  # and the sessions its store keeps decoded (pytest may hold the server a while)
