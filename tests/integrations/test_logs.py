"""sesscache's log in the server's own (sesscache.integrations._logs): an integration adds one
handler passing records to the server's logger; plain library use keeps only the NullHandler.
That the lines really appear in each server's output with no configuration is shown by
test_store_at_start.py (the unreachable-store warnings)."""
from __future__ import annotations

import logging
import subprocess
import sys

from sesscache.integrations._logs import ServerLogHandler, route_to_logger

_PLAIN = """
import logging, ssl
import sesscache
cache = sesscache.SessionCache()
cache.attach(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), session_id_context=b"x")
print([type(h).__name__ for h in logging.getLogger("sesscache").handlers], logging.getLogger("sesscache").level)
"""


def test_plain_library_use_keeps_only_the_null_handler():
    done = subprocess.run([sys.executable, "-c", _PLAIN], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['NullHandler'] 0"


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines = []

    def emit(self, record):
        self.lines.append((record.levelno, record.getMessage()))


def test_records_reach_the_server_logger_once_and_at_its_level():
    server = logging.getLogger("test-server.error")
    collected = _Collect()
    server.addHandler(collected)
    server.setLevel(logging.WARNING)
    server.propagate = False
    root_seen = _Collect()
    logging.getLogger().addHandler(root_seen)
    package = logging.getLogger("sesscache")
    level = package.level
    try:
        handler = route_to_logger("test-server", "test-server.error")
        assert route_to_logger("test-server", "test-server.error") is handler  # once per process
        logging.getLogger("sesscache.cache").warning("store %s failed", "redis://x")
        logging.getLogger("sesscache.cache").info("below the server's level")
        assert collected.lines == [(logging.WARNING, "[sesscache.cache] store redis://x failed")]
        # the root logger sees the record once, as it was made (its own propagation)
        assert [m for _, m in root_seen.lines if "failed" in m] == ["store redis://x failed"]
    finally:
        package.removeHandler(handler)
        package.setLevel(level)
        logging.getLogger().removeHandler(root_seen)
        server.removeHandler(collected)
    assert not [h for h in package.handlers if isinstance(h, ServerLogHandler) and h.server == "test-server"]
