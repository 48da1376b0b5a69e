"""Real Redis topologies for the fleet tests, all local processes: a 3-master Redis Cluster, a
master and replica watched by a Sentinel, a TLS-only Redis with an ACL user.

Import the fixtures into a test module (``from tests.fleet_fixtures import redis_cluster``).
Like tests/server_fixtures.py, a missing redis-server fails the run when ``CI`` is set.
"""
from __future__ import annotations

import socket
import ssl
import subprocess
import time
from pathlib import Path
from typing import Any, List

import pytest

from tests.server_fixtures import RedisServer, _free_port, _need_binary, _need_module


def _free_port_pair() -> tuple:
    """Two distinct free ports (a cluster node's client port and its bus port)."""
    first = _free_port()
    second = _free_port()
    while second == first:
        second = _free_port()
    return first, second


def _wait_until(ready, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} within {timeout} s")
        time.sleep(0.1)


def _need_redis_tools(what: str) -> None:
    reason = f"({what} cannot come from the environment)"
    _need_binary("redis-server", "redis-server", reason)
    _need_binary("redis-cli", "redis-tools", reason)
    _need_module("redis")


def _cli(*args: str, timeout: float = 30) -> str:
    done = subprocess.run(["redis-cli", *args], capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"redis-cli {' '.join(args)} failed: {done.stdout} {done.stderr}")
    return done.stdout


class ClusterNode(RedisServer):
    """One master of a Redis Cluster on 127.0.0.1; its nodes.conf survives a restart, so a
    killed node comes back as the same node with the same slots (and no data)."""

    name = "cluster-node"

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir, tcp=True)
        self.port, self.bus_port = _free_port_pair()

    def argv(self) -> List[str]:
        return super().argv() + [
            "--cluster-enabled", "yes",
            "--cluster-config-file", str(self.workdir / "nodes.conf"),
            "--cluster-port", str(self.bus_port),
            "--cluster-node-timeout", "1000",
            # A session cache with one master down still serves the others' slots.
            "--cluster-require-full-coverage", "no",
        ]

    @property
    def name_in_cluster(self) -> str:
        return f"127.0.0.1:{self.port}"


class Cluster:
    def __init__(self, nodes: List[ClusterNode]) -> None:
        self.nodes = nodes

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(n.name_in_cluster for n in self.nodes)

    def node(self, name: str) -> ClusterNode:
        return next(n for n in self.nodes if n.name_in_cluster == name)

    def wait_ok(self, timeout: float = 30) -> None:
        for node in self.nodes:
            _wait_until(lambda: "cluster_state:ok" in _cli("-p", str(node.port), "cluster", "info"),
                        f"{node.name_in_cluster} did not report cluster_state:ok", timeout)


@pytest.fixture
def redis_cluster(tmp_path_factory: pytest.TempPathFactory):
    """A running 3-master cluster (no replicas), stopped after the test."""
    _need_redis_tools("a cluster")
    nodes = [ClusterNode(tmp_path_factory.mktemp("cluster")) for _ in range(3)]
    try:
        for node in nodes:
            node.start()
        _cli("--cluster", "create", *[n.name_in_cluster for n in nodes], "--cluster-replicas", "0",
             "--cluster-yes", timeout=60)
        cluster = Cluster(nodes)
        cluster.wait_ok()
        yield cluster
    finally:
        for node in nodes:
            node.stop()


# -- Sentinel -------------------------------------------------------------------------------------


class SentinelProcess(RedisServer):
    name = "sentinel"

    def __init__(self, workdir: Path, master_port: int, service: str) -> None:
        super().__init__(workdir, tcp=True)
        self.master_port, self.service = master_port, service

    def argv(self) -> List[str]:
        config = self.workdir / "sentinel.conf"
        config.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {self.workdir}\n"
            f"sentinel monitor {self.service} 127.0.0.1 {self.master_port} 1\n"
            f"sentinel down-after-milliseconds {self.service} 500\n"
            f"sentinel failover-timeout {self.service} 2000\n"
            f"sentinel parallel-syncs {self.service} 1\n")
        return ["redis-server", str(config), "--sentinel"]

    def master(self) -> tuple:
        host, port = _cli("-p", str(self.port), "--raw", "sentinel", "get-master-addr-by-name",
                          self.service).split()
        return host, int(port)


