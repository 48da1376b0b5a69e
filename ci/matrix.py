#!/usr/bin/env python3
"""Run sesscache's whole test suite once per OpenSSL of the version matrix.

    python3 ci/matrix.py                      # every default row, 2 at a time
    python3 ci/matrix.py --rows 1.1.1,bundled-3.1 --jobs 1
    python3 ci/matrix.py --list               # rows, what they install, whether they run here
    python3 ci/matrix.py --rows system -- -k session -x    # arguments after -- go to pytest

A row is one OpenSSL that sesscache must work with.  Each row gets its own virtualenv
(cached), its own snapshot of the work tree, its own build of the extension and its own
log; then ``python -m pytest -q -p no:cacheprovider tests/`` runs in it with
``SESSCACHE_EXPECT_LINKED_OPENSSL`` / ``SESSCACHE_EXPECT_BUNDLED_OPENSSL`` set, so the
suite itself checks that the row really ran on its OpenSSL.  See ci/README.md.

Exit status: 0 when every runnable row passed, 1 when any runnable row failed or could
not be prepared, 2 for a usage error.  Rows that cannot run on this machine (for example
an OpenSSL whose packages need a newer glibc) are listed with the reason and do not fail
the run.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fetch_openssl  # noqa: E402

REPO = Path(__file__).resolve().parent.parent

# Environment that must not leak from the caller into a row: each row sets its own
# OpenSSL, and a stray library path would hide a wrong rpath.
SCRUBBED_ENV = (
    "OPENSSL_DIR",
    "SESSCACHE_EXPECT_LINKED_OPENSSL",
    "SESSCACHE_EXPECT_BUNDLED_OPENSSL",
    "LD_LIBRARY_PATH",
    "LD_PRELOAD",
    "PYTHONPATH",
    "PYTHONHOME",
    "PYTHONSTARTUP",
    "VIRTUAL_ENV",
    "PIP_USER",
)

# Work-tree entries never copied into a row's snapshot: VCS data, environments, caches
# and build products (a stale compiled module would hide which OpenSSL a row built on).
SNAPSHOT_IGNORE = shutil.ignore_patterns(
    ".git", ".venv", ".venv-*", ".cache", "build", "dist", "*.egg-info", "__pycache__",
    "*.so", "*.o", ".pytest_cache", ".hypothesis", ".benchmarks", "_sesscache_cffi.c",
)

# Sources whose change means the extension must be rebuilt in every row's venv.
SOURCE_GLOBS = ("pyproject.toml", "setup.py", "setup.cfg", "build_ffi.py", "_cffi_src/**/*.py",
                "src/**/*.py", "src/**/*.pyi", "src/**/*.h", "src/**/*.c", "csrc/*.c", "csrc/*.h",
                "MANIFEST.in")


@dataclasses.dataclass(frozen=True)
class Row:
    name: str
    kind: str  # "system" | "linked" | "bundled"
    about: str
    prefix_row: str | None = None  # fetch_openssl row giving OPENSSL_DIR
    cryptography: str | None = None  # pins for bundled rows (None: newest)
    pyopenssl: str | None = None
    series: str | None = None  # bundled OpenSSL the wheel must carry, e.g. "3.1"
    default: bool = True

    @property
    def pins(self) -> list[str]:
        if self.kind != "bundled":
            return []
        return [f"cryptography=={self.cryptography}" if self.cryptography else "cryptography",
                f"pyOpenSSL=={self.pyopenssl}" if self.pyopenssl else "pyOpenSSL"]


ROWS = {
    r.name: r
    for r in (
        Row("system", "system", "the machine's libssl-dev (plain pip install .)"),
        Row("1.1.1", "linked", "Debian bullseye's libssl1.1 + libssl-dev", prefix_row="1.1.1"),
        Row("3.5", "linked", "Debian trixie's libssl3t64 + libssl-dev", prefix_row="3.5"),
        Row("3.5-src", "linked", "OpenSSL 3.5 built from Debian trixie's upstream tarball",
            prefix_row="3.5-src"),
        Row("bundled-1.1.1", "bundled", "pyOpenSSL on cryptography 3.4.8's OpenSSL",
            cryptography="3.4.8", pyopenssl="21.0.0", series="1.1.1"),
        Row("bundled-3.1", "bundled", "pyOpenSSL on cryptography 41's OpenSSL",
            cryptography="41.0.7", pyopenssl="23.2.0", series="3.1"),
        Row("bundled-3.4", "bundled", "pyOpenSSL on cryptography 44's OpenSSL",
            cryptography="44.0.3", pyopenssl="24.3.0", series="3.4"),
        Row("bundled-3.5", "bundled", "pyOpenSSL on cryptography 46's OpenSSL",
            cryptography="46.0.7", pyopenssl="25.3.0", series="3.5"),
        Row("bundled-4.0", "bundled", "pyOpenSSL on cryptography 50's OpenSSL",
            cryptography="50.0.2", pyopenssl="26.4.0", series="4.0"),
        Row("bundled-latest", "bundled", "newest cryptography + pyOpenSSL the index serves",
            default=False),
    )
}
GROUPS = {
    "default": [n for n, r in ROWS.items() if r.default],
    "all": list(ROWS),
    "linked": [n for n, r in ROWS.items() if r.kind in ("system", "linked") and r.default],
    "bundled": [n for n, r in ROWS.items() if r.kind == "bundled" and r.default],
}


class NotRunnableHere(Exception):
    """The row cannot run on this machine; the message says why."""


class PrepareError(Exception):
    """The row could not be set up (network, build failure, wrong wheel...)."""


@dataclasses.dataclass
class Result:
    row: str
    status: str = "pending"  # ok | FAILED | ERROR | not runnable here
    reason: str = ""
    openssl: str = ""
    counts: dict = dataclasses.field(default_factory=dict)
    prep_seconds: float = 0.0
    test_seconds: float = 0.0
    log: Path | None = None
    tail: str = ""

    @property
    def runnable(self) -> bool:
        return self.status != "not runnable here"

    @property
    def failed(self) -> bool:
        return self.status in ("FAILED", "ERROR")


# ------------------------------------------------------------------------- helpers


def cache_root() -> Path:
    return fetch_openssl.cache_root()


def sha256_of(parts: list[bytes]) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(hashlib.sha256(p).digest())
    return h.hexdigest()[:16]


def source_hash() -> str:
    files = sorted({p for g in SOURCE_GLOBS for p in REPO.glob(g) if p.is_file() and "__pycache__" not in p.parts})
    return sha256_of([str(p.relative_to(REPO)).encode() + b"\0" + p.read_bytes() for p in files])


def dependency_spec() -> dict:
    """The parts of pyproject.toml that decide a row's heavy dependencies."""
    text = (REPO / "pyproject.toml").read_text()
    try:
        import tomllib
    except ImportError:  # Python < 3.11: fall back to the whole file
        return {"pyproject": text}
    data = tomllib.loads(text)
    project = data.get("project", {})
    return {
        "build": data.get("build-system", {}).get("requires", []),
        "dependencies": project.get("dependencies", []),
        "test": project.get("optional-dependencies", {}).get("test", []),
    }


