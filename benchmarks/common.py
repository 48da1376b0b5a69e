"""What every benchmark shares: certificates, lean handshake drivers, interleaved timing.

The drivers run real TLS handshakes between two endpoints in this process over memory
BIOs (or over a TCP connection on 127.0.0.1), with as little Python around OpenSSL as
each stack allows, so that what differs between two arms of a comparison is the session
cache and nothing else. They time the whole connection (both ends, clean shutdown
included) and, separately, the server's own calls: the client's work is the same in
every arm and only dilutes a ratio, so the server-side ratio is the sharper one.

Timing rule on a shared machine: never compare lone absolute times. Every comparison
runs its arms in interleaved rounds (each round runs one block per arm, in an order
shuffled per round) and reports the median and spread of per-round ratios.
"""
from __future__ import annotations

import gc
import os
import platform
import random
import select
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import sesscache

TLS12 = "TLSv1.2"
TLS13 = "TLSv1.3"
SID_CTX = b"bench"
SERVER_NAME = "localhost"
KEY_TYPES = ("ecdsa", "rsa")


# --- certificates ---------------------------------------------------------------------

@dataclass
class Certs:
    ca_pem: str
    server_pem: str  # chain + key for localhost and 127.0.0.1
    key_type: str


_CERTS: Dict[str, Certs] = {}
_CERT_DIR: Optional[tempfile.TemporaryDirectory] = None


def certs(key_type: str = "ecdsa") -> Certs:
    """A CA and a server certificate: ECDSA P-256 or RSA-2048 (trustme's two kinds)."""
    global _CERT_DIR
    if key_type in _CERTS:
        return _CERTS[key_type]
    import trustme

    if _CERT_DIR is None:
        _CERT_DIR = tempfile.TemporaryDirectory(prefix="sesscache-bench-")
    kind = {"ecdsa": trustme.KeyType.ECDSA, "rsa": trustme.KeyType.RSA}[key_type]
    ca = trustme.CA(key_type=kind)
    leaf = ca.issue_cert("localhost", "127.0.0.1", key_type=kind)
    folder = Path(_CERT_DIR.name)
    result = Certs(str(folder / f"ca-{key_type}.pem"), str(folder / f"server-{key_type}.pem"), key_type)
    ca.cert_pem.write_to_path(result.ca_pem)
    leaf.private_key_and_cert_chain_pem.write_to_path(result.server_pem)
    _CERTS[key_type] = result
    return result


# --- stacks -----------------------------------------------------------------------------

class Stack:
    """One TLS library: contexts, and a resumed (or full) handshake over memory BIOs."""

    name = "?"

    def server_context(self, version: str, key_type: str, *, mode: Optional[int] = None) -> Any:
        raise NotImplementedError

    def client_context(self, key_type: str) -> Any:
        raise NotImplementedError

    def connect(self, server_ctx, client_ctx, session=None, renew=False) -> Tuple[bool, float, Any]:
        """One connection: handshake, TLS 1.3 ticket delivery, clean shutdown both ways.

        Returns (server resumed the session, seconds spent in the server's calls, the
        client's session when ``session`` is None, or when ``renew`` and the server did
        not resume; else None).
        """
        raise NotImplementedError


