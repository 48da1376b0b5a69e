"""Hypercorn with 4 (spawned) workers and ``SessionCachedConfig``: >= 99 % resumed."""
from __future__ import annotations

import sys

import pytest

from tests.integrations.harness import (
    ServerProcess, assert_resumed, clear_pids, free_port, measure, need_package, report, served_pids,
    write_apps)

RUN = """
from hypercorn.run import run
from sesscache.integrations.hypercorn import SessionCachedConfig

config = SessionCachedConfig()
config.application_path = "sc_test_apps:asgi"
config.bind = ["127.0.0.1:{port}"]
config.workers = 4
config.certfile = config.keyfile = {certfile!r}
if {store!r}:
    config.use_session_cache({store!r}, session_id_context="hypercorn-test")
run(config)
"""


def _hypercorn(folder, certs, store=None):
    port = free_port()
    return ServerProcess([sys.executable, "-c", RUN.format(port=port, certfile=certs.server_pem, store=store)],
                         folder, port)


@pytest.mark.slow
def test_hypercorn_four_workers(tmp_path, certs):
    need_package("hypercorn")
    write_apps(tmp_path)
    with _hypercorn(tmp_path, certs) as server:
        plain = measure(server.port)
    clear_pids(tmp_path)
    with _hypercorn(tmp_path, certs, f"sqlite:{tmp_path / 'sessions.db'}") as server:
        cached = measure(server.port)
        report("hypercorn, 4 workers", plain, cached)
        assert_resumed(cached, server)
    assert len(served_pids(tmp_path)) >= 2, "the connections should have reached several workers"