class Logger:
    """One log file per row; every command's output goes there, not to the terminal."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.fh = open(path, "w", buffering=1)

    def note(self, msg: str) -> None:
        self.fh.write(f"[{time.strftime('%H:%M:%S')}] {msg}\n")

    def run(self, cmd: list[str], *, env: dict | None = None, cwd: Path | None = None,
            timeout: float | None = None, check: bool = True) -> int:
        self.note("$ " + " ".join(str(c) for c in cmd))
        proc = subprocess.Popen([str(c) for c in cmd], stdout=self.fh, stderr=subprocess.STDOUT,
                                env=env, cwd=cwd, start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            self.note(f"timed out after {timeout:.0f} s; killed")
            if check:
                raise PrepareError(f"{Path(str(cmd[0])).name} timed out after {timeout:.0f} s")
            return -9
        if check and rc != 0:
            raise PrepareError(f"`{' '.join(str(c) for c in cmd[:4])} ...` exited {rc}")
        return rc

    def capture(self, cmd: list[str], *, env: dict | None = None, cwd: Path | None = None) -> str:
        self.note("$ " + " ".join(str(c) for c in cmd))
        res = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=env, cwd=cwd)
        self.fh.write(res.stdout + res.stderr)
        if res.returncode != 0:
            raise PrepareError(f"`{' '.join(str(c) for c in cmd[:3])} ...` exited {res.returncode}: "
                               f"{res.stderr.strip()[-400:]}")
        return res.stdout

    def tail(self, lines: int = 40) -> str:
        self.fh.flush()
        return "\n".join(self.path.read_text(errors="replace").splitlines()[-lines:])


# What the row's interpreter sees: the TLS stacks importable there.
STACK_PROBE = r"""
import json, ssl
out = {"python": ssl.OPENSSL_VERSION}
try:
    import cryptography
    from cryptography.hazmat.bindings.openssl.binding import Binding
    b = Binding()
    out["cryptography"] = cryptography.__version__
    out["bundled"] = b.ffi.string(b.lib.OpenSSL_version(0)).decode()