class PyOpenSSLStack(Stack):
    name = "pyopenssl"

    def __init__(self) -> None:
        from OpenSSL import SSL

        self.SSL = SSL
        self._lib = SSL._lib
        self.WantRead = SSL.WantReadError

    def server_context(self, version, key_type, *, mode=None):
        SSL = self.SSL
        c = certs(key_type)
        ctx = SSL.Context(SSL.TLS_SERVER_METHOD)
        ctx.use_certificate_chain_file(c.server_pem)
        ctx.use_privatekey_file(c.server_pem)
        number = {TLS12: SSL.TLS1_2_VERSION, TLS13: SSL.TLS1_3_VERSION}[version]
        ctx.set_min_proto_version(number)
        ctx.set_max_proto_version(number)
        ctx.set_options(SSL.OP_NO_TICKET)  # TLS 1.2 session ids, TLS 1.3 stateful tickets
        sesscache.set_session_id_context(ctx, SID_CTX)
        if mode is not None:
            sesscache.set_session_cache_mode(ctx, mode)
        return ctx

    def client_context(self, key_type):
        SSL = self.SSL
        ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
        ctx.load_verify_locations(certs(key_type).ca_pem)
        ctx.set_verify(SSL.VERIFY_PEER)
        return ctx

    def connect(self, server_ctx, client_ctx, session=None, renew=False):
        SSL, WantRead, perf = self.SSL, self.WantRead, time.perf_counter
        server_time = 0.0
        t = perf()
        server = SSL.Connection(server_ctx)
        server.set_accept_state()
        server_time += perf() - t
        client = SSL.Connection(client_ctx)
        client.set_connect_state()
        client.set_tlsext_host_name(SERVER_NAME.encode())
        if session is not None:
            client.set_session(session)
        client_done = server_done = False
        for _ in range(8):
            if not client_done:
                try:
                    client.do_handshake()
                    client_done = True
                except WantRead:
                    pass
            data = _pyopenssl_drain(client, WantRead)
            t = perf()
            if data:
                server.bio_write(data)
            if not server_done:
                try:
                    server.do_handshake()
                    server_done = True
                except WantRead:
                    pass
            out = _pyopenssl_drain(server, WantRead)
            server_time += perf() - t
            if out:
                client.bio_write(out)
            if client_done and server_done:
                break
        else:
            raise RuntimeError("pyOpenSSL handshake did not complete")
        try:  # TLS 1.3 tickets arrive after the handshake
            client.recv(1)
        except WantRead:
            pass
        t = perf()
        reused = bool(self._lib.SSL_session_reused(server._ssl))
        server.shutdown()  # close_notify: the session stays resumable
        out = _pyopenssl_drain(server, WantRead)
        server_time += perf() - t
        client.bio_write(out)
        client.shutdown()
        got = client.get_session() if session is None or (renew and not reused) else None
        t = perf()
        del server
        server_time += perf() - t
        return reused, server_time, got


def _pyopenssl_drain(conn, WantRead) -> bytes:
    try:
        return conn.bio_read(65536)
    except WantRead:
        return b""


class StdlibStack(Stack):
    name = "stdlib"

    def server_context(self, version, key_type, *, mode=None):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(certs(key_type).server_pem)
        ctx.minimum_version = ctx.maximum_version = {
            TLS12: ssl.TLSVersion.TLSv1_2, TLS13: ssl.TLSVersion.TLSv1_3}[version]
        ctx.options |= ssl.OP_NO_TICKET
        sesscache.set_session_id_context(ctx, SID_CTX)
        if mode is not None:
            sesscache.set_session_cache_mode(ctx, mode)
        return ctx

    def client_context(self, key_type):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(certs(key_type).ca_pem)
        return ctx

    def connect(self, server_ctx, client_ctx, session=None, renew=False):
        MemoryBIO, WantRead, perf = ssl.MemoryBIO, ssl.SSLWantReadError, time.perf_counter
        c_in, c_out, s_in, s_out = MemoryBIO(), MemoryBIO(), MemoryBIO(), MemoryBIO()
        server_time = 0.0
        client = client_ctx.wrap_bio(c_in, c_out, server_hostname=SERVER_NAME, session=session)
        t = perf()
        server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
        server_time += perf() - t
        client_done = server_done = False
        for _ in range(8):
            if not client_done:
                try:
                    client.do_handshake()
                    client_done = True
                except WantRead:
                    pass
            t = perf()
            s_in.write(c_out.read())
            if not server_done:
                try:
                    server.do_handshake()
                    server_done = True
                except WantRead:
                    pass
            out = s_out.read()
            server_time += perf() - t
            c_in.write(out)
            if client_done and server_done:
                break
        else:
            raise RuntimeError("stdlib handshake did not complete")
        try:
            client.read(1)
        except WantRead:
            pass
        t = perf()
        reused = server.session_reused
        try:
            server.unwrap()  # sends close_notify, then wants the client's
        except WantRead:
            pass
        out = s_out.read()
        server_time += perf() - t
        c_in.write(out)
        try:
            client.unwrap()
        except (WantRead, ssl.SSLError):
            pass
        # Reading SSLObject.session leaks one SSL_SESSION on CPython 3.10-3.12.6
        # (python/cpython#116810): read it only for the pool, never per handshake.
        got = client.session if session is None or (renew and not reused) else None
        t = perf()
        del server
        server_time += perf() - t
        return reused, server_time, got


