"""Fail `make valgrind` on a definite leak allocated by sesscache's own C (csrc/).

Memcheck's leak report at exit lists what CPython, cffi and pyo3 (cryptography) keep for the
life of the process and never free: noise, left out. A record counts when a frame of its
allocation stack is in a file of csrc/ (the module is compiled with #line directives, so
frames name csrc/*.c and *.h); cffi's own module set-up (_cffi_init) is not ours.
Usage: python ci/valgrind_leaks.py LOG
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

CSRC = {p.name for p in (Path(__file__).resolve().parents[1] / "csrc").iterdir()}
FRAME_FILE = re.compile(r"\(([^():]+\.[ch]):\d+\)")


def records(lines):
    record = None
    for line in lines:
        body = line.split("== ", 1)[-1].rstrip("\n")
        if "definitely lost in loss record" in body:
            record = [body]
        elif record is not None:
            if not body.strip():
                yield record
                record = None
            else:
                record.append(body)


def ours(record) -> bool:
    if any("_cffi_init" in frame for frame in record):
        return False
    return any(match.group(1) in CSRC for frame in record for match in [FRAME_FILE.search(frame)] if match)


def main(path: str) -> int:
    lines = Path(path).read_text(errors="replace").splitlines()
    found = [record for record in records(lines) if ours(record)]
    summary = [line.split("== ", 1)[-1] for line in lines if "ERROR SUMMARY" in line or "definitely lost:" in line]
    print("valgrind:", "; ".join(summary) or "no summary (did valgrind run?)")
    for record in found:
        print("\n".join(record), end="\n\n")
    if found:
        print(f"valgrind: {len(found)} definite leak(s) allocated by csrc/ (above)")
        return 1
    print("valgrind: no definite leak allocated by csrc/ (the rest: CPython, cffi, pyo3 at exit)")
    return 0 if summary else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
