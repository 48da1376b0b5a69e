"""``python -m sesscache check HOST:PORT``: does a TLS server resume sessions, how, and what
does it save?

For each protocol (TLS 1.2, TLS 1.3) a client connects ``n`` times offering the newest session it
holds (a TLS 1.3 resumption brings a new ticket, which the next connection offers), as browsers
and HTTP clients do. Every tenth attempt is preceded by a connection that offers nothing, for a
fair sample of full handshakes. After each handshake it sends one small HTTP request
(``GET / HTTP/1.0``) and reads until the server closes, so that TLS 1.3 tickets, which arrive
after the handshake, are received.

The kind of resumption is told from what the client sees:

* TLS 1.2 **session id**: the client offered the session id it was given and no ticket, and the
  server echoed that id (a server-side cache found it).
* TLS 1.2 **stateless ticket** (RFC 5077): the client offered a ticket the server had sent.
* TLS 1.3 **stateful ticket**: the PSK identity the client offered is at most 32 bytes, a lookup
  key (OpenSSL with ``SSL_OP_NO_TICKET`` sends the session id itself as the ticket).
* TLS 1.3 **stateless ticket**: a longer identity, the session encrypted under the server's
  ticket key.

A server resuming with stateless tickets resumes across its workers only when they share ticket
keys; one resuming by session id or stateful tickets only when they share a session cache.

The client does not check the certificate (it measures, it does not authenticate) unless given a
CA file. Timings are those of the handshake as the client sees it, TCP connect included, with
``TCP_NODELAY`` (without it a resumed TLS 1.2 handshake can wait ~40 ms for a delayed ACK).
"""
from __future__ import annotations

import socket
import ssl
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, TextIO

from .clienthello import ClientHelloError, NeedMoreData, parse_client_hello

__all__ = ["ProbeResult", "probe", "run_check", "PROTOCOLS"]

PROTOCOLS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}
SESSION_ID = "session id"
STATEFUL_TICKET = "stateful ticket"
STATELESS_TICKET = "stateless ticket"
#: OpenSSL's stateful TLS 1.3 ticket is the 32-byte session id; a stateless one is an
#: encrypted session of 100 bytes and more.
_MAX_LOOKUP_KEY = 32
_FRESH_EVERY = 10


@dataclass
class ProbeResult:
    """What :func:`probe` saw for one protocol."""

    protocol: str  #: "1.2" or "1.3"
    attempts: int = 0  #: connections that offered a session
    resumed: int = 0  #: of them, resumed
    kinds: Counter = field(default_factory=Counter)  #: kind of resumption -> count
    full_times: List[float] = field(default_factory=list)  #: seconds, handshakes without a session
    resumed_times: List[float] = field(default_factory=list)  #: seconds, resumed handshakes
    #: seconds, each attempt from connect to close (handshake, request, answer, close_notify)
    connection_times: List[float] = field(default_factory=list)
    error: Optional[str] = None  #: why the protocol could not be probed (refused, ...)
    failed: int = 0  #: attempts whose connection failed after the first had worked
    last_failure: Optional[str] = None  #: the last of those failures

    @property
    def rate(self) -> float:
        return self.resumed / self.attempts if self.attempts else 0.0

    @property
    def full_ms(self) -> Optional[float]:
        return statistics.median(self.full_times) * 1000 if self.full_times else None

    @property
    def resumed_ms(self) -> Optional[float]:
        return statistics.median(self.resumed_times) * 1000 if self.resumed_times else None

    @property
    def connection_ms(self) -> Optional[float]:
        """Median time of a whole connection that offered a session, in ms."""
        return statistics.median(self.connection_times) * 1000 if self.connection_times else None

    @property
    def kind(self) -> str:
        """The kind of most resumptions ("none" when nothing resumed; both when mixed)."""
        if not self.kinds:
            return "none"
        return ", ".join(f"{name} {count}" if len(self.kinds) > 1 else name
                         for name, count in self.kinds.most_common())

    def line(self) -> str:
        label = f"TLS {self.protocol}"
        if self.error is not None:
            return f"{label}  not probed: {self.error}"
        text = f"{label}  resumed {self.resumed}/{self.attempts} ({self.rate:.1%})  kind: {self.kind}"
        if self.full_ms is not None and self.resumed_ms is not None:
            text += (f"  full {self.full_ms:.2f} ms, resumed {self.resumed_ms:.2f} ms, "
                     f"speed-up {self.full_ms / self.resumed_ms:.2f}x")
        elif self.full_ms is not None:
            text += f"  full {self.full_ms:.2f} ms"
        if self.failed:
            text += f"  ({self.failed} connections failed, the last: {self.last_failure})"
        return text


