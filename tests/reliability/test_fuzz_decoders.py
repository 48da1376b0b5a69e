"""The atheris fuzz target of the Python decoders (fuzz/fuzz_decoders.py: ticket-key rings,
client session values and keys, store URL redaction) runs a few thousand inputs in every
test run, as fuzz_session.py does: skipped where atheris is not installed, except under CI."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

TARGET = Path(__file__).resolve().parents[2] / "fuzz" / "fuzz_decoders.py"
RUNS = int(os.environ.get("SESSCACHE_FUZZ_RUNS", "5000"))


def test_decoders_fuzz_target_runs_clean(tmp_path):
    if importlib.util.find_spec("atheris") is None:
        if os.environ.get("CI") and not os.environ.get("SESSCACHE_MATRIX_ROW"):
            pytest.fail("CI must run the fuzz target: pip install atheris (in the test extra)", pytrace=False)
        pytest.skip("atheris is not installed: pip install atheris")
    corpus = tmp_path / "corpus"
    result = subprocess.run(
        [sys.executable, str(TARGET), f"-runs={RUNS}", "-max_len=4096", "-seed=1", str(corpus)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert f"Done {RUNS} runs" in output, output[-4000:]
    assert not list(tmp_path.glob("crash-*")), output[-4000:]
