"""The compiled cffi module, loaded once, and the process-wide switches around it.

Everything C-facing stays private: the rest of the package imports ``ffi`` and ``lib``
from here and never from ``_sesscache_cffi`` directly.
"""
from __future__ import annotations

import atexit

from ..errors import BindingError

try:
    from .._sesscache_cffi import ffi, lib
except ImportError as exc:  # pragma: no cover - depends on how the package was installed
    raise BindingError(
        "sesscache's compiled module is missing or does not load "
        f"({exc}). Install sesscache with pip (`pip install .` in a checkout builds it; it "
        "needs OpenSSL's headers: apt-get install libssl-dev, or dnf install openssl-devel)."
    ) from exc

# The function tables assume the LP64 ABI (long, time_t and uint64_t all 64 bits), which
# is what lets one declaration serve OpenSSL 1.1.1 to 4.0 alike.
if ffi.sizeof("long") != 8 or ffi.sizeof("void *") != 8:  # pragma: no cover
    raise BindingError("sesscache supports 64-bit (LP64) platforms only.")

MAX_INSTANCES = lib.SC_MAX_INSTANCES


def _python_is_finalizing() -> None:
    # After this, the C trampolines answer OpenSSL's safe defaults (no session, keep
    # nothing) instead of calling into an interpreter that is being torn down: contexts
    # freed during shutdown still flush their sessions through the remove callback.
    lib.sc_set_python_alive(0)


atexit.register(_python_is_finalizing)


def address(pointer) -> int:
    """The address held by a cdata pointer of any FFI instance, as an int."""
    return int(ffi.cast("uintptr_t", pointer))
