#!/usr/bin/env python3
"""Fetch another Debian release's OpenSSL into a private prefix for one matrix row.

    python3 ci/fetch_openssl.py 1.1.1          # prints the prefix path
    python3 ci/fetch_openssl.py 3.5 --check    # says whether the row can run here

The packages come from Debian's archive through apt itself, with a private apt
configuration: the machine's own sources (/etc/apt/sources.list and
/etc/apt/sources.list.d/) are read, the suite name of this release (for example
``bookworm``, ``bookworm-updates``, ``bookworm-security``) is rewritten to the
row's release (``bullseye``, ...), and apt's state, cache and lists live under
the cache folder.  The machine's own apt state is never read or written.

The ``.deb`` files are unpacked with ``dpkg-deb -x`` and arranged as an
ordinary, self-contained prefix::

    <prefix>/include/openssl/*.h      (multiarch opensslconf.h/configuration.h merged in)
    <prefix>/lib/libssl.so.N, libcrypto.so.N, libssl.so, libcrypto.so
    <prefix>/bin/openssl               (wrapper that finds the prefix's libraries)
    <prefix>/sesscache-prefix.json     (what was installed: packages, versions)

Cache: ``${SESSCACHE_CACHE:-<repo>/.cache}/openssl/<row>/``.  A finished prefix is
reused without touching the network; ``--refresh`` fetches again.

Exit codes: 0 ready, 1 error (network, package not found, ...), 3 the row cannot
run on this machine (for example its libssl needs a newer glibc than this one).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
APT_SOURCES_LIST = Path("/etc/apt/sources.list")
APT_SOURCES_DIR = Path("/etc/apt/sources.list.d")
LISTS_MAX_AGE = 24 * 3600  # reuse downloaded package lists for a day
# Bumped whenever a prefix's layout or build changes, so cached prefixes are made again.
LAYOUT = 2


@dataclasses.dataclass(frozen=True)
class Release:
    """One matrix row served by another Debian release's OpenSSL packages."""

    row: str
    suite: str
    runtime: tuple[str, ...]  # shared libraries the tests load
    dev: tuple[str, ...]  # headers
    tools: tuple[str, ...] = ()  # optional command line tool

    @property
    def packages(self) -> tuple[str, ...]:
        return self.runtime + self.dev + self.tools


RELEASES = {
    r.row: r
    for r in (
        Release("1.1.1", "bullseye", ("libssl1.1",), ("libssl-dev",), ("openssl",)),
        Release(
            "3.5",
            "trixie",
            ("libssl3t64", "openssl-provider-legacy"),
            ("libssl-dev",),
            ("openssl",),
        ),
    )
}


@dataclasses.dataclass(frozen=True)
class SourceRelease:
    """A row built from a Debian release's upstream OpenSSL tarball (for when its .debs cannot run here)."""

    row: str
    suite: str
    series: str  # upstream series the tarball must belong to, e.g. "3.5"
    source: str = "openssl"


SOURCE_RELEASES = {r.row: r for r in (SourceRelease("3.5-src", "trixie", "3.5"),)}
ALL_ROWS = (*RELEASES, *SOURCE_RELEASES)


class FetchError(Exception):
    """The prefix could not be made; the message says why and what to do."""

    exit_code = 1


class NetworkError(FetchError):
    """Debian's archive could not be reached through the machine's own sources."""


class PackageNotFound(FetchError):
    """The release's archive has no such package (or no candidate version)."""


class NotRunnable(FetchError):
    """The release's libssl cannot run on this machine (too old glibc, ...)."""

    exit_code = 3


def cache_root() -> Path:
    return Path(os.environ.get("SESSCACHE_CACHE") or REPO / ".cache").resolve()