except Exception as exc:
    out["bundled_error"] = repr(exc)
try:
    import OpenSSL
    out["pyopenssl"] = OpenSSL.__version__
except Exception as exc:
    out["pyopenssl_error"] = repr(exc)
print(json.dumps(out))
"""

# What sesscache itself says it bound, which is what the table shows.
LIBRARY_PROBE = r"""
import json
import sesscache

def text(info):
    if isinstance(info, dict):
        for key in ("version", "version_text", "openssl_version"):
            if key in info:
                return str(info[key])
        return json.dumps(info, default=str)
    for key in ("version", "version_text", "openssl_version"):
        if hasattr(info, key):
            return str(getattr(info, key))
    return str(info)

# The row's own OpenSSL is the one sesscache.testing's module links; the core links none.
from sesscache import testing
out = {"linked": text(testing.linked_instance()), "stdlib": text(sesscache.libssl_info())}
try:
    from OpenSSL import SSL
    out["bundled"] = text(sesscache.libssl_info(SSL.Context(SSL.TLS_METHOD)))
except ImportError:
    pass
except Exception as exc:
    out["bundled_error"] = f"{type(exc).__name__}: {exc}"
print(json.dumps(out))
"""

SYSTEM_PROBE = r"""
import ctypes, ctypes.util
name = "libcrypto.so"
try:
    lib = ctypes.CDLL(name)
except OSError:
    lib = ctypes.CDLL(ctypes.util.find_library("crypto"))
