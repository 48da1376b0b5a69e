"""C declarations for sesscache's cffi module, one small module per C area.

Each module has the four parts pyca/cryptography's ``_cffi_src`` uses: ``INCLUDES`` (C
``#include`` lines), ``TYPES`` (cdef types and constants), ``FUNCTIONS`` (cdef
prototypes) and ``CUSTOMIZATIONS`` (C code compiled into the module). ``build_ffi.py``
composes them in the order of ``MODULES`` into the core module (which links no libssl),
and ``TESTING_MODULES`` into the separately built, linked test module.
"""
MODULES = ["libssl_api", "trampolines", "memory_store", "fast_path", "at_fork", "clienthello",
           "ticket_keys", "session_ids"]
TESTING_MODULES = ["testing_api"]
