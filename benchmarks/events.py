"""Benchmark 2: what one new-session and one get-session event cost, in microseconds.

Three measurements, because each has a blind spot:

1. **By difference** (includes everything: the C trampoline, cffi's call into Python,
   the registry lookup, the handler, and what OpenSSL does with the answer). Interleaved
   rounds of resumed handshakes on contexts that differ only in the hook; the cost of
   one event is the server-side time per handshake minus the same for ``internal``.
   * new: TLS 1.3 stateful resumption, sessions in the internal cache (exactly one new
     ticket, so one new event, per resumed handshake; checked with ``stats.stores``).
   * get: TLS 1.2 resumption on a context whose internal cache is off and never saw the
     session (exactly one get event per handshake; checked with ``stats.hits``).
   Extra arms split the cost: ``hook-floor`` installs a handler that does nothing
   through the private registry (trampoline + cffi + lookup only); ``raw-noop`` a
   public ``set_new_session_callback`` that does nothing (adds the ``Session`` wrapper
   and the connection lookup); ``raw-session`` a get callback handing back ``Session``
   objects kept in a dict (no DER at all: the floor of any Python get hook).
2. **Directly, in situ**: the context's handler is timed during real handshakes. Cold
   caches and all: what a server really pays inside its handshake. sesscache over a
   ``MemoryStore`` answers in C (``_cffi_src/fast_path.py``) without entering Python, so
   its events are timed in C (``sc_fast_time_events``: ``CLOCK_MONOTONIC`` around the
   fast path); the dict baseline's Python handler is wrapped in ``perf_counter_ns``. In
   both the trampoline itself is outside the timer. Events the fast path handed to
   Python are counted (``handed_over``; zero in steady state).
3. **Components, warm**: ``timeit`` of the pieces (DER out, DER in, store set/get) on a
   real server-side session, outside any handshake; and a cProfile of the handlers.
"""
from __future__ import annotations

import cProfile
import io
import pstats
import statistics
import time
import timeit
from typing import Any, Dict, List

import sesscache
from sesscache._binding import ffi, lib
from sesscache import callbacks as _callbacks
from sesscache import session as _session

import common as C

HOOK_FLOOR = "hook-floor"
RAW_NOOP = "raw-noop"
RAW_SESSION = "raw-session"

NEW_ARMS = (C.INTERNAL, HOOK_FLOOR, RAW_NOOP, C.DICT_L1, C.SC_L1)
GET_ARMS = (C.INTERNAL, RAW_SESSION, C.DICT_STORE, C.SC_STORE)


def _build(st: C.Stack, name: str, version: str, pool: int) -> C.Arm:
    if name not in (HOOK_FLOOR, RAW_NOOP, RAW_SESSION):
        return C.build_arm(st, name, version, "ecdsa", pool=pool)
    client_ctx = st.client_context("ecdsa")
    mode_internal = sesscache.SESS_CACHE_SERVER
    if name == HOOK_FLOOR:
        server = maker = st.server_context(version, "ecdsa", mode=mode_internal)
        _callbacks._install(server, new=(lambda hooks, ssl, session: None, None))
        keep: List[Any] = [maker]
    elif name == RAW_NOOP:
        server = maker = st.server_context(version, "ecdsa", mode=mode_internal)
        sesscache.set_new_session_callback(server, lambda conn, session: None)
        keep = [maker]
    else:  # RAW_SESSION: Session objects in a dict, resumed on a context with no internal cache
        table: Dict[bytes, Any] = {}
        maker = st.server_context(version, "ecdsa", mode=mode_internal)
        server = st.server_context(version, "ecdsa",
                                   mode=sesscache.SESS_CACHE_SERVER | sesscache.SESS_CACHE_NO_INTERNAL)
        for ctx in (maker, server):
            sesscache.set_new_session_callback(ctx, lambda conn, s: table.__setitem__(s.id, s))
            sesscache.set_get_session_callback(ctx, lambda conn, sid: table.get(sid))
        keep = [maker, table]
    sessions = []
    for _ in range(pool):
        _, _, session = st.connect(maker, client_ctx)
        sessions.append(session)
    arm = C.Arm(name, server, client_ctx, sessions, keep)
    if C.run_block(st, arm, 4).reused != 4:
        raise RuntimeError(f"{st.name} {version} {name} does not resume")
    return arm


