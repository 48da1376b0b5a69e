"""SQLiteStore: WAL, purging, faults (locked, read-only, deleted, corrupt), processes, model check."""
from __future__ import annotations

import multiprocessing
import os
import shutil
import sqlite3
import tempfile
import threading
import time
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, rule

from sesscache.errors import ConfigurationError, StoreError
from sesscache.stores import SQLiteStore

SLACK = 2.0  # seconds allowed beyond the store timeout for a failing call


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def _rows(path) -> int:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT count(*) FROM sesscache").fetchone()[0]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "sessions.db"


@pytest.fixture
def store(db: Path):
    s = SQLiteStore(db, timeout=0.05)
    yield s
    s.close()


def test_wal_mode_and_schema(store, db):
    store.set(b"k", b"v", 60)
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        columns = {row[1]: (row[2], row[5]) for row in conn.execute("PRAGMA table_info(sesscache)")}
    assert columns == {"key": ("BLOB", 1), "value": ("BLOB", 0), "expires": ("REAL", 0)}
    assert store.describe()["journal_mode"] == "wal"


def test_expired_rows_are_purged_every_n_writes(db):
    clock = FakeClock()
    store = SQLiteStore(db, purge_every=5, clock=clock)
    for i in range(3):
        store.set(b"old%d" % i, b"v", 1)
    clock.advance(2)
    assert store.get(b"old0") is None  # filtered by the query...
    assert _rows(db) == 3  # ...but still on disk
    store.set(b"new1", b"v", 60)
    store.set(b"new2", b"v", 60)  # 5th write: purge
    assert _rows(db) == 2
    store.close()


def test_purge_expired_and_describe_count_live_rows(db):
    clock = FakeClock()
    store = SQLiteStore(db, clock=clock)
    store.set(b"dead", b"12345", 1)
    store.set(b"live", b"123", 60)
    clock.advance(2)
    info = store.describe()
    assert (info["entries"], info["bytes"]) == (1, len(b"live") + 3)
    assert store.purge_expired() == 1
    assert _rows(db) == 1
    store.close()


@pytest.mark.parametrize("returning", [True, False], ids=["delete-returning", "transaction"])
def test_pop_is_atomic_across_threads(db, returning):
    store = SQLiteStore(db, timeout=10)
    store._has_returning = returning and store._has_returning
    keys = [b"k%d" % i for i in range(60)]
    for key in keys:
        store.set(key, key, 60)
    wins, errors = [], []
    barrier = threading.Barrier(6)

    def popper():
        try:
            barrier.wait()
            for key in keys:
                value = store.pop(key)
                if value is not None:
                    wins.append(value)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=popper) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(wins) == sorted(keys)
    assert store.describe()["atomic_pop"] == ("delete-returning" if returning else "transaction")
    store.close()


def test_pop_of_an_expired_row_returns_none_and_removes_it(db):
    clock = FakeClock()
    store = SQLiteStore(db, clock=clock)
    store.set(b"k", b"v", 1)
    clock.advance(1)  # exactly at expiry
    assert store.pop(b"k") is None
    assert _rows(db) == 0
    store.close()


def test_locked_database_fails_within_timeout_then_recovers(store, db):
    store.set(b"k", b"before", 60)
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    holder.execute("INSERT INTO sesscache VALUES (x'00', x'00', 1e12)")
    try:
        for write in (lambda: store.set(b"k", b"during", 60), lambda: store.pop(b"k"),
                      lambda: store.delete(b"k")):
            start = time.monotonic()
            with pytest.raises(StoreError) as info:
                write()
            assert time.monotonic() - start < store.timeout + SLACK
            assert "locked" in str(info.value) and "timeout" in str(info.value)
            # it waited its timeout out, and says so (a refusal at once reads differently)
            assert "gave up after" in str(info.value) and "another connection" in str(info.value)
            assert isinstance(info.value.__cause__, sqlite3.OperationalError)
        # WAL: readers do not wait for the writer
        assert store.get(b"k") == b"before"
    finally:
        holder.execute("COMMIT")
        holder.close()
    store.set(b"k", b"after", 60)
    assert store.get(b"k") == b"after"


