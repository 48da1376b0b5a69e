"""ClientHello parser, tested on ClientHellos made by real TLS stacks.

Three independent stacks produce the hellos: CPython's ``ssl`` (system OpenSSL 3.0 here),
pyOpenSSL (the OpenSSL bundled with cryptography's wheel, a different version), and the
``openssl s_client`` binary, captured by a loopback listener. Sessions come from real
handshakes, so the session ids and PSK identities checked here are the ones a server-side
cache would really be asked for.
"""
from __future__ import annotations

import array
import hashlib
import os
import re
import select
import shutil
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest
import trustme

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from sesscache import clienthello as ch
from tests.tls import _stdlib_session

ClientHello = ch.ClientHello
ClientHelloError = ch.ClientHelloError
NeedMoreData = ch.NeedMoreData
parse = ch.parse_client_hello

TLS12 = ssl.TLSVersion.TLSv1_2
TLS13 = ssl.TLSVersion.TLSv1_3
OPENSSL = shutil.which("openssl")
needs_openssl_cli = pytest.mark.skipif(OPENSSL is None, reason="no openssl binary on PATH")


def outcome(data):
    """Parse, turning the two allowed exceptions into values; anything else propagates."""
    try:
        return parse(data)
    except (ClientHelloError, NeedMoreData) as exc:
        return exc


# --------------------------------------------------------------------------- record helpers
# Deliberately independent of the parser: a test-side record walker and encoder.


def hello_message(wire: bytes) -> tuple[bytes, int]:
    """The ClientHello handshake message in `wire` and the wire bytes its records take."""
    pos, message = 0, b""
    while len(message) < 4 or len(message) < 4 + int.from_bytes(message[1:4], "big"):
        assert wire[pos] == 22, "test corpus must start with handshake records"
        length = int.from_bytes(wire[pos + 3 : pos + 5], "big")
        message += wire[pos + 5 : pos + 5 + length]
        pos += 5 + length
    assert len(message) == 4 + int.from_bytes(message[1:4], "big")
    return message, pos


def records(message: bytes, sizes=(16384,), version: bytes = b"\x03\x01") -> bytes:
    """Wrap a handshake message in handshake records whose lengths cycle through `sizes`."""
    out, pos, i = [], 0, 0
    while pos < len(message):
        size = max(1, sizes[i % len(sizes)])
        chunk = message[pos : pos + size]
        out.append(b"\x16" + version + len(chunk).to_bytes(2, "big") + chunk)
        pos += len(chunk)
        i += 1
    return b"".join(out)


def vec(n: int, data: bytes) -> bytes:
    return len(data).to_bytes(n, "big") + data


def ext(ext_type: int, data: bytes) -> bytes:
    return ext_type.to_bytes(2, "big") + vec(2, data)


def sni_ext(*hosts: bytes, name_type: int = 0) -> bytes:
    return ext(0, vec(2, b"".join(bytes([name_type]) + vec(2, h) for h in hosts)))


def alpn_ext(*names: bytes) -> bytes:
    return ext(16, vec(2, b"".join(vec(1, n) for n in names)))


def versions_ext(*versions: int) -> bytes:
    return ext(43, vec(1, b"".join(v.to_bytes(2, "big") for v in versions)))


def psk_ext(*identities: bytes, binders: int | None = None) -> bytes:
    ids = b"".join(vec(2, i) + b"\x00\x00\x00\x07" for i in identities)
    count = len(identities) if binders is None else binders
    return ext(41, vec(2, ids) + vec(2, b"".join(vec(1, b"\xbb" * 32) for _ in range(count))))


def hello_body(
    *extensions: bytes,
    version: int = 0x0303,
    session_id: bytes = b"",
    suites=(0x1301, 0xC02F),
    compression: bytes = b"\x00",
    no_extensions: bool = False,
    raw_extensions: bytes | None = None,
) -> bytes:
    body = version.to_bytes(2, "big") + b"\x5a" * 32 + vec(1, session_id)
    body += vec(2, b"".join(s.to_bytes(2, "big") for s in suites)) + vec(1, compression)
    if raw_extensions is not None:
        return body + raw_extensions
    if no_extensions:
        return body
    return body + vec(2, b"".join(extensions))


def wire_of(body: bytes, sizes=(16384,)) -> bytes:
    return records(b"\x01" + len(body).to_bytes(3, "big") + body, sizes)


# --------------------------------------------------------------------------- real TLS stacks


class StdEnd:
    """A stdlib ssl endpoint over memory BIOs."""

    def __init__(self, ctx, server_side, **kwargs):
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.incoming, self.outgoing, server_side=server_side, **kwargs)

    def step(self):
        try:
            self.obj.do_handshake()
            return True
        except ssl.SSLWantReadError:
            return False

    def take(self):
        return self.outgoing.read()

    def give(self, data):
        self.incoming.write(data)

    def send(self, data):
        self.obj.write(data)

    def recv(self):
        try:
            return self.obj.read(1024)
        except ssl.SSLWantReadError:
            return b""


class PyOpenSSLEnd:
    """A pyOpenSSL endpoint over its built-in memory BIO (Connection(ctx, None))."""

    def __init__(self, ctx, server_side, server_hostname=None, session=None):
        from OpenSSL import SSL

        self.SSL = SSL
        self.obj = SSL.Connection(ctx, None)
        if server_hostname:
            self.obj.set_tlsext_host_name(server_hostname.encode())
        if session is not None:
            self.obj.set_session(session)
        if server_side:
            self.obj.set_accept_state()
        else:
            self.obj.set_connect_state()

    def step(self):
        try:
            self.obj.do_handshake()
            return True
        except self.SSL.WantReadError:
            return False

    def take(self):
        out = b""
        while True:
            try:
                out += self.obj.bio_read(65536)
            except self.SSL.WantReadError:
                return out

    def give(self, data):
        if data:
            self.obj.bio_write(data)

    def send(self, data):
        self.obj.send(data)

    def recv(self):
        try:
            return self.obj.recv(1024)
        except self.SSL.WantReadError:
            return b""


def handshake(client, server) -> bytes:
    """Run a full handshake over memory BIOs; return the client's first flight (the hello).

    Afterwards one application byte goes server -> client so that the client also
    processes the TLS 1.3 NewSessionTicket messages that follow the handshake.
    """
    hello = None
    client_done = server_done = False
    for _ in range(20):
        if not client_done:
            client_done = client.step()
        flight = client.take()
        if hello is None:
            hello = flight
        server.give(flight)
        if not server_done:
            server_done = server.step()
        client.give(server.take())
        if client_done and server_done:
            break
    assert client_done and server_done
    server.send(b"!")
    client.give(server.take())
    assert client.recv() == b"!"
    return hello


def first_flight(ctx, **kwargs) -> bytes:
    """The ClientHello a stdlib client context sends, without any server."""
    end = StdEnd(ctx, False, **kwargs)
    assert not end.step()
    return end.take()


@pytest.fixture(scope="session")
def ca():
    return trustme.CA()


@pytest.fixture(scope="session")
def cert(ca):
    return ca.issue_cert("localhost")


@pytest.fixture(scope="session")
def pem_files(tmp_path_factory, ca, cert):
    d = tmp_path_factory.mktemp("pki")
    ca.cert_pem.write_to_path(str(d / "ca.pem"))
    cert.private_key_and_cert_chain_pem.write_to_path(str(d / "server.pem"))
    return d / "ca.pem", d / "server.pem"


def std_server(cert, max_version, no_ticket=True):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert.configure_cert(ctx)
    ctx.maximum_version = max_version
    if no_ticket:
        ctx.options |= ssl.OP_NO_TICKET
    if max_version == TLS13:
        ctx.num_tickets = 1  # each ticket is a new session: one keeps `server.session` unambiguous
    return ctx


