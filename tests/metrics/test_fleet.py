"""One /metrics for a 4-worker gunicorn, and ``stats --store``, after a known number of
handshakes: per worker and in total they equal what the client counted, exactly.

The client learns which worker served each connection from the response (the worker's pid),
so the per-process numbers are checked too, not only the sums."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from sesscache._certs import make_self_signed
from tests.integrations.harness import ServerProcess, free_port, need_package

APP = '''
import os

def app(environ, start_response):
    body = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]

async def asgi(scope, receive, send):
    if scope["type"] != "http":
        return
    body = str(os.getpid()).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
'''

CONF = '''
from sesscache.integrations.gunicorn import ssl_context_hook

ssl_context = ssl_context_hook({store!r}, session_id_context="shop", metrics_listen="127.0.0.1:{metrics_port}",
                               records_interval={interval}, reuse_context={reuse})
'''

UVICORN = """
import uvicorn
from sesscache.integrations.uvicorn import ssl_context_factory

if __name__ == "__main__":
    uvicorn.run("pid_app:asgi", host="127.0.0.1", port={port}, workers=4, ssl_certfile={certfile!r},
                log_level="warning", ssl_context_factory=ssl_context_factory(
                    {store!r}, session_id_context="shop", metrics_listen="127.0.0.1:{metrics_port}",
                    records_interval={interval}))
"""

HYPERCORN = """
from hypercorn.run import run
from sesscache.integrations.hypercorn import SessionCachedConfig

if __name__ == "__main__":
    config = SessionCachedConfig()
    config.application_path = "pid_app:asgi"
    config.bind = ["127.0.0.1:{port}"]
    config.workers = 4
    config.certfile = config.keyfile = {certfile!r}
    config.use_session_cache({store!r}, session_id_context="shop", metrics_listen="127.0.0.1:{metrics_port}",
                             records_interval={interval})
    run(config)
"""


def _script(template):
    def argv(folder, certfile, port, metrics_port, store):
        path = folder / "serve_it.py"
        path.write_text(template.format(port=port, certfile=certfile, store=store, metrics_port=metrics_port,
                                        interval=INTERVAL))
        return [sys.executable, str(path)]
    return argv


def _gunicorn(worker_class, reuse=True):
    def argv(folder, certfile, port, metrics_port, store):
        (folder / "metrics_conf.py").write_text(CONF.format(store=store, metrics_port=metrics_port,
                                                             interval=INTERVAL, reuse=reuse))
        extra = ["--threads", "4"] if worker_class == "gthread" else []
        return [sys.executable, "-m", "gunicorn", "--workers", "4", "--worker-class", worker_class, *extra,
                "--certfile", certfile, "--bind", f"127.0.0.1:{port}", "--no-control-socket", "--log-level", "warning",
                "--config", "python:metrics_conf", "pid_app:app"]
    return argv


def _twisted(folder, certfile, port, metrics_port, store):
    escaped = store.replace(":", "\\:")
    endpoint = (f"sesscache-ssl:{port}:privateKey={certfile}:interface=127.0.0.1:store={escaped}"
                f":sessionIdContext=shop:metricsListen=127.0.0.1\\:{metrics_port}")
    return [sys.executable, "-m", "twisted", "web", "--listen", endpoint, "--wsgi", "pid_app.app"]


#: name -> (package, argv maker): one option of each integration turns /metrics on.
SERVERS = {
    "gunicorn sync": ("gunicorn", _gunicorn("sync")),
    "gunicorn gthread": ("gunicorn", _gunicorn("gthread")),
    # A context per connection: OpenSSL's counters leave with each; the cache's stay.
    "gunicorn sync, reuse_context=False": ("gunicorn", _gunicorn("sync", reuse=False)),
    "uvicorn": ("uvicorn", _script(UVICORN)),
    "hypercorn": ("hypercorn", _script(HYPERCORN)),
    "twisted": ("twisted", _twisted),
}

INTERVAL = 0.3
CONNECTIONS = 60  # per protocol; every 10th starts afresh


# The client runs in a process of its own: CPython 3.10-3.12.6 leak an SSL_SESSION each time a
# session is read (python/cpython#116810), which the per-module leak check would count here.
DRIVER = """
import json, socket, ssl, sys
from collections import Counter

port, cafile, connections = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])


def one_request(client, session):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with client.wrap_socket(raw, server_hostname="localhost", session=session) as tls:
            tls.sendall(b"GET / HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n")
            data = b""
            while True:
                chunk = tls.recv(4096)
                if not chunk:
                    break
                data += chunk
            return int(data.rsplit(b"\\r\\n\\r\\n", 1)[1]), tls.session_reused, tls.session


seen = {}
for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.load_verify_locations(cafile)
    client.minimum_version = client.maximum_version = version
    session = None
    for i in range(connections):
        offer = None if i % 10 == 0 else session  # every 10th starts afresh
        pid, reused, new_session = one_request(client, offer)
        counts = seen.setdefault(pid, Counter())
        if offer is not None:
            counts["offered"] += 1
            counts["resumed"] += reused
        session = new_session if new_session is not None else session
