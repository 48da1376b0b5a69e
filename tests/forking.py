"""Run a function in a forked child process and get its result back (fork-safety tests)."""
from __future__ import annotations

import multiprocessing
from typing import Any, Callable


def run_in_forked_child(work: Callable[[], Any], timeout: float = 60) -> Any:
    """``work()``'s result, computed in a child forked from this process (its threads gone,
    its locks copied as they were); ``repr`` of the exception if it raised."""
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()

    def child() -> None:
        try:
            queue.put(work())
        except BaseException as exc:
            queue.put(repr(exc))

    proc = ctx.Process(target=child)
    proc.start()
    result = queue.get(timeout=timeout)
    proc.join(10)
    return result
