"""The ``sesscache`` command: ``demo``, ``serve``, ``check``, ``stats`` and ``keys``.

* ``python -m sesscache demo``: a TLS server and a client that reconnects many times, on
  the embedded default store; prints the resumption rate and how much faster resumed
  handshakes are than full ones.
* ``python -m sesscache serve --port 8443 --cert C --key K --store sqlite:/var/lib/x.db``:
  a TLS echo server with the cache, to try with outside clients
  (``openssl s_client -connect 127.0.0.1:8443 -reconnect``).
* ``python -m sesscache check HOST:PORT [-n N] [--server-name NAME] [--expect PERCENT]``: does
  a server resume sessions, which kind (session id, stateful or stateless ticket), and how
  much faster (:mod:`sesscache.check`).
* ``python -m sesscache stats --store redis://127.0.0.1:6379``: what a store holds (never
  the sessions themselves), and every server process that publishes its counters there,
  with its resumption rate and the total; exits 1 when the store cannot be read.
* ``python -m sesscache keys --store URL``: the shared session-ticket key ring
  (:mod:`sesscache.cli_keys`).

``--help`` says the same in plain text (:data:`DESCRIPTION`, :data:`EPILOG`).
"""
from __future__ import annotations

import argparse
import json
import logging
import signal
import socket
import ssl
import statistics
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path
from typing import Any, List, Optional, Sequence

from .cache import SessionCache
from .errors import ConfigurationError, SesscacheError
from .stores.urls import STORE_URL_FORMS, redacted_store_url, store_from_url


#: What ``python -m sesscache --help`` says first (plain text: a terminal shows it as written).
DESCRIPTION = """\
sesscache: an external TLS session cache for Python servers. Run
`python -m sesscache COMMAND --help` for a command's options."""

#: The end of ``--help``.
EPILOG = """\
examples:
  python -m sesscache demo
  python -m sesscache check shop.example.com:443 --expect 99
  python -m sesscache serve --port 8443 --store sqlite:/tmp/sessions.db
  python -m sesscache stats --store redis://127.0.0.1:6379/0
  python -m sesscache keys --store redis://127.0.0.1:6379/0

exit status: 0 when the command did its job; 1 when it ran but found less than asked
(check: a protocol below --expect; demo: a row below 95 %); 2 when it could not do its job
(a bad argument, a store or certificate it cannot use, a server it cannot reach).

""" + textwrap.fill("store URLs: " + STORE_URL_FORMS + ".", width=90)


# --- stores from the command line --------------------------------------------------

def open_store(spec: str) -> Any:
    """The store a ``--store`` argument names: see :func:`sesscache.store_from_url`."""
    return store_from_url(spec)


# --- a small threaded TLS echo server ------------------------------------------------

class EchoServer:
    """Echoes each connection's data back, closing with close_notify so sessions stay
    resumable (a connection freed without it has its session thrown away by OpenSSL)."""

    def __init__(self, context: ssl.SSLContext, host: str = "127.0.0.1", port: int = 0) -> None:
        self.context = context
        self.listener = socket.create_server((host, port), backlog=128)
        self.port = self.listener.getsockname()[1]
        self.connections = 0
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._accept_loop, name="sesscache-echo", daemon=True)

    def start(self) -> "EchoServer":
        self._thread.start()
        return self

    def _accept_loop(self) -> None:
        self.listener.settimeout(0.2)
        while not self._stopping.is_set():
            try:
                sock, _ = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        sock.settimeout(10)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            with self.context.wrap_socket(sock, server_side=True) as tls:
                self.connections += 1
                while True:
                    data = tls.recv(16384)
                    if not data:
                        break
                    tls.sendall(data)
                try:
                    tls.unwrap()
                except (ssl.SSLError, OSError):
                    pass
        except (ssl.SSLError, OSError):
            pass  # a client that gives up or speaks something else
        finally:
            sock.close()

    def stop(self) -> None:
        self._stopping.set()
        self.listener.close()
        self._thread.join(timeout=2)