print(json.dumps({pid: dict(counts) for pid, counts in seen.items()}))
"""


def drive(port, cafile):
    """{pid: Counter(offered=, resumed=)} as the client saw it."""
    out = subprocess.run([sys.executable, "-c", DRIVER, str(port), cafile, str(CONNECTIONS)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return {int(pid): Counter(counts) for pid, counts in json.loads(out.stdout).items()}


def scrape(port):
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    per_pid = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            pid = sample.labels.get("pid")
            if pid is None or sample.name == "sesscache_metrics_served_by":
                continue
            key = (sample.name, tuple(sorted((k, v) for k, v in sample.labels.items() if k not in ("pid", "host"))))
            per_pid.setdefault(int(pid), {})[key] = sample.value
    return per_pid


@pytest.mark.parametrize("server_name", list(SERVERS))
def test_one_metrics_and_stats_equal_the_clients_counts_across_the_workers(tmp_path, server_name):
    package, make_argv = SERVERS[server_name]
    need_package(package)
    certfile, cafile = make_self_signed(tmp_path, "ec")
    (tmp_path / "pid_app.py").write_text(APP)
    store = f"sqlite:{tmp_path / 'sessions.db'}"
    port, metrics_port = free_port(), free_port()
    argv = make_argv(tmp_path, certfile, port, metrics_port, store)
    with ServerProcess(argv, tmp_path, port) as server:
        seen = drive(port, cafile)
        time.sleep(INTERVAL * 5)  # every worker has published since its last handshake
        server.check_alive()
        per_pid = scrape(metrics_port)
        stats = subprocess.run([sys.executable, "-m", "sesscache", "stats", "--store", store],
                               capture_output=True, text=True, timeout=60)
        table = subprocess.run([sys.executable, "-m", "sesscache", "stats", "--store", store, "--table"],
                               capture_output=True, text=True, timeout=60)
    workers = 1 if server_name == "twisted" else 2
    assert len(seen) >= workers, f"the connections all went to one worker: {seen}"
    client_total = sum(seen.values(), Counter())
    assert client_total["offered"] == 2 * (CONNECTIONS - CONNECTIONS // 10)
    assert client_total["resumed"] >= 0.9 * client_total["offered"]

    # The scrape: every worker the client reached, each equal to what the client saw there.
    assert set(seen) <= set(per_pid), (seen, list(per_pid))
    for pid, counts in per_pid.items():
        client = seen.get(pid, Counter())
        assert counts[("sesscache_resumed_sessions_total", ())] == client["resumed"], pid
        assert counts[("sesscache_offered_sessions_total", ())] == client["offered"], pid
        assert counts[("sesscache_lookups_total", (("result", "hit"),))] + \
            counts[("sesscache_openssl_internal_hits_total", ())] == client["resumed"], pid
        if "reuse_context=False" not in server_name:  # OpenSSL's own count, where contexts live on
            assert counts[("sesscache_openssl_resumed_total", ())] == client["resumed"], pid
    scraped_resumed = sum(c[("sesscache_resumed_sessions_total", ())] for c in per_pid.values())
    assert scraped_resumed == client_total["resumed"]

    # stats --store: the same, per process and in total.
    assert stats.returncode == 0, stats.stderr
    report = json.loads(stats.stdout)
    rows = {row["pid"]: row for row in report["processes"] if row["server"] == "shop"}
    assert set(rows) == set(per_pid)
    for pid, row in rows.items():
        assert (row["resumed"], row["offered"]) == (seen.get(pid, Counter())["resumed"],
                                                    seen.get(pid, Counter())["offered"]), pid
    assert (report["total"]["resumed"], report["total"]["offered"]) == \
        (client_total["resumed"], client_total["offered"])
    assert report["total"]["hosts"] == 1
    assert table.returncode == 0, table.stderr
    total_line = [line for line in table.stdout.splitlines() if line.startswith("total:")][0]
    assert f"resumed {client_total['resumed']}/{client_total['offered']}" in total_line


def served_by(port):
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "sesscache_metrics_served_by":
                return int(sample.labels["pid"])
    raise AssertionError("no sesscache_metrics_served_by in the scrape")


def test_when_the_worker_serving_metrics_dies_another_serves_them(tmp_path):
    need_package("gunicorn")
    certfile, cafile = make_self_signed(tmp_path, "ec")
    (tmp_path / "pid_app.py").write_text(APP)
    store = f"sqlite:{tmp_path / 'sessions.db'}"
    port, metrics_port = free_port(), free_port()
    with ServerProcess(_gunicorn("sync")(tmp_path, certfile, port, metrics_port, store), tmp_path, port) as server:
        seen = drive(port, cafile)  # every worker reached makes its cache, and bids
        first = served_by(metrics_port)
        assert first in seen
        os.kill(first, signal.SIGKILL)  # gunicorn starts another worker; the others bid meanwhile
        deadline = time.monotonic() + 15
        second = None
        while time.monotonic() < deadline:
            try:
                second = served_by(metrics_port)
            except OSError:  # nobody listens yet
                second = None
            if second is not None and second != first:  # (not the dying one, answering still)
                break
            time.sleep(INTERVAL / 2)
        server.check_alive()
    assert second is not None and second != first
