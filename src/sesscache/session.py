"""``Session``: one ``SSL_SESSION`` reference, owned by a Python object.

A ``Session`` holds exactly one reference on its ``SSL_SESSION`` in the libssl copy that
made it, released when the object is closed or collected. Serialization is OpenSSL's own
DER (``i2d_SSL_SESSION`` / ``d2i_SSL_SESSION``), done by the same copy.

A session holds the TLS master secret: whoever has its bytes can decrypt the traffic of
every connection resumed from it. Store them like a private key (``SessionCache`` can
seal them at rest).
"""
from __future__ import annotations

from typing import Any, Optional, Union

from . import _compat
from ._binding import address, ffi, lib
from ._binding.copies import LibsslInstance
from .errors import SessionError

#: Bigger than any real session (a few hundred bytes, a few KiB with a client certificate
#: chain); a guard against feeding d2i something that is plainly not a session.
MAX_DER_SIZE = 1 << 20

_PROTOCOLS = {0x0300: "SSLv3", 0x0301: "TLSv1", 0x0302: "TLSv1.1", 0x0303: "TLSv1.2",
              0x0304: "TLSv1.3"}

BytesLike = Union[bytes, bytearray, memoryview]


class Session:
    """A TLS session (``SSL_SESSION``) of one copy of libssl.

    Made by sesscache (handed to callbacks, parsed with :meth:`from_bytes`) or bridged
    from pyOpenSSL with :meth:`from_pyopenssl`. Use :meth:`close` (or ``with``) to drop
    the reference early; otherwise it goes when the object is collected.
    """

    __slots__ = ("_instance", "_ptr", "_context", "__weakref__")

    def __init__(self) -> None:
        raise TypeError("Sessions come from callbacks, Session.from_bytes() or Session.from_pyopenssl()")

    @classmethod
    def _adopt(cls, instance: LibsslInstance, pointer, context: Any = None) -> "Session":
        """Wrap ``pointer``, taking over the one reference the caller owns."""
        self = object.__new__(cls)
        self._instance = instance
        self._ptr = ffi.gc(ffi.cast("SSL_SESSION *", pointer), instance.api.SSL_SESSION_free)
        self._context = context
        return self

    @classmethod
    def _borrow(cls, instance: LibsslInstance, pointer, context: Any = None) -> "Session":
        """Wrap ``pointer`` with a reference of its own (the caller keeps theirs)."""
        if not instance.api.SSL_SESSION_up_ref(pointer):
            raise SessionError("SSL_SESSION_up_ref failed")
        return cls._adopt(instance, pointer, context)

    # --- construction from outside ---------------------------------------------

    @classmethod
    def from_bytes(cls, der: BytesLike, context: Any) -> "Session":
        """Parse DER from :meth:`to_bytes` with the libssl copy that owns ``context``.

        ``context`` is the ``OpenSSL.SSL.Context`` or ``ssl.SSLContext`` the session will
        be used with: a session must be parsed by the same copy of OpenSSL.
        Raises :class:`SessionError` for bytes that are not one complete session.
        """
        from ._binding.find_context import bind_context

        instance = context if isinstance(context, LibsslInstance) else bind_context(context).instance
        owner = None if isinstance(context, LibsslInstance) else context
        return cls._adopt(instance, session_from_der(instance, der), owner)

    @classmethod
    def from_pyopenssl(cls, session: Any) -> "Session":
        """A ``Session`` sharing the ``SSL_SESSION`` of an ``OpenSSL.SSL.Session``."""
        from ._binding.copies import instance_for_cryptography

        pointer, context = _compat.pyopenssl_session_parts(session)
        if pointer is None:
            raise TypeError(f"expected an OpenSSL.SSL.Session, got {type(session).__name__}")
        instance = instance_for_cryptography()
        return cls._borrow(instance, ffi.cast("SSL_SESSION *", address(pointer)), context)

    def to_pyopenssl(self, context: Any = None) -> Any:
        """This session as an ``OpenSSL.SSL.Session`` for ``Connection.set_session``.

        pyOpenSSL 26.3+ only accepts a session on a connection of the same ``Context``:
        pass that context unless the session came from a callback on it.
        """
        from OpenSSL import SSL
        from cryptography.hazmat.bindings.openssl.binding import Binding

        from ._binding.copies import instance_for_cryptography

        if instance_for_cryptography() is not self._instance:
            raise SessionError(
                f"this session belongs to {self._instance.describe()}, but pyOpenSSL runs on "
                f"{instance_for_cryptography().describe()}; a session cannot move between "
                "copies of OpenSSL. Re-create it with Session.from_bytes(der, pyopenssl_context).")
        context = context if context is not None else self._context
        if context is not None and not isinstance(context, SSL.Context):
            raise TypeError("to_pyopenssl() needs the OpenSSL.SSL.Context the session is for")
        self._check_open()
        self._instance.api.SSL_SESSION_up_ref(self._ptr)
        return _compat.make_pyopenssl_session(SSL.Session, Binding.ffi.gc(
            Binding.ffi.cast("SSL_SESSION *", address(self._ptr)), Binding.lib.SSL_SESSION_free), context)

    # --- serialization -------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """The session as DER, as ``i2d_SSL_SESSION`` writes it (it includes the secret)."""
        self._check_open()
        return session_to_der(self._instance, self._ptr)

    # --- properties --------------------------------------------------------------------

    @property
    def libssl(self) -> LibsslInstance:
        """The copy of libssl this session belongs to."""
        return self._instance

    @property
    def id(self) -> bytes:
        """The session id (0 to 32 bytes; TLS 1.3 stateless tickets have one too)."""
        return self._bytes(self._instance.api.SSL_SESSION_get_id)

    @property
    def id_context(self) -> bytes:
        """The session id context of the server context that made it (up to 32 bytes)."""
        return self._bytes(self._instance.api.SSL_SESSION_get0_id_context)

    def _bytes(self, getter: Any) -> bytes:
        """What ``getter(session, &length)`` points to (an id or an id context)."""
        self._check_open()
        length = ffi.new("unsigned int *")
        data = getter(self._ptr, length)
        return ffi.unpack(ffi.cast("char *", data), length[0])

    @property
    def time(self) -> int:
        """When the session was made (or last refreshed), in seconds since the epoch."""
        self._check_open()
        return int(lib.sc_session_time(self._instance.slot, self._ptr))

    @property
    def timeout(self) -> int:
        """The session's lifetime in seconds, counted from :attr:`time`."""
        return self._int(self._instance.api.SSL_SESSION_get_timeout)

    @property
    def expires_at(self) -> int:
        return self.time + self.timeout

    @property
    def protocol_version(self) -> int:
        return self._int(self._instance.api.SSL_SESSION_get_protocol_version)

    def _int(self, getter: Any) -> int:
        """``getter(session)`` as an int (a timeout, a protocol version)."""
        self._check_open()
        return int(getter(self._ptr))

    @property
    def protocol(self) -> str:
        """``"TLSv1.2"``, ``"TLSv1.3"``, ..."""
        version = self.protocol_version
        return _PROTOCOLS.get(version, f"0x{version:04x}")

    @property
    def cipher(self) -> Optional[str]:
        """The OpenSSL name of the negotiated cipher suite."""
        self._check_open()
        cipher = self._instance.api.SSL_SESSION_get0_cipher(self._ptr)
        if cipher == ffi.NULL:
            return None
        return ffi.string(self._instance.api.SSL_CIPHER_get_name(cipher)).decode()

    @property
    def server_name(self) -> Optional[str]:
        """The SNI host name the session was made for, if any."""
        self._check_open()
        name = self._instance.api.SSL_SESSION_get0_hostname(self._ptr)
        return None if name == ffi.NULL else ffi.string(name).decode("ascii", "replace")

    @property
    def is_resumable(self) -> bool:
        """Whether OpenSSL would resume from it (false for sessions marked bad)."""
        self._check_open()
        return bool(self._instance.api.SSL_SESSION_is_resumable(self._ptr))

    # --- life cycle -----------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._ptr is None

    def close(self) -> None:
        """Drop this object's reference now; the object is unusable afterwards."""
        pointer, self._ptr = self._ptr, None
        if pointer is not None:
            ffi.release(pointer)

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._ptr is None:
            raise SessionError("this Session was closed")

    def _new_reference(self):
        """A pointer carrying a fresh reference, for handing to OpenSSL."""
        self._check_open()
        if not self._instance.api.SSL_SESSION_up_ref(self._ptr):
            raise SessionError("SSL_SESSION_up_ref failed")
        return self._ptr

    def __repr__(self) -> str:
        if self._ptr is None:
            return "<Session closed>"
        return (f"<Session {self.protocol} id={self.id.hex()[:16]}... cipher={self.cipher} "
                f"timeout={self.timeout}s on {self._instance.version}>")


