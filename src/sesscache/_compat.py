"""The private parts of other libraries that sesscache must read, in one place, each with why.

Nothing else in ``src/`` reads another library's (or another sesscache module's) private
members: ``tests/test_architecture.py`` counts them. When pyOpenSSL, cryptography or CPython
change one of these, this file is where it breaks, and the only one to change.
"""
from __future__ import annotations

from typing import Any, Callable, Optional


# --- pyOpenSSL ------------------------------------------------------------------------------

def pyopenssl_ctx(context: Any) -> Any:
    """The ``SSL_CTX *`` (a cffi pointer of cryptography's binding) behind an
    ``OpenSSL.SSL.Context``. Why: the callbacks are installed on the SSL_CTX itself, and
    pyOpenSSL has no public accessor for it (``Context._context`` since its first release)."""
    return context._context


def pyopenssl_context_used(context: Any) -> bool:
    """True when an ``OpenSSL.SSL.Context`` has made a ``Connection``. Why: pyOpenSSL 26.2+
    refuses changes to such a context (``Context._used``, set by ``Connection()``), and
    sesscache says so before it changes anything rather than fail half way."""
    return bool(getattr(context, "_used", False))


def pyopenssl_connection(module: Any, ssl_pointer: Any) -> Optional[Any]:
    """The ``OpenSSL.SSL.Connection`` of an ``SSL *``. Why: a callback receives the
    ``SSL *``, and pyOpenSSL maps it back to its object only in
    ``Connection._reverse_mapping`` (a WeakValueDictionary its own callbacks use)."""
    return module.Connection._reverse_mapping.get(ssl_pointer)


def pyopenssl_raise_ssl_error(connection: Any) -> Callable[..., Any]:
    """``Connection._raise_ssl_error``, which pyOpenSSL calls after every OpenSSL call. Why: an
    exception raised inside a session callback is re-raised from the ``Connection`` call that
    drove the handshake, as pyOpenSSL does for its own callbacks; a per-connection attribute
    shadows this method once."""
    return type(connection)._raise_ssl_error


def pyopenssl_session_parts(session: Any) -> "tuple[Any, Any]":
    """``(SSL_SESSION pointer or None, Context or None)`` of an ``OpenSSL.SSL.Session``. Why:
    pyOpenSSL exposes neither (``Session._session``, ``Session._context``)."""
    return getattr(session, "_session", None), getattr(session, "_context", None)


def make_pyopenssl_session(session_class: Any, pointer: Any, context: Any) -> Any:
    """An ``OpenSSL.SSL.Session`` owning ``pointer`` (a reference the caller took), bound to
    ``context``. Why: pyOpenSSL has no constructor from an ``SSL_SESSION *``; its own
    ``Connection.get_session`` builds one this way."""
    wrapped = session_class.__new__(session_class)
    wrapped._session = pointer
    wrapped._context = context
    return wrapped


# --- CPython ----------------------------------------------------------------------------------

def stdlib_context_type() -> type:
    """``_ssl._SSLContext``, the C type behind ``ssl.SSLContext``. Why: the ``SSL_CTX *`` is
    read at a fixed offset of its object layout, checked against its ``__basicsize__``."""
    import _ssl

    return _ssl._SSLContext


def stdlib_socket_type() -> type:
    """``_ssl._SSLSocket``, the object CPython stores as an ``SSL``'s app data. Why: to map an
    ``SSL *`` in a callback back to its ``SSLObject``/``SSLSocket``, its type is checked first."""
    import _ssl

    return _ssl._SSLSocket


# --- CPython -------------------------------------------------------------------------------------

def caller_frame(depth: int) -> Any:
    """``sys._getframe(depth + 1)``: the frame of a caller of the function calling this. Why:
    gunicorn reads its server hooks (``on_starting``, ``post_worker_init``) from a config file's
    top-level names; ``ssl_context_hook()`` called there puts its own in that namespace, and
    only the caller's frame tells it whether it runs at a config file's top level."""
    import sys

    return sys._getframe(depth + 1)


# --- Twisted --------------------------------------------------------------------------------------

def twisted_parse_ssl() -> Callable[..., Any]:
    """``twisted.internet.endpoints._parseSSL``. Why: the ``sesscache-ssl:`` endpoint takes the
    ``ssl:`` endpoint's parameters, parsed by Twisted's own parser so that they mean exactly
    what they mean there; Twisted exposes it only under this name."""
    from twisted.internet.endpoints import _parseSSL

    return _parseSSL


# --- asyncio ------------------------------------------------------------------------------------

def running_loop() -> Any:
    """``asyncio._get_running_loop()``: the running event loop, or None. Why: the client
    cache asks it at every connection whether it runs on an event loop (where it must not
    touch the store); the public ``asyncio.get_running_loop()`` answers "no" by raising,
    an exception per connection of every synchronous client."""
    import asyncio

    return asyncio._get_running_loop()


def sslproto_app_transport(ssl_protocol: Any) -> Any:
    """The transport ``loop.start_tls`` returns, from asyncio's ``SSLProtocol``. Why:
    :mod:`sesscache.aio` drives ``SSLProtocol`` itself (to replay the ClientHello it read),
    and takes the result where ``start_tls`` does (``SSLProtocol._app_transport``)."""
    return ssl_protocol._app_transport
