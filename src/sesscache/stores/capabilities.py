"""What a store can do beyond ``get``, ``set`` and ``delete``, said out loud.

A store is three methods (:class:`~sesscache.stores.base.Store`). Everything else is an
optional capability, each its own small protocol below, as pyca/cryptography gives each
cipher capability its own small class (``CipherContext``, ``AEADCipherContext``). A store
has a capability by what it is: a method of that name (``BaseStore``'s non-atomic ``pop``
does not count as an atomic pop). The cache and the wrappers ask once, when they are made
(:func:`capabilities_of`), and never probe afterwards; a wrapper
(:class:`~sesscache.stores.resilient.ResilientStore`) offers exactly the capabilities its
backend has (:func:`compose`), so ``hasattr(ResilientStore(store), "pop")`` answers up
front. (``PrefetchingStore``, the asyncio server's bridge, is no such wrapper: its ``pop``
answers from the sessions prefetched for a handshake, taken from its backend with the
backend's ``pop`` or :func:`take`, and its ``close`` releases its own threads and copies.)

========================  ===================================================================
capability                what it is for, and what the callers do without it
========================  ===================================================================
:class:`AtomicPop`        ``pop(key)``: take a value atomically (``single_use``). Without it
                          a value is taken with ``get`` then ``delete`` (:func:`take`): not
                          atomic, and the cache logs a warning saying so.
:class:`Closing`          ``close()``: release connections, threads, files for good.
                          Without it there is nothing to release.
:class:`BatchedWrites`    ``write_many(ops)``: several ``("set", key, value, ttl)`` /
                          ``("delete", key, None, 0)`` in one round trip; without it, one
                          call each.
:class:`WriteWaiting`     ``wait_for_write(key, issued, pop)``: after a miss, wait for the
                          write of a session issued moments ago; without it a miss is a
                          miss at once.
:class:`CompareAndSet`    ``compare_and_set(key, expected, value, ttl)``: what a shared
                          ticket-key ring needs (:class:`~sesscache.TicketKeys`).
:class:`CTables`          ``c_tables()``: the C tables (``sc_mem *``) the cache's C fast path
                          may read (and write) sessions in without entering Python.
:class:`KeyWatching`      ``wait_for_key(key, timeout)``: wait for a key to arrive in a local
                          copy (``RedisStore(local_replica=...)``).
:class:`LocalCopy`        ``forget_local(key)``: drop a key from a local copy at once.
:class:`HealthDomains`    ``health_domain(key)``: the node serving a key (a Redis Cluster),
                          so that one dead node pauses only its keys.
========================  ===================================================================
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable, Dict, NamedTuple, Optional, Protocol, Sequence, Tuple, Type, runtime_checkable

from ..errors import ConfigurationError

__all__ = [
    "AtomicPop", "Closing", "BatchedWrites", "WriteWaiting", "CompareAndSet", "CTables",
    "KeyWatching", "LocalCopy", "HealthDomains", "CTableView", "Capabilities",
    "capabilities_of", "supports", "check_store", "take", "get_then_delete", "compose", "evictions_of", "kind_of",
    "REQUIRED_METHODS",
]

#: The methods every store has; the rest are optional.
REQUIRED_METHODS = ("get", "set", "delete")


@runtime_checkable
class AtomicPop(Protocol):
    def pop(self, key: bytes) -> Optional[bytes]: ...


@runtime_checkable
class Closing(Protocol):
    def close(self) -> None: ...


@runtime_checkable
class BatchedWrites(Protocol):
    def write_many(self, ops: Sequence[Tuple[str, bytes, Optional[bytes], float]]) -> None: ...


@runtime_checkable
class WriteWaiting(Protocol):
    def wait_for_write(self, key: bytes, issued: float, pop: bool = False) -> Optional[bytes]: ...


@runtime_checkable
class CompareAndSet(Protocol):
    def compare_and_set(self, key: bytes, expected: Optional[bytes], value: bytes, ttl: float) -> bool: ...


class CTableView(NamedTuple):
    """The C tables a store hands the cache's C fast path (``csrc/fast_path.c``)."""

    table: Any  #: ``sc_mem *``: sessions C answers lookups from
    first: Any = None  #: ``sc_mem *`` read before ``table`` (prefetched sessions), or None
    #: True: C stores new sessions in ``table`` itself (a plain ``MemoryStore``); False:
    #: new sessions come to the store's ``set`` in Python.
    new_in_c: bool = False
    #: False: ``table`` holds some of the store's sessions (a replica): C hands its misses
    #: to the store's ``get``.
    complete: bool = True
    #: Called with each ``sc_fast *`` policy made over these tables (the store counts what C
    #: read from them, or has C journal new sessions for it).
    policy_made: Optional[Callable[[Any], None]] = None


