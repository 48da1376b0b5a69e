"""gunicorn with 4 workers (sync and gthread), out of the box and with ``ssl_context_hook``:
a client reconnecting and offering its newest session resumes >= 99 % with the hook, on TLS 1.2
and 1.3, across workers."""
from __future__ import annotations

import sys

import pytest

from tests.integrations.harness import (
    ServerProcess, assert_resumed, clear_pids, free_port, measure, need_package, report, served_pids,
    write_apps)

HOOKED_CONF = """
from sesscache.integrations.gunicorn import ssl_context_hook

ssl_context = ssl_context_hook({store!r}, session_id_context="gunicorn-test", reuse_context={reuse})
"""


def _gunicorn(folder, certs, worker_class: str, conf: str = None):
    port = free_port()
    argv = [sys.executable, "-m", "gunicorn", "--workers", "4", "--worker-class", worker_class,
            "--certfile", certs.server_pem, "--bind", f"127.0.0.1:{port}", "--no-control-socket",
            "--log-level", "warning"]
    if worker_class == "gthread":
        argv += ["--threads", "4"]
    if conf:
        (folder / "gunicorn_conf.py").write_text(conf)
        argv += ["--config", "python:gunicorn_conf"]
    return ServerProcess(argv + ["sc_test_apps:wsgi"], folder, port)


@pytest.mark.slow
@pytest.mark.parametrize("reuse", [False, True], ids=["context-per-connection", "context-per-worker"])
@pytest.mark.parametrize("worker_class", ["sync", "gthread"])
def test_gunicorn_resumes_across_workers(tmp_path, certs, worker_class, reuse):
    need_package("gunicorn")
    write_apps(tmp_path)
    with _gunicorn(tmp_path, certs, worker_class) as server:
        plain = measure(server.port)
    clear_pids(tmp_path)
    conf = HOOKED_CONF.format(store=f"sqlite:{tmp_path / 'sessions.db'}", reuse=reuse)
    with _gunicorn(tmp_path, certs, worker_class, conf) as server:
        cached = measure(server.port)
        report(f"gunicorn {worker_class}, 4 workers, reuse_context={reuse}", plain, cached)
        assert_resumed(cached, server)
    assert len(served_pids(tmp_path)) >= 2, "the connections should have reached several workers"
