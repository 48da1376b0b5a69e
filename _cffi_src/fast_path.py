"""SessionCache's common cases in C, for a cache over the in-process store.

Declarations only: the C, and why it is as it is, lives in ``csrc/fast_path.c``.
"""
from . import c_source

INCLUDES = ""

TYPES = """
static const int SC_FAST_NEW_IN_PYTHON;
static const int SC_FAST_MISS_IN_PYTHON;
"""

FUNCTIONS = """
sc_fast *sc_fast_new(sc_mem *, const unsigned char *, unsigned int, double, long long, int,
                     sc_mem *, int);
int sc_fast_enable(int, SSL_CTX *, sc_fast *);
void sc_fast_disable(int, SSL_CTX *, sc_fast *);
void sc_fast_stateless_noted(sc_fast *);
void sc_fast_seal_with(sc_fast *, sc_seal *);
void sc_fast_counts_of(sc_fast *, sc_fast_counts *);
int sc_fast_start_journal(sc_fast *, int);
void sc_fast_use_ring(sc_fast *, sc_ring *);
int sc_fast_drain(sc_fast *, unsigned char *, unsigned char *, double *, int);
void sc_fast_time_events(int);
int sc_fast_timed_events(int, unsigned int *, int);
"""

CUSTOMIZATIONS = c_source('fast_path.c')
