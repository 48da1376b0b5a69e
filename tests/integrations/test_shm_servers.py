"""Servers with 4 workers on one shared-memory segment (``shm:NAME``): forked workers
(gunicorn) and spawned ones (uvicorn) resume each other's sessions, TLS 1.2 and 1.3,
>= 99 % (that C answers both events is checked in tests/cache/test_shm_fast_path.py)."""
from __future__ import annotations

import os
import sys
import uuid

import pytest

from tests.integrations.harness import assert_resumed, launch, measure, need_package, served_pids


@pytest.mark.slow
@pytest.mark.parametrize("name", ["gunicorn sync", "gunicorn gthread", "uvicorn"])
def test_workers_share_one_segment(tmp_path, certs, name):
    package = "uvicorn" if name == "uvicorn" else "gunicorn"
    need_package(package)
    segment = f"servers-{uuid.uuid4().hex[:12]}"
    try:
        with launch(name, tmp_path, certs.server_pem, f"shm:{segment}?size=8m") as server:
            cached = measure(server.port)
            server.check_alive()
            log = server.log()
        for protocol, result in sorted(cached.items()):
            print(f"{name} on shm: TLS {protocol}: {result.resumed}/{result.attempts} resumed "
                  f"({result.kind})", file=sys.stderr)
        assert_resumed(cached, log)
        assert len(served_pids(tmp_path)) >= 2, "the connections should have reached several workers"
    finally:
        try:
            os.unlink(f"/dev/shm/sesscache-{os.geteuid()}-{segment}")
        except FileNotFoundError:
            pass
