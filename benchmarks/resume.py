"""Benchmark 1: resumed handshakes per second, sesscache vs OpenSSL's internal cache.

Arms (each its own server context, all resumed by the same kind of client):

* ``internal``: OpenSSL's internal cache only, no hooks. The reference (ratio 1).
* ``sesscache-l1``: ``SessionCache(MemoryStore())`` attached with ``internal_cache=True``;
  the sessions were made on this context, so the internal cache (L1) answers and the
  cost left is the new-session hook (fired on every TLS 1.3 resumption: a new ticket).
  Target >= 0.98.
* ``sesscache-store``: "made in another process": a second context shares the cache's
  store and is attached with ``internal_cache=False``; every resumption goes through the
  get hook and the store (a copy of the session the store keeps decoded beside its DER,
  ``SSL_SESSION_dup``; ``d2i_SSL_SESSION`` on an entry's first lookup). Target >= 0.97
  (issue 22).
* ``sesscache-other``: the same with attach's defaults (over ``MemoryStore``: every lookup
  to the store, as ``sesscache-store``; before, OpenSSL's internal cache was on and copied
  each session it looked up into the second context's cache). Target >= 0.97.
* ``dict-l1`` / ``dict-store``: the plain baseline to beat, a Python dict of DER bytes
  over the raw callbacks (``set_new_session_callback`` / ``set_get_session_callback``),
  in the same two situations.
"""
from __future__ import annotations

import functools
from typing import Any, Dict, List

import common as C

ARMS = (C.INTERNAL, C.SC_L1, C.SC_STORE, C.SC_OTHER, C.DICT_L1, C.DICT_STORE)
SOCKET_ARMS = (C.INTERNAL, C.SC_L1, C.SC_STORE, C.SC_OTHER, C.DICT_STORE)
RATIOS = (  # (name, numerator, denominator, target)
    ("sesscache-l1 / internal", C.SC_L1, C.INTERNAL, 0.98),
    ("sesscache-store / internal", C.SC_STORE, C.INTERNAL, 0.97),
    ("sesscache-other / internal", C.SC_OTHER, C.INTERNAL, 0.97),
    ("dict-l1 / internal", C.DICT_L1, C.INTERNAL, None),
    ("dict-store / internal", C.DICT_STORE, C.INTERNAL, None),
    ("sesscache-store / dict-store", C.SC_STORE, C.DICT_STORE, None),
)


def configs(p) -> List[Dict[str, Any]]:
    out = []
    for stack in p.stacks:
        for version in p.versions:
            for key in p.key_types:
                out.append({"stack": stack, "version": version, "key": key, "transport": "memory"})
    if p.socket_rounds:
        for stack in p.stacks:
            for version in p.versions:
                out.append({"stack": stack, "version": version, "key": "ecdsa", "transport": "tcp"})
    return out


def run(p, progress) -> Dict[str, Any]:
    results = []
    for cfg in configs(p):
        st = C.stack(cfg["stack"])
        tcp = cfg["transport"] == "tcp"
        names = SOCKET_ARMS if tcp else ARMS
        arms = {name: C.build_arm(st, name, cfg["version"], cfg["key"], pool=p.pool) for name in names}
        loop = C.Loopback() if tcp else None
        connect = functools.partial(C.socket_connect, st, loop) if tcp else None
        block = p.socket_block if tcp else p.block
        rounds = p.socket_rounds if tcp else p.rounds
        try:
            blocks = C.interleave(
                {name: (lambda arm=arm: C.run_block(st, arm, block, connect)) for name, arm in arms.items()},
                rounds, seed=p.seed, progress=progress)
        finally:
            if loop:
                loop.close()
        entry = dict(cfg)
        entry["rounds"], entry["block"] = rounds, block
        entry["arms"] = {}
        for name, rs in blocks.items():
            n = sum(r.n for r in rs)
            entry["arms"][name] = {
                "resumed_fraction": sum(r.reused for r in rs) / n,
                "pair_rate": C.summarize([r.rate for r in rs]),
                "server_rate": C.summarize([r.server_rate for r in rs]),
            }
        entry["ratios"] = {}
        for label, num, den, target in RATIOS:
            if num not in blocks or den not in blocks:
                continue
            pair = [a.rate / b.rate for a, b in zip(blocks[num], blocks[den])]
            server = [a.server_rate / b.server_rate for a, b in zip(blocks[num], blocks[den])]
            entry["ratios"][label] = {"pair": C.summarize(pair), "server": C.summarize(server),
                                      "target": target}
        for cache_keep in arms.values():
            for thing in cache_keep.keep or ():
                if hasattr(thing, "stats"):
                    entry.setdefault("stats", {})[cache_keep.name] = thing.stats.as_dict()
        results.append(entry)
        del arms
    return {"configs": results}


def total_rounds(p) -> int:
    return sum(p.socket_rounds if c["transport"] == "tcp" else p.rounds for c in configs(p))
