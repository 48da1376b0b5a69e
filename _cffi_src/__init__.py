"""C declarations for sesscache's cffi module, one small module per C area.

Each module has the four parts pyca/cryptography's ``_cffi_src`` uses: ``INCLUDES`` (C
``#include`` lines), ``TYPES`` (cdef types and constants), ``FUNCTIONS`` (cdef
prototypes) and ``CUSTOMIZATIONS`` (C code compiled into the module). The C code itself
lives in ``csrc/`` (one file per job, see ``csrc/sesscache.h``): a module's
``CUSTOMIZATIONS`` is the text of its files, read here as cryptography's
``osrandom_engine.py`` reads ``osrandom_engine.c``. ``build_ffi.py`` composes the modules in
the order of ``MODULES`` into the core module (which links no libssl), and
``TESTING_MODULES`` into the separately built, linked test module. The types Python and C
share are declared once, in ``csrc/shared_types.h``, which the cdef reads too.
"""
from pathlib import Path

MODULES = ["libssl_api", "envelope", "seal", "trampolines", "memory_store", "shm_store", "new_session_ring",
           "fast_path", "at_fork", "clienthello", "ticket_keys", "session_ids", "client_offer", "attach"]
TESTING_MODULES = ["testing_api"]

#: The directory of the core module's C files (an include directory of the build).
C_DIR = Path(__file__).resolve().parent.parent / "csrc"


def c_source(*names: str) -> str:
    """The text of C files in ``csrc/``, each after a ``#line`` directive so that the
    compiler, sanitizers and debuggers name the file and line it came from."""
    parts = []
    for name in names:
        path = C_DIR / name
        parts.append(f'#line 1 "{path}"\n' + path.read_text(encoding="utf-8"))
    return "\n".join(parts)


def cdef_of_header(name: str) -> str:
    """A header of plain C declarations as cffi's cdef reads it: preprocessor lines out."""
    text = (C_DIR / name).read_text(encoding="utf-8")
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