def session_to_der(instance: LibsslInstance, pointer) -> bytes:
    """DER of an ``SSL_SESSION`` of ``instance``; :class:`SessionError` if it has none."""
    buffer = ffi.new("unsigned char[]", _DER_GUESS)
    length = lib.sc_session_der(instance.slot, pointer, buffer, _DER_GUESS)
    if length < 0:  # larger than the guess (a long client certificate chain): exact size
        buffer = ffi.new("unsigned char[]", -length)
        length = lib.sc_session_der(instance.slot, pointer, buffer, -length)
    if length <= 0:
        raise SessionError("OpenSSL could not serialize this session (i2d_SSL_SESSION failed)")
    return ffi.unpack(ffi.cast("char *", buffer), length)


#: Most sessions serialize to a few hundred bytes; one buffer of this size fits them.
_DER_GUESS = 2048


def session_from_der(instance: LibsslInstance, der: BytesLike):
    """A new ``SSL_SESSION *`` (one reference, the caller's) parsed by ``instance``."""
    if not isinstance(der, (bytes, bytearray, memoryview)):
        raise TypeError(f"session bytes must be bytes-like, not {type(der).__name__}")
    size = len(der) if not isinstance(der, memoryview) else der.nbytes
    if size == 0:
        raise SessionError("empty bytes are not a session")
    if size > MAX_DER_SIZE:
        raise SessionError(f"{size} bytes is larger than any TLS session (limit {MAX_DER_SIZE}); "
                           "these bytes are not a session")
    pointer = lib.sc_session_from_der(instance.slot, ffi.from_buffer(der), size)
    if pointer == ffi.NULL:
        raise SessionError(
            f"these {size} bytes are not a TLS session that {instance.version} can read "
            "(corrupt, truncated, sealed, or not DER from i2d_SSL_SESSION)")
    return pointer


# --- for the layers that make and read sessions (callbacks, contexts, testing) -----------------

def adopt_session(instance: LibsslInstance, pointer: Any, context: Any = None) -> Session:
    """A :class:`Session` over ``pointer``, taking over the one reference the caller owns."""
    return Session._adopt(instance, pointer, context)


def borrow_session(instance: LibsslInstance, pointer: Any, context: Any = None) -> Session:
    """A :class:`Session` over ``pointer`` with a reference of its own (the caller keeps theirs)."""
    return Session._borrow(instance, pointer, context)


def new_session_reference(session: Session) -> Any:
    """``session``'s ``SSL_SESSION *`` carrying a fresh reference, for handing to OpenSSL."""
    return session._new_reference()


def session_pointer(session: Session) -> Any:
    """``session``'s ``SSL_SESSION *`` (its own reference: valid while it is open; None once
    closed)."""
    return session._ptr
