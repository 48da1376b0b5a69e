"""Every server snippet of the docs runs as written (issue 20): taken from the Markdown of
docs/servers/gunicorn.md, uvicorn.md, hypercorn.md, twisted.md and docs/index.md, never copied
into this file. Only the paths (certificate, key, store) and the ports are substituted; the
application the snippets name (``shop:app``, ``shop.asgi:application``) is written beside them.
Each server is then measured with real handshakes: >= 99 % resumed on TLS 1.2 and 1.3.

A code block names the file it is by its first line (``# gunicorn.conf.py``, ``# serve.py: ...``,
``# hypercorn.toml``); a ``sh`` block's lines are commands, run from the folder holding those
files. (The aiohttp, tornado, cheroot and Werkzeug recipes run in
tests/integrations/test_recipes.py.)
"""
from __future__ import annotations

import os
import re
import shlex
import sys
import uuid
import weakref
from pathlib import Path
from typing import Dict, List

import pytest

from tests.integrations.harness import ServerProcess, assert_resumed, free_port, measure, need_package

DOCS = Path(__file__).resolve().parents[2] / "docs"

WSGI_APP = '''
def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"ok"]
'''

ASGI_APP = '''
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})

application = app
'''


def blocks(page: str) -> List[Dict[str, str]]:
    """The page's fenced code blocks, in order: language, text, and the file its first line names."""
    found = []
    for language, text in re.findall(r"^```(\w+)\n(.*?)^```", (DOCS / page).read_text(), flags=re.S | re.M):
        first = text.splitlines()[0] if text.strip() else ""
        name = re.match(r"#\s*([\w.]+\.(?:py|toml))\b", first)
        found.append({"language": language, "text": text, "file": name.group(1) if name else ""})
    return found


def commands(block: Dict[str, str]) -> List[str]:
    return [line for line in (raw.split("  #")[0].strip() for raw in block["text"].splitlines())
            if line and not line.startswith("#")]


def _remove_segment(name: str) -> None:
    try:
        os.unlink(f"/dev/shm/sesscache-{os.geteuid()}-{name}")
    except FileNotFoundError:
        pass


