"""Every client recipe of docs/clients.md runs as written, in fresh processes: the first
makes a full handshake, the next ones resume, as the server sees it (tests/clients/server.py
reads each ClientHello). Taken from the Markdown, never copied here; only the URL's port,
the CA file and the store URL are substituted. TLS 1.2 and 1.3, SQLite and Redis."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Dict

import pytest

from tests.clients.server import OfferServer
from tests.server_fixtures import unique_prefix

DOCS = Path(__file__).resolve().parents[2] / "docs" / "clients.md"
ROOT = Path(__file__).resolve().parents[2]


def recipes() -> Dict[str, str]:
    text = DOCS.read_text(encoding="utf-8")
    found = dict(re.findall(r"```python\n# recipe: ([\w-]+)\n(.*?)```", text, flags=re.S))
    assert found, "no recipes found in docs/clients.md"
    return found


RECIPES = recipes()
REDIS_RECIPES = ["httpx-sync", "httpx-async", "requests", "aiohttp"]
CASES = ([(name, version, "sqlite") for name in sorted(RECIPES) for version in ("TLSv1.2", "TLSv1.3")]
         + [(name, version, "redis") for name in REDIS_RECIPES for version in ("TLSv1.2", "TLSv1.3")])


def run_recipe(source: str, cwd: Path) -> str:
    script = cwd / "recipe.py"
    script.write_text(source, encoding="utf-8")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, str(script)], cwd=str(cwd), env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, f"recipe failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.mark.parametrize("name,version,store", CASES, ids=["-".join(c) for c in CASES])
def test_recipe_resumes_in_fresh_processes(request, certs, tmp_path, name, version, store):
    if store == "sqlite":
        store_arguments = repr(f"sqlite:{tmp_path / 'client-sessions.db'}")
    else:
        # The Redis server is shared by the whole run and a client's sessions are filed under
        # host:port: a port an earlier test used (the OS hands ports out again) would find that
        # test's session, offer it, and make the "first" connection a failed resumption. A key
        # prefix of this test's own keeps the first process's store empty, as on a new machine.
        store_arguments = f"{request.getfixturevalue('redis_url')!r}, prefix={unique_prefix()!r}"
    with OfferServer(certs, version) as server:
        source = (RECIPES[name].replace("8443", str(server.port)).replace('"ca.pem"', repr(certs.ca_pem))
                  .replace('"sqlite:client-sessions.db"', store_arguments))
        assert store_arguments in source, f"recipe {name} names no store_from_url(\"sqlite:client-sessions.db\")"
        outputs = [run_recipe(source, tmp_path) for _ in range(3)]
    assert not server.errors, server.errors
    for output in outputs:
        assert "ok" in output or "hello" in output, output
    assert [(s.offered, s.reused) for s in server.seen] == [(False, False), (True, True), (True, True)]


def test_recipes_are_all_there():
    assert sorted(RECIPES) == ["aiohttp", "asyncio", "httpx-async", "httpx-sync", "requests", "websockets"]
