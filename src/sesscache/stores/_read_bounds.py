"""Reads bounded by a size limit: a value larger than any sesscache writes is refused
without being read whole.

Anyone with write access to a store can put a 64 MiB value under a session's key; read
whole, each lookup of it costs the handshake thread hundreds of milliseconds and the
process hundreds of megabytes. The network and file stores read at most
``max_value_bytes + 1`` bytes of a value in the same round trip as the lookup (Redis:
``GETRANGE`` pipelined with ``EXISTS``; SQLite: ``length()``, which does not read a
BLOB's pages), and a value over the limit is a miss, counted in the store's
``oversize_reads`` and logged once per burst. Memcached's own item size (``-I``, 1 MiB by
default) bounds what it can send; a value over ``max_value_bytes`` is refused after it.

The default limit, 1 MiB, is a hundred times the largest session sesscache stores by
default (``max_session_size``, 10 KiB) and far above a ticket-key ring (about 1 KiB).
"""
from __future__ import annotations

import logging
from typing import Any

from .._burstlog import BurstLogger

#: The largest value a store hands back (bytes); set ``store.max_value_bytes`` to change it.
DEFAULT_MAX_VALUE_BYTES = 1024 * 1024

_log = logging.getLogger("sesscache.stores")
_burst = BurstLogger(_log, 10.0)


def refuse_oversize(store: Any, size: str) -> None:
    """Count and log (once per burst) a value of ``size`` (text) that ``store`` refused."""
    store.oversize_reads += 1
    _burst.log(logging.WARNING, f"oversize-{id(store)}",
               "sesscache: %s refused a stored value of %s (max_value_bytes=%d): treated as a "
               "miss, a full handshake; sesscache never writes such values, so something else "
               "wrote it under a session key (raise max_value_bytes if that is intended)",
               type(store).__name__, size, store.max_value_bytes)
