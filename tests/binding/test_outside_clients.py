"""Resumption seen from outside: openssl s_client, and a session that crosses processes."""
from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap

import pytest

import sesscache
from tests.binding.test_callbacks import DictCache
from tests.servers import EchoServer
from tests.tls import TLS12, TLS13, PyOpenSSLStack, StdlibStack, _stdlib_session

OPENSSL = shutil.which("openssl")


def _s_client(port, version, extra, tmp_path):
    flag = {TLS12: "-tls1_2", TLS13: "-tls1_3"}[version]
    # stdin stays open a moment so TLS 1.3 tickets arrive before s_client hangs up.
    command = f"sleep 0.5 | {OPENSSL} s_client -connect 127.0.0.1:{port} {flag} {extra}"
    result = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=30,
                            cwd=tmp_path)
    return result.stdout + result.stderr


@pytest.mark.skipif(OPENSSL is None, reason="the openssl command is not installed")
@pytest.mark.parametrize("stack_cls", [PyOpenSSLStack, StdlibStack], ids=["pyopenssl", "stdlib"])
def test_openssl_s_client_resumes_from_the_external_cache(certs, stack_cls, version, tmp_path):
    stack = stack_cls(certs)
    server = stack.server_context(version)  # internal cache off: only the callbacks
    cache = DictCache().attach(server)
    with EchoServer(server, max_connections=2) as echo:
        first = _s_client(echo.port, version, "-sess_out sess.pem", tmp_path)
        assert "New, TLS" in first or "New," in first, first[-2000:]
        second = _s_client(echo.port, version, "-sess_in sess.pem", tmp_path)
    assert "Reused, TLS" in second or "Reused," in second, second[-2000:]
    assert echo.reused == [False, True], echo.errors
    assert any(sid in cache.store for sid in cache.gets)


SERVER_SCRIPT = textwrap.dedent('''
    import os, sys, ssl, pathlib
    import sesscache
    store = pathlib.Path(sys.argv[1]); certfile = sys.argv[2]; version = sys.argv[3]
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(certfile)
    ctx.minimum_version = ctx.maximum_version = getattr(ssl.TLSVersion, version.replace(".", "_"))
    ctx.options |= ssl.OP_NO_TICKET
    sesscache.set_session_id_context(ctx, b"cross-process")
    sesscache.set_session_cache_mode(ctx, sesscache.SESS_CACHE_SERVER | sesscache.SESS_CACHE_NO_INTERNAL)
    sesscache.set_new_session_callback(ctx, lambda conn, s: (store / s.id.hex()).write_bytes(s.to_bytes()))
    def get(conn, sid):
        path = store / sid.hex()
        return path.read_bytes() if path.exists() else None
    sesscache.set_get_session_callback(ctx, get)
    import socket
    listener = socket.create_server(("127.0.0.1", 0))
    print(listener.getsockname()[1], flush=True)
    sock, _ = listener.accept()
    with ctx.wrap_socket(sock, server_side=True) as tls:
        data = tls.recv(100)
        tls.sendall(b"reused" if tls.session_reused else b"full")
        try:
            tls.unwrap()
        except OSError:
            pass
''')


def _connect(port, client_ctx, session=None):
    import socket
    import ssl

    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with client_ctx.wrap_socket(raw, server_hostname="localhost", session=session) as tls:
            tls.sendall(b"hi")
            answer = tls.recv(100)
            session = _stdlib_session(tls)  # counts CPython's own leak (#116810)
            reused = tls.session_reused
            try:
                tls.unwrap()
            except (ssl.SSLError, OSError):
                pass
    return answer, session, reused


def test_session_serialized_in_one_process_resumes_in_another(certs, version, tmp_path):
    """Process A makes the session and writes its DER; a fresh process B, sharing only
    the files, resumes it: what a cache shared by worker processes relies on."""
    import ssl

    script = tmp_path / "server.py"
    script.write_text(SERVER_SCRIPT)
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.load_verify_locations(certs.ca_pem)

    def run_server():
        proc = subprocess.Popen([sys.executable, str(script), str(tmp_path), certs.server_pem, version],
                                stdout=subprocess.PIPE, text=True)
        return proc, int(proc.stdout.readline())

    first, port = run_server()
    answer, session, _ = _connect(port, client)
    assert first.wait(timeout=30) == 0 and answer == b"full"
    assert list(tmp_path.glob("*")) != [script]
    second, port = run_server()
    answer, _, reused = _connect(port, client, session)
    assert second.wait(timeout=30) == 0
    assert answer == b"reused" and reused, "the other process did not resume the session"
