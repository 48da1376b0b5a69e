"""fork() while other threads hold sesscache's C locks (issue 16, 7).

A MemoryStore's table, the fast path's certificate and journal locks, and the prefetch
tables are C mutexes: one held by another thread at fork() stays held in the child for
ever unless it is taken care of. And the counters were inherited, so adding up the stats
of prefork workers (examples/prefork_sqlite.py) counted the parent's traffic once per
worker. Here threads make handshakes and sweep a large table under its lock while the
main thread forks again and again; each child makes its own handshakes, which must
neither hang nor count anything but its own.
"""
from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from sesscache import MemoryStore, SessionCache
from tests.cache.test_cache import _resume_n
from tests.tls import TLS12

FORKS = 12
CHILD_DEADLINE = 5  # seconds; a child stuck on a lock its parent's thread held never ends


def _child_handshakes(stack, server, cache, store) -> int:
    """In the child: one full handshake and two resumptions through the store; 0 when the
    cache counted exactly those (none of the parent's), else a code saying what was off."""
    stats = cache.stats
    if (stats.hits, stats.stores, stats.misses, stats.errors) != (0, 0, 0, 0):
        return 3  # the parent's counts came along
    if store.evictions or store.expired:
        return 4
    results = _resume_n(stack, server, stack.client_context(), 2)
    store.purge_expired()  # the big table's lock, free in the child
    stats = cache.stats
    if results != [True, True]:
        return 5
    if (stats.hits, stats.stores, stats.errors) != (2, 1, 0):
        return 6
    return 0


def test_children_forked_under_load_handshake_and_count_their_own(stack):
    store = MemoryStore(max_sessions=300_000)
    cache = SessionCache(store)
    server = stack.server_context(TLS12)
    cache.attach(server, internal_cache=False)
    big = MemoryStore(max_sessions=300_000)
    for i in range(200_000):
        big.set(b"k%d" % i, b"v", 600)
    stop = threading.Event()
    done = []

    def handshakes():
        client = stack.client_context()
        while not stop.is_set():
            first = stack.handshake(server, client)
            again = stack.handshake(server, client, first.client_session)
            done.append(again.server_reused)
            stack.close(again)
            stack.close(first)

    def sweeps():  # holds big's lock for milliseconds at a time, the GIL released
        while not stop.is_set():
            big.purge_expired()
            big.describe()

    threads = [threading.Thread(target=handshakes) for _ in range(3)]
    threads += [threading.Thread(target=sweeps)]
    for t in threads:
        t.start()
    failures = []
    try:
        while len(done) < 20:
            time.sleep(0.01)
        for _ in range(FORKS):
            pid = os.fork()
            if pid == 0:  # the child: never return into pytest
                code = 1
                try:
                    signal.alarm(CHILD_DEADLINE)  # a hang ends the child (SIGALRM)
                    big.set(b"child", b"v", 60)  # the lock the sweeper held at fork
                    code = _child_handshakes(stack, server, cache, store)
                finally:
                    os._exit(code)
            _, status = os.waitpid(pid, 0)
            if status != 0:
                failures.append(os.WEXITSTATUS(status) if os.WIFEXITED(status)
                                else f"signal {os.WTERMSIG(status)}")
            time.sleep(0.005)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert failures == [], (
        f"{len(failures)} of {FORKS} children failed (signal 14: hung on a lock held at "
        f"fork; 3: counted the parent's traffic; 5/6: wrong handshakes or counts): {failures}")
    assert all(done) and cache.stats.errors == 0
