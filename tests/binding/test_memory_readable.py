"""sc_memory_readable, the check before a stdlib context's SSL_CTX pointer (found by
CPython's object layout) is trusted: readable memory yes, an unmapped page no, and a span
that runs from a mapped page into an unmapped one no."""
from __future__ import annotations

import ctypes
import mmap

from sesscache._binding import ffi, lib

PAGE = mmap.PAGESIZE


def _two_pages_second_unmapped() -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                          ctypes.c_long]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    base = libc.mmap(None, 2 * PAGE, mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS,
                     -1, 0)
    assert base not in (None, ctypes.c_void_p(-1).value), ctypes.get_errno()
    assert libc.munmap(base + PAGE, PAGE) == 0
    return base


def test_readable_memory_is_readable():
    buffer = ffi.new("char[]", 3 * 64 + 5)
    assert lib.sc_memory_readable(buffer, 3 * 64 + 5) == 1


def test_the_zero_page_and_an_unmapped_page_are_not():
    assert lib.sc_memory_readable(ffi.cast("void *", 8), 64) == 0
    base = _two_pages_second_unmapped()
    assert lib.sc_memory_readable(ffi.cast("void *", base), 64) == 1
    assert lib.sc_memory_readable(ffi.cast("void *", base + PAGE), 64) == 0
    # From the mapped page into the unmapped one: the first part reads, the rest does not.
    assert lib.sc_memory_readable(ffi.cast("void *", base + PAGE - 32), 64) == 0
    assert lib.sc_memory_readable(ffi.cast("void *", base + PAGE - 64), 64) == 1
