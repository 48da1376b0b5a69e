"""The C side of shared session-ticket keys: OpenSSL's ticket key callback over a key ring.

Declarations only: the C, and why it is as it is, lives in ``csrc/ticket_keys.c``.
"""
from . import c_source

INCLUDES = ""

TYPES = """
typedef struct sc_tk_ring sc_tk_ring;

static const int SC_TK_MAX_KEYS;
static const int SC_TK_KEY_BYTES;
static const int SC_TK_ROLE_CURRENT;
static const int SC_TK_ROLE_PREVIOUS;
static const int SC_TK_ROLE_NEXT;

static const int SC_TK_ISSUED;
static const int SC_TK_ACCEPTED_CURRENT;
static const int SC_TK_ACCEPTED_OLD;
static const int SC_TK_REJECTED_CURRENT;
static const int SC_TK_REJECTED_OLD;
static const int SC_TK_UNKNOWN;
static const int SC_TK_EXPIRED;
static const int SC_TK_NO_KEY;
static const int SC_TK_ERRORS;
static const int SC_TK_COUNTERS;
"""

FUNCTIONS = """
sc_tk_ring *sc_tk_ring_new(void);
void sc_tk_ring_release(sc_tk_ring *);
int sc_tk_ring_load(sc_tk_ring *, const unsigned char *, const int *, const long long *, int);
int sc_tk_ring_names(sc_tk_ring *, unsigned char *, int *, int);
void sc_tk_counters(sc_tk_ring *, long long *, int);
int sc_tk_attach(int, SSL_CTX *, sc_tk_ring *);
int sc_tk_detach(int, SSL_CTX *);
sc_tk_ring *sc_tk_ring_of(int, SSL_CTX *);
int sc_tk_supported(int);
void sc_tk_live(long *, long *);
"""

CUSTOMIZATIONS = c_source('ticket_keys.c')
