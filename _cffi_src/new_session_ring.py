"""New sessions on their way to a network store, copied by the C fast path into a bounded
ring that the store's writer thread drains in batches: no Python on a new-session event.

Declarations only: the C, and why it is as it is, lives in ``csrc/new_session_ring.c``.
"""
from . import c_source

INCLUDES = ""

TYPES = """
typedef struct sc_ring sc_ring;
"""

FUNCTIONS = """
sc_ring *sc_ring_new(int);
void sc_ring_use_setclock(void *);
int sc_ring_value_max(void);
int sc_ring_take(sc_ring *, unsigned char *, unsigned int *, unsigned char *, unsigned int *,
                 double *, int);
int sc_ring_wait(sc_ring *, double);
void sc_ring_wake(sc_ring *);
int sc_ring_count(sc_ring *);
void sc_ring_counts_of(sc_ring *, long long *, long long *, long long *);
void sc_ring_close(sc_ring *);
void sc_ring_after_fork(sc_ring *);
"""

CUSTOMIZATIONS = c_source('new_session_ring.c')