@runtime_checkable
class CTables(Protocol):
    def c_tables(self) -> Optional[CTableView]: ...


@runtime_checkable
class KeyWatching(Protocol):
    def wait_for_key(self, key: bytes, timeout: float) -> Optional[bool]: ...


@runtime_checkable
class LocalCopy(Protocol):
    def forget_local(self, key: bytes) -> None: ...


@runtime_checkable
class HealthDomains(Protocol):
    def health_domain(self, key: bytes) -> Optional[str]: ...


def _method(store: Any, name: str) -> Optional[Callable[..., Any]]:
    method = getattr(store, name, None)
    return method if callable(method) else None


def _has_atomic_pop(store: Any) -> bool:
    from .base import BaseStore  # base imports this module

    pop = getattr(type(store), "pop", None)
    return _method(store, "pop") is not None and pop is not BaseStore.pop


@dataclass(frozen=True)
class Capabilities:
    """A store's optional methods, looked up once (None: the store lacks it)."""

    pop: Optional[Callable[..., Any]]  #: atomic pop only
    any_pop: Optional[Callable[..., Any]]  #: a pop, atomic or not (``BaseStore``'s default)
    close: Optional[Callable[..., Any]]
    write_many: Optional[Callable[..., Any]]
    wait_for_write: Optional[Callable[..., Any]]
    compare_and_set: Optional[Callable[..., Any]]
    c_tables: Optional[Callable[[], Optional[CTableView]]]
    wait_for_key: Optional[Callable[..., Any]]
    forget_local: Optional[Callable[..., Any]]
    health_domain: Optional[Callable[..., Any]]
    is_async: bool  #: ``get`` is a coroutine function (an asyncio store)

    def names(self) -> Tuple[str, ...]:
        """The capabilities present, by method name."""
        return tuple(name for name in _CAPABILITY_NAMES if getattr(self, name) is not None)


_CAPABILITY_NAMES = ("pop", "close", "write_many", "wait_for_write", "compare_and_set", "c_tables",
                     "wait_for_key", "forget_local", "health_domain")


_METHOD_OF = {AtomicPop: "pop", Closing: "close", BatchedWrites: "write_many",
              WriteWaiting: "wait_for_write", CompareAndSet: "compare_and_set", CTables: "c_tables",
              KeyWatching: "wait_for_key", LocalCopy: "forget_local", HealthDomains: "health_domain"}


def supports(store: Any, capability: type) -> bool:
    """True when ``store`` has ``capability`` (one of the protocols above; for
    :class:`AtomicPop`, a pop of its own, not ``BaseStore``'s get + delete)."""
    if capability is AtomicPop:
        return _has_atomic_pop(store)
    return _method(store, _METHOD_OF[capability]) is not None


def check_store(store: Any) -> Any:
    """Return ``store``, or raise ConfigurationError naming the methods it lacks."""
    missing = [name for name in REQUIRED_METHODS if _method(store, name) is None]
    if missing:
        raise ConfigurationError(
            f"{type(store).__name__} is not a store: it lacks {', '.join(missing)}. A store needs "
            "get, set and delete (the cache reads sessions with get, writes them with set, and "
            "a single_use cache without an atomic pop takes them with get and delete); pop, "
            "close and describe are optional (see sesscache.stores.base)")
    return store


def capabilities_of(store: Any) -> Capabilities:
    """The store's capabilities (after :func:`check_store`): asked once, when a cache or a
    wrapper is made."""
    check_store(store)
    return Capabilities(
        pop=store.pop if _has_atomic_pop(store) else None,
        any_pop=_method(store, "pop"),
        close=_method(store, "close"),
        write_many=_method(store, "write_many"),
        wait_for_write=_method(store, "wait_for_write"),
        compare_and_set=_method(store, "compare_and_set"),
        c_tables=_method(store, "c_tables"),
        wait_for_key=_method(store, "wait_for_key"),
        forget_local=_method(store, "forget_local"),
        health_domain=_method(store, "health_domain"),
        is_async=inspect.iscoroutinefunction(store.get),
    )


