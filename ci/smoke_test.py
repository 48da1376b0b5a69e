#!/usr/bin/env python3
"""Smoke test for a built sesscache wheel (cibuildwheel's test-command).

Checks, on the installed wheel and not the source tree, that:
1. the compiled module loads and reports the libssl it was linked with;
2. a stdlib ``ssl.SSLContext`` binds and a real TLS 1.3 handshake over memory BIOs
   reaches sesscache's new-session callback (so the trampolines run);
3. pyOpenSSL's context binds too, where pyOpenSSL is installed.

Needs ``trustme`` for a throwaway certificate. Prints what it found; exits non-zero on
the first failure.
"""

from __future__ import annotations

import os
import ssl
import sys
import tempfile


def handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext) -> None:
    s_in, s_out, c_in, c_out = (ssl.MemoryBIO() for _ in range(4))
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname="localhost")
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
    # TLS 1.3 tickets travel after the handshake: let the client read them.
    try:
        client.read(1)
    except ssl.SSLWantReadError:
        pass
    if not all(done.values()):
        raise SystemExit(f"smoke: handshake did not finish: {done}")


def main() -> int:
    if os.path.isdir("src/sesscache") and os.path.abspath("src") in map(os.path.abspath, sys.path):
        raise SystemExit("smoke: run this outside the source tree so the installed wheel is tested")
    import sesscache

    linked = sesscache.libssl_info()
    print(f"smoke: sesscache {sesscache.__version__} from {os.path.dirname(sesscache.__file__)}")
    print(f"smoke: linked libssl: {linked.describe()}")
    if not linked.version.startswith("OpenSSL"):
        raise SystemExit(f"smoke: unexpected libssl version string {linked.version!r}")

    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("localhost")
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    server_ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    with tempfile.TemporaryDirectory() as tmp:
        pem = os.path.join(tmp, "server.pem")
        cert.private_key_and_cert_chain_pem.write_to_path(pem)
        server_ctx.load_cert_chain(pem)
    ca.configure_trust(client_ctx)
    print(f"smoke: stdlib ssl context on: {sesscache.libssl_info(server_ctx).describe()}")

    seen = []
    sesscache.set_new_session_callback(server_ctx, lambda conn, session: seen.append(session))
    handshake(server_ctx, client_ctx)
    if not seen:
        raise SystemExit("smoke: the server's new-session callback never ran during a TLS 1.3 handshake")
    print(f"smoke: new-session callback ran {len(seen)} time(s); "
          f"first session is {len(seen[0].to_bytes())} bytes of DER")

    try:
        from OpenSSL import SSL
    except ImportError:
        print("smoke: pyOpenSSL not installed; skipped its context")
    else:
        print(f"smoke: pyOpenSSL context on: {sesscache.libssl_info(SSL.Context(SSL.TLS_METHOD)).describe()}")
    print("smoke: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
