"""Find the ``SSL_CTX *`` behind the TLS contexts Python users really have.

* ``OpenSSL.SSL.Context`` (pyOpenSSL): ``ctx._context`` is a cdata pointer of
  cryptography's FFI; the copy of libssl behind it is found by ``_instances``.
* ``ssl.SSLContext`` (stdlib): CPython keeps the ``SSL_CTX *`` as the first field after
  the object header of ``_ssl._SSLContext``. That layout is checked, the pointer is
  checked to be readable, and the context's options and verify mode, read through the
  pointer, must equal what Python reports, before the pointer is used.
* ``sesscache.testing`` contexts, made by sesscache's separately built test module on
  the libssl it links.

Anything else raises :class:`UnsupportedContext` saying what is supported.
"""
from __future__ import annotations

import ctypes
import ssl
import sys
from dataclasses import dataclass
from typing import Any, Optional

from .. import _compat
from . import copies as _instances
from . import address, ffi, lib
from .copies import LibsslInstance
from ..errors import UnsupportedContext

_HEADER = object.__basicsize__  # the PyObject header: 16 bytes, 32 with Py_TRACE_REFS


@dataclass(frozen=True)
class BoundContext:
    """A Python TLS context, the libssl copy that owns it and its ``SSL_CTX`` address."""

    instance: LibsslInstance
    ctx: int  #: the SSL_CTX address
    kind: str  #: "pyopenssl", "stdlib" or "sesscache"
    owner: Any  #: the Python context object

    @property
    def pointer(self):
        return ffi.cast("SSL_CTX *", self.ctx)


def bind_context(context: Any) -> BoundContext:
    """Resolve a Python TLS context to its libssl copy and ``SSL_CTX``, verified.

    A ``BoundContext`` is returned as it is: code that makes several calls for one context
    (``SessionCache.attach``) resolves it once."""
    if type(context) is _pyopenssl_context_type:  # (the usual case, asked first)
        return _bind_pyopenssl(context)
    if isinstance(context, BoundContext):
        return context
    if _is_pyopenssl_context(context):
        return _bind_pyopenssl(context)
    if isinstance(context, ssl.SSLContext):
        return _bind_stdlib(context)
    bound = getattr(context, "_sesscache_bound", None)
    if isinstance(bound, BoundContext):
        return bound
    raise UnsupportedContext(
        f"expected an OpenSSL.SSL.Context (pyOpenSSL) or an ssl.SSLContext, got "
        f"{type(context).__module__}.{type(context).__qualname__}. Pass the server's TLS "
        "context itself (for asyncio, the ssl= argument you give start_server).")


#: ``OpenSSL.SSL.Context`` once one was seen (pyOpenSSL is imported by then).
_pyopenssl_context_type: Optional[type] = None


def _is_pyopenssl_context(context: Any) -> bool:
    global _pyopenssl_context_type
    module = sys.modules.get("OpenSSL.SSL")
    if module is None or not isinstance(context, module.Context):
        return False
    _pyopenssl_context_type = module.Context
    return True


def _bind_pyopenssl(context: Any) -> BoundContext:
    instance = _instances.instance_for_cryptography()
    their_get_options = _their_get_options or _cryptography_get_options()
    pointer = _compat.pyopenssl_ctx(context)
    ctx = int(ffi.cast("uintptr_t", pointer))  # (address(), inline: asked per attach)
    # The same function reached both ways must read the same state.
    theirs = int(their_get_options(pointer))
    ours = lib.sc_options_at(instance.slot, ctx) & 0xFFFFFFFFFFFFFFFF  # (uint64_t in OpenSSL)
    if theirs != ours:
        raise UnsupportedContext(
            "pyOpenSSL's context does not read the same through sesscache's function table "
            f"(options {theirs:#x} vs {ours:#x}); refusing to touch it.")
    return BoundContext(instance, ctx, "pyopenssl", context)


#: cryptography's own SSL_CTX_get_options, looked up once (it is asked per context).
_their_get_options: Optional[Any] = None


