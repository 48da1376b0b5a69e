"""Opt-in benchmark ``walk``: a TLS 1.3 resumption's cost as the internal cache fills.

Found while profiling ``events``: on a TLS 1.3 resumption the new session descends from
an older one, and ``SessionCache`` caps its lifetime so that the chain ends one
``lifetime`` after the original full handshake. At first the cap was set after OpenSSL
had cached the session, and OpenSSL 4.0 re-filed it in the cache's timeout-ordered list
under the context's write lock: a walk whose length grows with the cache. The cap now
runs in a session-ticket callback before the session is cached; the session is then
*inserted* with its shorter timeout, which may still walk that ordered list.

Two arms, interleaved, on the same stack and TLS 1.3 stateful resumption with the
internal cache on (``internal_cache=True``, the default):

* ``clamp``: ``lifetime=300`` (OpenSSL's default session timeout is 300 s too), so every
  resumed session is shortened;
* ``no-clamp``: ``lifetime`` of 7 days: ``min(origin + lifetime, made + timeout)`` is the
  session's own timeout, so the timeout is never changed.

Each step runs one block per arm (each resumption adds one session to that arm's
internal cache) and records the server's time per resumed handshake (the sesscache
handlers run in C now, so it is the whole server side that is timed) and the cache size.
"""
from __future__ import annotations

from typing import Any, Dict

import sesscache

import common as C

ARMS = (("clamp", 300.0), ("no-clamp", 7 * 24 * 3600.0))


def _arm(st: C.Stack, lifetime: float, pool: int) -> C.Arm:
    cache = sesscache.SessionCache(store=sesscache.MemoryStore(), lifetime=lifetime)
    ctx = st.server_context(C.TLS13, "ecdsa")
    cache.attach(ctx, session_id_context=C.SID_CTX, internal_cache=True)
    client = st.client_context("ecdsa")
    sessions = [st.connect(ctx, client)[2] for _ in range(pool)]
    return C.Arm("walk", ctx, client, sessions, [cache])


def run(p, progress) -> Dict[str, Any]:
    out: Dict[str, Any] = {"steps": p.walk_steps, "block": p.walk_block, "stacks": {}}
    for stack_name in p.stacks:
        st = C.stack(stack_name)
        arms = {name: _arm(st, lifetime, p.pool) for name, lifetime in ARMS}
        rows = []
        for _ in range(p.walk_steps):
            row: Dict[str, Any] = {}
            for name, arm in arms.items():
                result = C.run_block(st, arm, p.walk_block)
                row[name] = {"cache": sesscache.internal_cache_size(arm.server_ctx),
                             "server_us": result.server_seconds * 1e6}
            rows.append(row)
            progress(1)
        out["stacks"][stack_name] = {"openssl": sesscache.libssl_info(arms["clamp"].server_ctx).version,
                                     "rows": rows}
        del arms
    return out


def total_rounds(p) -> int:
    return p.walk_steps * len(p.stacks)


def markdown(res: Dict[str, Any], add) -> None:
    add("### Opt-in: a TLS 1.3 resumption as the internal cache fills (`walk`)")
    add("")
    add("TLS 1.3 stateful resumption, internal cache on; the server's time per resumed "
        "handshake (microseconds). `clamp`: lifetime 300 s, every resumed session's lifetime "
        "is capped before OpenSSL caches it; `no-clamp`: lifetime 7 days, never capped.")
    add("")
    for stack, d in res["stacks"].items():
        add(f"{stack} (`{d['openssl']}`):")
        add("")
        add("| sessions in the internal cache | clamp | no-clamp | clamp - no-clamp |")
        add("| ---: | ---: | ---: | ---: |")
        for row in d["rows"]:
            c, n = row["clamp"], row["no-clamp"]
            add(f"| {c['cache']} | {c['server_us']:.1f} | {n['server_us']:.1f} "
                f"| {c['server_us'] - n['server_us']:+.1f} |")
        add("")
