"""One host's store at memory speed: a table in shared memory that every process maps.

:class:`SharedMemoryStore` keeps sessions in a file of ``/dev/shm`` (``sesscache-<uid>-NAME``)
that every process of the host naming it opens: forked workers (gunicorn), spawned ones
(uvicorn, Hypercorn), unrelated processes of the same user. A
:class:`~sesscache.SessionCache` over it stores and looks sessions up from libssl's
callbacks in C, without entering Python (the "C tables" capability, as
:class:`~sesscache.stores.MemoryStore`), as nginx's ``ssl_session_cache shared:`` does.

The table is fixed-size: ``size`` bytes in slots of ``max_entry_size`` bytes (key +
value) each; when a stripe is full the least recently used entry goes (counted as an
eviction). The C, and why it is crash-safe, is in ``csrc/shm_store.c``.
"""
from __future__ import annotations

import os
import re
import time
from typing import Any, Dict, Optional

from .._binding import ffi, lib
from ..errors import ConfigurationError, StoreError, ValueTooLarge
from .base import BaseStore, as_bytes, checked_entry, closed_error
from .capabilities import CTableView

__all__ = ["SharedMemoryStore", "DEFAULT_SIZE", "DEFAULT_MAX_ENTRY_SIZE", "segment_path",
           "parse_size", "shm_url_options"]

#: The size of a new segment when none is given (an existing one keeps its own).
DEFAULT_SIZE = int(lib.SC_SHM_DEFAULT_SIZE)
#: Key + value bytes one slot holds: a session of a server without client certificates
#: (its DER, about 200 to 500 bytes, with the envelope and the SNI name) fits.
DEFAULT_MAX_ENTRY_SIZE = int(lib.SC_SHM_DEFAULT_ENTRY_CAP)
DEFAULT_DIRECTORY = "/dev/shm"
#: Seconds a stripe's lock is waited for before the call counts a miss.
DEFAULT_LOCK_TIMEOUT = 0.05
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
_SIZE = re.compile(r"(\d+)([kmg]?)i?b?\Z", re.IGNORECASE)


_PTHREAD_FUNCTIONS = ("pthread_mutexattr_init", "pthread_mutexattr_destroy", "pthread_mutexattr_setpshared",
                      "pthread_mutexattr_setrobust", "pthread_mutex_trylock", "pthread_mutex_timedlock",
                      "pthread_mutex_consistent")
_pthread_ready = False


def _hand_pthread_to_c() -> None:
    """Give the C side the C library's robust-mutex functions (see csrc/shm_store.c: linked
    directly, they would need a glibc newer than the wheels promise)."""
    global _pthread_ready
    if _pthread_ready:
        return
    from .._binding import dynlink

    addresses = dynlink.c_library_functions(*_PTHREAD_FUNCTIONS)
    missing = [name for name, address in zip(_PTHREAD_FUNCTIONS, addresses) if not address]
    table = ffi.new("void *[]", [ffi.cast("void *", address) for address in addresses])
    if missing or not lib.sc_shm_use_pthread(table, len(addresses)):
        raise StoreError(f"robust process-shared mutexes are not available here ({', '.join(missing)} "
                         "missing from the C library): use SQLiteStore (sqlite:PATH) to share sessions "
                         "between processes")
    _pthread_ready = True


def parse_size(text: str) -> int:
    """``"64m"`` -> 67108864 (k, m, g: powers of 1024; a plain number is bytes)."""
    match = _SIZE.match(text.strip())
    if match is None:
        raise ConfigurationError(f"size {text!r} is not a size such as 64m, 512k or 1g")
    return int(match.group(1)) * {"": 1, "k": 2**10, "m": 2**20, "g": 2**30}[match.group(2).lower()]


