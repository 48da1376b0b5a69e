"""Opt-in benchmark ``walk``: the new-session handler's cost as the internal cache fills.

Found while profiling ``events``: on a TLS 1.3 resumption the new session descends from
an older one, and ``SessionCache`` shortens its timeout (``SSL_SESSION_set_timeout``) so
that the chain ends one ``lifetime`` after the original full handshake. By then OpenSSL
has already put the session into the context's internal cache, and on some versions
changing the timeout of a cached session re-files it in the cache's timeout-ordered list
under the context's write lock, a walk whose length grows with the cache.

Two arms, interleaved, on the same stack and TLS 1.3 stateful resumption with the
internal cache on (``internal_cache=True``, the default):

* ``clamp``: ``lifetime=300`` (OpenSSL's default session timeout is 300 s too), so every
  resumed session is shortened;
* ``no-clamp``: ``lifetime`` of 7 days: ``min(origin + lifetime, made + timeout)`` is the
  session's own timeout, so ``set_timeout`` is never called.

Each step runs one block per arm (each resumption adds one session to that arm's
internal cache) and records the handler's in-situ time (p50, p90) and the cache size.
"""
from __future__ import annotations

import time
from typing import Any, Dict, List

import sesscache
from sesscache import callbacks as _callbacks

import common as C

ARMS = (("clamp", 300.0), ("no-clamp", 7 * 24 * 3600.0))


def _arm(st: C.Stack, lifetime: float, pool: int):
    cache = sesscache.SessionCache(store=sesscache.MemoryStore(), lifetime=lifetime)
    ctx = st.server_context(C.TLS13, "ecdsa")
    cache.attach(ctx, session_id_context=C.SID_CTX, internal_cache=True)
    client = st.client_context("ecdsa")
    sessions = [st.connect(ctx, client)[2] for _ in range(pool)]
    hooks = _callbacks._hooks_for(ctx)
    handler = hooks.new
    samples: List[int] = []
    clock = time.perf_counter_ns

    def timed(*args, _handler=handler, _samples=samples):
        t = clock()
        _handler(*args)
        _samples.append(clock() - t)

    hooks.new = timed
    return C.Arm("walk", ctx, client, sessions, [cache]), samples


def run(p, progress) -> Dict[str, Any]:
    out: Dict[str, Any] = {"steps": p.walk_steps, "block": p.walk_block, "stacks": {}}
    for stack_name in p.stacks:
        st = C.stack(stack_name)
        arms = {name: _arm(st, lifetime, p.pool) for name, lifetime in ARMS}
        rows = []
        for _ in range(p.walk_steps):
            row: Dict[str, Any] = {}
            for name, (arm, samples) in arms.items():
                samples.clear()
                C.run_block(st, arm, p.walk_block)
                xs = sorted(s / 1000 for s in samples)
                row[name] = {"cache": sesscache.internal_cache_size(arm.server_ctx),
                             "p50": C.percentile(xs, 50), "p90": C.percentile(xs, 90)}
            rows.append(row)
            progress(1)
        out["stacks"][stack_name] = {"openssl": sesscache.libssl_info(arms["clamp"][0].server_ctx).version,
                                     "rows": rows}
        del arms
    return out


def total_rounds(p) -> int:
    return p.walk_steps * len(p.stacks)


def markdown(res: Dict[str, Any], add) -> None:
    add("### Opt-in: the new-session handler as the internal cache fills (`walk`)")
    add("")
    add("TLS 1.3 stateful resumption, internal cache on; handler time in situ (microseconds, "
        "p50 / p90). `clamp`: lifetime 300 s, every resumed session's timeout is shortened "
        "with `SSL_SESSION_set_timeout`; `no-clamp`: lifetime 7 days, never shortened.")
    add("")
    for stack, d in res["stacks"].items():
        add(f"{stack} (`{d['openssl']}`):")
        add("")
        add("| sessions in the internal cache | clamp p50 / p90 | no-clamp p50 / p90 |")
        add("| ---: | --- | --- |")
        for row in d["rows"]:
            c, n = row["clamp"], row["no-clamp"]
            add(f"| {c['cache']} | {c['p50']:.1f} / {c['p90']:.1f} | {n['p50']:.1f} / {n['p90']:.1f} |")
        add("")
