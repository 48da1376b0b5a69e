"""atheris fuzz target: Session.from_bytes and SessionCache's get path, on real OpenSSL.

    pip install atheris trustme
    python fuzz/fuzz_session.py -runs=200000 [-max_len=4096] [CORPUS_DIR ...]

Without a corpus directory, a temporary one is seeded with real blobs (a session's DER,
its cache envelope, a sealed blob). The first byte of each input picks the target:

* 0: ``Session.from_bytes(rest, server_context)``: a Session or SessionError.
* 1: the cache's get path: ``rest`` is stored as the value for the session a real,
  recorded ClientHello offers; a fresh server connection reads that hello, so OpenSSL
  calls the get hook exactly as in production, and answers. The store is a plain
  ``MemoryStore``, so the C fast path reads it first and hands what it refuses to the
  Python handler: both are fuzzed.
* 2: the same with ``rest`` as the DER inside a well-formed envelope (so mutations reach
  d2i_SSL_SESSION and the checks after it, not only the envelope parser).
* 3: the same as 1 through a sealed cache (the Python path only: the store hands the
  input back from its ``get``).

Oracles: no crash, no exception other than the expected ones, no SSL_SESSION left alive
after an input (OpenSSL's own count, checked every input), and the server still resumes
the real session after every 1000 inputs.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["sesscache"]):
    import sesscache
    from sesscache import MemoryStore, Session, SessionCache, SessionError, testing
    from sesscache._binding import lib
    from sesscache.sealing import generate_key

import trustme

NAME = "localhost"


class Store(MemoryStore):
    """Answers every lookup with the current fuzz input (a subclass: no fast path)."""

    value = None

    def get(self, key):
        if self.value is not None:
            return self.value
        return super().get(key)


def _close(s, c):
    """Close both ends cleanly (close_notify), or OpenSSL marks the session not resumable."""
    s.shutdown()
    c.feed(s.pending_output())
    c.shutdown()
    s.feed(c.pending_output())
    s.free()
    c.free()


def _setup():
    folder = Path(tempfile.mkdtemp(prefix="sesscache-fuzz-"))
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    ca.issue_cert(NAME).private_key_and_cert_chain_pem.write_to_path(str(folder / "server.pem"))
    rigs = []
    for sealed in (False, True):
        store = Store() if sealed else MemoryStore()
        cache = SessionCache(store, lifetime=3600, seal_keys=[generate_key()] if sealed else None)
        server = testing.TestContext(True, certfile=str(folder / "server.pem"), version=testing.TLS1_2,
                                     tickets=False)
        cache.attach(server, internal_cache=False)
        client = testing.TestContext(False, cafile=str(folder / "ca.pem"))
        s, c = testing.handshake(server, client, server_name=NAME)
        session = c.get_session()
        _close(s, c)
        key, blob, _ = store.entries()[0]
        hello_conn = client.connection()
        hello_conn.set_server_name(NAME)
        hello_conn.set_session(session)
        hello_conn.step()
        hello = hello_conn.pending_output()
        hello_conn.free()
        rigs.append(dict(store=store, cache=cache, server=server, client=client, session=session,
                         key=key, blob=blob, hello=hello))
    plain = rigs[0]
    stored = plain["cache"]._unwrap(plain["key"], plain["blob"])
    plain["origin"], plain["name"], plain["der"] = stored.origin, stored.server_name or b"", bytes(stored.der)
    plain["certificate"] = stored.certificate
    return rigs


RIGS = _setup()
PLAIN, SEALED = RIGS
SLOT = sesscache.libssl_info(PLAIN["server"]).slot


def _live_not_kept() -> int:
    """Live sessions, less those the stores keep decoded beside their entries (the fast path
    copies those rather than decode again; they go with their entries)."""
    return lib.sc_live_sessions(SLOT) - sum(rig["store"].describe()["decoded"] for rig in RIGS)


BASELINE = _live_not_kept()
COUNT = [0]


def _serve(rig, value):
    if isinstance(rig["store"], Store):
        rig["store"].value = value
    else:  # the plain store: the input is what it holds, for C to read
        rig["store"].set(rig["key"], value, 3600.0)
    conn = rig["server"].connection()
    conn.feed(rig["hello"])
    try:
        conn.step()
    except testing.TLSError:
        pass  # an alert is an answer; a crash or a Python error from sesscache is not
    answer = conn.pending_output()
    conn.free()
    if isinstance(rig["store"], Store):
        rig["store"].value = None
    else:
        rig["store"].set(rig["key"], rig["blob"], 3600.0)
    assert answer, "the server did not answer the ClientHello"


def _still_resumes():
    for rig in RIGS:
        s, c = testing.handshake(rig["server"], rig["client"], rig["session"], server_name=NAME)
        assert s.session_reused, "the server no longer resumes a good session"
        _close(s, c)


_still_resumes()


def TestOneInput(data: bytes) -> None:
    if not data:
        return
    target, rest = data[0] % 4, data[1:]
    if target == 0:
        try:
            Session.from_bytes(rest, PLAIN["server"]).close()
        except SessionError:
            pass
    elif target == 1:
        _serve(PLAIN, rest)
    elif target == 2:
        _serve(PLAIN, PLAIN["cache"]._wrap(PLAIN["key"], PLAIN["origin"], PLAIN["name"], PLAIN["certificate"], rest))
    else:
        _serve(SEALED, rest)
    live = _live_not_kept()
    assert live == BASELINE, f"{live - BASELINE} SSL_SESSION(s) leaked by input {data[:64]!r}"
    COUNT[0] += 1
    if COUNT[0] % 1000 == 0:
        _still_resumes()


def _seeds() -> dict:
    seeds = {
        "der": b"\x00" + PLAIN["der"],
        "envelope": b"\x01" + PLAIN["blob"],
        "der-in-envelope": b"\x02" + PLAIN["der"],
        "sealed": b"\x03" + SEALED["blob"],
        "empty-der": b"\x00",
    }
    return seeds


def main() -> None:
    from _runner import run

    run(TestOneInput, _seeds(), prefix="sesscache-fuzz-corpus-")


if __name__ == "__main__":
    main()
