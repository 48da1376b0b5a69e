"""When a session id sesscache's servers issued was made (see ``_cffi_src/session_ids.py``).

Every server context a :class:`~sesscache.SessionCache` serves issues session ids (TLS 1.2)
and TLS 1.3 tickets (which with ``OP_NO_TICKET`` are session ids) whose last 8 bytes are
``b"sc"`` and the issue time in milliseconds. A lookup that misses in a store whose writes
go behind the handshake reads it to tell a session whose write has not landed yet (a
client that reconnected at once to another server) from one that is gone.
"""
from __future__ import annotations

from typing import Optional

__all__ = ["issued_at", "STAMP_MARKER"]

#: Bytes 24-25 of a stamped id; bytes 26-31 are milliseconds since the epoch, big-endian.
STAMP_MARKER = b"sc"


def issued_at(session_id: bytes) -> Optional[float]:
    """Seconds since the epoch at which a sesscache server issued ``session_id``, or None
    for an id without the stamp (issued by another server or an older sesscache)."""
    if len(session_id) != 32 or session_id[24:26] != STAMP_MARKER:
        return None
    return int.from_bytes(session_id[26:32], "big") / 1000.0
