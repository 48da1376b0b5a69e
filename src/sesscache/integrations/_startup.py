"""At a server's start: is the store usable, and what the server does when it is not.

Two kinds of problem, told apart because they call for opposite answers:

* **misconfigured**: the store can never work as configured (a malformed URL, a SQLite
  directory that does not exist or that the workers' user cannot write, a Redis password or
  ACL user that is refused, a command the ACL user may not run, a TLS certificate the client
  does not trust). Restarting will not help: by default (``on_store_error="refuse"``) the
  server stops at start, as it does for a missing certificate.
* **unreachable**: the store may come back (nothing listening, a timeout, a locked file, a
  full disk). The server starts, says so at once, and resumes from the store once it answers
  (the cache logs failing lookups once per burst, with counts).

``on_store_error="warn"`` starts in both cases, with the same log lines.

A master process (gunicorn's arbiter, uvicorn's and Hypercorn's parents) may run as another
user than its workers, and must keep no connection and create no file the workers inherit:
:func:`master_problem` looks only at the URL and at the SQLite directory's permissions for the
workers' user. Each worker then calls :func:`probe_store` after it dropped privileges: a
write, a read and a delete of one short-lived key, for real.
"""
from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from typing import Any, Iterable, Optional

from ..errors import ConfigurationError
from ..stores.base import retry_while_busy
from ..stores.urls import check_store_url, redacted_store_url

REFUSE = "refuse"
WARN = "warn"
ON_STORE_ERROR = (REFUSE, WARN)

MISCONFIGURED = "misconfigured"
UNREACHABLE = "unreachable"

#: The exit status of a worker that refuses to start: gunicorn's WORKER_BOOT_ERROR and
#: uvicorn's STARTUP_FAILURE (both halt the whole server rather than respawn the worker).
BOOT_ERROR_EXIT = 3


def check_on_store_error(value: str) -> str:
    if value not in ON_STORE_ERROR:
        raise ConfigurationError(f"on_store_error is 'refuse' (a store that cannot work stops the server at "
                                 f"start; the default) or 'warn' (start anyway and log), got {value!r}")
    return value


@dataclass(frozen=True)
class StoreProblem:
    """Why the store at ``store`` (redacted) cannot serve sessions, and whether it may come back."""

    kind: str  #: MISCONFIGURED or UNREACHABLE
    store: str  #: the store URL, password and query string redacted
    cause: str  #: what is wrong and what to do

    def refuses(self, on_store_error: str) -> bool:
        """Must the server stop at start?"""
        return self.kind == MISCONFIGURED and on_store_error == REFUSE

    def message(self, on_store_error: str, who: str = "") -> str:
        who = f" ({who})" if who else ""
        if self.refuses(on_store_error):
            return (f"the session store {self.store} cannot work{who}: {self.cause}. The server does not "
                    f"start (on_store_error='refuse'); fix the store, or pass on_store_error='warn' to "
                    f"start without resuming sessions from it")
        if self.kind == MISCONFIGURED:
            return (f"the session store {self.store} cannot work{who}: {self.cause}. Starting anyway "
                    f"(on_store_error='warn'): no session resumes from the store until this is fixed")
        return (f"the session store {self.store} is unreachable{who}: {self.cause}. Starting anyway: "
                f"handshakes are full ones until it answers, and failed lookups are logged once per burst")


# --- in the master: no connection, no file ------------------------------------------------

def master_problem(store_url: str, *, uid: Optional[int] = None, gid: Optional[int] = None,
                   groups: Optional[Iterable[int]] = None) -> Optional[StoreProblem]:
    """What can be told about ``store_url`` without connecting or creating anything, for the
    user ``uid`` (default: this process's) with group ``gid`` and supplementary ``groups``."""
    store = redacted_store_url(store_url) if isinstance(store_url, str) else repr(store_url)
    try:
        check_store_url(store_url)
    except ConfigurationError as exc:
        return StoreProblem(MISCONFIGURED, store, str(exc))
    if not store_url.strip().startswith("sqlite:"):
        return None  # nothing to look at before connecting
    from ..stores.urls import store_from_url

    path = os.path.abspath(store_from_url(store_url).path)  # SQLiteStore opens nothing until used
    if uid is None:
        uid = os.geteuid()
    if gid is None:
        gid = os.getegid()
    group_set = set(os.getgroups() if groups is None else groups) | {gid}
    cause = _sqlite_access(path, uid, group_set)
    return StoreProblem(MISCONFIGURED, store, cause) if cause else None


