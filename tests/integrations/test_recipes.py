"""The recipes of docs/servers/ (aiohttp, aiohttp's gunicorn worker, tornado with 4 processes,
cheroot, Werkzeug), run as written, with the certificate, store and port of the test put in for
the example's: >= 99 % resumed on TLS 1.2 and 1.3."""
from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from tests.integrations.harness import ServerProcess, assert_resumed, free_port, measure, need_package

DOCS = Path(__file__).resolve().parents[2] / "docs" / "servers"


def _blocks(page: str):
    return re.findall(r"```python\n(.*?)```", (DOCS / page).read_text(), flags=re.S)


def _fill(code: str, certfile: str, store: str, port: int) -> str:
    return (code.replace("/etc/ssl/shop.pem", certfile)
                .replace("sqlite:/var/lib/shop/tls-sessions.db", store)
                .replace("8443", str(port)))


def _check(name, argv, folder, port):
    with ServerProcess(argv, folder, port) as server:
        cached = measure(port)
        server.check_alive()
        log = server.log()
    print(f"{name} (docs recipe): " + "; ".join(r.line() for r in cached.values()), file=sys.stderr)
    assert_resumed(cached, log)


@pytest.mark.slow
@pytest.mark.parametrize("page, package", [("aiohttp.md", "aiohttp"), ("tornado.md", "tornado"),
                                           ("cheroot.md", "cheroot"), ("werkzeug.md", "werkzeug")])
def test_recipe_as_written(tmp_path, certs, page, package):
    need_package(package)
    port = free_port()
    script = tmp_path / "recipe.py"
    script.write_text(_fill(_blocks(page)[0], certs.server_pem, f"sqlite:{tmp_path / 's.db'}", port))
    _check(page, [sys.executable, str(script)], tmp_path, port)


@pytest.mark.slow
def test_aiohttp_gunicorn_worker_recipe(tmp_path, certs):
    need_package("aiohttp")
    need_package("gunicorn")
    worker, conf = _blocks("aiohttp.md")[1:3]
    port = free_port()
    (tmp_path / "shop_worker.py").write_text(worker)
    (tmp_path / "recipe_conf.py").write_text(_fill(conf, certs.server_pem, f"sqlite:{tmp_path / 's.db'}", port))
    (tmp_path / "recipe_app.py").write_text(
        "from aiohttp import web\n\nasync def hello(request):\n    return web.Response(text='ok')\n\n"
        "async def make_app():\n    app = web.Application()\n    app.router.add_get('/', hello)\n    return app\n")
    argv = [sys.executable, "-m", "gunicorn", "--config", "python:recipe_conf", "--workers", "4",
            "--bind", f"127.0.0.1:{port}", "--no-control-socket", "recipe_app:make_app"]
    _check("aiohttp GunicornWebWorker", argv, tmp_path, port)