class Site:
    """A folder for one snippet: the certificate and key as separate files, a store path, a port."""

    def __init__(self, folder: Path, certs, redis_url: str = "") -> None:
        self.folder = folder
        pem = Path(certs.server_pem).read_text()
        key = re.search(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----\n", pem, re.S).group(0)
        self.certfile, self.keyfile = folder / "shop.pem", folder / "shop.key"
        self.certfile.write_text(pem.replace(key, ""))
        self.keyfile.write_text(key)
        self.port = free_port()
        self.redis_url = redis_url
        # shm:shop: a segment of this test's own, its file removed with the Site
        self.segment = f"docs-{uuid.uuid4().hex[:12]}"
        weakref.finalize(self, _remove_segment, self.segment)

    def fill(self, text: str) -> str:
        """Paths and ports only."""
        port = str(self.port)
        text = (text.replace("/etc/ssl/shop.pem", str(self.certfile))
                    .replace("/etc/ssl/shop.key", str(self.keyfile))
                    .replace("/var/lib/shop/", str(self.folder) + "/")
                    .replace('"shm:shop"', f'"shm:{self.segment}"'))
        if self.redis_url:
            text = text.replace("redis\\://127.0.0.1\\:6379/0", self.redis_url.replace(":", "\\:"))
        text = re.sub(r'"0\.0\.0\.0:443"', f'"0.0.0.0:{port}"', text)
        text = re.sub(r"\bport=443\b", f"port={port}", text)
        text = re.sub(r"listenSSL\(443,", f"listenSSL({port},", text)
        return re.sub(r"sesscache-ssl:8?443:", f"sesscache-ssl:{port}:", text)

    def write(self, block: Dict[str, str]) -> Path:
        assert block["file"], f"a block that names no file: {block['text'][:80]!r}"
        path = self.folder / block["file"]
        path.write_text(self.fill(block["text"]))
        return path

    def app(self, wsgi: bool) -> None:
        (self.folder / "shop.py").write_text(WSGI_APP if wsgi else ASGI_APP)

    def argv(self, command: str) -> List[str]:
        argv = shlex.split(self.fill(command))
        if argv[0] == "python":
            return [sys.executable] + argv[1:]
        return [str(Path(sys.executable).parent / argv[0])] + argv[1:]

    def check(self, argv: List[str], what: str) -> None:
        (self.folder / "pids").mkdir(exist_ok=True)
        with ServerProcess(argv, self.folder, self.port) as server:
            results = measure(self.port)
            server.check_alive()
            log = server.log()
        print(f"{what}: " + "; ".join(r.line() for r in results.values()), file=sys.stderr)
        assert_resumed(results, log)
        self.port = free_port()  # the next command of the same snippet listens afresh


def _gunicorn_commands(page: str) -> List[str]:
    lines = [line for block in blocks(page) if block["language"] == "sh" for line in commands(block)
             if line.startswith("gunicorn ")]
    assert lines, f"{page} shows no gunicorn command"
    return lines


@pytest.mark.slow
def test_gunicorn_page(tmp_path, certs):
    need_package("gunicorn")
    site = Site(tmp_path, certs)
    site.app(wsgi=True)
    confs = [b for b in blocks("servers/gunicorn.md") if b["file"] == "gunicorn.conf.py"]
    assert len(confs) == 2  # the one-line hook, and a file with server hooks of its own
    for command in _gunicorn_commands("servers/gunicorn.md"):  # sync, then gthread
        site.write(confs[0])
        site.check(site.argv(command), f"gunicorn.md: {command}")
    site.write(confs[1])
    site.check(site.argv(_gunicorn_commands("servers/gunicorn.md")[0]), "gunicorn.md, with hooks of its own")


@pytest.mark.slow
@pytest.mark.parametrize("page, package, wsgi", [("index.md", "gunicorn", True),
                                                 ("servers/uvicorn.md", "uvicorn_worker", False)])
def test_a_gunicorn_config_file_and_its_command(tmp_path, certs, page, package, wsgi):
    """docs/index.md's example; uvicorn.md's gunicorn file with sesscache's UvicornWorker."""
    need_package(package)
    site = Site(tmp_path, certs)
    site.app(wsgi=wsgi)
    (conf,) = [b for b in blocks(page) if b["file"] == "gunicorn.conf.py"]
    site.write(conf)
    (command,) = _gunicorn_commands(page)
    site.check(site.argv(command), f"{page}: {command}")


@pytest.mark.slow
def test_uvicorn_page(tmp_path, certs):
    need_package("uvicorn")
    site = Site(tmp_path, certs)
    site.app(wsgi=False)
    (script,) = [b for b in blocks("servers/uvicorn.md") if b["file"] == "serve.py"]
    site.check([sys.executable, str(site.write(script))], "uvicorn.md: python serve.py")


@pytest.mark.slow
def test_hypercorn_page(tmp_path, certs):
    need_package("hypercorn")
    site = Site(tmp_path, certs)
    site.app(wsgi=False)
    files = {b["file"]: b for b in blocks("servers/hypercorn.md") if b["file"]}
    assert set(files) == {"hypercorn.toml", "serve.py"}
    site.write(files["hypercorn.toml"])
    site.check([sys.executable, str(site.write(files["serve.py"]))], "hypercorn.md: python serve.py")


@pytest.mark.slow
def test_twisted_page_in_code(tmp_path, certs):
    need_package("twisted")
    site = Site(tmp_path, certs)
    (script,) = [b for b in blocks("servers/twisted.md") if b["file"] == "serve.py"]
    site.check([sys.executable, str(site.write(script))], "twisted.md: python serve.py")


@pytest.mark.slow
@pytest.mark.parametrize("program", ["daphne", "twist"])
def test_twisted_page_endpoint_strings(tmp_path, certs, redis_url, program):
    need_package("daphne" if program == "daphne" else "twisted")
    site = Site(tmp_path, certs, redis_url)
    (tmp_path / "shop").mkdir()
    (tmp_path / "shop" / "__init__.py").write_text("")
    (tmp_path / "shop" / "asgi.py").write_text(ASGI_APP)
    (tmp_path / "index.html").write_text("ok")
    lines = [line for b in blocks("servers/twisted.md") if b["language"] == "sh" for line in commands(b)]
    (command,) = [line for line in lines if line.startswith(program + " ")]
    site.check(site.argv(command), f"twisted.md: {program}")
