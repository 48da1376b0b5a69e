"""``python -m sesscache``: see :mod:`sesscache.cli`."""
from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
