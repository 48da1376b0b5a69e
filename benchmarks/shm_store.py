"""SharedMemoryStore against OpenSSL's internal cache: every lookup through the store.

The issue-21 measurement: a session made on one context is resumed on another attached with
``internal_cache=False`` (what another worker process sees), so every resumption goes
through the get callback and the store; TLS 1.3 resumptions also write a new session. Arms,
interleaved in rounds (one block each per round, order shuffled), connections timed one by
one and the slowest tenth dropped in every arm alike (common.trimmed_mean):

* ``internal``: OpenSSL's internal cache only, no hooks (ratio 1);
* ``memory``: ``SessionCache(MemoryStore())`` (C fast path, one process);
* ``shm``: ``SessionCache(SharedMemoryStore(...))`` (C fast path over the segment);
* ``sqlite``: ``SessionCache(SQLiteStore(...))`` on tmpfs (Python path), the store the
  server pages recommended before;
* ``memory-default`` / ``shm-default``: the same two C stores with the other context
  attached with attach's defaults (over these stores: every lookup to the store);
* ``memory-l1`` / ``shm-l1``: OpenSSL's internal cache in front (``internal_cache=True``,
  the default before: OpenSSL keeps what it looked up, and walks its expiry-sorted list
  to insert each TLS 1.3 resumption's capped session).
* with ``--seal``, also ``memory+seal`` and ``shm+seal``: the same with ``seal_keys`` (one
  32-byte key), sealed and opened in C (csrc/seal.c).

Reports the median per-round ratio of each arm's rate to ``internal``'s, per stack and TLS
version, both for whole connections (client + server) and for the server's calls alone.

    .venv/bin/python benchmarks/shm_store.py [--rounds 30] [--block 200] [--seal] [--arms shm,shm+seal]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common as C  # noqa: E402

import sesscache  # noqa: E402
from sesscache.sealing import generate_key  # noqa: E402

ARMS = ("internal", "memory", "shm", "sqlite", "memory-default", "shm-default", "memory-l1", "shm-l1")
SEALED = ("memory+seal", "shm+seal")  # with --seal, or named in --arms


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--block", type=int, default=200)
    parser.add_argument("--pool", type=int, default=16)
    parser.add_argument("--stacks", default="pyopenssl,stdlib")
    parser.add_argument("--versions", default=f"{C.TLS12},{C.TLS13}")
    parser.add_argument("--arms", default=",".join(ARMS[1:]),
                        help="arms beside internal (default: all)")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    parser.add_argument("--seal", action="store_true", help="add the memory+seal and shm+seal arms")
    args = parser.parse_args(argv)
    chosen = list(dict.fromkeys([a for a in args.arms.split(",") if a] + (list(SEALED) if args.seal else [])))
    unknown = [a for a in chosen if a not in ARMS[1:] + SEALED]
    if unknown:
        parser.error(f"unknown arm(s) {', '.join(unknown)}; choose from {', '.join(ARMS[1:] + SEALED)}")
    seal_keys = [generate_key()]
    made: List[Any] = []
    tmp = tempfile.TemporaryDirectory(prefix="sesscache-bench-shm-", dir="/dev/shm")

    def factory(arm: str):
        kind = arm.split("+")[0]  # memory+seal: a MemoryStore, the cache seals

        def make():
            if kind == "memory":
                store = sesscache.MemoryStore()
            elif kind == "shm":
                store = sesscache.SharedMemoryStore(f"bench-{uuid.uuid4().hex[:12]}")
            else:
                store = sesscache.SQLiteStore(os.path.join(tmp.name, f"{uuid.uuid4().hex}.db"))
            made.append(store)
            return store
        return make

    out: Dict[str, Any] = {"machine": C.machine_info(), "uptime_before": os.getloadavg(),
                           "rounds": args.rounds, "block": args.block, "configs": []}
    try:
        for stack_name in args.stacks.split(","):
            st = C.stack(stack_name)
            for version in args.versions.split(","):
                arms = {"internal": C.build_arm(st, C.INTERNAL, version, "ecdsa", pool=args.pool)}
                for kind in chosen:
                    store_kind, _, attach = kind.partition("-")
                    arms[kind] = C.build_arm(st, {"default": C.SC_OTHER, "l1": C.SC_OTHER_L1}.get(attach, C.SC_STORE),
                                             version, "ecdsa", pool=args.pool,
                                             store_factory=factory(store_kind),
                                             seal_keys=seal_keys if kind.endswith("+seal") else None)
                blocks = C.interleave({k: (lambda arm=arm: C.run_block(st, arm, args.block))
                                       for k, arm in arms.items()}, args.rounds, seed=1)
                entry: Dict[str, Any] = {"stack": stack_name, "version": version, "ratios": {}, "resumed": {},
                                         "fast_path": {}}
                for kind in ("internal", *chosen):
                    rs = blocks[kind]
                    entry["resumed"][kind] = sum(r.reused for r in rs) / sum(r.n for r in rs)
                    if kind == "internal":
                        continue
                    entry["ratios"][kind] = {
                        "pair": C.summarize([a.rate / b.rate for a, b in zip(rs, blocks["internal"])]),
                        "server": C.summarize([a.server_rate / b.server_rate
                                               for a, b in zip(rs, blocks["internal"])]),
                    }
                    cache = arms[kind].keep[0]
                    entry["fast_path"][kind] = {"handed_over": cache.handed_over(),
                                                "hits": cache.stats.hits}
                out["configs"].append(entry)
                line = ", ".join(f"{k} {v['pair']['median']:.3f} (server {v['server']['median']:.3f})"
                                 for k, v in entry["ratios"].items())
                print(f"{stack_name} {version}: ratio to internal: {line}", flush=True)
                del arms, blocks
    finally:
        for store in made:
            try:
                store.close()
                if isinstance(store, sesscache.SharedMemoryStore):
                    store.unlink()
            except Exception:
                pass
        tmp.cleanup()
    out["uptime_after"] = os.getloadavg()
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    folder = Path(args.out)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{stamp}-shm_store.json").write_text(json.dumps(out, indent=1))
    lines = [f"# shm_store benchmark {stamp}", "",
             f"load average before {out['uptime_before']}, after {out['uptime_after']}; "
             f"{args.rounds} rounds of {args.block} connections per arm, slowest tenth trimmed", "",
             "| stack | TLS | arm | ratio to internal (connection) | IQR | server calls | resumed |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for e in out["configs"]:
        for kind, r in e["ratios"].items():
            lines.append(f"| {e['stack']} | {e['version']} | {kind} | {r['pair']['median']:.3f} | "
                         f"{r['pair']['p25']:.3f}-{r['pair']['p75']:.3f} | {r['server']['median']:.3f} | "
                         f"{e['resumed'][kind]:.3f} |")
    (folder / f"{stamp}-shm_store.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
