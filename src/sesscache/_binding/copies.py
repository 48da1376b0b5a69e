"""Which copy of libssl owns a pointer, and the verified function table for each copy.

A process can hold several copies of OpenSSL at once:

* a **dynamic** one: a shared libssl some extension links. The stdlib ``_ssl`` module's
  is the usual one (``stdlib_instance()``); ``sesscache.testing``'s linked module is
  another. Its addresses come from the dynamic linker (``dlsym`` in the lookup scope of
  the extension that links it), which is authoritative.
* a **bundled** one: ``cryptography`` wheels link their own OpenSSL statically into
  their extension (``_rust.abi3.so``; ``_openssl.abi3.so`` in older wheels). Its cffi
  ``lib`` does not export the session-callback setters, so their addresses come from the
  file's ELF symbol table, and are only used once verified against the running image.

sesscache's compiled module links no libssl of its own: every copy it hooks is one
already in the process, found at run time. The copies share function names but not
memory: a session or context from one passed to another's functions corrupts memory. So
each copy gets a *slot*: its own function table in C and its own trampolines, and a
pointer is only ever used with the slot of the copy that made it. Anything that cannot be
verified is refused, never guessed.
"""
from __future__ import annotations

import os
import sys
import threading
from dataclasses import dataclass, field
from typing import Callable, Dict, Optional, Tuple

from . import dynlink as _dynlink
from . import elf as _elf
from . import MAX_INSTANCES, address, ffi, lib
from ..errors import BindingError, UnsupportedContext

# Fields of the C function table, in order, and the ones every copy must have: both read
# back from the compiled module, which build_ffi.py made from _cffi_src/libssl_api.API
# (the one list of the functions and of their `required` column).
_API_FIELDS = [name for name, _ in ffi.typeof("sc_api").fields]
_REQUIRED = frozenset(name for index, name in enumerate(_API_FIELDS) if lib.sc_api_required(index) == 1)
# Functions cryptography's cffi lib exports that the table also holds: their cffi
# wrappers ``_cffi_d_<name>`` tie the symbol table to the running image.
_WRAPPER_CHECKS = (
    "SSL_CTX_get_options", "SSL_SESSION_free", "i2d_SSL_SESSION", "d2i_SSL_SESSION",
    "SSL_get_SSL_CTX", "OpenSSL_version_num", "SSL_CTX_set_session_id_context",
    "SSL_get_session", "SSL_SESSION_get_id", "SSL_CTX_get_verify_mode",
)


@dataclass(frozen=True)
class LibsslInstance:
    """One copy of libssl in this process, with a verified function table."""

    slot: int
    origin: str  #: "dynamic" (a shared libssl, via the dynamic linker) or "bundled"
    path: str  #: the file that holds this copy
    version: str  #: OpenSSL_version(OPENSSL_VERSION), e.g. "OpenSSL 3.0.19 27 Jan 2026"
    version_number: int  #: OpenSSL_version_num()
    verified_by: Tuple[str, ...] = field(default=())  #: the checks that passed

    @property
    def api(self):
        return lib.sc_api_slot(self.slot)

    def describe(self) -> str:
        return f"{self.version} ({self.origin}, {self.path})"


_lock = threading.RLock()
_by_key: Dict[Tuple[str, int], LibsslInstance] = {}
_slots: Dict[int, LibsslInstance] = {}


def _dladdr(pointer) -> Tuple[str, int]:
    return _dynlink.file_of(address(pointer))


def _version_of(slot: int) -> Tuple[str, int]:
    api = lib.sc_api_slot(slot)
    return ffi.string(api.OpenSSL_version(lib.OPENSSL_VERSION)).decode(), int(api.OpenSSL_version_num())


def _register(key: Tuple[str, int], origin: str, path: str, fill: Callable[[int], Tuple[str, ...]]) -> LibsslInstance:
    with _lock:
        if key in _by_key:
            return _by_key[key]
        slot = len(_slots)
        if slot >= MAX_INSTANCES:
            raise BindingError(
                f"more than {MAX_INSTANCES} copies of libssl are loaded in this process; "
                "sesscache has trampolines for that many. Load fewer TLS libraries.")
        checks = fill(slot)
        missing = lib.sc_api_first_missing(slot)
        if missing >= 0:  # _fill_from refuses first; this is the C side reading the same list
            _wipe(slot)
            raise BindingError(f"the libssl at {path} left the required {_API_FIELDS[missing]} unresolved")
        if not lib.sc_register_ex_indices(slot):
            _wipe(slot)
            raise BindingError(f"could not register ex_data indices in the libssl at {path}")
        version, number = _version_of(slot)
        instance = LibsslInstance(slot, origin, path, version, number, checks)
        _by_key[key] = instance
        _slots[slot] = instance
        return instance


def _wipe(slot: int) -> None:
    ffi.memmove(lib.sc_api_slot(slot), b"\0" * ffi.sizeof("sc_api"), ffi.sizeof("sc_api"))


