"""The store contract: where serialized (and optionally sealed) sessions wait between handshakes.

A store maps ``bytes`` keys (up to ~100 bytes) to ``bytes`` values (up to tens of KiB) for a
limited time. The cache layer calls it from OpenSSL callbacks, possibly in many threads at once,
so every method is short, never blocks for longer than the store's ``timeout``, and reports
trouble only through these exceptions (all from :mod:`sesscache.errors`):

* :class:`~sesscache.errors.StoreError`: the store could not answer (unreachable, too slow,
  locked, read-only, full). The message names the cause and the fix; the original exception
  is chained as ``__cause__``. The cache treats it as a miss or a skipped write.
* :class:`~sesscache.errors.ValueTooLarge` (a ``StoreError`` and a ``ValueError``): this one
  value cannot be held; other values can.
* :class:`~sesscache.errors.ConfigurationError` (a ``ValueError``): a bad argument, e.g. a
  ``ttl`` that is not a finite number of seconds in ``(0, MAX_TTL]``. Never a negative TTL
  silently wrapped into a huge one.
* ``TypeError``: a key or value that is not bytes-like.

Every store guarantees: a value is never returned once its ``ttl`` has passed, whatever the
backend's own expiry granularity; it may disappear earlier (eviction, restart).

A store is three methods, ``get``, ``set`` and ``delete`` (the :class:`Store` protocol); the
cache checks for them when it is made (:func:`check_store`). Everything else is optional, and
the cache says what it does without it:

* ``pop(key)``: take a value atomically (``single_use`` uses it). Without it, or with
  :class:`BaseStore`'s default, a ``single_use`` cache takes a session with ``get`` then
  ``delete``, which is **not atomic** (two handshakes at the same moment may both resume
  it), and logs a warning saying so when it is made.
* ``close()``: release the store's resources **for good** (connections, threads, files;
  ``MemoryStore`` wipes its entries). Calling it again does nothing; any other call on a
  closed store raises :class:`~sesscache.errors.StoreError` saying it was closed (the
  cache counts that as a store error, a full handshake). ``SessionCache.close()`` calls it
  when the store has it. Stores are context managers (``with SQLiteStore(path) as store:``).
* ``describe()``: plain data for status pages (``kind``, ``entries``, ``bytes``).
* ``evictions``: a count the cache adds to its ``stats``.
* ``write_many(ops)``: several ``("set", key, value, ttl)`` / ``("delete", key, None, 0)``
  in one call; ``ResilientStore``'s background writer sends what queued up that way (one
  round trip). Without it, one call each.
* ``wait_for_write(key, issued, pop)``: after a miss, wait for the write of a session
  issued at ``issued`` (seconds since the epoch) that may still be on its way;
  ``ResilientStore`` has it, and the cache calls it for session ids that carry their issue
  time (``sesscache.session_ids``). Without it, a miss is a miss at once.
* ``compare_and_set``, ``c_tables`` and the rest: see :mod:`sesscache.stores.capabilities`,
  which names each optional capability as a small protocol. The cache and the wrappers ask
  a store which it has once, when they are made; a wrapper (``ResilientStore``) has exactly
  the optional methods of the store it wraps.

Writing your own store takes ten lines: match the :class:`Store` protocol, or subclass
:class:`BaseStore` for the optional parts, and implement ``get``, ``set`` and ``delete``::

    import time
    from sesscache.stores import BaseStore, check_ttl

    class DictStore(BaseStore):
        kind = "dict"

        def __init__(self):
            self._d = {}

        def get(self, key):
            value, expires = self._d.get(key, (None, 0.0))
            return value if time.monotonic() < expires else None

        def set(self, key, value, ttl):
            self._d[key] = (value, time.monotonic() + check_ttl(ttl))

        def delete(self, key):
            self._d.pop(key, None)

``BaseStore`` then supplies ``pop`` (get + delete, *not* atomic), ``close`` (no-op),
``describe`` and ``with`` support. Override ``pop`` when the backend can take a value atomically:
TLS 1.3 sessions are meant to be used once, and an atomic pop is what stops two handshakes
from resuming the same session.
"""
from __future__ import annotations

