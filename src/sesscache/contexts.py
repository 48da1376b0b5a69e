"""Session-cache settings of a TLS context that Python's own APIs do not expose.

The stdlib ``ssl.SSLContext`` has no way to set OpenSSL's session cache mode or session
id context, and neither stdlib nor pyOpenSSL can look into the internal cache. These
work on both (and on ``sesscache.testing`` contexts), through the libssl copy that owns
the context.
"""
from __future__ import annotations

import logging
import time as _time
from typing import Any, Optional, Union

from ._binding import ffi, lib
from ._binding.find_context import bind_context
from ._binding.hooks import check_mutable
from ._binding.copies import LibsslInstance
from .errors import ConfigurationError
from .session import Session, session_pointer

#: Cache modes (``SSL_CTX_set_session_cache_mode``): combine with ``|``.
SESS_CACHE_OFF = lib.SSL_SESS_CACHE_OFF
SESS_CACHE_CLIENT = lib.SSL_SESS_CACHE_CLIENT
SESS_CACHE_SERVER = lib.SSL_SESS_CACHE_SERVER
SESS_CACHE_BOTH = lib.SSL_SESS_CACHE_BOTH
SESS_CACHE_NO_AUTO_CLEAR = lib.SSL_SESS_CACHE_NO_AUTO_CLEAR
SESS_CACHE_NO_INTERNAL_LOOKUP = lib.SSL_SESS_CACHE_NO_INTERNAL_LOOKUP
SESS_CACHE_NO_INTERNAL_STORE = lib.SSL_SESS_CACHE_NO_INTERNAL_STORE
SESS_CACHE_NO_INTERNAL = lib.SSL_SESS_CACHE_NO_INTERNAL

MAX_SESSION_ID_CONTEXT = lib.SSL_MAX_SID_CTX_LENGTH  # 32 bytes

_log = logging.getLogger(__name__)


def _mutable(context: Any):
    bound = bind_context(context)
    check_mutable(bound)
    return bound


def set_session_cache_mode(context: Any, mode: int) -> int:
    """Set OpenSSL's session cache mode; returns the previous mode."""
    bound = _mutable(context)
    return int(bound.instance.api.SSL_CTX_ctrl(bound.pointer, lib.SSL_CTRL_SET_SESS_CACHE_MODE, mode, ffi.NULL))


def get_session_cache_mode(context: Any) -> int:
    bound = bind_context(context)
    return int(bound.instance.api.SSL_CTX_ctrl(bound.pointer, lib.SSL_CTRL_GET_SESS_CACHE_MODE, 0, ffi.NULL))


def set_session_id_context(context: Any, session_id_context: bytes) -> None:
    """Set the server's session id context: sessions only resume where it matches.

    Every server process that shares a cache must use the same value; at most 32 bytes.
    A context a :class:`SessionCache` serves gets its value from ``attach()`` (which binds
    each connection's to the server name and certificate too): changing it here is refused.
    """
    bound = bind_context(context)
    if lib.sc_pin_of(bound.instance.slot, bound.pointer) == lib.SC_PIN_BOUND:
        raise ConfigurationError(
            "a SessionCache serves this context and sets the session id context of each of "
            "its connections (the one given to attach(), bound to the server name and the "
            "certificate); pass session_id_context= to attach() instead, or detach the cache "
            "first")
    write_session_id_context(bound, session_id_context)  # resolved once, above