class SentinelSetup:
    def __init__(self, master: RedisServer, replica: RedisServer, sentinel: SentinelProcess) -> None:
        self.master, self.replica, self.sentinel = master, replica, sentinel
        self.service = sentinel.service

    @property
    def url(self) -> str:
        return f"redis+sentinel://127.0.0.1:{self.sentinel.port}/{self.service}"

    def wait_master(self, port: int, timeout: float = 30) -> None:
        _wait_until(lambda: self.sentinel.master()[1] == port,
                    f"sentinel did not name 127.0.0.1:{port} master", timeout)


@pytest.fixture
def redis_sentinel(tmp_path_factory: pytest.TempPathFactory):
    """A master, its replica and one Sentinel watching them (quorum 1, down after 0.5 s)."""
    _need_redis_tools("a sentinel setup")
    started: List[RedisServer] = []
    try:
        master = RedisServer(tmp_path_factory.mktemp("master"), tcp=True)
        master.start()
        started.append(master)
        replica = RedisServer(tmp_path_factory.mktemp("replica"), tcp=True,
                              extra_args=("--replicaof", "127.0.0.1", str(master.port)))
        replica.start()
        started.append(replica)
        _wait_until(lambda: "master_link_status:up" in _cli("-p", str(replica.port), "info", "replication"),
                    "the replica did not sync with its master")
        sentinel = SentinelProcess(tmp_path_factory.mktemp("sentinel"), master.port, "sesscache")
        sentinel.start()
        started.append(sentinel)
        setup = SentinelSetup(master, replica, sentinel)
        _wait_until(lambda: "slaves=1" in _cli("-p", str(sentinel.port), "info", "sentinel"),
                    "the sentinel did not find the replica")
        yield setup
    finally:
        for server in started:
            server.stop()


# -- TLS with an ACL user -----------------------------------------------------------------------------

ACL_USER = "sessions"
ACL_PASSWORD = "tls-and-acl-pw"


class TlsRedis(RedisServer):
    """redis-server speaking TLS only (``--port 0 --tls-port``), with an ACL user allowed the
    store's commands on its own key pattern, and the default user turned off."""

    name = "redis-tls"

    def __init__(self, workdir: Path, ca: Any, cert: Any) -> None:
        super().__init__(workdir, tcp=True)
        self.ca_path = str(workdir / "ca.pem")
        self.cert_path = str(workdir / "server.pem")
        self.key_path = str(workdir / "server.key")
        ca.cert_pem.write_to_path(self.ca_path)
        cert.cert_chain_pems[0].write_to_path(self.cert_path)
        cert.private_key_pem.write_to_path(self.key_path)
        (workdir / "users.acl").write_text(
            f"user default off\n"
            f"user {ACL_USER} on >{ACL_PASSWORD} ~sesscache:* ~t* +get +set +del +getdel "
            f"+multi +exec +ping +info +dbsize +hello +client\n"
            # The same, plus what bounded reads need (stores/_read_bounds.py).
            f"user {ACL_USER}-bounded on >{ACL_PASSWORD} ~sesscache:* ~t* +get +getrange +exists +set "
            f"+del +getdel +multi +exec +ping +info +dbsize +hello +client\n")

    def argv(self) -> List[str]:
        return ["redis-server", "--port", "0", "--tls-port", str(self.port), "--bind", "127.0.0.1",
                "--tls-cert-file", self.cert_path, "--tls-key-file", self.key_path,
                "--tls-ca-cert-file", self.ca_path, "--tls-auth-clients", "no",
                "--aclfile", str(self.workdir / "users.acl"),
                "--save", "", "--appendonly", "no", "--dir", str(self.workdir)]

    def ping(self) -> bool:
        context = ssl.create_default_context(cafile=self.ca_path)
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as raw:
                with context.wrap_socket(raw, server_hostname="localhost") as tls:
                    tls.sendall(b"PING\r\n")
                    return tls.recv(64).startswith(b"-NOAUTH")
        except OSError:
            return False

    def url(self, user: str = ACL_USER, password: str = ACL_PASSWORD) -> str:
        return f"rediss://{user}:{password}@localhost:{self.port}/0"


@pytest.fixture
def redis_tls(tmp_path_factory: pytest.TempPathFactory):
    _need_binary("redis-server", "redis-server", "(a TLS server cannot come from the environment)")
    _need_module("redis")
    import trustme

    ca = trustme.CA()
    server = TlsRedis(tmp_path_factory.mktemp("redis-tls"), ca, ca.issue_cert("localhost"))
    server.start()
    yield server
    server.stop()