def std_client(ca, max_version=TLS13, alpn=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ca.configure_trust(ctx)
    ctx.maximum_version = max_version
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return ctx


def std_resumption(ca, cert, server_max, client_max, no_ticket):
    """Full handshake then a resumption attempt: (second hello, client session, server session)."""
    sctx = std_server(cert, server_max, no_ticket)
    cctx = std_client(ca, client_max)
    client = StdEnd(cctx, False, server_hostname="localhost")
    server = StdEnd(sctx, True)
    handshake(client, server)
    session = _stdlib_session(client.obj)  # counts CPython's own leak (#116810)
    server_session = _stdlib_session(server.obj)
    again_client = StdEnd(cctx, False, server_hostname="localhost", session=session)
    again_server = StdEnd(sctx, True)
    hello = handshake(again_client, again_server)
    assert again_client.obj.session_reused and again_server.obj.session_reused
    return hello, session, server_session


def pyopenssl_client(pem_files, max_version=None, alpn=None):
    from OpenSSL import SSL

    ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
    ctx.set_verify(SSL.VERIFY_PEER)
    ctx.load_verify_locations(str(pem_files[0]))
    if max_version is not None:
        ctx.set_max_proto_version(max_version)
    if alpn:
        ctx.set_alpn_protos(alpn)
    return ctx


def pyopenssl_resumption(pem_files, cert, server_max, no_ticket, client_max=None):
    """pyOpenSSL client against a stdlib server (two different OpenSSL builds)."""
    sctx = std_server(cert, server_max, no_ticket)
    cctx = pyopenssl_client(pem_files, client_max, alpn=[b"h2", b"http/1.1"])
    client = PyOpenSSLEnd(cctx, False, server_hostname="localhost")
    server = StdEnd(sctx, True)
    handshake(client, server)
    server_session = _stdlib_session(server.obj)
    again = PyOpenSSLEnd(cctx, False, server_hostname="localhost", session=client.obj.get_session())
    again_server = StdEnd(sctx, True)
    hello = handshake(again, again_server)
    assert again_server.obj.session_reused
    return hello, server_session


# --------------------------------------------------------------------------- openssl s_client


def _ready_line(proc, pattern, timeout=10.0):
    """Wait for `pattern` in the process's stdout (raw fd reads: no buffered lines lost to select)."""
    deadline = time.monotonic() + timeout
    seen = b""
    fd = proc.stdout.fileno()
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            seen += chunk
            match = re.search(pattern, seen)
            if match:
                return match
    raise AssertionError(f"openssl did not print {pattern!r}; output so far: {seen!r}")


def s_client_session(pem_files, path: Path, server_args=(), client_args=()) -> None:
    """Full handshake of ``openssl s_client`` with ``openssl s_server``; session to `path`."""
    ca_pem, server_pem = pem_files
    server = subprocess.Popen(
        [OPENSSL, "s_server", "-accept", "127.0.0.1:0", "-cert", str(server_pem), "-naccept", "1",
         "-num_tickets", "1", *server_args],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    client = None
    try:
        port = int(_ready_line(server, rb"ACCEPT 127\.0\.0\.1:(\d+)").group(1))
        client = subprocess.Popen(
            [OPENSSL, "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "localhost",
             "-CAfile", str(ca_pem), "-sess_out", str(path), *client_args],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        # TLS 1.3 tickets arrive after the handshake: keep stdin open until the session is out.
        deadline = time.monotonic() + 10
        while b"END SSL SESSION PARAMETERS" not in (path.read_bytes() if path.exists() else b""):
            assert time.monotonic() < deadline, "s_client wrote no session"
            time.sleep(0.05)
    finally:
        for proc in (client, server):
            if proc is not None:
                proc.kill()
                proc.wait(10)
                for stream in (proc.stdin, proc.stdout):
                    if stream is not None:
                        stream.close()


def s_client_capture(client_args, timeout=10.0) -> tuple[bytes, tuple]:
    """Run s_client against a loopback listener that records its first bytes.

    Reads until the parser is satisfied (plus what else arrives within a moment, so that
    0-RTT records after the hello are captured too); returns (bytes, parse result).
    """
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(timeout)
    client = subprocess.Popen(
        [OPENSSL, "s_client", "-connect", "127.0.0.1:%d" % listener.getsockname()[1], *client_args],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(timeout)
            buf = b""
            while True:
                result = outcome(buf)
                if not isinstance(result, NeedMoreData):
                    break
                data = conn.recv(65536)
                assert data, "s_client closed before sending a whole ClientHello"
                buf += data
                assert len(buf) < 4 * ch.MAX_CLIENT_HELLO
            conn.settimeout(0.5)
            try:
                buf += conn.recv(65536)
            except socket.timeout:
                pass
    finally:
        listener.close()
        client.kill()
        client.wait(10)
        client.stdin.close()
    assert not isinstance(result, Exception), result
    return buf, result


def sess_id_text(path: Path) -> tuple[bytes, bytes]:
    """(Session-ID, TLS session ticket) of an s_client session file, from ``openssl sess_id``."""
    text = subprocess.run(
        [OPENSSL, "sess_id", "-in", str(path), "-noout", "-text"], capture_output=True, text=True, check=True,
        timeout=10,
    ).stdout
    session_id = bytes.fromhex(re.search(r"Session-ID: *([0-9A-F]*)", text).group(1))
    ticket = b""
    dump = text.split("TLS session ticket:", 1)
    if len(dump) == 2:
        for line in dump[1].splitlines()[1:]:
            match = re.match(r"\s*[0-9a-f]{4} - (.{47})", line + " " * 47)
            if not match:
                break
            ticket += bytes.fromhex(match.group(1).replace("-", " "))
    return session_id, ticket


# --------------------------------------------------------------------------- the corpus


@pytest.fixture(scope="session")
def corpus(ca, cert, pem_files):
    """Name -> ClientHello wire bytes from the stdlib and pyOpenSSL stacks."""
    from OpenSSL import SSL

    hellos = {}
    hellos["std-tls13-fresh"] = first_flight(std_client(ca, alpn=["h2", "http/1.1"]), server_hostname="localhost")
    nosni = std_client(ca, TLS12)
    nosni.check_hostname = False
    hellos["std-tls12-nosni"] = first_flight(nosni)
    hellos["std-tls12-resume"] = std_resumption(ca, cert, TLS12, TLS12, True)[0]
    hellos["std-tls13-stateful"] = std_resumption(ca, cert, TLS13, TLS13, True)[0]
    hellos["std-tls13-stateless"] = std_resumption(ca, cert, TLS13, TLS13, False)[0]
    hellos["std-both-resume12"] = std_resumption(ca, cert, TLS12, TLS13, True)[0]
    big = std_client(ca, alpn=[f"p{i:03d}".ljust(200, "x") for i in range(100)])
    hellos["std-alpn-2records"] = first_flight(big, server_hostname="localhost")
    hellos["pyo-tls12-resume"] = pyopenssl_resumption(pem_files, cert, TLS12, True, SSL.TLS1_2_VERSION)[0]
    hellos["pyo-tls13-stateful"] = pyopenssl_resumption(pem_files, cert, TLS13, True)[0]
    hellos["pyo-tls13-stateless"] = pyopenssl_resumption(pem_files, cert, TLS13, False)[0]
    return hellos


CORPUS_NAMES = [
    "std-tls13-fresh", "std-tls12-nosni", "std-tls12-resume", "std-tls13-stateful", "std-tls13-stateless",
    "std-both-resume12", "std-alpn-2records", "pyo-tls12-resume", "pyo-tls13-stateful", "pyo-tls13-stateless",
]


@pytest.fixture(scope="session")
def s_client_corpus(tmp_path_factory, pem_files):
    """Name -> ClientHello wire bytes from ``openssl s_client`` (skips without the binary)."""
    if OPENSSL is None:
        pytest.skip("no openssl binary on PATH")
    d = tmp_path_factory.mktemp("s_client")
    hellos = {}
    hellos["s_client-fresh"] = s_client_capture(["-servername", "localhost", "-alpn", "h2"])[0]
    hellos["s_client-nosni"] = s_client_capture(["-noservername", "-tls1_2"])[0]
    s_client_session(pem_files, d / "stateful", ["-no_ticket"], ["-tls1_3"])
    wire, (hello, used) = s_client_capture(["-sess_in", str(d / "stateful"), "-servername", "localhost"])
    hellos["s_client-tls13-stateful"] = wire[:used]
    return hellos


# --------------------------------------------------------------------------- stdlib ssl


def test_tls12_resumption_by_session_id(ca, cert):
    hello_bytes, session, server_session = std_resumption(ca, cert, TLS12, TLS12, no_ticket=True)
    hello, used = parse(hello_bytes)
    assert used == len(hello_bytes)
    assert len(session.id) == 32 and session.id == server_session.id
    assert hello.legacy_session_id == session.id
    assert hello.offers_tls13 is False and hello.supported_versions == ()
    assert hello.psk_identities == ()
    assert hello.lookup_keys() == (session.id,)
    assert hello.server_name == "localhost"


def test_tls13_stateful_ticket_identity_is_the_server_session_id(ca, cert):
    hello_bytes, session, server_session = std_resumption(ca, cert, TLS13, TLS13, no_ticket=True)
    hello, _ = parse(hello_bytes)
    assert hello.offers_tls13 and 0x0304 in hello.supported_versions
    (identity,) = hello.psk_identities
    # OpenSSL 3.0 with SSL_OP_NO_TICKET under TLS 1.3: the ticket *is* the server's 32-byte
    # session id, and the client sends it back verbatim as the PSK identity ...
    assert len(identity) == 32
    assert identity == server_session.id
    # ... while the client's own SSL_SESSION id is SHA-256 of the ticket, not the ticket.
    assert session.id == hashlib.sha256(identity).digest() != identity
    # The legacy_session_id is the random middlebox-compatibility value, never a key here.
    assert len(hello.legacy_session_id) == 32
    assert hello.legacy_session_id not in (identity, session.id, server_session.id)
    assert hello.lookup_keys() == (server_session.id,)


def test_tls13_stateless_ticket_gives_no_lookup_key(ca, cert):
    hello_bytes, session, _ = std_resumption(ca, cert, TLS13, TLS13, no_ticket=False)
    hello, _ = parse(hello_bytes)
    (identity,) = hello.psk_identities
    # key name (16) + IV (16) + encrypted ASN.1 session + HMAC-SHA256 (32): far over 32 bytes.
    assert len(identity) > 32
    assert session.id == hashlib.sha256(identity).digest()
    assert hello.lookup_keys() == ()


def test_client_offering_tls13_resumes_tls12_session_by_legacy_id(ca, cert):
    # Server capped at TLS 1.2, client offers 1.3 and 1.2: the TLS 1.2 session cannot travel
    # as a PSK, so the real session id goes in legacy_session_id, with no pre_shared_key.
    hello_bytes, session, server_session = std_resumption(ca, cert, TLS12, TLS13, no_ticket=True)
    hello, _ = parse(hello_bytes)
    assert hello.offers_tls13
    assert hello.psk_identities == ()
    assert hello.legacy_session_id == session.id == server_session.id
    assert hello.lookup_keys() == (session.id,)


def test_no_session_tls12_only_client_has_no_key(ca):
    ctx = std_client(ca, TLS12)
    hello, _ = parse(first_flight(ctx, server_hostname="localhost"))
    assert hello.legacy_session_id == b""
    assert hello.lookup_keys() == ()


def test_no_session_tls13_client_sends_random_legacy_id_as_the_only_key(ca):
    # By the documented rule (TLS 1.3 offered, no pre_shared_key -> the legacy id is a key),
    # a fresh TLS 1.3 hello yields its random compatibility id: one guaranteed store miss.
    ctx = std_client(ca)
    first, _ = parse(first_flight(ctx, server_hostname="localhost"))
    second, _ = parse(first_flight(ctx, server_hostname="localhost"))
    assert first.psk_identities == ()
    assert len(first.legacy_session_id) == 32
    assert first.legacy_session_id != second.legacy_session_id
    assert first.lookup_keys() == (first.legacy_session_id,)


def test_sni_present_and_case_kept(ca):
    ctx = std_client(ca)
    hello, _ = parse(first_flight(ctx, server_hostname="Api.Example.COM"))
    assert hello.server_name == "Api.Example.COM"


def test_sni_absent(ca):
    ctx = std_client(ca)
    ctx.check_hostname = False
    hello, _ = parse(first_flight(ctx))
    assert hello.server_name is None


def test_alpn_in_order_and_absent(ca):
    hello, _ = parse(first_flight(std_client(ca, alpn=["h2", "http/1.1", "acme-tls/1"]), server_hostname="x"))
    assert hello.alpn == (b"h2", b"http/1.1", b"acme-tls/1")
    hello, _ = parse(first_flight(std_client(ca), server_hostname="x"))
    assert hello.alpn == ()


def test_cipher_suites_and_versions_match_the_context(ca):
    ctx = std_client(ca)
    hello, _ = parse(first_flight(ctx, server_hostname="x"))
    assert hello.legacy_version == 0x0303
    assert hello.supported_versions[0] == 0x0304 and 0x0303 in hello.supported_versions
    assert 0x1301 in hello.cipher_suites and 0x00FF in hello.cipher_suites  # TLS_AES_128_GCM, SCSV
    assert hello.has_early_data is False


def test_real_hello_over_several_records(ca):
    # 100 ALPN names of 200 bytes: OpenSSL itself splits the hello at 2^14 bytes.
    big = std_client(ca, alpn=[f"p{i:03d}".ljust(200, "x") for i in range(100)])
    wire = first_flight(big, server_hostname="localhost")
    assert int.from_bytes(wire[3:5], "big") == 16384
    hello, used = parse(wire)
    assert used == len(wire)
    assert len(hello.alpn) == 100 and hello.alpn[99].startswith(b"p099")


def test_real_oversized_hello_rejected_from_its_first_bytes(ca):
    # Near the 65535-byte limit of the extensions block: OpenSSL builds (and would accept, its
    # own server limit is 128 KiB) a hello just over MAX_CLIENT_HELLO.
    big = std_client(ca, alpn=[f"p{i:03d}".ljust(200, "x") for i in range(324)] + ["q" * 200])
    wire = first_flight(big, server_hostname="localhost")
    assert hello_message(wire)[0].__len__() > ch.MAX_CLIENT_HELLO
    with pytest.raises(ClientHelloError, match="MAX_CLIENT_HELLO"):
        parse(wire[:9])  # record header + handshake header: no need to wait for 64 KiB
    with pytest.raises(ClientHelloError, match="MAX_CLIENT_HELLO"):
        parse(wire)


# --------------------------------------------------------------------------- pyOpenSSL


def test_pyopenssl_tls12_resumption(pem_files, cert):
    from OpenSSL import SSL

    wire, server_session = pyopenssl_resumption(pem_files, cert, TLS12, True, SSL.TLS1_2_VERSION)
    hello, _ = parse(wire)
    assert hello.legacy_session_id == server_session.id
    assert hello.lookup_keys() == (server_session.id,)
    assert hello.server_name == "localhost"
    assert hello.alpn == (b"h2", b"http/1.1")


def test_pyopenssl_tls13_stateful_ticket(pem_files, cert):
    wire, server_session = pyopenssl_resumption(pem_files, cert, TLS13, True)
    hello, _ = parse(wire)
    assert hello.psk_identities == (server_session.id,)
    assert hello.lookup_keys() == (server_session.id,)


def test_pyopenssl_tls13_stateless_ticket(pem_files, cert):
    wire, _ = pyopenssl_resumption(pem_files, cert, TLS13, False)
    hello, _ = parse(wire)
    (identity,) = hello.psk_identities
    assert len(identity) > 32
    assert hello.lookup_keys() == ()


def test_pyopenssl_fresh_hello(pem_files):
    end = PyOpenSSLEnd(pyopenssl_client(pem_files, alpn=[b"spdy/3", b"h2"]), False, server_hostname="svc.local")
    assert not end.step()
    wire = end.take()
    hello, used = parse(wire)
    assert used == len(wire)
    assert hello.server_name == "svc.local"
    assert hello.alpn == (b"spdy/3", b"h2")
    assert hello.offers_tls13 and hello.psk_identities == ()
    import sesscache

    # A different OpenSSL than the stdlib's (the cryptography wheel's own copy).
    assert sesscache.libssl_info(end.obj.get_context()).version


# --------------------------------------------------------------------------- openssl s_client


@needs_openssl_cli
def test_s_client_tls13_stateful_ticket(tmp_path, pem_files):
    s_client_session(pem_files, tmp_path / "sess", ["-no_ticket"], ["-tls1_3"])
    session_id, ticket = sess_id_text(tmp_path / "sess")
    _, (hello, _) = s_client_capture(["-sess_in", str(tmp_path / "sess"), "-servername", "localhost"])
    assert hello.psk_identities == (ticket,)
    assert len(ticket) == 32
    assert session_id == hashlib.sha256(ticket).digest()
    assert hello.lookup_keys() == (ticket,)


@needs_openssl_cli
def test_s_client_early_data_uses_stateful_tickets(tmp_path, pem_files):
    # s_server -early_data, without -no_ticket: OpenSSL still issues a 32-byte stateful ticket,
    # because it protects 0-RTT against replay by keeping (and removing) the session server-side.
    s_client_session(pem_files, tmp_path / "sess", ["-early_data"], ["-tls1_3"])
    session_id, ticket = sess_id_text(tmp_path / "sess")
    early = tmp_path / "early.txt"
    early.write_bytes(b"GET / HTTP/1.0\r\n\r\n")
    wire, (hello, used) = s_client_capture(
        ["-sess_in", str(tmp_path / "sess"), "-servername", "localhost", "-early_data", str(early)]
    )
    assert hello.has_early_data
    assert hello.psk_identities == (ticket,) and len(ticket) == 32
    assert hello.lookup_keys() == (ticket,)
    # The 0-RTT records follow the hello and are not consumed.
    assert used < len(wire)
    assert wire[used] in (20, 23)  # change_cipher_spec (middlebox compat) or application_data


@needs_openssl_cli
def test_s_client_tls13_stateless_ticket(tmp_path, pem_files):
    s_client_session(pem_files, tmp_path / "sess", [], ["-tls1_3"])
    _, ticket = sess_id_text(tmp_path / "sess")
    _, (hello, _) = s_client_capture(["-sess_in", str(tmp_path / "sess"), "-servername", "localhost"])
    assert hello.psk_identities == (ticket,)
    assert len(ticket) > 32
    assert hello.lookup_keys() == ()


@needs_openssl_cli
def test_s_client_resumes_tls12_session_while_offering_tls13(tmp_path, pem_files):
    s_client_session(pem_files, tmp_path / "sess", ["-no_ticket"], ["-tls1_2"])
    session_id, _ = sess_id_text(tmp_path / "sess")
    _, (hello, _) = s_client_capture(["-sess_in", str(tmp_path / "sess"), "-servername", "localhost"])
    assert hello.offers_tls13 and hello.psk_identities == ()
    assert hello.legacy_session_id == session_id
    assert hello.lookup_keys() == (session_id,)


@needs_openssl_cli
def test_s_client_sni_and_alpn(s_client_corpus):
    hello, _ = parse(s_client_corpus["s_client-fresh"])
    assert hello.server_name == "localhost" and hello.alpn == (b"h2",)
    hello, _ = parse(s_client_corpus["s_client-nosni"])
    assert hello.server_name is None and not hello.offers_tls13
    assert hello.lookup_keys() == ()


# --------------------------------------------------------------------------- record layer


@pytest.fixture(scope="session")
def all_hellos(corpus, request):
    hellos = dict(corpus)
    if OPENSSL is not None:
        hellos.update(request.getfixturevalue("s_client_corpus"))
    return hellos


@pytest.mark.parametrize("name", CORPUS_NAMES)
def test_every_prefix_needs_more_data(corpus, name):
    wire = corpus[name]
    expected = parse(wire)
    assert expected[1] == len(wire)
    for cut in range(len(wire)):
        with pytest.raises(NeedMoreData) as info:
            parse(wire[:cut])
        # `needed` is a true lower bound: the real rest of the hello is never shorter.
        assert 1 <= info.value.needed <= len(wire) - cut, cut
    assert parse(wire) == expected


@needs_openssl_cli
def test_every_prefix_of_s_client_hellos(s_client_corpus):
    for wire in s_client_corpus.values():
        expected = parse(wire)
        for cut in range(len(wire)):
            result = outcome(wire[:cut])
            assert isinstance(result, NeedMoreData) and 1 <= result.needed <= len(wire) - cut
        assert parse(wire) == expected


@pytest.mark.parametrize("sizes", [(1,), (2,), (3,), (7,), (100,), (1, 500, 2), (4096,)])
def test_refragmented_real_hellos_parse_the_same(all_hellos, sizes):
    for name, wire in all_hellos.items():
        message, _ = hello_message(wire)
        expected, _ = parse(wire)
        fragmented = records(message, sizes)
        assert parse(fragmented) == (expected, len(fragmented)), name


def test_every_prefix_of_a_finely_fragmented_hello(corpus):
    message, _ = hello_message(corpus["std-tls12-resume"])
    wire = records(message, (3, 1, 5))
    expected = parse(wire)
    for cut in range(len(wire)):
        result = outcome(wire[:cut])
        assert isinstance(result, NeedMoreData), cut
        assert 1 <= result.needed <= len(wire) - cut, cut
    assert expected[1] == len(wire)


def test_bytes_after_the_hello_are_not_consumed(corpus):
    wire = corpus["std-tls13-stateful"]
    ccs = b"\x14\x03\x03\x00\x01\x01"
    hello, used = parse(wire + ccs + b"\x17\x03\x03\x00\x05hello")
    assert used == len(wire) and hello == parse(wire)[0]


def test_accepts_bytearray_and_memoryview_and_buffer_can_grow_in_handler(corpus):
    wire = corpus["std-tls13-fresh"]
    buf = bytearray(wire[:50])
    try:
        parse(buf)
    except NeedMoreData:
        buf += wire[50:]  # would raise BufferError if the exception kept a view on `buf`
    assert parse(buf) == parse(wire)
    # A fault found deep in the body: its frames held slices of `buf` until they were dropped.
    bad = bytearray(wire_of(hello_body(session_id=b"\x01" * 33)))
    try:
        parse(bad)
    except ClientHelloError:
        bad += b"\x00"
    assert parse(memoryview(wire)) == parse(wire)
    assert parse(memoryview(bytearray(wire))) == parse(wire)
    assert parse(memoryview(wire).cast("c")) == parse(wire)  # items are bytes, not ints
    assert parse(memoryview(wire).cast("b")) == parse(wire)  # items are signed
    doubled = bytes(b for b in wire for _ in range(2))
    assert parse(memoryview(doubled)[::2]) == parse(wire)  # not contiguous
    words = array.array("H", wire + b"\x00" * (len(wire) % 2))  # multi-byte items
    assert parse(words)[0] == parse(wire)[0]


def test_many_one_byte_records_are_linear(ca):
    big = std_client(ca, alpn=[f"p{i:03d}".ljust(200, "x") for i in range(100)])
    message, _ = hello_message(first_flight(big, server_hostname="localhost"))
    wire = records(message, (1,))  # 20 000 records
    start = time.perf_counter()
    hello, used = parse(wire)
    elapsed = time.perf_counter() - start
    assert used == len(wire) and len(hello.alpn) == 100
    assert elapsed < 2.0  # a quadratic join would take minutes


# --------------------------------------------------------------------------- ClientHelloReader


def test_reader_fed_exactly_needed_stops_at_the_hello(all_hellos):
    # The readexactly(reader.needed) pattern: never reads past the hello's last record.
    after = b"\x14\x03\x03\x00\x01\x01" + b"\x17\x03\x03\x00\x03abc"
    for name, wire in all_hellos.items():
        message, _ = hello_message(wire)
        for sizes in [(16384,), (1,), (2, 5, 300)]:
            hello_wire = records(message, sizes)
            stream = hello_wire + after
            reader, pos = ch.ClientHelloReader(), 0
            while reader.hello is None:
                step = reader.needed
                assert step >= 1 and pos + step <= len(hello_wire), (name, sizes, pos)
                reader.feed(stream[pos : pos + step])
                pos += step
            assert bytes(reader.data) == hello_wire
            assert reader.consumed == len(hello_wire) and reader.needed == 0
            assert reader.hello == parse(wire)[0], name


def test_reader_one_byte_at_a_time_is_linear(ca):
    big = std_client(ca, alpn=[f"p{i:03d}".ljust(200, "x") for i in range(100)])
    message, _ = hello_message(first_flight(big, server_hostname="localhost"))
    wire = records(message, (1,))  # 20 000 records, 120 000 feeds
    reader = ch.ClientHelloReader()
    start = time.perf_counter()
    for i in range(len(wire)):
        hello = reader.feed(wire[i : i + 1])
    elapsed = time.perf_counter() - start
    assert hello is not None and len(hello.alpn) == 100
    # Re-parsing the buffer on every byte would walk ~2.4 billion records; this walks 20 000.
    assert elapsed < 5.0


def test_reader_keeps_bytes_after_the_hello_and_stays_done(corpus):
    wire = corpus["std-tls13-stateful"]
    reader = ch.ClientHelloReader()
    hello = reader.feed(wire + b"\x17\x03\x03")
    assert hello == parse(wire)[0] and reader.consumed == len(wire)
    assert reader.feed(b"\x00\x01x") is hello
    assert bytes(reader.data) == wire + b"\x17\x03\x03\x00\x01x"


def test_reader_error_is_sticky():
    reader = ch.ClientHelloReader()
    assert reader.feed(b"") is None and reader.needed == 9
    with pytest.raises(ClientHelloError, match="not TLS"):
        reader.feed(b"GET / HTTP/1.1\r\n")
    with pytest.raises(ClientHelloError, match="not TLS"):
        reader.feed(b"\x16\x03\x01")
    reader = ch.ClientHelloReader()
    body_fault = wire_of(hello_body(session_id=b"\x01" * 33))
    assert reader.feed(body_fault[:20]) is None
    with pytest.raises(ClientHelloError, match="legacy_session_id"):
        reader.feed(body_fault[20:])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_reader_random_chunks_match_parse(all_hellos, data):
    name = data.draw(st.sampled_from(sorted(all_hellos)))
    message, _ = hello_message(all_hellos[name])
    wire = records(message, data.draw(st.lists(st.integers(1, 3000), min_size=1, max_size=5)))
    steps = data.draw(st.lists(st.integers(1, 700), min_size=1, max_size=30))
    reader, pos, hello, i = ch.ClientHelloReader(), 0, None, 0
    while hello is None:
        step = steps[i % len(steps)]
        i += 1
        hello = reader.feed(wire[pos : pos + step])
        pos += step
        if hello is None:
            assert 1 <= reader.needed <= len(wire) - pos
    assert (hello, reader.consumed) == parse(wire)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_reader_on_mutated_hellos_agrees_with_parse(all_hellos, data):
    name = data.draw(st.sampled_from(sorted(all_hellos)))
    wire = bytearray(all_hellos[name])
    for _ in range(data.draw(st.integers(1, 4))):
        wire[data.draw(st.integers(0, len(wire) - 1))] = data.draw(st.integers(0, 255))
    wire = bytes(wire)
    expected = outcome(wire)
    steps = data.draw(st.lists(st.integers(1, 600), min_size=1, max_size=10))
    reader, pos, result, i = ch.ClientHelloReader(), 0, None, 0
    try:
        while pos < len(wire) and result is None:
            step = steps[i % len(steps)]
            i += 1
            result = reader.feed(wire[pos : pos + step])
            pos += step
    except ClientHelloError:
        # Messages may differ (they quote what has arrived so far); the verdict may not.
        assert isinstance(expected, ClientHelloError)
        return
    if isinstance(expected, tuple):
        assert (result, reader.consumed) == expected
    else:
        assert result is None and isinstance(expected, NeedMoreData)


# --------------------------------------------------------------------------- rejections


def test_http_is_not_tls():
    with pytest.raises(ClientHelloError, match="not TLS") as info:
        parse(b"GET / HTTP/1.1\r\nHost: example\r\n\r\n")
    assert "HTTP" in str(info.value)
    with pytest.raises(ClientHelloError, match="not TLS"):
        parse(b"G")  # decided on the first byte


def test_sslv2_format_hello_rejected():
    specs = bytes.fromhex("0000ff" "010080" "070080" "00002f")
    challenge = bytes(range(16))
    msg = b"\x01\x03\x01" + len(specs).to_bytes(2, "big") + b"\x00\x00" + len(challenge).to_bytes(2, "big")
    msg += specs + challenge
    v2 = (0x8000 | len(msg)).to_bytes(2, "big") + msg
    with pytest.raises(ClientHelloError, match="SSLv2"):
        parse(v2)
    with pytest.raises(ClientHelloError, match="SSLv2"):
        parse(v2[:3])


RECORD_FAULTS = [
    (b"\x15\x03\x03\x00\x02\x02\x28", "alert"),
    (b"\x17\x03\x03", "application_data"),
    (b"\x00", "not TLS"),
    (b"\x16\x02", "version"),
    (b"\x16\x04\x00\x00\x05", "version"),
    (b"\x16\x03\x01\x00\x00", "empty handshake record"),
    (b"\x16\x03\x01\x40\x01", "2\\^14"),
    (b"\x16\x03\x01\x00\x04\x02", "type 2"),
    (b"\x16\x03\x01\x00\x01\x00", "type 0"),
    (b"\x16\x03\x01\x00\x08\x01\x00\x00\x02\x03\x03\xff\xff", "after the end"),
]


@pytest.mark.parametrize("data, match", RECORD_FAULTS, ids=[m for _, m in RECORD_FAULTS])
def test_record_layer_rejections(data, match):
    with pytest.raises(ClientHelloError, match=match):
        parse(data)


def test_oversized_claim_rejected_without_waiting():
    claim = (ch.MAX_CLIENT_HELLO - 4 + 1).to_bytes(3, "big")
    with pytest.raises(ClientHelloError, match="MAX_CLIENT_HELLO"):
        parse(b"\x16\x03\x01\x40\x00\x01" + claim)
    # Same claim with the handshake header itself split over 1-byte records.
    split = b"".join(b"\x16\x03\x01\x00\x01" + bytes([c]) for c in b"\x01" + claim)
    with pytest.raises(ClientHelloError, match="MAX_CLIENT_HELLO"):
        parse(split)
    # Exactly MAX_CLIENT_HELLO is allowed: it is only incomplete.
    at_limit = (ch.MAX_CLIENT_HELLO - 4).to_bytes(3, "big")
    with pytest.raises(NeedMoreData):
        parse(b"\x16\x03\x01\x40\x00\x01" + at_limit)


def test_other_record_type_inside_the_hello_rejected(corpus):
    message, _ = hello_message(corpus["std-tls12-resume"])
    wire = records(message, (100,))
    interleaved = wire[:105] + b"\x17\x03\x03\x00\x01\x00" + wire[105:]
    with pytest.raises(ClientHelloError, match="content type 23"):
        parse(interleaved)


def test_later_record_faults_rejected(corpus):
    message, _ = hello_message(corpus["std-tls12-resume"])
    wire = records(message, (100,))
    last = wire.rindex(b"\x16\x03\x01")
    length = int.from_bytes(wire[last + 3 : last + 5], "big")
    padded = wire[:last + 3] + (length + 1).to_bytes(2, "big") + wire[last + 5 :] + b"\x00"
    with pytest.raises(ClientHelloError, match="1 bytes after the end of the ClientHello"):
        parse(padded)
    with pytest.raises(ClientHelloError, match="1 bytes after the end of the ClientHello"):
        parse(padded[: last + 5])  # known from the record header alone
    bad_version = wire[:106] + b"\x02" + wire[107:]
    with pytest.raises(ClientHelloError, match="offset 105 has version major byte 0x02"):
        parse(bad_version)


def test_non_bytes_input_is_a_type_error():
    with pytest.raises(TypeError, match="bytes-like"):
        parse("\x16\x03\x01")


def test_hello_spread_too_thin_rejected():
    body_len = ch.MAX_CLIENT_HELLO - 4
    message = b"\x01" + body_len.to_bytes(3, "big") + b"\x00" * body_len
    wire = records(message, (1,))
    with pytest.raises(ClientHelloError, match="spread over"):
        parse(wire)


MALFORMED = [
    (hello_body(version=0x0200), "legacy_version"),
    (hello_body(session_id=b"\x01" * 33), "legacy_session_id is 33 bytes"),
    (hello_body(suites=()), "cipher_suites is 0 bytes"),
    (hello_body(compression=b""), "legacy_compression_methods is 0 bytes"),
    (hello_body(raw_extensions=b"\x00"), "extensions length"),
    (hello_body(raw_extensions=b"\x00\x05\x00\x00\x00\x00"), "extensions needs 5"),
    (hello_body(raw_extensions=b"\x00\x00\x00"), "1 bytes after the extensions"),
    (hello_body(alpn_ext(b"h2"), alpn_ext(b"h2")), "appears twice"),
    (hello_body(psk_ext(b"a" * 32), ext(0xFF01, b"\x00")), "not the last"),
    (hello_body(psk_ext(b"a" * 32, binders=2)), "1 PSK identities but 2 binders"),
    (hello_body(ext(41, vec(2, b"") + vec(2, b""))), "PSK identities is 0 bytes"),
    (hello_body(ext(42, b"\x00")), "early_data"),
    (hello_body(sni_ext(b"caf\xc3\xa9.example")), "not printable ASCII"),
    (hello_body(sni_ext(b"a\x00b")), "not printable ASCII"),
    (hello_body(sni_ext(b"a" * 256)), "more than 255"),
    (hello_body(sni_ext(b"a.example", b"b.example")), "two host_name"),
    (hello_body(sni_ext(b"x", name_type=7)), "without a host_name"),
    (hello_body(ext(0, b"")), "server_name_list length"),
    (hello_body(ext(0, vec(2, b""))), "server_name_list is 0 bytes"),
    (hello_body(alpn_ext(b"", b"h2")), "ALPN protocol name is 0 bytes"),
    (hello_body(ext(16, vec(2, b"\x05h2"))), "ALPN protocol name needs 5"),
    (hello_body(ext(43, b"\x03\x03\x04\x03")), "odd number"),
    (hello_body(ext(43, b"\x02\x03\x04\x00")), "1 bytes after supported_versions"),
]


@pytest.mark.parametrize("body, match", MALFORMED, ids=[m for _, m in MALFORMED])
def test_malformed_bodies_rejected(body, match):
    with pytest.raises(ClientHelloError, match=match):
        parse(wire_of(body))


def test_hello_without_extensions_is_valid():
    hello, _ = parse(wire_of(hello_body(session_id=b"\x42" * 16, no_extensions=True)))
    assert hello.legacy_session_id == b"\x42" * 16
    assert hello.server_name is None and hello.supported_versions == () and hello.alpn == ()
    assert hello.lookup_keys() == (b"\x42" * 16,)


def test_unknown_server_name_type_is_skipped():
    sni = ext(0, vec(2, b"\x07" + vec(2, b"opaque") + b"\x00" + vec(2, b"host.example")))
    assert parse(wire_of(hello_body(sni)))[0].server_name == "host.example"


# --------------------------------------------------------------------------- lookup_keys


def make(**fields):
    base = dict(
        legacy_version=0x0303, legacy_session_id=b"", server_name=None, supported_versions=(),
        psk_identities=(), has_early_data=False, cipher_suites=(0x1301,), alpn=(), offers_tls13=False,
    )
    base.update(fields)
    base["offers_tls13"] = 0x0304 in base["supported_versions"]
    return ClientHello(**base)


def test_lookup_keys_rules():
    sid, other = b"\x11" * 32, b"\x22" * 32
    assert make().lookup_keys() == ()
    assert make(legacy_session_id=b"\x01").lookup_keys() == (b"\x01",)
    # TLS 1.2 only: PSK identities (impossible in practice) are ignored.
    assert make(legacy_session_id=sid, psk_identities=(other,)).lookup_keys() == (sid,)
    tls13 = (0x0304, 0x0303)
    assert make(supported_versions=tls13, legacy_session_id=sid).lookup_keys() == (sid,)
    assert make(supported_versions=tls13, legacy_session_id=sid, psk_identities=(other,)).lookup_keys() == (other,)
    long_ticket = b"\x33" * 208
    assert make(supported_versions=tls13, legacy_session_id=sid, psk_identities=(long_ticket,)).lookup_keys() == ()
    assert make(supported_versions=tls13, psk_identities=(long_ticket, other, b"e", other)).lookup_keys() == (
        other,
        b"e",
    )
    assert make(supported_versions=(0x0303,), legacy_session_id=sid).lookup_keys() == (sid,)


# --------------------------------------------------------------------------- hypothesis

ALLOWED = (ClientHelloError, NeedMoreData, tuple)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_never_crash(data):
    assert isinstance(outcome(data), ALLOWED)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300), st.integers(0, 0xFFFF), st.integers(0, 0xFFFFFF))
def test_random_bodies_behind_valid_headers_never_crash(body, record_len, hs_len):
    data = b"\x16\x03\x01" + record_len.to_bytes(2, "big") + b"\x01" + hs_len.to_bytes(3, "big") + body
    assert isinstance(outcome(data), ALLOWED)
    assert isinstance(outcome(wire_of(body)), ALLOWED)  # consistent lengths, random body


def _mutate(data, wire: bytearray, byte_values) -> None:
    """One to eight random edits of ``wire`` in place: flip a bit, set a byte to one of
    ``byte_values``, insert or delete a few bytes, or cut the rest off."""
    for _ in range(data.draw(st.integers(1, 8))):
        kind = data.draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]))
        pos = data.draw(st.integers(0, max(0, len(wire) - 1)))
        if kind == "flip" and wire:
            wire[pos] ^= 1 << data.draw(st.integers(0, 7))
        elif kind == "set" and wire:
            wire[pos] = data.draw(st.sampled_from(byte_values))
        elif kind == "insert":
            wire[pos:pos] = data.draw(st.binary(min_size=1, max_size=4))
        elif kind == "delete":
            del wire[pos : pos + data.draw(st.integers(1, 4))]
        else:
            del wire[pos:]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_mutated_real_hellos_never_crash(all_hellos, data):
    name = data.draw(st.sampled_from(sorted(all_hellos)))
    wire = bytearray(all_hellos[name])
    _mutate(data, wire, [0, 1, 0x20, 0x7F, 0x80, 0xFF])
    result = outcome(bytes(wire))
    assert isinstance(result, ALLOWED)
    if isinstance(result, tuple):
        hello, used = result
        assert 0 < used <= len(wire)
        assert all(1 <= len(i) for i in hello.psk_identities)
        assert set(hello.lookup_keys()) <= set(hello.psk_identities) | {hello.legacy_session_id}


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_random_fragmentation_of_real_hellos(all_hellos, data):
    name = data.draw(st.sampled_from(sorted(all_hellos)))
    message, _ = hello_message(all_hellos[name])
    sizes = data.draw(st.lists(st.integers(1, 16384), min_size=1, max_size=20))
    version = data.draw(st.sampled_from([b"\x03\x00", b"\x03\x01", b"\x03\x03", b"\x03\xff"]))
    wire = records(message, sizes, version)
    assert parse(wire) == (parse(all_hellos[name])[0], len(wire))
    cut = data.draw(st.integers(0, len(wire) - 1))
    result = outcome(wire[:cut])
    assert isinstance(result, NeedMoreData) and 1 <= result.needed <= len(wire) - cut


