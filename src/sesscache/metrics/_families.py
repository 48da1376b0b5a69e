"""Prometheus metric families from snapshots (``_snapshot.py``): one process's, or many
processes' records with ``host`` and ``pid`` labels. Needs ``prometheus_client``."""
from __future__ import annotations

from typing import Any, Dict, Iterable, List, Sequence, Tuple

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from .._call_times import BUCKETS
from ._snapshot import LOOKUP_RESULTS, resumption

Labelled = Sequence[Tuple[Dict[str, str], Dict[str, Any]]]

#: name -> help text, one place for the code and docs/monitoring.md (tests compare them).
HELP = {
    "sesscache_lookups_total":
        "Session lookups that reached sesscache (OpenSSL's in-process cache did not hold the "
        "session), by outcome: hit (resumed from the store), miss (the store had nothing), "
        "rejected (tampered, foreign, or made for another name, certificate or context), "
        "expired (past its lifetime), error (the store failed or is paused).",
    "sesscache_sessions_stored_total": "Sessions written to the store.",
    "sesscache_sessions_not_stored_total":
        "New sessions not written to the store, by reason: stateless_ticket (TLS 1.3 stateless "
        "tickets are never looked up: set OP_NO_TICKET), oversize (over max_session_size), "
        "expired, rejected, error (the store write failed).",
    "sesscache_session_removes_total":
        "Sessions OpenSSL removed from its in-process cache (counted, never forwarded to the "
        "store, whose time to live does the expiring). Can exceed sessions stored: that cache also "
        "holds the sessions this process resumed from the store, and OpenSSL removes a session when "
        "it expires, when its connection closes without close_notify, when the cache is full, and "
        "a TLS 1.3 session when it is used where early data and anti-replay are on.",
    "sesscache_store_evictions_total": "Entries the store evicted to make room (MemoryStore).",
    "sesscache_openssl_resumed_total":
        "Handshakes OpenSSL resumed on the contexts sesscache serves, whoever held the session "
        "(SSL_CTX_sess_hits; a context freed between two scrapes takes its last counts with it).",
    "sesscache_openssl_internal_hits_total":
        "Handshakes resumed without asking sesscache: from OpenSSL's in-process cache, or from a "
        "stateless ticket (SSL_CTX_sess_hits - SSL_CTX_sess_cb_hits).",
    "sesscache_openssl_misses_total":
        "Offered sessions OpenSSL's in-process cache did not hold (SSL_CTX_sess_misses); each "
        "then became a sesscache lookup.",
    "sesscache_openssl_timeouts_total":
        "Offered sessions OpenSSL found expired (SSL_CTX_sess_timeouts).",
    "sesscache_openssl_cache_full_total":
        "Sessions OpenSSL dropped because its in-process cache was full (SSL_CTX_sess_cache_full).",
    "sesscache_resumed_sessions_total":
        "Handshakes resumed: by OpenSSL's in-process cache without asking sesscache, or from the "
        "store (sesscache_openssl_internal_hits_total + sesscache_lookups_total{result=\"hit\"}). "
        "Resumption rate: this over sesscache_offered_sessions_total.",
    "sesscache_openssl_cached_sessions":
        "Sessions in OpenSSL's in-process caches of the contexts sesscache serves, now "
        "(SSL_CTX_sess_number).",
    "sesscache_offered_sessions_total":
        "Handshakes where the client offered a session: resumed, plus lookups that did not hit, "
        "plus offers OpenSSL found expired.",
    "sesscache_store_call_duration_seconds":
        "Seconds a handshake waited for a store call made from Python, by operation (lookup; "
        "write: for a network store only its hand-over to the writer thread). Lookups the C "
        "fast path answers from memory are not store calls.",
    "sesscache_store_paused":
        "Store breakers open now (1: the store, or that many cluster nodes, paused after "
        "repeated failures; lookups are full handshakes at no wait).",
    "sesscache_store_pauses_total": "Times the store (or a cluster node) was paused.",
    "sesscache_store_pending_writes": "Writes queued for the store's background writer, or being written.",
    "sesscache_store_writes_dropped_total":
        "Writes dropped at once because max_pending_writes were queued already.",
    "sesscache_store_write_errors_total": "Queued writes the store refused or did not answer.",
    "sesscache_store_ring_dropped_total":
        "New sessions the C fast path dropped because the new-session ring to the writer thread "
        "was full (they stay in this process only).",
    "sesscache_replica_sessions": "Sessions in this process's local replica of Redis.",
    "sesscache_replica_max_sessions": "The local replica's capacity (local_replica=N).",
    "sesscache_replica_last_message_timestamp_seconds":
        "When the local replica last received a message (Unix time; 0: never). "
        "time() - this is its lag while sessions are being written.",
    "sesscache_replica_messages_total": "Messages the local replica received.",
    "sesscache_replica_malformed_messages_total": "Messages or entries the local replica could not read.",
    "sesscache_ticket_keys_issued_total": "Session tickets encrypted with a shared ticket key.",
    "sesscache_ticket_keys_resumed_total": "Handshakes resumed from a ticket under a key of the ring.",
    "sesscache_ticket_keys_renewed_total": "Of them, under a previous key (a fresh ticket was issued).",
    "sesscache_ticket_keys_refused_total":
        "Tickets that did not resume, by reason: unknown_key (another deployment, too old), "
        "expired_key, rejected (tampered or unusable).",
    "sesscache_ticket_keys_no_key_total":
        "Tickets issued under a throwaway key because no usable key was there (they never resume).",
    "sesscache_ticket_keys_errors_total": "OpenSSL errors in the ticket key callback.",
    "sesscache_ticket_keys_rotations_total": "Rotations this process made (written to the store).",
    "sesscache_ticket_keys_store_errors_total": "Store calls for the key ring that failed.",
    "sesscache_ticket_keys_local_keys_total": "Local keys made because the store could not be used.",
    "sesscache_ticket_keys_generation": "Rotations since the fleet's key ring was made, as last read.",
    "sesscache_ticket_keys_current_key_age_seconds": "Age of the key encrypting new tickets.",
    "sesscache_ticket_keys_local_key":
        "1 while new tickets are encrypted with a local key (the store could not be used).",
    "sesscache_processes": "Processes whose records this server's /metrics read.",
    "sesscache_metrics_served_by":
        "1, labelled with the pid of the worker that serves this /metrics now (another takes "
        "the address within an interval when it goes).",
}


