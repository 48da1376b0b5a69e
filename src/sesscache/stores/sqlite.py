"""SQLite store: one file shared by every worker process on a host.

The file is in WAL mode, so readers never wait for a writer. A writer waits at most
``timeout`` seconds for the other threads of its process (they take turns on a lock of the
store's: SQLite's own busy handler polls with growing sleeps, and under a steady stream of
writes from many threads one of them could keep losing the race for longer than any timeout),
then at most ``timeout`` seconds for writers in other processes (SQLite's busy timeout). Every thread of every process
gets its own connection, opened on first use; a connection is never used across ``os.fork()``
(the store notices the pid change and opens a fresh one).

Table (name configurable)::

    CREATE TABLE sesscache (key BLOB PRIMARY KEY, value BLOB NOT NULL, expires REAL NOT NULL)

``expires`` is wall-clock ``time.time()`` seconds, because processes share it. Reads filter on
``expires > now``; expired rows are deleted every ``purge_every`` writes.

Faults (locked, read-only, missing directory, deleted file, full disk, corrupt file) raise
:class:`~sesscache.errors.StoreError`; after anything other than a lock timeout, the thread's
connection is dropped and the next call reopens the file, so the store recovers by itself once
the condition is fixed. Do not put the file on a network filesystem: WAL needs shared memory
between the processes that use it.
"""
from __future__ import annotations

import logging
import os
import re
import sqlite3
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Union

from ..errors import ConfigurationError, StoreError, ValueTooLarge
from ._read_bounds import DEFAULT_MAX_VALUE_BYTES, refuse_oversize
from .base import BUSY_PATIENCE, BaseStore, as_bytes, checked_entry, retry_while_busy

__all__ = ["SQLiteStore"]

log = logging.getLogger(__name__)

# DELETE ... RETURNING appeared in SQLite 3.35.0. Checked once, here, like a feature flag.
_HAS_RETURNING = sqlite3.sqlite_version_info >= (3, 35, 0)

# Connections inherited through os.fork(). SQLite forbids using (closing included) a
# connection in a child process: closing would drop POSIX locks and may checkpoint or delete
# the WAL under the parent. They are parked here so they are never closed by garbage collection.
_INHERITED: List[sqlite3.Connection] = []

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}\Z")


class _Conn:
    """One thread's connection, with the pid that opened it and the file identity it opened."""

    __slots__ = ("conn", "pid", "thread", "file_id", "checked_at")

    def __init__(self, conn: sqlite3.Connection, file_id: Optional[tuple]) -> None:
        self.conn = conn
        self.pid = os.getpid()
        self.thread = threading.current_thread()
        self.file_id = file_id
        self.checked_at = time.monotonic()