def _user(uid: int) -> str:
    try:
        import pwd

        return f"user {pwd.getpwuid(uid).pw_name} (uid {uid})"
    except (ImportError, KeyError):
        return f"uid {uid}"


def _allowed(st: os.stat_result, uid: int, groups: set, want: int) -> bool:
    """Do the mode bits give ``uid`` the ``want`` bits (4 read, 2 write, 1 search)?"""
    if uid == 0:
        return True  # root (ACLs and read-only mounts aside, which the workers' probe finds)
    if st.st_uid == uid:
        bits = st.st_mode >> 6
    elif st.st_gid in groups:
        bits = st.st_mode >> 3
    else:
        bits = st.st_mode
    return bits & want == want


def _sqlite_access(path: str, uid: int, groups: set) -> Optional[str]:
    folder = os.path.dirname(path)
    who = _user(uid)
    # Every directory above must be searchable, the last one writable too (SQLite creates
    # the file, and in WAL mode -wal and -shm files beside it).
    parts, walk = [], folder
    while True:
        parts.append(walk)
        parent = os.path.dirname(walk)
        if parent == walk:
            break
        walk = parent
    for directory in reversed(parts):
        try:
            st = os.stat(directory)
        except FileNotFoundError:
            return (f"the directory {directory} does not exist: create it (writable by {who}, who runs "
                    f"the workers) or point the URL elsewhere")
        except OSError as exc:
            return f"cannot look at {directory} ({exc.strerror})"
        if not os.path.isdir(directory):
            return f"{directory} is not a directory"
        if not _allowed(st, uid, groups, 1):
            return f"{who}, who runs the workers, cannot enter {directory} (mode {st.st_mode & 0o777:o})"
    st = os.stat(folder)
    if not _allowed(st, uid, groups, 3):
        return (f"{who}, who runs the workers, cannot create files in {folder} (mode {st.st_mode & 0o777:o}, "
                f"owner uid {st.st_uid}): SQLite writes the database and its -wal and -shm files there; "
                f"chown or chmod it")
    if os.path.exists(path):
        st = os.stat(path)
        if not _allowed(st, uid, groups, 6):
            return (f"{who}, who runs the workers, cannot read and write {path} (mode {st.st_mode & 0o777:o}, "
                    f"owner uid {st.st_uid}); chown or chmod it")
    return None


# --- in each worker, after it dropped privileges: for real -------------------------------

def probe_store(store: Any, store_url: str) -> Optional[StoreProblem]:
    """Write, read and delete one short-lived key in ``store`` (a store as opened from
    ``store_url``); None when all three worked. A busy store is asked again for up to
    BUSY_PATIENCE seconds: at start that is the server's other workers opening the same
    file, not a store that cannot work (with the store's own short timeout, 0.05 s for
    SQLite, the workers' probes collided and each said the store was unreachable)."""
    key = b"sesscache-probe:%d:%s" % (os.getpid(), os.urandom(6).hex().encode())

    def round_trip() -> None:
        store.set(key, b"probe", 10.0)
        store.get(key)
        store.delete(key)

    try:
        retry_while_busy(round_trip)
    except Exception as exc:
        return StoreProblem(classify(exc), redacted_store_url(store_url), f"{type(exc).__name__}: {exc}")
    return None



_MISCONFIGURED_WORDS = ("WRONGPASS", "NOAUTH", "NOPERM", "invalid password", "invalid username",
                        "AUTH failed", "CERTIFICATE_VERIFY_FAILED", "certificate verify failed",
                        "unable to open", "readonly", "read-only", "attempt to write a readonly",
                        "not a database", "Permission denied", "READONLY")


def classify(exc: BaseException) -> str:
    """MISCONFIGURED for a fault that retrying will not fix, else UNREACHABLE."""
    seen = exc
    while seen is not None:
        if isinstance(seen, ConfigurationError) or isinstance(seen, PermissionError):
            return MISCONFIGURED
        name = type(seen).__name__
        if name in ("AuthenticationError", "AuthenticationWrongNumberOfArgsError", "NoPermissionError",
                    "ReadOnlyError"):
            return MISCONFIGURED
        if isinstance(seen, sqlite3.Error):
            text = str(seen).lower()
            if "locked" in text or "busy" in text or "full" in text:
                return UNREACHABLE
            return MISCONFIGURED
        text = str(seen)
        if any(word in text for word in _MISCONFIGURED_WORDS):
            return MISCONFIGURED
        seen = seen.__cause__ or seen.__context__
    return UNREACHABLE
