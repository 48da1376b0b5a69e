"""The dynamic linker, asked from Python: is an object loaded, what does its scope resolve
a name to, and which file holds an address.

Through ``ctypes`` rather than the compiled module on purpose. glibc 2.34 moved
``dlopen``, ``dlsym`` and ``dladdr`` from libdl into libc under a new symbol version, so
calling them from C would make the wheel need glibc 2.34 (``manylinux_2_34``) for a few
calls that only run when a copy of libssl is first resolved. ``_ctypes`` already wraps
``dlopen``/``dlsym``/``dlclose`` for the interpreter's own glibc, whatever its age.
"""
from __future__ import annotations

import ctypes
import os
from contextlib import contextmanager
from typing import Iterator, List, Optional, Tuple

import _ctypes

from ..errors import BindingError


class _DlInfo(ctypes.Structure):
    _fields_ = [("dli_fname", ctypes.c_char_p), ("dli_fbase", ctypes.c_void_p),
                ("dli_sname", ctypes.c_char_p), ("dli_saddr", ctypes.c_void_p)]


_dladdr_function = None


def _dladdr_fn():
    global _dladdr_function
    if _dladdr_function is None:
        # In libc from glibc 2.34 on (and in musl); in libdl.so.2 before.
        for name in (None, "libdl.so.2"):
            try:
                fn = ctypes.CDLL(name).dladdr
            except (OSError, AttributeError):
                continue
            fn.argtypes = [ctypes.c_void_p, ctypes.POINTER(_DlInfo)]
            fn.restype = ctypes.c_int
            _dladdr_function = fn
            break
        else:
            raise BindingError("the dynamic linker's dladdr() is not reachable from this Python "
                               "(neither in libc nor in libdl.so.2)")
    return _dladdr_function


@contextmanager
def loaded(path: Optional[str]) -> Iterator[Optional[int]]:
    """A handle on ``path`` if it is already loaded, else None (never loads anything).

    ``None`` for ``path`` is the main program (an interpreter with ``_ssl`` built in).
    RTLD_NOLOAD takes a reference on the object; it is given back on exit.
    """
    try:
        handle = _ctypes.dlopen(path, os.RTLD_LAZY | os.RTLD_NOLOAD)
    except OSError:
        yield None
        return
    try:
        yield handle
    finally:
        _ctypes.dlclose(handle)


def symbol(handle: int, name: str) -> int:
    """The address ``name`` resolves to in the lookup scope of ``handle``, or 0."""
    try:
        return int(_ctypes.dlsym(handle, name))
    except OSError:
        return 0


def c_library_functions(*names: str) -> List[int]:
    """The addresses of ``names`` as the program itself resolves them (the C library's,
    for functions newer than the glibc the wheels promise, which C then calls through a
    pointer); 0 for each one missing."""
    with loaded(None) as handle:
        return [symbol(handle, name) if handle else 0 for name in names]


def file_of(address: int) -> Tuple[str, int]:
    """The real path of the loaded object that holds ``address``, and its load base."""
    info = _DlInfo()
    if not _dladdr_fn()(ctypes.c_void_p(address), ctypes.byref(info)) or not info.dli_fname:
        raise BindingError(f"the dynamic linker does not know the address {address:#x}")
    return os.path.realpath(os.fsdecode(info.dli_fname)), int(info.dli_fbase or 0)
