"""A TLS 1.3 resumption of an *old* chain, with OpenSSL's internal cache in front or not.

OpenSSL keeps its internal cache sorted by expiry. sesscache caps each TLS 1.3
resumption's new session at its chain's first handshake's lifetime, so that session
expires before every session made since the chain began, and OpenSSL walks past all of
them to insert it. ``benchmarks/run.py walk`` grows one young chain; here a chain begins,
N other clients make full handshakes, and the old chain resumes 200 times: server time per
resumption, median, for a young chain beside it. stdlib ``ssl`` (the system OpenSSL),
memory BIOs, ECDSA P-256, ``MemoryStore``.

    .venv/bin/python benchmarks/old_chain.py [-n 5000]

Measured (OpenSSL 3.0.19, load 0.2): internal cache on, N=5000: old chain 644 us, young 214
us (N=0: 214 / 216); internal cache off (attach's default over MemoryStore since issue 22):
212 / 210.
"""
from __future__ import annotations

import argparse
import ssl
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import sesscache  # noqa: E402
from sesscache._certs import make_self_signed  # noqa: E402


def run(n: int, internal_cache: bool, certfile: str) -> "tuple[float, float]":
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(certfile)
    server.minimum_version = ssl.TLSVersion.TLSv1_3
    server.options |= ssl.OP_NO_TICKET
    cache = sesscache.SessionCache(sesscache.MemoryStore(max_sessions=100_000))
    cache.attach(server, internal_cache=internal_cache)
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.check_hostname = False
    client.verify_mode = ssl.CERT_NONE

    def connect(session=None):
        si, so, ci, co = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
        s = server.wrap_bio(si, so, server_side=True)
        c = client.wrap_bio(ci, co, server_hostname="localhost", session=session)
        spent = 0.0
        for _ in range(6):
            try:
                c.do_handshake()
            except ssl.SSLWantReadError:
                pass
            si.write(co.read())
            started = time.perf_counter()
            try:
                s.do_handshake()
            except ssl.SSLWantReadError:
                pass
            spent += time.perf_counter() - started
            ci.write(so.read())
        c.write(b"x")
        si.write(co.read())
        s.read()
        s.write(b"y")
        ci.write(so.read())
        c.read()  # the client has its ticket
        return c.session, s.session_reused, spent

    def chain(session, rounds=200):
        times = []
        for _ in range(rounds):
            session, reused, spent = connect(session)
            assert reused
            times.append(spent)
        return statistics.median(times) * 1e6

    old, _, _ = connect()
    for _ in range(n):
        connect()
    return chain(old), chain(connect()[0])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=5000, help="full handshakes after the old chain began")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        certfile, _ = make_self_signed(Path(folder), "ec")
        for internal in (True, False):
            old, young = run(args.n, internal, certfile)
            print(f"{ssl.OPENSSL_VERSION}, internal cache {'on ' if internal else 'off'}, N={args.n}: "
                  f"old chain {old:.0f} us, young chain {young:.0f} us per resumption (server time, median)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
