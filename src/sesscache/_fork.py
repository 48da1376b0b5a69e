"""fork() and exit: what the child starts with, what the process does last. The one registry.

The C tables' locks and counters are handled in C (``csrc/at_fork.c``, registered
here at import). On the Python side, every at-fork hook of the library goes through this
module (the architecture test counts ``os.register_at_fork`` calls elsewhere: none):

* :func:`renew_in_child` (``obj.renew`` a bound method, held weakly): in the child, it runs
  before any other Python code, so a ``threading.Lock`` another thread of the parent held
  is replaced (it would stay held for ever), counters start at zero (the stats of prefork
  workers add up without the parent's traffic counted once per worker), and threads the
  object needs are started again.
* :func:`at_child` (a plain function, held strongly): for module-level locks.
* :func:`at_exit` (a bound method, held weakly): at interpreter exit, for writes still
  queued.
"""
from __future__ import annotations

import atexit
import inspect
import logging
import os
import threading
import weakref
from typing import Any, Callable, Dict, List, Optional

from ._binding import lib

logger = logging.getLogger(__name__)

class WeakMethod:
    """A bound method held weakly: calling it returns the method, or None once its object is
    gone. (Not ``weakref.WeakMethod``, whose own callback can run after it was freed, at
    interpreter exit, and print "Exception ignored".)"""

    __slots__ = ("_ref", "_func")

    def __init__(self, method: Any, callback: Optional[Callable[[Any], None]] = None) -> None:
        if not inspect.ismethod(method):  # an object or a function would fail later, less clearly
            raise TypeError(f"the fork registry takes a bound method (obj.method), not {method!r}")
        self._ref = weakref.ref(method.__self__, callback)
        self._func = method.__func__

    def __call__(self) -> Optional[Callable[..., Any]]:
        obj = self._ref()
        return None if obj is None else self._func.__get__(obj)


_lock = threading.Lock()
_renewals: Dict[int, WeakMethod] = {}
_exits: Dict[int, WeakMethod] = {}
_module_hooks: List[Callable[[], None]] = []
_next = [0]


def _register(table: Dict[int, WeakMethod], method: Callable[[], None]) -> None:
    with _lock:
        _next[0] += 1
        token = _next[0]
        table[token] = WeakMethod(method, lambda _ref, token=token: table.pop(token, None))


def renew_in_child(method: Callable[[], None]) -> None:
    """Call ``method()`` (a bound method: held weakly, dropped with its object) in every
    child forked while its object lives, in the order of registration."""
    _register(_renewals, method)


def at_child(fn: Callable[[], None]) -> None:
    """Call ``fn()`` in every child (for module-level locks)."""
    _module_hooks.append(fn)


def at_exit(method: Callable[[], None]) -> None:
    """Call ``method()`` (a bound method, held weakly) at interpreter exit, while its object
    lives."""
    _register(_exits, method)


def _live(table: Dict[int, WeakMethod]) -> List[Callable[[], None]]:
    methods = []
    for _token, ref in sorted(table.copy().items()):
        method = ref()
        if method is not None:
            methods.append(method)
    return methods


def _after_fork_in_child() -> None:
    global _lock
    _lock = threading.Lock()  # another thread of the parent may have held it
    for fn in _module_hooks:
        fn()
    for method in _live(_renewals):
        method()


def _at_exit() -> None:
    for method in _live(_exits):
        method()


if not lib.sc_at_fork_install():  # pragma: no cover - pthread_atfork fails only without memory
    logger.warning("cannot register the at-fork handlers: a process forked while another "
                   "thread holds a session table's lock may hang in the child")
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_at_exit)
