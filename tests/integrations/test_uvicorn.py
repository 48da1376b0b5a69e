"""uvicorn with 4 workers (spawned: the factory is pickled), and gunicorn with sesscache's
uvicorn worker class: >= 99 % resumed on TLS 1.2 and 1.3 with sesscache."""
from __future__ import annotations

import pickle
import ssl
import sys

import pytest

from tests.integrations.harness import (
    ServerProcess, assert_resumed, clear_pids, free_port, measure, need_package, report, served_pids,
    write_apps)

RUN = """
import sys
import uvicorn
kwargs = {{}}
if {store!r}:
    from sesscache.integrations.uvicorn import ssl_context_factory
    kwargs["ssl_context_factory"] = ssl_context_factory({store!r}, session_id_context="uvicorn-test")
uvicorn.run("sc_test_apps:asgi", host="127.0.0.1", port={port}, workers=4, ssl_certfile={certfile!r},
            log_level="warning", **kwargs)
"""


def _uvicorn(folder, certs, store=None):
    port = free_port()
    return ServerProcess([sys.executable, "-c", RUN.format(store=store, port=port, certfile=certs.server_pem)],
                         folder, port)


def test_the_factory_pickles_without_its_store(tmp_path, certs):
    from sesscache.integrations.uvicorn import ssl_context_factory

    factory = ssl_context_factory(f"sqlite:{tmp_path / 's.db'}", session_id_context="shop")

    def default_factory():
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(certs.server_pem)
        return context
    context = factory(None, default_factory)
    assert context.options & ssl.OP_NO_TICKET
    copy = pickle.loads(pickle.dumps(factory))
    assert copy.process_cache._cache is None and copy.process_cache.session_id_context == b"shop"
    assert copy.process_cache.cache.session_id_context(copy(None, default_factory)) == b"shop"


@pytest.mark.slow
def test_uvicorn_four_workers(tmp_path, certs):
    need_package("uvicorn")
    write_apps(tmp_path)
    with _uvicorn(tmp_path, certs) as server:
        plain = measure(server.port)
    clear_pids(tmp_path)
    with _uvicorn(tmp_path, certs, f"sqlite:{tmp_path / 'sessions.db'}") as server:
        cached = measure(server.port)
        report("uvicorn, 4 workers", plain, cached)
        assert_resumed(cached, server)
    assert len(served_pids(tmp_path)) >= 2, "the connections should have reached several workers"


GUNICORN_CONF = """
from sesscache.integrations.gunicorn import ssl_context_hook

worker_class = "sesscache.integrations.uvicorn.{worker}"
ssl_context = ssl_context_hook({store!r}, session_id_context="uvicorn-worker-test")
"""


@pytest.mark.slow
@pytest.mark.parametrize("worker", ["UvicornWorker", "UvicornH11Worker"])
def test_gunicorn_with_the_uvicorn_worker(tmp_path, certs, worker):
    need_package("uvicorn_worker")
    write_apps(tmp_path)
    port = free_port()
    argv = [sys.executable, "-m", "gunicorn", "--workers", "4", "--certfile", certs.server_pem,
            "--bind", f"127.0.0.1:{port}", "--no-control-socket", "--log-level", "warning"]
    with ServerProcess(argv + ["--worker-class", "uvicorn_worker.UvicornWorker", "sc_test_apps:asgi"],
                       tmp_path, port) as server:
        plain = measure(server.port)
    clear_pids(tmp_path)
    (tmp_path / "gunicorn_conf.py").write_text(GUNICORN_CONF.format(worker=worker,
                                                                    store=f"sqlite:{tmp_path / 's.db'}"))
    port = free_port()
    argv[argv.index("--bind") + 1] = f"127.0.0.1:{port}"
    with ServerProcess(argv + ["--config", "python:gunicorn_conf", "sc_test_apps:asgi"], tmp_path, port) as server:
        cached = measure(server.port)
        report(f"gunicorn + sesscache.integrations.uvicorn.{worker}, 4 workers", plain, cached)
        assert_resumed(cached, server)
    assert len(served_pids(tmp_path)) >= 2, "the connections should have reached several workers"
