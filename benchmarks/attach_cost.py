#!/usr/bin/env python3
"""What ``SessionCache.attach`` (and ``detach``) costs where a server makes a context per connection.

gunicorn's sync and gthread workers build a new ``SSLContext`` (and load the certificate)
for every connection, so attaching a cache happens per connection too. Measured here, per
stack (the stdlib's ``ssl.SSLContext`` and pyOpenSSL's ``OpenSSL.SSL.Context``, whose
contexts are about five times cheaper to make, so its ratio is the hard one): making the
context as such a server does (context, chain, key, ``OP_NO_TICKET``), ``attach`` on it, and
``detach`` then ``attach`` again (only the detach timed), with every context kept alive (a
gthread worker keeps one per open keep-alive connection) so that the number of live hooked
contexts grows through the run. The two stacks run in interleaved rounds (one block each,
in an order shuffled per round); each ratio is the median of per-round ratios of medians.
Goal (issue 22): ``attach`` at most a tenth of making the context on both stacks, with no
warning however many contexts are alive.

Writes results/<UTC stamp>-attach_cost.md and .json (with ``uptime`` before and after) and
prints the table.

    .venv/bin/python benchmarks/attach_cost.py [--rounds 20] [--block 50]
"""
from __future__ import annotations

import argparse
import json
import logging
import random
import ssl
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import common as C  # noqa: E402

import sesscache  # noqa: E402

GOAL = 0.1


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


class _Arm:
    """One stack's cache, its live contexts and its per-round medians."""

    def __init__(self, stack: str, pem: str) -> None:
        self.stack, self.pem, self.make = stack, pem, MAKERS[stack]
        self.cache = sesscache.SessionCache(sesscache.MemoryStore())
        self.alive: list = []
        self.make_us: list = []
        self.attach_us: list = []
        self.detach_us: list = []
        self.ratios: list = []
        self.detach_ratios: list = []

    def block(self, size: int, rng: random.Random) -> None:
        made, attached, detached = [], [], []
        for _ in range(size):
            t0 = time.perf_counter()
            ctx = self.make(self.pem)
            t1 = time.perf_counter()
            self.cache.attach(ctx, session_id_context=b"bench")
            t2 = time.perf_counter()
            self.cache.detach(ctx)
            t3 = time.perf_counter()
            self.cache.attach(ctx, session_id_context=b"bench")  # live and attached again
            made.append(t1 - t0)
            attached.append(t2 - t1)
            detached.append(t3 - t2)
            self.alive.append(ctx)
        rng.shuffle(self.alive)  # (contexts stay alive; the order of their frees does not matter)
        make, attach, detach = (statistics.median(x) for x in (made, attached, detached))
        self.make_us.append(make * 1e6)
        self.attach_us.append(attach * 1e6)
        self.detach_us.append(detach * 1e6)
        self.ratios.append(attach / make)
        self.detach_ratios.append(detach / make)

    def summary(self) -> dict:
        return {"stack": self.stack, "live_contexts": len(self.alive),
                "make_us": statistics.median(self.make_us), "attach_us": statistics.median(self.attach_us),
                "detach_us": statistics.median(self.detach_us), "ratio": statistics.median(self.ratios),
                "ratio_range": (min(self.ratios), max(self.ratios)),
                "detach_ratio": statistics.median(self.detach_ratios),
                "per_round": {"make_us": self.make_us, "attach_us": self.attach_us,
                              "detach_us": self.detach_us, "ratios": self.ratios,
                              "detach_ratios": self.detach_ratios}}


def measure(rounds: int, block: int, seed: int) -> list:
    pem = C.certs("rsa").server_pem
    rng = random.Random(seed)
    arms = [_Arm(stack, pem) for stack in MAKERS]
    for _ in range(rounds):
        order = list(arms)
        rng.shuffle(order)
        for arm in order:
            arm.block(block, rng)
    return [arm.summary() for arm in arms]


def _uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--block", type=int, default=50)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    warnings = _Count()
    logging.getLogger("sesscache").addHandler(warnings)
    before = _uptime()
    rows = measure(args.rounds, args.block, args.seed)
    after = _uptime()
    lines = [f"# attach cost (issue 22), {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", "",
             f"`uptime` before: {before}", "",
             "| stack | live contexts | make context (us) | attach (us) | attach / make [range] "
             "| detach (us) | detach / make | goal attach <= 0.1x |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        low, high = r["ratio_range"]
        lines.append(f"| {r['stack']} | {r['live_contexts']} | {r['make_us']:.0f} | {r['attach_us']:.1f} "
                     f"| {r['ratio']:.3f} [{low:.3f}-{high:.3f}] | {r['detach_us']:.1f} "
                     f"| {r['detach_ratio']:.3f} | {'met' if r['ratio'] <= GOAL else 'MISSED'} |")
    lines += ["", f"`uptime` after: {after}", "",
              f"{args.rounds} interleaved rounds (stack order shuffled per round) of {args.block} contexts per "
              "stack; per round the median of each, then the median of per-round ratios. Every context stays "
              f"alive and attached. Warnings logged by sesscache: {warnings.records}."]
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    out = HERE / "results" / f"{stamp}-attach_cost"
    out.with_suffix(".json").write_text(json.dumps(
        {"uptime_before": before, "uptime_after": after, "rounds": args.rounds, "block": args.block,
         "warnings": warnings.records, "stacks": rows}, indent=1))
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