def _cryptography_get_options() -> Any:
    global _their_get_options
    from cryptography.hazmat.bindings.openssl.binding import Binding

    _their_get_options = Binding.lib.SSL_CTX_get_options
    return _their_get_options


def _bind_stdlib(context: ssl.SSLContext) -> BoundContext:
    if sys.implementation.name != "cpython":
        raise UnsupportedContext(
            f"stdlib ssl contexts are supported on CPython only, not {sys.implementation.name}: "
            "sesscache finds the SSL_CTX by CPython's object layout. Use pyOpenSSL instead.")
    base = _compat.stdlib_context_type()
    if base.__basicsize__ < _HEADER + ffi.sizeof("void *"):
        raise UnsupportedContext("this CPython's _ssl._SSLContext layout is not the one sesscache knows")
    instance = _instances.stdlib_instance()
    slot = ffi.cast("void **", id(context) + _HEADER)
    candidate = slot[0]
    if candidate == ffi.NULL or address(candidate) % 8 or not lib.sc_memory_readable(candidate, 64):
        raise UnsupportedContext(_stdlib_layout_error("the pointer is not readable"))
    ctx = ffi.cast("SSL_CTX *", candidate)
    api = instance.api
    options = int(api.SSL_CTX_get_options(ctx))
    # CPython reports SSL_VERIFY_PEER as CERT_OPTIONAL and PEER|FAIL_IF_NO_PEER_CERT as
    # CERT_REQUIRED.
    verify = {0: 0, 1: 1, 3: 2}.get(int(api.SSL_CTX_get_verify_mode(ctx)), -1)
    if options != int(context.options) or verify != int(context.verify_mode):
        raise UnsupportedContext(_stdlib_layout_error(
            f"options {options:#x}/verify {verify} through the pointer, "
            f"{int(context.options):#x}/{int(context.verify_mode)} from Python"))
    return BoundContext(instance, address(candidate), "stdlib", context)


def _stdlib_layout_error(detail: str) -> str:
    return (f"could not verify the SSL_CTX inside this ssl.SSLContext ({detail}). This Python's "
            f"_ssl module ({sys.version.split()[0]}) does not have the layout sesscache checks "
            "for; use pyOpenSSL contexts, or report your Python build.")


# --- connections seen by the callbacks ---------------------------------------------

def connection_for(bound: BoundContext, ssl_ptr) -> Optional[Any]:
    """The Python connection object for an ``SSL *`` in a callback, or None.

    pyOpenSSL: the ``Connection`` (from pyOpenSSL's own reverse mapping). stdlib: the
    ``SSLObject``/``SSLSocket``, recovered from the ``SSL``'s app data, which CPython sets
    to its ``_ssl._SSLSocket``; the object's type is checked before it is touched.
    """
    if ssl_ptr == ffi.NULL:
        return None
    if bound.kind == "pyopenssl":
        return _pyopenssl_connection(ssl_ptr)
    if bound.kind == "stdlib":
        return _stdlib_connection(bound, ssl_ptr)
    return None


def _pyopenssl_connection(ssl_ptr) -> Optional[Any]:
    module = sys.modules.get("OpenSSL.SSL")
    if module is None:
        return None
    from cryptography.hazmat.bindings.openssl.binding import Binding

    key = Binding.ffi.cast("SSL *", address(ssl_ptr))
    return _compat.pyopenssl_connection(module, key)


_OB_TYPE = _HEADER - ffi.sizeof("void *")  # ob_type is the header's last field


def _stdlib_connection(bound: BoundContext, ssl_ptr) -> Optional[Any]:
    app_data = bound.instance.api.SSL_get_ex_data(ssl_ptr, 0)  # SSL_get_app_data
    if app_data == ffi.NULL:
        return None
    ob_type = ffi.cast("void **", address(app_data) + _OB_TYPE)[0]
    if address(ob_type) != id(_compat.stdlib_socket_type()):
        return None
    sslobj = ctypes.cast(address(app_data), ctypes.py_object).value
    owner = sslobj.owner
    return owner if owner is not None else sslobj