def take(store: Any, fallback_used: Optional[Callable[[], None]] = None,
         caps: Optional[Capabilities] = None) -> Callable[[bytes], Any]:
    """How to take a value out of ``store``: its own ``pop`` when it has one (``BaseStore``'s
    non-atomic default counts), else ``get`` then ``delete``, which is **not atomic**
    (``fallback_used()`` runs at each such take, to say so). A coroutine function for an
    asyncio store. The one get-then-delete of the library."""
    caps = caps if caps is not None else capabilities_of(store)
    if caps.any_pop is not None:
        return caps.any_pop
    if caps.is_async:
        get, delete = store.get, store.delete

        async def take_async(key: bytes) -> Optional[bytes]:
            if fallback_used is not None:
                fallback_used()
            value = await get(key)
            if value is not None:
                await delete(key)
            return value
        return take_async

    def take_sync(key: bytes) -> Optional[bytes]:
        if fallback_used is not None:
            fallback_used()
        return get_then_delete(store, key)
    return take_sync


def get_then_delete(store: Any, key: bytes) -> Optional[bytes]:
    """``store.get(key)``, then ``store.delete(key)`` when there was a value: a take that is
    **not atomic** (two callers at once may both get the value). ``BaseStore.pop``'s default."""
    value = store.get(key)
    if value is not None:
        store.delete(key)
    return value


def evictions_of(store: Any) -> int:
    """The store's eviction count (``evictions``, optional), else 0."""
    return int(getattr(store, "evictions", 0) or 0)


def describe_store(store: Any) -> Dict[str, Any]:
    """The store's ``describe()`` (optional), else its kind with unknown counts."""
    describe = _method(store, "describe")
    if describe is not None:
        return describe()
    return {"kind": kind_of(store), "entries": None, "bytes": None}


def kind_of(store: Any) -> str:
    """The store's ``kind`` (optional), else its class name."""
    return getattr(store, "kind", None) or type(store).__name__


def is_remote(store: Any) -> bool:
    """True when the store's class says ``remote = True`` (it answers over the network):
    :class:`~sesscache.SessionCache` then wraps it in a ``ResilientStore``."""
    return getattr(type(store), "remote", False) is True


class Lacking:
    """A capability the wrapper does not have because its backend does not: reading it raises
    AttributeError (so ``hasattr`` is False) saying why, though a base class defines it."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, owner: Optional[type] = None) -> Any:
        raise AttributeError(
            f"{owner.__name__ if owner else 'this store'} has no {self.name}: the store it wraps "
            f"has none (see sesscache.stores.capabilities)")


_COMPOSED: Dict[Tuple[type, Tuple[str, ...]], type] = {}


def compose(cls: type, backend_caps: Capabilities, offered: Dict[str, Tuple[Callable[..., Any], ...]],
            below: type = object) -> type:
    """The class of a wrapper over a backend with ``backend_caps``: ``cls``, with, for each
    capability name in ``offered``, its methods (``offered[name]``, named as the functions
    are) when the backend has it, and :class:`Lacking` in their place when it does not. So a
    wrapper has exactly the optional methods its backend has. A method ``cls`` or a subclass
    of yours defines above ``below`` (say ``BaseStore``, whose defaults do not count) is
    kept."""
    present = tuple(name for name in offered if getattr(backend_caps, name) is not None)
    composed = _COMPOSED.get((cls, present))
    if composed is not None:
        return composed
    own = set()
    for klass in cls.__mro__:
        if klass is below:
            break
        own.update(klass.__dict__)
    namespace: Dict[str, Any] = {"__module__": cls.__module__, "__qualname__": cls.__qualname__,
                                 "__doc__": cls.__doc__, "composed_from": cls}
    for name, functions in offered.items():
        for function in functions:
            if function.__name__ in own:
                continue
            namespace[function.__name__] = function if name in present else Lacking(function.__name__)
    composed = _COMPOSED[(cls, present)] = type(cls.__name__, (cls,), namespace)
    return composed