_host_chars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_"
_known = {0, 16, 41, 42, 43}


def _generated_extensions(unknown, host=None, alpn=None, versions=None, early=False):
    """The extensions of a generated hello, before any PSK (which must come last)."""
    extensions = [ext(t, d) for t, d in unknown.items()]
    if host is not None:
        extensions.append(sni_ext(host.encode()))
    if alpn is not None:
        extensions.append(alpn_ext(*alpn))
    if versions is not None:
        extensions.append(versions_ext(*versions))
    if early:
        extensions.append(ext(42, b""))
    return extensions


@settings(max_examples=300, deadline=None)
@given(
    session_id=st.binary(max_size=32),
    suites=st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=40),
    host=st.none() | st.text(_host_chars, min_size=1, max_size=255),
    alpn=st.none() | st.lists(st.binary(min_size=1, max_size=255), min_size=1, max_size=8),
    versions=st.none() | st.lists(st.sampled_from([0x0304, 0x0303, 0x0302, 0x0A0A, 0x7F1C]), min_size=1, max_size=8),
    psk=st.none() | st.lists(st.binary(min_size=1, max_size=300), min_size=1, max_size=4),
    early=st.booleans(),
    unknown=st.dictionaries(st.integers(0, 0xFFFF).filter(lambda t: t not in _known), st.binary(max_size=40), max_size=5),
    order=st.randoms(use_true_random=False),
    sizes=st.lists(st.integers(1, 2000), min_size=1, max_size=5),
)
def test_generated_hellos_round_trip(session_id, suites, host, alpn, versions, psk, early, unknown, order, sizes):
    extensions = _generated_extensions(unknown, host, alpn, versions, early)
    order.shuffle(extensions)
    if psk is not None:
        extensions.append(psk_ext(*psk))  # must be last
    body = hello_body(*extensions, session_id=session_id, suites=suites)
    assume(len(body) + 4 <= ch.MAX_CLIENT_HELLO)
    wire = wire_of(body, sizes)
    hello, used = parse(wire)
    assert used == len(wire)
    assert hello.legacy_session_id == session_id
    assert hello.cipher_suites == tuple(suites)
    assert hello.server_name == host
    assert hello.alpn == tuple(alpn or ())
    assert hello.supported_versions == tuple(versions or ())
    assert hello.offers_tls13 == (0x0304 in (versions or ()))
    assert hello.psk_identities == tuple(psk or ())
    assert hello.has_early_data == early
    keys = hello.lookup_keys()
    assert all(1 <= len(k) <= 32 for k in keys)
    if not hello.offers_tls13:
        assert keys == ((session_id,) if session_id else ())
    elif psk:
        assert keys == tuple(dict.fromkeys(i for i in psk if len(i) <= 32))
    else:
        assert keys == ((session_id,) if session_id else ())