STACKS = {"pyopenssl": PyOpenSSLStack, "stdlib": StdlibStack}


def stack(name: str) -> Stack:
    return STACKS[name]()


# --- the arms of a comparison ----------------------------------------------------------

INTERNAL = "internal"  # OpenSSL's internal cache only, no hooks
SC_L1 = "sesscache-l1"  # SessionCache(MemoryStore), internal_cache=True, session made here
SC_STORE = "sesscache-store"  # another context sharing the store; internal_cache=False
SC_OTHER = "sesscache-other"  # another context sharing the store, attached with attach's defaults
SC_OTHER_L1 = "sesscache-other-l1"  # the same with OpenSSL's internal cache in front (internal_cache=True)
DICT_L1 = "dict-l1"  # raw callbacks over a dict, internal cache on
DICT_STORE = "dict-store"  # raw callbacks over a dict, another context, no internal cache


def dict_cache(ctx, table: Dict[bytes, bytes]) -> None:
    """The plain baseline: a dict of DER bytes over the raw callback layer."""

    def on_new(conn, session):
        table[session.id] = session.to_bytes()

    def on_get(conn, session_id):
        return table.get(session_id)

    sesscache.set_new_session_callback(ctx, on_new)
    sesscache.set_get_session_callback(ctx, on_get)


@dataclass
class Arm:
    """A server context ready to resume, with the pool of client sessions that resume on it."""

    name: str
    server_ctx: Any
    client_ctx: Any
    sessions: List[Any]
    keep: Any = None  # what must stay alive with the arm (the cache, the making context)


def build_arm(st: Stack, name: str, version: str, key_type: str, pool: int = 16,
              store_factory: Optional[Callable[[], Any]] = None, seal_keys: Optional[List[bytes]] = None) -> Arm:
    """Make the arm's server context and ``pool`` client sessions that resume on it.

    For the "another process" arms the sessions are made by a first context sharing the
    store, and resumed on a second one whose internal cache never saw them: off for
    SC_STORE (every resumption goes through the get callback and the store), attach's
    default for SC_OTHER (off over a store C answers; on in front of a store answered in
    Python, where the first lookup of each session goes to the store, OpenSSL copies the
    session into the context's cache and later ones are answered there).
    """
    client_ctx = st.client_context(key_type)
    mode_internal = sesscache.SESS_CACHE_SERVER
    mode_external = sesscache.SESS_CACHE_SERVER | sesscache.SESS_CACHE_NO_INTERNAL
    keep: List[Any] = []
    if name == INTERNAL:
        maker = server = st.server_context(version, key_type, mode=mode_internal)
    elif name in (SC_L1, SC_STORE, SC_OTHER, SC_OTHER_L1):
        store = store_factory() if store_factory else sesscache.MemoryStore()
        cache = sesscache.SessionCache(store=store, lifetime=300, seal_keys=seal_keys)
        keep.append(cache)
        maker = st.server_context(version, key_type)
        cache.attach(maker, session_id_context=SID_CTX, internal_cache=True)
        if name == SC_L1:
            server = maker
        else:
            server = st.server_context(version, key_type)
            # SC_OTHER: attach's own default (over a store C answers, every lookup to the store)
            internal = {SC_OTHER: None, SC_OTHER_L1: True}.get(name, False)
            cache.attach(server, session_id_context=SID_CTX, internal_cache=internal)
    elif name in (DICT_L1, DICT_STORE):
        table: Dict[bytes, bytes] = {}
        keep.append(table)
        maker = st.server_context(version, key_type, mode=mode_internal)
        dict_cache(maker, table)
        if name == DICT_L1:
            server = maker
        else:
            server = st.server_context(version, key_type, mode=mode_external)
            dict_cache(server, table)
    else:
        raise ValueError(name)
    keep.append(maker)
    sessions = []
    for _ in range(pool):
        reused, _, session = st.connect(maker, client_ctx)
        assert not reused and session is not None
        sessions.append(session)
    arm = Arm(name, server, client_ctx, sessions, keep)
    check = run_block(st, arm, 4)
    if check.reused != 4:
        raise RuntimeError(f"{st.name} {version} {name}: only {check.reused}/4 resumed while warming up")
    return arm