import math
import numbers
import sqlite3
import time
from typing import Any, Callable, Dict, Optional, Protocol, Tuple, TypeVar, runtime_checkable

from ..errors import ConfigurationError, StoreError
from .capabilities import REQUIRED_METHODS, capabilities_of, check_store, get_then_delete  # noqa: F401

__all__ = ["Store", "AsyncStore", "BaseStore", "CompareAndSetStore", "check_ttl", "check_store", "MAX_TTL"]

#: Longest accepted ttl, in seconds (one year). TLS 1.3 caps session lifetime at 7 days
#: (RFC 8446, 4.6.1); anything far beyond that is a unit mistake (ms for s), not a policy.
MAX_TTL = 365 * 24 * 3600.0


@runtime_checkable
class Store(Protocol):
    """What the cache needs from a store: three methods. Keys and values are ``bytes``;
    ``ttl`` is seconds > 0. ``pop``, ``close``, ``describe`` and ``evictions`` are
    optional (see the module docstring for what the cache does without them)."""

    def get(self, key: bytes) -> Optional[bytes]: ...

    def set(self, key: bytes, value: bytes, ttl: float) -> None: ...

    def delete(self, key: bytes) -> None: ...


def has_atomic_pop(store: Any) -> bool:
    """True when ``store`` has a ``pop`` of its own (BaseStore's is get + delete)."""
    return capabilities_of(store).pop is not None


def closed_error(store: Any) -> StoreError:
    """What every call on a closed store raises."""
    return StoreError(f"this {type(store).__name__} was closed, and close() is for good; "
                      "make a new store")


@runtime_checkable
class AsyncStore(Protocol):
    """The same contract with coroutines, for asyncio servers (see ``AsyncRedisStore``):
    three methods; ``pop``, ``close`` and ``describe`` optional, as for :class:`Store`."""

    async def get(self, key: bytes) -> Optional[bytes]: ...

    async def set(self, key: bytes, value: bytes, ttl: float) -> None: ...

    async def delete(self, key: bytes) -> None: ...


#: How long start-up work waits out a busy store (a SQLite file another process of the same
#: server is writing: every worker opens the same file at the same moment; a store that
#: answers later than its timeout while every worker connects at once).
BUSY_PATIENCE = 2.0


def store_busy(exc: BaseException) -> bool:
    """True when ``exc`` (or what it was raised from) says the store works but cannot
    answer right now: a SQLite file locked by another process's write, or a store that
    answered later than its timeout (a loaded host: at start every worker connects at
    once). Calls on the handshake path treat that as a miss; start-up work waits it out
    (BUSY_PATIENCE) rather than call the store unreachable. A refused connection or a
    refused password is not busy: those are told at once."""
    seen: Optional[BaseException] = exc
    while seen is not None:
        # redis-py's TimeoutError is not the builtin one (pymemcache raises socket.timeout)
        if isinstance(seen, TimeoutError) or type(seen).__name__ == "TimeoutError":
            return True
        if isinstance(seen, sqlite3.OperationalError):
            text = str(seen).lower()
            return "locked" in text or "busy" in text
        seen = seen.__cause__ or seen.__context__
    return False


_Result = TypeVar("_Result")


def retry_while_busy(work: Callable[[], _Result], patience: float = BUSY_PATIENCE) -> _Result:
    """``work()``, called again while it raises what :func:`store_busy` calls busy, after
    pauses that double from 5 ms to 0.2 s, for at most ``patience`` seconds; then (or at
    once, for any other exception) the exception is raised. For start-up work only: on the
    handshake path a busy store is a miss, never a wait."""
    deadline = time.monotonic() + patience
    pause = 0.005
    while True:
        try:
            return work()
        except Exception as exc:
            if not (store_busy(exc) and time.monotonic() + pause < deadline):
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.2)


