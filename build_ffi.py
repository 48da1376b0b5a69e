"""Build sesscache's cffi extensions (out-of-line, API mode) against OpenSSL's headers.

``pip install .`` runs this through setuptools' ``cffi_modules``. Two modules:

* ``sesscache._sesscache_cffi``, the core: compiled against OpenSSL's headers (types and
  constants) but linked to no libssl. Every OpenSSL function it calls goes through a
  per-copy function table filled at run time, so one abi3 binary serves the stdlib's
  libssl, cryptography's bundled one and any other, and a wheel carries no OpenSSL.
* ``sesscache._sesscache_testing_cffi`` (``testing_ffibuilder``), the minimal TLS
  endpoints of ``sesscache.testing``: it *links* libssl, the system's or
  ``OPENSSL_DIR``'s (``/prefix/include`` and ``/prefix/lib``, with an rpath so it loads
  that library at run time). Built only when ``SESSCACHE_BUILD_TESTING=1`` (see setup.py).

Headers come from the system (``libssl-dev`` on Debian/Ubuntu, ``openssl-devel`` on
Fedora/RHEL) or from ``OPENSSL_DIR``. The C declarations live in ``_cffi_src/`` (one
module per C area, composed here), the C code in ``csrc/`` (one file per job, read by
those modules, compiled as one translation unit: see ``csrc/sesscache.h``).
"""
from __future__ import annotations

import os
import sys
import sysconfig
from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _cffi_src import C_DIR, MODULES, TESTING_MODULES, c_source, cdef_of_header  # noqa: E402
from _cffi_src import libssl_api  # noqa: E402
import importlib  # noqa: E402

def _api_struct() -> str:
    fields = []
    for ret, name, args, _required in libssl_api.API:
        fields.append(f"    {ret} (*{name})({args});")
    return "typedef struct {\n" + "\n".join(fields) + "\n} sc_api;\n"


def _api_requirements() -> str:
    """The table's ``required`` column as C data, read by csrc/api_table.c: the one list of
    what every copy must have (``_instances`` reads it back through ``sc_api_required``)."""
    flags = ", ".join("1" if required else "0" for *_, required in libssl_api.API)
    return f"static const unsigned char sc_api_required_flags[] = {{{flags}}};\n"


def _core_compile_args() -> list[str]:
    """The core module's compiler flags.

    ``SESSCACHE_STRICT_C=1`` (set by .ci/run, so every CI build, the OpenSSL matrix's
    included, and by ``make strict-c``): ``-Wall -Wextra -Werror``. The module (csrc/ and
    cffi's glue around it) is clean under them with gcc 12 and clang 14 against OpenSSL
    1.1.1 to 4.0 headers; an ordinary install does not make a newer compiler's new warning
    fatal. ``SESSCACHE_SANITIZE=1`` (``make sanitize``): AddressSanitizer and
    UndefinedBehaviorSanitizer, every UB finding fatal, frames kept for the reports; the
    module must then be loaded by a Python with the ASan runtime preloaded.
    """
    args: list[str] = []
    if os.environ.get("SESSCACHE_STRICT_C") == "1":
        args += ["-Wall", "-Wextra", "-Werror"]
    if os.environ.get("SESSCACHE_SANITIZE") == "1":
        args += ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined",
                 "-fno-omit-frame-pointer", "-g", "-O1"]
    return args


def _openssl_paths(*, libraries: bool) -> tuple[list[str], list[str], list[str]]:
    """Include dirs, library dirs and rpath; the core asks for headers only."""
    prefix = os.environ.get("OPENSSL_DIR")
    if not prefix:
        include_dirs: list[str] = []
        candidates = ["/usr/include", "/usr/local/include", sysconfig.get_config_var("INCLUDEDIR") or ""]
        if not any(Path(d, "openssl", "ssl.h").is_file() for d in candidates if d):
            sys.exit(
                "sesscache: OpenSSL's C headers are missing (openssl/ssl.h not found).\n"
                "  Debian/Ubuntu: apt-get install libssl-dev\n"
                "  Fedora/RHEL:   dnf install openssl-devel\n"
                "  Alpine:        apk add openssl-dev\n"
                "  or point OPENSSL_DIR at an OpenSSL prefix holding include/ and lib/."
            )
        return include_dirs, [], []
    root = Path(prefix).resolve()
    include = root / "include"
    if not (include / "openssl" / "ssl.h").is_file():
        sys.exit(f"sesscache: OPENSSL_DIR={prefix} has no include/openssl/ssl.h; "
                 "it must be an OpenSSL prefix with include/ and lib/ (or lib64/).")
    libdirs = [str(d) for d in (root / "lib", root / "lib64") if d.is_dir()]
    if not libraries:
        return [str(include)], [], []
    if not libdirs:
        sys.exit(f"sesscache: OPENSSL_DIR={prefix} has no lib/ or lib64/ directory.")
    return [str(include)], libdirs, libdirs


