"""The atheris fuzz targets run a few thousand inputs in every test run: fuzz/fuzz_session.py
(stored sessions) and fuzz/fuzz_decoders.py (ticket-key rings, client session values and keys,
store URL redaction). Skipped where atheris is not installed, except under CI, where they must
run (the rows of the OpenSSL version matrix, which build their own venvs, may lack it: skipped
there)."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

FUZZ = Path(__file__).resolve().parents[2] / "fuzz"
#: Each target with its default number of inputs (SESSCACHE_FUZZ_RUNS overrides both).
TARGETS = {"fuzz_session.py": 2000, "fuzz_decoders.py": 5000}


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_fuzz_target_runs_clean(tmp_path, target):
    if importlib.util.find_spec("atheris") is None:
        if os.environ.get("CI") and not os.environ.get("SESSCACHE_MATRIX_ROW"):
            pytest.fail("CI must run the fuzz target: pip install atheris (in the test extra)", pytrace=False)
        pytest.skip("atheris is not installed: pip install atheris")
    runs = int(os.environ.get("SESSCACHE_FUZZ_RUNS", str(TARGETS[target])))
    corpus = tmp_path / "corpus"
    result = subprocess.run(
        [sys.executable, str(FUZZ / target), f"-runs={runs}", "-max_len=4096", "-seed=1", str(corpus)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert f"Done {runs} runs" in output, output[-4000:]
    assert not list(tmp_path.glob("crash-*")), output[-4000:]
