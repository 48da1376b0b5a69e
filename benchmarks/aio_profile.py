"""Where a connection's server CPU goes in sesscache.aio, against the same server without it.

Runs arms of ``aio_lag.py`` (same servers, same 50 reconnecting clients in another process,
same pinning) and prints server CPU microseconds per connection, the median over interleaved
rounds; ``--cprofile ARM`` also profiles that arm's server and prints the top functions by
own time (cProfile slows Python code several-fold: read its numbers as shares, not as
microseconds).

    python benchmarks/aio_profile.py                          # internal, sync-memory, aio-memory
    python benchmarks/aio_profile.py --cprofile aio-memory --rounds 1
"""
from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import logging
import multiprocessing
import os
import pstats
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import aio_lag  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arms", default="internal,sync-memory,aio-memory")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--version", choices=sorted(aio_lag.VERSIONS), default="TLSv1.3")
    parser.add_argument("--cprofile", metavar="ARM", help="profile this arm's server")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--dump", metavar="FILE", help="also write the profile (pstats) to FILE")
    args = parser.parse_args()
    arms = [a for a in args.arms.split(",") if a]
    if args.cprofile and args.cprofile not in arms:
        arms.append(args.cprofile)
    logging.basicConfig(level=logging.ERROR)
    # Timed in the process's CPU time, not the wall clock: the loop's idle waits in epoll are not cost.
    profiler = cProfile.Profile(time.process_time) if args.cprofile else None
    per_conn = {arm: [] for arm in arms}
    with tempfile.TemporaryDirectory(prefix="sesscache-aio-profile-") as folder:
        ca, cert = aio_lag.make_certs(folder)
        mp = multiprocessing.get_context("spawn")
        parent, child = mp.Pipe()
        cpus = sorted(os.sched_getaffinity(0))
        pinned = len(cpus) >= 2
        worker = mp.Process(target=aio_lag.client_process,
                            args=(child, ca, cpus[1] if pinned else None), daemon=True)
        worker.start()
        if pinned:
            os.sched_setaffinity(0, {cpus[0]})
        try:
            for number in range(args.rounds):
                order = arms[:]
                random.shuffle(order)
                for arm in order:
                    profiling = profiler is not None and arm == args.cprofile
                    if profiling:
                        profiler.enable()
                    block = asyncio.run(aio_lag.serve_block(arm, cert, args.version, parent, args))
                    if profiling:
                        profiler.disable()
                    window = block["cpu_window_s"] / block["elapsed"]
                    us = 1e6 * block["server_cpu_s"] / (block["connections"] * window)
                    if not profiling:
                        per_conn[arm].append(us)
                    print(f"round {number + 1} {arm:<12} {block['connections']:6d} connections "
                          f"{us:7.1f} us server CPU each{' (profiled)' if profiling else ''}; "
                          f"resumed {block['resumed']}/{block['offered']} failed {block['failed']}",
                          flush=True)
        finally:
            parent.send(("stop",))
            worker.join(10)
    print(f"\nserver CPU per connection, {args.version}, median of {args.rounds} round(s):")
    base = statistics.median(per_conn["internal"]) if per_conn.get("internal") else None
    for arm, values in per_conn.items():
        if not values:
            continue
        med = statistics.median(values)
        extra = f"  (+{med - base:5.1f} us over internal, ratio {base / med:.2f})" if base else ""
        print(f"  {arm:<12} {med:7.1f} us  [{min(values):.1f}-{max(values):.1f}]{extra}")
    if profiler is not None:
        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out)
        if args.dump:
            stats.dump_stats(args.dump)
        stats.sort_stats("tottime").print_stats(args.top)
        print(out.getvalue())
    return 0


if __name__ == "__main__":
    sys.exit(main())
