"""The reliability suite: slow tests (minutes of load) are deselected unless asked for.

(The stdlib driver's accounting of CPython's own session leak is thread-safe and measured
before the first test, in tests/tls.py and tests/conftest.py.)
"""
from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config, items):
    """Tests marked slow (minutes of load) run only when asked for: ``-m slow`` or
    ``SESSCACHE_SLOW=1``; the normal run of this directory stays near a minute."""
    import os

    if os.environ.get("SESSCACHE_SLOW") or "slow" in (config.getoption("markexpr") or ""):
        return
    # Deselected, not skipped: they are not run at all in a normal run (.ci/run runs them).
    slow = [item for item in items
            if "slow" in item.keywords and "tests/reliability/" in item.nodeid.replace("\\", "/")]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [item for item in items if item not in slow]