def instance_in_slot(slot: int) -> LibsslInstance:
    return _slots[slot]


_stdlib: Optional[LibsslInstance] = None


def stdlib_instance() -> LibsslInstance:
    """The libssl the stdlib ``ssl`` module runs on: what ``_ssl`` resolves, asked of the
    dynamic linker in ``_ssl``'s own lookup scope (the main program when ``_ssl`` is built
    into the interpreter)."""
    global _stdlib
    if _stdlib is None:
        import _ssl

        _stdlib = instance_for_library_handle(getattr(_ssl, "__file__", None))
    return _stdlib


def instance_for_library_handle(path: Optional[str]) -> LibsslInstance:
    """The libssl copy an already loaded shared object (``path``) calls into.

    Asks the dynamic linker which ``SSL_CTX_ctrl`` the object resolves, in its own
    lookup scope: that is the copy its pointers belong to. ``None`` is the main program.
    """
    where = path or "the Python executable"
    with _dynlink.loaded(path) as handle:
        if handle is None:
            raise UnsupportedContext(f"{where} is not loaded in this process")
        ctrl = _dynlink.symbol(handle, "SSL_CTX_ctrl")
        if not ctrl:
            raise UnsupportedContext(
                f"{where} does not resolve OpenSSL's SSL_CTX_ctrl through the dynamic linker: it "
                "carries its own, private OpenSSL (a statically linked build, as in "
                "python-build-standalone or uv-managed Pythons). sesscache cannot reach that "
                "copy safely. Use a Python linked to the system OpenSSL (a distribution's "
                "python3, or pyenv built against libssl-dev), or pyOpenSSL contexts.")
        lib_path, base = _dynlink.file_of(ctrl)

        def fill(slot: int) -> Tuple[str, ...]:
            _fill_from(slot, lambda name: _dynlink.symbol(handle, name) or None, lib_path)
            return ("resolved by the dynamic linker (dlsym)",)

        return _register((lib_path, base), "dynamic", lib_path, fill)


def _fill_from(slot: int, resolve: Callable[[str], Optional[int]], where: str) -> None:
    api = lib.sc_api_slot(slot)
    missing = []
    resolved = {}
    for name in _API_FIELDS:
        addr = resolve(name)
        if not addr:
            if name in _REQUIRED:
                missing.append(name)
            continue
        resolved[name] = addr
    if missing:
        raise UnsupportedContext(
            f"the OpenSSL in {where} lacks functions sesscache needs: {', '.join(missing)}. "
            "It is older than 1.1.1 or built without them; use OpenSSL 1.1.1 or newer.")
    for name, addr in resolved.items():
        setattr(api, name, ffi.cast(ffi.typeof(getattr(api, name)), addr))


# --- cryptography's bundled OpenSSL ------------------------------------------------

def _cryptography_binding():
    """cryptography's FFI and its *raw* cffi ``Lib`` (``Binding.lib`` is a plain module
    copy of it, without cffi's ``addressof`` support)."""
    try:
        from cryptography.hazmat.bindings.openssl import binding
    except ImportError as exc:
        raise UnsupportedContext(
            f"cannot import cryptography's OpenSSL binding ({exc}); pyOpenSSL contexts need it") from exc
    candidates = [getattr(getattr(binding, "_openssl", None), "lib", None),  # cryptography >= 35
                  getattr(binding, "lib", None)]                             # cryptography 3.x
    for candidate in candidates:
        if type(candidate).__name__ == "Lib":
            return binding.Binding.ffi, candidate
    raise UnsupportedContext(
        "this cryptography version keeps its cffi module where sesscache does not look; "
        f"cryptography {getattr(sys.modules.get('cryptography'), '__version__', '?')} is not "
        "supported yet (supported: 3.4 and later)")


def instance_for_cryptography() -> LibsslInstance:
    """The libssl copy behind ``cryptography``'s cffi ``lib`` (what pyOpenSSL uses).

    Asked for every pyOpenSSL context (each attach): after the first answer, verified as
    below, it is that answer. cryptography's extension is loaded once per process and never
    unloaded, so the copy behind it cannot change; a failure is not remembered (each call
    tries again, and says why)."""
    known = _cryptography_instance
    if known is not None:
        return known
    return _first_instance_for_cryptography()


_cryptography_instance: Optional[LibsslInstance] = None


def _first_instance_for_cryptography() -> LibsslInstance:
    global _cryptography_instance
    cffi_ffi, cffi_lib = _cryptography_binding()
    wrapper = address(cffi_ffi.addressof(cffi_lib, "SSL_CTX_get_options"))
    known = _by_cryptography_wrapper.get(wrapper)
    if known is None:
        known = _instance_for_cryptography(cffi_ffi, cffi_lib, wrapper)
        _by_cryptography_wrapper[wrapper] = known
    _cryptography_instance = known
    return known


