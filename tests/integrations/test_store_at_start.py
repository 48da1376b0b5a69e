"""Each server, started for real as an operator would, with a store that cannot work or cannot be
reached (issue 20):

* misconfigured (a SQLite directory that does not exist, a Redis password the server refuses, an
  ACL user that may not SET):
  the server refuses to start within 10 s, its output (stderr, where each logs by default)
  naming the store, secrets redacted, and the cause;
* unreachable (a Redis nobody serves): the server starts, says so at once, and names the store
  within a second of the first failing lookup;
* ``on_store_error="warn"``: it starts in both cases, and logs.

The Redis with a password is a private redis-server started here with ``requirepass``.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integrations.harness import SERVERS, ServerProcess, free_port, need_package, write_apps

#: The servers of issue 20's list, and gunicorn's uvicorn worker (it takes gunicorn's hooks).
NAMES = ["gunicorn sync", "gunicorn gthread", "uvicorn", "gunicorn + UvicornWorker", "hypercorn",
         "Twisted (twist web)", "Daphne"]
REFUSE_WITHIN = 10.0
PASSWORD = "the-right-one"
WRONG = "not-the-password"


def _argv(name: str, folder: Path, certfile: str, store: str, warn: bool = False):
    package, make_argv = SERVERS[name]
    need_package(package)
    write_apps(folder)
    port = free_port()
    return make_argv(folder, certfile, port, store, warn=warn), port


def _env(folder: Path):
    return dict(os.environ, PYTHONPATH=str(folder) + os.pathsep + os.environ.get("PYTHONPATH", ""),
                SESSCACHE_TEST_PIDS=str(folder / "pids"))


def _refused(name: str, folder: Path, certfile: str, store: str) -> "tuple[int, str, float]":
    """Run the server; it must exit by itself within REFUSE_WITHIN seconds."""
    argv, port = _argv(name, folder, certfile, store)
    start = time.monotonic()
    process = subprocess.Popen(argv, cwd=folder, env=_env(folder), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        output, _ = process.communicate(timeout=REFUSE_WITHIN + 5)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, 9)
        output, _ = process.communicate()
        raise AssertionError(f"{name} did not refuse to start:\n{output.decode(errors='replace')[-3000:]}")
    finally:
        try:
            os.killpg(process.pid, 9)  # workers a dying master left behind
        except ProcessLookupError:
            pass
    return process.returncode, output.decode(errors="replace"), time.monotonic() - start


def _lookups(port: int, n: int = 3) -> None:
    """Reconnections offering a session: lookups in whichever worker they reach (in a process
    of its own, as harness.measure does: CPython leaks a session per read, python/cpython#116810)."""
    subprocess.run([sys.executable, "-m", "sesscache", "check", "-n", str(n), "--server-name", "localhost",
                    f"127.0.0.1:{port}"], capture_output=True, timeout=60)


def _whole_log(server: ServerProcess) -> str:
    return server.log_path.read_text(errors="replace")


def _ours(log: str) -> str:
    """The log less Daphne's own lines naming each endpoint string as given (docs/servers/twisted.md
    says so: a password in an endpoint string is in Daphne's log at INFO)."""
    return "\n".join(line for line in log.splitlines()
                     if "Configuring endpoint" not in line and "Starting server at" not in line)


@pytest.fixture(params=["missing directory", "wrong Redis password", "Redis ACL user without SET"])
def misconfigured(request, tmp_path):
    """(store URL, how the log shows it, words of the cause) for a store that cannot work."""
    if request.param == "missing directory":
        url = f"sqlite:{tmp_path / 'no-such-dir' / 'sessions.db'}"
        return url, url, "does not exist"
    if request.param == "Redis ACL user without SET":
        redis = request.getfixturevalue("redis_servers")(
            tcp=True, extra_args=("--user", "reader", "on", f">{WRONG}", "~*", "+get", "--user", "default", "off"))
        url = f"redis://reader:{WRONG}@127.0.0.1:{redis.port}/0"
        return url, f"redis://reader:***@127.0.0.1:{redis.port}/0", "denied the command"
    redis = request.getfixturevalue("redis_servers")(tcp=True, extra_args=("--requirepass", PASSWORD))
    url = f"redis://:{WRONG}@127.0.0.1:{redis.port}/0"
    return url, f"redis://:***@127.0.0.1:{redis.port}/0", "refused authentication"


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_a_misconfigured_store_stops_the_server(tmp_path, certs, name, misconfigured):
    store, shown, cause = misconfigured
    status, output, seconds = _refused(name, tmp_path, certs.server_pem, store)
    assert seconds < REFUSE_WITHIN, output
    assert status != 0, f"{name} exited 0:\n{output[-3000:]}"
    assert shown in output and cause in output, output[-3000:]
    assert "cannot work" in output, output[-3000:]
    assert WRONG not in _ours(output), "the password must not reach the log"


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_an_unreachable_store_starts_and_says_so(tmp_path, certs, name):
    nobody = f"redis://127.0.0.1:{free_port()}/0"
    argv, port = _argv(name, tmp_path, certs.server_pem, nobody)
    with ServerProcess(argv, tmp_path, port) as server:
        said = f"the session store {nobody} is unreachable"
        deadline = time.monotonic() + 2.0  # at once: as the workers boot
        while said not in _whole_log(server) and time.monotonic() < deadline:
            time.sleep(0.05)
        started = _whole_log(server)
        assert said in started, started
        # Reconnections offering sessions: in a server with workers, some reach another worker
        # and its lookup fails (one process answers them from OpenSSL's own cache, and the
        # store's failed writes are what it logs).
        _lookups(port, 5)
        deadline = time.monotonic() + 1.0  # the log names the store within a second
        while not _failures(_whole_log(server)[len(started):]) and time.monotonic() < deadline:
            time.sleep(0.05)
        server.check_alive()
        log = _whole_log(server)
    failing = _failures(log[len(started):])
    assert failing and f"Redis at {nobody[len('redis://'):].replace('/0', ' db=0')}" in failing[0], log


def _failures(log: str):
    one_process = "read failed" not in log
    return [line for line in log.splitlines()
            if "session store read failed" in line or (one_process and "session set failed" in line)]


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_warn_starts_with_a_misconfigured_store_and_logs(tmp_path, certs, name, misconfigured):
    store, shown, cause = misconfigured
    argv, port = _argv(name, tmp_path, certs.server_pem, store, warn=True)
    with ServerProcess(argv, tmp_path, port) as server:
        _lookups(port, 2)
        server.check_alive()
        log = _whole_log(server)
    assert shown in log and "Starting anyway (on_store_error='warn')" in log, log
    assert WRONG not in _ours(log)


@pytest.mark.slow
def test_gunicorn_serves_on_when_a_respawned_worker_finds_the_password_changed(tmp_path, certs, redis_servers):
    """Refusing is for the start: a worker respawned under a running gunicorn (the password was
    rotated meanwhile) logs the error and serves, and gunicorn does not halt."""
    import signal

    import redis as redis_py

    server_redis = redis_servers(tcp=True, extra_args=("--requirepass", PASSWORD))
    url = f"redis://:{PASSWORD}@127.0.0.1:{server_redis.port}/0"
    argv, port = _argv("gunicorn sync", tmp_path, certs.server_pem, url)
    with ServerProcess(argv, tmp_path, port) as server:
        client = redis_py.Redis(host="127.0.0.1", port=server_redis.port, password=PASSWORD)
        client.config_set("requirepass", "rotated")
        client.close()
        pid = server.process.pid
        workers = [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
        assert workers, server.log()
        os.kill(workers[0], signal.SIGKILL)
        deadline = time.monotonic() + 10
        while "respawned while serving" not in _whole_log(server) and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)
        server.check_alive()
        log = _whole_log(server)
    assert "respawned while serving" in log and "refused authentication" in log, log
    assert "Worker failed to boot" not in log and PASSWORD not in log
