#!/usr/bin/env python3
"""What ``import sesscache`` costs per install, e.g. a wheel's against a source build's.

    python3 benchmarks/import_time.py /tmp/venv-wheel/bin/python /tmp/venv-src/bin/python

Each interpreter imports sesscache in a fresh process, then resolves the stdlib's libssl
(``libssl_info()``, the first thing an attach does); runs alternate between the
interpreters so load on the machine hits them alike, and the minimum of the runs is
reported (the least disturbed one). The README's install table comes from this.
"""
from __future__ import annotations

import argparse
import os
import subprocess

CODE = ("import time; t0 = time.perf_counter(); import sesscache; t1 = time.perf_counter(); "
        "sesscache.libssl_info(); t2 = time.perf_counter(); print(t1 - t0, t2 - t1)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pythons", nargs="+", help="interpreters with sesscache installed")
    parser.add_argument("--runs", type=int, default=40)
    args = parser.parse_args()
    args.pythons = [os.path.abspath(python) for python in args.pythons]
    best = {python: [float("inf"), float("inf")] for python in args.pythons}
    for _ in range(args.runs):
        for python in args.pythons:
            # From / so neither a checkout nor the current folder shadows the install.
            out = subprocess.run([python, "-c", CODE], capture_output=True, text=True, check=True,
                                 cwd="/").stdout
            imported, resolved = map(float, out.split())
            best[python] = [min(best[python][0], imported), min(best[python][1], resolved)]
    for python, (imported, resolved) in best.items():
        print(f"{python}: import sesscache {imported * 1000:.1f} ms, first libssl_info() "
              f"{resolved * 1000:.2f} ms (minimum of {args.runs})")


if __name__ == "__main__":
    main()
