"""The servers Python users run, out of the box and with sesscache: the README's table.

For each server of ``tests/integrations/harness.SERVERS`` (gunicorn sync and gthread with 4
workers, with a context per connection and with ``reuse_context``; uvicorn with 4 workers;
gunicorn with the uvicorn-worker classes; hypercorn with 4 workers; one ``twist web`` process),
two copies run side by side: out of the box, and with the integration a user adds, on an
``SQLiteStore`` in a temp dir. One client at a time reconnects (``TCP_NODELAY``, offering its
newest session, a full handshake every tenth attempt, one small HTTP request per connection),
in rounds that alternate between the two copies in a shuffled order, so that both see the same
machine. RSA 2048 certificate, as most sites have.

    .venv/bin/python benchmarks/servers.py                 # 300 attempts per protocol and arm
    .venv/bin/python benchmarks/servers.py -n 100 --only "gunicorn sync"

Prints one Markdown table: resumption per protocol, out of the box and with sesscache, and the
median time of a whole connection (connect, handshake, request, answer, close) seen by the
client, with the ratio of the per-round medians.
"""
from __future__ import annotations

import argparse
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sesscache._certs import make_self_signed  # noqa: E402
from sesscache.check import ProbeResult  # noqa: E402
from tests.integrations.harness import SERVERS, clear_pids, launch, measure  # noqa: E402

PROTOCOLS = ("1.2", "1.3")


def _merge(parts: List[Dict[str, ProbeResult]]) -> Dict[str, ProbeResult]:
    merged = {}
    for protocol in PROTOCOLS:
        total = ProbeResult(protocol)
        for part in parts:
            r = part[protocol]
            total.attempts += r.attempts
            total.resumed += r.resumed
            total.kinds.update(r.kinds)
            total.full_times += r.full_times
            total.resumed_times += r.resumed_times
            total.connection_times += r.connection_times
        merged[protocol] = total
    return merged


def run_server(name: str, certfile: str, attempts: int, rounds: int) -> dict:
    per_round = max(1, attempts // rounds)
    with tempfile.TemporaryDirectory(prefix="sesscache-bench-servers-") as folder:
        plain_dir, cached_dir = Path(folder) / "plain", Path(folder) / "cached"
        plain_dir.mkdir()
        cached_dir.mkdir()
        with launch(name, plain_dir, certfile) as plain, \
                launch(name, cached_dir, certfile, f"sqlite:{cached_dir / 'sessions.db'}") as cached:
            arms = {"plain": (plain, []), "cached": (cached, [])}
            ratios: Dict[str, List[float]] = {p: [] for p in PROTOCOLS}
            for _ in range(rounds):
                order = list(arms)
                random.shuffle(order)
                this_round = {}
                for arm in order:
                    server, parts = arms[arm]
                    this_round[arm] = measure(server.port, per_round)
                    parts.append(this_round[arm])
                for p in PROTOCOLS:
                    a, b = this_round["plain"][p].connection_ms, this_round["cached"][p].connection_ms
                    if a and b:
                        ratios[p].append(a / b)
            cached.check_alive()
            clear_pids(cached_dir)
        return {"plain": _merge(arms["plain"][1]), "cached": _merge(arms["cached"][1]),
                "speedup": {p: statistics.median(r) if r else None for p, r in ratios.items()}}


def _rate(r: ProbeResult) -> str:
    return f"{r.resumed}/{r.attempts}"


def table(rows: Dict[str, dict]) -> str:
    lines = ["| server | out of the box (TLS 1.2, 1.3) | with sesscache (TLS 1.2, 1.3) | "
             "ms per connection TLS 1.2 | ms per connection TLS 1.3 |",
             "| --- | --- | --- | --- | --- |"]
    for name, row in rows.items():
        plain, cached, speedup = row["plain"], row["cached"], row["speedup"]
        cells = [name, f"{_rate(plain['1.2'])}, {_rate(plain['1.3'])}",
                 f"{_rate(cached['1.2'])}, {_rate(cached['1.3'])}"]
        for p in PROTOCOLS:
            a, b = plain[p].connection_ms, cached[p].connection_ms
            cells.append(f"{a:.2f} -> {b:.2f} ({speedup[p]:.2f}x)" if a and b and speedup[p] else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=300, help="attempts per protocol and arm (default 300)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (default 5)")
    parser.add_argument("--only", action="append", choices=list(SERVERS), help="only this server (repeatable)")
    args = parser.parse_args()
    names = args.only or list(SERVERS)
    rows = {}
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="sesscache-bench-cert-") as folder:
        certfile, _ = make_self_signed(Path(folder), "rsa")
        for name in names:
            print(f"# {name} ...", file=sys.stderr, flush=True)
            rows[name] = run_server(name, certfile, args.n, args.rounds)
    print(f"<!-- benchmarks/servers.py -n {args.n} --rounds {args.rounds}; {platform.python_implementation()} "
          f"{platform.python_version()}, {time.strftime('%Y-%m-%d', time.gmtime(started))}, "
          f"{time.time() - started:.0f} s -->")
    print(table(rows))
    print("\nResumed / attempts to resume. ms per connection: median time of a whole connection that "
          "offered a session (connect, handshake, one HTTP request, close), out of the box -> with "
          "sesscache, and the median of the per-round ratios.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
