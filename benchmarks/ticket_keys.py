"""Resumed handshakes per second with shared ticket keys vs OpenSSL's own per-context key.

    .venv/bin/python benchmarks/ticket_keys.py [--rounds 15] [--block 200] [--stacks pyopenssl,stdlib]

Arms, each resuming a pool of tickets on one server context, tickets on (OpenSSL's default):

* ``own-key``: OpenSSL's own random ticket key; the tickets were issued by the same
  context (the only place they resume). The reference (ratio 1).
* ``shared-keys``: ``TicketKeys`` over a store; the tickets were issued by *another*
  context with its own ``TicketKeys`` on the same store, as another process would.
  Goal: >= 0.98 of ``own-key``.

Both arms do the same work per resumption (TLS 1.3: one fresh ticket each, checked below).
The store is wrapped in a counter: its calls during the timed rounds are reported (goal 0;
the ring is read by the refresh thread, never in a handshake). Rounds interleave the arms
in shuffled order and report median per-round ratios (see ``common.interleave``).
"""
from __future__ import annotations

import argparse
import json
import ssl
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, List

import common as C

import sesscache


class CountingStore(sesscache.MemoryStore):
    """A MemoryStore that counts every call made on it, by the thread that made it (the
    handshakes run in the main thread; the ring's refresh thread has its own name)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: Dict[str, int] = {}

    def _count(self) -> None:
        name = threading.current_thread().name
        self.calls[name] = self.calls.get(name, 0) + 1

    def get(self, key):
        self._count()
        return super().get(key)

    def set(self, key, value, ttl):
        self._count()
        return super().set(key, value, ttl)

    def compare_and_set(self, key, expected, value, ttl):
        self._count()
        return super().compare_and_set(key, expected, value, ttl)

    def handshake_thread_calls(self) -> int:
        return self.calls.get(threading.main_thread().name, 0)

    def other_calls(self) -> int:
        return sum(self.calls.values()) - self.handshake_thread_calls()


def server_context(st: C.Stack, version: str) -> Any:
    """A server context as users make one: tickets on, OpenSSL's default cache mode (the
    benchmark stacks' own contexts turn tickets off for the session-cache arms)."""
    certs = C.certs("ecdsa")
    if st.name == "pyopenssl":
        SSL = st.SSL
        ctx = SSL.Context(SSL.TLS_SERVER_METHOD)
        ctx.use_certificate_chain_file(certs.server_pem)
        ctx.use_privatekey_file(certs.server_pem)
        number = {C.TLS12: SSL.TLS1_2_VERSION, C.TLS13: SSL.TLS1_3_VERSION}[version]
        ctx.set_min_proto_version(number)
        ctx.set_max_proto_version(number)
        return ctx
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(certs.server_pem)
    ctx.minimum_version = ctx.maximum_version = {C.TLS12: ssl.TLSVersion.TLSv1_2,
                                                 C.TLS13: ssl.TLSVersion.TLSv1_3}[version]
    return ctx


def build(st: C.Stack, name: str, version: str, store: CountingStore, pool: int, keep: List[Any],
          new_sessions: Any = None) -> C.Arm:
    client_ctx = st.client_context("ecdsa")
    if name == "own-key":
        maker = server = server_context(st, version)
    else:
        maker, server = server_context(st, version), server_context(st, version)
        for ctx in (maker, server):
            keys = sesscache.TicketKeys(store)  # the default: a refresh thread running
            keys.attach(ctx)
            keep.append(keys)
    keep += [maker, server]
    if new_sessions is not None:  # counts the sessions (TLS 1.3 tickets) the server makes
        sesscache.set_new_session_callback(server, lambda conn, s: new_sessions.append(1))
    sessions = []
    for _ in range(pool):
        reused, _, session = st.connect(maker, client_ctx)
        assert not reused and session is not None
        sessions.append(session)
    arm = C.Arm(name, server, client_ctx, sessions, keep)
    check = C.run_block(st, arm, 4)
    if check.reused != 4:
        raise RuntimeError(f"{st.name} {version} {name}: only {check.reused}/4 resumed while warming up")
    return arm


