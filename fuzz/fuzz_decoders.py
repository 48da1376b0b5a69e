"""atheris fuzz target: the Python decoders of bytes that come from a store or a config
(issue 23), besides the session decoder (fuzz_session.py).

    pip install atheris
    python fuzz/fuzz_decoders.py -runs=200000 [-max_len=4096] [CORPUS_DIR ...]

Without a corpus directory, a temporary one is seeded with real values (a ring, plain and
sealed; a client session envelope; store URLs). The first byte of each input picks the
target:

* 0: ``decode_ring(rest)``, plain: a ring within its bounds, or RingFormatError.
* 1: the same behind a valid plain header (so mutations reach the JSON and its fields).
* 2: the same, sealed (with the right keys: mutations reach the seal's checks).
* 3: ``ClientSessionCache.prepare`` over a store that returns ``rest`` under the key: it
  offers a session or counts a miss, and never raises (a pyOpenSSL client connection).
* 4: ``ClientSessionCache.key_for`` of (rest as text split in host / port / name): bytes.
* 5: ``redacted_store_url(rest as text)``: a str, and no query value of a password-like
  parameter survives.

Oracle: no exception other than the expected ones.
"""
from __future__ import annotations

import json
import re

import atheris

with atheris.instrument_imports(include=["sesscache"]):
    from sesscache import ClientSessionCache, MemoryStore, TicketKeys
    from sesscache.sealing import Sealer, generate_key
    from sesscache.stores.urls import redacted_store_url
    from sesscache.ticket_keys import RING_KEY, RingFormatError, decode_ring

from OpenSSL import SSL

HEADER = b"SCTK\x01\x00"
SEAL_KEYS = [generate_key()]
SEALER = Sealer(SEAL_KEYS)


class Store(MemoryStore):
    value = None

    def get(self, key):
        return self.value


def _ring_blobs():
    store = MemoryStore()
    TicketKeys(store, background=False).close()
    plain = store.get(RING_KEY)
    sealed_store = MemoryStore()
    TicketKeys(sealed_store, background=False, seal_keys=SEAL_KEYS).close()
    return plain, sealed_store.get(RING_KEY)


PLAIN_RING, SEALED_RING = _ring_blobs()
CLIENT_STORE = Store()
CLIENT = ClientSessionCache(CLIENT_STORE)
CLIENT_CTX = SSL.Context(SSL.TLS_CLIENT_METHOD)
CLIENT.attach(CLIENT_CTX)
_SECRET = re.compile(r"(?i)(password|token|secret)=([^&;#]+)")


def _ring(blob, sealer=None):
    try:
        ring = decode_ring(blob, sealer, RING_KEY)
    except RingFormatError:
        return
    for _, key in ring.keys():
        assert len(key.material) == 80 and 0 <= key.not_after <= 1e11
        int(key.not_after)
    ring.wipe()


def TestOneInput(data: bytes) -> None:
    if not data:
        return
    target, rest = data[0] % 6, data[1:]
    if target == 0:
        _ring(rest)
    elif target == 1:
        _ring(HEADER + rest)
    elif target == 2:
        _ring(b"SCTK\x01\x01" + SEALER.seal(RING_KEY, rest) if rest[:1] == b"{" else rest, SEALER)
    elif target == 3:
        CLIENT_STORE.value = rest
        conn = SSL.Connection(CLIENT_CTX)
        conn.set_connect_state()
        CLIENT.prepare(conn, "localhost", 443)
    elif target == 4:
        text = rest.decode("utf-8", "surrogateescape")
        host, _, name = text.partition("\x00")
        assert isinstance(ClientSessionCache.key_for(host, len(rest), name or None), bytes)
    else:
        text = rest.decode("utf-8", "replace")
        shown = redacted_store_url(text)
        assert isinstance(shown, str)
        if "?" in text and "@" not in text and "#" not in text:
            for match in _SECRET.finditer(shown.partition("?")[2]):
                assert match.group(2) == "***", (text, shown)


def _seeds() -> dict:
    body = PLAIN_RING[6:]
    seeds = {
        "ring": b"\x00" + PLAIN_RING,
        "ring-body": b"\x01" + body,
        "ring-body-nested": b"\x01" + json.dumps({"keys": [[[[1]]]]}).encode(),
        "sealed-ring": b"\x02" + SEALED_RING,
        "sealed-body": b"\x02" + body,
        "client-envelope": b"\x03" + b"\x01" + (4_000_000_000).to_bytes(8, "big") + b"\x30\x03\x02\x01\x01",
        "client-key": b"\x04" + b"a" * 60 + b".example.com\x00localhost",
        "url": b"\x05redis+sentinel://u:p@h1:1,h2:2/svc?sentinel_password=x&password=y",
    }
    return seeds


def main() -> None:
    from _runner import run

    run(TestOneInput, _seeds(), prefix="sesscache-fuzz-decoders-")


if __name__ == "__main__":
    main()