def log(msg: str) -> None:
    print(f"fetch_openssl: {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- machine


def machine_codename() -> str:
    try:
        text = Path("/etc/os-release").read_text()
    except OSError as exc:
        raise FetchError(f"cannot read /etc/os-release to learn this machine's release: {exc}")
    m = re.search(r'^VERSION_CODENAME="?([a-z]+)"?\s*$', text, re.M)
    if not m:
        raise FetchError("/etc/os-release has no VERSION_CODENAME: this is not a Debian release apt can rewrite")
    return m.group(1)


def installed_version(package: str) -> str | None:
    out = subprocess.run(
        ["dpkg-query", "-W", "-f=${db:Status-Abbrev}|${Version}", package],
        capture_output=True,
        text=True,
    )
    if out.returncode != 0 or "|" not in out.stdout:
        return None
    status, version = out.stdout.split("|", 1)
    return version if status.startswith("ii") else None


def version_satisfies(have: str, op: str, need: str) -> bool:
    dpkg_op = {">=": "ge", "<=": "le", ">>": "gt", "<<": "lt", "=": "eq", ">": "ge", "<": "le"}[op]
    return subprocess.run(["dpkg", "--compare-versions", have, dpkg_op, need]).returncode == 0


def glibc_version() -> str:
    try:
        return os.confstr("CS_GNU_LIBC_VERSION").split()[-1]
    except (ValueError, OSError, AttributeError, IndexError):
        return "unknown"


# ----------------------------------------------------------------------- apt sources


def _paragraphs(text: str) -> list[list[str]]:
    paras, cur = [], []
    for line in text.splitlines():
        if not line.strip():
            if cur:
                paras.append(cur)
            cur = []
        elif not line.lstrip().startswith("#") or line.startswith((" ", "\t")):
            cur.append(line)
    if cur:
        paras.append(cur)
    return paras


def _rewrite_suite(suite: str, codename: str, target: str) -> str | None:
    if suite == codename:
        return target
    if suite.startswith(codename + "-") or suite.startswith(codename + "/"):
        return target + suite[len(codename) :]
    return None


def rewrite_deb822(text: str, codename: str, target: str, types: str) -> list[str]:
    """Return deb822 stanzas for `target` made from a .sources file's stanzas for `codename`."""
    out = []
    for para in _paragraphs(text):
        fields: list[tuple[str, str]] = []
        for line in para:
            if line.startswith((" ", "\t")) and fields:
                key, val = fields[-1]
                fields[-1] = (key, val + "\n" + line)
            elif ":" in line:
                key, val = line.split(":", 1)
                fields.append((key.strip(), val.strip()))
        get = {k.lower(): v for k, v in fields}
        if get.get("enabled", "yes").lower() == "no" or "deb" not in get.get("types", "").split():
            continue
        suites = [_rewrite_suite(s, codename, target) for s in get.get("suites", "").split()]
        suites = [s for s in suites if s]
        if not suites:
            continue
        lines = []
        for key, val in fields:
            if key.lower() == "types":
                val = types
            elif key.lower() == "suites":
                val = " ".join(suites)
            lines.append(f"{key}: {val}")
        out.append("\n".join(lines))
    return out


def rewrite_one_line(text: str, codename: str, target: str, types: str) -> list[str]:
    """Same as rewrite_deb822 for one-line-style sources.list entries."""
    out = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line.startswith("deb "):
            continue
        words = line.split()
        i = 1
        if words[i].startswith("["):
            while not words[i].endswith("]"):
                i += 1
            i += 1
        suite = _rewrite_suite(words[i + 1], codename, target) if len(words) > i + 1 else None
        if not suite:
            continue
        rest = words[1 : i + 1] + [suite] + words[i + 2 :]
        for t in types.split():
            out.append(" ".join([t] + rest))
    return out


def private_sources(target: str, with_source: bool = False) -> tuple[str, str]:
    """(deb822 text, one-line text) of the machine's Debian sources moved to `target`."""
    codename = machine_codename()
    types = "deb deb-src" if with_source else "deb"
    stanzas, lines = [], []
    for path in sorted(APT_SOURCES_DIR.glob("*.sources")):
        stanzas += rewrite_deb822(path.read_text(), codename, target, types)
    for path in [APT_SOURCES_LIST, *sorted(APT_SOURCES_DIR.glob("*.list"))]:
        if path.is_file():
            lines += rewrite_one_line(path.read_text(), codename, target, types)
    if not stanzas and not lines:
        raise FetchError(
            f"no apt source for this machine's release '{codename}' in {APT_SOURCES_LIST} or "
            f"{APT_SOURCES_DIR}/*.sources|*.list, so there is nothing to rewrite to '{target}'"
        )
    return "\n\n".join(stanzas) + ("\n" if stanzas else ""), "\n".join(lines) + ("\n" if lines else "")


# ------------------------------------------------------------------------ private apt


class PrivateApt:
    """apt-get/apt-cache with every state, cache and source path under `root`."""

    def __init__(self, root: Path, suite: str, with_source: bool = False):
        self.root = root
        self.suite = suite
        self.with_source = with_source

    def options(self) -> list[str]:
        r = self.root
        opts = {
            "Dir::State": r / "state",
            "Dir::State::status": r / "state" / "status",
            "Dir::Cache": r / "cache",
            "Dir::Etc::SourceList": r / "etc" / "sources.list",
            "Dir::Etc::SourceParts": r / "etc" / "sources.list.d",
            "Dir::Etc::Preferences": r / "etc" / "preferences",
            "Dir::Etc::PreferencesParts": r / "etc" / "preferences.d",
            "Acquire::Languages": "none",
        }
        if os.geteuid() == 0:
            # Downloads land in folders the _apt user may not enter; we own them.
            opts["APT::Sandbox::User"] = "root"
        return [a for k, v in opts.items() for a in ("-o", f"{k}={v}")]

    def setup(self) -> None:
        r = self.root
        for d in ("state/lists/partial", "cache/archives/partial", "etc/sources.list.d", "etc/preferences.d"):
            (r / d).mkdir(parents=True, exist_ok=True)
        (r / "state" / "status").touch()
        (r / "etc" / "preferences").touch()
        deb822, one_line = private_sources(self.suite, self.with_source)
        (r / "etc" / "sources.list").write_text(one_line)
        (r / "etc" / "sources.list.d" / f"{self.suite}.sources").write_text(deb822)

    def run(self, tool: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            [tool, *self.options(), *args],
            capture_output=True,
            text=True,
            cwd=cwd,
            env={**os.environ, "LC_ALL": "C", "DEBIAN_FRONTEND": "noninteractive"},
        )

    def update(self, refresh: bool) -> None:
        self.setup()
        stamp = self.root / "state" / "updated"
        if not refresh and stamp.exists() and time.time() - stamp.stat().st_mtime < LISTS_MAX_AGE:
            return
        had_lists = stamp.exists() and any((self.root / "state" / "lists").glob("*_Packages*"))
        res = self.run("apt-get", "update")
        problems = [ln for ln in (res.stdout + res.stderr).splitlines() if ln.startswith(("E:", "W:", "Err:"))]
        have_lists = any((self.root / "state" / "lists").glob("*_Packages*"))
        if res.returncode != 0 or not have_lists or any(ln.startswith(("E:", "Err:")) for ln in problems):
            detail = "\n  ".join(problems[-6:]) or res.stderr.strip()[-600:]
            text = res.stdout + res.stderr
            if "does not have a Release file" in text:
                why = f"the archive has no suite '{self.suite}'"
            elif re.search(r"Temporary failure resolving|Could not (resolve|connect)|Connection (failed|timed out)|Network is unreachable", text):
                why = "the archive cannot be reached (no network?)"
            else:
                why = "no network, or the archive has no such suite"
            if had_lists and "does not have a Release file" not in text:
                log(f"apt-get update for '{self.suite}' failed ({why}); using the package lists from "
                    f"{time.ctime(stamp.stat().st_mtime)}")
                return
            raise NetworkError(
                f"apt-get update for Debian '{self.suite}' failed: {why}. Sources used (the machine's own, "
                f"rewritten): {self.root / 'etc'}\n  {detail}"
            )
        stamp.touch()

    def candidate(self, package: str) -> dict[str, str]:
        res = self.run("apt-cache", "show", "--no-all-versions", package)
        if res.returncode != 0 or "Version:" not in res.stdout:
            said = ((res.stderr or res.stdout).strip().splitlines() or ["no candidate version"])[-1]
            raise PackageNotFound(f"Debian '{self.suite}' has no package '{package}' (apt-cache: {said})")
        record: dict[str, str] = {}
        key = None
        for line in res.stdout.split("\n\n")[0].splitlines():
            if line.startswith((" ", "\t")) and key:
                record[key] += "\n" + line
            elif ":" in line:
                key, val = line.split(":", 1)
                record[key] = val.strip()
        return record

    def download(self, pins: list[str], dest: Path) -> None:
        dest.mkdir(parents=True, exist_ok=True)
        res = self.run("apt-get", "download", *pins, cwd=dest)
        if res.returncode != 0:
            lines = [ln for ln in (res.stdout + res.stderr).splitlines() if ln.startswith(("E:", "Err:"))]
            cls = NetworkError if any("Failed to fetch" in ln or "resolv" in ln for ln in lines) else PackageNotFound
            raise cls(f"apt-get download {' '.join(pins)} failed:\n  " + "\n  ".join(lines[-6:]))


    def source_versions(self, source: str) -> list[str]:
        res = self.run("apt-cache", "showsrc", "--only-source", source)
        versions = set(re.findall(r"^Version: (\S+)$", res.stdout, re.M))
        if not versions:
            raise PackageNotFound(f"Debian '{self.suite}' has no source package '{source}'")
        return sorted(versions, key=_DebVersion, reverse=True)

    def fetch_orig_tarball(self, source: str, version: str, dest: Path) -> Path:
        """Download `source`'s upstream tarball, checked against the signed Sources index."""
        res = self.run("apt-get", "source", "--print-uris", "--only-source", f"{source}={version}")
        uris = re.findall(r"^'(\S+)' (\S+\.orig\.tar\.[a-z0-9]+) \d+ (\S+:\S+)$", res.stdout, re.M)
        if not uris:
            raise PackageNotFound(f"no upstream tarball listed for {source} {version}: {res.stderr.strip()[-300:]}")
        uri, name, digest = uris[0]
        dest.mkdir(parents=True, exist_ok=True)
        target = dest / name
        if target.exists():
            return target
        part = dest / (name + ".part")
        got = self.run("/usr/lib/apt/apt-helper", "download-file", uri, str(part), digest)
        if got.returncode != 0:
            part.unlink(missing_ok=True)
            said = [ln for ln in (got.stdout + got.stderr).splitlines() if ln.startswith("E:")][:1]
            raise NetworkError(f"{name}: {' '.join(said) or 'download failed'}")
        os.replace(part, target)
        return target


class _DebVersion:
    """Sort key comparing Debian versions with dpkg itself."""

    def __init__(self, v: str):
        self.v = v

    def __lt__(self, other: "_DebVersion") -> bool:
        return version_satisfies(self.v, "<<", other.v)


# ----------------------------------------------------------------- dependency check


DEP_RE = re.compile(r"^\s*([a-z0-9][a-z0-9+.-]*)(?::[a-z0-9-]+)?\s*(?:\(\s*([<>=]+)\s*([^)\s]+)\s*\))?")


def unmet_runtime_needs(records: dict[str, dict[str, str]], runtime: tuple[str, ...]) -> list[str]:
    """What the release's runtime packages need that this machine's installed packages lack.

    Dependencies among the downloaded packages themselves are fine; a dependency on a
    package installed here (libc6, libzstd1, zlib1g) must be met by the installed version,
    because the unpacked libraries will run against it.
    """
    ours = set(records)
    unmet = []
    for pkg in runtime:
        rec = records[pkg]
        deps = ", ".join(x for x in (rec.get("Pre-Depends", ""), rec.get("Depends", "")) if x)
        for group in filter(None, (g.strip() for g in deps.split(","))):
            alts = [DEP_RE.match(a) for a in group.split("|")]
            alts = [m for m in alts if m]
            problems = []
            for m in alts:
                name, op, need = m.groups()
                if name in ours:
                    break
                have = installed_version(name)
                if have is None:
                    continue  # not installed here and not ours: nothing loads it
                if op is None or version_satisfies(have, op, need):
                    break
                problems.append(
                    f"glibc {need} (this machine has {glibc_version()})" if name == "libc6"
                    else f"{name} {op} {need} (this machine has {have})"
                )
            else:
                unmet += problems
    return unmet


# --------------------------------------------------------------------- prefix layout


def arrange_prefix(unpacked: Path, prefix: Path) -> None:
    """Copy headers and libraries from an unpacked Debian tree into a plain prefix."""
    usr = unpacked / "usr"
    inc = prefix / "include" / "openssl"
    inc.mkdir(parents=True)
    for h in sorted((usr / "include" / "openssl").glob("*.h")):
        shutil.copy2(h, inc / h.name)
    # Debian moves the architecture-specific headers (opensslconf.h in 1.1.1,
    # configuration.h in 3.x) to include/<multiarch>/openssl; merge them back.
    for h in sorted(usr.glob("include/*-linux-gnu*/openssl/*.h")):
        shutil.copy2(h, inc / h.name)
    if not (inc / "ssl.h").exists() or not (inc / "opensslv.h").exists():
        raise FetchError(f"unpacked packages have no openssl/ssl.h or opensslv.h under {usr / 'include'}")

    lib = prefix / "lib"
    lib.mkdir()
    libdirs = sorted(p.parent for p in usr.glob("lib/*/libssl.so.*"))
    if not libdirs:
        raise FetchError(f"unpacked packages have no libssl.so.* under {usr / 'lib'}")
    libdir = libdirs[0]
    for name in ("libssl", "libcrypto"):
        real = sorted(p for p in libdir.glob(f"{name}.so.*") if not p.is_symlink())
        if not real:
            raise FetchError(f"no {name}.so.* in {libdir}")
        shutil.copy2(real[0], lib / real[0].name)
        os.symlink(real[0].name, lib / f"{name}.so")
    for sub in ("ossl-modules", "engines-1.1", "engines-3"):
        if (libdir / sub).is_dir():
            shutil.copytree(libdir / sub, lib / sub, symlinks=True)

    binary = usr / "bin" / "openssl"
    if binary.exists():
        (prefix / "libexec").mkdir()
        shutil.copy2(binary, prefix / "libexec" / "openssl")
        (prefix / "bin").mkdir()
        wrapper = prefix / "bin" / "openssl"
        wrapper.write_text(
            "#!/bin/sh\n# The Debian binary needs this prefix's libraries, which are not on the loader path.\n"
            'here=$(CDPATH= cd -- "$(dirname -- "$0")/.." && pwd)\n'
            'LD_LIBRARY_PATH="$here/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" exec "$here/libexec/openssl" "$@"\n'
        )
        wrapper.chmod(0o755)


PROBE = r"""
import ctypes, sys
crypto = ctypes.CDLL(sys.argv[1] + "/lib/libcrypto.so", mode=ctypes.RTLD_GLOBAL)
ctypes.CDLL(sys.argv[1] + "/lib/libssl.so")
crypto.OpenSSL_version.restype = ctypes.c_char_p
crypto.OpenSSL_version.argtypes = [ctypes.c_int]
print(crypto.OpenSSL_version(0).decode())
"""


def probe_version(prefix: Path) -> str:
    """Load the prefix's libraries in a fresh interpreter and return OpenSSL_version(0)."""
    res = subprocess.run([sys.executable, "-c", PROBE, str(prefix)], capture_output=True, text=True)
    if res.returncode != 0:
        raise FetchError(f"the libraries in {prefix}/lib do not load here:\n{res.stderr.strip()[-800:]}")
    return res.stdout.strip()


def openssl_version_token(text: str) -> str:
    """'OpenSSL 1.1.1w  11 Sep 2023' -> '1.1.1w'."""
    m = re.search(r"OpenSSL\s+(\S+)", text)
    return m.group(1) if m else text.strip()


# ------------------------------------------------------------------------- the fetch


@contextlib.contextmanager
def locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def row_dir(row: str) -> Path:
    return cache_root() / "openssl" / row


def read_manifest(row: str) -> dict | None:
    path = row_dir(row) / "prefix" / "sesscache-prefix.json"
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return manifest if manifest.get("layout") == LAYOUT else None


def check_runnable(row: str, refresh: bool = False) -> dict[str, dict[str, str]]:
    """Resolve the row's packages and raise NotRunnable if they cannot run here."""
    rel = RELEASES[row]
    apt = PrivateApt(row_dir(row) / "apt", rel.suite)
    apt.update(refresh)
    records = {p: apt.candidate(p) for p in rel.packages}
    unmet = unmet_runtime_needs(records, rel.runtime)
    if unmet:
        main = rel.runtime[0]
        raise NotRunnable(
            f"{rel.suite}'s {main} {records[main]['Version']} needs " + " and ".join(unmet)
        )
    return records


def fetch(row: str, refresh: bool = False) -> Path:
    """Return the row's prefix, fetching and arranging it first if needed."""
    if row not in RELEASES:
        raise FetchError(f"unknown row '{row}'; rows fetched from Debian: {', '.join(RELEASES)}")
    base = row_dir(row)
    prefix = base / "prefix"
    with locked(base / ".lock"):
        manifest = read_manifest(row)
        if manifest and not refresh:
            return prefix
        rel = RELEASES[row]
        records = check_runnable(row, refresh)
        pins = [f"{p}={records[p]['Version']}" for p in rel.packages]
        debs = base / "debs"
        shutil.rmtree(debs, ignore_errors=True)
        log(f"downloading {' '.join(pins)} from Debian {rel.suite}")
        PrivateApt(base / "apt", rel.suite).download(pins, debs)
        work = Path(tempfile.mkdtemp(prefix=".build-", dir=base))
        try:
            unpacked = work / "root"
            for deb in sorted(debs.glob("*.deb")):
                subprocess.run(["dpkg-deb", "-x", str(deb), str(unpacked)], check=True)
            arrange_prefix(unpacked, work / "prefix")
            version = probe_version(work / "prefix")
            manifest = {
                "layout": LAYOUT,
                "row": row,
                "suite": rel.suite,
                "packages": {p: records[p]["Version"] for p in rel.packages},
                "openssl_version_text": version,
                "openssl_version": openssl_version_token(version),
                "fetched": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
            (work / "prefix" / "sesscache-prefix.json").write_text(json.dumps(manifest, indent=2) + "\n")
            shutil.rmtree(base / "root", ignore_errors=True)
            shutil.rmtree(prefix, ignore_errors=True)
            os.replace(unpacked, base / "root")
            os.replace(work / "prefix", prefix)  # the manifest appears last: a prefix is whole or absent
        finally:
            shutil.rmtree(work, ignore_errors=True)
        # The copied libraries must still load from their final place.
        probe_version(prefix)
        log(f"{row}: {manifest['openssl_version_text']} in {prefix}")
        return prefix


# OpenSSL's own Linux targets, by machine, that the variant target below inherits from.
OPENSSL_LINUX_TARGETS = {"x86_64": "linux-x86_64", "aarch64": "linux-aarch64", "ppc64le": "linux-ppc64le",
                         "s390x": "linux64-s390x", "riscv64": "linux64-riscv64"}
SHLIB_VARIANT = "-sesscache"


def variant_target(work: Path) -> list[str]:
    """Configure arguments for a build whose libraries cannot be mistaken for the system's.

    The loader keeps one library per soname in a process: a self-built libssl.so.3 would
    lose to the system libssl.so.3 that Python's ssl module has already loaded. OpenSSL's
    ``shlib_variant`` gives the build its own soname (libssl-sesscache.so.3) and symbol
    versions (OPENSSL_SESSCACHE_3.0.0), so both copies live side by side.
    """
    base = OPENSSL_LINUX_TARGETS.get(os.uname().machine)
    if not base or not sys.platform.startswith("linux"):
        log(f"no OpenSSL target known for {os.uname().machine}: building without a shlib variant")
        return []
    conf = work / "sesscache-variant.conf"
    conf.write_text(
        "my %targets = (\n"
        f'    "{base}-sesscache" => {{ inherit_from => [ "{base}" ], shlib_variant => "{SHLIB_VARIANT}" }},\n'
        ");\n"
    )
    return [f"--config={conf}", f"{base}-sesscache"]


def build_from_source(row: str, refresh: bool = False, jobs: int | None = None) -> Path:
    """Build the row's OpenSSL from its Debian release's upstream tarball into the cache.

    The newest source version whose tarball the archive serves is used (mirrors do not
    always carry every version a Sources index lists).  The libraries get their own
    soname (see variant_target).  The build takes about three minutes on two cores and
    is done once; later calls return the cached prefix.
    """
    rel = SOURCE_RELEASES[row]
    base = row_dir(row)
    prefix = base / "prefix"
    with locked(base / ".lock"):
        if read_manifest(row) and not refresh:
            return prefix
        apt = PrivateApt(base / "apt", rel.suite, with_source=True)
        apt.update(refresh)
        tarball, version, misses = None, None, []
        for version in apt.source_versions(rel.source):
            upstream = version.split(":")[-1].rsplit("-", 1)[0]
            if not upstream.startswith(rel.series + "."):
                misses.append(f"{version}: not a {rel.series}.x release")
                continue
            try:
                tarball = apt.fetch_orig_tarball(rel.source, version, base / "src")
                break
            except (NetworkError, PackageNotFound) as exc:
                misses.append(f"{version}: {exc}")
        if tarball is None:
            raise NotRunnable(
                f"no {rel.series}.x source tarball of Debian {rel.suite}'s {rel.source} could be downloaded:\n  "
                + "\n  ".join(misses)
            )
        work = Path(tempfile.mkdtemp(prefix=".build-", dir=base))
        build_log = base / "build.log"
        started = time.monotonic()
        log(f"building OpenSSL from {tarball.name} (Debian {rel.suite} {version}); log: {build_log}")
        try:
            subprocess.run(["tar", "-xf", str(tarball), "-C", str(work)], check=True)
            (srcdir,) = [p for p in work.iterdir() if p.is_dir()]
            # Configured for its final place (OpenSSL bakes OPENSSLDIR and the provider
            # module folder into libcrypto), installed into a staging root, then moved.
            stage = work / "stage"
            dest = stage / prefix.relative_to("/")
            target = variant_target(work)
            steps = [
                ["./Configure", *target, f"--prefix={prefix}", "--libdir=lib", f"--openssldir={prefix}/ssl",
                 "shared", "no-tests", "no-docs"],
                ["make", f"-j{jobs or os.cpu_count() or 2}"],
                ["make", f"DESTDIR={stage}", "install_sw"],
            ]
            with open(build_log, "w") as fh:
                for step in steps:
                    fh.write(f"$ {' '.join(step)}\n")
                    fh.flush()
                    if subprocess.run(step, cwd=srcdir, stdout=fh, stderr=subprocess.STDOUT).returncode != 0:
                        raise FetchError(f"OpenSSL build step {' '.join(step[:2])} failed; see {build_log}")
            for static in (dest / "lib").glob("*.a"):
                static.unlink()  # only shared libraries: nothing may link these by accident
            text = probe_version(dest)
            manifest = {
                "layout": LAYOUT,
                "row": row,
                "suite": rel.suite,
                "shlib_variant": SHLIB_VARIANT if target else None,
                "source": {rel.source: version, "tarball": tarball.name},
                "openssl_version_text": text,
                "openssl_version": openssl_version_token(text),
                "build_seconds": round(time.monotonic() - started),
                "fetched": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
            (dest / "sesscache-prefix.json").write_text(json.dumps(manifest, indent=2) + "\n")
            shutil.rmtree(prefix, ignore_errors=True)
            os.replace(dest, prefix)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        probe_version(prefix)
        log(f"{row}: {manifest['openssl_version_text']} built in {manifest['build_seconds']} s into {prefix}")
        return prefix


def prepare(row: str, refresh: bool = False) -> Path:
    """Return the prefix of any row this script knows (Debian packages or source build)."""
    if row in SOURCE_RELEASES:
        return build_from_source(row, refresh)
    return fetch(row, refresh)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("row", choices=ALL_ROWS, help="which OpenSSL to fetch (3.5-src builds from source)")
    ap.add_argument("--refresh", action="store_true", help="download again even if the prefix is cached")
    ap.add_argument("--check", action="store_true", help="only say whether the row can run on this machine")
    ap.add_argument("--json", action="store_true", help="print the prefix manifest instead of the path")
    args = ap.parse_args(argv)
    try:
        if args.check and args.row in RELEASES:
            records = check_runnable(args.row, args.refresh)
            print("runnable: " + ", ".join(f"{p} {r['Version']}" for p, r in records.items()))
            return 0
        if args.check:
            cached = read_manifest(args.row)
            print(f"runnable: built from source ({'cached: ' + cached['openssl_version_text'] if cached else 'not built yet'})")
            return 0
        prefix = prepare(args.row, args.refresh)
    except FetchError as exc:
        label = "not runnable here" if isinstance(exc, NotRunnable) else "error"
        print(f"fetch_openssl {args.row}: {label}: {exc}", file=sys.stderr)
        return exc.exit_code
    print(json.dumps(read_manifest(args.row), indent=2) if args.json else prefix)
    return 0


if __name__ == "__main__":
    sys.exit(main())
