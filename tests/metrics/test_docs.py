"""docs/monitoring.md says what the code does: every metric's help text as the code has it,
and its Python snippet runs as written (taken from the page, not copied here)."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from sesscache.metrics._families import HELP

PAGE = Path(__file__).resolve().parents[2] / "docs" / "monitoring.md"


def test_every_metric_is_in_the_table_with_its_help_text():
    text = PAGE.read_text()
    for name, help_text in HELP.items():
        assert f"| `{name}` |" in text, name
        assert help_text in text, name


def test_the_one_process_snippet_runs_as_written_and_prints_the_metrics():
    text = PAGE.read_text()
    section = text.split("### One process", 1)[1]
    snippet = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    out = subprocess.run([sys.executable, "-c", snippet], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert 'sesscache_lookups_total{result="hit"} 0.0' in out.stdout
    assert "sesscache_ticket_keys_generation" in out.stdout
