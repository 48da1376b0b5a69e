#!/usr/bin/env python3
"""sesscache benchmarks (issue 5): ``make bench`` or ``python benchmarks/run.py [names] [--quick]``.

Sub-benchmarks, selectable by name (default: all, in this order):

  resume   resumed handshakes/s: sesscache (MemoryStore) vs OpenSSL's internal cache vs a
           dict over the raw callbacks; pyOpenSSL and stdlib, TLS 1.2 and 1.3, ECDSA and RSA,
           memory BIOs and TCP on 127.0.0.1
  events   cost of one new-session and one get-session event, in microseconds
  prefork  4 forked workers on one listening socket: per-process caches vs one SQLiteStore
  redis    RedisStore on loopback vs MemoryStore; store get/set latency p50/p99
  memory   bytes per cached session (malloc in use), RSS over up to a million handshakes
  walk     (opt-in, not in "all") the new-session handler's cost as the internal cache
           fills, with and without the lifetime clamp (SSL_SESSION_set_timeout)

Results go to benchmarks/results/<stamp>-<mode>.{json,png,md}; the markdown table is
printed, and written into benchmarks/README.md when every sub-benchmark ran (or with
--readme). Everything runs on this machine only (memory BIOs, 127.0.0.1, a Unix socket),
bounded in count and time. Comparisons are interleaved rounds: see common.py.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Tuple

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import common as C  # noqa: E402

NAMES = ("resume", "events", "prefork", "redis", "memory")
OPT_IN = ("walk",)


@dataclass
class Params:
    quick: bool = False
    seed: int = 1
    stacks: Tuple[str, ...] = ("pyopenssl", "stdlib")
    versions: Tuple[str, ...] = (C.TLS12, C.TLS13)
    key_types: Tuple[str, ...] = C.KEY_TYPES
    pool: int = 16  # client sessions cycled through in each arm
    # resume
    rounds: int = 30
    block: int = 100
    socket_rounds: int = 15
    socket_block: int = 50
    # events
    events_rounds: int = 30
    events_block: int = 100
    in_situ: int = 5000
    # prefork
    prefork_stacks: Tuple[str, ...] = ("stdlib", "pyopenssl")
    prefork_rounds: int = 3
    prefork_clients: int = 64
    prefork_reconnects: int = 1000
    # redis
    redis_rounds: int = 20
    redis_block: int = 100
    redis_latency_calls: int = 20000
    redis_cross: int = 1200  # cross-server reconnections per TLS version and setup (a third with the slow store)
    # memory
    store_entries: int = 100_000
    rss_handshakes: int = 1_000_000
    rss_clients: int = 64
    rss_lifetime: float = 60.0
    # walk (opt-in)
    walk_steps: int = 12
    walk_block: int = 1500

    @classmethod
    def quick_mode(cls) -> "Params":
        return cls(quick=True, rounds=8, block=60, socket_rounds=5, socket_block=30,
                   events_rounds=10, events_block=100, in_situ=2000,
                   prefork_stacks=("stdlib",), prefork_rounds=2, prefork_clients=16,
                   prefork_reconnects=300, redis_rounds=6, redis_block=60, redis_latency_calls=5000,
                   redis_cross=300,
                   rss_handshakes=40_000, rss_clients=32, rss_lifetime=10.0,
                   walk_steps=4, walk_block=500)


def _progress_bar(total: int, desc: str, enabled: bool):
    if not enabled:
        return None, (lambda n=1: None)
    from tqdm import tqdm

    bar = tqdm(total=total, desc=desc, unit="round" if desc != "memory" else "hs", leave=False,
               dynamic_ncols=True, file=sys.stderr)
    return bar, bar.update


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"sub-benchmarks to run: {', '.join(NAMES + OPT_IN)} (default: {', '.join(NAMES)})")
    parser.add_argument("--quick", action="store_true", help="a couple of minutes in all (fewer rounds, smaller runs)")
    parser.add_argument("--out", default=str(HERE / "results"), help="folder for the JSON, PNG and markdown")
    parser.add_argument("--readme", action="store_true", help="write the table into benchmarks/README.md even for a partial run")
    parser.add_argument("--no-readme", action="store_true", help="never touch benchmarks/README.md")
    parser.add_argument("--no-chart", action="store_true", help="skip the PNG")
    parser.add_argument("--no-progress", action="store_true", help="no tqdm progress bars")
    parser.add_argument("--stacks", help="comma-separated subset of pyopenssl,stdlib")
    parser.add_argument("--rss-handshakes", type=int, help="override the length of the RSS run")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    names = args.names or list(NAMES)
    unknown = [n for n in names if n not in NAMES + OPT_IN]
    if unknown:
        parser.error(f"unknown sub-benchmark(s) {', '.join(unknown)}; choose from {', '.join(NAMES + OPT_IN)}")
    p = Params.quick_mode() if args.quick else Params()
    p.seed = args.seed
    if args.stacks:
        p.stacks = tuple(s.strip() for s in args.stacks.split(",") if s.strip())
        p.prefork_stacks = tuple(s for s in p.prefork_stacks if s in p.stacks) or p.stacks[:1]
    if args.rss_handshakes:
        p.rss_handshakes = args.rss_handshakes

    import logging

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    started = datetime.datetime.now(datetime.timezone.utc)
    meta = C.machine_info()
    meta.update({"date": started.strftime("%Y-%m-%d %H:%M UTC"), "mode": "quick" if p.quick else "full",
                 "benchmarks": names, "params": asdict(p), "argv": sys.argv[1:]})
    results: Dict[str, Any] = {"meta": meta}
    progress_on = not args.no_progress and sys.stderr.isatty() or os.environ.get("BENCH_PROGRESS") == "1"
    from importlib import import_module

    modules = {"resume": "resume", "events": "events", "prefork": "prefork", "redis": "redis_store",
               "memory": "memory", "walk": "walk"}
    for name in names:
        module = import_module(modules[name])
        total = module.total_units(p) if hasattr(module, "total_units") else module.total_rounds(p)
        bar, update = _progress_bar(total, name, progress_on)
        t0 = time.monotonic()
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        try:
            results[name] = module.run(p, update)
        except Exception as exc:  # one sub-benchmark failing does not lose the others
            import traceback

            traceback.print_exc()
            results[name] = {"error": f"{type(exc).__name__}: {exc}"}
        finally:
            if bar is not None:
                bar.close()
        results[name + "_seconds"] = time.monotonic() - t0
        print(f"[bench] {name} done in {results[name + '_seconds']:.0f} s", file=sys.stderr, flush=True)
    meta["loadavg_end"] = C._loadavg()
    meta["seconds"] = (datetime.datetime.now(datetime.timezone.utc) - started).total_seconds()

    import report

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = started.strftime("%Y%m%d-%H%M%S") + "-" + meta["mode"]
    json_path = out / f"{stamp}.json"
    json_path.write_text(json.dumps(results, indent=1, default=str) + "\n")
    table = report.markdown(results)
    chart_name = None
    if not args.no_chart:
        chart_name = f"{stamp}.png"
        report.chart(results, out / chart_name)
    (out / f"{stamp}.md").write_text(table)
    print(table)
    print(f"[bench] wrote {json_path}" + (f" and {out / chart_name}" if chart_name else ""), file=sys.stderr)
    complete = set(NAMES) <= set(names)
    if not args.no_readme and (complete or args.readme):
        rel = os.path.relpath(out, HERE)
        report.update_readme(HERE / "README.md", table, f"{rel}/{chart_name}" if chart_name else None,
                             f"{rel}/{json_path.name}")
        print("[bench] updated benchmarks/README.md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
