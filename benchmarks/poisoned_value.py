"""What one lookup of a poisoned value costs: a 64 MiB value written by hand under one
session's key (issue 23 item 5), looked up through the store's get() as the handshake
thread does. One fresh process per store, so peak memory is this lookup's alone.

    python benchmarks/poisoned_value.py --redis unix:///path/to/redis.sock
    python benchmarks/poisoned_value.py --sqlite /tmp/poisoned.db

Prints the median and worst of ``--lookups`` lookups in ms, the Python peak (tracemalloc)
and the growth of the process's peak RSS (ru_maxrss) over the lookups.
"""
from __future__ import annotations

import argparse
import resource
import sqlite3
import statistics
import time
import tracemalloc

KEY = b"poisoned-session-key"


def _measure(store, lookups):
    store.get(b"warm-up")  # connect / open first
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tracemalloc.start()
    times = []
    for _ in range(lookups):
        start = time.perf_counter()
        value = store.get(KEY)
        times.append((time.perf_counter() - start) * 1000)
        del value
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return times, peak, (rss_after - rss_before) * 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--redis")
    where.add_argument("--sqlite")
    parser.add_argument("--size", type=int, default=64 * 1024 * 1024)
    parser.add_argument("--lookups", type=int, default=10)
    args = parser.parse_args()
    # The value is made by the server (SETRANGE, zeroblob), never in this process, so the
    # peak RSS growth is the lookups' own.
    if args.redis:
        import redis

        from sesscache.stores.redis import RedisStore

        store = RedisStore(args.redis)
        raw = redis.Redis.from_url(args.redis)
        raw.delete(store.prefix + KEY)
        raw.setrange(store.prefix + KEY, args.size - 1, b"x")
        raw.expire(store.prefix + KEY, 600)
        raw.close()
    else:
        from sesscache.stores.sqlite import SQLiteStore

        store = SQLiteStore(args.sqlite)
        store.set(b"table", b"x", 60)
        conn = sqlite3.connect(args.sqlite)
        with conn:
            conn.execute("INSERT OR REPLACE INTO sesscache (key, value, expires) VALUES (?, zeroblob(?), ?)",
                         (KEY, args.size, time.time() + 600))
        conn.close()
    times, peak, rss = _measure(store, args.lookups)
    kind = "redis" if args.redis else "sqlite"
    print(f"{kind}: {args.size / 2**20:.0f} MiB value, {args.lookups} lookups: median "
          f"{statistics.median(times):.2f} ms, worst {max(times):.2f} ms; Python peak "
          f"{peak / 2**20:.1f} MiB, peak RSS growth {rss / 2**20:.1f} MiB; "
          f"oversize_reads={getattr(store, 'oversize_reads', '-')}")
    store.delete(KEY)
    store.close()


if __name__ == "__main__":
    main()
