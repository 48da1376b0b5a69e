"""Fixtures for the store tests: real redis-server and memcached processes, no mocks.

``redis_url`` and ``memcached_server`` are shared by a whole test run: the address from
``SESSCACHE_TEST_REDIS_URL`` / ``SESSCACHE_TEST_MEMCACHED`` if set, otherwise a private server on
a unix socket in a temporary directory. ``redis_servers`` and ``memcached_servers`` start private
servers for one test, with helpers to kill, pause (SIGSTOP), resume and restart them.

A missing server binary fails the run when ``CI`` is set (CI must not skip silently) and skips
the tests that need it otherwise.
"""
from __future__ import annotations

import itertools
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Callable, List, Optional

import pytest

try:
    import sesscache  # noqa: F401
except ImportError:  # not installed: test the checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from sesscache.stores import MemoryStore, SQLiteStore  # noqa: E402

STORE_KINDS = [
    pytest.param("memory"),
    pytest.param("sqlite"),
    pytest.param("redis", marks=pytest.mark.needs_redis),
    pytest.param("memcached", marks=pytest.mark.needs_memcached),
]

# Contract tests are not about latency: a loaded CI machine must not turn them into timeouts.
RELAXED_TIMEOUT = 5.0


def unique_prefix() -> bytes:
    return b"t" + uuid.uuid4().hex[:16].encode("ascii") + b":"


def _need_binary(binary: str, package: str, env: str) -> str:
    path = shutil.which(binary)
    if path:
        return path
    reason = (
        f"{binary} is not installed (apt-get install {package}); install it or set {env} "
        "to a server the tests may use"
    )
    if os.environ.get("CI"):
        pytest.fail(f"CI must run every store test: {reason}", pytrace=False)
    pytest.skip(reason)


def _need_module(name: str, purpose: str = "store", extras: str = "test") -> None:
    """Skip (fail under CI) when a store's client library (or a server) is not installed."""
    try:
        __import__(name)
    except ImportError:
        reason = f"the {name} package is not installed: pip install -e '.[{extras}]'"
        if os.environ.get("CI"):
            pytest.fail(f"CI must run every {purpose} test: {reason}", pytrace=False)
        pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ask(address: Any, request: bytes, expect: Any) -> bool:
    family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.settimeout(0.5)
            s.connect(address)
            s.sendall(request)
            return s.recv(64).startswith(expect)
    except OSError:
        return False


class ServerProcess:
    """A server process the tests own: start, stop, kill, pause, resume, restart."""

    name = "server"

    def __init__(self, workdir: Path, *, tcp: bool = False, extra_args: tuple = ()) -> None:
        self.workdir = workdir
        self.tcp = tcp
        self.port = _free_port() if tcp else 0
        self.socket_path = str(workdir / f"{self.name}.sock")
        self.extra_args = list(extra_args)
        self.proc: Optional[subprocess.Popen] = None
        self.log_path = workdir / f"{self.name}.log"

    @property
    def address(self) -> Any:
        return ("127.0.0.1", self.port) if self.tcp else self.socket_path

    def argv(self) -> List[str]:  # pragma: no cover - overridden
        raise NotImplementedError

    def ping(self) -> bool:  # pragma: no cover - overridden
        raise NotImplementedError

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.argv(), stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir
            )
        deadline = time.monotonic() + 10
        while not self.ping():
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with status {self.proc.returncode}: {self._log_tail()}"
                )
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"{self.name} did not answer within 10 s: {self._log_tail()}")
            time.sleep(0.01)

    def kill(self) -> None:
        """SIGKILL: the server vanishes without closing anything cleanly."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def pause(self) -> None:
        """SIGSTOP: connections stay open but nothing answers."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)

    def restart(self) -> None:
        self.kill()
        self.start()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(0.5)
            except subprocess.TimeoutExpired:  # memcached lingers ~1 s; nothing to keep
                self.kill()

    def _log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-2000:]
        except OSError:
            return "(no log)"


class RedisServer(ServerProcess):
    name = "redis"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0" if self.tcp else f"unix://{self.socket_path}"

    def argv(self) -> List[str]:
        argv = [
            "redis-server",
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.workdir),
            "--daemonize", "no",
        ]
        if not self.tcp:
            argv += ["--unixsocket", self.socket_path, "--unixsocketperm", "700"]
        return argv + self.extra_args

    def ping(self) -> bool:
        return _ask(self.address, b"PING\r\n", (b"+PONG", b"-NOAUTH"))  # NOAUTH: up, with a password


