"""The package says it is typed (PEP 561, issue 16, 3): without ``py.typed`` in what is
installed, type checkers ignore every annotation of the public API."""
from __future__ import annotations

import os
import subprocess
import sys
from importlib import resources

import sesscache

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_the_installed_package_has_py_typed():
    assert resources.files(sesscache).joinpath("py.typed").is_file()


def test_the_build_puts_py_typed_in_the_package(tmp_path):
    """What a wheel holds comes from setuptools' build_py: run it (no compiling) and
    look in its output, as in the wheel."""
    out = tmp_path / "lib"
    done = subprocess.run(
        [sys.executable, "setup.py", "-q", "build_py", "--build-lib", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (out / "sesscache" / "cache.py").is_file(), "build_py built something else"
    assert (out / "sesscache" / "py.typed").is_file(), sorted(os.listdir(out / "sesscache"))
