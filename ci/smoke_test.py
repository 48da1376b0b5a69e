#!/usr/bin/env python3
"""Smoke test for an installed sesscache (a wheel, or a build from the sdist).

Run outside the source tree, so the installed package is what is tested. It checks:

1. **libssl**: sesscache links no OpenSSL of its own. ``libssl_info()`` names the stdlib
   ``ssl`` module's copy (the version ``ssl`` reports), and a pyOpenSSL context's copy is
   cryptography's (verified: bundled copies by their symbol table, with three checks).
2. **binding**, on stdlib and pyOpenSSL contexts: a real TLS 1.3 handshake over memory
   BIOs reaches the new-session callback; the session's DER parses back.
3. **cache**, on both: a ``SessionCache`` with a ``MemoryStore`` serves a second server
   context (a restarted worker sharing the store), and a TLS 1.2 client resumes there
   from the store: the cache counts one hit.
4. **CLI**: ``python -m sesscache demo`` (TLS server and reconnecting client over
   loopback) resumes, and the ``sesscache`` console script answers ``stats``.

Needs ``trustme`` (a throwaway CA) and, for the pyOpenSSL half, pyOpenSSL; pass
``--require-pyopenssl`` to fail rather than skip that half when it is missing. Prints
what it found; exits non-zero on the first failure.
"""

from __future__ import annotations

import argparse
import os
import shutil
import ssl
import subprocess
import sys
import tempfile

SID_CTX = b"sesscache-smoke"


def fail(message: str) -> None:
    raise SystemExit(f"smoke: FAILED: {message}")


# --- stdlib -------------------------------------------------------------------------


def stdlib_contexts(pem: str, ca, version: ssl.TLSVersion):
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(pem)
    server.minimum_version = server.maximum_version = version
    server.options |= ssl.OP_NO_TICKET
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ca.configure_trust(client)
    return server, client


def stdlib_handshake(server_ctx, client_ctx, session=None):
    s_in, s_out, c_in, c_out = (ssl.MemoryBIO() for _ in range(4))
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname="localhost", session=session)
    done = {"server": False, "client": False}
    for _ in range(20):
        for name, obj, out, peer_in in (("client", client, c_out, s_in), ("server", server, s_out, c_in)):
            if not done[name]:
                try:
                    obj.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
            data = out.read()
            if data:
                peer_in.write(data)
        if all(done.values()):
            break
    if not all(done.values()):
        fail(f"stdlib handshake did not finish: {done}")
    try:  # TLS 1.3 tickets travel after the handshake: let the client read them
        client.read(1)
    except ssl.SSLWantReadError:
        pass
    return server.session_reused, client.session


# --- pyOpenSSL -----------------------------------------------------------------------


def pyopenssl_contexts(pem: str, ca_pem: str, tls13: bool):
    from OpenSSL import SSL

    number = SSL.TLS1_3_VERSION if tls13 else SSL.TLS1_2_VERSION
    server = SSL.Context(SSL.TLS_SERVER_METHOD)
    server.use_certificate_chain_file(pem)
    server.use_privatekey_file(pem)
    server.set_min_proto_version(number)
    server.set_max_proto_version(number)
    server.set_options(SSL.OP_NO_TICKET)
    client = SSL.Context(SSL.TLS_CLIENT_METHOD)
    client.load_verify_locations(ca_pem)
    client.set_verify(SSL.VERIFY_PEER)
    return server, client


def pyopenssl_handshake(server_ctx, client_ctx, session=None):
    from OpenSSL import SSL

    server, client = SSL.Connection(server_ctx), SSL.Connection(client_ctx)
    server.set_accept_state()
    client.set_connect_state()
    client.set_tlsext_host_name(b"localhost")
    if session is not None:
        client.set_session(session)
    done = [False, False]
    for _ in range(20):
        for index, conn in enumerate((client, server)):
            if not done[index]:
                try:
                    conn.do_handshake()
                    done[index] = True
                except SSL.WantReadError:
                    pass
        pump(client, server)
        pump(server, client)
        if all(done):
            break
    if not all(done):
        fail(f"pyOpenSSL handshake did not finish: {done}")
    try:
        client.recv(1)
    except SSL.WantReadError:
        pass
    import sesscache

    reused, session = sesscache.session_reused(server), client.get_session()
    # A clean close: OpenSSL drops a session from its caches when a connection is freed
    # without one (a TLS 1.2 session would then never resume).
    for conn, peer in ((server, client), (client, server)):
        try:
            conn.shutdown()
        except SSL.Error:
            pass
        pump(conn, peer)
    return reused, session


def pump(source, sink) -> None:
    from OpenSSL import SSL

    try:
        data = source.bio_read(65536)
    except SSL.WantReadError:
        return
    if data:
        sink.bio_write(data)


# --- the checks ----------------------------------------------------------------------