#: Fraction of each block's connections kept (the fastest ones) for its rates. The slowest
#: tenth is where the scheduler preempted us on a shared machine: the same share is dropped
#: in every arm, so a constant per-handshake cost (what a hook adds) survives intact.
KEEP = 0.9


def trimmed_mean(values: Sequence[float], keep: float = KEEP) -> float:
    xs = sorted(values)
    k = max(1, int(len(xs) * keep))
    return sum(xs[:k]) / k


@dataclass
class BlockResult:
    n: int
    reused: int
    wall: float  # seconds for the whole connections (both ends), all of them
    server: float  # seconds inside the server's calls, all of them
    pair_times: List[float]  # per connection
    server_times: List[float]

    @property
    def pair_seconds(self) -> float:
        """Trimmed mean seconds per connection (both ends)."""
        return trimmed_mean(self.pair_times)

    @property
    def server_seconds(self) -> float:
        """Trimmed mean seconds per connection in the server's calls."""
        return trimmed_mean(self.server_times)

    @property
    def rate(self) -> float:
        return 1.0 / self.pair_seconds

    @property
    def server_rate(self) -> float:
        return 1.0 / self.server_seconds


def run_block(st: Stack, arm: Arm, n: int, connect: Optional[Callable] = None) -> BlockResult:
    connect = connect or st.connect
    server_ctx, client_ctx, sessions = arm.server_ctx, arm.client_ctx, arm.sessions
    pool = len(sessions)
    reused = 0
    pair_times: List[float] = []
    server_times: List[float] = []
    perf = time.perf_counter
    t0 = perf()
    for i in range(n):
        t = perf()
        r, s, _ = connect(server_ctx, client_ctx, sessions[i % pool])
        pair_times.append(perf() - t)
        server_times.append(s)
        reused += r
    wall = perf() - t0
    return BlockResult(n, reused, wall, sum(server_times), pair_times, server_times)


# --- interleaved rounds ----------------------------------------------------------------------

def interleave(arms: Dict[str, Callable[[], BlockResult]], rounds: int, *, seed: int = 1,
               progress: Optional[Callable[[int], None]] = None) -> Dict[str, List[BlockResult]]:
    """Run one block of every arm per round, in an order shuffled per round.

    The garbage collector is off inside a round (collected between rounds) so that a
    collection does not land in one arm's block by chance.
    """
    rng = random.Random(seed)
    results: Dict[str, List[BlockResult]] = {name: [] for name in arms}
    names = list(arms)
    enabled = gc.isenabled()
    try:
        for _ in range(rounds):
            rng.shuffle(names)
            gc.collect()
            gc.disable()
            for name in names:
                results[name].append(arms[name]())
            gc.enable()
            if progress:
                progress(1)
    finally:
        if enabled:
            gc.enable()
    return results


def summarize(values: Sequence[float]) -> Dict[str, float]:
    """Median and spread (interquartile range, min, max) of per-round values."""
    xs = sorted(values)
    if not xs:
        return {"median": float("nan"), "p25": float("nan"), "p75": float("nan"),
                "min": float("nan"), "max": float("nan"), "n": 0}
    if len(xs) >= 4:
        q = statistics.quantiles(xs, n=4, method="inclusive")
        p25, p75 = q[0], q[2]
    else:
        p25, p75 = xs[0], xs[-1]
    return {"median": statistics.median(xs), "p25": p25, "p75": p75, "min": xs[0], "max": xs[-1],
            "n": len(xs)}


def percentile(sorted_values: Sequence[float], p: float) -> float:
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, int(round(p / 100.0 * (len(sorted_values) - 1)))))
    return sorted_values[k]


# --- the machine -----------------------------------------------------------------------------

