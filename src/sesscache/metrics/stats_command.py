"""``python -m sesscache stats --store URL``: what a store holds, and every process that
publishes its counters there (``records.py``): host, server, pid, resumption per process and
in total. Exit 0 when it could read the store, 1 when it could not, 2 for a store it must
not be asked about."""
from __future__ import annotations

import json
import time
from typing import Any, Callable, Dict, List, TextIO

from ..errors import ConfigurationError, StoreError
from .records import read_records
from ._snapshot import resumption

#: Exit codes: the store was read; the store could not be reached or read.
OK, UNREACHABLE = 0, 1


def refuse_memory(spec: str) -> None:
    if spec.strip() == "memory":
        raise ConfigurationError(
            "--store memory names a store inside this command's own process: it is always empty "
            "here, and no server's counters can be in it. Name the store your servers share "
            "(sqlite:PATH, redis://..., memcached://...)")


def _rate(resumed: int, offered: int) -> str:
    return f"{100.0 * resumed / offered:5.1f}%" if offered else "    -"


def summarize(records: List[Dict[str, Any]], now: float) -> Dict[str, Any]:
    processes, hosts = [], set()
    total = {"resumed": 0, "offered": 0, "stored": 0, "errors": 0}
    for record in records:
        counters = record["counters"]
        numbers = resumption(counters)
        lookups = counters.get("lookups", {})
        row = {"host": record.get("host"), "server": record.get("server"), "pid": record.get("pid"),
               "started": record.get("started"), "seen": record.get("at"),
               "closed": bool(record.get("closed")), **numbers,
               "store_hits": int(lookups.get("hit", 0)),
               "internal_hits": int(counters.get("openssl", {}).get("hits", 0))
               - int(counters.get("openssl", {}).get("cb_hits", 0)),
               "misses": int(lookups.get("miss", 0)), "errors": int(lookups.get("error", 0)),
               "stored": int(counters.get("stored", 0))}
        row["rate"] = numbers["resumed"] / numbers["offered"] if numbers["offered"] else None
        processes.append(row)
        hosts.add(row["host"])
        for name in ("resumed", "offered", "stored", "errors"):
            total[name] += row[name]
    total["rate"] = total["resumed"] / total["offered"] if total["offered"] else None
    total["processes"] = len(processes)
    total["hosts"] = len(hosts)
    return {"processes": processes, "total": total}


def run_stats(spec: str, open_store: Callable[[str], Any], *, table: bool, out: TextIO,
              err: TextIO) -> int:
    """One JSON document (the store's description, as before, with ``processes`` and
    ``total`` added), or with ``table`` a line per process and a total line."""
    refuse_memory(spec)
    from ..stores.urls import redacted_store_url

    where = redacted_store_url(spec)
    store = open_store(spec)
    try:
        description = store.describe()
        if description.get("error"):
            print(f"sesscache stats: cannot read the store {where}: {description['error']}", file=err)
            return UNREACHABLE
        try:
            records = read_records(store)
        except StoreError as exc:
            print(f"sesscache stats: cannot read the processes' records in {where}: {exc}", file=err)
            return UNREACHABLE
    finally:
        store.close()
    now = time.time()
    summary = summarize(records, now)
    if not table:
        print(json.dumps({**description, **summary}, indent=2, default=str), file=out)
        return OK
    print(f"store {where}: " + json.dumps(description, default=str), file=out)
    if not summary["processes"]:
        print("no process publishes its counters here: start the servers with process_records=True "
              "or metrics_listen='HOST:PORT' (their records live a few intervals)", file=out)
        return OK
    print(f"{'host':<20} {'server':<16} {'pid':>7} {'state':<7} {'seen':>6} {'resumed/offered':>16} "
          f"{'rate':>6} {'store hits':>10} {'misses':>7} {'errors':>7} {'stored':>7}", file=out)
    for row in summary["processes"]:
        seen = f"{max(now - float(row['seen'] or now), 0):.0f}s"
        print(f"{str(row['host'])[:20]:<20} {str(row['server'])[:16]:<16} {row['pid']:>7} "
              f"{'closed' if row['closed'] else 'running':<7} {seen:>6} "
              f"{row['resumed']:>7}/{row['offered']:<8} {_rate(row['resumed'], row['offered']):>6} "
              f"{row['store_hits']:>10} {row['misses']:>7} {row['errors']:>7} {row['stored']:>7}", file=out)
    total = summary["total"]
    print(f"total: {total['processes']} processes on {total['hosts']} hosts: resumed "
          f"{total['resumed']}/{total['offered']} ({_rate(total['resumed'], total['offered']).strip()}), "
          f"{total['stored']} sessions stored, {total['errors']} lookup errors", file=out)
    return OK
