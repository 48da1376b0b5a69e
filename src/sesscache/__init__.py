"""sesscache: an external TLS session cache over libssl's own session callbacks.

Works on pyOpenSSL contexts (including the OpenSSL a ``cryptography`` wheel bundles) and
on stdlib ``ssl.SSLContext`` objects.
"""
from __future__ import annotations

import logging
from typing import Any

from ._binding.copies import LibsslInstance
from .callbacks import (
    get_get_session_callback,
    get_new_session_callback,
    get_remove_session_callback,
    set_get_session_callback,
    set_new_session_callback,
    set_remove_session_callback,
)
from .contexts import (
    SESS_CACHE_BOTH,
    SESS_CACHE_CLIENT,
    SESS_CACHE_NO_AUTO_CLEAR,
    SESS_CACHE_NO_INTERNAL,
    SESS_CACHE_NO_INTERNAL_LOOKUP,
    SESS_CACHE_NO_INTERNAL_STORE,
    SESS_CACHE_OFF,
    SESS_CACHE_SERVER,
    flush_sessions,
    get_session_cache_mode,
    internal_cache_size,
    live_session_count,
    remove_session,
    session_reused,
    set_num_tickets,
    set_session_cache_mode,
    set_session_id_context,
)
from .errors import (
    BindingError,
    CallbackError,
    ConfigurationError,
    SealError,
    SesscacheError,
    SessionError,
    StoreError,
    UnsupportedContext,
    ValueTooLarge,
)
from .cache import CacheStats, SessionCache
from .client_cache import ClientSessionCache
from .session import Session
from .stores import MemoryStore, SharedMemoryStore, SQLiteStore, Store
from .stores.urls import store_from_url
from .ticket_keys import TicketKeys, TicketKeyStats
from .stores.resilient import ResilientStore  # network stores: writes behind, breaker
from .errors import StorePaused

__version__ = "0.1.0"

# A library logs, the application decides where it goes: without a handler of its own,
# Python's last-resort handler would print warnings to stderr.
logging.getLogger(__name__).addHandler(logging.NullHandler())


def __getattr__(name: str) -> Any:
    # RedisStore and MemcachedStore import their client libraries only when asked for.
    if name in ("RedisStore", "AsyncRedisStore", "MemcachedStore"):
        from . import stores

        return getattr(stores, name)
    raise AttributeError(f"module 'sesscache' has no attribute {name!r}")


def libssl_info(context: Any = None) -> LibsslInstance:
    """The copy of libssl sesscache uses for ``context`` (by default, the stdlib ``ssl``
    module's: sesscache links no OpenSSL of its own).

    The result says where the library lives, its version string as OpenSSL reports it,
    whether it is a shared library found through the dynamic linker ("dynamic") or the
    copy a cryptography wheel bundles ("bundled"), and which checks verified its
    function table.
    """
    from ._binding.find_context import bind_context
    from ._binding.copies import stdlib_instance

    if context is None:
        return stdlib_instance()
    return bind_context(context).instance


__all__ = [
    "AsyncRedisStore", "CacheStats", "ClientSessionCache", "MemcachedStore", "MemoryStore", "RedisStore", "SharedMemoryStore", "SQLiteStore",
    "SessionCache", "Store", "TicketKeys", "TicketKeyStats",
    "SESS_CACHE_BOTH", "SESS_CACHE_CLIENT", "SESS_CACHE_NO_AUTO_CLEAR", "SESS_CACHE_NO_INTERNAL",
    "SESS_CACHE_NO_INTERNAL_LOOKUP", "SESS_CACHE_NO_INTERNAL_STORE", "SESS_CACHE_OFF",
    "SESS_CACHE_SERVER", "flush_sessions", "get_session_cache_mode", "internal_cache_size",
    "live_session_count", "remove_session", "session_reused", "set_num_tickets", "set_session_cache_mode", "set_session_id_context",
    "BindingError", "CallbackError", "ConfigurationError", "LibsslInstance", "SealError",
    "Session", "SesscacheError", "SessionError", "StoreError", "UnsupportedContext",
    "ValueTooLarge", "get_get_session_callback", "get_new_session_callback",
    "get_remove_session_callback", "libssl_info", "set_get_session_callback",
    "set_new_session_callback", "set_remove_session_callback",
    "store_from_url",
]
__all__ += ["ResilientStore", "StorePaused"]