#: The copy behind cryptography's cffi lib, by the address of one of its wrappers (the
#: same for the life of the process).
_by_cryptography_wrapper: Dict[int, LibsslInstance] = {}


def _instance_for_cryptography(cffi_ffi, cffi_lib, wrapper: int) -> LibsslInstance:
    path, base = _dladdr(wrapper)
    with _lock:
        if (path, base) in _by_key:
            return _by_key[(path, base)]
    try:
        symbols = _elf.ElfSymbols.read(path, wanted=_wanted_symbols())
    except _elf.ElfError as exc:
        raise UnsupportedContext(
            f"cannot read the symbol table of {path} ({exc}). " + _BUNDLED_ADVICE) from exc
    target = symbols.find("SSL_CTX_get_options")
    if target is None or not target.defined:
        # The extension calls a shared libssl: the dynamic linker knows which.
        return instance_for_library_handle(path)

    def fill(slot: int) -> Tuple[str, ...]:
        return _fill_bundled(slot, symbols, path, base, cffi_ffi, cffi_lib)

    return _register((path, base), "bundled", path, fill)


_BUNDLED_ADVICE = (
    "To use sesscache with pyOpenSSL anyway, install a cryptography that links the "
    "system OpenSSL (`pip install --no-binary cryptography cryptography`, with "
    "libssl-dev and a Rust toolchain, or your distribution's python3-cryptography), or "
    "use the stdlib ssl module.")


def _wanted_symbols():
    return set(_API_FIELDS) | {"_cffi_d_" + name for name in _WRAPPER_CHECKS}


def _fill_bundled(slot, symbols, path, base, cffi_ffi, cffi_lib) -> Tuple[str, ...]:
    """Fill the table from the ELF symbols of a static OpenSSL, after proving them right.

    1. The load bias: every cffi wrapper ``_cffi_d_X`` found in the symbol table, moved
       by the bias, must be exactly the address cryptography's ``lib`` reports for X.
       That ties the file we parsed to the image the process runs.
    2. Each wrapper must be a single jump to the symbol named X (decoded from the bytes
       in memory): the names in the table are the functions the wrappers call.
    3. Called through the table, ``OpenSSL_version_num`` answers what cryptography's
       own ``lib`` answers.
    """
    def refuse(reason: str):
        raise UnsupportedContext(
            f"could not verify the OpenSSL bundled in {path}: {reason}. sesscache refuses to "
            "guess addresses in another copy of OpenSSL. " + _BUNDLED_ADVICE)

    if not symbols.has_symtab:
        refuse("the file has no symbol table (stripped)")
    bias = base - symbols.min_load_vaddr
    wrappers = 0
    jumps = 0
    for name in _WRAPPER_CHECKS:
        if not hasattr(cffi_lib, name):
            continue
        wrapper_sym = symbols.find("_cffi_d_" + name)
        target_sym = symbols.find(name)
        if wrapper_sym is None or target_sym is None:
            continue
        expected = address(cffi_ffi.addressof(cffi_lib, name))
        if bias + wrapper_sym.value != expected:
            refuse(f"_cffi_d_{name} is at {bias + wrapper_sym.value:#x} by the symbol table "
                   f"but at {expected:#x} in memory (the file on disk is not the loaded one?)")
        wrappers += 1
        code = ffi.buffer(ffi.cast("char *", expected), max(1, min(wrapper_sym.size, 16)))[:]
        jump = _elf.decode_tail_jump(symbols.machine, code, expected)
        if jump is None:
            continue
        if jump != bias + target_sym.value:
            refuse(f"_cffi_d_{name} jumps to {jump:#x}, not to {name} at {bias + target_sym.value:#x}")
        jumps += 1
    if wrappers < 3:
        refuse(f"only {wrappers} cffi wrappers could be matched (need 3)")
    if jumps < 3:
        refuse(f"the cffi wrappers are not plain jumps on {symbols.machine}, so which function "
               "each symbol name denotes cannot be checked")

    def resolve(name: str) -> Optional[int]:
        sym = symbols.find(name)
        if sym is None or not sym.defined or sym.kind != "FUNC":
            return None
        return bias + sym.value

    try:
        _fill_from(slot, resolve, path)
    except _elf.ElfError as exc:
        refuse(str(exc))
    api = lib.sc_api_slot(slot)
    if int(api.OpenSSL_version_num()) != int(cffi_lib.OpenSSL_version_num()):
        _wipe(slot)
        refuse("OpenSSL_version_num called through the resolved table disagrees with cryptography's")
    return (f"{wrappers} cffi wrappers at their symbol-table addresses",
            f"{jumps} wrappers jump to the named functions ({symbols.machine})",
            "OpenSSL_version_num agrees")


def all_instances() -> Tuple[LibsslInstance, ...]:
    with _lock:
        return tuple(_slots[s] for s in sorted(_slots))
