"""C declarations for sesscache's cffi module, one small module per C area.

Each module has the four parts pyca/cryptography's ``_cffi_src`` uses: ``INCLUDES`` (C
``#include`` lines), ``TYPES`` (cdef types and constants), ``FUNCTIONS`` (cdef
prototypes) and ``CUSTOMIZATIONS`` (C code compiled into the module). ``build_ffi.py``
composes them in the order of ``MODULES``.
"""
MODULES = ["libssl_api", "trampolines", "memory_store", "fast_path", "testing_api", "clienthello",
           "ticket_keys"]
