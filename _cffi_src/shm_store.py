"""The shared-memory store's segment, in C: one fixed-size table in a /dev/shm file that
every process of the host maps, with robust striped locks taken with a deadline.

Declarations only: the C, and why it is as it is, lives in ``csrc/shm_store.c``.
"""
from . import c_source

INCLUDES = ""

TYPES = """
static const int SC_SHM_E_ARGS;
static const int SC_SHM_E_OPEN;
static const int SC_SHM_E_OWNER;
static const int SC_SHM_E_MODE;
static const int SC_SHM_E_SPACE;
static const int SC_SHM_E_IN_USE;
static const int SC_SHM_E_MAP;
static const int SC_SHM_E_BUSY;
static const int SC_SHM_E_MUTEX;
static const int SC_SHM_VERSION;
static const unsigned long long SC_SHM_DEFAULT_SIZE;
static const int SC_SHM_DEFAULT_ENTRY_CAP;
"""

FUNCTIONS = """
sc_shm *sc_shm_open(const char *, unsigned long long, unsigned int, double, sc_shm_report *);
void sc_shm_close(sc_shm *);
int sc_shm_set(sc_shm *, const unsigned char *, size_t, const unsigned char *, size_t, double, double);
int sc_shm_read(sc_shm *, const unsigned char *, size_t, double, int, unsigned char *, size_t, size_t *);
int sc_shm_delete(sc_shm *, const unsigned char *, size_t);
long long sc_shm_clear(sc_shm *, int, double);
void sc_shm_describe(sc_shm *, sc_shm_info *);
long long sc_shm_slots_for(unsigned long long, unsigned int);
int sc_shm_hold_for_test(sc_shm *, const unsigned char *, size_t, double);
sc_mem *sc_mem_over_shm(sc_shm *);
int sc_shm_use_pthread(void *const *, int);
"""

CUSTOMIZATIONS = c_source('shm_store.c')
