"""The build script's errors name what to install or what is wrong, and the core module it
builds links no OpenSSL."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _build(env_extra, code="import build_ffi"):
    env = dict(os.environ, **env_extra)
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def test_openssl_dir_without_headers_is_explained(tmp_path):
    result = _build({"OPENSSL_DIR": str(tmp_path)})
    assert result.returncode != 0
    assert "has no include/openssl/ssl.h" in result.stderr
    assert "OpenSSL prefix with include/ and lib/" in result.stderr


def test_openssl_dir_without_libraries_is_explained_for_the_linked_test_module(tmp_path):
    (tmp_path / "include" / "openssl").mkdir(parents=True)
    (tmp_path / "include" / "openssl" / "ssl.h").write_text("")
    result = _build({"OPENSSL_DIR": str(tmp_path)}, "import build_ffi; build_ffi.testing_ffibuilder()")
    assert result.returncode != 0
    assert "has no lib/ or lib64/" in result.stderr


def test_the_core_module_needs_headers_only(tmp_path):
    """What a wheel build has: OpenSSL's headers, no OpenSSL library to link."""
    (tmp_path / "include" / "openssl").mkdir(parents=True)
    (tmp_path / "include" / "openssl" / "ssl.h").write_text("")
    result = _build({"OPENSSL_DIR": str(tmp_path)}, "import build_ffi; print(build_ffi.ffibuilder)")
    assert result.returncode == 0, result.stderr
    assert "FFI" in result.stdout


# OpenSSL's function name prefixes (libssl and libcrypto).
_OPENSSL_SYMBOL = re.compile(r"^(SSL|SSL_CTX|SSL_SESSION|CRYPTO|OPENSSL|OpenSSL|ERR|EVP|BIO|X509|TLS|i2d|d2i)_")


def _dynamic_facts(path):
    from elftools.elf.elffile import ELFFile

    with open(path, "rb") as f:
        elf = ELFFile(f)
        needed = [tag.needed for tag in elf.get_section_by_name(".dynamic").iter_tags("DT_NEEDED")]
        undefined = [sym.name for sym in elf.get_section_by_name(".dynsym").iter_symbols()
                     if sym.name and sym["st_shndx"] == "SHN_UNDEF"]
        versions = set()
        verneed = elf.get_section_by_name(".gnu.version_r")
        if verneed is not None:
            for _need, auxiliaries in verneed.iter_versions():
                versions.update(aux.name for aux in auxiliaries)
    return needed, undefined, versions


def test_the_core_module_links_no_openssl_and_no_libdl():
    """Every OpenSSL call goes through the per-copy tables, so the module needs no libssl
    (auditwheel has nothing to graft into a wheel); the dynamic linker is asked through
    ctypes, so no dlopen@GLIBC_2.34 either."""
    import sesscache._sesscache_cffi as core

    needed, undefined, versions = _dynamic_facts(core.__file__)
    assert not [lib for lib in needed if "ssl" in lib or "crypto" in lib or lib.startswith("libdl")], needed
    assert not [name for name in undefined if _OPENSSL_SYMBOL.match(name)], undefined
    assert not [name for name in undefined if name.startswith("dl")], undefined
    # The cibuildwheel images promise manylinux_2_28: no glibc symbol newer than that.
    glibc = [tuple(int(n) for n in v.split("_", 1)[1].split(".")) for v in versions if v.startswith("GLIBC_2")]
    assert all(v <= (2, 28) for v in glibc), sorted(versions)


def test_the_linked_test_module_is_what_links_libssl():
    import sesscache._sesscache_testing_cffi as testing_module

    needed, _undefined, _versions = _dynamic_facts(testing_module.__file__)
    # (the matrix's OpenSSL 3.5 built from source names its library libssl-sesscache.so.3)
    assert any(re.match(r"libssl(-[a-z0-9]+)?\.so", lib) for lib in needed), needed