class _Builder:
    def __init__(self, extra_labels: Sequence[str]) -> None:
        self.extra = list(extra_labels)
        self.families: Dict[str, Any] = {}

    def _family(self, kind: Any, name: str, labels: Sequence[str]) -> Any:
        family = self.families.get(name)
        if family is None:
            base = name[:-len("_total")] if kind is CounterMetricFamily else name
            family = self.families[name] = kind(base, HELP[name], labels=self.extra + list(labels))
        return family

    def counter(self, name: str, base: Dict[str, str], value: Any, **labels: str) -> None:
        self._family(CounterMetricFamily, name, list(labels)).add_metric(
            [base[k] for k in self.extra] + list(labels.values()), float(value))

    def gauge(self, name: str, base: Dict[str, str], value: Any, **labels: str) -> None:
        self._family(GaugeMetricFamily, name, list(labels)).add_metric(
            [base[k] for k in self.extra] + list(labels.values()), float(value))

    def histogram(self, name: str, base: Dict[str, str], counts: Sequence[int], total: float,
                  **labels: str) -> None:
        cumulative, buckets = 0, []
        for bound, count in zip(list(BUCKETS) + [float("inf")], counts):
            cumulative += count
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), float(cumulative)))
        self._family(HistogramMetricFamily, name, list(labels)).add_metric(
            [base[k] for k in self.extra] + list(labels.values()), buckets, float(total))



