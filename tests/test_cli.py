"""The command line: demo, serve (with openssl s_client -reconnect) and stats."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import pytest

OPENSSL = shutil.which("openssl")


def _run(*args, timeout=120, **kwargs):
    return subprocess.run([sys.executable, "-m", "sesscache", *args], capture_output=True, text=True,
                          timeout=timeout, **kwargs)


def test_demo_resumes_every_offered_session():
    result = _run("demo", "--connections", "30")
    assert result.returncode == 0, result.stderr
    rows = re.findall(r"TLS 1\.[23]\s+(\d+)/(\d+)\s+(\d+)%\s+([\d.]+) ms\s+([\d.]+) ms\s+([\d.]+)x",
                      result.stdout)
    assert len(rows) == 4, result.stdout
    for reused, attempts, rate, _full, _resumed, _speedup in rows:
        assert reused == attempts and rate == "100"


@pytest.mark.skipif(OPENSSL is None, reason="the openssl command is not installed")
@pytest.mark.parametrize("mode", ["default", "store-only"])
@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_serve_resumes_openssl_s_client_reconnects(version, mode, tmp_path):
    extra = ["--no-internal-cache"] if mode == "store-only" else []
    server = subprocess.Popen(
        [sys.executable, "-m", "sesscache", "serve", "--port", "0", f"--tls{version}",
         "--store", f"sqlite:{tmp_path / 's.db'}", "--max-connections", "6", "--duration", "60",
         *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        port = None
        for line in server.stdout:
            found = re.search(r"TLS echo on 127\.0\.0\.1:(\d+)", line)
            if found:
                port = int(found.group(1))
                break
        assert port, server.stderr.read()
        base = f"{OPENSSL} s_client -connect 127.0.0.1:{port} -tls1_{version[-1]}"
        if version == "1.2" and mode == "default":
            script = f"sleep 1 | {base} -reconnect"
        else:
            # s_client -reconnect reconnects before TLS 1.3 tickets arrive, so it never
            # resumes TLS 1.3 (not even against openssl s_server); and with every lookup in
            # the store it can reconnect before the server's thread has written the first
            # session (OpenSSL calls the new-session callback after its Finished went out):
            # save and reuse instead, as a client resuming later does.
            script = f"sleep 0.5 | {base} -sess_out s.pem; " + \
                     "; ".join([f"sleep 0.5 | {base} -sess_in s.pem"] * 5)
        client = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=60,
                                cwd=tmp_path)
        out, _ = server.communicate(timeout=60)
    finally:
        server.kill()
    assert client.stdout.count("Reused,") == 5, client.stdout[-3000:]
    counters = json.loads(out.strip().splitlines()[-1].split("cache counters: ", 1)[1])
    # One full handshake, then 5 resumptions of its session. New sessions: TLS 1.2 makes
    # one, on the full handshake; TLS 1.3 (stateful tickets) two tickets after the full
    # handshake and one after each resumption.
    stores = 1 if version == "1.2" else 2 + 5
    if mode == "store-only":  # every resumption is looked up in the store, and found
        hits = 5
    else:
        # OpenSSL's internal cache answers. The second connection can come before the
        # first one's server thread has put the session there (it adds it to the internal
        # cache, then calls the new-session callback): that lookup then reaches the store,
        # after the write, and hits. So at most that one.
        hits = counters["hits"]
        assert hits in (0, 1), counters
    assert counters == {"hits": hits, "misses": 0, "stores": stores, "removes": 0,
                        "evictions": 0, "expired": 0, "rejected": 0, "errors": 0,
                        "oversize": 0, "stateless": 0}, counters


def test_stats_describes_a_store_without_its_sessions(tmp_path):
    from sesscache import SQLiteStore

    path = tmp_path / "s.db"
    store = SQLiteStore(str(path))
    store.set(b"key", b"secret-session-bytes", 60)
    store.close()
    result = _run("stats", "--store", f"sqlite:{path}")
    assert result.returncode == 0, result.stderr
    described = json.loads(result.stdout)
    assert described["entries"] == 1
    assert "secret-session-bytes" not in result.stdout


def test_unknown_store_is_a_clear_error():
    result = _run("stats", "--store", "mongodb://x")
    assert result.returncode == 2
    assert "unknown store" in result.stderr and "sqlite:PATH" in result.stderr


def test_help_is_plain_text_and_names_every_command():
    result = _run("--help")
    assert result.returncode == 0
    assert "``" not in result.stdout  # no reST markup in a terminal
    for command in ("demo", "serve", "check", "stats", "keys"):
        assert re.search(rf"^\s+{command}\s+\S", result.stdout, re.M), (command, result.stdout)
    assert "exit status: 0 when the command did its job" in result.stdout
    assert "sqlite:PATH" in result.stdout


def test_serve_refuses_a_store_that_cannot_work(tmp_path):
    result = _run("serve", "--port", "0", "--duration", "1", "--store", f"sqlite:{tmp_path / 'gone' / 's.db'}")
    assert result.returncode == 2
    assert f"serve cannot use the store sqlite:{tmp_path / 'gone' / 's.db'}" in result.stderr
    assert "does not exist" in result.stderr


def test_serve_starts_with_an_unreachable_store_and_says_so():
    from tests.integrations.harness import free_port

    url = f"redis://127.0.0.1:{free_port()}/0"
    result = _run("serve", "--port", "0", "--duration", "1", "--store", url)
    assert result.returncode == 0, result.stderr
    assert f"the store {url} is unreachable" in result.stderr and "serving anyway" in result.stderr


def test_serve_names_a_certificate_it_cannot_load(tmp_path):
    result = _run("serve", "--port", "0", "--duration", "1", "--cert", str(tmp_path / "missing.pem"))
    assert result.returncode == 2
    assert f"cannot load the certificate {tmp_path / 'missing.pem'}" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_on_a_port_in_use_is_exit_2():
    import socket

    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = _run("serve", "--port", str(port), "--duration", "1")
    assert result.returncode == 2
    assert "sesscache serve: OSError" in result.stderr and "Traceback" not in result.stderr


def test_keys_refuses_a_store_of_its_own_process():
    result = _run("keys", "--store", "memory", "show")
    assert result.returncode == 2
    assert "'memory' is a store inside this command's own process" in result.stderr


def test_keys_on_a_store_nobody_serves_is_exit_2():
    from tests.integrations.harness import free_port

    result = _run("keys", "--store", f"redis://127.0.0.1:{free_port()}/0", "show")
    assert result.returncode == 2 and "cannot reach Redis" in result.stderr
