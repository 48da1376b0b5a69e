"""OpenSSL's own session-cache counters of the contexts a cache serves, added up.

Read with ``SSL_CTX_ctrl`` through each libssl copy's function table (``SSL_CTX_sess_hits``
and friends are macros over it): plain loads of counters OpenSSL keeps anyway, so reading
them costs a handshake nothing. A context counts from zero when it is made; a context that
is freed takes its counts with it, so the sums keep what was last read of it (a counter
must not go down). A forked child starts from what its inherited contexts held at the fork.
"""
from __future__ import annotations

import threading
import weakref
from typing import Any, Dict, Iterable, Tuple

from . import ffi, lib

#: name -> SSL_CTX_ctrl command. ``hits``: every handshake OpenSSL resumed (from its
#: in-process cache or a session the get callback returned); ``cb_hits``: sessions the get
#: callback returned; ``misses``: offered sessions its in-process cache did not hold;
#: ``timeouts``: offered sessions found expired; ``cache_full``: sessions dropped because its
#: in-process cache was full.
COUNTERS = {
    "hits": lib.SSL_CTRL_SESS_HIT,
    "cb_hits": lib.SSL_CTRL_SESS_CB_HIT,
    "misses": lib.SSL_CTRL_SESS_MISSES,
    "timeouts": lib.SSL_CTRL_SESS_TIMEOUTS,
    "cache_full": lib.SSL_CTRL_SESS_CACHE_FULL,
}


def read_context(api: Any, ctx: int) -> Dict[str, int]:
    """The counters of one live ``SSL_CTX`` (the caller keeps its Python context alive)."""
    pointer = ffi.cast("SSL_CTX *", ctx)
    return {name: int(api.SSL_CTX_ctrl(pointer, command, 0, ffi.NULL)) for name, command in COUNTERS.items()}


def sessions_held(api: Any, ctx: int) -> int:
    """Sessions in the context's in-process cache now (``SSL_CTX_sess_number``)."""
    return int(api.SSL_CTX_ctrl(ffi.cast("SSL_CTX *", ctx), lib.SSL_CTRL_SESS_NUMBER, 0, ffi.NULL))


class OpenSSLTally:
    """The sums over a cache's contexts, monotonic across contexts that come and go.

    ``read`` takes ``(key, owner, api, ctx)`` for each live context: ``owner`` is an object
    that lives exactly as long as the cache serves that context (its attachment), so a new
    context at a freed one's address is told apart."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # readers only (scrapes, the record publisher)
        # key -> (weakref to owner, last values read, values at the fork)
        self._seen: Dict[Any, Tuple[Any, Dict[str, int], Dict[str, int]]] = {}
        self._retired = dict.fromkeys(COUNTERS, 0)

    def read(self, live: Iterable[Tuple[Any, Any, Any, int]]) -> Dict[str, int]:
        with self._lock:
            totals = dict(self._retired)
            current: Dict[Any, Tuple[Any, Dict[str, int], Dict[str, int]]] = {}
            held = 0
            for key, owner, api, ctx, *_ in live:
                values = read_context(api, ctx)
                held += sessions_held(api, ctx)
                previous = self._seen.get(key)
                base = previous[2] if previous is not None and previous[0]() is owner else _ZERO
                current[key] = (weakref.ref(owner), values, base)
                for name in totals:
                    totals[name] += values[name] - base[name]
            for key, (ref, values, base) in self._seen.items():
                if key not in current or current[key][0]() is not ref():  # freed since
                    for name in self._retired:
                        self._retired[name] += values[name] - base[name]
                        totals[name] += values[name] - base[name]
            self._seen = current
            totals["sessions"] = held  # a gauge: the live contexts' caches now
            return totals

    def restart_after_fork(self, live: Iterable[Tuple[Any, Any, Any, int]]) -> None:
        """In a forked child: the inherited contexts' counts so far are the parent's."""
        self._lock = threading.Lock()
        self._retired = dict.fromkeys(COUNTERS, 0)
        self._seen = {}
        for key, owner, api, ctx, *_ in live:
            values = read_context(api, ctx)
            self._seen[key] = (weakref.ref(owner), values, values)


_ZERO = dict.fromkeys(COUNTERS, 0)