@dataclass
class _Handshake:
    seconds: float
    total: float  #: connect to close
    reused: bool
    session: Optional[ssl.SSLSession]
    kind: Optional[str]


def client_context(protocol: str, cafile: Optional[str] = None) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if cafile:
        context.load_verify_locations(cafile)
    else:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    context.minimum_version = context.maximum_version = PROTOCOLS[protocol]
    return context


def connect_once(host: str, port: int, context: ssl.SSLContext, server_name: Optional[str],
                 session: Optional[ssl.SSLSession] = None, request: Optional[bytes] = None,
                 timeout: float = 10.0) -> _Handshake:
    """One connection: handshake (timed), the request, read until the server closes."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    start = time.perf_counter()
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        tls = context.wrap_bio(incoming, outgoing, server_side=False, server_hostname=server_name,
                               session=session)
        hello = b""
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                data = outgoing.read()
                if not hello:
                    hello = data
                if data:
                    sock.sendall(data)
                chunk = sock.recv(65536)
                if not chunk:
                    raise ConnectionError("the server closed the connection during the handshake")
                incoming.write(chunk)
        pending = outgoing.read()
        if pending:
            sock.sendall(pending)
        seconds = time.perf_counter() - start
        reused = tls.session_reused
        if request is None:
            name = server_name or host
            request = f"GET / HTTP/1.0\r\nHost: {name}\r\n\r\n".encode("ascii")
        tls.write(request)
        sock.sendall(outgoing.read())
        _read_until_closed(sock, tls, incoming, outgoing)
        kind = _kind(tls.version(), session, hello) if reused else None
        new_session = tls.session
    return _Handshake(seconds, time.perf_counter() - start, reused, new_session, kind)


#: After the first bytes of the answer, a server that has not closed for this long is taken to
#: be done (one that keeps the connection open, an echo server).
SETTLE = 0.25


def _read_until_closed(sock: socket.socket, tls: ssl.SSLObject, incoming: ssl.MemoryBIO,
                       outgoing: ssl.MemoryBIO) -> None:
    while True:
        try:
            if not tls.read(65536):
                break  # close_notify
            sock.settimeout(SETTLE)
            continue
        except ssl.SSLWantReadError:
            pass
        except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
            break
        try:
            chunk = sock.recv(65536)
        except (socket.timeout, OSError):
            break
        if not chunk:
            break
        incoming.write(chunk)
    try:
        tls.unwrap()
        sock.sendall(outgoing.read())
    except (ssl.SSLError, OSError):
        pass


def _kind(version: Optional[str], offered: Optional[ssl.SSLSession], hello: bytes) -> str:
    if version == "TLSv1.3":
        try:
            identities = parse_client_hello(hello)[0].psk_identities
        except (ClientHelloError, NeedMoreData):
            identities = ()
        if identities and len(identities[0]) <= _MAX_LOOKUP_KEY:
            return STATEFUL_TICKET
        return STATELESS_TICKET
    if offered is not None and offered.has_ticket:
        return STATELESS_TICKET
    return SESSION_ID


def probe(host: str, port: int, protocol: str, n: int = 100, *, server_name: Optional[str] = None,
          request: Optional[bytes] = None, cafile: Optional[str] = None,
          timeout: float = 10.0) -> ProbeResult:
    """Connect ``n`` times (plus a full handshake every tenth time) offering the newest session."""
    result = ProbeResult(protocol)
    context = client_context(protocol, cafile)
    session: Optional[ssl.SSLSession] = None
    for attempt in range(n):
        try:
            if session is None or attempt % _FRESH_EVERY == 0:
                fresh = connect_once(host, port, context, server_name, None, request, timeout)
                result.full_times.append(fresh.seconds)
                session = fresh.session
            shake = connect_once(host, port, context, server_name, session, request, timeout)
        except (ssl.SSLError, OSError) as exc:
            if result.attempts == 0:  # the server refuses this protocol, or is not there
                result.error = f"{type(exc).__name__}: {exc}"
                return result
            # A connection that fails later counts as an attempt that did not resume.
            result.attempts += 1
            result.failed += 1
            result.last_failure = f"{type(exc).__name__}: {exc}"
            session = None
            continue
        result.attempts += 1
        result.connection_times.append(shake.total)
        if shake.reused:
            result.resumed += 1
            result.resumed_times.append(shake.seconds)
            result.kinds[shake.kind] += 1
        else:
            result.full_times.append(shake.seconds)
        session = shake.session
    return result


#: What each kind of resumption means for a server with several workers or hosts.
FLEET_MEANING = {
    SESSION_ID: ("session id: the server looked the session up in its cache. It resumes in "
                 "another worker or host only if they share that cache (sesscache's store does)."),
    STATEFUL_TICKET: ("stateful ticket: the ticket is a lookup key into the server's cache. It "
                      "resumes in another worker or host only if they share that cache (sesscache's store "
                      "does)."),
    STATELESS_TICKET: ("stateless ticket: the client carries the session, sealed with the server's ticket "
                       "key. It resumes in another worker or host only if they share ticket keys "
                       "(sesscache.TicketKeys); with a key per worker, as most servers make, a client resumes "
                       "only when it reaches the worker that sealed it."),
}


def explain(result: ProbeResult) -> str:
    """In plain words: what ``result`` means for a fleet, and what to change when it falls short."""
    label = f"TLS {result.protocol}:"
    if result.error is not None:
        return f"{label} could not connect with this protocol ({result.error}); nothing to say about resumption."
    if result.resumed == 0:
        return (f"{label} nothing resumed. Every reconnection paid a full handshake: the server (or the "
                f"worker each connection reached) kept no session the client could offer back. A server "
                f"that makes a new TLS context per connection (gunicorn's sync and gthread workers) "
                f"resumes nothing; one with several workers each keeping its own cache resumes only by "
                f"chance. Give every worker the same cache: a sesscache integration (docs/servers/) sets "
                f"OP_NO_TICKET and a store all workers share.")
    text = " ".join(f"{FLEET_MEANING[kind]}" for kind in result.kinds if kind in FLEET_MEANING)
    if result.rate < 0.9:
        text += (f" Only {result.rate:.0%} resumed: typical of several workers each with its own cache or "
                 f"ticket key (a client resumes only when it reaches the worker that made its session). "
                 f"Share the cache (a sesscache store) or the ticket keys across the workers.")
    return f"{label} {text}"


def run_check(target: str, n: int = 100, server_name: Optional[str] = None, expect: Optional[float] = None,
              protocols: Sequence[str] = ("1.2", "1.3"), cafile: Optional[str] = None,
              out: Optional[TextIO] = None) -> int:
    """The ``check`` command: one line per protocol, then what each means; 1 when a probed
    protocol resumed less than ``expect`` percent, 2 when nothing could be probed, else 0."""
    import sys
    import textwrap

    out = out or sys.stdout
    host, port = parse_target(target)
    print(f"sesscache check {host}:{port}: {n} reconnections per protocol, each offering the newest "
          f"session", file=out, flush=True)
    results: Dict[str, ProbeResult] = {}
    for protocol in protocols:
        results[protocol] = probe(host, port, protocol, n, server_name=server_name, cafile=cafile)
        print(results[protocol].line(), file=out, flush=True)
    print("\nWhat it means:", file=out)
    for result in results.values():
        print(textwrap.fill(explain(result), width=100, subsequent_indent="  "), file=out)
    probed = [r for r in results.values() if r.error is None]
    if not probed:
        return 2
    if expect is not None:
        low = [r for r in probed if r.rate * 100 < expect]
        for r in low:
            print(f"TLS {r.protocol}: resumed {r.rate:.1%}, below the expected {expect:g}%", file=out)
        if low:
            return 1
    return 0


def parse_target(target: str):
    from .errors import ConfigurationError

    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigurationError(f"check needs HOST:PORT (e.g. 127.0.0.1:8443), got {target!r}")
    return host.strip("[]") or "127.0.0.1", int(port)
