"""Run one function in N fresh processes that start it together (a race)."""
from __future__ import annotations

import multiprocessing
from typing import Any, Callable, List


def _start_together(target: Callable[..., Any], barrier: Any, results: Any, args: tuple) -> None:
    barrier.wait()
    results.put(target(*args))


def race(processes: int, target: Callable[..., Any], *args: Any, timeout: float = 120.0) -> List[Any]:
    """``target(*args)``'s results from ``processes`` spawned processes, released at once
    by a barrier. ``target`` must be importable (a module-level function)."""
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(processes), ctx.Queue()
    procs = [ctx.Process(target=_start_together, args=(target, barrier, results, args))
             for _ in range(processes)]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=timeout) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    return outcomes