lib.OpenSSL_version.restype = ctypes.c_char_p
lib.OpenSSL_version.argtypes = [ctypes.c_int]
print(lib.OpenSSL_version(0).decode())
"""


def system_openssl() -> str:
    """OpenSSL_version(0) of the libcrypto a plain `pip install .` links (the loader's -lcrypto)."""
    res = subprocess.run([sys.executable, "-c", SYSTEM_PROBE], capture_output=True, text=True)
    if res.returncode != 0:
        raise PrepareError("the system libcrypto does not load (is libssl-dev installed?): "
                           + res.stderr.strip()[-300:])
    return res.stdout.strip()


# ---------------------------------------------------------------------------- a row


class RowRunner:
    def __init__(self, row: Row, args: argparse.Namespace, src_hash: str, deps: dict):
        self.row = row
        self.args = args
        self.src_hash = src_hash
        self.deps = deps
        self.root = cache_root()
        self.result = Result(row.name, log=self.root / "logs" / f"{row.name}.log")
        self.log = Logger(self.result.log)

    # -- environment

    def base_env(self) -> dict:
        env = {k: v for k, v in os.environ.items() if k not in SCRUBBED_ENV}
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        return env

    def venv_env(self, venv: Path) -> dict:
        env = self.base_env()
        env["VIRTUAL_ENV"] = str(venv)
        env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        return env

    # -- steps

    def prefix(self) -> Path | None:
        if self.row.kind != "linked":
            return None
        try:
            if self.row.prefix_row in fetch_openssl.RELEASES:
                # Learn whether it can run here before anything heavy happens.
                if not fetch_openssl.read_manifest(self.row.prefix_row):
                    fetch_openssl.check_runnable(self.row.prefix_row)
            self.log.note(f"preparing OpenSSL prefix for {self.row.prefix_row}")
            return fetch_openssl.prepare(self.row.prefix_row)
        except fetch_openssl.NotRunnable as exc:
            raise NotRunnableHere(str(exc)) from None
        except fetch_openssl.FetchError as exc:
            raise PrepareError(str(exc)) from None

    def snapshot(self) -> Path:
        """A private copy of the work tree: builds and test runs of two rows never share files."""
        tree = self.root / "build" / self.row.name / "tree"
        shutil.rmtree(tree.parent, ignore_errors=True)
        tree.parent.mkdir(parents=True)
        cache = self.root.resolve()

        def ignore(folder: str, names: list[str]) -> set[str]:
            # The cache may live inside the work tree under any name: never copy it into itself.
            skip = set(SNAPSHOT_IGNORE(folder, names))
            return skip | {n for n in names if Path(folder, n).resolve() == cache}

        shutil.copytree(REPO, tree, ignore=ignore, symlinks=True)
        return tree

    def venv(self, tree: Path, prefix: Path | None) -> Path:
        py = self.args.python
        pyver = subprocess.run([py, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                               capture_output=True, text=True, check=True).stdout.strip()
        key = sha256_of([json.dumps([self.row.pins, self.deps, pyver, str(prefix)], sort_keys=True).encode()])
        venv = self.root / "venvs" / f"{self.row.name}-py{pyver}-{key}"
        deps_stamp = venv / ".sesscache-deps"
        src_stamp = venv / ".sesscache-src"
        env = self.venv_env(venv)
        if prefix:
            env["OPENSSL_DIR"] = str(prefix)
        # The linked test module: what puts the row's OpenSSL in the process (the core
        # module links none; it finds that libssl in the test module's lookup scope).
        env["SESSCACHE_BUILD_TESTING"] = "1"
        pip = [venv / "bin" / "python", "-m", "pip", "--disable-pip-version-check"]
        want_src = f"{self.src_hash} {prefix or 'system'}"
        if self.row.name == "bundled-latest" and deps_stamp.exists():
            if time.time() - deps_stamp.stat().st_mtime > 20 * 3600:
                deps_stamp.unlink()  # "latest" means today's latest

        if not deps_stamp.exists():
            self.log.note(f"creating {venv}")
            shutil.rmtree(venv, ignore_errors=True)
            self.log.run([py, "-m", "venv", venv], env=self.base_env())
            self.log.run([*pip, "install", "-q", "-U", "pip", *self.deps["build"], "wheel"], env=env)
            # The row's heavy dependencies: the test extra, then the row's own pins on top.
            self.log.run([*pip, "install", "--no-build-isolation", f"{tree}[test]"], env=env)
            if self.row.pins:
                upgrade = ["-U"] if self.row.name == "bundled-latest" else []
                self.log.run([*pip, "install", *upgrade, *self.row.pins], env=env)
            deps_stamp.write_text(json.dumps({"pins": self.row.pins, "deps": self.deps}) + "\n")
            src_stamp.write_text(want_src)
        elif not src_stamp.exists() or src_stamp.read_text() != want_src:
            self.log.note("sources changed since this venv was built: reinstalling sesscache only")
            src_stamp.unlink(missing_ok=True)
            self.log.run([*pip, "install", "--no-build-isolation", "--no-deps", "--force-reinstall", tree], env=env)
            src_stamp.write_text(want_src)
        else:
            self.log.note(f"reusing {venv} (dependencies and sesscache up to date)")
        self.check_pins(venv)
        return venv

    def check_pins(self, venv: Path) -> None:
        """pip must have ended with the row's versions, not whatever the test extra pulled in."""
        for pin in self.row.pins:
            if "==" not in pin:
                continue
            name, want = pin.split("==")
            have = self.log.capture([venv / "bin" / "python", "-c",
                                     f"import importlib.metadata as m; print(m.version({name!r}))"]).strip()
            if have != want:
                raise PrepareError(f"{name} is {have} in {venv}, not the row's {want}")

    def expectations(self, venv: Path, prefix: Path | None) -> dict:
        stacks = json.loads(self.log.capture([venv / "bin" / "python", "-c", STACK_PROBE],
                                             env=self.venv_env(venv)))
        self.log.note(f"TLS stacks in the venv: {stacks}")
        env = {}
        if prefix:
            manifest = json.loads((prefix / "sesscache-prefix.json").read_text())
            env["SESSCACHE_EXPECT_LINKED_OPENSSL"] = manifest["openssl_version"]
        else:
            env["SESSCACHE_EXPECT_LINKED_OPENSSL"] = fetch_openssl.openssl_version_token(system_openssl())
        if "bundled" in stacks:
            bundled = fetch_openssl.openssl_version_token(stacks["bundled"])
            if self.row.series and not re.match(re.escape(self.row.series) + r"(\.|[a-z]|$)", bundled):
                raise PrepareError(f"cryptography {stacks.get('cryptography')} bundles OpenSSL {bundled}, "
                                   f"not the row's {self.row.series}")
            env["SESSCACHE_EXPECT_BUNDLED_OPENSSL"] = bundled
        elif self.row.kind == "bundled":
            raise PrepareError(f"cryptography's bindings do not load: {stacks.get('bundled_error')}")
        return env

    def library_openssl(self, venv: Path, env: dict) -> str:
        res = subprocess.run([venv / "bin" / "python", "-c", LIBRARY_PROBE], capture_output=True,
                             text=True, env=env, cwd=self.root)
        self.log.note("sesscache.libssl_info(): " + (res.stdout.strip() or res.stderr.strip()[-500:]))
        if res.returncode != 0:
            last = (res.stderr.strip().splitlines() or ["?"])[-1]
            return f"? ({last[:60]})"
        info = json.loads(res.stdout)
        linked = info.get("linked", "?")
        if self.row.kind == "bundled":
            return f"{info.get('bundled') or info.get('bundled_error', '?')} (linked {short(linked)})"
        return linked

    def run(self) -> Result:
        r = self.result
        started = time.monotonic()
        try:
            self.log.note(f"row {self.row.name}: {self.row.about}")
            prefix = self.prefix()
            tree = self.snapshot()
            venv = self.venv(tree, prefix)
            env = self.venv_env(venv)
            env.update(self.expectations(venv, prefix))
            # Rows run side by side against the same redis/memcached: tests can namespace by row.
            env["SESSCACHE_MATRIX_ROW"] = self.row.name
            # What the row is for: "linked" rows exist for sesscache's own libssl, "bundled"
            # rows for pyOpenSSL's; the system row covers everything. A suite may skip the
            # stacks another row already covers on the same OpenSSL.
            env["SESSCACHE_MATRIX_FOCUS"] = {"system": "all"}.get(self.row.kind, self.row.kind)
            forwarded = sorted(k for k in env if k.startswith("SESSCACHE_"))
            self.log.note("row environment: " + ", ".join(
                f"{k}={env[k]}" if k.startswith("SESSCACHE_EXPECT") else k for k in forwarded))
            r.openssl = self.library_openssl(venv, env)
            r.prep_seconds = time.monotonic() - started

            t0 = time.monotonic()
            cmd = [venv / "bin" / "python", "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/",
                   *self.args.pytest_args]
            rc = self.log.run(cmd, env=env, cwd=tree, timeout=self.args.timeout, check=False)
            r.test_seconds = time.monotonic() - t0
            r.counts = parse_summary(self.log.path.read_text(errors="replace"))
            if rc == 0 and r.counts.get("passed", 0) > 0:
                r.status = "ok"
            else:
                r.status = "FAILED"
                r.reason = {5: "pytest collected no tests", -9: f"timed out after {self.args.timeout:.0f} s"}.get(
                    rc, f"pytest exited {rc}")
                if rc == 0:
                    r.reason = "no test passed"
                elif not r.counts:
                    # pytest stopped before running tests (conftest import error, usage...).
                    said = [ln[2:].strip() for ln in self.log.tail(60).splitlines() if ln.startswith("E ")]
                    if said:
                        r.reason += f": {said[-1][:160]}"
        except NotRunnableHere as exc:
            r.status, r.reason = "not runnable here", str(exc)
            self.log.note(f"not runnable here: {exc}")
        except (PrepareError, subprocess.CalledProcessError, OSError) as exc:
            r.status, r.reason = "ERROR", f"preparing the row: {exc}"
            r.prep_seconds = time.monotonic() - started
            self.log.note(r.reason)
        if r.failed:
            r.tail = self.log.tail()
        self.log.fh.close()
        return r


def short(version_text: str) -> str:
    return fetch_openssl.openssl_version_token(version_text) if "OpenSSL" in version_text else version_text


SUMMARY_RE = re.compile(r"(\d+) (passed|failed|skipped|errors?|xfailed|xpassed|deselected|warnings?)\b")


def parse_summary(text: str) -> dict:
    """Counts from pytest's closing line ("3 failed, 40 passed, 2 skipped in 4.1s")."""
    for line in reversed(text.splitlines()):
        if re.search(r"\bin [\d.]+s\b", line) and SUMMARY_RE.search(line):
            counts = {}
            for n, word in SUMMARY_RE.findall(line):
                word = {"error": "errors", "warning": "warnings"}.get(word, word)
                counts[word] = int(n)
            return counts
        if "no tests ran" in line:
            return {}
    return {}


# ----------------------------------------------------------------------- the matrix


def fmt_seconds(s: float) -> str:
    return f"{int(s) // 60}m{int(s) % 60:02d}s" if s >= 60 else f"{s:.0f}s"


def table(results: list[Result]) -> str:
    head = ["row", "OpenSSL (as sesscache reports it)", "passed", "failed", "skipped", "errors", "time", "status"]
    rows = []
    for r in results:
        c = r.counts
        status = r.status if not r.reason else f"{r.status}: {r.reason}"
        if r.runnable:
            timing = fmt_seconds(r.test_seconds) + (f" (+{fmt_seconds(r.prep_seconds)} prep)" if r.prep_seconds >= 1 else "")
            rows.append([r.row, r.openssl or "-", str(c.get("passed", 0)), str(c.get("failed", 0)),
                         str(c.get("skipped", 0)), str(c.get("errors", 0)), timing, status])
        else:
            rows.append([r.row, "-", "-", "-", "-", "-", "-", status])
    widths = [max(len(x[i]) for x in [head, *rows]) for i in range(len(head) - 1)]
    out = []
    for line in [head, ["-" * w for w in widths] + ["------"], *rows]:
        out.append(" | ".join(cell.ljust(w) for cell, w in zip(line, widths + [0])).rstrip())
    return "\n".join(out)


def pick_rows(spec: str) -> list[str]:
    names: list[str] = []
    for part in filter(None, (p.strip() for p in spec.split(","))):
        if part in GROUPS:
            names += GROUPS[part]
        elif part in ROWS:
            names.append(part)
        else:
            raise ValueError(f"unknown row '{part}'. Rows: {', '.join(ROWS)}; groups: {', '.join(GROUPS)}")
    return list(dict.fromkeys(names))


def list_rows() -> None:
    for name, row in ROWS.items():
        pins = " ".join(row.pins)
        extra = "" if row.default else "  [not in the default set]"
        print(f"{name:15} {row.about}{' (' + pins + ')' if pins else ''}{extra}")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    pytest_args: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, pytest_args = argv[:i], argv[i + 1:]
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog="Groups for --rows: " + ", ".join(f"{g} ({', '.join(n)})" for g, n in GROUPS.items()))
    ap.add_argument("--rows", default="default", help="comma-separated rows or groups (default: %(default)s)")
    ap.add_argument("--jobs", type=int, default=2, help="rows prepared and tested at once (default: %(default)s)")
    ap.add_argument("--python", default=sys.executable, help="interpreter for the row venvs (default: this one)")
    ap.add_argument("--timeout", type=float, default=900, help="seconds one row's test run may take (default: %(default)s)")
    ap.add_argument("--list", action="store_true", help="list the rows and exit")
    args = ap.parse_args(argv)
    args.pytest_args = pytest_args
    if args.list:
        list_rows()
        return 0
    try:
        names = pick_rows(args.rows)
    except ValueError as exc:
        ap.error(str(exc))
    if not (REPO / "build_ffi.py").exists():
        print("matrix: build_ffi.py is missing; there is no extension to build yet", file=sys.stderr)
        return 1

    root = cache_root()
    print(f"matrix: {len(names)} row(s), {args.jobs} at a time; cache {root}; logs {root / 'logs'}", flush=True)
    src_hash, deps = source_hash(), dependency_spec()
    # Rows that build OpenSSL from source are the slowest: start them first.
    order = sorted(names, key=lambda n: ROWS[n].prefix_row not in fetch_openssl.SOURCE_RELEASES)
    started = time.monotonic()
    lock = threading.Lock()
    results: dict[str, Result] = {}

    def one(name: str) -> Result:
        res = RowRunner(ROWS[name], args, src_hash, deps).run()
        with lock:
            c = res.counts
            detail = (f"{c.get('passed', 0)} passed, {c.get('failed', 0)} failed, {c.get('skipped', 0)} skipped"
                      if res.runnable and res.status != "ERROR" else res.reason)
            print(f"matrix: [{fmt_seconds(time.monotonic() - started)}] {name}: {res.status} - {detail}", flush=True)
        return res

    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        for res in pool.map(one, order):
            results[res.row] = res

    ordered = [results[n] for n in names]
    for r in ordered:
        if r.failed:
            print(f"\n===== {r.row}: {r.status} ({r.reason}); last lines of {r.log} =====\n{r.tail}")
    print()
    print(table(ordered))
    total = time.monotonic() - started
    failed = [r.row for r in ordered if r.failed]
    skipped = [r.row for r in ordered if not r.runnable]
    ran = [r for r in ordered if r.runnable and not r.failed]
    passed = sum(r.counts.get("passed", 0) for r in ordered)
    nfailed = sum(r.counts.get("failed", 0) + r.counts.get("errors", 0) for r in ordered)
    nskipped = sum(r.counts.get("skipped", 0) for r in ordered)
    print(f"\nmatrix: {len(ran)} row(s) passed, {len(failed)} failed"
          + (f" ({', '.join(failed)})" if failed else "")
          + (f", {len(skipped)} not runnable here ({', '.join(skipped)})" if skipped else "")
          + f"; wall time {fmt_seconds(total)}")
    # A plain closing line CI tooling understands, summed over the rows.
    print(f"matrix: {passed} passed, {nfailed} failed, {nskipped} skipped")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