# --------------------------------------------------------------------------- the C scan
# sesscache.aio reads hellos with the C scan of _cffi_src/clienthello.py; the Python parser
# above is its reference. Same verdict (incomplete with the same `needed`, invalid, complete
# with the same bytes consumed) and the same lookup facts, on every input generated here.

from sesscache._binding import ffi, lib  # noqa: E402
from sesscache._binding.hello_scan import HelloScan  # noqa: E402


def scan_feed(pieces):
    """Feed the C scan piece by piece (as a connection would); (the scan, its buffer, and
    (verdict, bytes fed so far) after each call)."""
    scan, buf, verdicts = ffi.new("sc_hello_scan *"), bytearray(), []
    for piece in pieces:
        buf += piece
        rc = lib.sc_hello_scan_feed(scan, ffi.from_buffer(buf), len(buf))
        verdicts.append((rc, len(buf)))
        if rc != lib.SC_HELLO_MORE:
            break
    return scan, bytes(buf), verdicts


def assert_scan_agrees(scan, rc, data):
    expected = outcome(data)
    if isinstance(expected, NeedMoreData):
        assert rc == lib.SC_HELLO_MORE, (rc, expected)
        assert scan.needed == expected.needed
    elif isinstance(expected, ClientHelloError):
        assert rc == lib.SC_HELLO_INVALID, expected
    else:
        hello, used = expected
        assert rc == lib.SC_HELLO_COMPLETE
        assert scan.consumed == used
        keys = tuple(ffi.buffer(scan.keys[i], scan.key_lens[i])[:] for i in range(scan.nkeys))
        assert keys == hello.lookup_keys()[:2]
        assert ffi.buffer(scan.sid, scan.sid_len)[:] == hello.legacy_session_id
        sni = ffi.string(scan.sni, scan.sni_len).decode() if scan.sni_len >= 0 else None
        assert sni == hello.server_name
        assert bool(scan.offers_tls13) == hello.offers_tls13


