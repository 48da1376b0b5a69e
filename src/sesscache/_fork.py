"""fork(): what the child starts with.

The C tables' locks and counters are handled in C (``_cffi_src/at_fork.py``, registered
here at import). On the Python side, objects that keep counters or locks register with
:func:`renew_in_child`: in the child, their ``_renew_after_fork()`` runs before any other
Python code, so a ``threading.Lock`` another thread of the parent held is replaced (it
would stay held for ever), and counters start at zero, so the stats of prefork workers
add up without the parent's traffic counted once per worker.
"""
from __future__ import annotations

import logging
import os
import weakref
from typing import Any, Callable, List

from ._binding import lib

logger = logging.getLogger(__name__)

_renewed: "weakref.WeakSet[Any]" = weakref.WeakSet()
_module_hooks: List[Callable[[], None]] = []


def renew_in_child(obj: Any) -> None:
    """Call ``obj._renew_after_fork()`` in every child forked while ``obj`` lives."""
    _renewed.add(obj)


def at_child(fn: Callable[[], None]) -> None:
    """Call ``fn()`` in every child (for module-level locks)."""
    _module_hooks.append(fn)


def _after_fork_in_child() -> None:
    for fn in _module_hooks:
        fn()
    for obj in list(_renewed):
        obj._renew_after_fork()


if not lib.sc_at_fork_install():  # pragma: no cover - pthread_atfork fails only without memory
    logger.warning("cannot register the at-fork handlers: a process forked while another "
                   "thread holds a session table's lock may hang in the child")
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
