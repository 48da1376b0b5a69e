"""A ClientHello scan in C for :mod:`sesscache.aio`'s per-connection hot path.

Declarations only: the C, and why it is as it is, lives in ``csrc/clienthello.c``.
"""
from . import c_source

INCLUDES = ""

TYPES = """
static const int SC_HELLO_COMPLETE;
static const int SC_HELLO_MORE;
static const int SC_HELLO_INVALID;
static const int SC_HELLO_NOMEM;
"""

FUNCTIONS = """
int sc_hello_scan_feed(sc_hello_scan *, const char *, size_t);
"""

CUSTOMIZATIONS = c_source('clienthello.c')
