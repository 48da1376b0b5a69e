"""The three session callbacks, on any TLS context, from Python.

This is the raw layer: what OpenSSL calls, turned into Python calls, with reference
counts and error handling done here. :class:`sesscache.SessionCache` builds its policy on
the same registry through :func:`_install`.

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
import threading
import traceback
import weakref
from typing import Any, Callable, Dict, Optional, Tuple, Union

from . import _fork
from ._binding import address, ffi, lib
from ._burstlog import BurstLogger
from ._contexts import BoundContext, bind_context, connection_for
from ._instances import LibsslInstance
from .errors import CallbackError, ConfigurationError, SessionError
from .session import Session, session_from_der

logger = logging.getLogger(__name__)

NewSessionCallback = Callable[[Any, Session], None]
GetSessionCallback = Callable[[Any, bytes], Union[Session, bytes, bytearray, memoryview, None]]
RemoveSessionCallback = Callable[[Any, Session], None]

_HOOK_NAMES = ("new", "get", "remove")
#: Seconds between two log lines about the same callback failing on the same context.
_LOG_INTERVAL = 10.0


class _Hooks:
    """What sesscache runs for one SSL_CTX: a handler per hook, each with the public
    callable it came from (``fn``) and the object that installed it (``owner``)."""

    __slots__ = ("slot", "ctx", "kind", "instance", "context_ref", "__weakref__",
                 "new", "get", "remove", "new_fn", "get_fn", "remove_fn", "owner", "burst")

    def __init__(self, bound: BoundContext) -> None:
        self.slot = bound.instance.slot
        self.ctx = bound.ctx
        self.kind = bound.kind
        self.instance = bound.instance
        try:
            self.context_ref = weakref.ref(bound.owner)
        except TypeError:
            self.context_ref = lambda: None
        self.new = self.get = self.remove = None
        self.new_fn = self.get_fn = self.remove_fn = None
        self.owner = None
        self.burst: Optional[BurstLogger] = None  #: made at the first callback error

    @property
    def bound(self) -> BoundContext:
        return BoundContext(self.instance, self.ctx, self.kind, self.context_ref())

    def empty(self) -> bool:
        return self.new is None and self.get is None and self.remove is None


_registry: Dict[Tuple[int, int], "weakref.ReferenceType[_Hooks]"] = {}
_HOOKS_ATTRIBUTE = "_sesscache_hooks"
# Contexts whose objects cannot carry an attribute: their hooks live here until OpenSSL
# frees the SSL_CTX (a callback closing over such a context keeps it alive).
_pinned: Dict[Tuple[int, int], _Hooks] = {}


def _lookup(slot, ctx) -> Optional[_Hooks]:
    ref = _registry.get((slot, address(ctx)))
    return ref() if ref is not None else None
_registry_lock = threading.RLock()


def _renew_locks_in_child() -> None:
    # In a forked child: another thread of the parent may have held any of these.
    global _registry_lock
    _registry_lock = threading.RLock()
    for ref in list(_registry.values()):
        hooks = ref()
        if hooks is not None:
            hooks.burst = None  # (made again at the next callback error)


_fork.at_child(_renew_locks_in_child)


# --- the Python side of the trampolines --------------------------------------------

@ffi.def_extern()
def sc_py_new_session(slot, ctx, ssl, session):
    hooks = _lookup(slot, ctx)
    handler = hooks.new if hooks is not None else None
    if handler is not None:
        try:
            handler(hooks, ssl, session)
        except BaseException as exc:  # nothing may cross into C
            _report(hooks, ssl, "new-session", exc)
    return 0


@ffi.def_extern()
def sc_py_get_session(slot, ctx, ssl, session_id, length):
    hooks = _lookup(slot, ctx)
    handler = hooks.get if hooks is not None else None
    if handler is None:
        return ffi.NULL
    try:
        return handler(hooks, ssl, ffi.unpack(ffi.cast("char *", session_id), length))
    except BaseException as exc:
        _report(hooks, ssl, "get-session", exc)
        return ffi.NULL


@ffi.def_extern()
def sc_py_remove_session(slot, ctx, session):
    hooks = _lookup(slot, ctx)
    handler = hooks.remove if hooks is not None else None
    if handler is not None:
        try:
            handler(hooks, session)
        except BaseException as exc:
            _report(hooks, None, "remove-session", exc)


@ffi.def_extern()
def sc_py_context_freed(slot, ctx):
    key = (slot, address(ctx))
    with _registry_lock:
        _registry.pop(key, None)
        _pinned.pop(key, None)


# --- errors raised by callbacks ----------------------------------------------------

def _report(hooks: _Hooks, ssl, which: str, exc: BaseException) -> None:
    """Log a callback's exception and hand it to the Python call driving the handshake.

    OpenSSL already got a safe answer (no session / nothing kept). With pyOpenSSL, the
    exception is raised again from the ``Connection`` call that drove OpenSSL
    (``do_handshake``, ``recv``, ...), the way pyOpenSSL treats its own callbacks'
    exceptions. The stdlib's C code leaves no such place, so there it is only logged.
    """
    # Logged as text, not exc_info: a record that keeps the traceback keeps its frames,
    # and through their f_back links the whole call stack of the handshake (contexts,
    # connections, sessions) for as long as a handler holds on to the record.
    # Once per burst and context (a callback that fails on every handshake must not write
    # a traceback per handshake), and per kind of failure, so a new one shows at once.
    burst = hooks.burst
    if burst is None:
        burst = hooks.burst = BurstLogger(logger, _LOG_INTERVAL)
    burst.log(logging.ERROR, f"{which}:{type(exc).__name__}",
              "the %s callback raised %s: %s; OpenSSL was told there is no session, and the "
              "handshake goes on\n%s", which, type(exc).__name__, str(exc),
              "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)).rstrip())
    traceback.clear_frames(exc.__traceback__)
    if hooks.kind == "pyopenssl" and ssl is not None:
        try:
            conn = connection_for(hooks.bound, ssl)
            if conn is not None:
                _defer_to_pyopenssl(conn, exc)
        except Exception:  # pragma: no cover - never let reporting fail the handshake
            logger.debug("could not attach the callback error to its connection", exc_info=True)


def _defer_to_pyopenssl(conn: Any, exc: BaseException) -> None:
    # pyOpenSSL calls self._raise_ssl_error(ssl, result) after every OpenSSL call,
    # success included; an instance attribute shadows that method for this one
    # connection, once, then removes itself.
    state = conn.__dict__
    state.setdefault("_sesscache_problems", []).append(exc)
    if "_raise_ssl_error" in state:
        return
    conn_ref = weakref.ref(conn)
    original = type(conn)._raise_ssl_error

    def _raise_ssl_error(ssl, result):
        connection = conn_ref()
        if connection is None:
            return None
        connection.__dict__.pop("_raise_ssl_error", None)
        problems = connection.__dict__.pop("_sesscache_problems", [])
        if problems:
            raise problems[0]
        return original(connection, ssl, result)

    state["_raise_ssl_error"] = _raise_ssl_error


# --- installing handlers --------------------------------------------------------------

def _check_mutable(bound: BoundContext) -> None:
    if bound.kind == "pyopenssl" and getattr(bound.owner, "_used", False):
        raise ConfigurationError(
            "this OpenSSL.SSL.Context has already been used to create a Connection, and "
            "pyOpenSSL (26.2 and later) forbids changing a context after that. Set session "
            "callbacks (or attach the cache) right after configuring the context, before the "
            "first Connection.")


def _check_not_owned(hooks: Optional[_Hooks], handlers: Dict[str, Any]) -> None:
    """Refuse a raw callback (or its removal) on hooks a SessionCache owns.

    The cache answers from its C fast path before any Python handler runs, so a raw
    callback set beside it would be accepted and never called; and clearing one of its
    hooks would leave the cache counting nothing. Its owner hands the hooks back
    (``detach``); until then they are the cache's.
    """
    if hooks is None or hooks.owner is None:
        return
    names = ", ".join(f"{name}-session" for name in _HOOK_NAMES if name in handlers)
    raise ConfigurationError(
        f"this context is served by a {type(hooks.owner).__name__}, which owns its session "
        f"callbacks; a raw {names} callback set here would never run. Call "
        "cache.detach(context) first to use raw callbacks, or read cache.stats for what the "
        "cache does.")


def _may_change(context: Any) -> bool:
    """False for a pyOpenSSL context that made connections (pyOpenSSL 26.2+ forbids
    changing it after that)."""
    try:
        _check_mutable(bind_context(context))
    except ConfigurationError:
        return False
    return True


def _turn_off(hooks: _Hooks) -> None:
    """Turn a context's handlers off inside sesscache, leaving libssl's callbacks as they
    are (for a context that may not be changed any more): the trampolines then answer
    "no session" and keep nothing."""
    with _registry_lock:
        for name in _HOOK_NAMES:
            setattr(hooks, name, None)
            setattr(hooks, name + "_fn", None)
        hooks.owner = None


def _install(context: Any, owner: Any = None, **handlers) -> _Hooks:
    """Set (or, with None, clear) handlers on a context; the low-level entry point.

    ``handlers`` maps "new"/"get"/"remove" to ``(handler, public_fn)`` or ``None``.
    Handlers take ``(hooks, ssl, session_ptr)``, ``(hooks, ssl, session_id)`` returning a
    new ``SSL_SESSION *`` reference or NULL, and ``(hooks, session_ptr)``.
    """
    bound = bind_context(context)
    slot = bound.instance.slot
    key = (slot, bound.ctx)
    if owner is None:
        _check_not_owned(_lookup(slot, bound.ctx), handlers)
    _check_mutable(bound)
    with _registry_lock:
        states = ffi.new("int[3]")
        lib.sc_hooks_of(slot, bound.pointer, states, states + 1, states + 2)
        ref = _registry.get(key)
        hooks = ref() if ref is not None else None
        for index, name in enumerate(_HOOK_NAMES):
            if name in handlers and handlers[name] is not None and states[index] == 2:
                raise ConfigurationError(
                    f"this context already has a {name}-session callback that sesscache did not "
                    "install (another library manages its session cache); sesscache will not "
                    "silently replace it.")
        if hooks is None:
            hooks = _Hooks(bound)
        for name, value in handlers.items():
            handler, fn = value if value is not None else (None, None)
            setattr(hooks, name, handler)
            setattr(hooks, name + "_fn", fn)
        if owner is not None or hooks.empty():
            hooks.owner = owner
        flags = [(1 if getattr(hooks, name) is not None else 0) if name in handlers else -1
                 for name in _HOOK_NAMES]
        if hooks.empty():
            _registry.pop(key, None)
            _pinned.pop(key, None)
            _attach_hooks(bound.owner, None)
            lib.sc_install(slot, bound.pointer, *flags)
        else:
            if not _attach_hooks(bound.owner, hooks):
                _pinned[key] = hooks
            _registry[key] = weakref.ref(hooks)
            lib.sc_mark_context(slot, bound.pointer, 1)
            lib.sc_install(slot, bound.pointer, *flags)
        return hooks


def _attach_hooks(context: Any, hooks: Optional[_Hooks]) -> bool:
    """Make the Python context object own its hooks; False if it cannot hold them."""
    try:
        if hooks is None:
            context.__dict__.pop(_HOOKS_ATTRIBUTE, None)
        else:
            context.__dict__[_HOOKS_ATTRIBUTE] = hooks
        return True
    except AttributeError:
        return False


def _hooks_for(context: Any) -> Optional[_Hooks]:
    bound = bind_context(context)
    return _lookup(bound.instance.slot, bound.ctx)


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
    _install(context, new=None if fn is None else (handler, fn))


def set_get_session_callback(context: Any, fn: Optional[GetSessionCallback]) -> None:
    """Call ``fn(conn, session_id)`` when a client offers a session OpenSSL does not hold.

    Return a :class:`Session`, its DER bytes (parsed by the libssl that owns the
    context), or ``None`` for a miss. OpenSSL still checks what you return (protocol
    version, session id context, expiry) and falls back to a full handshake when it
    does not fit. A return value that is not a session of this context's libssl, or
    whose id is not the one asked for, is a miss and an error. ``None`` removes it.
    """
    handler = None if fn is None else _make_get_handler(fn)
    _install(context, get=None if fn is None else (handler, fn))


def set_remove_session_callback(context: Any, fn: Optional[RemoveSessionCallback]) -> None:
    """Call ``fn(context, session)`` when OpenSSL drops a session from its internal cache.

    That happens on expiry flushes, eviction when the internal cache is full,
    ``SSL_CTX_remove_session``, a connection freed without a clean TLS shutdown, and
    for every cached session when the context itself is freed (then ``context`` may be
    ``None``: its Python object is already gone). ``None`` removes it.
    """
    handler = None if fn is None else _make_remove_handler(fn)
    _install(context, remove=None if fn is None else (handler, fn))


def get_new_session_callback(context: Any) -> Optional[NewSessionCallback]:
    return _raw_fn(_hooks_for(context), "new")


def get_get_session_callback(context: Any) -> Optional[GetSessionCallback]:
    return _raw_fn(_hooks_for(context), "get")


def get_remove_session_callback(context: Any) -> Optional[RemoveSessionCallback]:
    return _raw_fn(_hooks_for(context), "remove")


def _raw_fn(hooks: Optional[_Hooks], name: str) -> Optional[Callable]:
    """The raw callback set for a hook; None when there is none, and on a context a
    SessionCache serves (its hooks are not raw callbacks: see ``cache.stats``)."""
    if hooks is None or hooks.owner is not None:
        return None
    return getattr(hooks, name + "_fn")


def _make_new_handler(fn: NewSessionCallback):
    def handle_new(hooks: _Hooks, ssl, session) -> None:
        conn = connection_for(hooks.bound, ssl)
        fn(conn, Session._borrow(hooks.instance, session, hooks.context_ref()))
    return handle_new


def _make_get_handler(fn: GetSessionCallback):
    def handle_get(hooks: _Hooks, ssl, session_id: bytes):
        result = fn(connection_for(hooks.bound, ssl), session_id)
        return session_reference(hooks.instance, result, session_id)
    return handle_get


def _make_remove_handler(fn: RemoveSessionCallback):
    def handle_remove(hooks: _Hooks, session) -> None:
        fn(hooks.context_ref(), Session._borrow(hooks.instance, session, hooks.context_ref()))
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
        pointer = result._new_reference()
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
