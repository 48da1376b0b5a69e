"""A small, fast, dependency-free reader for ELF symbol tables.

Why this exists: ``cryptography`` wheels link their own static OpenSSL into
``cryptography/hazmat/bindings/_rust.abi3.so``.  The OpenSSL functions there are LOCAL symbols in
``.symtab``, not exported in ``.dynsym``, so ``dlsym`` cannot find them.  sesscache reads their
addresses from the file (load bias + ``st_value``) and verifies them before it calls anything.

pyelftools can do this but takes about 0.6 s on a 14 MB wheel; this module needs about 15 ms for
the forty names sesscache uses, once per process:

* the file is mapped (``mmap``) and only the symbol and string tables are copied out;
* the string table is split once and matched against the wanted names at C speed, giving the
  string-table offsets whose string is exactly a wanted name (a name may occur many times);
* only the ``st_name`` column of the symbol table is scanned for those offsets, and only the
  matching entries are decoded.  A ``st_name`` pointing into the middle of a longer string (tail
  sharing: ``SSL_CTX_new`` inside ``_cffi_d_SSL_CTX_new``) is detected and resolved on its own.

Nothing here guesses: a name defined at two different addresses (two ``static`` functions of the
same name in different OpenSSL files, for instance) makes :meth:`ElfSymbols.lookup` raise
:class:`ElfError` instead of picking one, and every malformed or truncated file raises
:class:`ElfError` naming the file and the problem.

ELF32 and ELF64, little- and big-endian, are all supported.
"""
from __future__ import annotations

import mmap
import os
import stat
import struct
import sys
from array import array
from collections import namedtuple
from dataclasses import dataclass
from itertools import accumulate, compress, count
from typing import Dict, FrozenSet, Iterable, List, Optional, Sequence, Tuple, Union

__all__ = [
    "ElfError",
    "ElfSymbols",
    "LoadSegment",
    "Symbol",
    "decode_tail_jump",
    "PF_X",
    "PF_W",
    "PF_R",
]

# Segment permission bits (p_flags).
PF_X = 1
PF_W = 2
PF_R = 4

_ELFMAG = b"\x7fELF"
_ELFCLASS32 = 1
_ELFCLASS64 = 2
_ELFDATA2LSB = 1
_ELFDATA2MSB = 2

_PT_LOAD = 1
_PT_NOTE = 4

_SHT_SYMTAB = 2
_SHT_STRTAB = 3
_SHT_NOTE = 7
_SHT_NOBITS = 8
_SHT_DYNSYM = 11
_SHT_SYMTAB_SHNDX = 18

_SHN_UNDEF = 0
_SHN_LORESERVE = 0xFF00
_SHN_XINDEX = 0xFFFF
_PN_XNUM = 0xFFFF

_NT_GNU_BUILD_ID = 3

_STT_NAMES = {
    0: "NOTYPE",
    1: "OBJECT",
    2: "FUNC",
    3: "SECTION",
    4: "FILE",
    5: "COMMON",
    6: "TLS",
    10: "GNU_IFUNC",
}
_STB_NAMES = {0: "LOCAL", 1: "GLOBAL", 2: "WEAK", 10: "GNU_UNIQUE"}

# e_machine -> name.  The names follow ``uname -m`` where there is one.
_EM_NAMES = {
    2: "sparc",
    3: "i386",
    8: "mips",
    20: "ppc",
    21: "ppc64",
    22: "s390",
    40: "arm",
    43: "sparcv9",
    62: "x86_64",
    183: "aarch64",
    243: "riscv",
    258: "loongarch",
}

# Symbol kinds that name no code or data and so never make a name ambiguous.
_NOT_ADDRESSES = frozenset({"FILE", "SECTION"})


class ElfError(Exception):
    """The file is not an ELF file this module can read, or a symbol is missing or ambiguous.

    The message names the file and what is wrong with it.
    """


@dataclass(frozen=True)
class Symbol:
    """One symbol-table entry.

    ``value`` is ``st_value``: for a shared object, the address relative to the load bias.
    ``defined`` is False for undefined references (``st_shndx == SHN_UNDEF``): imports from other
    libraries, whose ``value`` means nothing here.
    """

    name: str
    value: int
    size: int
    kind: str
    binding: str
    section_index: int
    defined: bool


