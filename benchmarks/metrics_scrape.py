#!/usr/bin/env python3
"""Resumed handshakes/s with sesscache.metrics' collector registered and scraped every second,
against the same without it (issue 20's goal: >= 0.99x).

Three arms, each its own server context with its own ``SessionCache`` (a ``MemoryStore``; the
sessions were made on another context, so every resumption goes through the get callback and
the store, as in ``resume``'s "store" arms), run in interleaved rounds in one process:

* ``plain``: no collector;
* ``scraped``: a ``CacheCollector`` registered on a ``CollectorRegistry``, and a thread that
  renders the whole registry in Prometheus' text format (``generate_latest``) once a second
  while this arm's block runs, as a scraper would;
* ``records``: the same scrapes, plus a ``RecordPublisher`` writing this process's record to a
  ``SQLiteStore`` once a second (what ``process_records=True`` and ``metrics_listen`` start).

The scraping thread sleeps while the other arms run, so each arm pays only for its own.
Blocks last about two seconds, so each scraped block holds a couple of scrapes. Ratios are per
round (arm / plain, rates from trimmed per-connection times as in ``common.py``, for the whole
connection and for the server's calls only); the table gives the median and the interquartile
range, and scraping's share of the arm's time, which bounds what it can cost.

    .venv/bin/python benchmarks/metrics_scrape.py [--rounds 12] [--block 2000] [--stack stdlib]
"""
from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path
import sys

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common as C  # noqa: E402

import sesscache  # noqa: E402
from prometheus_client import CollectorRegistry, generate_latest  # noqa: E402
from sesscache.metrics import CacheCollector  # noqa: E402
from sesscache.metrics.records import publisher_for_cache  # noqa: E402


class Scraper:
    """Renders a registry once a second while ``active`` is set."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.active = threading.Event()
        self.stop = threading.Event()
        self.scrapes = 0
        self.seconds = 0.0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            self.active.wait(0.2)
            if self.stop.is_set() or not self.active.is_set():
                continue
            t = time.perf_counter()
            generate_latest(self.registry)
            self.seconds += time.perf_counter() - t
            self.scrapes += 1
            self.stop.wait(1.0)


def arm_for(st, version: str, name: str):
    arm = C.build_arm(st, C.SC_STORE, version, "ecdsa")
    cache = arm.keep[0]
    scraper = publisher = None
    if name != "plain":
        registry = CollectorRegistry(auto_describe=False)
        registry.register(CacheCollector(cache))
        scraper = Scraper(registry)
    if name == "records":
        folder = tempfile.mkdtemp(prefix="sesscache-bench-records-")
        store = sesscache.SQLiteStore(f"{folder}/records.db")
        # The record goes to a shared store; the sessions stay in memory.
        publisher = publisher_for_cache(cache, server="bench", interval=1.0, store=store)
    return arm, scraper, publisher


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--block", type=int, default=2000, help="connections per arm and round")
    ap.add_argument("--stack", default="stdlib", choices=["stdlib", "pyopenssl"])
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    st = C.stack(args.stack)
    info = C.machine_info()
    out = {"machine": info, "args": vars(args), "versions": {}}
    lines = [f"metrics_scrape: {args.stack}, {args.rounds} rounds of {args.block} resumed connections per arm, "
             f"load average at start {info['loadavg_start']}", "",
             "| protocol | arm | resumed/s (median) | ratio to plain: median | IQR | server-side ratio: median "
             "| IQR | scrapes | ms per scrape | scraping's share of the arm's time |",
             "| --- | --- | ---: | ---: | --- | ---: | --- | ---: | ---: | ---: |"]
    for version in ("TLSv1.3", "TLSv1.2"):
        arms = {name: arm_for(st, version, name) for name in ("plain", "scraped", "records")}

        def block(name):
            arm, scraper, _ = arms[name]

            def run():
                if scraper is not None:
                    scraper.active.set()
                try:
                    result = C.run_block(st, arm, args.block)
                finally:
                    if scraper is not None:
                        scraper.active.clear()
                if result.reused != result.n:
                    raise RuntimeError(f"{name}: {result.reused}/{result.n} resumed")
                return result
            return run

        results = C.interleave({name: block(name) for name in arms}, args.rounds, seed=args.seed)
        per = {}
        for name in arms:
            rates = [r.rate for r in results[name]]
            ratios = [r.rate / p.rate for r, p in zip(results[name], results["plain"])]
            scraper = arms[name][1]
            server_ratios = [r.server_rate / p.server_rate for r, p in zip(results[name], results["plain"])]
            wall = sum(r.wall for r in results[name])
            per[name] = {"rate": C.summarize(rates), "ratio": C.summarize(ratios),
                         "server_ratio": C.summarize(server_ratios),
                         "share": (scraper.seconds / wall) if scraper else 0.0,
                         "scrapes": scraper.scrapes if scraper else 0,
                         "scrape_ms": 1000 * scraper.seconds / scraper.scrapes if scraper and scraper.scrapes else None}
            s = per[name]
            lines.append(f"| {version} | {name} | {s['rate']['median']:.0f} | {s['ratio']['median']:.4f} | "
                         f"{s['ratio']['p25']:.4f}-{s['ratio']['p75']:.4f} | "
                         f"{s['server_ratio']['median']:.4f} | "
                         f"{s['server_ratio']['p25']:.4f}-{s['server_ratio']['p75']:.4f} | {s['scrapes']} | "
                         f"{'-' if s['scrape_ms'] is None else format(s['scrape_ms'], '.2f')} | "
                         f"{100 * s['share']:.3f} % |")
        for _, scraper, publisher in arms.values():
            if scraper is not None:
                scraper.stop.set()
            if publisher is not None:
                publisher.close()
        out["versions"][version] = per
    out["loadavg_end"] = C._loadavg()
    lines.append("")
    lines.append("Scraping's share: seconds spent rendering scrapes over the arm's wall time; the scrape "
                 "holds the GIL, so 1 - share bounds the ratio from below where the noise of a shared "
                 "machine hides it.")
    lines.append(f"load average at the end {out['loadavg_end']}")
    text = "\n".join(lines)
    print(text)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    results = Path(__file__).resolve().parent / "results"
    (results / f"{stamp}-metrics_scrape.json").write_text(json.dumps(out, indent=2, default=str))
    (results / f"{stamp}-metrics_scrape.md").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