_VERDICT = {NeedMoreData: lib.SC_HELLO_MORE, ClientHelloError: lib.SC_HELLO_INVALID}


def assert_scan_matches_reference(wire, steps=None, checks=40):
    """Fed in pieces of the sizes ``steps`` cycles through, the scan's verdict after each call
    matches the reference's on the same bytes (on ``checks`` calls spread over the run, the
    last one included, when there are more: each check re-parses a prefix in Python), and
    its final state gives the same facts."""
    steps = steps or [len(wire) or 1]
    pieces, pos, i = [], 0, 0
    while pos < len(wire):
        step = steps[i % len(steps)]
        pieces.append(wire[pos : pos + step])
        pos += step
        i += 1
    scan, fed, verdicts = scan_feed(pieces or [b""])
    every = max(1, len(verdicts) // checks)
    for n, (rc, length) in enumerate(verdicts):
        if n % every and n != len(verdicts) - 1:
            continue
        expected = outcome(fed[:length])
        assert rc == _VERDICT.get(type(expected), lib.SC_HELLO_COMPLETE), (length, expected)
    assert_scan_agrees(scan, verdicts[-1][0], fed[: verdicts[-1][1]])


def test_scan_agrees_on_every_prefix_of_real_hellos(all_hellos):
    for name, wire in all_hellos.items():
        for cut in range(len(wire) + 1):
            scan, fed, verdicts = scan_feed([wire[:cut]])
            assert_scan_agrees(scan, verdicts[-1][0], fed)
        assert_scan_matches_reference(wire, [1])  # one byte per call: the walk resumes


@pytest.mark.parametrize("sizes", [(1,), (3,), (100,), (1, 500, 2), (4096,)])
def test_scan_agrees_on_refragmented_real_hellos(all_hellos, sizes):
    for name, wire in all_hellos.items():
        message, _ = hello_message(wire)
        fragmented = records(message, sizes)
        assert_scan_matches_reference(fragmented + b"\x14\x03\x03\x00\x01\x01", [7, 300, 1])
        assert_scan_matches_reference(fragmented)


@pytest.mark.parametrize("data, match", RECORD_FAULTS, ids=[m for _, m in RECORD_FAULTS])
def test_scan_refuses_record_faults(data, match):
    assert_scan_matches_reference(data)
    assert_scan_matches_reference(data, [1])


@pytest.mark.parametrize("body, match", MALFORMED, ids=[m for _, m in MALFORMED])
def test_scan_refuses_malformed_bodies(body, match):
    wire = wire_of(body)
    assert_scan_matches_reference(wire)
    with pytest.raises(ClientHelloError, match=match):  # the reference says why
        HelloScan().feed(wire)


def test_scan_limits_match_the_reference():
    claim = (ch.MAX_CLIENT_HELLO - 4 + 1).to_bytes(3, "big")
    assert_scan_matches_reference(b"\x16\x03\x01\x40\x00\x01" + claim)
    at_limit = (ch.MAX_CLIENT_HELLO - 4).to_bytes(3, "big")
    assert_scan_matches_reference(b"\x16\x03\x01\x40\x00\x01" + at_limit)
    body_len = ch.MAX_CLIENT_HELLO - 4
    thin = records(b"\x01" + body_len.to_bytes(3, "big") + b"\x00" * body_len, (1,))
    assert_scan_matches_reference(thin[: 2 * ch.MAX_CLIENT_HELLO + 600], [4096])
    # The largest hello allowed, in full-size records, with a session id to find.
    pad = ch.MAX_CLIENT_HELLO - 4 - len(hello_body(ext(0xFF01, b""), session_id=b"\x42" * 32))
    body = hello_body(ext(0xFF01, b"\x00" * pad), session_id=b"\x42" * 32)
    assert len(body) + 4 == ch.MAX_CLIENT_HELLO
    assert_scan_matches_reference(wire_of(body))


def test_scan_one_byte_records_fed_one_byte_at_a_time_is_linear(ca):
    big = std_client(ca, alpn=[f"p{i:03d}".ljust(200, "x") for i in range(100)])
    message, _ = hello_message(first_flight(big, server_hostname="localhost"))
    wire = records(message, (1,))  # 20 000 records, 120 000 feeds
    reader = HelloScan()
    start = time.perf_counter()
    for i in range(len(wire)):
        keys = reader.feed(wire[i : i + 1])
    elapsed = time.perf_counter() - start
    assert keys == parse(wire)[0].lookup_keys()  # the random 32-byte legacy id of a TLS 1.3 client
    assert reader.consumed == len(wire) and reader.server_name == "localhost"
    assert bytes(reader.data) == wire
    assert elapsed < 5.0


def test_hello_scan_gives_what_the_prefetch_needs(all_hellos):
    for name, wire in all_hellos.items():
        hello, used = parse(wire)
        reader = HelloScan()
        assert reader.feed(wire[:10]) is None
        keys = reader.feed(wire[10:] + b"\x17\x03\x03")
        assert keys == hello.lookup_keys()[:2], name
        assert reader.server_name == hello.server_name and reader.consumed == used
        assert reader.feed(b"\x00\x01x") == keys  # stays done, keeps every byte
        reader.append(b"more")
        assert bytes(reader.data) == wire + b"\x17\x03\x03\x00\x01xmore"


def test_hello_scan_error_is_sticky_and_says_why():
    reader = HelloScan()
    with pytest.raises(ClientHelloError, match="not TLS"):
        reader.feed(b"GET / HTTP/1.1\r\n")
    with pytest.raises(ClientHelloError, match="not TLS"):
        reader.feed(b"\x16\x03\x01")
    reader = HelloScan()
    body_fault = wire_of(hello_body(session_id=b"\x01" * 33))
    assert reader.feed(bytearray(body_fault[:20])) is None
    with pytest.raises(ClientHelloError, match="legacy_session_id"):
        reader.feed(body_fault[20:])


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300), st.integers(0, 0xFFFF), st.integers(0, 0xFFFFFF))
def test_scan_on_random_bytes_agrees(body, record_len, hs_len):
    assert_scan_matches_reference(body)
    assert_scan_matches_reference(
        b"\x16\x03\x01" + record_len.to_bytes(2, "big") + b"\x01" + hs_len.to_bytes(3, "big") + body)
    assert_scan_matches_reference(wire_of(body))


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_scan_on_mutated_real_hellos_agrees(all_hellos, data):
    name = data.draw(st.sampled_from(sorted(all_hellos)))
    message, _ = hello_message(all_hellos[name])
    wire = bytearray(records(message, data.draw(st.lists(st.integers(1, 3000), min_size=1, max_size=4))))
    # 0x29, 0x2B: extension types the scan looks for (pre_shared_key, supported_versions)
    _mutate(data, wire, [0, 1, 0x20, 0x29, 0x2B, 0x7F, 0x80, 0xFF])
    steps = data.draw(st.lists(st.integers(1, 700), min_size=1, max_size=5))
    assert_scan_matches_reference(bytes(wire), steps)


@settings(max_examples=300, deadline=None)
@given(
    session_id=st.binary(max_size=32),
    host=st.none() | st.text(_host_chars, min_size=1, max_size=255),
    versions=st.none() | st.lists(st.sampled_from([0x0304, 0x0303, 0x0A0A]), min_size=1, max_size=4),
    psk=st.none() | st.lists(st.sampled_from([b"a" * 32, b"b" * 32, b"c", b"t" * 33, b"u" * 200]),
                             min_size=1, max_size=5),
    unknown=st.dictionaries(st.integers(0, 0xFFFF).filter(lambda t: t not in _known), st.binary(max_size=40), max_size=5),
    sizes=st.lists(st.integers(1, 2000), min_size=1, max_size=5),
)
def test_scan_on_generated_hellos_agrees(session_id, host, versions, psk, unknown, sizes):
    extensions = _generated_extensions(unknown, host, versions=versions)
    if psk is not None:
        extensions.append(psk_ext(*psk))
    assert_scan_matches_reference(wire_of(hello_body(*extensions, session_id=session_id), sizes))