def check_ttl(ttl: float) -> float:
    """Return ``ttl`` as a float, or raise ConfigurationError if it is not in ``(0, MAX_TTL]``.

    Rejects NaN, infinities, zero, negatives and non-numbers (bools included): a store must
    never turn a bad lifetime into "forever".
    """
    if type(ttl) is float or type(ttl) is int:  # fast path; bool is not int here
        if 0 < ttl <= MAX_TTL:
            return float(ttl)
    elif isinstance(ttl, numbers.Real) and not isinstance(ttl, bool):
        value = float(ttl)
        if 0 < value <= MAX_TTL:
            return value
    else:
        raise ConfigurationError(
            f"ttl must be a number of seconds, got {type(ttl).__name__} {ttl!r}"
        )
    if isinstance(ttl, float) and math.isnan(ttl):
        raise ConfigurationError("ttl is NaN; pass the session lifetime in seconds, > 0")
    raise ConfigurationError(
        f"ttl must be > 0 and <= {MAX_TTL:.0f} seconds (one year), got {ttl!r}; "
        "pass the session lifetime in seconds (TLS 1.3 allows at most 7 days)"
    )


def as_bytes(data: Any, what: str) -> bytes:
    """``bytes(data)`` for bytes-like ``data``; TypeError naming ``what`` otherwise."""
    if type(data) is bytes:
        return data
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    raise TypeError(f"store {what}s are bytes, got {type(data).__name__}")


def checked_entry(key: Any, value: Any, ttl: Any) -> Tuple[bytes, bytes, float]:
    """``set``'s arguments as ``(bytes, bytes, float)``: TypeError or ConfigurationError as
    :func:`as_bytes` and :func:`check_ttl` raise them. The common case (bytes, bytes, a float
    in range) costs three type checks."""
    if type(key) is not bytes:
        key = as_bytes(key, "key")
    if type(value) is not bytes:
        value = as_bytes(value, "value")
    if not (type(ttl) is float and 0.0 < ttl <= MAX_TTL):
        ttl = check_ttl(ttl)
    return key, value, ttl


class BaseStore:
    """Defaults for the parts of :class:`Store` most stores do not need to customise.

    Subclasses implement ``get``, ``set`` and ``delete`` and may override the rest.
    """

    #: Short name shown by :meth:`describe`.
    kind = "custom"

    def get(self, key: bytes) -> Optional[bytes]:  # pragma: no cover - abstract
        raise NotImplementedError

    def set(self, key: bytes, value: bytes, ttl: float) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def delete(self, key: bytes) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def pop(self, key: bytes) -> Optional[bytes]:
        """Return the value and remove it.

        This default is ``get`` then ``delete``: **not atomic**. Two threads or processes
        popping the same key at once may both get the value. Stores that can do better
        (all the bundled ones) override it.
        """
        return get_then_delete(self, key)

    def close(self) -> None:
        """Release connections, threads or files for good (idempotent). The default has
        nothing to release."""

    def describe(self) -> Dict[str, Any]:
        """What the store holds, without secrets: ``kind``, ``entries`` and ``bytes`` (None if unknown)."""
        return {"kind": self.kind, "entries": None, "bytes": None}

    def __enter__(self):
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__}>"

    # -- compare-and-set (session-ticket key rings; see sesscache.ticket_keys) ------------

    def compare_and_set(self, key: bytes, expected: Optional[bytes], value: bytes, ttl: float) -> bool:
        """Set ``key`` to ``value`` only if its live value is ``expected`` (None: absent or
        expired); True when written. Used to coordinate rare writes between processes,
        such as one ticket key rotation for a whole fleet.

        This default is ``get``, compare, ``set``: **not atomic** across processes. The
        bundled stores override it with an atomic version; so should yours if several
        processes share it (``TicketKeys`` then rotates once per fleet, not once per process).
        """
        if self.get(key) != expected:
            return False
        self.set(key, value, ttl)
        return True


# -- what a shared ticket key ring needs (sesscache.ticket_keys) ---------------------------

@runtime_checkable
class CompareAndSetStore(Store, Protocol):
    """A :class:`Store` that can also replace a value only if it is still the one read:
    what :class:`~sesscache.TicketKeys` needs so that a fleet rotates its keys once. Every
    bundled store has it (``BaseStore`` has a non-atomic default)."""

    def compare_and_set(self, key: bytes, expected: Optional[bytes], value: bytes, ttl: float) -> bool: ...
