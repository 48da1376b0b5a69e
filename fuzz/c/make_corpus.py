"""Make the seed corpus of fuzz/c/fuzz_c.c from real handshakes (sesscache.testing).

    .venv/bin/python fuzz/c/make_corpus.py fuzz/c/corpus

Each file is one input: a selector byte (fuzz_c.c's targets) and then
  0: a ClientHello as the client sent it (TLS 1.2 and 1.3, with and without SNI, first
     contact and resumption offering a session id or a stateful ticket);
  1: the server_name extensions' bytes from those hellos, and pre_shared_key extensions
     offering the stored sessions as stateful tickets;
  2: the envelopes a SessionCache stored for those sessions;
  3: the session DER inside them;
  4: those envelopes sealed (sesscache.sealing) with the harness's fixed key and store key.
Names are the content's SHA-1, as libFuzzer names what it adds, so reruns add nothing.
"""
from __future__ import annotations

import hashlib
import sys
import tempfile
from pathlib import Path

import trustme

from sesscache import MemoryStore, SessionCache, testing
from sesscache.sealing import Sealer

ENVELOPE_SIZE = 26
#: fuzz_c.c's sc_fuzz_seal_key and sc_fuzz_store_key (target 4).
FUZZ_SEALER = Sealer([bytes(range(32))])
FUZZ_STORE_KEY = b"sc1:\x09sesscache0123456789abcdef0123456789abcdef"


def extensions(hello: bytes) -> dict:
    """type -> bytes of a ClientHello record's extensions (one record, as these are)."""
    body = hello[5 + 4:]
    at = 2 + 32
    at += 1 + body[at]
    at += 2 + int.from_bytes(body[at:at + 2], "big")
    at += 1 + body[at]
    end = at + 2 + int.from_bytes(body[at:at + 2], "big")
    at += 2
    found = {}
    while at + 4 <= end:
        kind, length = int.from_bytes(body[at:at + 2], "big"), int.from_bytes(body[at + 2:at + 4], "big")
        found[kind] = body[at + 4:at + 4 + length]
        at += 4 + length
    return found


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp())
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    ca.issue_cert("example.com").private_key_and_cert_chain_pem.write_to_path(str(folder / "s.pem"))
    inputs = []
    for version in (testing.TLS1_2, testing.TLS1_3):
        for name in ("example.com", None):
            store = MemoryStore()
            cache = SessionCache(store, lifetime=300)
            server = testing.TestContext(True, certfile=str(folder / "s.pem"), version=version, tickets=False)
            cache.attach(server, internal_cache=False)
            client = testing.TestContext(False, cafile=str(folder / "ca.pem"))
            session = None
            for _ in range(2):  # first contact, then a resumption offering the session
                c = client.connection()
                if name:
                    c.set_server_name(name)
                if session is not None:
                    c.set_session(session)
                c.step()
                hello = c.pending_output()
                inputs.append(b"\x00" + hello)
                for kind in (0, 41):  # server_name, pre_shared_key
                    if kind in extensions(hello):
                        inputs.append(b"\x01" + extensions(hello)[kind])
                c.free()
                s, c = testing.handshake(server, client, session, name)
                session = c.get_session()
                s.free()
                c.free()
            for key, blob, _ttl in store.entries():
                inputs.append(b"\x02" + blob)
                # A pre_shared_key extension offering this session as a stateful ticket
                # (identity = the session id, as OpenSSL's server issues them with
                # SSL_OP_NO_TICKET), with a 32-byte binder.
                session_id = key[5 + key[4]:]
                identity = len(session_id).to_bytes(2, "big") + session_id + bytes(4)
                binders = (33).to_bytes(2, "big") + bytes([32]) + bytes(32)
                inputs.append(b"\x01" + len(identity).to_bytes(2, "big") + identity + binders)
                inputs.append(b"\x03" + blob[ENVELOPE_SIZE + blob[ENVELOPE_SIZE - 1]:])
                inputs.append(b"\x04" + FUZZ_SEALER.seal(FUZZ_STORE_KEY, blob))
    for data in inputs:
        (out / hashlib.sha1(data).hexdigest()).write_bytes(data)
    print(f"{len(inputs)} inputs in {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "fuzz/c/corpus"))