def new_tickets_per_resumption(st: C.Stack, name: str, version: str, n: int = 20) -> float:
    """Sessions the server makes per resumption (TLS 1.3: the fresh tickets), on a
    separate arm built the same way plus a counting hook, outside the timed rounds."""
    made: List[int] = []
    keep: List[Any] = []
    arm = build(st, name, version, CountingStore(), 4, keep, new_sessions=made)
    del made[:]
    assert C.run_block(st, arm, n).reused == n
    for k in keep:
        if isinstance(k, sesscache.TicketKeys):
            k.close()
    return len(made) / n


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--block", type=int, default=200)
    parser.add_argument("--pool", type=int, default=16)
    parser.add_argument("--stacks", default="pyopenssl,stdlib")
    parser.add_argument("--versions", default="TLSv1.2,TLSv1.3")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args(argv)
    results: List[Dict[str, Any]] = []
    for stack_name in args.stacks.split(","):
        st = C.stack(stack_name)
        for version in args.versions.split(","):
            store = CountingStore()
            keep: List[Any] = []
            arms = {name: build(st, name, version, store, args.pool, keep) for name in ("own-key", "shared-keys")}
            tickets = {name: new_tickets_per_resumption(st, name, version) for name in arms}
            calls_before, handshakes = store.handshake_thread_calls(), args.rounds * args.block
            others_before = store.other_calls()
            started = time.monotonic()
            blocks = C.interleave({name: (lambda arm=arm: C.run_block(st, arm, args.block))
                                   for name, arm in arms.items()}, args.rounds, seed=args.seed)
            elapsed = time.monotonic() - started
            calls = store.handshake_thread_calls() - calls_before
            refreshes = store.other_calls() - others_before
            keys = [k for k in keep if isinstance(k, sesscache.TicketKeys)]
            pair = [a.rate / b.rate for a, b in zip(blocks["shared-keys"], blocks["own-key"])]
            server = [a.server_rate / b.server_rate for a, b in zip(blocks["shared-keys"], blocks["own-key"])]
            entry = {
                "stack": stack_name, "libssl": sesscache.libssl_info(arms["own-key"].server_ctx).describe(),
                "version": version, "rounds": args.rounds, "block": args.block,
                "resumed_fraction": {n: sum(r.reused for r in rs) / sum(r.n for r in rs) for n, rs in blocks.items()},
                "rate_median": {n: C.summarize([r.rate for r in rs])["median"] for n, rs in blocks.items()},
                "ratio_pair": C.summarize(pair), "ratio_server": C.summarize(server),
                "new_tickets_per_resumption": tickets,
                "store_calls_during_rounds": calls, "shared_key_handshakes": handshakes,
                "store_calls_per_handshake": calls / handshakes,
                "refresh_thread_store_calls": refreshes, "seconds": elapsed,
                "stats": {f"keys{i}": vars(k.stats) for i, k in enumerate(keys)},
            }
            for k in keys:
                k.close()
            results.append(entry)
            print(f"{stack_name:9} {version}: shared/own pair {entry['ratio_pair']['median']:.3f} "
                  f"(p25 {entry['ratio_pair']['p25']:.3f}, p75 {entry['ratio_pair']['p75']:.3f}), "
                  f"server {entry['ratio_server']['median']:.3f}; "
                  f"own {entry['rate_median']['own-key']:.0f}/s, shared {entry['rate_median']['shared-keys']:.0f}/s; "
                  f"resumed {entry['resumed_fraction']}; tickets/resumption {tickets}; "
                  f"store calls in the handshake thread {calls} for {handshakes} handshakes; by the refresh "
                  f"threads meanwhile {refreshes} ({elapsed:.0f} s)", flush=True)
    report = {"machine": C.machine_info(), "results": results}
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