def server_context(certfile: str, keyfile: Optional[str], version: Optional[str]) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(certfile, keyfile)
    if version == "1.2":
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    elif version == "1.3":
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    # TLS 1.3 tickets are stateless by default: the client carries the session and a
    # server-side cache is never asked. OP_NO_TICKET makes them stateful, served by the
    # cache (and TLS 1.2 then resumes by session id, which the cache serves too).
    ctx.options |= ssl.OP_NO_TICKET
    return ctx


# --- demo --------------------------------------------------------------------------------

def _handshake_once(port: int, client: ssl.SSLContext, session=None):
    start = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with client.wrap_socket(raw, server_hostname="localhost", session=session) as tls:
            elapsed = time.perf_counter() - start
            tls.sendall(b"x")
            tls.recv(1)  # also lets TLS 1.3 session tickets arrive
            reused = tls.session_reused
            new_session = tls.session if session is None else None
            try:
                tls.unwrap()
            except (ssl.SSLError, OSError):
                pass
    return elapsed, reused, new_session


def _demo_row(certfile: str, cafile: str, version: str, connections: int):
    cache = SessionCache()  # the embedded default: MemoryStore, 300 s lifetime
    ctx = server_context(certfile, None, version)
    # internal_cache=False: every resumption below is answered by the cache, not by
    # OpenSSL's in-process cache, so the numbers show the cache at work.
    cache.attach(ctx, session_id_context=b"sesscache-demo", internal_cache=False)
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.load_verify_locations(cafile)
    server = EchoServer(ctx).start()
    full: List[float] = []
    resumed: List[float] = []
    reused_count = 0
    session = None
    try:
        for i in range(connections):
            # Every 10th connection starts afresh, for a fair sample of full handshakes.
            fresh = session is None or i % 10 == 0
            elapsed, reused, new_session = _handshake_once(server.port, client, None if fresh else session)
            if fresh:
                full.append(elapsed)
                session = new_session
            else:
                resumed.append(elapsed)
                reused_count += reused
    finally:
        server.stop()
    return len(resumed), reused_count, statistics.median(full), statistics.median(resumed), cache.stats


def run_demo(connections: int, key_types: Sequence[str], out=sys.stdout) -> int:
    from ._certs import make_self_signed

    print(f"sesscache demo: a TLS echo server on 127.0.0.1 with SessionCache on the embedded "
          f"MemoryStore;\na client reconnects {connections} times per row, offering its session "
          f"(every 10th connection starts afresh).\n", file=out)
    print(f"{'certificate':<12} {'protocol':<9} {'resumed':>15} {'full':>9} {'resumed':>9} "
          f"{'speed-up':>9}   cache: hits/misses/stores", file=out)
    worst = 1.0
    with tempfile.TemporaryDirectory(prefix="sesscache-demo-") as folder:
        for key_type in key_types:
            certfile, cafile = make_self_signed(Path(folder), key_type)
            for version in ("1.2", "1.3"):
                attempts, reused, full_median, resumed_median, stats = _demo_row(
                    certfile, cafile, version, connections)
                rate = reused / attempts if attempts else 0.0
                worst = min(worst, rate)
                label = {"ec": "ECDSA P-256", "rsa": "RSA 2048"}[key_type]
                print(f"{label:<12} TLS {version:<5} {reused:>5}/{attempts:<4} {rate:>4.0%} "
                      f"{full_median * 1000:>6.2f} ms {resumed_median * 1000:>6.2f} ms "
                      f"{full_median / resumed_median:>8.1f}x   {stats.hits}/{stats.misses}/{stats.stores}",
                      file=out, flush=True)
    print("\nresumed: handshakes that resumed / attempts to resume. full, resumed: median "
          "handshake time seen by the client\n(TCP connect included). speed-up: full / resumed. "
          "TLS 1.3 resumption still runs a key exchange,\nso it saves less than TLS 1.2's.", file=out)
    return 0 if worst >= 0.95 else 1


