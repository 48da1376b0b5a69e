"""examples/asyncio_http_server.py runs by itself, exits 0 and prints what its docstring says."""
from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "asyncio_http_server.py"

pytestmark = pytest.mark.needs_redis


def test_asyncio_http_server_example():
    reason = None
    if shutil.which("redis-server") is None:
        reason = "redis-server is not installed (apt-get install redis-server)"
    elif importlib.util.find_spec("redis") is None:
        reason = "the redis package is not installed: pip install -e '.[test]'"
    if reason and os.environ.get("CI"):
        pytest.fail(f"CI must run every example: {reason}", pytrace=False)
    if reason:
        pytest.skip(reason)
    done = subprocess.run([sys.executable, str(EXAMPLE)], cwd=EXAMPLE.parents[1],
                          capture_output=True, text=True, timeout=120)
    output = done.stdout
    assert done.returncode == 0, f"{output}\n{done.stderr}"
    assert "GET from A, no session              : 200 hello from A (full handshake)" in output
    assert "GET from B, A's session             : 200 hello from B (resumed)" in output
    assert "GET from B, its session, Redis frozen: 200 hello from B (full handshake)" in output
    stall = re.search(r"longest stall (\d+) ms", output)
    assert stall and int(stall.group(1)) < 500, output  # generous: no timing goal, only "not frozen"
    counters = dict(re.findall(r"(\w+)=(\d+)", output.split("store B:")[1]))
    assert counters["found"] == "1" and counters["lookup_timeouts"] == "1", output
