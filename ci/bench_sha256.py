#!/usr/bin/env python3
"""Micro-benchmark of the bound-session-id-context digest (csrc/sni_binding.c) through the
compiled module: `.venv/bin/python ci/bench_sha256.py LABEL`. Names vary per call, so the
per-thread memo never answers and every call digests (as for a new name)."""
import sys, time
from sesscache._binding import ffi, lib
from sesscache._binding.copies import stdlib_instance
stdlib_instance()
sid = b"sesscache"; fp = bytes(range(16)); out = ffi.new("unsigned char[32]")
names = [b"host%06d.example.com" % i for i in range(1000)]
f = lib.sc_bound_session_id_context
best = []
for rep in range(5):
    t = time.perf_counter()
    for _ in range(100):
        for n in names:
            f(sid, 9, fp, n, len(n), out)
    best.append((time.perf_counter() - t) / 100000 * 1e9)
same = names[0]
t = time.perf_counter()
for _ in range(100000):
    f(sid, 9, fp, same, len(same), out)
memo = (time.perf_counter() - t) / 100000 * 1e9
print(f"{sys.argv[1]}: digest per call {min(best):.0f} ns (min of 5 x 100k), memo hit {memo:.0f} ns")
