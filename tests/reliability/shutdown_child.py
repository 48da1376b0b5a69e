"""A server process that is told to exit while its threads handshake: run by test_teardown.

    python shutdown_child.py CERTS_DIR STORE MODE

Starts traffic on all three stacks (two daemon threads each, sessions through one
SessionCache per stack over STORE), waits until every thread has resumed at least once,
then leaves by MODE: ``sys.exit`` (status 3), ``os._exit`` (status 4), ``return`` (falls off
the end of main: 0), ``raise`` (an uncaught exception in main: 1), ``signal`` (SIGTERM to
itself with the default handler: -15).
"""
from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from sesscache import MemoryStore, SessionCache, SQLiteStore  # noqa: E402
from tests.conftest import Certs  # noqa: E402
from tests.tls import STACKS, TLS12, TLS13  # noqa: E402


def main() -> None:
    folder, store_kind, mode = sys.argv[1], sys.argv[2], sys.argv[3]
    certs = Certs(f"{folder}/ca.pem", f"{folder}/server.pem", f"{folder}/other.pem")
    if store_kind == "memory":
        store = MemoryStore()
    else:
        store = SQLiteStore(f"shutdown-{os.getpid()}.db", timeout=1)  # in the working directory
    resumed = {}
    started = []
    for name, cls in STACKS.items():
        stack = cls(certs)
        for index, version in enumerate((TLS12, TLS13)):
            cache = SessionCache(store)
            server = stack.server_context(version, internal_cache=index == 0)
            cache.attach(server, session_id_context=b"shutdown-" + name.encode(), internal_cache=index == 0)

            def traffic(stack=stack, server=server, key=(name, version)):
                client = stack.client_context()
                while True:
                    first = stack.handshake(server, client)
                    again = stack.handshake(server, client, first.client_session)
                    if again.server_reused:
                        resumed[key] = True
                    stack.close(first)
                    stack.close(again, clean=False)  # some unclean closes: remove callbacks too

            thread = threading.Thread(target=traffic, daemon=True)
            thread.start()
            started.append(thread)
    deadline = time.monotonic() + 20
    while len(resumed) < len(started) and time.monotonic() < deadline:
        time.sleep(0.01)
    print("traffic", len(resumed), "of", len(started), flush=True)
    if mode == "sys.exit":
        sys.exit(3)
    if mode == "os._exit":
        os._exit(4)
    if mode == "raise":
        raise RuntimeError("main gives up (expected by the test)")
    if mode == "signal":
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(10)
    # "return": main returns while the daemon threads are in the middle of handshakes


if __name__ == "__main__":
    main()