#: The samples of the parts a process may lack: (part of the snapshot, [(kind, family, field)]).
_OPTIONAL_PARTS = (
    ("store", (("gauge", "sesscache_store_paused", "paused"),
               ("counter", "sesscache_store_pauses_total", "pauses"),
               ("gauge", "sesscache_store_pending_writes", "pending_writes"),
               ("counter", "sesscache_store_writes_dropped_total", "writes_dropped"),
               ("counter", "sesscache_store_write_errors_total", "write_errors"),
               ("counter", "sesscache_store_ring_dropped_total", "ring_dropped"))),
    ("replica", (("gauge", "sesscache_replica_sessions", "sessions"),
                 ("gauge", "sesscache_replica_max_sessions", "max_sessions"),
                 ("gauge", "sesscache_replica_last_message_timestamp_seconds", "last_message"),
                 ("counter", "sesscache_replica_messages_total", "received"),
                 ("counter", "sesscache_replica_malformed_messages_total", "malformed"))),
)

def cache_families(labelled: Labelled, extra_labels: Sequence[str] = ()) -> List[Any]:
    """The families of :func:`~sesscache.metrics._snapshot.cache_snapshot` snapshots, each
    with its labels (``extra_labels`` names them, in order)."""
    b = _Builder(extra_labels)
    for base, snap in labelled:
        for result in LOOKUP_RESULTS:
            b.counter("sesscache_lookups_total", base, snap["lookups"][result], result=result)
        b.counter("sesscache_sessions_stored_total", base, snap["stored"])
        for reason, value in snap["not_stored"].items():
            b.counter("sesscache_sessions_not_stored_total", base, value, reason=reason)
        b.counter("sesscache_session_removes_total", base, snap["removes"])
        b.counter("sesscache_store_evictions_total", base, snap["evictions"])
        openssl = snap["openssl"]
        b.counter("sesscache_openssl_resumed_total", base, openssl["hits"])
        b.counter("sesscache_openssl_internal_hits_total", base, max(openssl["hits"] - openssl["cb_hits"], 0))
        b.counter("sesscache_openssl_misses_total", base, openssl["misses"])
        b.counter("sesscache_openssl_timeouts_total", base, openssl["timeouts"])
        b.counter("sesscache_openssl_cache_full_total", base, openssl["cache_full"])
        b.gauge("sesscache_openssl_cached_sessions", base, openssl.get("sessions", 0))
        numbers = resumption(snap)
        b.counter("sesscache_resumed_sessions_total", base, numbers["resumed"])
        b.counter("sesscache_offered_sessions_total", base, numbers["offered"])
        for operation, (counts, total) in snap["store_seconds"].items():
            b.histogram("sesscache_store_call_duration_seconds", base, counts, total, operation=operation)
        for part, samples in _OPTIONAL_PARTS:
            values = snap.get(part)
            if values is not None:  # a store wrapper, a Redis local replica: where there is one
                for kind, name, field in samples:
                    getattr(b, kind)(name, base, values[field])
        keys = snap.get("ticket_keys")
        if keys is not None:
            ticket_key_samples(b, base, keys)
    return list(b.families.values())


def ticket_key_samples(b: _Builder, base: Dict[str, str], keys: Dict[str, Any]) -> None:
    b.counter("sesscache_ticket_keys_issued_total", base, keys["issued"])
    b.counter("sesscache_ticket_keys_resumed_total", base, keys["resumed"])
    b.counter("sesscache_ticket_keys_renewed_total", base, keys["renewed"])
    for reason, value in keys["refused"].items():
        b.counter("sesscache_ticket_keys_refused_total", base, value, reason=reason)
    for name in ("no_key", "errors", "rotations", "store_errors", "local_keys"):
        b.counter(f"sesscache_ticket_keys_{name}_total", base, keys[name])
    b.gauge("sesscache_ticket_keys_generation", base, keys["generation"])
    if keys["key_age"] is not None:
        b.gauge("sesscache_ticket_keys_current_key_age_seconds", base, keys["key_age"])
    b.gauge("sesscache_ticket_keys_local_key", base, 1 if keys["key_local"] else 0)


def ticket_keys_families(labelled: Labelled, extra_labels: Sequence[str] = ()) -> List[Any]:
    b = _Builder(extra_labels)
    for base, keys in labelled:
        ticket_key_samples(b, base, keys)
    return list(b.families.values())


def iter_help() -> Iterable[Tuple[str, str]]:
    return HELP.items()
