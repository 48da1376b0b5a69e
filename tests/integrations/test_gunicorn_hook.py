"""``ssl_context_hook`` in-process: what it sets, that the master opens nothing, that each process
opens its own store, the context reused per worker and made again when the certificate changes."""
from __future__ import annotations

import os
import shutil
import ssl
import threading
from types import SimpleNamespace

import pytest

import sesscache
from sesscache.integrations.gunicorn import ssl_context_hook


def _conf(certfile):
    return SimpleNamespace(certfile=certfile, keyfile=None, ca_certs=None)


def _factory(certfile):
    def default_ssl_context_factory():  # what gunicorn's does, minus its options
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(certfile)
        return context
    return default_ssl_context_factory


def test_made_in_the_master_opens_nothing(tmp_path, certs):
    hook = ssl_context_hook(f"sqlite:{tmp_path / 's.db'}", session_id_context="shop")
    assert not (tmp_path / "s.db").exists()
    context = hook(_conf(certs.server_pem), _factory(certs.server_pem))
    assert context.options & ssl.OP_NO_TICKET
    assert hook.process_cache.cache.session_id_context(context) == b"shop"
    assert sesscache.get_session_cache_mode(context) == sesscache.SESS_CACHE_SERVER
    assert "OP_NO_TICKET" in repr(hook)


def test_bad_settings_fail_where_the_config_is_read(tmp_path):
    with pytest.raises(sesscache.ConfigurationError, match="unknown store"):
        ssl_context_hook("sqlite3:/x", session_id_context="shop")
    with pytest.raises(sesscache.ConfigurationError, match="session_id_context"):
        ssl_context_hook("memory", session_id_context="x" * 33)
    with pytest.raises(sesscache.ConfigurationError, match="lifetime"):
        ssl_context_hook("memory", session_id_context="shop", lifetime=-1)


def test_stateful_tickets_can_be_left_to_the_user(certs):
    hook = ssl_context_hook("memory", session_id_context="shop", stateful_tickets=False)
    context = hook(_conf(certs.server_pem), _factory(certs.server_pem))
    assert not context.options & ssl.OP_NO_TICKET


def test_each_process_opens_its_own_cache(certs):
    hook = ssl_context_hook("memory", session_id_context="shop")
    hook(_conf(certs.server_pem), _factory(certs.server_pem))
    parent_cache = hook.process_cache.cache
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # a gunicorn worker
        try:
            hook(_conf(certs.server_pem), _factory(certs.server_pem))
            os.write(write, b"1" if hook.process_cache.cache is not parent_cache else b"0")
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(read, 1) == b"1"
    assert hook.process_cache.cache is parent_cache


def test_one_context_per_worker_by_default(certs):
    hook = ssl_context_hook("memory", session_id_context="shop")
    conf, factory = _conf(certs.server_pem), _factory(certs.server_pem)
    assert hook(conf, factory) is hook(conf, factory)


def test_a_context_per_connection_on_request(certs):
    hook = ssl_context_hook("memory", session_id_context="shop", reuse_context=False)
    conf, factory = _conf(certs.server_pem), _factory(certs.server_pem)
    first, second = hook(conf, factory), hook(conf, factory)
    assert first is not second
    assert second.options & ssl.OP_NO_TICKET


def test_reused_context_is_made_again_when_the_certificate_changes(tmp_path, certs):
    certfile = tmp_path / "server.pem"
    shutil.copy(certs.server_pem, certfile)
    hook = ssl_context_hook("memory", session_id_context="shop", reload_check_interval=0)
    conf, factory = _conf(str(certfile)), _factory(str(certfile))
    first = hook(conf, factory)
    assert hook(conf, factory) is first
    shutil.copy(certs.other_server_pem, certfile)
    second = hook(conf, factory)
    assert second is not first
    assert hook(conf, factory) is second
    assert second.options & ssl.OP_NO_TICKET


def test_a_certificate_caught_half_written_keeps_the_working_context(tmp_path, certs, caplog):
    certfile = tmp_path / "server.pem"
    shutil.copy(certs.server_pem, certfile)
    hook = ssl_context_hook("memory", session_id_context="shop", reload_check_interval=0)
    conf, factory = _conf(str(certfile)), _factory(str(certfile))
    first = hook(conf, factory)
    certfile.write_text(open(certs.other_server_pem).read()[:200])  # a deploy still writing
    assert hook(conf, factory) is first
    assert "could not load the changed certificate files" in caplog.text
    shutil.copy(certs.other_server_pem, certfile)  # the deploy finished
    second = hook(conf, factory)
    assert second is not first and hook(conf, factory) is second


def test_reused_context_is_made_once_by_concurrent_threads(certs):
    hook = ssl_context_hook("memory", session_id_context="shop")
    conf, factory = _conf(certs.server_pem), _factory(certs.server_pem)
    seen, start = [], threading.Barrier(8)

    def connection():
        start.wait()
        seen.append(hook(conf, factory))
    threads = [threading.Thread(target=connection) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(c) for c in seen}) == 1


def test_at_a_config_files_top_level_it_sets_the_server_hooks(tmp_path):
    """gunicorn reads a config file's namespace: the hook's on_starting and post_worker_init are
    put there, unless the file set its own (which must call the hook's)."""
    source = ("from sesscache.integrations.gunicorn import ssl_context_hook\n"
              f"ssl_context = ssl_context_hook('sqlite:{tmp_path / 's.db'}', session_id_context='t')\n")
    namespace = {"__name__": "__config__"}
    exec(compile(source, "gunicorn.conf.py", "exec"), namespace)
    hook = namespace["ssl_context"]
    assert namespace["on_starting"] == hook.on_starting
    assert namespace["post_worker_init"] == hook.post_worker_init

    def own(worker):
        pass
    namespace = {"__name__": "__config__", "post_worker_init": own}
    exec(compile(source, "gunicorn.conf.py", "exec"), namespace)
    assert namespace["post_worker_init"] is own and namespace["on_starting"] == namespace["ssl_context"].on_starting


def test_a_hook_made_inside_a_function_sets_nothing(tmp_path):
    def make():
        return ssl_context_hook("memory", session_id_context="t")
    namespace_before = dict(globals())
    make()
    assert "on_starting" not in globals() and set(globals()) == set(namespace_before)


def test_without_its_worker_hook_the_store_is_tried_at_the_first_connection(tmp_path, certs, caplog):
    """A config file whose own post_worker_init forgot the hook's: the first connection finds the
    missing directory and logs it (too late to refuse), and the handshake goes on."""
    hook = ssl_context_hook(f"sqlite:{tmp_path / 'gone' / 's.db'}", session_id_context="shop")
    context = hook(_conf(certs.server_pem), _factory(certs.server_pem))
    assert context.options & ssl.OP_NO_TICKET
    assert "cannot work" in caplog.text and "call ssl_context.post_worker_init(worker)" in caplog.text
