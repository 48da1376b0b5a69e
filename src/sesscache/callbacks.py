"""The three session callbacks, on any TLS context, from Python.

This is the raw layer: what OpenSSL calls, turned into Python calls, with reference
counts and error handling done here. :class:`sesscache.SessionCache` builds its policy on
the same registry (:mod:`sesscache._binding.hooks`).

How a call travels: libssl calls the C trampoline of its copy (slot), which calls one of
the ``extern "Python"`` functions below with the *session context* (the context the
connection was created from, even after an SNI callback switched it). The registry maps
``(slot, SSL_CTX address)`` to that context's :class:`_Hooks`.

Who keeps what alive: the Python context object holds its hooks (an attribute), and the
registry only a weak reference. So a callback may close over its own context, the
natural thing to do (``Session.from_bytes(der, ctx)``), without keeping it alive
forever. The registry entry is dropped when OpenSSL frees the ``SSL_CTX`` (an ex_data
free hook). ``SSL_CTX_free`` first flushes the internal cache through the remove
callback: while the Python context is still alive (an explicit free), your remove
callback runs for each session; when the free happens because the Python context
itself was collected, its hooks are already gone and the flush is ignored. Either way
no C code ever jumps into freed memory: the trampolines are permanent.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Optional, Union

from ._binding import ffi
from ._binding.find_context import connection_for
from ._binding.hooks import Hooks, hooks_for, install
from ._binding.hooks import registry as _registry  # noqa: F401 (the tests count its entries)
from ._binding.copies import LibsslInstance
from .errors import CallbackError, SessionError
from .session import Session, borrow_session, new_session_reference, session_from_der

logger = logging.getLogger(__name__)

NewSessionCallback = Callable[[Any, Session], None]
GetSessionCallback = Callable[[Any, bytes], Union[Session, bytes, bytearray, memoryview, None]]
RemoveSessionCallback = Callable[[Any, Session], None]

# --- the public API ------------------------------------------------------------------------

def set_new_session_callback(context: Any, fn: Optional[NewSessionCallback]) -> None:
    """Call ``fn(conn, session)`` for every new session OpenSSL makes on ``context``.

    ``conn`` is the pyOpenSSL ``Connection``, or the stdlib ``SSLObject``/``SSLSocket``
    (``None`` where it cannot be recovered). ``session`` is a :class:`Session` holding its
    own reference: keep it, or serialize it with ``session.to_bytes()``.

    OpenSSL reports new sessions only where the context's cache mode includes the
    role: servers by default, clients only with ``SESS_CACHE_CLIENT``. With TLS 1.3 each
    ticket the server sends is a new session. ``None`` removes the callback.
    """
    handler = None if fn is None else _make_new_handler(fn)
    install(context, new=None if fn is None else (handler, fn))


def set_get_session_callback(context: Any, fn: Optional[GetSessionCallback]) -> None:
    """Call ``fn(conn, session_id)`` when a client offers a session OpenSSL does not hold.

    Return a :class:`Session`, its DER bytes (parsed by the libssl that owns the
    context), or ``None`` for a miss. OpenSSL still checks what you return (protocol
    version, session id context, expiry) and falls back to a full handshake when it
    does not fit. A return value that is not a session of this context's libssl, or
    whose id is not the one asked for, is a miss and an error. ``None`` removes it.
    """
    handler = None if fn is None else _make_get_handler(fn)
    install(context, get=None if fn is None else (handler, fn))


def set_remove_session_callback(context: Any, fn: Optional[RemoveSessionCallback]) -> None:
    """Call ``fn(context, session)`` when OpenSSL drops a session from its internal cache.

    That happens on expiry flushes, eviction when the internal cache is full,
    ``SSL_CTX_remove_session``, a connection freed without a clean TLS shutdown, and
    for every cached session when the context itself is freed (then ``context`` may be
    ``None``: its Python object is already gone). ``None`` removes it.
    """
    handler = None if fn is None else _make_remove_handler(fn)
    install(context, remove=None if fn is None else (handler, fn))


def get_new_session_callback(context: Any) -> Optional[NewSessionCallback]:
    return _raw_fn(hooks_for(context), "new")


def get_get_session_callback(context: Any) -> Optional[GetSessionCallback]:
    return _raw_fn(hooks_for(context), "get")


def get_remove_session_callback(context: Any) -> Optional[RemoveSessionCallback]:
    return _raw_fn(hooks_for(context), "remove")


def _raw_fn(hooks: Optional[Hooks], name: str) -> Optional[Callable]:
    """The raw callback set for a hook; None when there is none, and on a context a
    SessionCache serves (its hooks are not raw callbacks: see ``cache.stats``)."""
    if hooks is None or hooks.owner is not None:
        return None
    return getattr(hooks, name + "_fn")


def _make_new_handler(fn: NewSessionCallback):
    def handle_new(hooks: Hooks, ssl, session) -> None:
        conn = connection_for(hooks.bound, ssl)
        fn(conn, borrow_session(hooks.instance, session, hooks.context_ref()))
    return handle_new


def _make_get_handler(fn: GetSessionCallback):
    def handle_get(hooks: Hooks, ssl, session_id: bytes):
        result = fn(connection_for(hooks.bound, ssl), session_id)
        return session_reference(hooks.instance, result, session_id)
    return handle_get


def _make_remove_handler(fn: RemoveSessionCallback):
    def handle_remove(hooks: Hooks, session) -> None:
        fn(hooks.context_ref(), borrow_session(hooks.instance, session, hooks.context_ref()))
    return handle_remove


def session_reference(instance: LibsslInstance, result: Any, session_id: bytes):
    """Turn a get callback's answer into a new ``SSL_SESSION *`` reference, or NULL."""
    if result is None:
        return ffi.NULL
    if isinstance(result, (bytes, bytearray, memoryview)):
        pointer = session_from_der(instance, result)
    elif isinstance(result, Session):
        if result.libssl is not instance:
            raise SessionError(
                f"the get callback returned a session of {result.libssl.describe()} for a "
                f"context of {instance.describe()}; sessions cannot cross copies of OpenSSL")
        pointer = new_session_reference(result)
    else:
        raise CallbackError(
            "a get-session callback must return a sesscache.Session, the session's bytes, or "
            f"None for a miss; it returned {type(result).__name__}")
    length = ffi.new("unsigned int *")
    found = ffi.unpack(ffi.cast("char *", instance.api.SSL_SESSION_get_id(pointer, length)), length[0])
    if found != session_id:
        instance.api.SSL_SESSION_free(pointer)
        raise SessionError(
            f"the get callback returned the session {found.hex()} for the id {session_id.hex()}; "
            "resuming a session the client did not offer is refused")
    return pointer
