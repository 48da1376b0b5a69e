"""A busy store at start (a SQLite file the other workers are opening and writing at the
same moment) is waited out, briefly, not taken for an unreachable one: otherwise a worker
made a local key and no ticket resumed across the workers until the next refresh."""
from __future__ import annotations

import sqlite3
import threading
import time

from sesscache import SQLiteStore, TicketKeys


def test_a_ring_written_while_another_process_holds_the_file_waits_instead_of_a_local_key(tmp_path):
    path = str(tmp_path / "keys.db")
    SQLiteStore(path).close()  # the file and its schema exist, no ring yet
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")  # another worker's write transaction, held 0.3 s
    release = threading.Timer(0.3, lambda: other.execute("COMMIT"))
    release.start()
    try:
        started = time.monotonic()
        first = TicketKeys(SQLiteStore(path), background=False)  # must write the ring
        assert time.monotonic() - started >= 0.2  # it found the file locked, and waited
    finally:
        release.join()
        other.close()
    assert first.stats.local_keys == 0 and first.stats.store_errors == 0
    second = TicketKeys(SQLiteStore(path), background=False)
    assert [k.key_id for k in second.keys()] == [k.key_id for k in first.keys()]  # one ring
    first.close()
    second.close()
