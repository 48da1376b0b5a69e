#!/usr/bin/env python3
"""Check a built sesscache wheel is what `pip install sesscache` promises.

    python3 ci/check_wheel.py dist/sesscache-*.whl [...]

One ``cp39-abi3`` wheel for every CPython from 3.9, holding the core module alone: no
linked test module (``_sesscache_testing_cffi``), and no ``sesscache.libs/`` folder,
which is where ``auditwheel repair`` would graft a libssl if the module linked one. Used
by cibuildwheel's repair step, ``make wheel`` and tests/packaging. Exits 1 with the
problems found.
"""
from __future__ import annotations

import sys
import zipfile
from pathlib import Path

CORE = "sesscache/_sesscache_cffi.abi3.so"


def problems(wheel: Path) -> list[str]:
    found = []
    parts = wheel.name[:-len(".whl")].split("-")
    if len(parts) != 5 or parts[2:4] != ["cp39", "abi3"]:
        found.append(f"{wheel.name}: expected the cp39-abi3 tags (one wheel for every CPython from 3.9)")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    modules = sorted(n for n in names if n.endswith(".so") or ".so." in n)
    if modules != [CORE]:
        found.append(f"{wheel.name}: expected {CORE} as the only compiled file, found {modules}")
    grafted = sorted({n.split("/", 1)[0] for n in names if n.split("/", 1)[0].endswith(".libs")})
    if grafted:
        found.append(f"{wheel.name}: auditwheel grafted libraries into {grafted}: the module links "
                     "something it must not (OpenSSL is resolved at run time, never shipped)")
    return found


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    found = [p for arg in argv for p in problems(Path(arg))]
    for problem in found:
        print(f"check_wheel: {problem}", file=sys.stderr)
    if not found:
        print(f"check_wheel: ok ({', '.join(Path(a).name for a in argv)})")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
