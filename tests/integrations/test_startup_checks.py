"""What the integrations check at start (sesscache.integrations._startup): the master's look at a
SQLite directory for the workers' user, the workers' real try of a store, and how a fault is
told misconfigured (refuse) from unreachable (start anyway). The servers themselves, started for
real, are in test_store_at_start.py."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest

from sesscache.integrations._startup import (MISCONFIGURED, UNREACHABLE, master_problem, probe_store,
                                             check_on_store_error)
from sesscache.stores.urls import store_from_url
from tests.integrations.harness import free_port, need_package, write_apps

NOBODY = 65534


@pytest.fixture
def open_tmp():
    """A folder other users can reach (pytest's own tmp_path sits under a mode-700 directory)."""
    import shutil
    import tempfile
    from pathlib import Path

    folder = Path(tempfile.mkdtemp(prefix="sesscache-start-", dir="/tmp"))
    os.chmod(folder, 0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_a_directory_above_that_the_workers_user_cannot_enter(open_tmp):
    (open_tmp / "closed" / "open").mkdir(parents=True)
    os.chmod(open_tmp / "closed", 0o700)
    os.chmod(open_tmp / "closed" / "open", 0o777)
    problem = master_problem(f"sqlite:{open_tmp / 'closed' / 'open' / 's.db'}", uid=NOBODY, gid=NOBODY,
                             groups=[NOBODY])
    assert f"cannot enter {open_tmp / 'closed'} (mode 700)" in problem.cause


def test_a_missing_directory_is_named(tmp_path):
    problem = master_problem(f"sqlite:{tmp_path / 'gone' / 'deeper' / 's.db'}")
    assert problem.kind == MISCONFIGURED
    assert f"the directory {tmp_path / 'gone'} does not exist" in problem.cause
    assert not (tmp_path / "gone").exists()  # nothing created


def test_the_master_creates_no_file(tmp_path):
    assert master_problem(f"sqlite:{tmp_path / 's.db'}") is None
    assert list(tmp_path.iterdir()) == []


def test_a_directory_the_workers_user_cannot_write(open_tmp):
    folder = open_tmp / "root-only"
    folder.mkdir(mode=0o755)
    os.chmod(folder, 0o755)
    problem = master_problem(f"sqlite:{folder / 's.db'}", uid=NOBODY, gid=NOBODY, groups=[NOBODY])
    assert problem.kind == MISCONFIGURED and "cannot create files in" in problem.cause, problem
    assert f"uid {NOBODY}" in problem.cause
    os.chmod(folder, 0o777)
    assert master_problem(f"sqlite:{folder / 's.db'}", uid=NOBODY, gid=NOBODY, groups=[NOBODY]) is None
    (folder / "s.db").write_bytes(b"")
    os.chmod(folder / "s.db", 0o600)
    problem = master_problem(f"sqlite:{folder / 's.db'}", uid=NOBODY, gid=NOBODY, groups=[NOBODY])
    assert "cannot read and write" in problem.cause


def test_a_directory_the_workers_group_may_write(open_tmp):
    folder = open_tmp / "group"
    folder.mkdir()
    os.chmod(folder, 0o770)
    gid = os.stat(folder).st_gid
    assert master_problem(f"sqlite:{folder / 's.db'}", uid=NOBODY, gid=gid, groups=[gid]) is None
    assert master_problem(f"sqlite:{folder / 's.db'}", uid=NOBODY, gid=NOBODY, groups=[NOBODY]) is not None


def test_a_malformed_url_is_misconfigured():
    problem = master_problem("redis://:secret@host:notaport/0")
    assert problem.kind == MISCONFIGURED and "secret" not in problem.store + problem.cause


def test_on_store_error_is_refuse_or_warn():
    assert check_on_store_error("warn") == "warn"
    from sesscache import ConfigurationError

    with pytest.raises(ConfigurationError, match="'refuse'.*'warn'"):
        check_on_store_error("ignore")


def test_the_probe_writes_reads_and_deletes(tmp_path):
    url = f"sqlite:{tmp_path / 's.db'}"
    store = store_from_url(url)
    assert probe_store(store, url) is None
    assert store.describe()["entries"] == 0  # the probe's key is gone


def test_a_probe_of_a_missing_directory_is_misconfigured(tmp_path):
    url = f"sqlite:{tmp_path / 'gone' / 's.db'}"
    problem = probe_store(store_from_url(url), url)
    assert problem.kind == MISCONFIGURED and "unable to open" in problem.cause


@pytest.mark.needs_redis
def test_a_refused_password_is_misconfigured_and_nobody_listening_unreachable(redis_servers):
    redis = redis_servers(tcp=True, extra_args=("--requirepass", "right"))
    wrong = f"redis://:wrong@127.0.0.1:{redis.port}/0"
    problem = probe_store(store_from_url(wrong), wrong)
    assert problem.kind == MISCONFIGURED and "wrong" not in problem.store + problem.cause
    right = f"redis://:right@127.0.0.1:{redis.port}/0"
    assert probe_store(store_from_url(right), right) is None
    nobody = f"redis://127.0.0.1:{free_port()}/0"
    assert probe_store(store_from_url(nobody), nobody).kind == UNREACHABLE


@pytest.mark.needs_redis
def test_a_store_that_answers_late_at_start_is_waited_for_not_called_unreachable(redis_servers):
    """At start every worker connects at once, on a loaded host: a store that answers later
    than its timeout (here: paused for 8 x the 0.05 s timeout) is asked again for up to
    BUSY_PATIENCE, not reported unreachable (a run at load 10 reported the right password's
    store unreachable)."""
    redis = redis_servers(tcp=True)
    url = f"redis://127.0.0.1:{redis.port}/0"
    store = store_from_url(url)
    redis.pause()
    resumer = threading.Timer(0.4, redis.resume)
    resumer.start()
    try:
        started = time.monotonic()
        assert probe_store(store, url) is None
        assert time.monotonic() - started >= 0.3
    finally:
        resumer.join()
        store.close()


@pytest.mark.needs_redis
def test_an_acl_user_without_the_rights_is_misconfigured(redis_servers):
    redis = redis_servers(tcp=True, extra_args=("--user", "reader", "on", ">pw", "~*", "+get",
                                                        "--user", "default", "off"))
    url = f"redis://reader:pw@127.0.0.1:{redis.port}/0"
    problem = probe_store(store_from_url(url), url)
    assert problem.kind == MISCONFIGURED and "denied the command" in problem.cause, problem


_USER_CONF = """
from sesscache.integrations.gunicorn import ssl_context_hook

user = "nobody"
group = "nogroup"
ssl_context = ssl_context_hook({store!r}, session_id_context="t")
"""


@pytest.mark.slow
def test_gunicorn_refuses_a_directory_its_workers_user_cannot_write(tmp_path, open_tmp, certs):
    """The master runs as root, the workers as nobody: the directory is root's."""
    need_package("gunicorn")
    if os.geteuid() != 0:
        pytest.skip("needs root to start gunicorn with user=nobody (CI runs as root)")
    folder = open_tmp / "root-only"
    folder.mkdir()
    os.chmod(folder, 0o755)
    write_apps(tmp_path)
    os.chmod(certs.server_pem, 0o644)
    (tmp_path / "user_conf.py").write_text(_USER_CONF.format(store=f"sqlite:{folder / 's.db'}"))
    port = free_port()
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "gunicorn", "--config", "python:user_conf", "--certfile",
                           certs.server_pem, "--bind", f"127.0.0.1:{port}", "--workers", "2", "--no-control-socket",
                           "sc_test_apps:wsgi"], cwd=tmp_path, capture_output=True, text=True, timeout=30,
                          env=dict(os.environ, PYTHONPATH=str(tmp_path)))
    assert time.monotonic() - start < 10
    assert done.returncode != 0
    assert f"sqlite:{folder / 's.db'}" in done.stderr and "cannot create files in" in done.stderr, done.stderr
    assert "user nobody" in done.stderr
    assert not (folder / "s.db").exists()


