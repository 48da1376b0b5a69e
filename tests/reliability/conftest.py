"""The reliability suite drives the stdlib stack from many threads at once; two things in
tests/tls.py's accounting of CPython's own session leak (python/cpython#116810) assume one
thread, so they are made thread-safe here (for this directory only):

* the leak per ``.session`` read is measured on the first read; measured while other
  threads make sessions, it counts theirs too. It is measured here first, in quiet.
* the per-libssl tally is a read-modify-write of a dict entry; threads lose updates.
"""
from __future__ import annotations

import threading

import pytest

from tests import tls

_lock = threading.Lock()
_original_note_leak = tls._note_leak


def _locked_note_leak(where) -> None:
    with _lock:
        _original_note_leak(where)


@pytest.fixture(scope="session", autouse=True)
def _stdlib_leak_accounting_for_threads(certs):
    tls._note_leak = _locked_note_leak
    if not tls._leak_per_read:  # measure the per-read leak now, with no other thread running
        stack = tls.StdlibStack(certs)
        server = stack.server_context(tls.TLS12)
        hs = stack.handshake(server, stack.client_context())
        stack.close(hs)
        del stack, server, hs  # the generator's frame lives to the end of the run
    yield
    tls._note_leak = _original_note_leak


def pytest_collection_modifyitems(config, items):
    """Tests marked slow (minutes of load) run only when asked for: ``-m slow`` or
    ``SESSCACHE_SLOW=1``; the normal run of this directory stays near a minute."""
    import os

    if os.environ.get("SESSCACHE_SLOW") or "slow" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason="slow: run with -m slow or SESSCACHE_SLOW=1")
    for item in items:
        if "slow" in item.keywords and "tests/reliability/" in item.nodeid.replace("\\", "/"):
            item.add_marker(skip)