def shm_url_options(url: str) -> "tuple[str, dict]":
    """``shm:NAME?size=64m&max_entry_size=2048`` -> ``("NAME", {"size": ..., ...})``."""
    name, _, query = url[len("shm:"):].partition("?")
    segment_path(name)  # ConfigurationError for a bad name
    options: Dict[str, Any] = {}
    for pair in filter(None, query.split("&")):
        key, _, value = pair.partition("=")
        if key in ("size", "max_entry_size"):
            options[key] = parse_size(value)
        elif key == "lock_timeout":
            try:
                options[key] = float(value)
            except ValueError:
                raise ConfigurationError(f"{url!r}: lock_timeout={value!r} is not seconds") from None
        else:
            raise ConfigurationError(f"{url!r}: unknown option {key!r} (shm:NAME takes size=, "
                                     "max_entry_size= and lock_timeout=)")
    return name, options


def segment_path(name: str, directory: str = DEFAULT_DIRECTORY) -> str:
    """The file of segment ``name`` for this user: ``/dev/shm/sesscache-<uid>-<name>``."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigurationError(
            f"shared-memory store name {name!r}: use 1 to 64 letters, digits, '.', '_' or '-' "
            "(it names a file in /dev/shm), such as shm:myapp")
    return os.path.join(directory, f"sesscache-{os.geteuid()}-{name}")


def _size_text(size: int) -> str:
    return f"{size // 2**20} MiB" if size % 2**20 == 0 else f"{size} bytes"


class SharedMemoryStore(BaseStore):
    """Sessions in a shared-memory segment every process of the host maps.

    Args:
        name: the segment's name (``shm:NAME``); every process naming it shares it.
        size: bytes of the segment, reserved in ``/dev/shm`` when it is made. Left out: the
            existing segment's size, or 32 MiB (about 20,000 sessions) for a new one. Given,
            a segment of another size in use is refused (one nobody uses is rebuilt).
        max_entry_size: key + value bytes a slot holds (left out: the segment's, or 1536 for
            a new one); a larger value raises
            :class:`~sesscache.errors.ValueTooLarge` (the cache then counts the session as
            too large and does not share it).
        lock_timeout: seconds a call waits for a stripe's lock (held by a stopped process,
            say) before answering a miss, counted in ``lock_timeouts``.
        directory: where the file is (``/dev/shm``).

    Unsealed, the segment holds sessions' master secrets in the clear (as nginx's does); it
    is created with mode 0600 and opened only when this user owns it.
    """

    kind = "shm"
    _closed = False

    def __init__(self, name: str, size: Optional[int] = None, *,
                 max_entry_size: Optional[int] = None,
                 lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
                 directory: str = DEFAULT_DIRECTORY) -> None:
        if isinstance(size, str):
            size = parse_size(size)
        if size is not None and (isinstance(size, bool) or not isinstance(size, int)
                                 or not 64 * 2**10 <= size <= 2**40):
            raise ConfigurationError(f"SharedMemoryStore size={size!r}: use 64 KiB to 1 TiB, such "
                                     "as size=64 * 2**20 (shm:NAME?size=64m)")
        if max_entry_size is not None and (isinstance(max_entry_size, bool) or not isinstance(max_entry_size, int)
                                           or not 64 <= max_entry_size <= 2**24):
            raise ConfigurationError(f"SharedMemoryStore max_entry_size={max_entry_size!r}: use 64 "
                                     "to 16 MiB bytes")
        if size is not None and lib.sc_shm_slots_for(size, max_entry_size or DEFAULT_MAX_ENTRY_SIZE) < 1:
            raise ConfigurationError(f"SharedMemoryStore size={size} has no room for one slot of "
                                     f"max_entry_size={max_entry_size or DEFAULT_MAX_ENTRY_SIZE}: raise size")
        if not (isinstance(lock_timeout, (int, float)) and 0 < lock_timeout <= 60):
            raise ConfigurationError(f"SharedMemoryStore lock_timeout={lock_timeout!r}: use a "
                                     "number of seconds above 0, at most 60")
        self.name = name
        self.path = segment_path(name, directory)
        self.size = size or DEFAULT_SIZE  # (what was opened replaces these below)
        self.max_entry_size = max_entry_size or DEFAULT_MAX_ENTRY_SIZE
        self.lock_timeout = float(lock_timeout)
        _hand_pthread_to_c()
        report = ffi.new("sc_shm_report *")
        shm = lib.sc_shm_open(self.path.encode(), size or 0, max_entry_size or 0, self.lock_timeout, report)
        if shm == ffi.NULL:
            raise self._open_error(report)
        self._shm = shm  # never freed: see csrc/shm_store.c
        info = self._info()  # what was opened (a size or max_entry_size left out: the segment's)
        self.size, self.max_entry_size = int(info.size), int(info.entry_cap)
        self._table = lib.sc_mem_over_shm(shm)
        if self._table == ffi.NULL:
            lib.sc_shm_close(shm)
            raise MemoryError("SharedMemoryStore could not allocate its table face")
        self._out = None

    def _open_error(self, report) -> Exception:
        code, errnum = report.code, report.errnum
        path = self.path
        wipe = f"remove it (rm {path}) once no process uses it"
        if code == lib.SC_SHM_E_OWNER:
            return StoreError(
                f"{path} belongs to uid {report.owner}, not to this user (uid {os.geteuid()}): "
                f"refused (someone else may have made it first to read your sessions). Use another "
                f"name, or have its owner {wipe}")
        if code == lib.SC_SHM_E_MODE:
            return StoreError(
                f"{path} is not a regular file of mode 0600 (mode {oct(report.mode)}): refused. "
                f"Check who made it, then {wipe}")
        if code == lib.SC_SHM_E_SPACE:
            return StoreError(
                f"no room for a {_size_text(self.size)} shared-memory store in "
                f"{os.path.dirname(path)} ({os.strerror(errnum)}; see df {os.path.dirname(path)}): "
                "use a smaller size (shm:NAME?size=16m) or give /dev/shm more room (a container's "
                "--shm-size, a tmpfs size= option)")
        if code == lib.SC_SHM_E_IN_USE:
            libc = ffi.string(report.libc).decode(errors="replace")
            return StoreError(
                f"{path} is in use by other processes with another layout (size "
                f"{_size_text(report.size)}, format {report.version}, max_entry_size "
                f"{report.entry_cap}, {libc}): open it with size={report.size} and "
                f"max_entry_size={report.entry_cap}, or stop every process using it (it is then "
                f"rebuilt on open), or use another name")
        if code == lib.SC_SHM_E_BUSY:
            return StoreError(
                f"{path} stayed unusable for 2 seconds (being made by another process that did "
                f"not finish, or a damaged header while other processes hold it open): stop the "
                f"processes using it or {wipe}")
        if code == lib.SC_SHM_E_MUTEX:
            return StoreError(
                f"robust process-shared mutexes are not available here ({os.strerror(errnum)}): "
                "use SQLiteStore (sqlite:PATH) to share sessions between processes")
        if code == lib.SC_SHM_E_OPEN:
            return StoreError(f"cannot open {path}: {os.strerror(errnum)} (a symbolic link is "
                              "refused; /dev/shm must exist: else use sqlite:PATH)")
        if code == lib.SC_SHM_E_MAP:
            return StoreError(f"cannot map {path}: {os.strerror(errnum)}")
        return ConfigurationError(f"SharedMemoryStore(size={self.size}, max_entry_size="
                                  f"{self.max_entry_size}): no layout fits; raise size")

    # -- the store ------------------------------------------------------------------------

    def get(self, key: bytes) -> Optional[bytes]:
        if self._closed:
            raise closed_error(self)
        if type(key) is not bytes:
            key = as_bytes(key, "key")
        return self._read(key, 0)

    def pop(self, key: bytes) -> Optional[bytes]:
        """Atomic get + delete: of several processes popping one key, one gets the value."""
        if self._closed:
            raise closed_error(self)
        if type(key) is not bytes:
            key = as_bytes(key, "key")
        return self._read(key, 1)

    def _read(self, key: bytes, take: int) -> Optional[bytes]:
        if len(key) > self.max_entry_size:
            return None
        out = ffi.new("unsigned char[]", self.max_entry_size)
        size = ffi.new("size_t *")
        try:
            found = lib.sc_shm_read(self._shm, key, len(key), time.monotonic(), take, out,
                                    self.max_entry_size, size)
            return ffi.buffer(out, size[0])[:] if found == 1 else None
        finally:
            ffi.memmove(out, b"\0" * self.max_entry_size, self.max_entry_size)

    def set(self, key: bytes, value: bytes, ttl: float) -> None:
        if self._closed:
            raise closed_error(self)
        key, value, ttl = checked_entry(key, value, ttl)
        done = lib.sc_shm_set(self._shm, key, len(key), value, len(value), ttl, time.monotonic())
        if done == -1:
            raise ValueTooLarge(
                f"entry of {len(key) + len(value)} bytes (key + value) exceeds SharedMemoryStore "
                f"max_entry_size={self.max_entry_size}; raise max_entry_size (every process "
                f"naming {self.name!r} must use the same) or lower the cache's value size limit")
        if done != 1 and not self._closed:
            raise StoreError(f"{self.path}: a lock was held longer than lock_timeout="
                             f"{self.lock_timeout}s (a stopped process?); the session was not "
                             "stored")

    def delete(self, key: bytes) -> None:
        if self._closed:
            raise closed_error(self)
        if type(key) is not bytes:
            key = as_bytes(key, "key")
        if len(key) <= self.max_entry_size and lib.sc_shm_delete(self._shm, key, len(key)) < 0:
            raise StoreError(f"{self.path}: a lock was held longer than lock_timeout="
                             f"{self.lock_timeout}s; the key was not deleted")

    def clear(self) -> None:
        """Wipe every entry of the segment (for every process using it)."""
        if self._closed:
            raise closed_error(self)
        lib.sc_shm_clear(self._shm, 0, time.monotonic())

    def purge_expired(self) -> int:
        """Wipe every expired entry now; returns how many."""
        return max(0, int(lib.sc_shm_clear(self._shm, 1, time.monotonic())))

    def close(self) -> None:
        """Detach this process (the segment and its sessions stay for the others; see
        :meth:`unlink`); later calls raise StoreError."""
        if self._closed:
            return
        self._closed = True
        lib.sc_mem_close_forever(self._table)
        lib.sc_shm_close(self._shm)

    def unlink(self) -> None:
        """Remove the segment's file: processes attached keep their mapping; the next open
        makes a new, empty one. (What ``rm /dev/shm/sesscache-<uid>-NAME`` does.)"""
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

    def c_tables(self) -> Optional[CTableView]:
        """The segment, for the cache's C fast path: lookups and new sessions in C (the
        "C tables" capability, see :mod:`sesscache.stores.capabilities`)."""
        if self._closed:
            return None
        return CTableView(table=self._table, new_in_c=True)

    # -- counters ---------------------------------------------------------------------------

    def _info(self):
        info = ffi.new("sc_shm_info *")
        lib.sc_shm_describe(self._shm, info)
        return info

    @property
    def evictions(self) -> int:
        """Live entries pushed out to make room, by every process of the segment."""
        return int(self._info().evictions)

    @property
    def expired(self) -> int:
        return int(self._info().expired)

    def describe(self) -> Dict[str, Any]:
        """The segment's counters (every process's): entries, bytes (keys + values), slots,
        hits, misses, stores, evictions, expired, lock timeouts, repairs after a process
        died holding a lock, torn entries dropped, rebuilds."""
        info = self._info()
        out: Dict[str, Any] = {"kind": self.kind, "name": self.name, "path": self.path}
        for field in ("entries", "bytes", "size", "slots", "stripes", "entry_cap", "hits", "misses",
                      "stores", "evictions", "expired", "lock_timeouts", "repairs", "torn",
                      "rebuilds"):
            out[field] = int(getattr(info, field))
        return out

    def __len__(self) -> int:
        return int(self._info().entries)

    def __repr__(self) -> str:
        return f"<SharedMemoryStore {self.name!r} size={self.size} path={self.path!r}>"
