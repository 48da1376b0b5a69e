"""Benchmark 5: memory held per cached session, and resident memory over many handshakes.

1. **Bytes per session in MemoryStore**: glibc's ``mallinfo2()`` (bytes in use, heap and
   mmapped) around 100,000 ``set`` calls with keys shaped as ``SessionCache`` makes them
   and values of the size of real stored blobs (measured from real handshakes of each
   kind first). The store's table is C memory, which ``tracemalloc`` cannot see; malloc's
   own count sees both it and any Python object. Everything the store holds afterwards
   (entries, their malloc headers, the bucket array), divided by the entries; minus the
   payload (key + value bytes) that is the store's own overhead per entry.
2. **RSS over a long run** (one million handshakes in the full mode): every TLS kind
   at once, round robin, through one ``SessionCache`` per kind attached to two server
   contexts, one with the internal cache (L1) and one without, taking turns, so every
   path runs: new-session stores, store lookups, internal-cache hits, MemoryStore
   evictions (it holds 20,000 sessions by default and fills within seconds), expiry
   (``lifetime`` is short so that sessions run out during the run, clients then make a
   full handshake and carry on with the new session). VmRSS and the number of live
   ``SSL_SESSION`` objects per libssl copy are sampled 100 times; the slope is a least
   squares fit over the samples after the first quarter (warm-up: stores and internal
   caches filling up).
"""
from __future__ import annotations

import ctypes
import gc
import os
import time
from typing import Any, Dict, List, Tuple

import sesscache

import common as C


def blob_sizes(p) -> Dict[str, Dict[str, int]]:
    """Stored blob and DER sizes of real server-side sessions, per stack/version/key."""
    out: Dict[str, Dict[str, int]] = {}
    for stack_name in p.stacks:
        st = C.stack(stack_name)
        for version in p.versions:
            for key in p.key_types:
                arm = C.build_arm(st, C.SC_L1, version, key, pool=2)
                cache = arm.keep[0]
                k, blob, _ = cache.store.entries()[0]
                der = cache._unwrap(k, blob)[-1]  # private envelope: the DER is its last field
                out[f"{stack_name} {version} {key}"] = {"key": len(k), "blob": len(blob), "der": len(der)}
    return out


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


def _malloc_in_use() -> int:
    """Bytes malloc has handed out and not taken back (heap + mmapped blocks)."""
    libc = ctypes.CDLL(None)
    libc.mallinfo2.restype = _MallInfo2
    info = libc.mallinfo2()
    return info.uordblks + info.hblkhd


def per_session_bytes(entries: int, value_size: int, key_size: int) -> Dict[str, float]:
    gc.collect()
    store = sesscache.MemoryStore(max_sessions=entries + 1)
    sid_len = key_size - len(sesscache.SessionCache.key_for(C.SID_CTX, b""))
    keys = [sesscache.SessionCache.key_for(C.SID_CTX, i.to_bytes(sid_len, "big")) for i in range(entries)]
    value = os.urandom(value_size)
    gc.collect()
    before = _malloc_in_use()
    for key in keys:
        store.set(key, value, 300.0)
    gc.collect()
    held = _malloc_in_use() - before
    payload = key_size + value_size
    result = {"entries": entries, "key_bytes": key_size, "value_bytes": value_size,
              "held_per_entry": held / entries, "overhead_per_entry": held / entries - payload,
              "sessions_per_mib": (1 << 20) / (held / entries)}
    store.close()
    return result


def _fit(xs: List[float], ys: List[float]) -> float:
    n = len(xs)
    if n < 2:
        return float("nan")
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx else float("nan")


def rss_run(p, progress) -> Dict[str, Any]:
    lanes: List[Tuple[C.Stack, Any, Any, Any, List[Any], Any]] = []
    for stack_name in p.stacks:
        st = C.stack(stack_name)
        for version in p.versions:
            cache = sesscache.SessionCache(store=sesscache.MemoryStore(), lifetime=p.rss_lifetime)
            l1 = st.server_context(version, "ecdsa")
            cache.attach(l1, session_id_context=C.SID_CTX, internal_cache=True)
            shared = st.server_context(version, "ecdsa")
            cache.attach(shared, session_id_context=C.SID_CTX, internal_cache=False)
            client = st.client_context("ecdsa")
            pool = [st.connect(l1, client)[2] for _ in range(p.rss_clients)]
            lanes.append((st, cache, l1, shared, pool, client))
    total = p.rss_handshakes
    block = 50
    samples = []
    instances = {}
    for st, _, l1, *_ in lanes:
        info = sesscache.libssl_info(l1)
        instances[info.describe()] = info
    done = resumed = renewed = 0
    sample_every = max(block * len(lanes), total // 100)
    next_sample = 0
    t0 = time.monotonic()
    while done < total:
        for st, cache, l1, shared, pool, client in lanes:
            connect = st.connect
            for i in range(block):
                j = (done + i) % len(pool)
                server = l1 if (done // block + i) % 2 else shared
                reused, _, fresh = connect(server, client, pool[j], renew=True)
                resumed += reused
                if fresh is not None:
                    pool[j] = fresh
                    renewed += 1
            done += block
            progress(block)
        if done >= next_sample:
            samples.append({"handshakes": done, "rss": C.rss_bytes(), "t": time.monotonic() - t0,
                            "live_sessions": {name: sesscache.live_session_count(inst)
                                              for name, inst in instances.items()}})
            next_sample += sample_every
    gc.collect()
    samples.append({"handshakes": done, "rss": C.rss_bytes(), "t": time.monotonic() - t0,
                    "live_sessions": {name: sesscache.live_session_count(inst) for name, inst in instances.items()}})
    start = len(samples) // 4
    xs = [s["handshakes"] for s in samples[start:]]
    ys = [s["rss"] for s in samples[start:]]
    slope = _fit(xs, ys)
    stats = {}
    for (st, cache, *_), (stack_name, version) in zip(lanes, [(s, v) for s in p.stacks for v in p.versions]):
        stats[f"{stack_name} {version}"] = cache.stats.as_dict()
    return {
        "handshakes": done, "resumed_fraction": resumed / done, "renewed_sessions": renewed,
        "lifetime": p.rss_lifetime, "seconds": samples[-1]["t"],
        "rss_start": samples[0]["rss"], "rss_fit_start": ys[0] if ys else None, "rss_end": samples[-1]["rss"],
        "slope_bytes_per_1k_handshakes": slope * 1000,
        "growth_over_fit_window": (ys[-1] - ys[0]) if ys else None,
        "fit_window_handshakes": (xs[-1] - xs[0]) if xs else None,
        "samples": samples, "cache_stats": stats,
    }


def run(p, progress) -> Dict[str, Any]:
    sizes = blob_sizes(p)
    typical = sizes.get("pyopenssl TLSv1.3 ecdsa") or next(iter(sizes.values()))
    largest = max(sizes.values(), key=lambda s: s["blob"])
    per_session = {
        "typical": per_session_bytes(p.store_entries, typical["blob"], typical["key"]),
        "largest": per_session_bytes(p.store_entries, largest["blob"], largest["key"]),
    }
    return {"blob_sizes": sizes, "per_session": per_session, "rss": rss_run(p, progress)}


def total_units(p) -> int:
    return p.rss_handshakes