def _modules(names: list[str]) -> list:
    return [importlib.import_module(f"_cffi_src.{name}") for name in names]


def _compose_core() -> FFI:
    """The core module: OpenSSL's headers, no OpenSSL library."""
    modules = _modules(MODULES)
    ffi = FFI()
    cdef = [cdef_of_header("shared_types.h")]
    for module in modules:
        cdef.append(module.TYPES)
        if module is libssl_api:
            cdef.append(_api_struct())
    cdef += [module.FUNCTIONS for module in modules]
    ffi.cdef("\n".join(cdef))

    source = [module.INCLUDES for module in modules]
    source.append(_api_struct())
    source.append(_api_requirements())
    source += [module.CUSTOMIZATIONS for module in modules]
    source.append(c_source("api_table.c"))
    include_dirs, _library_dirs, _rpath = _openssl_paths(libraries=False)
    ffi.set_source(
        "sesscache._sesscache_cffi",
        "\n".join(source),
        # No libssl, no libcrypto (and no libdl: the dynamic linker is asked through ctypes,
        # see sesscache._binding.dynlink). `ldd` of the module shows libc alone.
        libraries=[],
        include_dirs=include_dirs + [str(C_DIR)],
        extra_compile_args=_core_compile_args(),
        extra_link_args=(["-fsanitize=address,undefined"]
                         if os.environ.get("SESSCACHE_SANITIZE") == "1" else []),
        depends=sorted(str(p) for p in C_DIR.iterdir()),
        py_limited_api=True,
    )
    return ffi


def _compose_testing() -> FFI:
    """The test endpoints' module, linked to the libssl under test.

    An FFI of its own (the core's types are not shared): ``sesscache.testing`` hands its
    pointers to the core by address, as it would any other copy's.
    """
    modules = _modules(TESTING_MODULES)
    ffi = FFI()
    ffi.cdef("\n".join([libssl_api.TYPES] + [m.TYPES for m in modules] + [m.FUNCTIONS for m in modules]))
    include_dirs, library_dirs, rpath = _openssl_paths(libraries=True)
    ffi.set_source(
        "sesscache._sesscache_testing_cffi",
        "\n".join([libssl_api.INCLUDES] + [m.INCLUDES for m in modules] + [m.CUSTOMIZATIONS for m in modules]),
        libraries=["ssl", "crypto"],
        include_dirs=include_dirs,
        library_dirs=library_dirs,
        runtime_library_dirs=rpath,
        extra_compile_args=["-Wno-deprecated-declarations"],
        py_limited_api=True,
    )
    return ffi


ffibuilder = _compose_core()


def testing_ffibuilder() -> FFI:
    """Composed only when asked for (cffi calls it): it alone needs OpenSSL's libraries."""
    return _compose_testing()


if __name__ == "__main__":
    # python build_ffi.py [--core-only] [DIR]: compile in DIR (build/cffi), as make strict-c does.
    argv = sys.argv[1:]
    if argv[:1] == ["--api-header"]:
        # python build_ffi.py --api-header FILE: OpenSSL's includes, the sc_api struct and
        # its required column, for C built outside cffi (fuzz/: make fuzz-c).
        Path(argv[1]).write_text(libssl_api.INCLUDES + _api_struct() + _api_requirements())
        sys.exit(0)
    core_only = "--core-only" in argv
    argv = [a for a in argv if a != "--core-only"]
    tmpdir = argv[0] if argv else str(HERE / "build" / "cffi")
    for builder in (ffibuilder,) if core_only else (ffibuilder, testing_ffibuilder()):
        builder.compile(tmpdir=tmpdir, verbose=True)
