"""One list of libssl functions: ``_cffi_src/libssl_api.API`` and its ``required`` column
decide both the compiled function table and which functions a copy of libssl may lack.

Each copy's table is filled from the real system libssl (through the stdlib ``_ssl``
module's lookup scope), with one function held back to stand for an older copy.
"""
from __future__ import annotations

import _ssl

import pytest

from _cffi_src import libssl_api
from sesscache import UnsupportedContext
from sesscache._binding import copies as _instances, dynlink as _dynlink
from sesscache._binding import ffi, lib

NAMES = [name for _ret, name, _args, _required in libssl_api.API]
OPTIONAL = [name for _ret, name, _args, required in libssl_api.API if not required]
REQUIRED = [name for _ret, name, _args, required in libssl_api.API if required]
SPARE = lib.SC_MAX_INSTANCES - 1


def _fill_spare_without(name: str) -> None:
    with _dynlink.loaded(_ssl.__file__) as handle:
        _instances._fill_from(SPARE, lambda n: None if n == name else (_dynlink.symbol(handle, n) or None),
                              "the system libssl, less " + name)


@pytest.fixture
def spare_slot():
    yield lib.sc_api_slot(SPARE)
    _instances._wipe(SPARE)


def test_the_compiled_table_is_the_list_with_its_required_column():
    assert [name for name, _ in ffi.typeof("sc_api").fields] == NAMES
    assert [lib.sc_api_required(i) for i in range(len(NAMES))] == [
        int(required) for *_, required in libssl_api.API]
    assert lib.sc_api_required(len(NAMES)) == -1


@pytest.mark.parametrize("name", OPTIONAL)
def test_a_copy_without_an_optional_function_is_accepted_with_a_null_entry(spare_slot, name):
    _fill_spare_without(name)
    assert getattr(spare_slot, name) == ffi.NULL  # what the C code's NULL checks test
    assert spare_slot.SSL_CTX_sess_set_new_cb != ffi.NULL
    assert lib.sc_api_first_missing(SPARE) == -1


@pytest.mark.parametrize("name", REQUIRED)
def test_a_copy_without_a_required_function_is_refused_by_name(spare_slot, name):
    with pytest.raises(UnsupportedContext, match=rf"lacks functions sesscache needs: {name}\. "):
        _fill_spare_without(name)
    assert spare_slot.SSL_CTX_sess_set_new_cb == ffi.NULL  # nothing half-filled


def test_the_c_side_finds_a_required_entry_left_null(spare_slot):
    _fill_spare_without("")
    assert lib.sc_api_first_missing(SPARE) == -1
    spare_slot.SSL_SESSION_up_ref = ffi.NULL
    assert lib.sc_api_first_missing(SPARE) == NAMES.index("SSL_SESSION_up_ref")
