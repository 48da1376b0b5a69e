"""Build sesscache's cffi extension (out-of-line, API mode) against OpenSSL's headers.

``pip install .`` runs this through setuptools' ``cffi_modules``. It compiles against the
system OpenSSL (``libssl-dev`` on Debian/Ubuntu, ``openssl-devel`` on Fedora/RHEL), or
against another one with ``OPENSSL_DIR=/prefix`` (``/prefix/include`` and ``/prefix/lib``;
the module gets an rpath so it loads that library at run time).

The C declarations live in ``_cffi_src/`` (one module per C area, composed here).
"""
from __future__ import annotations

import os
import sys
import sysconfig
from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _cffi_src import MODULES  # noqa: E402
from _cffi_src import libssl_api  # noqa: E402
import importlib  # noqa: E402

# When a function of the table exists in the headers we compile against. Functions not
# listed are in every supported OpenSSL (1.1.1 to 4.0). This is the one place where
# OpenSSL version differences are spelled out; everything else asks the table.
FEATURE_GUARDS = {
    "SSL_SESSION_get_time_ex": "OPENSSL_VERSION_NUMBER >= 0x30300000L",
    "SSL_SESSION_set_time_ex": "OPENSSL_VERSION_NUMBER >= 0x30300000L",
    "SSL_CTX_flush_sessions_ex": "OPENSSL_VERSION_NUMBER >= 0x30400000L",
    "SSL_SESSION_get_time": "!defined(OPENSSL_NO_DEPRECATED_3_4)",
    "SSL_SESSION_set_time": "!defined(OPENSSL_NO_DEPRECATED_3_4)",
    "SSL_CTX_flush_sessions": "!defined(OPENSSL_NO_DEPRECATED_3_4)",
    # Session-ticket keys (_cffi_src/ticket_keys.py).
    "SSL_CTX_set_tlsext_ticket_key_evp_cb": "OPENSSL_VERSION_NUMBER >= 0x30000000L",
    "EVP_CIPHER_fetch": "OPENSSL_VERSION_NUMBER >= 0x30000000L",
    "EVP_MAC_CTX_set_params": "OPENSSL_VERSION_NUMBER >= 0x30000000L",
    "HMAC_Init_ex": "!defined(OPENSSL_NO_DEPRECATED_3_0)",
}


def _api_struct() -> str:
    fields = []
    for ret, name, args, _required in libssl_api.API:
        fields.append(f"    {ret} (*{name})({args});")
    return "typedef struct {\n" + "\n".join(fields) + "\n} sc_api;\n"


def _fill_linked() -> str:
    lines = ["int sc_fill_linked(int slot)", "{", "    sc_api *a = sc_api_slot(slot);",
             "    if (a == NULL) return 0;"]
    for _ret, name, _args, _required in libssl_api.API:
        assign = f"    a->{name} = (__typeof__(a->{name})){name};"
        guard = FEATURE_GUARDS.get(name)
        if guard:
            lines += [f"#if {guard}", assign, "#else", f"    a->{name} = NULL;", "#endif"]
        else:
            lines.append(assign)
    lines += ["    return 1;", "}"]
    return "\n".join(lines) + "\n"


def _openssl_paths() -> tuple[list[str], list[str], list[str]]:
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
    if not libdirs:
        sys.exit(f"sesscache: OPENSSL_DIR={prefix} has no lib/ or lib64/ directory.")
    return [str(include)], libdirs, libdirs


def _compose() -> FFI:
    modules = [importlib.import_module(f"_cffi_src.{name}") for name in MODULES]
    ffi = FFI()
    cdef = []
    for module in modules:
        cdef.append(module.TYPES)
        if module is libssl_api:
            cdef.append(_api_struct())
    cdef += [module.FUNCTIONS for module in modules]
    cdef.append("int sc_fill_linked(int);")
    ffi.cdef("\n".join(cdef))

    source = [module.INCLUDES for module in modules]
    source.append(_api_struct())
    source += [module.CUSTOMIZATIONS for module in modules]
    source.append(_fill_linked())
    include_dirs, library_dirs, rpath = _openssl_paths()
    ffi.set_source(
        "sesscache._sesscache_cffi",
        "\n".join(source),
        libraries=["ssl", "crypto", "dl"],
        include_dirs=include_dirs,
        library_dirs=library_dirs,
        runtime_library_dirs=rpath,
        extra_compile_args=["-Wno-deprecated-declarations"],
    )
    return ffi


ffibuilder = _compose()

if __name__ == "__main__":
    ffibuilder.compile(tmpdir=str(HERE / "build" / "cffi"), verbose=True)
