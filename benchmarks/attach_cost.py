#!/usr/bin/env python3
"""What ``SessionCache.attach`` costs where a server makes a context per connection.

gunicorn's sync and gthread workers build a new ``SSLContext`` (and load the certificate)
for every connection, so attaching a cache happens per connection too. Measured here, in
interleaved rounds, per stack: making the context as such a server does (context, chain,
key, ``OP_NO_TICKET``), and ``attach`` on it, with every context kept alive (a gthread
worker keeps one per open keep-alive connection) so that the number of live hooked
contexts grows through the run. Goal: ``attach`` at most a tenth of making the context,
with no warning however many contexts are alive.

    .venv/bin/python benchmarks/attach_cost.py [--rounds 20] [--block 50]
"""
from __future__ import annotations

import argparse
import logging
import random
import ssl
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common as C  # noqa: E402

import sesscache  # noqa: E402


class _Count(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records = 0

    def emit(self, record) -> None:
        self.records += 1


def make_stdlib(pem: str):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pem)
    ctx.options |= ssl.OP_NO_TICKET
    return ctx


def make_pyopenssl(pem: str):
    from OpenSSL import SSL

    ctx = SSL.Context(SSL.TLS_SERVER_METHOD)
    ctx.use_certificate_chain_file(pem)
    ctx.use_privatekey_file(pem)
    ctx.set_options(SSL.OP_NO_TICKET)
    return ctx


MAKERS = {"stdlib": make_stdlib, "pyopenssl": make_pyopenssl}


def measure(stack: str, rounds: int, block: int, seed: int):
    pem = C.certs("rsa").server_pem
    make = MAKERS[stack]
    cache = sesscache.SessionCache(sesscache.MemoryStore())
    alive = []
    ratios, make_us, attach_us = [], [], []
    rng = random.Random(seed)
    for _ in range(rounds):
        made, attached = [], []
        for _ in range(block):
            t0 = time.perf_counter()
            ctx = make(pem)
            t1 = time.perf_counter()
            cache.attach(ctx, session_id_context=b"bench")
            t2 = time.perf_counter()
            made.append(t1 - t0)
            attached.append(t2 - t1)
            alive.append(ctx)
        rng.shuffle(alive)  # (contexts stay alive; the order of their frees does not matter)
        make_us.append(statistics.median(made) * 1e6)
        attach_us.append(statistics.median(attached) * 1e6)
        ratios.append(statistics.median(attached) / statistics.median(made))
    return {"stack": stack, "live_contexts": len(alive), "make_us": statistics.median(make_us),
            "attach_us": statistics.median(attach_us), "ratio": statistics.median(ratios),
            "ratio_range": (min(ratios), max(ratios))}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--block", type=int, default=50)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    warnings = _Count()
    logging.getLogger("sesscache").addHandler(warnings)
    print("stack      live contexts  make context (us)  attach (us)  attach / make  [range]")
    for stack in ("stdlib", "pyopenssl"):
        r = measure(stack, args.rounds, args.block, args.seed)
        low, high = r["ratio_range"]
        print(f"{r['stack']:<10} {r['live_contexts']:>13}  {r['make_us']:>17.0f}  {r['attach_us']:>11.0f}"
              f"  {r['ratio']:>13.3f}  [{low:.3f}-{high:.3f}]")
    print(f"warnings logged by sesscache: {warnings.records}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
