"""gunicorn with sesscache on ``shm:`` beside nginx's own shared session cache (issue 21).

Two arms, the same client, rounds alternating in a shuffled order:

* ``nginx``: nginx (``ssl_session_cache shared:SSL:10m; ssl_session_tickets off;``)
  terminating TLS and proxying to a plain-HTTP gunicorn with 4 sync workers;
* ``gunicorn shm``: gunicorn with 4 sync workers terminating TLS itself, sesscache on
  ``shm:NAME`` (both events answered in C in the workers).

One client at a time (``sesscache.check.probe``, as benchmarks/servers.py): TCP_NODELAY, one
GET per connection, each connection offering the newest session (a full handshake every tenth),
RSA 2048. Reports resumed/attempts and the median per-connection time of the connections that
offered a session, per arm and TLS version, and the median of the per-round ratios.

    .venv/bin/python benchmarks/nginx_shm.py [-n 300] [--rounds 6] [--nginx /usr/sbin/nginx]
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sesscache._certs import make_self_signed  # noqa: E402
from tests.integrations.harness import ServerProcess, free_port, launch, measure, write_apps  # noqa: E402

PROTOCOLS = ("1.2", "1.3")

NGINX_CONF = """
daemon off;
master_process on;
worker_processes 1;
user root;
pid {folder}/nginx.pid;
error_log {folder}/nginx-error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {folder}/body;
    proxy_temp_path {folder}/proxy;
    fastcgi_temp_path {folder}/fastcgi;
    uwsgi_temp_path {folder}/uwsgi;
    scgi_temp_path {folder}/scgi;
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {certfile};
        ssl_certificate_key {certfile};
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_cache shared:SSL:10m;
        ssl_session_tickets off;
        location / {{ proxy_pass http://127.0.0.1:{backend}; }}
    }}
}}
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=300, help="attempts per protocol and arm (default 300)")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--nginx", default=shutil.which("nginx") or "/usr/sbin/nginx")
    args = parser.parse_args()
    per_round = max(1, args.n // args.rounds)
    segment = f"bench-nginx-{uuid.uuid4().hex[:8]}"
    load_before = os.getloadavg()
    results: Dict[str, Dict[str, List]] = {arm: {p: [] for p in PROTOCOLS} for arm in ("nginx", "gunicorn shm")}
    ratios: Dict[str, List[float]] = {p: [] for p in PROTOCOLS}
    with tempfile.TemporaryDirectory(prefix="sesscache-bench-nginx-") as tmp:
        folder = Path(tmp)
        certfile, _ = make_self_signed(folder, "rsa")
        backend_dir, nginx_dir, shm_dir = folder / "backend", folder / "nginx", folder / "shm"
        for d in (backend_dir, nginx_dir, shm_dir):
            d.mkdir()
        write_apps(backend_dir)
        backend_port, nginx_port = free_port(), free_port()
        backend = [sys.executable, "-m", "gunicorn", "--workers", "4", "--worker-class", "sync",
                   "--bind", f"127.0.0.1:{backend_port}", "--no-control-socket", "--log-level", "warning",
                   "sc_test_apps:wsgi"]
        conf = nginx_dir / "nginx.conf"
        conf.write_text(NGINX_CONF.format(folder=nginx_dir, port=nginx_port, certfile=certfile,
                                          backend=backend_port))
        try:
            with ServerProcess(backend, backend_dir, backend_port), \
                    ServerProcess([args.nginx, "-c", str(conf), "-p", str(nginx_dir)], nginx_dir, nginx_port), \
                    launch("gunicorn sync", shm_dir, certfile, f"shm:{segment}") as shm:
                ports = {"nginx": nginx_port, "gunicorn shm": shm.port}
                for _ in range(args.rounds):
                    order = list(ports)
                    random.shuffle(order)
                    this = {arm: measure(ports[arm], per_round) for arm in order}
                    for arm in ports:
                        for p in PROTOCOLS:
                            results[arm][p].append(this[arm][p])
                    for p in PROTOCOLS:
                        a, b = this["gunicorn shm"][p].connection_ms, this["nginx"][p].connection_ms
                        if a and b:
                            ratios[p].append(a / b)
                shm.check_alive()
        finally:
            try:
                os.unlink(f"/dev/shm/sesscache-{os.geteuid()}-{segment}")
            except FileNotFoundError:
                pass
    lines = [f"<!-- benchmarks/nginx_shm.py -n {args.n} --rounds {args.rounds}; load average before "
             f"{load_before[0]:.2f} {load_before[1]:.2f}, after {os.getloadavg()[0]:.2f}; "
             f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC -->",
             "| arm | TLS | resumed | median ms per connection (per-round medians: min-max) |",
             "| --- | --- | --- | --- |"]
    for arm, per in results.items():
        for p in PROTOCOLS:
            rs = per[p]
            medians = [r.connection_ms for r in rs if r.connection_ms]
            lines.append(f"| {arm} | {p} | {sum(r.resumed for r in rs)}/{sum(r.attempts for r in rs)} | "
                         f"{statistics.median(medians):.2f} ({min(medians):.2f}-{max(medians):.2f}) |")
    for p in PROTOCOLS:
        if ratios[p]:
            lines.append(f"\nTLS {p}: gunicorn shm / nginx, median of per-round ratios "
                         f"{statistics.median(ratios[p]):.3f} (min {min(ratios[p]):.3f}, max {max(ratios[p]):.3f})")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