def _by_difference(st: C.Stack, event: str, p, progress) -> Dict[str, Any]:
    version, names = (C.TLS13, NEW_ARMS) if event == "new" else (C.TLS12, GET_ARMS)
    arms = {name: _build(st, name, version, p.pool) for name in names}
    cache = {name: arm.keep[0] for name, arm in arms.items() if isinstance(arm.keep[0], sesscache.SessionCache)}
    before = {name: c.stats for name, c in cache.items()}
    blocks = C.interleave({name: (lambda arm=arm: C.run_block(st, arm, p.events_block))
                           for name, arm in arms.items()}, p.events_rounds, seed=p.seed, progress=progress)
    out: Dict[str, Any] = {"version": version, "arms": {}}
    base = blocks[C.INTERNAL]
    for name, rs in blocks.items():
        per_hs = [r.server_seconds * 1e6 for r in rs]
        entry = {"server_us_per_handshake": C.summarize(per_hs),
                 "resumed_fraction": sum(r.reused for r in rs) / sum(r.n for r in rs)}
        if name != C.INTERNAL:
            entry["event_us"] = C.summarize([(r.server_seconds - b.server_seconds) * 1e6
                                             for r, b in zip(rs, base)])
            entry["event_us_pair"] = C.summarize([(r.pair_seconds - b.pair_seconds) * 1e6
                                                  for r, b in zip(rs, base)])
        if name in cache:
            after = cache[name].stats
            counted = (after.stores - before[name].stores) if event == "new" else (after.hits - before[name].hits)
            entry["events_per_handshake"] = counted / sum(r.n for r in rs)
        out["arms"][name] = entry
    return out


def _in_situ(st: C.Stack, p) -> Dict[str, Any]:
    """Time the handler of each hook during real handshakes."""
    out: Dict[str, Any] = {}
    for label, name, version, hook in (("sesscache new (TLS 1.3, L1)", C.SC_L1, C.TLS13, "new"),
                                       ("sesscache get (TLS 1.2, store)", C.SC_STORE, C.TLS12, "get"),
                                       ("dict new (TLS 1.3, L1)", C.DICT_L1, C.TLS13, "new"),
                                       ("dict get (TLS 1.2, store)", C.DICT_STORE, C.TLS12, "get")):
        arm = C.build_arm(st, name, version, "ecdsa", pool=p.pool)
        if isinstance(arm.keep[0], sesscache.SessionCache):
            out[label] = _in_situ_fast(st, arm, hook, p)
            continue
        hooks = _callbacks._hooks_for(arm.server_ctx)
        handler = getattr(hooks, hook)
        samples: List[int] = []
        clock = time.perf_counter_ns

        def timed(*args, _handler=handler, _samples=samples, _clock=clock):
            t = _clock()
            result = _handler(*args)
            _samples.append(_clock() - t)
            return result

        setattr(hooks, hook, timed)
        C.run_block(st, arm, p.in_situ)
        setattr(hooks, hook, handler)
        xs = sorted(s / 1000 for s in samples)
        out[label] = {"n": len(xs), "p50": C.percentile(xs, 50), "p90": C.percentile(xs, 90),
                      "p99": C.percentile(xs, 99), "mean": statistics.fmean(xs) if xs else float("nan")}
    return out


