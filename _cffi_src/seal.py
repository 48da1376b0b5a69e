"""Sealing store values with AES-GCM in C (sesscache/sealing.py's format), for the fast path.

Declarations only: the C, and why it is as it is, lives in ``csrc/seal.c``; the format's
numbers in ``csrc/envelope.h``.
"""
from . import c_source

INCLUDES = ""

TYPES = """
static const int SC_SEAL_VERSION;
static const int SC_SEAL_KEY_ID_LEN;
static const int SC_SEAL_NONCE_AT;
static const int SC_SEAL_NONCE_LEN;
static const int SC_SEAL_HEADER_SIZE;
static const int SC_SEAL_TAG_LEN;
static const int SC_SEAL_OVERHEAD;
static const int SC_SEAL_MAX_KEYS;

static const int SC_SEAL_SEALED;
static const int SC_SEAL_OPENED;
static const int SC_SEAL_REFUSED;
static const int SC_SEAL_ERRORS;
static const int SC_SEAL_COUNTERS;
"""

FUNCTIONS = """
sc_seal *sc_seal_new(const unsigned char *, const int *, const unsigned char *, int);
void sc_seal_retire(sc_seal *);
void sc_seal_counts_of(sc_seal *, long long *, int);
int sc_seal_supported(int);
size_t sc_seal_blob(int, sc_seal *, const unsigned char *, size_t, const unsigned char *, size_t,
                    unsigned char *, size_t);
size_t sc_seal_open(int, sc_seal *, const unsigned char *, size_t, const unsigned char *, size_t,
                    unsigned char *, size_t);
"""

CUSTOMIZATIONS = c_source('seal.c')
