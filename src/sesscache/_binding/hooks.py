"""The registry of session-callback handlers per TLS context, and the ``extern "Python"``
functions libssl's trampolines call: what :mod:`sesscache.callbacks` (raw callbacks) and
:class:`sesscache.SessionCache` (the cache's handlers) share. Private to sesscache; its
names are public so that both use it through them.

How a call travels: libssl calls the C trampoline of its copy (slot), which calls one of
the ``extern "Python"`` functions below with the *session context* (the context the
connection was created from, even after an SNI callback switched it). The registry maps
``(slot, SSL_CTX address)`` to that context's :class:`Hooks`. See :mod:`sesscache.callbacks`
for who keeps what alive.
"""
from __future__ import annotations

import logging
import threading
import traceback
import weakref
from typing import Any, Dict, Optional, Tuple

from .. import _compat, _fork
from . import address, ffi, lib
from .._burstlog import BurstLogger
from .find_context import BoundContext, bind_context, connection_for
from ..errors import ConfigurationError

logger = logging.getLogger("sesscache.callbacks")

HOOK_NAMES = ("new", "get", "remove")
#: Seconds between two log lines about the same callback failing on the same context.
_LOG_INTERVAL = 10.0


class Hooks:
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


registry: Dict[Tuple[int, int], "weakref.ReferenceType[Hooks]"] = {}
_HOOKS_ATTRIBUTE = "_sesscache_hooks"
# Contexts whose objects cannot carry an attribute: their hooks live here until OpenSSL
# frees the SSL_CTX (a callback closing over such a context keeps it alive).
pinned: Dict[Tuple[int, int], Hooks] = {}


def lookup(slot, ctx) -> Optional[Hooks]:
    ref = registry.get((slot, address(ctx)))
    return ref() if ref is not None else None
registry_lock = threading.RLock()


def _renew_locks_in_child() -> None:
    # In a forked child: another thread of the parent may have held any of these.
    global registry_lock
    registry_lock = threading.RLock()
    for ref in list(registry.values()):
        hooks = ref()
        if hooks is not None:
            hooks.burst = None  # (made again at the next callback error)


_fork.at_child(_renew_locks_in_child)


# --- the Python side of the trampolines --------------------------------------------

@ffi.def_extern()
def sc_py_new_session(slot, ctx, ssl, session):
    hooks = lookup(slot, ctx)
    handler = hooks.new if hooks is not None else None
    if handler is not None:
        try:
            handler(hooks, ssl, session)
        except BaseException as exc:  # nothing may cross into C
            report(hooks, ssl, "new-session", exc)
    return 0


@ffi.def_extern()
def sc_py_get_session(slot, ctx, ssl, session_id, length):
    hooks = lookup(slot, ctx)
    handler = hooks.get if hooks is not None else None
    if handler is None:
        return ffi.NULL
    try:
        return handler(hooks, ssl, ffi.unpack(ffi.cast("char *", session_id), length))
    except BaseException as exc:
        report(hooks, ssl, "get-session", exc)
        return ffi.NULL


@ffi.def_extern()
def sc_py_remove_session(slot, ctx, session):
    hooks = lookup(slot, ctx)
    handler = hooks.remove if hooks is not None else None
    if handler is not None:
        try:
            handler(hooks, session)
        except BaseException as exc:
            report(hooks, None, "remove-session", exc)


@ffi.def_extern()
def sc_py_context_freed(slot, ctx):
    key = (slot, address(ctx))
    with registry_lock:
        registry.pop(key, None)
        pinned.pop(key, None)


# --- errors raised by callbacks ----------------------------------------------------

def report(hooks: Hooks, ssl, which: str, exc: BaseException) -> None:
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
                defer_to_pyopenssl(conn, exc)
        except Exception:  # pragma: no cover - never let reporting fail the handshake
            logger.debug("could not attach the callback error to its connection", exc_info=True)


def defer_to_pyopenssl(conn: Any, exc: BaseException) -> None:
    # pyOpenSSL calls self._raise_ssl_error(ssl, result) after every OpenSSL call,
    # success included; an instance attribute shadows that method for this one
    # connection, once, then removes itself.
    state = conn.__dict__
    state.setdefault("_sesscache_problems", []).append(exc)
    if "_raise_ssl_error" in state:
        return
    conn_ref = weakref.ref(conn)
    original = _compat.pyopenssl_raise_ssl_error(conn)

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

def check_mutable(bound: BoundContext) -> None:
    if bound.kind == "pyopenssl" and _compat.pyopenssl_context_used(bound.owner):
        raise ConfigurationError(
            "this OpenSSL.SSL.Context has already been used to create a Connection, and "
            "pyOpenSSL (26.2 and later) forbids changing a context after that. Set session "
            "callbacks (or attach the cache) right after configuring the context, before the "
            "first Connection.")


def check_not_owned(hooks: Optional[Hooks], handlers: Dict[str, Any]) -> None:
    """Refuse a raw callback (or its removal) on hooks a SessionCache owns.

    The cache answers from its C fast path before any Python handler runs, so a raw
    callback set beside it would be accepted and never called; and clearing one of its
    hooks would leave the cache counting nothing. Its owner hands the hooks back
    (``detach``); until then they are the cache's.
    """
    if hooks is None or hooks.owner is None:
        return
    names = ", ".join(f"{name}-session" for name in HOOK_NAMES if name in handlers)
    raise ConfigurationError(
        f"this context is served by a {type(hooks.owner).__name__}, which owns its session "
        f"callbacks; a raw {names} callback set here would never run. Call "
        "cache.detach(context) first to use raw callbacks, or read cache.stats for what the "
        "cache does.")