class SQLiteStore(BaseStore):
    """Sessions in an SQLite file, safe for many threads and processes on one host.

    Args:
        path: database file; created (with its table) if missing. Its directory must exist and
            be writable (WAL keeps ``-wal`` and ``-shm`` files next to it).
        timeout: seconds a write waits for another writer before StoreError (busy timeout).
        table: table name, for sharing a file with other data.
        purge_every: delete expired rows once every this many writes (per process).
        recheck_interval: seconds between checks that ``path`` still names the file this
            thread opened (deleted or replaced files are reopened). 0 checks on every call
            (one ``stat``), a negative value never checks.
        synchronous: SQLite ``PRAGMA synchronous``. ``NORMAL`` (default) may lose the last
            writes on power loss, which only costs a few full handshakes.
        clock: wall-clock seconds, shared by all processes; injectable for tests.
    """

    kind = "sqlite"

    def __init__(
        self,
        path: Union[str, "os.PathLike[str]"],
        timeout: float = 0.05,
        *,
        table: str = "sesscache",
        purge_every: int = 1000,
        recheck_interval: float = 1.0,
        synchronous: str = "NORMAL",
        clock: Callable[[], float] = time.time,
    ) -> None:
        path = os.fspath(path)
        if not isinstance(path, str):
            path = os.fsdecode(path)
        if path in ("", ":memory:") or path.startswith("file:"):
            raise ConfigurationError(
                f"SQLiteStore needs a file path, got {path!r}: an in-memory database is private "
                "to one connection; use MemoryStore for a single process"
            )
        if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or not 0 < timeout < 3600:
            raise ConfigurationError(f"timeout must be seconds > 0, got {timeout!r}")
        if not _IDENTIFIER.match(table):
            raise ConfigurationError(
                f"table must be a plain SQL identifier (letters, digits, _), got {table!r}"
            )
        if isinstance(purge_every, bool) or not isinstance(purge_every, int) or purge_every < 1:
            raise ConfigurationError(f"purge_every must be an int >= 1, got {purge_every!r}")
        if isinstance(recheck_interval, bool) or not isinstance(recheck_interval, (int, float)):
            raise ConfigurationError(f"recheck_interval must be seconds, got {recheck_interval!r}")
        if not isinstance(synchronous, str) or synchronous.upper() not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise ConfigurationError(
                f"synchronous must be OFF, NORMAL, FULL or EXTRA, got {synchronous!r}"
            )
        self.path = os.path.abspath(path)
        self.timeout = float(timeout)
        self.table = table
        self.purge_every = purge_every
        self.recheck_interval = float(recheck_interval)
        self._synchronous = synchronous.upper()
        self._clock = clock
        self._local = threading.local()
        # Every connection this store opened, so close() can reach other threads' connections
        # and so connections of threads that have exited get closed (see _open).
        self._owned: List[_Conn] = []
        self._owned_lock = threading.Lock()
        self._owned_pid = os.getpid()
        # This process's writers take turns here (see the module docstring); made anew after a
        # fork, like _owned_lock.
        self._write_turn = threading.Lock()
        self._write_turn_pid = os.getpid()
        self._writes = 0
        self._closed = False
        self._has_returning = _HAS_RETURNING
        t = table
        # length() of a BLOB reads no page of it, so an oversized value is never loaded;
        # nor is its expiry (stored after it: reading it walks the value's overflow pages).
        self._sql_get = (f"SELECT CASE WHEN length(value) > ?1 THEN NULL ELSE value END, length(value) "
                         f"FROM {t} WHERE key = ?2 AND (length(value) > ?1 OR expires > ?3)")
        self._sql_set = f"INSERT OR REPLACE INTO {t} (key, value, expires) VALUES (?, ?, ?)"
        self._sql_delete = f"DELETE FROM {t} WHERE key = ?"
        self._sql_pop = f"DELETE FROM {t} WHERE key = ? RETURNING value, expires"
        self._sql_select = f"SELECT value, expires FROM {t} WHERE key = ?"
        self._sql_purge = f"DELETE FROM {t} WHERE expires <= ?"
        self._sql_stats = (
            f"SELECT count(*), coalesce(sum(length(key) + length(value)), 0) FROM {t} "
            "WHERE expires > ?"
        )
        self._sql_schema = (
            f"CREATE TABLE IF NOT EXISTS {t} "
            "(key BLOB PRIMARY KEY, value BLOB NOT NULL, expires REAL NOT NULL)",
            f"CREATE INDEX IF NOT EXISTS {t}_expires ON {t} (expires)",
        )

    # -- the Store contract ----------------------------------------------------------------

    def get(self, key: bytes) -> Optional[bytes]:
        if type(key) is not bytes:
            key = as_bytes(key, "key")
        c = self._conn()
        try:
            rows = c.conn.execute(self._sql_get, (self.max_value_bytes, key, self._clock())).fetchall()
        except sqlite3.Error as exc:
            raise self._fault(exc, c, "read") from exc
        if not rows:
            return None
        value, length = rows[0]
        if value is None:
            refuse_oversize(self, f"{length} bytes")
        return value

    #: Largest value get() hands back; a larger one is refused (a miss, counted in
    #: ``oversize_reads``) without being read (see _read_bounds).
    max_value_bytes = DEFAULT_MAX_VALUE_BYTES
    oversize_reads = 0

    def set(self, key: bytes, value: bytes, ttl: float) -> None:
        key, value, ttl = checked_entry(key, value, ttl)
        c = self._conn()
        now = self._clock()
        try:
            self._write(c, self._sql_set, (key, value, now + ttl))
        except sqlite3.Error as exc:
            raise self._fault(exc, c, "write") from exc
        self._writes += 1  # racy across threads: only paces purges, exactness does not matter
        if self._writes % self.purge_every == 0:
            self._purge(c, now)

    def delete(self, key: bytes) -> None:
        if type(key) is not bytes:
            key = as_bytes(key, "key")
        c = self._conn()
        try:
            self._write(c, self._sql_delete, (key,))
        except sqlite3.Error as exc:
            raise self._fault(exc, c, "write") from exc

    def pop(self, key: bytes) -> Optional[bytes]:
        """Atomic get + delete, across threads and processes: one caller gets the value."""
        if type(key) is not bytes:
            key = as_bytes(key, "key")
        c = self._conn()
        try:
            if self._has_returning:
                rows = self._write(c, self._sql_pop, (key,))
            else:
                rows = self._in_turn(lambda: self._pop_in_transaction(c.conn, key))
        except sqlite3.Error as exc:
            raise self._fault(exc, c, "write") from exc
        if not rows:
            return None
        value, expires = rows[0]
        return value if expires > self._clock() else None

    def purge_expired(self) -> int:
        """Delete expired rows now; returns how many. Raises StoreError like a write."""
        c = self._conn()
        try:
            return self._delete_expired(c, self._clock())
        except sqlite3.Error as exc:
            raise self._fault(exc, c, "write") from exc

    def close(self) -> None:
        """Close this process's connections. Later calls raise StoreError."""
        self._closed = True
        pid = os.getpid()
        with self._owned_guard():
            owned, self._owned = self._owned, []
        for c in owned:
            if c.pid == pid:
                _close_quietly(c.conn)
            else:
                _INHERITED.append(c.conn)

    def describe(self) -> Dict[str, Any]:
        """Counts live rows (a scan: for status pages, not per handshake). Never raises
        StoreError: on a fault ``entries`` and ``bytes`` are None and ``error`` says why."""
        info: Dict[str, Any] = {
            "kind": self.kind,
            "entries": None,
            "bytes": None,
            "path": self.path,
            "table": self.table,
            "timeout": self.timeout,
            "sqlite_version": sqlite3.sqlite_version,
            "atomic_pop": "delete-returning" if self._has_returning else "transaction",
        }
        try:
            c = self._conn()
            try:
                entries, size = c.conn.execute(self._sql_stats, (self._clock(),)).fetchall()[0]
                info["journal_mode"] = c.conn.execute("PRAGMA journal_mode").fetchall()[0][0]
            except sqlite3.Error as exc:
                raise self._fault(exc, c, "read") from exc
        except StoreError as exc:
            info["error"] = str(exc)
            return info
        info["entries"] = entries
        info["bytes"] = size
        return info

    def __repr__(self) -> str:
        return f"<SQLiteStore {self.path!r} table={self.table}>"

    # -- connections -----------------------------------------------------------------------

    def _conn(self) -> _Conn:
        if self._closed:
            raise StoreError(f"SQLiteStore {self.path!r} is closed; create a new store")
        c: Optional[_Conn] = getattr(self._local, "c", None)
        if c is not None:
            if c.pid != os.getpid():
                # Inherited through fork: never use it, never close it (see _INHERITED).
                _INHERITED.append(c.conn)
                c = None
            elif self.recheck_interval >= 0:
                now = time.monotonic()
                if now - c.checked_at >= self.recheck_interval:
                    c.checked_at = now
                    if _file_id(self.path) != c.file_id:
                        log.info("SQLite file %s was deleted or replaced; reopening", self.path)
                        self._drop(c)
                        c = None
        if c is None:
            c = self._open()
        return c

    def _open(self) -> _Conn:
        self._local.c = None
        # Setting the file up (WAL, table, index) waits out other processes for up to
        # BUSY_PATIENCE seconds, not ``timeout``: only a file being created needs a lock
        # here (on a file already set up these statements take none), and at start every
        # worker of a server creates the same file at once. With the short timeout, under
        # load, they kept refusing each other for seconds (a CI run: three of four gunicorn
        # workers found the store "unreachable" and 13 of 100 handshakes did not resume).
        try:
            conn = sqlite3.connect(
                self.path,
                timeout=max(self.timeout, BUSY_PATIENCE),
                isolation_level=None,  # autocommit: each statement is its own transaction
                check_same_thread=False,  # only so close() may close it from another thread
            )
        except sqlite3.Error as exc:
            raise self._fault(exc, None, "open") from exc
        try:
            self._set_up(conn)
            conn.execute(f"PRAGMA busy_timeout={int(self.timeout * 1000)}").fetchall()
        except sqlite3.Error as exc:
            _close_quietly(conn)
            raise self._fault(exc, None, "open") from exc
        c = _Conn(conn, _file_id(self.path))
        pid = os.getpid()
        with self._owned_guard():
            keep = []
            for other in self._owned:
                if other.pid != pid:
                    _INHERITED.append(other.conn)
                elif other.thread.is_alive():
                    keep.append(other)
                else:  # its thread has exited: nobody will use it again
                    _close_quietly(other.conn)
            keep.append(c)
            self._owned = keep
        self._local.c = c
        return c

    def _set_up(self, conn: sqlite3.Connection) -> None:
        """WAL mode, synchronous, table and index. SQLite answers some lock conflicts at
        once, without its busy handler (one that could deadlock: a reader that wants to
        write while another waits to), so those are asked again until BUSY_PATIENCE."""
        def set_up() -> Any:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchall()[0][0]
            conn.execute(f"PRAGMA synchronous={self._synchronous}").fetchall()
            for statement in self._sql_schema:
                conn.execute(statement).fetchall()
            return mode

        mode = retry_while_busy(set_up)
        if str(mode).lower() != "wal":
            log.warning(
                "SQLite %s stays in journal_mode=%s (not WAL): readers will wait for writers",
                self.path, mode,
            )

    def _write(self, c: "_Conn", sql: str, args: tuple) -> List[Any]:
        """Run one writing statement, in turn with this process's other writers. A failure
        carries how long SQLite took to give up (``_fault`` tells a busy file that made it
        wait out ``timeout`` from one that was refused at once)."""
        def run() -> List[Any]:
            started = time.monotonic()
            try:
                return c.conn.execute(sql, args).fetchall()
            except sqlite3.Error as exc:
                exc.sesscache_waited = time.monotonic() - started  # type: ignore[attr-defined]
                raise
        return self._in_turn(run)

    def _in_turn(self, work: Callable[[], Any]) -> Any:
        pid = os.getpid()
        if self._write_turn_pid != pid:
            self._write_turn = threading.Lock()
            self._write_turn_pid = pid
        turn = self._write_turn
        if not turn.acquire(timeout=self.timeout):
            raise StoreError(
                f"SQLite database {self.path!r} is locked: this process's other threads kept "
                f"writing for longer than timeout={self.timeout}s; raise timeout, or spread the "
                "load over fewer threads")
        try:
            return work()
        finally:
            turn.release()

    def _owned_guard(self) -> threading.Lock:
        pid = os.getpid()
        if self._owned_pid != pid:
            # First use after a fork: another thread of the parent may have held the lock at
            # fork time, and it would stay locked forever in this child.
            self._owned_lock = threading.Lock()
            self._owned_pid = pid
        return self._owned_lock

    def _drop(self, c: _Conn) -> None:
        """Forget this thread's connection so the next call reopens the file."""
        if getattr(self._local, "c", None) is c:
            self._local.c = None
        with self._owned_guard():
            try:
                self._owned.remove(c)
            except ValueError:
                pass
        if c.pid == os.getpid():
            _close_quietly(c.conn)

    def _pop_in_transaction(self, conn: sqlite3.Connection, key: bytes) -> list:
        # Fallback for SQLite < 3.35: BEGIN IMMEDIATE takes the write lock before reading, so
        # no other connection can read-then-delete the same row in between.
        def take() -> list:
            rows = conn.execute(self._sql_select, (key,)).fetchall()
            if rows:
                conn.execute(self._sql_delete, (key,)).fetchall()
            return rows
        return _immediate_transaction(conn, take)

    def _delete_expired(self, c: _Conn, now: float) -> int:
        """Delete the rows expired at ``now``, in turn with the other writers; how many."""
        cur = self._in_turn(lambda: c.conn.execute(self._sql_purge, (now,)))
        cur.fetchall()
        return max(cur.rowcount, 0)

    def _purge(self, c: _Conn, now: float) -> None:
        try:
            purged = self._delete_expired(c, now)
            if purged:
                log.debug("purged %d expired sessions from %s", purged, self.path)
        except (sqlite3.Error, StoreError) as exc:
            # The write this purge followed succeeded; an expired row left behind is harmless.
            log.debug("purge of %s skipped: %s", self.path, exc)

    def _fault(self, exc: sqlite3.Error, c: Optional[_Conn], action: str) -> StoreError:
        """Map an sqlite3 error to StoreError; drop the connection unless it is still good."""
        text = str(exc)
        low = text.lower()
        name = getattr(exc, "sqlite_errorname", "") or ""
        where = f"SQLite database {self.path!r}"
        if isinstance(exc, sqlite3.DataError) or "too big" in low or name == "SQLITE_TOOBIG":
            return ValueTooLarge(f"{where} rejected the value: {text} (SQLite's SQLITE_MAX_LENGTH)")
        keep = False
        if "locked" in low or "busy" in low:
            keep = True
            waited = getattr(exc, "sesscache_waited", None)
            if waited is not None and waited < self.timeout / 2:
                # SQLite gave up without waiting out its busy timeout: not a long transaction
                # elsewhere, and raising timeout would not help.
                msg = (
                    f"{where} is locked: SQLite refused the {action} after {waited:.3f}s "
                    f"({name or text}), without waiting its timeout={self.timeout}s: no long "
                    "transaction elsewhere, and raising timeout would not help"
                )
            else:
                after = f" (gave up after {waited:.1f}s, {name or text})" if waited is not None else ""
                msg = (
                    f"{where} is locked: another connection held a write transaction for longer "
                    f"than timeout={self.timeout}s{after}; find the long transaction or raise timeout"
                )
        elif "readonly" in low or "read-only" in low:
            msg = (
                f"{where} is read-only ({text}): the file and its directory must be writable by "
                "this process (WAL creates -wal and -shm files next to it)"
            )
        elif "unable to open" in low:
            msg = (
                f"cannot open {where} ({text}): its directory is missing or not writable; "
                "create it or fix permissions (the store retries on the next call)"
            )
        elif "full" in low:
            msg = f"{where}: the disk is full ({text}); free space (the store retries on the next call)"
        elif "not a database" in low or "malformed" in low:
            msg = (
                f"{where} is not a usable SQLite file ({text}); move it away and let the store "
                "create a new one (sessions are disposable)"
            )
        elif "no such table" in low:
            msg = f"{where} lost its table ({text}); it is recreated on the next call"
        else:
            msg = f"{action} on {where} failed: {text}"
        if c is not None and not keep:
            self._drop(c)
        return StoreError(msg)

    # -- compare-and-set (session-ticket key rings; see sesscache.ticket_keys) ------------

    def compare_and_set(self, key: bytes, expected: Optional[bytes], value: bytes, ttl: float) -> bool:
        """Set ``key`` to ``value`` only if its live value is ``expected`` (None: absent or
        expired); True when written. Atomic across threads and processes: the read and the
        write are one ``BEGIN IMMEDIATE`` transaction, which holds the file's write lock."""
        key, value, ttl = checked_entry(key, value, ttl)
        c = self._conn()

        def swap() -> bool:
            now = self._clock()
            rows = c.conn.execute(self._sql_select, (key,)).fetchall()
            current = rows[0][0] if rows and rows[0][1] > now else None
            if current != expected:
                return False
            c.conn.execute(self._sql_set, (key, value, now + ttl)).fetchall()
            return True

        try:
            return self._in_turn(lambda: _immediate_transaction(c.conn, swap))
        except sqlite3.Error as exc:
            raise self._fault(exc, c, "write") from exc


def _file_id(path: str) -> Optional[tuple]:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _immediate_transaction(conn: sqlite3.Connection, work: Callable[[], Any]) -> Any:
    """``work()`` inside BEGIN IMMEDIATE ... COMMIT (the file's write lock is taken before
    anything is read), rolled back if it raises."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = work()
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
        raise
    return result


def _close_quietly(conn: sqlite3.Connection) -> None:
    try:
        conn.close()
    except Exception:  # pragma: no cover - closing a broken connection
        log.debug("closing an SQLite connection failed", exc_info=True)