def check_libssl(sesscache, have_pyopenssl: bool) -> None:
    stdlib = sesscache.libssl_info()
    print(f"smoke: stdlib ssl module's libssl: {stdlib.describe()}; {', '.join(stdlib.verified_by)}")
    if stdlib.version != ssl.OPENSSL_VERSION:
        fail(f"libssl_info() is {stdlib.version!r}, the ssl module runs on {ssl.OPENSSL_VERSION!r}")
    if stdlib.origin != "dynamic" or not os.path.exists(stdlib.path):
        fail(f"the stdlib's copy should come from the dynamic linker: {stdlib}")
    if sesscache.libssl_info(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)) is not stdlib:
        fail("a stdlib context is not bound to the ssl module's libssl")
    if not have_pyopenssl:
        return
    from OpenSSL import SSL
    from cryptography.hazmat.bindings.openssl.binding import Binding

    theirs = sesscache.libssl_info(SSL.Context(SSL.TLS_METHOD))
    print(f"smoke: pyOpenSSL's (cryptography's) libssl: {theirs.describe()}; {'; '.join(theirs.verified_by)}")
    reported = Binding.ffi.string(Binding.lib.OpenSSL_version(0)).decode()
    if theirs.version != reported:
        fail(f"pyOpenSSL's copy reads {theirs.version!r}, cryptography reports {reported!r}")
    if theirs.origin == "bundled" and len(theirs.verified_by) != 3:
        fail(f"cryptography's bundled copy is not fully verified: {theirs.verified_by}")


def check_binding(sesscache, name, contexts, handshake) -> None:
    server_ctx, client_ctx = contexts(tls13=True)
    seen = []
    sesscache.set_new_session_callback(server_ctx, lambda conn, session: seen.append(session.to_bytes()))
    handshake(server_ctx, client_ctx)
    if not seen:
        fail(f"{name}: the new-session callback never ran during a TLS 1.3 handshake")
    parsed = sesscache.Session.from_bytes(seen[0], server_ctx)
    if parsed.to_bytes() != seen[0]:
        fail(f"{name}: a session's DER does not survive a round trip")
    print(f"smoke: {name}: binding ok (new-session callback ran {len(seen)} time(s), "
          f"{len(seen[0])} bytes of DER, parsed back)")


def check_cache(sesscache, name, contexts, handshake) -> None:
    store = sesscache.MemoryStore()
    first_server, client_ctx = contexts(tls13=False)
    first = sesscache.SessionCache(store)
    first.attach(first_server, session_id_context=SID_CTX)
    reused, session = handshake(first_server, client_ctx)
    if reused or first.stats.stores != 1:
        fail(f"{name}: the first handshake should be full and stored once: {first.stats}")
    # A restarted worker: a new context and cache over the same store.
    second_server, _ = contexts(tls13=False)
    second = sesscache.SessionCache(store)
    second.attach(second_server, session_id_context=SID_CTX)
    reused, _ = handshake(second_server, client_ctx, session)
    if not reused or second.stats.hits != 1:
        fail(f"{name}: the client did not resume from the store on the second context: "
             f"reused={reused}, {second.stats}")
    print(f"smoke: {name}: cache ok (TLS 1.2 resumed from the store on a second context, hits=1)")


def check_cli(workdir: str) -> None:
    demo = subprocess.run([sys.executable, "-m", "sesscache", "demo", "--connections", "20", "--key", "ec"],
                          capture_output=True, text=True, timeout=120, cwd=workdir)
    if demo.returncode != 0 or "18/18   100%" not in demo.stdout:
        fail(f"`python -m sesscache demo` did not resume every time:\n{demo.stdout}\n{demo.stderr}")
    script = shutil.which("sesscache", path=os.path.dirname(sys.executable))
    if script is None:
        fail("the `sesscache` console script is not installed next to the interpreter")
    db = os.path.join(workdir, "smoke.db")
    stats = subprocess.run([script, "stats", "--store", f"sqlite:{db}"], capture_output=True, text=True,
                           timeout=60, cwd=workdir)
    if stats.returncode != 0:
        fail(f"`sesscache stats` failed:\n{stats.stdout}\n{stats.stderr}")
    print("smoke: CLI ok (demo resumed 100% on TLS 1.2 and 1.3; `sesscache stats` answered)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--require-pyopenssl", action="store_true")
    args = parser.parse_args()
    if os.path.isdir("src/sesscache") and os.path.abspath("src") in map(os.path.abspath, sys.path):
        fail("run this outside the source tree so the installed package is tested")
    import sesscache

    print(f"smoke: sesscache {sesscache.__version__} from {os.path.dirname(sesscache.__file__)}")
    try:
        import OpenSSL  # noqa: F401
        have_pyopenssl = True
    except ImportError:
        if args.require_pyopenssl:
            fail("pyOpenSSL is not installed")
        have_pyopenssl = False

    import trustme

    ca = trustme.CA()
    with tempfile.TemporaryDirectory() as tmp:
        pem, ca_pem = os.path.join(tmp, "server.pem"), os.path.join(tmp, "ca.pem")
        ca.issue_cert("localhost").private_key_and_cert_chain_pem.write_to_path(pem)
        ca.cert_pem.write_to_path(ca_pem)

        def stdlib(tls13):
            return stdlib_contexts(pem, ca, ssl.TLSVersion.TLSv1_3 if tls13 else ssl.TLSVersion.TLSv1_2)

        def pyopenssl(tls13):
            return pyopenssl_contexts(pem, ca_pem, tls13)

        check_libssl(sesscache, have_pyopenssl)
        stacks = [("stdlib", stdlib, stdlib_handshake)]
        if have_pyopenssl:
            stacks.append(("pyOpenSSL", pyopenssl, pyopenssl_handshake))
        else:
            print("smoke: pyOpenSSL not installed; its half is skipped")
        for name, contexts, handshake in stacks:
            check_binding(sesscache, name, contexts, handshake)
            check_cache(sesscache, name, contexts, handshake)
        check_cli(tmp)
    print("smoke: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
