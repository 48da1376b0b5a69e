"""Shared ticket keys across processes: real servers in their own processes, outside
clients (``openssl s_client``, the stdlib), a fleet of workers, and the command line."""
from __future__ import annotations

import random
import shutil
import socket
import ssl
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

import sesscache
from sesscache.ticket_keys import decode_ring, read_ring, RING_KEY

from tests.processes import race
from tests.servers import EchoServer
from tests.tls import TLS12, TLS13, PyOpenSSLStack, StdlibStack, _stdlib_session

OPENSSL = shutil.which("openssl")
FLEET_SERVER = str(Path(__file__).with_name("fleet_server.py"))


@contextmanager
def fleet_server(store_url, certfile, workers, stack="stdlib", version="default"):
    proc = subprocess.Popen([sys.executable, FLEET_SERVER, store_url, certfile, str(workers), stack, version],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.strip().isdigit(), f"the fleet server did not start: {line!r} {proc.stderr.read()[-2000:]}"
        yield int(line)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def connect(port, client_ctx, session=None):
    """One connection: (resumed as the client saw it, worker pid, the newest session)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with client_ctx.wrap_socket(raw, server_hostname="localhost", session=session) as tls:
            tls.sendall(b"hi\n")
            reply = b""
            while not reply.endswith(b"\n"):
                chunk = tls.recv(64)
                if not chunk:
                    break
                reply += chunk
            pid, server_says = reply.split()
            assert bool(int(server_says)) == tls.session_reused
            # Read through the driver that accounts for CPython's own session leak.
            return tls.session_reused, int(pid), _stdlib_session(tls)


def client_context(certs, version=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(certs.ca_pem)
    if version is not None:
        ctx.minimum_version = ctx.maximum_version = {TLS12: ssl.TLSVersion.TLSv1_2,
                                                     TLS13: ssl.TLSVersion.TLSv1_3}[version]
    return ctx


@pytest.mark.parametrize("stack", ["stdlib", "pyopenssl"])
def test_a_ticket_from_one_process_resumes_in_another(stack, version, certs, tmp_path):
    url = f"sqlite:{tmp_path / 'keys.db'}"
    client = client_context(certs, version)
    with fleet_server(url, certs.server_pem, 1, stack, version) as one, \
            fleet_server(url, certs.server_pem, 1, stack, version) as two:
        reused, pid_one, session = connect(one, client)
        assert not reused
        reused, pid_two, _ = connect(two, client, session)
    assert pid_one != pid_two
    assert reused, "the other process resumed the first one's ticket"


def _fleet_resumption(url, certs, version, connections=300):
    client = client_context(certs, version)
    rng = random.Random(13)
    resumed, pids = [], {}
    with fleet_server(url, certs.server_pem, 4) as one, fleet_server(url, certs.server_pem, 4) as two:
        session = None
        for _ in range(connections):
            port = rng.choice((one, two))
            reused, pid, session = connect(port, client, session)
            resumed.append(reused)
            pids.setdefault(port, set()).add(pid)
    return resumed, pids


@pytest.mark.parametrize("store_kind", ["sqlite", pytest.param("redis", marks=pytest.mark.needs_redis)])
def test_a_fleet_of_two_servers_by_four_workers_resumes_at_least_99_percent(store_kind, certs, tmp_path,
                                                                              request):
    """Default tickets (TLS 1.3 negotiated), a client reconnecting to a random server.
    Without shared keys this is uvicorn's 3/299 and gunicorn's 0/299."""
    if store_kind == "sqlite":
        url = f"sqlite:{tmp_path / 'keys.db'}"
    else:
        url = request.getfixturevalue("redis_url")
    resumed, pids = _fleet_resumption(url, certs, None)
    later = resumed[1:]
    assert not resumed[0]
    assert sum(later) / len(later) >= 0.99, f"{sum(later)}/{len(later)} resumed"
    assert all(len(workers) >= 2 for workers in pids.values()), f"connections reached too few workers: {pids}"


def test_a_tls12_fleet_resumes_at_least_99_percent(certs, tmp_path):
    resumed, _ = _fleet_resumption(f"sqlite:{tmp_path / 'keys.db'}", certs, TLS12, connections=200)
    later = resumed[1:]
    assert sum(later) / len(later) >= 0.99, f"{sum(later)}/{len(later)} resumed"


# --- one rotation for a whole fleet --------------------------------------------------------

def _rotate_when_due(kind, where, prefix):
    from sesscache.stores import SQLiteStore

    if kind == "sqlite":
        store = SQLiteStore(where, timeout=10)
    else:
        from sesscache.stores.redis import RedisStore
        store = RedisStore(where, prefix=prefix, timeout=5)
    keys = sesscache.TicketKeys(store, rotate_every=60, background=False)  # finds the rotation due
    try:
        return keys.stats.rotations, keys.stats.store_errors, [k.key_id for k in keys.keys()]
    finally:
        keys.close()
        store.close()


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("redis", marks=pytest.mark.needs_redis)])
def test_a_rotation_due_in_eight_processes_makes_exactly_one_new_key(kind, store_factory, request):
    store = store_factory(kind)
    # A ring whose rotation time passed 5 s ago.
    old = sesscache.TicketKeys(store, rotate_every=60, background=False, clock=lambda: time.time() - 65)
    before = {k.key_id for k in old.keys()}
    old.close()
    where = store.path if kind == "sqlite" else request.getfixturevalue("redis_url")
    outcomes = race(8, _rotate_when_due, kind, where, getattr(store, "prefix", b""))
    assert sum(rotations for rotations, _, _ in outcomes) == 1
    assert all(errors == 0 for _, errors, _ in outcomes)
    assert len({tuple(ids) for _, _, ids in outcomes}) == 1, "every process serves the same ring"
    info = read_ring(store)
    assert info.generation == 2
    new = {k.key_id for k in info.keys} - before
    assert len(new) == 1, "exactly one new key"


# --- outside clients -------------------------------------------------------------------

def _s_client(port, version, extra, cwd):
    assert OPENSSL, "the openssl command is needed (apt-get install openssl)"
    flag = {TLS12: "-tls1_2", TLS13: "-tls1_3"}[version]
    # stdin stays open a moment so TLS 1.3 tickets arrive before s_client hangs up.
    command = f"sleep 0.5 | {OPENSSL} s_client -connect 127.0.0.1:{port} {flag} {extra}"
    result = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=30, cwd=cwd)
    return result.stdout + result.stderr


@pytest.mark.parametrize("stack_cls", [PyOpenSSLStack, StdlibStack], ids=["pyopenssl", "stdlib"])
def test_openssl_s_client_resumes_on_a_second_server_sharing_only_the_store(certs, stack_cls, version,
                                                                            tmp_path):
    stack = stack_cls(certs)
    store = sesscache.SQLiteStore(tmp_path / "keys.db")
    contexts = [stack.server_context(version, tickets=True, internal_cache=True) for _ in range(2)]
    keys = [sesscache.TicketKeys(store, background=False) for _ in contexts]
    for k, ctx in zip(keys, contexts):
        k.attach(ctx)
    try:
        with EchoServer(contexts[0], max_connections=1) as one, EchoServer(contexts[1], max_connections=2) as two:
            first = _s_client(one.port, version, "-sess_out sess.pem", tmp_path)
            assert "New," in first, first[-2000:]
            second = _s_client(two.port, version, "-sess_in sess.pem", tmp_path)
            assert "Reused," in second, second[-2000:]
            # The same ticket with one bit of its encrypted state flipped: a full handshake.
            _tamper_pem(tmp_path / "sess.pem", tmp_path / "bad.pem", bytes.fromhex(keys[0].keys()[1].key_id))
            third = _s_client(two.port, version, "-sess_in bad.pem", tmp_path)
            assert "New," in third, third[-2000:]
        assert two.reused == [True, False], two.errors
        assert (keys[1].stats.resumed, keys[1].stats.rejected) == (1, 1)
    finally:
        for k in keys:
            k.close()
        store.close()


def _tamper_pem(src: Path, dst: Path, key_name: bytes) -> None:
    import base64

    lines = src.read_text().split("-----")
    der = bytearray(base64.b64decode("".join(lines[2].split())))
    at = der.find(key_name)
    assert at > 0
    der[at + 16 + 16 + 4] ^= 0x01
    body = base64.encodebytes(bytes(der)).decode()
    dst.write_text(f"-----BEGIN SSL SESSION PARAMETERS-----\n{body}-----END SSL SESSION PARAMETERS-----\n")


# --- the command line ------------------------------------------------------------------

def test_keys_show_and_rotate_print_ids_and_ages_never_key_bytes(tmp_path):
    store = sesscache.SQLiteStore(tmp_path / "keys.db")
    keys = sesscache.TicketKeys(store, background=False)
    url = f"sqlite:{tmp_path / 'keys.db'}"
    shown = subprocess.run([sys.executable, "-m", "sesscache", "keys", "show", "--store", url],
                           capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    current = keys.keys()[1]
    assert current.role == "current" and current.key_id in shown.stdout
    assert "generation 1" in shown.stdout
    ring = decode_ring(store.get(RING_KEY), None, RING_KEY)
    for _, key in ring.keys():
        secret = bytes(key.material[16:])
        for form in (secret.hex(), secret[:16].hex(), secret[16:48].hex(), secret[:8].hex()):
            assert form not in shown.stdout and form not in shown.stderr
    next_id = ring.next.name.hex()
    ring.wipe()

    rotated = subprocess.run([sys.executable, "-m", "sesscache", "keys", "rotate", "--store", url],
                             capture_output=True, text=True, timeout=60)
    assert rotated.returncode == 0, rotated.stderr
    assert "generation 2" in rotated.stdout
    keys.refresh()
    assert keys.keys()[1].key_id == next_id, "the fleet's next key is current now"
    keys.close()
    store.close()


def test_keys_made_before_a_fork_keep_refreshing_in_each_worker(tmp_path):
    """gunicorn --preload: the TicketKeys is made in the master; each forked worker gets
    a refresh thread of its own (threads do not survive fork) and sees a rotation."""
    import os

    store = sesscache.SQLiteStore(tmp_path / "keys.db")
    keys = sesscache.TicketKeys(store, refresh_every=0.1)
    before = keys.keys()[1].key_id
    pid = os.fork()
    if pid == 0:  # the worker
        code = 1
        try:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                current = [k.key_id for k in keys.keys() if k.role == "current"]
                if current and current[0] != before and keys._thread.is_alive():
                    code = 0
                    break
                time.sleep(0.05)
        finally:
            os._exit(code)
    try:
        other = sesscache.TicketKeys(sesscache.SQLiteStore(tmp_path / "keys.db"), background=False)
        other.rotate()  # another process rotates the fleet
        other.close()
    finally:
        _, status = os.waitpid(pid, 0)
        keys.close()
        store.close()
    assert os.WEXITSTATUS(status) == 0, "the forked worker never saw the rotation"
