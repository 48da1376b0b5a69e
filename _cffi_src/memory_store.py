"""The in-process session store, in C: a hash table with LRU order and per-entry expiry.

Declarations only: the C, and why it is as it is, lives in ``csrc/memory_store.c``.
"""
from . import c_source

INCLUDES = ""

TYPES = ""

FUNCTIONS = """
sc_mem *sc_mem_new(long long, long long);
void sc_mem_close(sc_mem *, int);
void sc_mem_close_forever(sc_mem *);
int sc_mem_set(sc_mem *, const unsigned char *, size_t, const unsigned char *, size_t, double, double);
unsigned char *sc_mem_get(sc_mem *, const unsigned char *, size_t, double, int, size_t *);
void sc_mem_free_copy(unsigned char *, size_t);
int sc_mem_delete(sc_mem *, const unsigned char *, size_t);
long long sc_mem_purge_expired(sc_mem *, double);
void sc_mem_describe(sc_mem *, sc_mem_info *);
size_t sc_mem_dump(sc_mem *, unsigned char *, size_t);
double sc_monotonic(void);
double sc_wall_clock(void);
"""

CUSTOMIZATIONS = c_source('memory_store.c')