def machine_info() -> Dict[str, Any]:
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: Dict[str, Any] = {
        "nproc": os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "sesscache": sesscache.__version__,
        "loadavg_start": _loadavg(),
    }
    try:
        from OpenSSL import SSL
        import OpenSSL
        import cryptography

        info["pyopenssl"] = OpenSSL.__version__
        info["cryptography"] = cryptography.__version__
        info["openssl_pyopenssl"] = sesscache.libssl_info(SSL.Context(SSL.TLS_METHOD)).version
    except Exception as exc:  # pragma: no cover - reported, the pyOpenSSL cases then fail
        info["openssl_pyopenssl"] = f"unavailable ({exc})"
    info["openssl_stdlib"] = sesscache.libssl_info(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)).version
    info["openssl_linked"] = sesscache.libssl_info().version
    try:
        info["git"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                     text=True, cwd=Path(__file__).parent, timeout=5).stdout.strip()
    except Exception:  # pragma: no cover
        info["git"] = "?"
    return info


def _loadavg() -> Optional[List[float]]:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return None


def rss_bytes() -> int:
    """Resident set size of this process (VmRSS from /proc/self/status)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


# --- over TCP on 127.0.0.1 ---------------------------------------------------------------

class Loopback:
    """A listening socket on 127.0.0.1; each connection is a fresh TCP connection to it."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=64)
        self.address = self.listener.getsockname()

    def pair(self) -> Tuple[socket.socket, socket.socket]:
        client = socket.create_connection(self.address, timeout=5)
        server, _ = self.listener.accept()
        for s in (client, server):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.setblocking(False)
        return client, server

    def close(self) -> None:
        self.listener.close()


def _wait_any(socks, timeout: float = 5.0) -> None:
    readable, _, _ = select.select(socks, [], [], timeout)
    if not readable:
        raise TimeoutError("loopback peer did not answer within 5 s")


def socket_connect(st: Stack, loop: Loopback, server_ctx, client_ctx, session) -> Tuple[bool, float, Any]:
    """Like ``Stack.connect`` but over a real TCP connection on 127.0.0.1 (same thread,
    non-blocking sockets, both ends driven in turn)."""
    perf = time.perf_counter
    csock, ssock = loop.pair()
    server_time = 0.0
    ends = [csock, ssock]  # what select() waits on (stdlib wraps, detaching the originals)
    try:
        if st.name == "stdlib":
            WantRead = ssl.SSLWantReadError
            client = client_ctx.wrap_socket(csock, server_hostname=SERVER_NAME, session=session,
                                            do_handshake_on_connect=False)
            t = perf()
            server = server_ctx.wrap_socket(ssock, server_side=True, do_handshake_on_connect=False)
            server_time += perf() - t
            ends = [client, server]

            def ticket():
                client.recv(1)
        else:
            SSL = st.SSL
            WantRead = SSL.WantReadError
            client = SSL.Connection(client_ctx, csock)
            client.set_connect_state()
            client.set_tlsext_host_name(SERVER_NAME.encode())
            if session is not None:
                client.set_session(session)
            t = perf()
            server = SSL.Connection(server_ctx, ssock)
            server.set_accept_state()
            server_time += perf() - t

            def ticket():
                client.recv(1)
        client_done = server_done = False
        for _ in range(40):
            progressed = False
            if not client_done:
                try:
                    client.do_handshake()
                    client_done = progressed = True
                except WantRead:
                    pass
            if not server_done:
                t = perf()
                try:
                    server.do_handshake()
                    server_done = progressed = True
                except WantRead:
                    pass
                server_time += perf() - t
            if client_done and server_done:
                break
            if not progressed:
                _wait_any(ends)
        else:
            raise RuntimeError("loopback handshake did not complete")
        # TLS 1.3 tickets follow the server's last flight; on loopback a send is in the
        # peer's receive queue when it returns, so there is nothing to wait for.
        try:
            ticket()
        except WantRead:
            pass
        t = perf()
        if st.name == "stdlib":
            reused = server.session_reused
            try:
                server.unwrap()
            except (WantRead, ssl.SSLError):
                pass
        else:
            reused = bool(st._lib.SSL_session_reused(server._ssl))
            server.shutdown()
        server_time += perf() - t
        try:
            if st.name == "stdlib":
                client.unwrap()
            else:
                client.shutdown()
        except (WantRead, ssl.SSLError, OSError):
            pass
        except Exception:  # pyOpenSSL errors on a half-closed socket: harmless here
            pass
        got = None
        if session is None:
            got = client.session if st.name == "stdlib" else client.get_session()
        return reused, server_time, got
    finally:
        for end in ends:
            end.close()