def may_change(context: Any) -> bool:
    """False for a pyOpenSSL context that made connections (pyOpenSSL 26.2+ forbids
    changing it after that)."""
    try:
        check_mutable(bind_context(context))
    except ConfigurationError:
        return False
    return True


def turn_off(hooks: Hooks) -> None:
    """Turn a context's handlers off inside sesscache, leaving libssl's callbacks as they
    are (for a context that may not be changed any more): the trampolines then answer
    "no session" and keep nothing."""
    with registry_lock:
        for name in HOOK_NAMES:
            setattr(hooks, name, None)
            setattr(hooks, name + "_fn", None)
        hooks.owner = None


def install(context: Any, owner: Any = None, **handlers) -> Hooks:
    """Set (or, with None, clear) handlers on a context; the low-level entry point.

    ``handlers`` maps "new"/"get"/"remove" to ``(handler, public_fn)`` or ``None``.
    Handlers take ``(hooks, ssl, session_ptr)``, ``(hooks, ssl, session_id)`` returning a
    new ``SSL_SESSION *`` reference or NULL, and ``(hooks, session_ptr)``.
    """
    bound = bind_context(context)
    slot = bound.instance.slot
    key = (slot, bound.ctx)
    if owner is None:
        check_not_owned(lookup(slot, bound.ctx), handlers)
    check_mutable(bound)
    with registry_lock:
        states = ffi.new("int[3]")
        lib.sc_hooks_of(slot, bound.pointer, states, states + 1, states + 2)
        ref = registry.get(key)
        hooks = ref() if ref is not None else None
        for index, name in enumerate(HOOK_NAMES):
            if name in handlers and handlers[name] is not None and states[index] == 2:
                raise foreign_callback(name)
        if hooks is None:
            hooks = Hooks(bound)
        for name, value in handlers.items():
            handler, fn = value if value is not None else (None, None)
            setattr(hooks, name, handler)
            setattr(hooks, name + "_fn", fn)
        if owner is not None or hooks.empty():
            hooks.owner = owner
        flags = [(1 if getattr(hooks, name) is not None else 0) if name in handlers else -1
                 for name in HOOK_NAMES]
        if hooks.empty():
            registry.pop(key, None)
            pinned.pop(key, None)
            attach_hooks(bound.owner, None)
            lib.sc_install(slot, bound.pointer, *flags)
        else:
            if not attach_hooks(bound.owner, hooks):
                pinned[key] = hooks
            registry[key] = weakref.ref(hooks)
            lib.sc_mark_context(slot, bound.pointer, 1)
            lib.sc_install(slot, bound.pointer, *flags)
        return hooks


def foreign_callback(name: str) -> ConfigurationError:
    """The refusal to replace a session callback sesscache did not install (``name``: "new",
    "get" or "remove")."""
    return ConfigurationError(
        f"this context already has a {name}-session callback that sesscache did not "
        "install (another library manages its session cache); sesscache will not "
        "silently replace it.")


def own(bound: BoundContext, owner: Any, **handlers) -> Hooks:
    """Give ``owner`` all three hooks of a context in the registry, with ``handlers``
    (``new``, ``get``, ``remove``: ``(handler, public_fn)`` each, as for :func:`install`).

    The Python half of an attach whose C half (``sc_attach``, which installs libssl's
    callbacks and refuses another library's) is done: it cannot fail. The context must
    have been checked with :func:`check_mutable`.
    """
    key = (bound.instance.slot, bound.ctx)
    with registry_lock:
        ref = registry.get(key)
        hooks = ref() if ref is not None else None
        if hooks is None:
            hooks = Hooks(bound)
        hooks.new, hooks.new_fn = handlers["new"]
        hooks.get, hooks.get_fn = handlers["get"]
        hooks.remove, hooks.remove_fn = handlers["remove"]
        hooks.owner = owner
        if not attach_hooks(bound.owner, hooks):
            pinned[key] = hooks
        registry[key] = weakref.ref(hooks)
        return hooks


def disown(bound: BoundContext) -> None:
    """Drop a context's hooks from the registry: the Python half of a detach whose C half
    (``sc_detach``, which clears libssl's callbacks) is done."""
    key = (bound.instance.slot, bound.ctx)
    with registry_lock:
        ref = registry.pop(key, None)
        pinned.pop(key, None)
        hooks = ref() if ref is not None else None
        if hooks is not None:
            for name in HOOK_NAMES:
                setattr(hooks, name, None)
                setattr(hooks, name + "_fn", None)
            hooks.owner = None
        attach_hooks(bound.owner, None)


def attach_hooks(context: Any, hooks: Optional[Hooks]) -> bool:
    """Make the Python context object own its hooks; False if it cannot hold them."""
    try:
        if hooks is None:
            context.__dict__.pop(_HOOKS_ATTRIBUTE, None)
        else:
            context.__dict__[_HOOKS_ATTRIBUTE] = hooks
        return True
    except AttributeError:
        return False


def hooks_for(context: Any) -> Optional[Hooks]:
    bound = bind_context(context)
    return lookup(bound.instance.slot, bound.ctx)