def test_a_file_another_process_is_creating_is_waited_for_not_refused(tmp_path):
    """At start every worker of a server creates the same file at once: one of them holds it
    (rollback journal, switching to WAL, creating the table) for longer than ``timeout``
    when the machine is busy. The others wait for it (up to BUSY_PATIENCE), then use the file:
    refusing made three of four gunicorn workers find the store unreachable in a CI run."""
    from sesscache.stores.base import BUSY_PATIENCE

    path = str(tmp_path / "fresh.db")
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")
    holder.execute("CREATE TABLE other_app (x)")
    held = 0.4  # 8 x the store's timeout
    releaser = threading.Timer(held, lambda: holder.execute("COMMIT"))
    releaser.start()
    try:
        store = SQLiteStore(path, timeout=0.05)
        start = time.monotonic()
        store.set(b"k", b"v", 60)
        waited = time.monotonic() - start
        assert store.get(b"k") == b"v"
        assert held - 0.1 < waited < BUSY_PATIENCE + SLACK
        # Once the file is set up, a writer elsewhere costs a write ``timeout``, not the
        # start-up patience, and a reader nothing (WAL).
        holder.execute("BEGIN IMMEDIATE")
        other = SQLiteStore(path, timeout=0.05)
        start = time.monotonic()
        assert other.get(b"k") == b"v"
        with pytest.raises(StoreError, match="locked"):
            other.set(b"k2", b"v", 60)
        assert time.monotonic() - start < 0.05 + SLACK
        holder.execute("COMMIT")
        store.close()
        other.close()
    finally:
        releaser.join()
        holder.close()


def test_start_up_work_asks_a_busy_file_again_and_anything_else_once(tmp_path):
    """retry_while_busy, the one loop the SQLite set-up, the workers' store probe and the
    ticket keys' first read share: a locked file is asked again until it answers or the
    patience is spent; a file that is not a database is refused at the first call."""
    from sesscache.stores.base import retry_while_busy

    path = str(tmp_path / "held.db")
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN EXCLUSIVE")
    calls = []

    def write() -> None:
        calls.append(1)
        conn = sqlite3.connect(path, timeout=0, isolation_level=None)
        try:
            conn.execute("INSERT INTO t VALUES (1)")
        finally:
            conn.close()

    with pytest.raises(sqlite3.OperationalError, match="locked"):
        retry_while_busy(write, patience=0.2)
    assert len(calls) > 2, calls
    holder.execute("COMMIT")
    holder.close()
    calls.clear()
    retry_while_busy(write, patience=0.2)
    assert len(calls) == 1

    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not a database, not at all" * 100)
    calls.clear()

    def read_garbage() -> None:
        calls.append(1)
        conn = sqlite3.connect(str(garbage))
        try:
            conn.execute("SELECT * FROM t")
        finally:
            conn.close()

    with pytest.raises(sqlite3.DatabaseError, match="not a database"):
        retry_while_busy(read_garbage)
    assert calls == [1]


def _unprivileged(fn, *args):
    """Run ``fn(*args)`` in a forked child that file permissions apply to (root becomes
    nobody: root ignores them). Returns what ``fn`` returns, or the text of what it raised."""
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()

    def target():
        try:
            if os.geteuid() == 0:
                os.setgid(65534)
                os.setuid(65534)
            queue.put(("ok", fn(*args)))
        except BaseException as exc:  # reported to the parent
            queue.put(("raised", f"{type(exc).__name__}: {exc}"))

    child = ctx.Process(target=target)
    child.start()
    try:
        status, result = queue.get(timeout=60)
    finally:
        child.join(10)
    assert status == "ok", result
    return result


