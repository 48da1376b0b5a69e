"""Pluggable session stores. See :mod:`sesscache.stores.base` for the contract.

``MemoryStore`` and ``SQLiteStore`` need only the standard library. ``RedisStore``,
``AsyncRedisStore`` (``pip install 'sesscache[redis]'``) and ``MemcachedStore``
(``pip install 'sesscache[memcached]'``) import their client library when first named here.
"""
from __future__ import annotations

from typing import Any

from .base import MAX_TTL, AsyncStore, BaseStore, CompareAndSetStore, Store, check_ttl
from .memory import MemoryStore
from .resilient import ResilienceStats, ResilientStore
from .shm import SharedMemoryStore
from .sqlite import SQLiteStore
from .urls import store_from_url

__all__ = [
    "Store",
    "AsyncStore",
    "BaseStore",
    "CompareAndSetStore",
    "check_ttl",
    "MAX_TTL",
    "MemoryStore",
    "ResilientStore",
    "ResilienceStats",
    "SQLiteStore",
    "SharedMemoryStore",
    "RedisStore",
    "AsyncRedisStore",
    "MemcachedStore",
    "store_from_url",
]

_LAZY = {
    "RedisStore": "redis",
    "AsyncRedisStore": "redis",
    "MemcachedStore": "memcached",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
