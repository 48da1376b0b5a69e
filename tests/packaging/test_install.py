"""What a user gets from ``pip install sesscache``: the wheel and the sdist, installed into
fresh virtualenvs and put through ci/smoke_test.py (libssl copies, binding, cache and CLI
on stdlib and pyOpenSSL contexts).

Both are built from a clean ``git clone`` of this repository's committed HEAD, as a
release would be: the sdist first, then the wheel from that sdist (``python -m build``),
so a file MANIFEST.in forgets breaks both tests rather than hiding behind the work tree.
Dependencies come from the package index pip is configured with, through pip's cache.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.packaging, pytest.mark.slow]


def _other_cpythons() -> list:
    """The oldest and newest other CPython (3.9 or newer) on this machine, to install the
    one abi3 wheel into: on PATH as python3.N, or under pyenv's versions folder."""
    import glob
    import re

    found = {}
    pyenv = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    candidates = [shutil.which(f"python3.{minor}") for minor in range(9, 20)]
    candidates += sorted(glob.glob(os.path.join(pyenv, "versions", "3.*", "bin", "python3")))
    for candidate in filter(None, candidates):
        probe = subprocess.run([candidate, "-c", "import sys, ssl; print('%d.%d' % sys.version_info[:2], "
                                "sys.implementation.name)"], capture_output=True, text=True)
        match = re.fullmatch(r"3\.(\d+) cpython\n", probe.stdout)
        if probe.returncode == 0 and match and int(match[1]) >= 9 and int(match[1]) != sys.version_info[1]:
            found.setdefault(int(match[1]), candidate)
    return [found[minor] for minor in sorted({min(found), max(found)})] if found else []


INTERPRETERS = [sys.executable] + _other_cpythons()


def _run(cmd, *, cwd=None, env=None, timeout=600):
    result = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, (f"`{' '.join(str(c) for c in cmd)}` exited {result.returncode}\n"
                                    f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def _clean_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "SESSCACHE_BUILD_TESTING", "OPENSSL_DIR", "PIP_USER")}
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def dists(tmp_path_factory):
    """sdist and repaired wheel, built from a clean clone of HEAD."""
    if not (ROOT / ".git").exists():
        pytest.fail(f"{ROOT} is not a git checkout: the packaging tests build from a clean clone of it")
    work = tmp_path_factory.mktemp("dists")
    clone = work / "clone"
    _run(["git", "clone", "--quiet", "--no-hardlinks", ROOT, clone])
    raw = work / "raw"
    _run([sys.executable, "-m", "build", "--outdir", raw, clone], env=_clean_env())
    sdists, wheels = sorted(raw.glob("*.tar.gz")), sorted(raw.glob("*.whl"))
    assert len(sdists) == 1 and len(wheels) == 1, sorted(raw.iterdir())
    repaired = work / "dist"
    bin_dir = Path(sys.executable).parent
    _run([bin_dir / "auditwheel", "repair", "--strip", "-w", repaired, wheels[0]],
         env=_clean_env(PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"))
    (wheel,) = repaired.glob("*.whl")
    return {"sdist": sdists[0], "wheel": wheel, "smoke": clone / "ci" / "smoke_test.py"}


def _fresh_venv(path: Path, python: str = sys.executable) -> Path:
    if python == sys.executable:
        venv.EnvBuilder(with_pip=True, clear=True).create(path)
    else:
        _run([python, "-m", "venv", "--clear", path], env=_clean_env())
    return path / "bin" / "python"


def _smoke(python: Path, smoke: Path, cwd: Path) -> str:
    # From an empty folder: the installed package, never this checkout, is imported.
    result = _run([python, smoke, "--require-pyopenssl"], cwd=cwd, env=_clean_env(), timeout=300)
    return result.stdout


def test_the_wheel_is_one_abi3_wheel_with_no_openssl_inside(dists):
    wheel = dists["wheel"]
    assert "-cp39-abi3-manylinux_" in wheel.name, wheel.name
    # The same check cibuildwheel's repair step and `make wheel` run.
    result = subprocess.run([sys.executable, ROOT / "ci" / "check_wheel.py", wheel], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("interpreter", INTERPRETERS, ids=lambda p: "this-python" if p == sys.executable else p)
def test_the_wheel_installs_without_a_compiler_and_works(dists, tmp_path, interpreter):
    """The one cp39-abi3 wheel, on this Python and on the oldest and newest other CPython
    found here (3.9 and 3.13 on the development machines)."""
    python = _fresh_venv(tmp_path / "venv", interpreter)
    # No compiler anywhere and only a binary sesscache: pip must not try to build it.
    env = _clean_env(CC="/bin/false", CXX="/bin/false", LDSHARED="/bin/false")
    _run([python, "-m", "pip", "install", "-q", "--only-binary", "sesscache", dists["wheel"],
          "pyOpenSSL", "trustme"], env=env)
    module = _run([python, "-c", "import sesscache._sesscache_cffi as m; print(m.__file__)"],
                  cwd=tmp_path, env=env).stdout.strip()
    ldd = _run(["ldd", module]).stdout
    assert "libssl" not in ldd and "libcrypto" not in ldd, ldd
    output = _smoke(python, dists["smoke"], tmp_path)
    assert "smoke: ok" in output
    assert "(bundled, " in output or "pyOpenSSL's (cryptography's) libssl" in output


def test_the_sdist_from_a_clean_clone_builds_and_works(dists, tmp_path):
    python = _fresh_venv(tmp_path / "venv")
    _run([python, "-m", "pip", "install", "-q", "--no-binary", "sesscache", dists["sdist"],
          "pyOpenSSL", "trustme"], env=_clean_env())
    installed = _run([python, "-c", "import sesscache, os; print(os.listdir(os.path.dirname(sesscache.__file__)))"],
                     cwd=tmp_path, env=_clean_env()).stdout
    assert "_sesscache_testing_cffi" not in installed, installed
    assert "smoke: ok" in _smoke(python, dists["smoke"], tmp_path)