def _in_situ_fast(st: C.Stack, arm: C.Arm, hook: str, p) -> Dict[str, Any]:
    """sesscache's events timed by the C fast path itself during real handshakes."""
    cache = arm.keep[0]
    handed_before = cache.handed_over()
    lib.sc_fast_time_events(1)
    try:
        C.run_block(st, arm, p.in_situ)
    finally:
        lib.sc_fast_time_events(0)
    buffer = ffi.new("unsigned int[]", p.in_situ * 4)
    n = lib.sc_fast_timed_events(0 if hook == "new" else 1, buffer, p.in_situ * 4)
    xs = sorted(buffer[i] / 1000 for i in range(n))
    return {"n": n, "p50": C.percentile(xs, 50), "p90": C.percentile(xs, 90),
            "p99": C.percentile(xs, 99), "mean": statistics.fmean(xs) if xs else float("nan"),
            "timed_in": "C (fast path)", "handed_over": cache.handed_over() - handed_before}


def _profile(st: C.Stack, p) -> str:
    """cProfile of the Python handlers (tottime order), as text: the dict baseline's (the
    sesscache arms answer in C and never enter these handlers in steady state)."""
    text = io.StringIO()
    for name, version, hook in ((C.DICT_L1, C.TLS13, "new"), (C.DICT_STORE, C.TLS12, "get")):
        arm = C.build_arm(st, name, version, "ecdsa", pool=p.pool)
        hooks = _callbacks._hooks_for(arm.server_ctx)
        handler = getattr(hooks, hook)
        prof = cProfile.Profile()

        def profiled(*args, _handler=handler, _prof=prof):
            _prof.enable()
            try:
                return _handler(*args)
            finally:
                _prof.disable()

        setattr(hooks, hook, profiled)
        C.run_block(st, arm, p.in_situ)
        setattr(hooks, hook, handler)
        text.write(f"=== {st.name} {version} {hook} handler ({p.in_situ} calls) ===\n")
        stats = pstats.Stats(prof, stream=text)
        stats.sort_stats("tottime").print_stats(12)
    return text.getvalue()


def _components(st: C.Stack, p) -> Dict[str, float]:
    """Warm timings of the pieces of the two handlers, on a real server-side session."""
    arm = C.build_arm(st, C.SC_L1, C.TLS13, "ecdsa", pool=4)
    cache = arm.keep[0]
    instance = sesscache.libssl_info(arm.server_ctx)
    key, blob, _ = cache.store.entries()[0]
    # The envelope is private and changes: take the DER as its last field, and wrap again
    # with the other fields in their order (the order _wrap takes them).
    stored = cache._unwrap(key, blob)
    der = bytes(stored[-1])
    fields = [b"" if f is None else f for f in stored[:-1]]
    pointer = _session.session_from_der(instance, der)
    number = 20000 if p.quick else 100000

    def best(stmt) -> float:
        return min(timeit.repeat(stmt, number=number, repeat=5)) / number * 1e6

    store = sesscache.MemoryStore()
    result = {
        "server session DER bytes": float(len(der)),
        "stored blob bytes": float(len(blob)),
        "i2d_SSL_SESSION (session_to_der)": best(lambda: _session.session_to_der(instance, pointer)),
        "d2i_SSL_SESSION + free (session_from_der)": best(
            lambda: instance.api.SSL_SESSION_free(_session.session_from_der(instance, der))),
        "MemoryStore.set": best(lambda: store.set(key, blob, 300.0)),
        "MemoryStore.get": best(lambda: store.get(key)),
        "key_for + envelope wrap": best(lambda: cache._wrap(cache.key_for(b"bench", key[-32:]), *fields, der)),
        "envelope unwrap": best(lambda: cache._unwrap(key, blob)),
        "one libssl call through the function table (SSL_SESSION_get_timeout)": best(
            lambda: instance.api.SSL_SESSION_get_timeout(pointer)),
    }
    instance.api.SSL_SESSION_free(pointer)
    return result


def run(p, progress) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for stack_name in p.stacks:
        st = C.stack(stack_name)
        out[stack_name] = {
            "new": _by_difference(st, "new", p, progress),
            "get": _by_difference(st, "get", p, progress),
            "in_situ": _in_situ(st, p),
            "components_warm_us": _components(st, p),
            "profile": _profile(st, p),
        }
    return out


def total_rounds(p) -> int:
    return 2 * p.events_rounds * len(p.stacks)