def test_a_sqlite_file_another_worker_is_writing_is_waited_for_not_called_unreachable(tmp_path):
    """At start every worker opens and probes the same file at once: a probe that finds it
    locked by another connection asks again, and the store is not reported unreachable."""
    import sqlite3
    import threading

    url = f"sqlite:{tmp_path / 'sessions.db'}"
    store = store_from_url(url)
    store.set(b"warm", b"v", 10.0)  # the file and its schema exist
    other = sqlite3.connect(str(tmp_path / "sessions.db"), isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")  # another worker's write transaction, held 0.3 s
    release = threading.Timer(0.3, lambda: other.execute("COMMIT"))
    release.start()
    try:
        started = time.monotonic()
        assert probe_store(store, url) is None
        assert time.monotonic() - started >= 0.2  # it did find the file locked, and waited
    finally:
        release.join()
        other.close()
        store.close()


def test_a_sqlite_file_locked_for_longer_than_the_patience_is_unreachable(tmp_path):
    import sqlite3

    url = f"sqlite:{tmp_path / 'sessions.db'}"
    store = store_from_url(url)
    store.set(b"warm", b"v", 10.0)
    other = sqlite3.connect(str(tmp_path / "sessions.db"), isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    try:
        problem = probe_store(store, url)
        assert problem is not None and problem.kind == UNREACHABLE and "locked" in problem.cause
    finally:
        other.execute("COMMIT")
        other.close()
        store.close()