@pytest.fixture
def shared_dir():
    """A directory an unprivileged child can reach and own (tmp_path is root-only)."""
    path = tempfile.mkdtemp(prefix="sesscache-ro-")
    os.chmod(path, 0o755)
    if os.geteuid() == 0:
        os.chown(path, 65534, 65534)
    yield path
    os.chmod(path, 0o755)
    shutil.rmtree(path, ignore_errors=True)


def _outcome(call):
    try:
        return ("ok", call())
    except StoreError as exc:
        return ("StoreError", str(exc))


def _read_only_directory_then_writable(directory):
    path = os.path.join(directory, "sessions.db")
    os.chmod(directory, 0o555)
    store = SQLiteStore(path, timeout=0.05)
    first = _outcome(lambda: store.set(b"k", b"v", 60))
    read = _outcome(lambda: store.get(b"k"))
    os.chmod(directory, 0o755)  # condition fixed: the same store must recover
    store.set(b"k", b"v", 60)
    return first, read, store.get(b"k")


def test_read_only_directory_is_a_store_error_and_recovers(shared_dir):
    first, read, after = _unprivileged(_read_only_directory_then_writable, shared_dir)
    assert first[0] == "StoreError", first
    assert "directory" in first[1] or "read-only" in first[1]
    assert read[0] == "StoreError"
    assert after == b"v"


