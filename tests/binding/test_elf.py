"""Tests for sesscache._binding.elf, the ELF symbol reader used to find OpenSSL inside cryptography's wheel.

The reference is pyelftools (slow but trusted) and binutils' readelf.  Real inputs: the
cryptography wheel in this environment (static OpenSSL, LOCAL symbols in .symtab), the system
libssl (.dynsym only), and tiny shared objects compiled with gcc.  Big-endian and other corner cases
come from a small ELF writer below, itself checked against pyelftools.
"""
from __future__ import annotations

import importlib.util
import mmap
import os
import re
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def _load_elf_module():
    # By path: the sesscache package's __init__ belongs to another change; _elf has no imports
    # from it.  A dataclass module must be in sys.modules while it executes.
    name = "_sesscache_elf_under_test"
    spec = importlib.util.spec_from_file_location(name, ROOT / "src" / "sesscache" / "_binding" / "elf.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


_elf = _load_elf_module()
ElfError = _elf.ElfError
ElfSymbols = _elf.ElfSymbols
decode_tail_jump = _elf.decode_tail_jump

elftools = pytest.importorskip("elftools")
from elftools.elf.elffile import ELFFile  # noqa: E402
from elftools.elf.sections import SymbolTableSection  # noqa: E402

# Functions sesscache uses, in both the wheel's static OpenSSL and the system libssl.
SSL_NAMES = [
    "SSL_CTX_sess_set_new_cb",
    "SSL_CTX_sess_set_get_cb",
    "SSL_CTX_sess_set_remove_cb",
    "SSL_CTX_sess_get_new_cb",
    "SSL_CTX_sess_get_get_cb",
    "SSL_CTX_sess_get_remove_cb",
    "i2d_SSL_SESSION",
    "d2i_SSL_SESSION",
    "SSL_SESSION_new",
    "SSL_SESSION_free",
    "SSL_SESSION_up_ref",
    "SSL_SESSION_get_id",
    "SSL_SESSION_get0_id_context",
    "SSL_SESSION_set1_id_context",
    "SSL_SESSION_get_time",
    "SSL_SESSION_get_timeout",
    "SSL_SESSION_set_timeout",
    "SSL_SESSION_get_protocol_version",
    "SSL_SESSION_is_resumable",
    "SSL_SESSION_has_ticket",
    "SSL_SESSION_get_ticket_lifetime_hint",
    "SSL_SESSION_get0_hostname",
    "SSL_SESSION_get0_peer",
    "SSL_SESSION_get_master_key",
    "SSL_CTX_new",
    "SSL_CTX_free",
    "SSL_CTX_up_ref",
    "SSL_CTX_get_ex_data",
    "SSL_CTX_set_ex_data",
    "SSL_CTX_ctrl",
    "SSL_CTX_callback_ctrl",
    "SSL_CTX_set_session_id_context",
    "SSL_CTX_set_timeout",
    "SSL_CTX_get_timeout",
    "SSL_CTX_remove_session",
    "SSL_CTX_add_session",
    "SSL_CTX_flush_sessions",
    "SSL_get_SSL_CTX",
    "SSL_get_ex_data",
    "SSL_set_ex_data",
    "SSL_session_reused",
    "SSL_get_session",
    "SSL_get1_session",
    "SSL_set_session",
    "SSL_version",
]
# libcrypto functions: defined in the wheel, undefined references (imports) in libssl.so.3.
CRYPTO_NAMES = ["CRYPTO_get_ex_new_index", "CRYPTO_free", "CRYPTO_malloc", "OpenSSL_version_num"]
# cffi's direct-call wrappers in the wheel: each is `jmp <name without the prefix>`.
CFFI_NAMES = ["_cffi_d_SSL_CTX_new", "_cffi_d_SSL_SESSION_free", "_cffi_d_d2i_SSL_SESSION"]
# Not symbols at all (macros over SSL_CTX_ctrl / CRYPTO_free).
MACRO_NAMES = ["SSL_CTX_set_session_cache_mode", "OPENSSL_free"]

WANTED = SSL_NAMES + CRYPTO_NAMES + CFFI_NAMES + MACRO_NAMES


# ---------------------------------------------------------------------------- reference readers


def _pyelftools_entries(path, names=None):
    """{name: {(value, size, kind, binding, section_index, defined)}} over .symtab and .dynsym."""
    out = {}
    with open(path, "rb") as f:
        elf = ELFFile(f)
        for section in elf.iter_sections():
            if not isinstance(section, SymbolTableSection):
                continue
            for sym in section.iter_symbols():
                if not sym.name or (names is not None and sym.name not in names):
                    continue
                out.setdefault(sym.name, set()).add(_from_pyelftools(sym))
    return out


_PYELFTOOLS_KINDS = {"STT_LOOS": "GNU_IFUNC"}
_PYELFTOOLS_BINDS = {"STB_LOOS": "GNU_UNIQUE"}
_SPECIAL_SHNDX = {"SHN_UNDEF": 0, "SHN_ABS": 0xFFF1, "SHN_COMMON": 0xFFF2}


def _from_pyelftools(sym):
    kind = sym["st_info"]["type"]
    bind = sym["st_info"]["bind"]
    shndx = sym["st_shndx"]
    shndx = _SPECIAL_SHNDX[shndx] if isinstance(shndx, str) else shndx
    return (
        sym["st_value"],
        sym["st_size"],
        _PYELFTOOLS_KINDS.get(kind, kind.replace("STT_", "")),
        _PYELFTOOLS_BINDS.get(bind, bind.replace("STB_", "")),
        shndx,
        shndx != 0,
    )


def _ours(symbols, name):
    return {
        (s.value, s.size, s.kind, s.binding, s.section_index, s.defined)
        for s in symbols.entries(name)
    }


def _readelf_build_id(path):
    out = subprocess.run(
        ["readelf", "-n", "-W", str(path)], capture_output=True, text=True, check=True
    ).stdout
    m = re.search(r"Build ID: ([0-9a-f]+)", out)
    return bytes.fromhex(m.group(1)) if m else None


needs_readelf = pytest.mark.skipif(shutil.which("readelf") is None, reason="needs binutils readelf")
needs_gcc = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")


# ---------------------------------------------------------------------------- inputs


def _wheel_so():
    spec = importlib.util.find_spec("cryptography")
    if spec is None or not spec.submodule_search_locations:
        return None
    bindings = Path(list(spec.submodule_search_locations)[0]) / "hazmat" / "bindings"
    # The OpenSSL lives in _rust.abi3.so since cryptography 42 and in _openssl.abi3.so
    # before (3.4.8 has both files): take the one that defines libssl's functions.
    for name in ("_rust.abi3.so", "_openssl.abi3.so"):
        path = bindings / name
        if path.is_file():
            found = ElfSymbols.read(path, wanted=["SSL_CTX_new"]).find("SSL_CTX_new")
            if found is not None and found.defined:
                return path
    return None


def _system_libssl():
    for candidate in (
        "/lib/x86_64-linux-gnu/libssl.so.3",
        "/usr/lib/x86_64-linux-gnu/libssl.so.3",
        "/lib/aarch64-linux-gnu/libssl.so.3",
        "/usr/lib64/libssl.so.3",
    ):
        if os.path.isfile(candidate):
            return Path(candidate)
    return None


@pytest.fixture(scope="module")
def wheel_so():
    path = _wheel_so()
    if path is None:
        pytest.skip("no cryptography wheel with a bundled OpenSSL in this environment")
    return path


@pytest.fixture(scope="module")
def wheel(wheel_so):
    return ElfSymbols.read(wheel_so, WANTED)


@pytest.fixture(scope="module")
def wheel_all(wheel_so):
    return ElfSymbols.read(wheel_so)


@pytest.fixture(scope="module")
def wheel_reference(wheel_so):
    """pyelftools' view of every symbol of the wheel (about a second: done once)."""
    return _pyelftools_entries(wheel_so)


@pytest.fixture(scope="module")
def libssl_so():
    path = _system_libssl()
    if path is None:
        pytest.skip("no system libssl.so.3")
    return path


@pytest.fixture(scope="module")
def libssl(libssl_so):
    return ElfSymbols.read(libssl_so, WANTED)


DUP_A = "__attribute__((used)) static int dup(void) { return 1; }\nint api_a(void) { return 10; }\n"
DUP_B = "__attribute__((used)) static int dup(void) { return 2; }\nint api_b(void) { return 20; }\n"
SMALL_LDFLAGS = ["-Wl,--build-id", "-Wl,-z,noseparate-code", "-Wl,-z,max-page-size=0x1000"]


def _gcc(out, sources, *flags):
    cmd = ["gcc", "-shared", "-fPIC", "-O0", "-nostdlib", *SMALL_LDFLAGS, *flags, "-o", str(out)]
    result = subprocess.run(cmd + [str(s) for s in sources], capture_output=True, text=True)
    return result.returncode == 0, result.stderr


@pytest.fixture(scope="module")
def dup_so(tmp_path_factory):
    """A tiny .so with two different `static int dup(void)` (one per translation unit)."""
    if shutil.which("gcc") is None:
        pytest.skip("needs gcc")
    d = tmp_path_factory.mktemp("dup")
    (d / "a.c").write_text(DUP_A)
    (d / "b.c").write_text(DUP_B)
    ok, err = _gcc(d / "libdup.so", [d / "a.c", d / "b.c"])
    if not ok:
        pytest.skip(f"gcc cannot build a shared object here: {err}")
    return d / "libdup.so"


@pytest.fixture(scope="module")
def dup32_so(tmp_path_factory):
    if shutil.which("gcc") is None:
        pytest.skip("needs gcc")
    d = tmp_path_factory.mktemp("dup32")
    (d / "a.c").write_text(DUP_A)
    (d / "b.c").write_text(DUP_B)
    ok, err = _gcc(d / "libdup32.so", [d / "a.c", d / "b.c"], "-m32")
    if not ok:
        pytest.skip(f"gcc -m32 cannot build a shared object here: {err}")
    return d / "libdup32.so"


# ---------------------------------------------------------------------------- the wheel


def test_wheel_matches_pyelftools(wheel, wheel_reference):
    assert wheel.has_symtab
    for name in WANTED:
        assert _ours(wheel, name) == wheel_reference.get(name, set()), name


def _wrappers_in(wheel):
    """The cffi wrappers this wheel has among CFFI_NAMES (which functions cryptography's
    cffi module wraps differs between versions; 41 has no d2i_SSL_SESSION)."""
    found = [name for name in CFFI_NAMES if wheel.find(name) is not None]
    assert len(found) >= 2, "a cryptography wheel without cffi wrappers of SSL functions"
    return found


def test_wheel_finds_every_openssl_name_as_a_local_function(wheel):
    for name in SSL_NAMES + CRYPTO_NAMES + _wrappers_in(wheel):
        sym = wheel.lookup(name)
        assert sym.name == name
        assert sym.defined and sym.kind == "FUNC" and sym.size > 0
        assert sym.binding == "LOCAL"  # static OpenSSL: not exported, dlsym cannot see these
        assert wheel.find(name) == sym


def test_wheel_macros_are_not_symbols(wheel):
    for name in MACRO_NAMES:
        assert wheel.find(name) is None
        with pytest.raises(ElfError, match="no symbol") as info:
            wheel.lookup(name)
        assert name in str(info.value) and str(wheel.path) in str(info.value)


def test_wanted_and_full_reads_agree(wheel, wheel_all):
    for name in WANTED:
        assert wheel.entries(name) == wheel_all.entries(name), name
    assert wheel_all.build_id == wheel.build_id
    assert wheel_all.load_segments == wheel.load_segments


def test_full_read_matches_pyelftools(wheel_all, wheel_reference):
    # Every name of both tables, FILE, NOTYPE and OBJECT symbols included.
    assert set(wheel_all._raw) == set(wheel_reference)
    for name, expected in wheel_reference.items():
        assert _ours(wheel_all, name) == expected, name


def test_wheel_cffi_wrappers_jump_to_their_functions(wheel):
    assert wheel.machine in ("x86_64", "aarch64")
    for wrapper in _wrappers_in(wheel):
        target = wheel.lookup(wrapper[len("_cffi_d_"):])
        sym = wheel.lookup(wrapper)
        code = wheel.read_bytes(sym.value, sym.size)
        assert decode_tail_jump(wheel.machine, code, sym.value) == target.value, wrapper
        # The same bytes, read by hand through file_offset_of.
        with open(wheel.path, "rb") as f:
            f.seek(wheel.file_offset_of(sym.value))
            assert f.read(sym.size) == code


def test_every_one_jump_cffi_wrapper_in_the_wheel_is_consistent(wheel_all):
    """All `_cffi_d_X` of jump size: the jump lands on X's st_value when X is a LOCAL
    symbol (the static OpenSSL, what sesscache relies on). A GLOBAL X, exported from the
    wheel, is called through its PLT stub (old wheels export cryptography's own helpers)."""
    jump_size = {"x86_64": 5, "aarch64": 4}.get(wheel_all.machine)
    if jump_size is None:
        pytest.skip(f"no tail-jump decoder for {wheel_all.machine}")
    checked = 0
    for name in wheel_all._raw:
        if not name.startswith("_cffi_d_"):
            continue
        sym = wheel_all.lookup(name)
        if sym.size != jump_size:
            continue
        code = wheel_all.read_bytes(sym.value, sym.size)
        got = decode_tail_jump(wheel_all.machine, code, sym.value)
        assert got is not None, name
        target = wheel_all.find(name[len("_cffi_d_"):])
        if target is not None and target.binding == "LOCAL":
            assert got == target.value, name
            checked += 1
    assert checked > 100


def test_file_offset_of_matches_section_headers(wheel_so, wheel):
    sym = wheel.lookup("SSL_CTX_new")
    with open(wheel_so, "rb") as f:
        elf = ELFFile(f)
        text = elf.get_section(sym.section_index)
        expected = text["sh_offset"] + sym.value - text["sh_addr"]
    assert wheel.file_offset_of(sym.value) == expected
    with pytest.raises(ElfError, match="not backed by the file"):
        wheel.file_offset_of(1 << 60)


def test_load_segments_and_min_load_vaddr(wheel_so, wheel):
    with open(wheel_so, "rb") as f:
        loads = [s for s in ELFFile(f).iter_segments() if s["p_type"] == "PT_LOAD"]
        expected = [(s["p_vaddr"], s["p_memsz"], s["p_flags"]) for s in loads]
    assert wheel.load_segments == expected
    assert wheel.min_load_vaddr == min(v for v, _, _ in expected) & ~(mmap.PAGESIZE - 1)
    assert any(flags & _elf.PF_X for _, _, flags in wheel.load_segments)


@needs_readelf
def test_wheel_build_id_matches_readelf(wheel_so, wheel):
    assert wheel.build_id is not None and len(wheel.build_id) >= 16
    assert wheel.build_id == _readelf_build_id(wheel_so)


def test_wheel_has_really_ambiguous_openssl_statics(wheel_all):
    # Static functions with one name in several object files (OpenSSL 3.x has one
    # `static void sk_X509_freefunc_thunk(...)` per file that uses STACK_OF(X509), eleven
    # addresses in cryptography 50's wheel; every wheel has some). Picking one is a guess.
    name = "sk_X509_freefunc_thunk"
    if len({s.value for s in wheel_all.entries(name)}) < 2:
        name = next(candidate for candidate in wheel_all._raw
                    if len({s.value for s in wheel_all.entries(candidate)
                            if s.defined and s.kind == "FUNC"}) > 1)
    entries = [s for s in wheel_all.entries(name) if s.defined and s.kind == "FUNC"]
    assert len({s.value for s in entries}) > 1
    assert all(s.binding == "LOCAL" for s in entries)
    with pytest.raises(ElfError, match="ambiguous") as info:
        wheel_all.lookup(name)
    assert name in str(info.value) and str(wheel_all.path) in str(info.value)
    with pytest.raises(ElfError, match="ambiguous"):
        wheel_all.find(name)


def test_read_with_wanted_is_fast(wheel_so):
    best = min(_timed(lambda: ElfSymbols.read(wheel_so, WANTED)) for _ in range(3))
    assert best < 0.25, f"reading {len(WANTED)} names took {best * 1000:.0f} ms"


def _timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# ---------------------------------------------------------------------------- the system libssl


def test_libssl_dynsym_lookups_match_pyelftools(libssl_so, libssl):
    # Distributions strip .symtab from libssl (has_symtab is False here); .dynsym is enough.
    with open(libssl_so, "rb") as f:
        assert libssl.has_symtab == (ELFFile(f).get_section_by_name(".symtab") is not None)
    reference = _pyelftools_entries(libssl_so, set(WANTED))
    for name in WANTED:
        assert _ours(libssl, name) == reference.get(name, set()), name
    for name in SSL_NAMES:
        sym = libssl.lookup(name)
        assert sym.defined and sym.kind == "FUNC" and sym.binding == "GLOBAL"


def test_libssl_imports_are_not_definitions(libssl):
    # libcrypto functions are undefined references in libssl: value 0 means nothing here.
    for name in ("CRYPTO_get_ex_new_index", "CRYPTO_free", "CRYPTO_malloc"):
        assert libssl.find(name) is None
        with pytest.raises(ElfError, match="undefined reference"):
            libssl.lookup(name)
        imported = libssl.lookup(name, allow_undefined=True)
        assert not imported.defined and imported.section_index == 0


def test_libssl_missing_name_says_there_is_no_symtab(libssl):
    with pytest.raises(ElfError, match=r"no \.symtab"):
        libssl.lookup("SSL_CTX_set_session_cache_mode")


@needs_readelf
def test_libssl_build_id_matches_readelf(libssl_so, libssl):
    assert libssl.build_id == _readelf_build_id(libssl_so)


# ---------------------------------------------------------------------------- compiled with gcc


def test_two_static_functions_of_one_name_are_ambiguous(dup_so):
    symbols = ElfSymbols.read(dup_so, ["dup", "api_a", "api_b"])
    entries = symbols.entries("dup")
    assert len(entries) == 2 and entries[0].value != entries[1].value
    assert {s.binding for s in entries} == {"LOCAL"}
    with pytest.raises(ElfError, match="ambiguous"):
        symbols.lookup("dup")
    assert symbols.lookup("api_a").binding == "GLOBAL"  # in .symtab and .dynsym, one Symbol
    assert len(symbols.entries("api_a")) == 1
    assert _ours(symbols, "dup") == _pyelftools_entries(dup_so, {"dup"})["dup"]


@needs_readelf
def test_gcc_build_id_matches_readelf(dup_so):
    assert ElfSymbols.read(dup_so, ["dup"]).build_id == _readelf_build_id(dup_so)


def test_elf32_from_gcc_matches_pyelftools(dup32_so):
    symbols = ElfSymbols.read(dup32_so)
    assert symbols.elf_class == 32 and symbols.machine == "i386"
    reference = _pyelftools_entries(dup32_so)
    assert {n: _ours(symbols, n) for n in reference} == reference
    with pytest.raises(ElfError, match="ambiguous"):
        symbols.lookup("dup")


# ---------------------------------------------------------------------------- a small ELF writer


def _build_elf(
    *,
    bits=64,
    little=True,
    machine=62,
    strtab=b"\0",
    symbols=(),
    dynsymbols=None,
    build_id=b"\x12\x34\x56\x78" * 5,
    note_align=4,
):
    """An ELF file with .symtab (+ .dynsym), a build-id note, one PT_LOAD and one PT_NOTE.

    symbols: (st_name, value, size, info, shndx) tuples; the null symbol is added first.
    """
    e = "<" if little else ">"
    if bits == 64:
        ehdr, phdr, shdr = struct.Struct(e + "HHIQQQIHHHHHH"), "IIQQQQQQ", "IIQQQQIIQQ"
        sym = struct.Struct(e + "IBBHQQ")

        def pack_sym(name, value, size, info, shndx):
            return sym.pack(name, info, 0, shndx, value, size)

    else:
        ehdr, phdr, shdr = struct.Struct(e + "HHIIIIIHHHHHH"), "IIIIIIII", "IIIIIIIIII"
        sym = struct.Struct(e + "IIIBBH")

        def pack_sym(name, value, size, info, shndx):
            return sym.pack(name, value, size, info, 0, shndx)

    phdr, shdr = struct.Struct(e + phdr), struct.Struct(e + shdr)

    def pad(n):
        return n + (-n % note_align)

    note = struct.pack(e + "III", 4, len(build_id), 3) + b"GNU\0"
    note += b"\0" * (pad(len(note)) - len(note)) + build_id
    note += b"\0" * (pad(len(note)) - len(note))
    symtab = pack_sym(0, 0, 0, 0, 0) + b"".join(pack_sym(*s) for s in symbols)
    shstrtab = b"\0.symtab\0.strtab\0.note\0.shstrtab\0.dynsym\0"
    bodies = [note, symtab, strtab, shstrtab]
    if dynsymbols is not None:
        bodies.append(pack_sym(0, 0, 0, 0, 0) + b"".join(pack_sym(*s) for s in dynsymbols))

    phoff = ehdr.size + 16
    offset = phoff + 2 * phdr.size
    offsets = []
    for body in bodies:
        offset += -offset % 8
        offsets.append(offset)
        offset += len(body)
    offset += -offset % 8
    shoff = offset
    # index: 0 null, 1 note, 2 symtab, 3 strtab, 4 shstrtab, 5 dynsym
    sections = [
        (0, 0, 0, 0, 0, 0, 0, 0, 0, 0),
        (17, 7, 2, 0, offsets[0], len(note), 0, 0, note_align, 0),
        (1, 2, 0, 0, offsets[1], len(symtab), 3, 1, 8, sym.size),
        (9, 3, 0, 0, offsets[2], len(strtab), 0, 0, 1, 0),
        (23, 3, 0, 0, offsets[3], len(shstrtab), 0, 0, 1, 0),
    ]
    if dynsymbols is not None:
        sections.append((33, 11, 2, 0, offsets[4], len(bodies[4]), 3, 1, 8, sym.size))
    if bits == 64:  # p_type p_flags p_offset p_vaddr p_paddr p_filesz p_memsz p_align
        segments = [
            (1, 5, 0, 0, 0, shoff, shoff + 0x100, 0x1000),
            (4, 4, offsets[0], offsets[0], offsets[0], len(note), len(note), note_align),
        ]
    else:  # p_type p_offset p_vaddr p_paddr p_filesz p_memsz p_flags p_align
        segments = [
            (1, 0, 0, 0, shoff, shoff + 0x100, 5, 0x1000),
            (4, offsets[0], offsets[0], offsets[0], len(note), len(note), 4, note_align),
        ]
    ident = b"\x7fELF" + bytes([2 if bits == 64 else 1, 1 if little else 2, 1]) + b"\0" * 9
    header = ehdr.pack(
        3, machine, 1, 0, phoff, shoff, 0, ehdr.size + 16, phdr.size, len(segments),
        shdr.size, len(sections), 4,
    )
    out = bytearray(ident + header)
    out += b"\0" * (phoff - len(out))
    for seg in segments:
        out += phdr.pack(*seg)
    for off, body in zip(offsets, bodies):
        out += b"\0" * (off - len(out))
        out += body
    out += b"\0" * (shoff - len(out))
    for sec in sections:
        out += shdr.pack(*sec)
    return bytes(out)


FUNC_GLOBAL = (1 << 4) | 2
FUNC_LOCAL = 2
OBJECT_WEAK = (2 << 4) | 1

# "_cffi_d_SSL_CTX_new" at 1; "SSL_CTX_new" shares its tail at 9 and is also stored alone at 21.
TAIL_STRTAB = b"\0_cffi_d_SSL_CTX_new\0SSL_CTX_new\0table\0"
TAIL_SYMBOLS = [
    (1, 0x1000, 5, FUNC_LOCAL, 1),
    (9, 0x2000, 12, FUNC_LOCAL, 1),  # SSL_CTX_new, via the shared tail
    (21, 0x2000, 12, FUNC_GLOBAL, 1),  # SSL_CTX_new again, same address
    (33, 0x3000, 64, OBJECT_WEAK, 1),
    (34, 0x3001, 0, 0, 0xFFF1),  # "able": tail of "table", absolute
]


@pytest.mark.parametrize("bits", [64, 32])
@pytest.mark.parametrize("little", [True, False], ids=["le", "be"])
@pytest.mark.parametrize("wanted", [None, ["SSL_CTX_new", "table", "able", "_cffi_d_SSL_CTX_new"]])
def test_written_elf_matches_pyelftools(tmp_path, bits, little, wanted):
    path = tmp_path / "t.so"
    path.write_bytes(
        _build_elf(bits=bits, little=little, machine=183, strtab=TAIL_STRTAB, symbols=TAIL_SYMBOLS)
    )
    symbols = ElfSymbols.read(path, wanted)
    assert (symbols.elf_class, symbols.little_endian, symbols.machine) == (bits, little, "aarch64")
    assert symbols.build_id == b"\x12\x34\x56\x78" * 5
    reference = _pyelftools_entries(path)
    assert set(reference) == {"_cffi_d_SSL_CTX_new", "SSL_CTX_new", "table", "able"}
    for name in reference:
        assert _ours(symbols, name) == reference[name], name
    # Two entries at one address (LOCAL and GLOBAL alias): not ambiguous.
    assert symbols.lookup("SSL_CTX_new").value == 0x2000
    assert symbols.lookup("able").section_index == 0xFFF1 and symbols.lookup("able").defined
    assert symbols.load_segments == [(0, symbols.load_segments[0].memsz, 5)]


def test_written_elf_with_8_byte_aligned_notes(tmp_path):
    path = tmp_path / "t.so"
    path.write_bytes(_build_elf(note_align=8, build_id=b"\xab" * 20, strtab=b"\0", symbols=()))
    assert ElfSymbols.read(path).build_id == b"\xab" * 20


def test_written_elf_without_build_id_note(tmp_path):
    path = tmp_path / "t.so"
    data = bytearray(_build_elf())
    type_at = data.index(b"GNU\0") - 4
    data[type_at:type_at + 4] = struct.pack("<I", 1)  # NT_GNU_ABI_TAG, not a build id
    path.write_bytes(bytes(data))
    assert ElfSymbols.read(path).build_id is None


def test_defined_symbol_wins_over_an_undefined_reference(tmp_path):
    path = tmp_path / "t.so"
    strtab = b"\0f\0"
    path.write_bytes(
        _build_elf(strtab=strtab, symbols=[(1, 0x40, 8, FUNC_GLOBAL, 1)],
                   dynsymbols=[(1, 0, 0, FUNC_GLOBAL, 0)])
    )
    symbols = ElfSymbols.read(path)
    assert len(symbols.entries("f")) == 2
    assert symbols.lookup("f").value == 0x40


def test_same_address_prefers_a_typed_sized_entry(tmp_path):
    path = tmp_path / "t.so"
    path.write_bytes(
        _build_elf(strtab=b"\0g\0", symbols=[(1, 0x40, 0, 0x10, 1), (1, 0x40, 8, FUNC_GLOBAL, 1)])
    )
    sym = ElfSymbols.read(path, ["g"]).lookup("g")
    assert (sym.kind, sym.size) == ("FUNC", 8)


def test_data_objects_at_two_addresses_are_ambiguous_too(tmp_path):
    path = tmp_path / "t.so"
    path.write_bytes(
        _build_elf(strtab=b"\0tbl\0", symbols=[(1, 0x40, 8, 1, 1), (1, 0x80, 8, 1, 1)])
    )
    with pytest.raises(ElfError, match="ambiguous"):
        ElfSymbols.read(path, ["tbl"]).lookup("tbl")


def test_symbol_name_outside_string_table(tmp_path):
    path = tmp_path / "t.so"
    path.write_bytes(_build_elf(strtab=b"\0f\0", symbols=[(1, 0x40, 8, FUNC_GLOBAL, 1),
                                                          (999, 0x80, 8, FUNC_GLOBAL, 1)]))
    with pytest.raises(ElfError, match="outside the string table"):
        ElfSymbols.read(path)
    # The fast path only looks at the wanted names, so the corrupt entry does not matter there.
    assert ElfSymbols.read(path, ["f"]).lookup("f").value == 0x40


def test_unterminated_string_table(tmp_path):
    path = tmp_path / "t.so"
    path.write_bytes(_build_elf(strtab=b"\0f\0gg", symbols=[(1, 0x40, 8, FUNC_GLOBAL, 1),
                                                            (3, 0x80, 8, FUNC_GLOBAL, 1)]))
    assert ElfSymbols.read(path, ["f", "gg"]).find("gg") is None
    with pytest.raises(ElfError, match="not NUL-terminated"):
        ElfSymbols.read(path)


def test_non_ascii_names(tmp_path):
    path = tmp_path / "t.so"
    strtab = b"\0caf\xc3\xa9\0bad\xff\0"
    path.write_bytes(_build_elf(strtab=strtab, symbols=[(1, 0x40, 8, FUNC_GLOBAL, 1),
                                                        (7, 0x80, 8, FUNC_GLOBAL, 1)]))
    assert ElfSymbols.read(path, ["café"]).lookup("café").value == 0x40
    everything = ElfSymbols.read(path)
    assert everything.lookup("café").value == 0x40
    assert everything.lookup("bad\udcff").value == 0x80  # undecodable bytes survive


# ---------------------------------------------------------------------------- API misuse


def test_names_outside_wanted_are_refused_not_reported_missing(wheel):
    with pytest.raises(ElfError, match="wanted"):
        wheel.lookup("SSL_new")
    with pytest.raises(ElfError, match="wanted"):
        wheel.find("SSL_new")


@pytest.mark.parametrize("wanted, error", [
    ("SSL_new", TypeError),
    ([b"SSL_new"], TypeError),
    ([""], ValueError),
    (["a\0b"], ValueError),
])
def test_bad_wanted(wheel_so, wanted, error):
    with pytest.raises(error):
        ElfSymbols.read(wheel_so, wanted)


# ---------------------------------------------------------------------------- bad files


def _assert_clean_error(exc_info, path):
    message = str(exc_info.value)
    assert str(path) in message
    # Explicit checks, not the last-resort net around the parser.
    assert not isinstance(exc_info.value.__cause__, (struct.error, IndexError, ValueError))


def test_not_an_elf_file(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello, this is not a shared object\n")
    with pytest.raises(ElfError, match="not an ELF file") as info:
        ElfSymbols.read(path)
    _assert_clean_error(info, path)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.so"
    path.write_bytes(b"")
    with pytest.raises(ElfError, match="empty") as info:
        ElfSymbols.read(path)
    _assert_clean_error(info, path)


def test_directory(tmp_path):
    with pytest.raises(ElfError, match="directory") as info:
        ElfSymbols.read(tmp_path)
    _assert_clean_error(info, tmp_path)


def test_missing_file(tmp_path):
    path = tmp_path / "gone.so"
    with pytest.raises(ElfError, match="cannot read") as info:
        ElfSymbols.read(path, ["x"])
    _assert_clean_error(info, path)


def test_not_a_regular_file():
    if not os.path.exists("/dev/null"):
        pytest.skip("no /dev/null")
    with pytest.raises(ElfError, match="not a regular file"):
        ElfSymbols.read("/dev/null")


@pytest.mark.parametrize("cut", [1, 3, 4, 10, 16, 40, 64, 100, 1000])
def test_truncated_elf(tmp_path, dup_so, cut):
    path = tmp_path / "cut.so"
    path.write_bytes(dup_so.read_bytes()[:cut])
    with pytest.raises(ElfError) as info:
        ElfSymbols.read(path, ["dup"])
    _assert_clean_error(info, path)
    if cut >= 4:
        assert re.search("truncated|outside the file", str(info.value))


def test_truncated_wheel_tail(tmp_path, wheel_so):
    # Cut inside .strtab, which sits near the end: section headers are gone too.
    data = wheel_so.read_bytes()
    path = tmp_path / "cut.so"
    path.write_bytes(data[: len(data) - 200_000])
    with pytest.raises(ElfError, match="truncated|outside the file") as info:
        ElfSymbols.read(path, WANTED)
    _assert_clean_error(info, path)


@pytest.mark.parametrize("offset, value, message", [
    (4, 3, "unknown ELF class"),
    (5, 0, "unknown ELF data encoding"),
])
def test_bad_identification(tmp_path, dup_so, offset, value, message):
    data = bytearray(dup_so.read_bytes())
    data[offset] = value
    path = tmp_path / "bad.so"
    path.write_bytes(bytes(data))
    with pytest.raises(ElfError, match=message) as info:
        ElfSymbols.read(path)
    _assert_clean_error(info, path)


@pytest.fixture(scope="module")
def fuzz_seed(dup_so, tmp_path_factory):
    return dup_so.read_bytes(), tmp_path_factory.mktemp("fuzz") / "mutant.so"


def _exercise(path, wanted):
    try:
        symbols = ElfSymbols.read(path, wanted)
    except ElfError as exc:
        assert not isinstance(exc.__cause__, (struct.error, IndexError, ValueError)), exc
        return
    for name in wanted or ["dup", "api_a", "api_b"]:
        try:
            symbols.find(name, allow_undefined=True)
            symbols.lookup(name)
        except ElfError:
            pass
    symbols.build_id, symbols.machine, symbols.has_symtab
    for vaddr, _, _ in symbols.load_segments:
        try:
            symbols.file_offset_of(vaddr)
        except ElfError:
            pass
    try:
        symbols.min_load_vaddr
    except ElfError:
        pass


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fuzz_truncated_and_mutated(fuzz_seed, data):
    seed, path = fuzz_seed
    mutated = bytearray(seed[: data.draw(st.integers(0, len(seed)), label="length")])
    if mutated:
        for _ in range(data.draw(st.integers(0, 8), label="mutations")):
            at = data.draw(st.integers(0, len(mutated) - 1))
            mutated[at] = data.draw(st.integers(0, 255))
    path.write_bytes(bytes(mutated))
    _exercise(path, data.draw(st.sampled_from([None, ["dup", "api_a", "api_b"]])))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fuzz_header_fields(fuzz_seed, data):
    """Mutate whole header, program-header and section-header words: where parsers really break."""
    seed, path = fuzz_seed
    mutated = bytearray(seed)
    shoff = struct.unpack_from("<Q", seed, 0x28)[0]
    regions = [(0, 64), (64, 64 + 56 * 4), (shoff, len(seed))]
    for _ in range(data.draw(st.integers(1, 4), label="mutations")):
        lo, hi = data.draw(st.sampled_from(regions))
        at = data.draw(st.integers(lo, max(lo, hi - 8)))
        word = data.draw(st.sampled_from([0, 1, 0xFFFF, 0xFFFFFFFF, 2**63, 2**64 - 1, 24, 0x40]))
        mutated[at : at + 8] = word.to_bytes(8, "little")
    path.write_bytes(bytes(mutated[: len(seed)]))
    _exercise(path, data.draw(st.sampled_from([None, ["dup", "api_a"]])))


# ---------------------------------------------------------------------------- decode_tail_jump


def _rel32(n):
    return n.to_bytes(4, "little", signed=True)


ENDBR64 = bytes.fromhex("f30f1efa")
BTI_C = (0xD503245F).to_bytes(4, "little")


def _a64_b(offset):
    return (0x14000000 | ((offset // 4) & 0x03FFFFFF)).to_bytes(4, "little")


@pytest.mark.parametrize("code, vaddr, target", [
    (b"\xe9" + _rel32(0x100), 0x1000, 0x1105),
    (b"\xe9" + _rel32(-0x20), 0x1000, 0x1000 + 5 - 0x20),
    (b"\xe9" + _rel32(-0x1000), 0x4FE8E0, 0x4FE8E5 - 0x1000),
    (b"\xe9" + _rel32(0) + b"\xcc" * 11, 0x2000, 0x2005),  # trailing padding is ignored
    (b"\xeb\x10", 0x1000, 0x1012),
    (b"\xeb\xfe", 0x1000, 0x1000),  # jmp to itself
    (b"\xeb\x80", 0x1000, 0x1002 - 0x80),
    (ENDBR64 + b"\xe9" + _rel32(0x40), 0x1000, 0x1000 + 9 + 0x40),
    (ENDBR64 + b"\xeb\xf0", 0x1000, 0x1000 + 6 - 0x10),
    (b"\xe9" + _rel32(-6), 1, (1 + 5 - 6) % 2**64),  # wraps like the CPU does
])
def test_decode_tail_jump_x86_64(code, vaddr, target):
    assert decode_tail_jump("x86_64", code, vaddr) == target


@pytest.mark.parametrize("code", [
    b"",
    b"\xe9\x00\x00\x00",  # truncated rel32
    b"\xeb",  # truncated rel8
    ENDBR64,  # nothing after endbr64
    ENDBR64 + ENDBR64 + b"\xeb\x00",  # only one endbr64 is allowed
    b"\x55\x48\x89\xe5\xe9\x00\x00\x00\x00",  # push rbp; mov rbp, rsp; jmp: not a single jump
    b"\xc3",  # ret
    b"\xe8" + _rel32(0x100),  # call, not a jump
    b"\xff\x25" + _rel32(0x100),  # jmp *rip+x: indirect (a PLT stub)
    b"\x0f\x84" + _rel32(0x100),  # je: conditional
    b"\x74\x05",  # je rel8: conditional
    b"\x90\xe9" + _rel32(0),  # nop first
    BTI_C + _a64_b(8),  # aarch64 code
])
def test_decode_tail_jump_x86_64_rejects(code):
    assert decode_tail_jump("x86_64", code, 0x1000) is None


@pytest.mark.parametrize("code, vaddr, target", [
    (_a64_b(8), 0x1000, 0x1008),
    (_a64_b(-4), 0x1000, 0xFFC),
    (_a64_b(-(1 << 27)), 0x10000000, 0x10000000 - (1 << 27)),  # most negative
    (_a64_b((1 << 27) - 4), 0, (1 << 27) - 4),  # most positive
    (BTI_C + _a64_b(0x100), 0x2000, 0x2104),
    (BTI_C + _a64_b(-0x100), 0x2000, 0x2004 - 0x100),
    ((0xD50324DF).to_bytes(4, "little") + _a64_b(8), 0x2000, 0x200C),  # bti jc
    (_a64_b(8) + b"\x1f\x20\x03\xd5", 0x1000, 0x1008),  # trailing nop ignored
])
def test_decode_tail_jump_aarch64(code, vaddr, target):
    assert decode_tail_jump("aarch64", code, vaddr) == target


@pytest.mark.parametrize("code", [
    b"",
    _a64_b(8)[:3],  # truncated
    BTI_C,  # nothing after bti
    (0x94000002).to_bytes(4, "little"),  # bl: a call
    (0xD65F03C0).to_bytes(4, "little"),  # ret
    (0xD61F0200).to_bytes(4, "little"),  # br x16: indirect
    (0x54000040).to_bytes(4, "little"),  # b.eq: conditional
    (0xD503201F).to_bytes(4, "little") + _a64_b(8),  # nop first
    _a64_b(8)[::-1],  # big-endian encoding is not how A64 code is stored
    b"\xe9" + _rel32(0x100),  # x86 code
])
def test_decode_tail_jump_aarch64_rejects(code):
    assert decode_tail_jump("aarch64", code, 0x1000) is None


@pytest.mark.parametrize("machine", ["i386", "arm", "riscv64", "ppc64", "", "X86_64"])
def test_decode_tail_jump_other_machines(machine):
    assert decode_tail_jump(machine, b"\xe9" + _rel32(0x100), 0x1000) is None


def test_decode_tail_jump_accepts_buffers():
    code = b"\xe9" + _rel32(0x10)
    assert decode_tail_jump("x86_64", bytearray(code), 0) == 0x15
    assert decode_tail_jump("x86_64", memoryview(code), 0) == 0x15
