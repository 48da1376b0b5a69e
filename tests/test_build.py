"""The build script's errors name what to install or what is wrong."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _build(env_extra):
    env = dict(os.environ, **env_extra)
    return subprocess.run([sys.executable, "-c", "import build_ffi"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def test_openssl_dir_without_headers_is_explained(tmp_path):
    result = _build({"OPENSSL_DIR": str(tmp_path)})
    assert result.returncode != 0
    assert "has no include/openssl/ssl.h" in result.stderr
    assert "OpenSSL prefix with include/ and lib/" in result.stderr


def test_openssl_dir_without_libraries_is_explained(tmp_path):
    (tmp_path / "include" / "openssl").mkdir(parents=True)
    (tmp_path / "include" / "openssl" / "ssl.h").write_text("")
    result = _build({"OPENSSL_DIR": str(tmp_path)})
    assert result.returncode != 0
    assert "has no lib/ or lib64/" in result.stderr