def _read_only_file(directory):
    path = os.path.join(directory, "sessions.db")
    seed = SQLiteStore(path)  # create it (and its table)
    seed.set(b"seed", b"x", 60)
    seed.close()
    for suffix in ("-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.remove(path + suffix)
    os.chmod(path, 0o444)
    os.chmod(directory, 0o555)
    store = SQLiteStore(path, timeout=0.05)
    write = _outcome(lambda: store.set(b"k", b"v", 60))
    pop = _outcome(lambda: store.pop(b"k"))
    os.chmod(directory, 0o755)
    os.chmod(path, 0o644)
    store.set(b"k", b"v", 60)
    return write, pop, store.get(b"k")


def test_read_only_file_is_a_store_error_and_recovers(shared_dir):
    write, pop, after = _unprivileged(_read_only_file, shared_dir)
    assert write[0] == "StoreError", write
    assert "read-only" in write[1] or "cannot open" in write[1]
    assert pop[0] == "StoreError"
    assert after == b"v"


def test_directory_removed_then_recreated(tmp_path):
    directory = tmp_path / "state"
    directory.mkdir()
    store = SQLiteStore(directory / "sessions.db", recheck_interval=0)
    store.set(b"k", b"v", 60)
    shutil.rmtree(directory)
    with pytest.raises(StoreError) as info:
        store.set(b"k", b"v2", 60)
    assert "directory is missing" in str(info.value)
    with pytest.raises(StoreError):
        store.get(b"k")
    assert store.describe()["error"]
    directory.mkdir()
    store.set(b"k", b"v3", 60)
    assert store.get(b"k") == b"v3"
    store.close()


def test_file_deleted_while_open_is_reopened(db):
    store = SQLiteStore(db, recheck_interval=0)
    store.set(b"k", b"v", 60)
    for suffix in ("", "-wal", "-shm"):
        os.remove(str(db) + suffix)
    assert store.get(b"k") is None  # a new, empty file
    store.set(b"k2", b"v2", 60)
    other = SQLiteStore(db)  # another process would open the file at the path...
    assert other.get(b"k2") == b"v2"  # ...and see the write: not lost in the deleted inode
    other.close()
    store.close()


def test_file_deleted_without_rechecks_never_crashes(db):
    store = SQLiteStore(db, recheck_interval=-1)
    store.set(b"k", b"v", 60)
    for suffix in ("", "-wal", "-shm"):
        os.remove(str(db) + suffix)
    for _ in range(3):  # may keep using the unlinked file or fail cleanly: never anything else
        try:
            store.set(b"k", b"v", 60)
            store.get(b"k")
        except StoreError:
            pass
    store.close()


def test_corrupt_file_is_a_store_error_until_replaced(db):
    db.write_bytes(b"this is not an SQLite database\n" * 200)
    store = SQLiteStore(db, recheck_interval=0)
    with pytest.raises(StoreError) as info:
        store.set(b"k", b"v", 60)
    assert "not a usable SQLite file" in str(info.value)
    db.unlink()
    store.set(b"k", b"v", 60)
    assert store.get(b"k") == b"v"
    store.close()


def test_forked_child_uses_its_own_connection(store, db):
    store.set(b"parent", b"p", 60)
    store.set(b"to-pop", b"x", 60)  # the parent's connection is open when it forks
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()

    def child():
        try:
            got = store.get(b"parent")
            store.set(b"child", b"c", 60)
            queue.put((got, store.pop(b"to-pop")))
        except BaseException as exc:
            queue.put(repr(exc))

    proc = ctx.Process(target=child)
    proc.start()
    result = queue.get(timeout=60)
    proc.join(10)
    assert result == (b"p", b"x")
    assert store.get(b"child") == b"c"
    assert store.get(b"to-pop") is None
    store.set(b"after", b"a", 60)  # the parent's connection survived the child
    assert store.get(b"after") == b"a"


def _worker(path: str, worker: int, keys: list, queue) -> None:
    try:
        store = SQLiteStore(path, timeout=10)
        store.set(b"from-%d" % worker, b"hello", 60)
        won = [k for k in keys if store.pop(k) is not None]
        deadline = time.monotonic() + 30
        while store.get(b"from-%d" % (1 - worker)) is None and time.monotonic() < deadline:
            time.sleep(0.01)
        queue.put((worker, won, store.get(b"from-%d" % (1 - worker))))
        store.close()
    except BaseException as exc:
        queue.put((worker, repr(exc), None))


def test_two_spawned_processes_share_the_file(db):
    keys = [b"shared-%d" % i for i in range(100)]
    setup = SQLiteStore(db)
    for key in keys:
        setup.set(key, key, 60)
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(str(db), w, keys, queue)) for w in (0, 1)]
    for p in procs:
        p.start()
    results = sorted(queue.get(timeout=60) for _ in procs)
    for p in procs:
        p.join(10)
    (_, won0, saw0), (_, won1, saw1) = results
    assert saw0 == saw1 == b"hello", results  # each saw the other's write
    assert not set(won0) & set(won1)  # no session popped by both processes
    assert sorted(won0 + won1) == sorted(keys)
    setup.close()


def test_threads_get_their_own_connections_and_exited_ones_are_closed(db):
    store = SQLiteStore(db, timeout=10)
    errors = []
    all_opened = threading.Barrier(9)
    release = threading.Event()

    def work(i):
        try:
            for j in range(20):
                store.set(b"%d-%d" % (i, j), b"v", 60)
                assert store.get(b"%d-%d" % (i, j)) == b"v"
        except BaseException as exc:
            errors.append(exc)
        all_opened.wait()
        release.wait()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    all_opened.wait()
    # A thread that failed dropped its connection: say why, rather than count 7 connections.
    assert errors == []
    assert len({id(c.conn) for c in store._owned}) == 8  # one connection per live thread
    release.set()
    for t in threads:
        t.join()
    assert errors == []
    store.get(b"x")  # the main thread opens its connection and closes exited threads'
    assert len(store._owned) == 1
    assert store.describe()["entries"] == 160
    store.close()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"path": ":memory:"},
        {"path": ""},
        {"path": "file:x?mode=memory"},
        {"timeout": 0},
        {"timeout": -1},
        {"timeout": float("nan")},
        {"table": "sessions; DROP TABLE x"},
        {"table": "1abc"},
        {"purge_every": 0},
        {"synchronous": "SOMETIMES"},
    ],
    ids=repr,
)
def test_bad_configuration(tmp_path, kwargs):
    kwargs.setdefault("path", tmp_path / "s.db")
    with pytest.raises(ConfigurationError):
        SQLiteStore(**kwargs)