def write_session_id_context(context: Any, session_id_context: bytes) -> None:
    """:func:`set_session_id_context` without its refusal of a context a cache serves.
    (:meth:`SessionCache.attach` sets its own in C, csrc/attach.c, with the same checks.)"""
    if not isinstance(session_id_context, bytes):
        raise TypeError("the session id context must be bytes")
    if not 0 < len(session_id_context) <= MAX_SESSION_ID_CONTEXT:
        raise ConfigurationError(
            f"a session id context is 1 to {MAX_SESSION_ID_CONTEXT} bytes, got "
            f"{len(session_id_context)}; use a short name for the service (e.g. b'myapp:443') "
            "or a hash of a longer one")
    bound = _mutable(context)
    if bound.instance.api.SSL_CTX_set_session_id_context(
            bound.pointer, session_id_context, len(session_id_context)) != 1:
        raise ConfigurationError("OpenSSL refused the session id context")
    if bound.kind == "stdlib":
        # CPython 3.13+ sets b"Python\0" on every server-side connection, overriding the
        # context's value (python/cpython#105293); a ClientHello hook sets ours back.
        if not lib.sc_pin_session_id_context(bound.instance.slot, bound.pointer,
                                             session_id_context, len(session_id_context)):
            _log.warning("could not pin the session id context on this ssl.SSLContext (%s has "
                         "no ClientHello callback); on CPython 3.13 and later its connections use "
                         "CPython's own b'Python' instead", bound.instance.describe())


def set_num_tickets(context: Any, count: int) -> None:
    """How many TLS 1.3 session tickets a server sends after a full handshake (OpenSSL's
    default is 2; a client uses one, so with a shared cache 1 halves the writes).
    The stdlib has ``SSLContext.num_tickets``; pyOpenSSL has no equivalent."""
    if not isinstance(count, int) or count < 0:
        raise ConfigurationError(f"the ticket count must be an int >= 0, got {count!r}")
    bound = _mutable(context)
    if bound.instance.api.SSL_CTX_set_num_tickets == ffi.NULL or \
            bound.instance.api.SSL_CTX_set_num_tickets(bound.pointer, count) != 1:
        raise ConfigurationError(f"{bound.instance.version} cannot set the number of tickets")


def session_reused(connection: Any) -> bool:
    """Whether a connection's handshake resumed a session: pyOpenSSL ``Connection``,
    stdlib ``SSLSocket``/``SSLObject`` or a ``sesscache.testing`` connection."""
    if hasattr(connection, "session_reused") and not callable(getattr(connection, "session_reused")):
        return bool(connection.session_reused)  # stdlib and sesscache.testing
    pointer = getattr(connection, "_ssl", None)
    if pointer is None or not hasattr(connection, "get_context"):
        raise TypeError(f"expected a TLS connection, got {type(connection).__name__}")
    bound = bind_context(connection.get_context())
    from ._binding import address

    return bool(bound.instance.api.SSL_session_reused(ffi.cast("SSL *", address(pointer))))


def internal_cache_size(context: Any) -> int:
    """How many sessions OpenSSL's internal cache of ``context`` holds now."""
    bound = bind_context(context)
    return int(bound.instance.api.SSL_CTX_ctrl(bound.pointer, lib.SSL_CTRL_SESS_NUMBER, 0, ffi.NULL))


def flush_sessions(context: Any, now: Optional[float] = None) -> None:
    """Drop sessions that have expired by ``now`` from the internal cache (0: all of them).

    Each dropped session goes through the remove callback.
    """
    bound = bind_context(context)
    when = int(_time.time() if now is None else now)
    lib.sc_flush_sessions(bound.instance.slot, bound.pointer, when)


def remove_session(context: Any, session: Session) -> bool:
    """Remove ``session`` from the internal cache (fires the remove callback)."""
    bound = bind_context(context)
    if session.libssl is not bound.instance:
        raise ConfigurationError("that session belongs to another copy of OpenSSL than the context")
    return bool(bound.instance.api.SSL_CTX_remove_session(bound.pointer, session_pointer(session)))


def live_session_count(where: Union[Any, LibsslInstance]) -> int:
    """How many ``SSL_SESSION`` objects of a libssl copy exist right now.

    Counted by OpenSSL's own object life cycle (an ex_data hook on every session made
    after sesscache first touched that copy), not estimated: a leak check.
    """
    instance = where if isinstance(where, LibsslInstance) else bind_context(where).instance
    return int(lib.sc_live_sessions(instance.slot))
