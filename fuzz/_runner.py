"""What every atheris target here does around its TestOneInput: a corpus directory (a temp one
when none is named), seeded when empty, then atheris itself. Run the targets as scripts
(``python fuzz/fuzz_session.py``): this file is imported from beside them."""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Callable, Dict

import atheris


def run(test_one_input: Callable[[bytes], None], seeds: Dict[str, bytes], prefix: str) -> None:
    argv = list(sys.argv)
    dirs = [a for a in argv[1:] if not a.startswith("-")]
    if not dirs:
        corpus = Path(tempfile.mkdtemp(prefix=prefix))
        argv.append(str(corpus))
        dirs = [str(corpus)]
    first = Path(dirs[0])
    first.mkdir(parents=True, exist_ok=True)
    if not any(first.iterdir()):
        for name, seed in seeds.items():
            (first / name).write_bytes(seed)
    atheris.Setup(argv, test_one_input)
    atheris.Fuzz()