def test_custom_table_shares_a_file(db):
    a = SQLiteStore(db, table="tls_a")
    b = SQLiteStore(db, table="tls_b")
    a.set(b"k", b"a", 60)
    b.set(b"k", b"b", 60)
    assert (a.get(b"k"), b.get(b"k")) == (b"a", b"b")
    a.close()
    b.close()


# -- stateful model check -------------------------------------------------------------------------

KEYS = st.sampled_from([b"", b"a", b"b", b"\x00", b"k" * 100])


class SQLiteMachine(RuleBasedStateMachine):
    """SQLiteStore must match a dict of (value, expires) exactly, purges included."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="sesscache-state-")
        self.clock = FakeClock()
        self.store = SQLiteStore(os.path.join(self.dir, "s.db"), purge_every=3, clock=self.clock)
        self.model = {}

    def teardown(self) -> None:
        self.store.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _expected(self, key):
        entry = self.model.get(key)
        if entry is None or entry[1] <= self.clock.now:
            return None
        return entry[0]

    @rule(key=KEYS, value=st.binary(max_size=40), ttl=st.floats(min_value=0.001, max_value=100))
    def set(self, key, value, ttl):
        self.store.set(key, value, ttl)
        self.model[key] = (value, self.clock.now + ttl)

    @rule(key=KEYS)
    def get(self, key):
        assert self.store.get(key) == self._expected(key)

    @rule(key=KEYS)
    def pop(self, key):
        expected = self._expected(key)
        self.model.pop(key, None)
        assert self.store.pop(key) == expected

    @rule(key=KEYS)
    def delete(self, key):
        self.store.delete(key)
        self.model.pop(key, None)

    @rule(seconds=st.floats(min_value=0, max_value=60))
    def advance(self, seconds):
        self.clock.advance(seconds)

    @rule()
    def describe(self):
        live = [k for k in self.model if self._expected(k) is not None]
        info = self.store.describe()
        assert info["entries"] == len(live)
        assert info["bytes"] == sum(len(k) + len(self.model[k][0]) for k in live)


TestSQLiteModel = SQLiteMachine.TestCase
TestSQLiteModel.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)


def test_writers_of_one_process_take_turns_and_a_stuck_turn_is_a_clear_error(db):
    """This process's writers queue on the store's own lock instead of racing through
    SQLite's busy handler (which can starve one of them under a steady stream of writes).
    A turn held past ``timeout`` is a StoreError that says so; the store works on after."""
    store = SQLiteStore(db, timeout=0.2)
    store.set(b"k", b"v", 60.0)  # the file and this thread's connection exist
    errors = []

    def write():
        try:
            store.set(b"other", b"value", 60.0)
        except StoreError as exc:
            errors.append(exc)

    with store._write_turn:  # another writer of this process is in the middle of a write
        thread = threading.Thread(target=write)
        started = time.monotonic()
        thread.start()
        thread.join(5)
        waited = time.monotonic() - started
    assert len(errors) == 1 and "this process's other threads" in str(errors[0])
    assert 0.15 <= waited < 2.0
    store.set(b"other", b"value", 60.0)
    assert store.get(b"other") == b"value"

    # Eight threads writing flat out for a second: nobody waits anywhere near the timeout.
    store = SQLiteStore(db, timeout=1.0)
    failures, stop = [], time.monotonic() + 1.0

    def flood(n):
        i = 0
        while time.monotonic() < stop:
            try:
                store.set(b"%d-%d" % (n, i), b"x" * 150, 60.0)
            except StoreError as exc:  # pragma: no cover - what the turns prevent
                failures.append(exc)
            i += 1

    threads = [threading.Thread(target=flood, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert not failures, failures[:3]
