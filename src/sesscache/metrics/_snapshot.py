"""What one process's counters are, as plain data: read for a scrape, or written to the
store as that process's record (``records.py``), and turned into Prometheus families by
the same code either way (``_families.py``), so a process's own ``/metrics`` and the
server-wide one cannot disagree.

Everything here is read from counters the code keeps anyway (the cache's, the C fast
path's, OpenSSL's, the store wrapper's): a scrape takes no lock a handshake takes, except
the cache's own counter lock for the copy of its counters, as ``cache.stats`` always has.
"""
from __future__ import annotations

import time
from typing import Any, Dict, Optional

from ..stores.redis import RedisStore
from ..stores.resilient import ResilientStore

#: The outcomes of a lookup that reached sesscache (``result`` label).
LOOKUP_RESULTS = ("hit", "miss", "rejected", "expired", "error")


def cache_snapshot(cache: Any) -> Dict[str, Any]:
    """The counters of a :class:`~sesscache.SessionCache` (this process's), as JSON-able data."""
    outcomes = cache.outcomes()
    stats = outcomes["stats"]
    openssl = cache.openssl_counts()
    snap: Dict[str, Any] = {
        "lookups": outcomes["lookups"],
        "stored": stats.stores,
        "not_stored": outcomes["not_stored"],
        "removes": stats.removes,
        "evictions": stats.evictions,
        "openssl": openssl,
        "store_seconds": {op: [counts, total] for op, (counts, total) in cache.store_call_times().items()},
    }
    snap.update(store_snapshot(cache.store))
    return snap


def store_snapshot(store: Any) -> Dict[str, Any]:
    """The store wrapper's breaker and write queue, and a Redis local replica's size and
    last message, where the store has them."""
    out: Dict[str, Any] = {}
    if isinstance(store, ResilientStore):
        stats = store.stats
        out["store"] = {
            "paused": stats.paused_now,
            "pauses": stats.pauses,
            "pending_writes": stats.pending,
            "writes_dropped": stats.writes_dropped,
            "write_errors": stats.write_errors,
            "lookup_errors": stats.lookup_errors,
            "ring_dropped": stats.ring_dropped,
        }
    backend = store.backend if isinstance(store, ResilientStore) else store
    replica = backend.replica if isinstance(backend, RedisStore) else None  # local_replica=N
    if replica is not None:
        out["replica"] = {
            "sessions": len(replica.table),
            "max_sessions": replica.max_sessions,
            "last_message": replica.last_message,
            "received": replica.received,
            "malformed": replica.malformed,
        }
    return out


def ticket_keys_snapshot(keys: Any, now: Optional[float] = None) -> Dict[str, Any]:
    """A :class:`~sesscache.TicketKeys`' counters, ring generation and current key age."""
    now = time.time() if now is None else now
    stats = keys.stats
    serving = keys.keys()
    current = serving[0] if serving else None
    return {
        "issued": stats.issued,
        "resumed": stats.resumed,
        "renewed": stats.renewed,
        "refused": {"unknown_key": stats.unknown_key, "expired_key": stats.expired_key,
                    "rejected": stats.rejected},
        "no_key": stats.no_key,
        "errors": stats.errors,
        "rotations": stats.rotations,
        "store_errors": stats.store_errors,
        "local_keys": stats.local_keys,
        "generation": keys.generation,
        "key_age": current.age(now) if current is not None else None,
        "key_local": bool(current is not None and current.role == "local"),
    }


def resumption(snap: Dict[str, Any]) -> Dict[str, int]:
    """``resumed``: handshakes resumed, by OpenSSL's in-process cache without asking sesscache
    (``SSL_CTX_sess_hits - SSL_CTX_sess_cb_hits``) or from the store (lookups that hit); and
    ``offered``: those plus every offer that did not resume (lookups that did not hit, and
    offers OpenSSL found expired in its own cache).

    Not ``SSL_CTX_sess_hits`` alone: a context freed between two reads takes what it counted
    since the last one with it (gunicorn's ``reuse_context=False`` frees one per connection),
    while lookups are counted by the cache itself. Such a context's in-process cache never
    answers anyway: it dies with its one connection."""
    openssl = snap.get("openssl", {})
    lookups = snap.get("lookups", {})
    internal = max(int(openssl.get("hits", 0)) - int(openssl.get("cb_hits", 0)), 0)
    resumed = internal + int(lookups.get("hit", 0))
    missed = sum(int(v) for k, v in lookups.items() if k != "hit")
    return {"resumed": resumed, "offered": resumed + missed + int(openssl.get("timeouts", 0))}