LoadSegment = namedtuple("LoadSegment", ["vaddr", "memsz", "flags"])
LoadSegment.__doc__ = "A PT_LOAD segment: virtual address, size in memory, PF_R|PF_W|PF_X flags."

# Per (class, byte order): (ehdr fields after e_ident, phdr, shdr, sym) struct formats, plus the
# index of each field we use in an unpacked symbol tuple.
_Layout = namedtuple(
    "_Layout",
    ["ehdr", "phdr", "shdr", "sym", "sym_name_only", "sym_fields"],
)


def _layout(elf_class: int, order: str) -> _Layout:
    if elf_class == _ELFCLASS64:
        # e_type e_machine e_version e_entry e_phoff e_shoff e_flags e_ehsize e_phentsize
        # e_phnum e_shentsize e_shnum e_shstrndx
        return _Layout(
            ehdr=struct.Struct(order + "HHIQQQIHHHHHH"),
            # p_type p_flags p_offset p_vaddr p_paddr p_filesz p_memsz p_align
            phdr=struct.Struct(order + "IIQQQQQQ"),
            # sh_name sh_type sh_flags sh_addr sh_offset sh_size sh_link sh_info sh_addralign
            # sh_entsize
            shdr=struct.Struct(order + "IIQQQQIIQQ"),
            # st_name st_info st_other st_shndx st_value st_size
            sym=struct.Struct(order + "IBBHQQ"),
            sym_name_only=struct.Struct(order + "I20x"),
            sym_fields=(0, 1, 3, 4, 5),  # name, info, shndx, value, size
        )
    return _Layout(
        ehdr=struct.Struct(order + "HHIIIIIHHHHHH"),
        # p_type p_offset p_vaddr p_paddr p_filesz p_memsz p_flags p_align
        phdr=struct.Struct(order + "IIIIIIII"),
        shdr=struct.Struct(order + "IIIIIIIIII"),
        # st_name st_value st_size st_info st_other st_shndx
        sym=struct.Struct(order + "IIIBBH"),
        sym_name_only=struct.Struct(order + "I12x"),
        sym_fields=(0, 3, 5, 1, 2),
    )


_Section = namedtuple(
    "_Section", ["index", "type", "offset", "size", "link", "align", "entsize"]
)
_Segment = namedtuple("_Segment", ["type", "flags", "offset", "vaddr", "filesz", "memsz", "align"])


class _Reader:
    """Bounds-checked access to the mapped file; every failure is an ElfError naming the file."""

    def __init__(self, path: str, buf: mmap.mmap, size: int) -> None:
        self.path = path
        self.buf = buf
        self.size = size

    def fail(self, what: str) -> ElfError:
        return ElfError(f"{self.path}: {what}")

    def check(self, offset: int, length: int, what: str) -> None:
        if offset < 0 or length < 0 or offset + length > self.size:
            raise self.fail(
                f"{what} at file offset {offset:#x}..{offset + length:#x} lies outside the file "
                f"({self.size} bytes): the file is truncated or corrupt"
            )

    def unpack(self, st: struct.Struct, offset: int, what: str) -> tuple:
        self.check(offset, st.size, what)
        return st.unpack_from(self.buf, offset)

    def take(self, offset: int, length: int, what: str) -> bytes:
        self.check(offset, length, what)
        return self.buf[offset : offset + length]


