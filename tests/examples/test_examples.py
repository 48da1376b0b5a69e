"""Each example in examples/ runs by itself, exits 0 and prints what its docstring promises.

The examples are run as a user would run them: ``python examples/NAME.py`` in a subprocess,
with no arguments, from the checkout's root.
"""
from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TIMEOUT = 120


def run_example(name: str) -> str:
    """Run examples/<name>, check it exits 0 within TIMEOUT; return its stdout."""
    try:
        done = subprocess.run([sys.executable, str(EXAMPLES / name)], cwd=EXAMPLES.parent,
                              capture_output=True, text=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{name} ran longer than {TIMEOUT} s; output so far:\n{exc.stdout}\n{exc.stderr}")
    assert done.returncode == 0, (
        f"{name} exited with {done.returncode}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}")
    return done.stdout


def resumption(label: str, output: str) -> tuple:
    """(resumed, attempts) from a line '<label>...: 51/200 resumed (26%)'."""
    match = re.search(re.escape(label) + r"[^:\n]*: (\d+)/(\d+) resumed \(\d+%\)", output)
    assert match, f"no '{label}: N/M resumed' line in:\n{output}"
    return int(match.group(1)), int(match.group(2))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="prefork_sqlite.py forks worker processes")
def test_prefork_sqlite():
    output = run_example("prefork_sqlite.py")
    alone, attempts = resumption("per-process cache", output)
    shared, attempts_shared = resumption("shared SQLite store", output)
    assert attempts == attempts_shared == 200
    assert shared > 0.9 * attempts, output
    assert shared > alone, output
    workers = re.findall(r"connections per worker: ([\d ]+)", output)
    assert len(workers) == 2 and all(len(line.split()) == 4 for line in workers), output
    counters = dict(re.findall(r"(\w+)=(\d+)", output.split("counters over all workers:")[1]))
    assert int(counters["stores"]) >= 1 and counters["errors"] == "0", output


def test_asyncio_server():
    output = run_example("asyncio_server.py")
    match = re.search(r"resumed (\d+)/(\d+) reconnections \(\d+%\)", output)
    assert match, output
    resumed, attempts = int(match.group(1)), int(match.group(2))
    assert attempts == 100 and resumed > 0.9 * attempts, output
    stats = dict(re.findall(r"(\w+)=(\d+)", output.split("cache.stats:")[1]))
    # internal_cache=False: every resumption went through the cache
    assert int(stats["hits"]) == resumed and stats["errors"] == "0", output


def test_fleet_redis():
    reason = None
    if shutil.which("redis-server") is None:
        reason = "redis-server is not installed (apt-get install redis-server)"
    elif importlib.util.find_spec("redis") is None:
        reason = "the redis package is not installed: pip install -e '.[test]'"
    if reason and os.environ.get("CI"):
        pytest.fail(f"CI must run every example: {reason}", pytrace=False)
    if reason:
        pytest.skip(reason)
    output = run_example("fleet_redis.py")
    assert "client -> server A, no session        : A: full handshake" in output, output
    assert "client -> server B, the session from A: B: resumed" in output, output
    assert "client -> server A, the session from B: A: resumed" in output, output
    for name in ("A", "B"):
        line = re.search(rf"server {name} stats: (.*)", output)
        assert line, output
        stats = dict(re.findall(r"(\w+)=(\d+)", line.group(1)))
        assert stats["hits"] == "1" and stats["rejected"] == "0" and stats["errors"] == "0", output


def test_fleet_redis_without_redis_server_says_how_to_install_it(tmp_path):
    done = subprocess.run([sys.executable, str(EXAMPLES / "fleet_redis.py")], cwd=EXAMPLES.parent,
                          capture_output=True, text=True, timeout=TIMEOUT,
                          env={**os.environ, "PATH": str(tmp_path)})  # no redis-server there
    assert done.returncode == 2, done
    assert "apt-get install redis-server" in done.stderr, done.stderr


def test_client_cache():
    output = run_example("client_cache.py")
    runs = re.findall(r"client run (\d) \(new process\): offered a stored session: (yes|no) +-> "
                      r"server: (resumed|full handshake)", output)
    assert runs == [("1", "no", "full handshake"), ("2", "yes", "resumed"),
                    ("3", "yes", "resumed")], output


def test_aiohttp_server():
    if importlib.util.find_spec("aiohttp") is None:
        reason = "aiohttp is not installed: pip install -e '.[test]'"
        if os.environ.get("CI"):
            pytest.fail(f"CI must run every example: {reason}", pytrace=False)
        pytest.skip(reason)
    output = run_example("aiohttp_server.py")
    assert "GET from A, no session : 200 hello from A over TLSv1.3 (full handshake)" in output, output
    assert "GET from B, A's session: 200 hello from B over TLSv1.3 (resumed)" in output, output
    assert "B, 20 reconnections    : 20/20 resumed" in output, output
    counters = dict(re.findall(r"(\w+)=(\d+)", output.split("store B:")[1]))
    assert counters == {"hellos": "21", "lookups": "21", "found": "21", "prefetch_hits": "21"}, output