# --- serve and stats -----------------------------------------------------------------------

def run_serve(args) -> int:
    store = open_store(args.store)
    _refuse_a_store_that_cannot_work(args.store, store)
    seal_keys = None
    if args.seal_key_file:
        seal_keys = [bytes.fromhex(line.strip()) for line in Path(args.seal_key_file).read_text().splitlines()
                     if line.strip()]
    cache = SessionCache(store, lifetime=args.lifetime, seal_keys=seal_keys)
    if args.cert:
        certfile, keyfile = args.cert, args.key
    else:
        certfile, _ = __import__("sesscache._certs", fromlist=["x"]).make_self_signed(
            Path(tempfile.mkdtemp(prefix="sesscache-serve-")))
        keyfile = None
        print(f"no --cert given: using a throwaway self-signed certificate {certfile}", flush=True)
    try:
        ctx = server_context(certfile, keyfile, args.tls)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigurationError(f"serve cannot load the certificate {certfile}"
                                 f"{' and key ' + keyfile if keyfile else ''} ({type(exc).__name__}: {exc}): "
                                 "give --cert a PEM file holding the chain (and the key, or --key)") from None
    cache.attach(ctx, session_id_context=args.session_id_context.encode(),
                 internal_cache=False if args.no_internal_cache else None)
    server = EchoServer(ctx, args.host, args.port).start()
    print(f"sesscache serve: TLS echo on {args.host}:{server.port}, store {redacted_store_url(args.store)}, "
          f"lifetime {args.lifetime:.0f} s, sealed: {'yes' if seal_keys else 'no'}", flush=True)
    print(f"try: openssl s_client -connect {args.host}:{server.port} -reconnect", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    deadline = time.monotonic() + args.duration if args.duration else None
    try:
        while not stop.is_set():
            stop.wait(1.0)
            if deadline and time.monotonic() >= deadline:
                break
            if args.max_connections and server.connections >= args.max_connections:
                time.sleep(0.5)
                break
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    print("cache counters: " + json.dumps(cache.stats.as_dict()), flush=True)
    return 0


def _refuse_a_store_that_cannot_work(url: str, store: Any) -> None:
    """As the server integrations do: a store that cannot work stops ``serve`` (exit 2), one
    that is unreachable is said and ``serve`` starts."""
    from .integrations._startup import REFUSE, master_problem, probe_store

    problem = master_problem(url) or probe_store(store, url)
    if problem is None:
        return
    if problem.refuses(REFUSE):
        raise ConfigurationError(f"serve cannot use the store {problem.store}: {problem.cause}")
    print(f"sesscache serve: the store {problem.store} is unreachable ({problem.cause}); serving anyway, "
          f"with full handshakes until it answers", file=sys.stderr, flush=True)


def refuse_a_store_of_this_process(spec: str, command: str) -> None:
    """``memory`` names a store inside the command's own process: empty, and gone when it
    exits. A command that reads a server's store cannot do its job on it."""
    if spec.strip() == "memory":
        raise ConfigurationError(f"{command} reads a store the servers share, and 'memory' is a store inside "
                                 f"this command's own process (empty, gone when it exits): name the servers' "
                                 f"store, e.g. sqlite:/var/lib/app/tls-sessions.db or redis://HOST:6379/0")


def run_stats(args) -> int:
    """What the store holds and every process publishing its counters there
    (sesscache.metrics.stats_command): exit 0 when the store was read, 1 when it could not be."""
    from .metrics.stats_command import run_stats as stats_of_store

    return stats_of_store(args.store, open_store, table=args.table, out=sys.stdout, err=sys.stderr)


def run_check_command(args) -> int:
    import ipaddress

    from .check import parse_target, run_check

    if args.n < 1:
        raise ConfigurationError(f"-n must be at least 1, got {args.n}")
    if args.expect is not None and not 0 <= args.expect <= 100:
        raise ConfigurationError(f"--expect is a percentage from 0 to 100, got {args.expect:g}")
    server_name = args.server_name
    if server_name is None:
        host = parse_target(args.target)[0]
        try:
            ipaddress.ip_address(host)
        except ValueError:
            server_name = host  # a name: send it, as a browser would
    return run_check(args.target, args.n, server_name=server_name, expect=args.expect,
                     protocols=args.protocol or ("1.2", "1.3"), cafile=args.cafile)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sesscache", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                     title="commands")

    demo = commands.add_parser("demo", help="a TLS server and client on the embedded store: "
                                            "resumption rate and handshake speed-up")
    demo.add_argument("--connections", type=int, default=200, help="per protocol (default 200)")
    demo.add_argument("--key", choices=["ec", "rsa", "both"], default="both",
                      help="certificate key type (default: both)")

    serve = commands.add_parser("serve", help="a TLS echo server with the session cache, to try other "
                                               "clients against")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8443, help="0 picks a free port")
    serve.add_argument("--cert", help="certificate chain PEM (may hold the key too); "
                                      "default: a throwaway self-signed one")
    serve.add_argument("--key", help="private key PEM, if not in --cert")
    serve.add_argument("--store", default="memory",
                       help=STORE_URL_FORMS)
    group = serve.add_mutually_exclusive_group()
    group.add_argument("--tls1.2", dest="tls", action="store_const", const="1.2", help="TLS 1.2 only")
    group.add_argument("--tls1.3", dest="tls", action="store_const", const="1.3", help="TLS 1.3 only")
    serve.add_argument("--lifetime", type=float, default=300.0, help="session lifetime in seconds")
    serve.add_argument("--session-id-context", default="sesscache",
                       help="the same in every server sharing the store")
    serve.add_argument("--seal-key-file", help="file with hex AES keys, one per line; first seals")
    serve.add_argument("--no-internal-cache", action="store_true",
                       help="send every lookup to the store (the default over a store answered in C: memory, shm:, a Redis replica)")
    serve.add_argument("--max-connections", type=int, default=0, help="stop after this many")
    serve.add_argument("--duration", type=float, default=0, help="stop after this many seconds")

    check = commands.add_parser("check", help="does a TLS server resume sessions, which kind, how much "
                                               "faster, and what that means for several workers")
    check.add_argument("target", metavar="HOST:PORT")
    check.add_argument("-n", type=int, default=100, help="resumption attempts per protocol (default 100)")
    check.add_argument("--server-name", help="SNI name to send (default: none for an address, HOST otherwise)")
    check.add_argument("--expect", type=float, metavar="PERCENT",
                       help="exit 1 when a protocol resumes less than this")
    check.add_argument("--cafile", help="verify the server's certificate against these CAs "
                                        "(default: no verification; check measures, it does not authenticate)")
    check.add_argument("--protocol", choices=["1.2", "1.3"], action="append",
                       help="only this protocol (repeatable; default: 1.2 and 1.3)")

    stats = commands.add_parser("stats", help="what a store holds (never the sessions) and, per process "
                                              "publishing its counters there, the resumption rate; "
                                              "exit 1 when the store cannot be read")
    stats.add_argument("--store", required=True, help="the store the servers share (not memory)")
    stats.add_argument("--table", action="store_true",
                       help="a line per process and a total line instead of one JSON document")

    from .cli_keys import add_keys_command
    add_keys_command(commands, "as for serve")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "demo":
            return run_demo(args.connections, ["ec", "rsa"] if args.key == "both" else [args.key])
        if args.command == "serve":
            return run_serve(args)
        if args.command == "check":
            return run_check_command(args)
        if args.command == "keys":
            from .cli_keys import run_keys
            refuse_a_store_of_this_process(args.store, "keys")
            return run_keys(args, open_store)
        return run_stats(args)
    except SesscacheError as exc:
        print(f"sesscache: {exc}", file=sys.stderr)
        return 2
    except (OSError, ssl.SSLError) as exc:  # a certificate it cannot load, a port in use, ...
        print(f"sesscache {args.command}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
