"""A fleet of two TLS servers sharing sealed sessions through Redis: connect to A, resume on B.

Behind a load balancer, a client's next connection often reaches another server than the one
that made its session. Each server's OpenSSL only remembers its own sessions, so that costs a
full handshake. Here two server processes, A and B (think: two hosts), share nothing but a
Redis server and a sealing key:

* ``SessionCache(RedisStore(url), seal_keys=[key])`` on each: every new session is sealed
  (AES-GCM) and written to Redis with a time to live, and a session a server does not hold is
  looked up there.
* The client makes a full handshake on A, then connects to B offering that session: B finds it
  in Redis and resumes. Then back to A with the session B gave it: A resumes in turn.

Everything is local and thrown away at the end: a private redis-server on a unix socket in a
temporary directory, certificates made with trustme, TLS servers on 127.0.0.1.

Run it from a checkout (about a second):

    apt-get install redis-server    # or: brew install redis (it needs the redis-server binary)
    pip install -e '.[test]'        # or: pip install 'sesscache[redis,seal]' trustme
    python examples/fleet_redis.py

Without redis-server it says how to install it and exits with status 2. It prints::

    client -> server A, no session        : A: full handshake
    client -> server B, the session from A: B: resumed
    client -> server A, the session from B: A: resumed
    server A stats: hits=1 misses=0 stores=3 removes=0 evictions=0 expired=0 rejected=0 errors=0 ...
    server B stats: hits=1 misses=0 stores=1 removes=0 evictions=0 expired=0 rejected=0 errors=0 ...
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from typing import List, Optional

try:
    import redis  # noqa: F401  (RedisStore's client library)
    import trustme
except ImportError as exc:
    print(f"this example needs the redis and trustme packages ({exc}): pip install redis trustme",
          file=sys.stderr)
    sys.exit(2)

from sesscache import RedisStore, SessionCache
from sesscache.sealing import generate_key

# The session id context names the service. Every server of the fleet must use the same one:
# OpenSSL only resumes a session whose id context matches its own, and it is part of the key
# in Redis, so servers with different values never find each other's sessions (and two
# services sharing one Redis never resume each other's sessions, which is the point of it).
SERVICE = b"shop.example:443"
SERVER_SECONDS = 60  # a server gives up after this long, whatever happens to the parent


# --- Redis -----------------------------------------------------------------------------------


def start_redis(folder: str) -> subprocess.Popen:
    """A private redis-server on a unix socket in ``folder``, no TCP port, nothing saved."""
    path = os.path.join(folder, "redis.sock")
    server = subprocess.Popen(
        ["redis-server", "--port", "0", "--unixsocket", path, "--unixsocketperm", "700",
         "--save", "", "--appendonly", "no", "--dir", folder,
         # A session cache must never make Redis refuse writes: cap its memory and let it
         # evict the sessions closest to expiry (every session key has a time to live).
         "--maxmemory", "64mb", "--maxmemory-policy", "volatile-ttl"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(200):  # up to 10 s
        try:
            with socket.socket(socket.AF_UNIX) as probe:
                probe.connect(path)
                probe.sendall(b"PING\r\n")
                if probe.recv(16).startswith(b"+PONG"):
                    return server
        except OSError:
            pass
        if server.poll() is not None:
            break
        time.sleep(0.05)
    server.kill()
    raise RuntimeError("redis-server did not start (run it by hand to see why)")


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


# --- one server of the fleet (its own process) -------------------------------------------


def server(name: str, cert_path: str, redis_url: str, seal_keys: List[bytes], pipe) -> None:
    """Serve TLS on 127.0.0.1: tell each client whether its handshake resumed.

    Sends its port through ``pipe``, serves until the parent sends anything, then sends back
    its cache's counters.
    """
    logging.basicConfig(level=logging.WARNING, format=f"{name} %(levelname)s %(name)s: %(message)s")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert_path)
    # No session tickets: with tickets, a TLS 1.3 client carries its session encrypted under a
    # ticket key that only this server process knows, so B could never resume what A made.
    # Without them, TLS 1.3 hands out "stateful" tickets holding a session id, looked up here.
    ctx.options |= ssl.OP_NO_TICKET

    cache = SessionCache(RedisStore(redis_url), seal_keys=seal_keys, lifetime=300)
    cache.attach(ctx, session_id_context=SERVICE)

    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(0.2)
        pipe.send(listener.getsockname()[1])
        deadline = time.monotonic() + SERVER_SECONDS
        while time.monotonic() < deadline and not pipe.poll():
            try:
                sock, _ = listener.accept()
            except socket.timeout:
                continue
            sock.settimeout(5)
            try:
                with ctx.wrap_socket(sock, server_side=True) as tls:
                    tls.recv(1024)
                    how = "resumed" if tls.session_reused else "full handshake"
                    tls.sendall(f"{name}: {how}\n".encode())
                    try:
                        tls.unwrap()  # close_notify, so OpenSSL keeps the session resumable
                    except (OSError, ssl.SSLError):
                        pass  # the client left without answering it: nothing lost
            except (OSError, ssl.SSLError) as exc:
                print(f"server {name}: connection failed: {exc!r}", file=sys.stderr)
    pipe.send(cache.stats.as_dict())
    cache.close()


# --- the client ------------------------------------------------------------------------------


def connect(ctx: ssl.SSLContext, port: int, session: Optional[ssl.SSLSession]):
    """One connection; returns (what the server said, the newest session)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        # Both servers answer for the same name: SessionCache refuses to resume a session on
        # another SNI name than the one it was made for.
        with ctx.wrap_socket(raw, server_hostname="localhost", session=session) as tls:
            tls.sendall(b"hello\n")
            answer = tls.recv(1024).decode().strip()
            return answer, tls.session  # read after the reply: TLS 1.3 sessions come late


