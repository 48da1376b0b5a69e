"""Which libssl copy owns a context, and how its function table was verified."""
from __future__ import annotations

import os
import ssl

import pytest

import sesscache
from sesscache import UnsupportedContext
from sesscache._binding import copies as _instances
from sesscache._binding import lib


def test_linked_instance_is_the_test_modules_libssl_and_reports_its_version():
    """sesscache.testing's module links the row's libssl; the core, which links none,
    resolves it through the dynamic linker like any other shared copy."""
    from sesscache import testing

    linked = testing.linked_instance()
    assert linked.origin == "dynamic"
    assert linked.version.startswith("OpenSSL ")
    assert os.path.exists(linked.path)
    expected = os.environ.get("SESSCACHE_EXPECT_LINKED_OPENSSL")
    if expected:
        assert expected in linked.version, f"this row should run on {expected}: {linked.version}"


def test_stdlib_context_is_bound_to_the_libssl_of_the_ssl_module():
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    instance = sesscache.libssl_info(ctx)
    # The ssl module reports the version of the library it runs on.
    assert instance.version == ssl.OPENSSL_VERSION
    assert instance.origin == "dynamic"
    # libssl_info() without a context names that same copy: sesscache has none of its own.
    assert instance is sesscache.libssl_info()


def test_pyopenssl_context_is_bound_and_verified():
    from OpenSSL import SSL
    from cryptography.hazmat.bindings.openssl.binding import Binding

    instance = sesscache.libssl_info(SSL.Context(SSL.TLS_METHOD))
    reported = Binding.ffi.string(Binding.lib.OpenSSL_version(0)).decode()
    assert instance.version == reported
    if instance.origin == "bundled":
        assert len(instance.verified_by) == 3, instance.verified_by
        assert any("jump to the named functions" in check for check in instance.verified_by)
    expected = os.environ.get("SESSCACHE_EXPECT_BUNDLED_OPENSSL")
    if expected:
        assert instance.origin == "bundled"
        assert expected in instance.version, f"this row should run on {expected}: {instance.version}"


def test_resolution_is_cached_per_copy():
    from OpenSSL import SSL

    a = sesscache.libssl_info(SSL.Context(SSL.TLS_METHOD))
    b = sesscache.libssl_info(SSL.Context(SSL.TLS_METHOD))
    assert a is b


class _Shifted:
    """A real symbol table with every address moved: what a stale file on disk, or a
    wrong guess, would give."""

    def __init__(self, real, shift):
        self.real, self.shift = real, shift
        self.has_symtab, self.machine, self.min_load_vaddr = real.has_symtab, real.machine, real.min_load_vaddr

    def find(self, name):
        symbol = self.real.find(name)
        if symbol is None:
            return None
        import dataclasses
        return dataclasses.replace(symbol, value=symbol.value + self.shift)


def _bundled_pieces():
    from OpenSSL import SSL  # noqa: F401

    instance = sesscache.libssl_info(SSL.Context(SSL.TLS_METHOD))
    if instance.origin != "bundled":
        pytest.skip("this cryptography uses a shared libssl: nothing to verify by symbols")
    cffi_ffi, cffi_lib = _instances._cryptography_binding()
    symbols = _instances._elf.ElfSymbols.read(instance.path, wanted=_instances._wanted_symbols())
    _path, base = _instances._dladdr(cffi_ffi.addressof(cffi_lib, "SSL_CTX_get_options"))
    return instance, symbols, base, cffi_ffi, cffi_lib


@pytest.mark.parametrize("shift", [16, -4096, 1 << 20])
def test_wrong_symbol_addresses_are_refused(shift):
    """Verification catches a symbol table that does not match the running image; the
    spare slot's table is left empty and nothing is called through it."""
    instance, symbols, base, cffi_ffi, cffi_lib = _bundled_pieces()
    spare = lib.SC_MAX_INSTANCES - 1
    with pytest.raises(UnsupportedContext, match="could not verify the OpenSSL bundled"):
        _instances._fill_bundled(spare, _Shifted(symbols, shift), instance.path, base, cffi_ffi, cffi_lib)
    assert lib.sc_api_slot(spare).SSL_CTX_sess_set_new_cb == _instances.ffi.NULL


def test_wrong_load_base_is_refused():
    instance, symbols, base, cffi_ffi, cffi_lib = _bundled_pieces()
    spare = lib.SC_MAX_INSTANCES - 1
    with pytest.raises(UnsupportedContext, match="not the loaded one"):
        _instances._fill_bundled(spare, symbols, instance.path, base + 4096, cffi_ffi, cffi_lib)


def test_stripped_file_is_refused():
    instance, symbols, base, cffi_ffi, cffi_lib = _bundled_pieces()

    class Stripped(_Shifted):
        pass

    stripped = Stripped(symbols, 0)
    stripped.has_symtab = False
    with pytest.raises(UnsupportedContext, match="stripped") as raised:
        _instances._fill_bundled(lib.SC_MAX_INSTANCES - 1, stripped, instance.path, base, cffi_ffi, cffi_lib)
    assert "pip install --no-binary cryptography" in str(raised.value)


def test_unloaded_library_is_refused():
    with pytest.raises(UnsupportedContext, match="not loaded"):
        _instances.instance_for_library_handle("/nonexistent/libssl.so.9")


@pytest.mark.parametrize("thing", [None, 42, "ctx", object(), ssl])
def test_non_contexts_are_refused_with_what_to_pass(thing):
    with pytest.raises(UnsupportedContext, match="OpenSSL.SSL.Context .*or an ssl.SSLContext"):
        sesscache.set_new_session_callback(thing, lambda *a: None)


def test_foreign_session_callbacks_are_not_replaced(certs):
    """A context whose session callbacks another library installed is not silently
    taken over (pyOpenSSL itself sets none; set one through cryptography directly)."""
    from OpenSSL import SSL
    from cryptography.hazmat.bindings.openssl.binding import Binding

    ctx = SSL.Context(SSL.TLS_SERVER_METHOD)
    instance = sesscache.libssl_info(ctx)

    @Binding.ffi.callback("int(SSL *, SSL_SESSION *)")
    def foreign(ssl, session):
        return 0

    setter = _instances.ffi.cast("void *", _instances.address(instance.api.SSL_CTX_sess_set_new_cb))
    fn = Binding.ffi.cast("void (*)(SSL_CTX *, int (*)(SSL *, SSL_SESSION *))", _instances.address(setter))
    fn(ctx._context, foreign)
    with pytest.raises(sesscache.ConfigurationError, match="did not install"):
        sesscache.set_new_session_callback(ctx, lambda *a: None)
    fn(ctx._context, Binding.ffi.NULL)