class ElfSymbols:
    """Symbols, notes and load segments of one ELF file.  Build it with :meth:`read`.

    The file is mapped only while :meth:`read` runs; the object keeps plain Python values.
    """

    path: str
    machine: str
    elf_class: int  # 32 or 64
    little_endian: bool
    build_id: Optional[bytes]
    has_symtab: bool
    load_segments: List[LoadSegment]

    def __init__(self) -> None:  # use ElfSymbols.read()
        # name -> raw symbol tuples as unpacked (Symbols are built on demand: most are never asked
        # for, and building 36,000 frozen dataclasses would cost more than reading the file).
        self._raw: Dict[str, List[tuple]] = {}
        self._fields: Tuple[int, ...] = ()
        self._cache: Dict[str, Tuple[Symbol, ...]] = {}
        self._wanted: Optional[FrozenSet[str]] = None
        self._file_segments: List[_Segment] = []
        self._section0_info = 0

    # ------------------------------------------------------------------ reading

    @classmethod
    def read(
        cls, path: Union[str, "os.PathLike[str]"], wanted: Optional[Iterable[str]] = None
    ) -> "ElfSymbols":
        """Read ``.symtab`` and ``.dynsym`` of the ELF file at ``path``.

        With ``wanted``, only symbols of those names are kept (the fast path: about 15 ms for 40
        names in a 14 MB wheel, against about 45 ms for everything); :meth:`lookup` and
        :meth:`find` then refuse other names.

        Raises :class:`ElfError` for anything that is not a readable ELF file (missing, a
        directory, empty, truncated, corrupt), and TypeError/ValueError for a ``wanted`` that
        cannot hold symbol names (a bare string, non-str items, empty names or names with NUL).
        """
        path = os.fspath(path)
        wanted_set: Optional[FrozenSet[str]] = None
        if wanted is not None:
            if isinstance(wanted, (str, bytes)):
                raise TypeError("wanted must be an iterable of symbol names, not a single string")
            wanted_set = frozenset(wanted)
            for name in wanted_set:
                if not isinstance(name, str):
                    raise TypeError(f"wanted names must be str, got {type(name).__name__}")
                if not name or "\0" in name:
                    raise ValueError(f"{name!r} cannot be a symbol name")
        self = cls()
        self.path = path
        self._wanted = wanted_set
        try:
            st = os.stat(path)
        except OSError as exc:
            raise ElfError(f"{path}: cannot read ELF file: {exc.strerror or exc}") from exc
        if stat.S_ISDIR(st.st_mode):
            raise ElfError(f"{path}: is a directory, not an ELF file")
        if not stat.S_ISREG(st.st_mode):
            raise ElfError(f"{path}: not a regular file, cannot be an ELF file on disk")
        try:
            with open(path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size == 0:
                    raise ElfError(f"{path}: empty file, not an ELF file")
                with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                    try:
                        self._parse(_Reader(path, buf, len(buf)))
                    except ElfError:
                        raise
                    except (struct.error, IndexError, ValueError, OverflowError) as exc:
                        # Every access is bounds-checked; this is the last line of defence so a
                        # corrupt file can never escape as anything but ElfError.
                        raise ElfError(f"{path}: malformed ELF file ({exc})") from exc
        except OSError as exc:
            raise ElfError(f"{path}: cannot read ELF file: {exc.strerror or exc}") from exc
        return self

    def _parse(self, r: _Reader) -> None:
        ident = r.buf[:16]
        if ident[:4] != _ELFMAG:
            raise r.fail(f"not an ELF file (starts with {ident[:4]!r}, expected {_ELFMAG!r})")
        if len(ident) < 16:
            raise r.fail(f"truncated ELF file: {r.size} bytes, shorter than the ELF identification")
        elf_class, data = ident[4], ident[5]
        if elf_class not in (_ELFCLASS32, _ELFCLASS64):
            raise r.fail(f"unknown ELF class {elf_class} (expected 1 for ELF32 or 2 for ELF64)")
        if data not in (_ELFDATA2LSB, _ELFDATA2MSB):
            raise r.fail(f"unknown ELF data encoding {data} (expected 1 little- or 2 big-endian)")
        self.elf_class = 64 if elf_class == _ELFCLASS64 else 32
        self.little_endian = data == _ELFDATA2LSB
        lay = _layout(elf_class, "<" if self.little_endian else ">")
        (
            _e_type, e_machine, _e_version, _e_entry, e_phoff, e_shoff, _e_flags, _e_ehsize,
            e_phentsize, e_phnum, e_shentsize, e_shnum, _e_shstrndx,
        ) = r.unpack(lay.ehdr, 16, "ELF header")
        name = _EM_NAMES.get(e_machine, f"EM_{e_machine}")
        if name in ("riscv", "loongarch", "mips"):
            name += "64" if self.elf_class == 64 else "32"
        self.machine = name

        sections = self._read_sections(r, lay, e_shoff, e_shentsize, e_shnum)
        if e_phnum == _PN_XNUM and sections:
            e_phnum = self._section0_info  # real count lives in section 0's sh_info
        segments = self._read_segments(r, lay, e_phoff, e_phentsize, e_phnum)
        self._file_segments = [s for s in segments if s.type == _PT_LOAD]
        self.load_segments = [LoadSegment(s.vaddr, s.memsz, s.flags) for s in self._file_segments]

        self.build_id = self._read_build_id(r, sections, segments)

        symtabs = [s for s in sections if s.type == _SHT_SYMTAB]
        dynsyms = [s for s in sections if s.type == _SHT_DYNSYM]
        self.has_symtab = bool(symtabs)
        self._fields = lay.sym_fields
        for sec in symtabs + dynsyms:
            self._read_symbols(r, lay, sections, sec)

    def _read_sections(
        self, r: _Reader, lay: _Layout, shoff: int, shentsize: int, shnum: int
    ) -> List[_Section]:
        if shoff == 0:
            return []  # no section headers (stripped with sstrip, or a core file)
        if shentsize != lay.shdr.size:
            raise r.fail(f"section header size is {shentsize}, expected {lay.shdr.size}")
        first = r.unpack(lay.shdr, shoff, "section header 0")
        self._section0_info = first[7]
        if shnum == 0:
            shnum = first[5]  # more than SHN_LORESERVE sections: the count is in sh_size
        r.check(shoff, shnum * shentsize, f"section header table ({shnum} entries)")
        out = []
        for i, sh in enumerate(lay.shdr.iter_unpack(r.buf[shoff : shoff + shnum * shentsize])):
            _name, typ, _flags, _addr, off, size, link, _info, align, entsize = sh
            out.append(_Section(i, typ, off, size, link, align, entsize))
        return out

    def _read_segments(
        self, r: _Reader, lay: _Layout, phoff: int, phentsize: int, phnum: int
    ) -> List[_Segment]:
        if phoff == 0 or phnum == 0:
            return []
        if phentsize != lay.phdr.size:
            raise r.fail(f"program header size is {phentsize}, expected {lay.phdr.size}")
        r.check(phoff, phnum * phentsize, f"program header table ({phnum} entries)")
        out = []
        for ph in lay.phdr.iter_unpack(r.buf[phoff : phoff + phnum * phentsize]):
            if self.elf_class == 64:
                typ, flags, off, vaddr, _pa, filesz, memsz, align = ph
            else:
                typ, off, vaddr, _pa, filesz, memsz, flags, align = ph
            out.append(_Segment(typ, flags, off, vaddr, filesz, memsz, align))
        return out

    def _read_build_id(
        self, r: _Reader, sections: List[_Section], segments: List[_Segment]
    ) -> Optional[bytes]:
        # Section headers when there are any (they also cover non-allocated notes), else PT_NOTE.
        if sections:
            areas = [(s.offset, s.size, s.align) for s in sections if s.type == _SHT_NOTE]
        else:
            areas = [(s.offset, s.filesz, s.align) for s in segments if s.type == _PT_NOTE]
        order = "<" if self.little_endian else ">"
        nhdr = struct.Struct(order + "III")
        for offset, size, align in areas:
            r.check(offset, size, "note area")
            align = 8 if align == 8 else 4
            pos, end = offset, offset + size
            while pos + 12 <= end:
                namesz, descsz, ntype = nhdr.unpack_from(r.buf, pos)
                # Padding is relative to the note's start (gABI; 8 for .note.gnu.property).
                name_at = pos + 12
                desc_at = pos + _align_up(12 + namesz, align)
                if desc_at + descsz > end:
                    raise r.fail(f"note at file offset {pos:#x} overruns its note area")
                if ntype == _NT_GNU_BUILD_ID and r.buf[name_at : name_at + namesz] == b"GNU\0":
                    return r.buf[desc_at : desc_at + descsz]
                pos += _align_up(desc_at - pos + descsz, align)
        return None

    def _read_symbols(
        self, r: _Reader, lay: _Layout, sections: List[_Section], sec: _Section
    ) -> None:
        what = ".symtab" if sec.type == _SHT_SYMTAB else ".dynsym"
        entsize = lay.sym.size
        if sec.entsize != entsize:
            raise r.fail(f"{what} entry size is {sec.entsize}, expected {entsize}")
        if sec.size % entsize:
            raise r.fail(f"{what} size {sec.size} is not a multiple of its entry size {entsize}")
        if not 0 < sec.link < len(sections) or sections[sec.link].type != _SHT_STRTAB:
            raise r.fail(f"{what} links to section {sec.link}, which is not a string table")
        strsec = sections[sec.link]
        table = r.take(sec.offset, sec.size, what)
        strtab = r.take(strsec.offset, strsec.size, f"string table of {what}")
        shndx_table = self._shndx_table(r, sections, sec)
        column = _name_column(table, entsize, self.little_endian, lay.sym_name_only)
        names = _names_at(strtab, column, self._wanted)
        name_i, _info_i, shndx_i, _value_i, _size_i = lay.sym_fields

        if self._wanted is not None:
            # Decode only the entries whose st_name is the offset of a wanted name.
            unpack_from = lay.sym.unpack_from
            hits = compress(count(), map(names.__contains__, column))
            indexed = [(i, unpack_from(table, i * entsize)) for i in hits]
        else:
            indexed = enumerate(lay.sym.iter_unpack(table))
            bad = set(column).difference(names)
            bad.discard(0)
            if bad:
                i = next(i for i, o in enumerate(column) if o in bad)
                raise r.fail(
                    f"{what} entry {i} has its name at string-table offset {column[i]:#x}, "
                    f"outside the string table or not NUL-terminated"
                )

        by_name = self._raw
        for i, entry in indexed:
            name = names.get(entry[name_i])
            if not name:
                continue  # no name: the null symbol, section symbols
            if entry[shndx_i] == _SHN_XINDEX and shndx_table is not None:
                fixed = list(entry)
                fixed[shndx_i] = _u32(shndx_table, i * 4, self.little_endian)
                entry = tuple(fixed)
            same = by_name.get(name)
            if same is None:
                by_name[name] = [entry]
            else:
                same.append(entry)

    def _shndx_table(self, r: _Reader, sections: List[_Section], sec: _Section) -> Optional[bytes]:
        for s in sections:
            if s.type == _SHT_SYMTAB_SHNDX and s.link == sec.index:
                r.check(s.offset, s.size, "extended section index table")
                if s.size < sec.size // sec.entsize * 4:
                    raise r.fail("extended section index table is shorter than its symbol table")
                return r.buf[s.offset : s.offset + s.size]
        return None

    # ------------------------------------------------------------------ queries

    def entries(self, name: str) -> Tuple[Symbol, ...]:
        """Every distinct entry for ``name`` in ``.symtab`` then ``.dynsym``, in file order."""
        self._check_wanted(name)
        got = self._cache.get(name)
        if got is None:
            name_i, info_i, shndx_i, value_i, size_i = self._fields
            syms: Dict[Symbol, None] = {}
            for e in self._raw.get(name, ()):
                info, shndx = e[info_i], e[shndx_i]
                sym = Symbol(
                    name=name,
                    value=e[value_i],
                    size=e[size_i],
                    kind=_STT_NAMES.get(info & 0xF, f"STT_{info & 0xF}"),
                    binding=_STB_NAMES.get(info >> 4, f"STB_{info >> 4}"),
                    section_index=shndx,
                    defined=shndx != _SHN_UNDEF,
                )
                syms[sym] = None  # a GLOBAL is in both tables; keep one copy
            got = self._cache[name] = tuple(syms)
        return got

    def find(self, name: str, *, allow_undefined: bool = False) -> Optional[Symbol]:
        """The symbol that defines ``name``, or None when the file does not define it.

        Raises :class:`ElfError` when ``name`` is defined at two different addresses (never
        guesses), or was not among the ``wanted`` names given to :meth:`read`.  With
        ``allow_undefined``, an undefined reference (an import) is returned when there is no
        definition.
        """
        entries = self.entries(name)
        if not entries:
            return None
        defined = [s for s in entries if s.defined and s.kind not in _NOT_ADDRESSES]
        if not defined:
            if allow_undefined:
                undefined = [s for s in entries if not s.defined]
                return undefined[0] if undefined else None
            return None
        values = sorted({s.value for s in defined})
        if len(values) > 1:
            where = ", ".join(
                f"{s.value:#x} ({s.binding} {s.kind}, size {s.size})" for s in defined
            )
            raise ElfError(
                f"{self.path}: symbol {name!r} is ambiguous: defined at {len(values)} different "
                f"addresses ({where}); refusing to guess which one is meant"
            )
        # Same address everywhere: prefer a typed, sized entry (FUNC over an assembler label).
        return min(defined, key=lambda s: (s.kind == "NOTYPE", s.size == 0))

    def lookup(self, name: str, *, allow_undefined: bool = False) -> Symbol:
        """Like :meth:`find`, but raises :class:`ElfError` when ``name`` is not defined."""
        sym = self.find(name, allow_undefined=allow_undefined)
        if sym is not None:
            return sym
        if self._raw.get(name):
            raise ElfError(
                f"{self.path}: symbol {name!r} is only an undefined reference here (it is imported "
                f"from another library), not defined in this file"
            )
        tables = ".symtab and .dynsym" if self.has_symtab else ".dynsym (the file has no .symtab)"
        raise ElfError(f"{self.path}: no symbol {name!r} in {tables}")

    def _check_wanted(self, name: str) -> None:
        if self._wanted is not None and name not in self._wanted:
            raise ElfError(
                f"{self.path}: symbol {name!r} was not among the `wanted` names passed to "
                f"ElfSymbols.read(); add it there"
            )

    @property
    def min_load_vaddr(self) -> int:
        """Lowest PT_LOAD ``p_vaddr``, rounded down to this system's page size.

        ``dladdr()``'s ``dli_fbase`` is where that page was mapped, so
        ``dli_fbase - min_load_vaddr`` is the load bias to add to symbol values.
        """
        if not self.load_segments:
            raise ElfError(f"{self.path}: has no PT_LOAD segment, so it has no load address")
        low = min(s.vaddr for s in self.load_segments)
        return low & ~(mmap.PAGESIZE - 1)

    def file_offset_of(self, vaddr: int) -> int:
        """File offset of the byte at virtual address ``vaddr`` (an ``st_value``)."""
        for seg in self._file_segments:
            if seg.vaddr <= vaddr < seg.vaddr + seg.filesz:
                return seg.offset + (vaddr - seg.vaddr)
        raise ElfError(
            f"{self.path}: address {vaddr:#x} is not backed by the file in any PT_LOAD segment"
        )

    def read_bytes(self, vaddr: int, size: int) -> bytes:
        """``size`` bytes of the file at virtual address ``vaddr`` (e.g. a function's code).

        Reopens the file; the range must lie in the file-backed part of one PT_LOAD segment.
        """
        if size < 0:
            raise ValueError("size must not be negative")
        offset = self.file_offset_of(vaddr)
        if size and self.file_offset_of(vaddr + size - 1) != offset + size - 1:
            raise ElfError(f"{self.path}: {size} bytes at {vaddr:#x} span two segments")
        try:
            with open(self.path, "rb") as f:
                f.seek(offset)
                data = f.read(size)
        except OSError as exc:
            raise ElfError(f"{self.path}: cannot read ELF file: {exc.strerror or exc}") from exc
        if len(data) != size:
            raise ElfError(f"{self.path}: file is shorter than when it was read (changed on disk?)")
        return data

    def __repr__(self) -> str:
        return (
            f"<ElfSymbols {self.path!r} {self.machine} ELF{self.elf_class} "
            f"{'symtab' if self.has_symtab else 'no symtab'}, {len(self._raw)} names>"
        )


_ARRAY_U32 = "I" if array("I").itemsize == 4 else ("L" if array("L").itemsize == 4 else None)


def _name_column(
    table: bytes, entsize: int, little: bool, name_only: struct.Struct
) -> Sequence[int]:
    """``st_name`` of every entry of a symbol table (it is the first 4 bytes of each entry)."""
    if _ARRAY_U32 is None:
        return [n for (n,) in name_only.iter_unpack(table)]
    words = array(_ARRAY_U32)
    words.frombytes(table)  # entsize is 16 or 24, so the table is whole 4-byte words
    if little != (sys.byteorder == "little"):
        words.byteswap()
    return words[:: entsize // 4]


def _names_at(
    strtab: bytes, offsets: Sequence[int], wanted: Optional[FrozenSet[str]]
) -> Dict[int, str]:
    """Map each string-table offset in ``offsets`` to its NUL-terminated string.

    With ``wanted``, only offsets whose string is a wanted name are kept.  Offsets that point past
    the table or at an unterminated string are left out.

    Cost: one split of the table plus a few C-level passes; no per-symbol Python work.
    """
    text: Union[str, bytes]
    if strtab.isascii():
        text, nul = strtab.decode("ascii"), "\0"
        want = wanted
    else:
        text, nul = strtab, b"\0"
        want = None if wanted is None else frozenset(
            n.encode("utf-8", "surrogateescape") for n in wanted
        )
    parts = text.split(nul)
    # The last piece is either empty (the table ends with NUL, as it should) or an unterminated
    # string, which is not a name.
    parts.pop()
    starts = list(accumulate(map((1).__add__, map(len, parts)), initial=0))
    if want is None:
        found = dict(zip(starts, parts))
    else:
        found = dict(compress(zip(starts, parts), map(want.__contains__, parts)))

    # Usually every st_name is the start of a string.  Some linkers share tails ("SSL_CTX_new"
    # pointing into "_cffi_d_SSL_CTX_new"); such offsets are resolved one by one.
    start_set = set(starts)
    if not start_set.issuperset(offsets):
        size = len(strtab)
        for o in set(offsets).difference(start_set):
            if o >= size:
                continue
            end = text.find(nul, o)
            if end != -1 and (want is None or text[o:end] in want):
                found[o] = text[o:end]

    if isinstance(text, bytes):
        return {o: raw.decode("utf-8", "surrogateescape") for o, raw in found.items()}
    return found


def _align_up(n: int, align: int) -> int:
    return (n + align - 1) & ~(align - 1)


def _u32(buf: bytes, offset: int, little: bool) -> int:
    return int.from_bytes(buf[offset : offset + 4], "little" if little else "big")


# ---------------------------------------------------------------------- code checks

_X86_ENDBR64 = b"\xf3\x0f\x1e\xfa"
_A64_BTI_C = 0xD503245F
_A64_BTI_JC = 0xD50324DF
_MASK64 = (1 << 64) - 1


def decode_tail_jump(machine: str, code: bytes, vaddr: int) -> Optional[int]:
    """If ``code`` starts with a single unconditional direct jump, return its target address.

    ``code`` is the first bytes of a function located at ``vaddr`` (pass ``st_size`` bytes).
    Recognised:

    * x86_64: ``jmp rel32`` (``e9``) or ``jmp rel8`` (``eb``), optionally after ``endbr64``;
    * aarch64: ``b imm26``, optionally after ``bti c`` (or ``bti jc``).

    Anything else (including indirect jumps, calls, or too few bytes) returns None.  cryptography's
    cffi wrappers ``_cffi_d_X`` are exactly ``jmp X``, which is how sesscache checks that a symbol
    address it read from the file really is the function cffi calls.
    """
    code = bytes(code)
    if machine == "x86_64":
        pos = 4 if code[:4] == _X86_ENDBR64 else 0
        op = code[pos : pos + 1]
        if op == b"\xe9" and len(code) >= pos + 5:
            rel = int.from_bytes(code[pos + 1 : pos + 5], "little", signed=True)
            return (vaddr + pos + 5 + rel) & _MASK64
        if op == b"\xeb" and len(code) >= pos + 2:
            rel = int.from_bytes(code[pos + 1 : pos + 2], "little", signed=True)
            return (vaddr + pos + 2 + rel) & _MASK64
        return None
    if machine == "aarch64":
        pos = 0
        if len(code) >= 4 and int.from_bytes(code[:4], "little") in (_A64_BTI_C, _A64_BTI_JC):
            pos = 4
        if len(code) < pos + 4:
            return None
        insn = int.from_bytes(code[pos : pos + 4], "little")  # A64 code is always little-endian
        if insn & 0xFC000000 != 0x14000000:
            return None
        imm26 = insn & 0x03FFFFFF
        if imm26 & 0x02000000:
            imm26 -= 1 << 26
        return (vaddr + pos + imm26 * 4) & _MASK64
    return None