def main() -> int:
    if shutil.which("redis-server") is None:
        print("this example starts a private redis-server, which is not installed:\n"
              "    apt-get install redis-server     (Debian, Ubuntu)\n"
              "    brew install redis               (macOS)", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    # The sealing key. A stored session holds the secret keys of its connection: whoever
    # reads Redis could decrypt recorded TLS 1.2 traffic, or pose as the server to a client
    # coming back. Sealed, sessions are useless without the key, and a blob that was
    # tampered with or copied under another key is refused.
    # * Generate one once, and keep it out of Redis (a secret manager, a file readable only by
    #   the server user, an environment variable):
    #       python -c "import base64, sesscache.sealing as s; print(base64.b64encode(s.generate_key()).decode())"
    # * Every server gets the same keys. The first one seals; all of them open.
    # * Rotate (say daily) in three rolling deploys, so no server ever meets a key it lacks:
    #       1. seal_keys=[old, new]   every server can open `new`, `old` still seals
    #       2. seal_keys=[new, old]   `new` seals; sessions sealed with `old` still open
    #       3. seal_keys=[new]        once `lifetime` has passed since step 2
    #   A server that cannot open a session does a full handshake (counted in `rejected`);
    #   nothing fails.
    key = generate_key()

    with tempfile.TemporaryDirectory(prefix="sesscache-fleet-") as folder:
        ca = trustme.CA()
        ca_path = os.path.join(folder, "ca.pem")
        cert_path = os.path.join(folder, "server.pem")
        ca.cert_pem.write_to_path(ca_path)
        ca.issue_cert("localhost").private_key_and_cert_chain_pem.write_to_path(cert_path)

        redis_server = start_redis(folder)
        redis_url = "unix://" + os.path.join(folder, "redis.sock")
        # "spawn": each server starts from a fresh interpreter and shares nothing with the
        # other but Redis, as two hosts would.
        spawn = multiprocessing.get_context("spawn")
        servers = {}
        try:
            for name in ("A", "B"):
                parent_end, child_end = spawn.Pipe()
                process = spawn.Process(target=server, args=(name, cert_path, redis_url, [key], child_end))
                process.start()
                if not parent_end.poll(30):
                    raise RuntimeError(f"server {name} did not start")
                servers[name] = (process, parent_end, parent_end.recv())

            port = {name: entry[2] for name, entry in servers.items()}
            client = ssl.create_default_context(cafile=ca_path)  # one: sessions belong to it
            said, session = connect(client, port["A"], None)
            print(f"client -> server A, no session        : {said}")
            said, session = connect(client, port["B"], session)
            print(f"client -> server B, the session from A: {said}")
            said, session = connect(client, port["A"], session)
            print(f"client -> server A, the session from B: {said}")
        finally:
            stats = {}
            for name, (process, pipe, _) in servers.items():
                pipe.send("stop")
                if pipe.poll(10):
                    stats[name] = pipe.recv()
                process.join(10)
                if process.is_alive():
                    process.kill()
            stop(redis_server)

    # hits: sessions this server found in Redis, made by the other one (its own sessions it
    # finds first in OpenSSL's in-process cache, which asks nothing of Redis); stores: sessions sealed and written (TLS 1.3
    # gives 2 after a full handshake, 1 after each resumption); rejected: blobs refused
    # (tampered, sealed with a key this server lacks, another SNI name); errors: Redis faults,
    # each one a full handshake instead of a resumption, never a failed connection.
    for name in ("A", "B"):
        counters = stats.get(name)
        if counters is None:
            print(f"server {name} did not report (see its errors above)", file=sys.stderr)
            return 1
        print(f"server {name} stats: " + " ".join(f"{k}={v}" for k, v in counters.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