class MemcachedServer(ServerProcess):
    name = "memcached"

    @property
    def spec(self) -> Any:
        """What MemcachedStore takes as ``server``."""
        return self.address

    def argv(self) -> List[str]:
        argv = ["memcached", "-m", "64", "-t", "2"]
        if self.tcp:
            argv += ["-l", "127.0.0.1", "-p", str(self.port), "-U", "0"]
        else:
            argv += ["-s", self.socket_path, "-a", "0700"]
        if os.geteuid() == 0:
            argv += ["-u", "root"]  # memcached refuses to run as root without it
        return argv + self.extra_args

    def ping(self) -> bool:
        return _ask(self.address, b"version\r\n", b"VERSION")


def _memcached_spec_from_env(value: str) -> Any:
    if value.startswith("/") or value.startswith("unix:"):
        return value
    host, _, port = value.rpartition(":")
    return (host or value, int(port) if port.isdigit() else 11211)


# -- shared servers -----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory):
    url = os.environ.get("SESSCACHE_TEST_REDIS_URL")
    if url:
        yield url
        return
    _need_binary("redis-server", "redis-server", "SESSCACHE_TEST_REDIS_URL")
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server.url
    server.stop()


@pytest.fixture(scope="session")
def memcached_server(tmp_path_factory: pytest.TempPathFactory):
    value = os.environ.get("SESSCACHE_TEST_MEMCACHED")
    if value:
        yield _memcached_spec_from_env(value)
        return
    _need_binary("memcached", "memcached", "SESSCACHE_TEST_MEMCACHED")
    server = MemcachedServer(tmp_path_factory.mktemp("memcached"))
    server.start()
    yield server.spec
    server.stop()


# -- private servers for fault tests ------------------------------------------------------------


def _private_servers(tmp_path_factory, server_class, binary: str, override_env: str, folder: str):
    """A ``start(**kwargs)`` making running servers of one kind; stops them when resumed."""
    started: List[ServerProcess] = []

    def start(**kwargs: Any) -> ServerProcess:
        _need_binary(binary, binary, override_env)
        server = server_class(tmp_path_factory.mktemp(folder), **kwargs)
        started.append(server)
        server.start()
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def redis_servers(tmp_path_factory: pytest.TempPathFactory):
    """``start(tcp=False, extra_args=())`` -> a running RedisServer, stopped after the test."""
    yield from _private_servers(tmp_path_factory, RedisServer, "redis-server",
                                "SESSCACHE_TEST_REDIS_URL", "redis-private")


@pytest.fixture
def memcached_servers(tmp_path_factory: pytest.TempPathFactory):
    """``start(tcp=False, extra_args=())`` -> a running MemcachedServer, stopped after the test."""
    yield from _private_servers(tmp_path_factory, MemcachedServer, "memcached",
                                "SESSCACHE_TEST_MEMCACHED", "memcached-private")


# -- stores -------------------------------------------------------------------------------------


@pytest.fixture
def store_factory(request: pytest.FixtureRequest, tmp_path: Path):
    """``make(kind, **kwargs)`` -> a fresh, empty store of that kind, closed after the test.

    Redis and memcached stores get a unique prefix, so tests sharing a server do not meet.
    """
    made: List[Any] = []
    numbers = itertools.count()

    def make(kind: str, **kwargs: Any) -> Any:
        if kind == "memory":
            store = MemoryStore(**kwargs)
        elif kind == "sqlite":
            kwargs.setdefault("timeout", RELAXED_TIMEOUT)
            store = SQLiteStore(tmp_path / f"sessions{next(numbers)}.db", **kwargs)
        elif kind == "redis":
            _need_module("redis")
            from sesscache.stores.redis import RedisStore

            url = request.getfixturevalue("redis_url")
            kwargs.setdefault("prefix", unique_prefix())
            kwargs.setdefault("timeout", RELAXED_TIMEOUT)
            store = RedisStore(url, **kwargs)
        elif kind == "memcached":
            _need_module("pymemcache")
            from sesscache.stores.memcached import MemcachedStore

            server = request.getfixturevalue("memcached_server")
            kwargs.setdefault("prefix", unique_prefix())
            kwargs.setdefault("timeout", RELAXED_TIMEOUT)
            store = MemcachedStore(server, **kwargs)
        elif kind == "shm":
            from sesscache.stores.shm import SharedMemoryStore

            # Slots large enough for the contract's 512 KiB values, and enough of them
            # (about 300) for its 100 keys: a real segment, its file removed at once.
            kwargs.setdefault("max_entry_size", 513 * 1024)
            store = SharedMemoryStore(f"contract-{os.getpid()}-{next(numbers)}-{unique_prefix().hex()}",
                                      kwargs.pop("size", 160 * 2**20), **kwargs)
            store.unlink()
        else:  # pragma: no cover
            raise ValueError(kind)
        made.append(store)
        return store

    yield make
    for store in made:
        store.close()


@pytest.fixture(params=STORE_KINDS)
def store_kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def store(store_kind: str, store_factory: Callable[..., Any]) -> Any:
    return store_factory(store_kind)
