"""``python -m sesscache keys show|rotate --store URL``: the fleet's ticket key ring.

Shows key ids (the key names every ticket carries in clear), roles, ages and expiry;
never key bytes. ``rotate`` makes the fleet's next key current now, with the rotation
period and ``keep`` the ring was written with.
"""
from __future__ import annotations

import argparse
import time
from typing import Any, List, Optional

from .ticket_keys import RING_KEY, RingInfo, TicketKeys, read_ring


def add_keys_command(commands: Any, store_help: str) -> None:
    keys = commands.add_parser("keys", help="the shared session-ticket key ring: show or rotate "
                                            "(ids and ages, never key bytes)")
    keys.add_argument("action", choices=["show", "rotate"])
    keys.add_argument("--store", required=True, help=store_help)
    keys.add_argument("--namespace", default=RING_KEY.decode(),
                      help=f"the ring's store key (default {RING_KEY.decode()})")
    keys.add_argument("--seal-key-file", help="file with hex AES keys, one per line, as the "
                                              "servers' seal_keys")


def run_keys(args: argparse.Namespace, open_store: Any) -> int:
    """``open_store`` is the CLI's own parser; ``sesscache.store_from_url`` wins where it exists."""
    import sesscache

    store = getattr(sesscache, "store_from_url", open_store)(args.store)
    try:
        seal_keys = _read_seal_keys(args.seal_key_file)
        namespace = args.namespace.encode()
        if args.action == "rotate":
            before = read_ring(store, namespace=namespace, seal_keys=seal_keys)
            policy = {}
            if before.generation:
                policy = {"rotate_every": before.rotate_every or 12 * 3600.0, "keep": before.keep or 3}
            keys = TicketKeys(store, namespace=namespace, seal_keys=seal_keys, background=False, **policy)
            try:
                keys.rotate()
            finally:
                keys.close()
        print(format_ring(read_ring(store, namespace=namespace, seal_keys=seal_keys)))
    finally:
        store.close()
    return 0


def format_ring(info: RingInfo, now: Optional[float] = None) -> str:
    now = time.time() if now is None else now
    if not info.generation:
        return "no ticket key ring in this store yet (the first TicketKeys makes one)"
    lines: List[str] = [
        f"generation {info.generation}, rotation every {_span(info.rotate_every)}, keep {info.keep}, "
        f"next rotation in {_span(info.next_rotation - now)}",
        f"{'key id':34} {'role':9} {'age':>10} {'expires in':>11}",
    ]
    for key in info.keys:
        lines.append(f"{key.key_id:34} {key.role:9} {_span(key.age(now)):>10} "
                     f"{_span(key.not_after - now):>11}")
    return "\n".join(lines)


def _span(seconds: float) -> str:
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    if seconds >= 86400:
        return f"{sign}{seconds / 86400:.1f}d"
    if seconds >= 3600:
        return f"{sign}{seconds / 3600:.1f}h"
    if seconds >= 60:
        return f"{sign}{seconds / 60:.1f}m"
    return f"{sign}{seconds:.0f}s"


def _read_seal_keys(path: Optional[str]) -> Optional[List[bytes]]:
    if not path:
        return None
    with open(path) as f:
        return [bytes.fromhex(line.strip()) for line in f if line.strip()]
