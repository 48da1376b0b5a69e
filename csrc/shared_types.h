/* Types that Python reads and C writes, declared once: build_ffi.py hands this file to
 * cffi's cdef (with its preprocessor lines dropped) and the C files include it. Plain C
 * only, no macros inside the declarations, so cffi's parser reads it as the compiler does. */
#ifndef SC_SHARED_TYPES_H
#define SC_SHARED_TYPES_H

#include <stddef.h>

/* The in-process store (memory_store.c) and what sc_mem_describe reports of it. */
typedef struct sc_mem sc_mem;
typedef struct {
    long long entries;
    long long bytes;
    long long evictions;
    long long expired;
    long long decoded; /* decoded sessions kept beside their DER (memory_store.c) */
} sc_mem_info;

/* The cache's C fast path (fast_path.c) and its counters. */
typedef struct sc_fast sc_fast;
typedef struct {
    long long hits;
    long long misses;
    long long stores;
    long long stateless;
    long long handed_over;
    long long from_first;
    long long rejected;
} sc_fast_counts;

/* A ring of sealing keys (seal.c). */
typedef struct sc_seal sc_seal;

/* A ticket-key ring (ticket_keys.c). */
typedef struct sc_tk_ring sc_tk_ring;

/* What sc_describe_new reports about a new session (session_io.c).
 * bound: 1 when the session's id context is the one sesscache bound its connection to
 * (name and certificate), 0 when it is another, -1 when the context is not bound. */
typedef struct {
    unsigned char id[32];
    unsigned int id_len;
    unsigned char sid_ctx[32];
    unsigned int sid_ctx_len;
    int protocol;
    int stateless;
    long long made;
    long timeout;
    long long origin;
    void *certificate;
    int der_len;
    char name[256];
    int name_len;
    int bound;
} sc_new_facts;

/* The state of one ClientHello scan (clienthello.c). */
typedef struct {
    /* the walk, committed at whole records; zero it before the first call */
    size_t pos;
    size_t got;
    size_t total;
    size_t records;
    unsigned char hdr[4];
    int hdrlen;
    /* set by a call */
    size_t needed;
    size_t consumed;
    int offers_tls13;
    int sid_len;
    unsigned char sid[32];
    int sni_len;
    char sni[256];
    int nkeys;
    int key_lens[2];
    unsigned char keys[2][32];
} sc_hello_scan;

/* The shared-memory store (shm_store.c): what sc_shm_open reports when it fails, and
 * what sc_shm_describe reads of a segment's header and counters. */
typedef struct sc_shm sc_shm;
typedef struct {
    int code; /* SC_SHM_E_* of _cffi_src/shm_store.py, 0: opened */
    int errnum;
    unsigned int owner;
    unsigned int mode;
    unsigned long long size; /* of a segment found in use with another layout */
    unsigned int version;
    unsigned int entry_cap;
    char libc[16];
} sc_shm_report;
typedef struct {
    unsigned long long size;
    long long slots;
    long long stripes;
    long long entry_cap;
    long long entries;
    long long bytes;
    long long hits;
    long long misses;
    long long stores;
    long long evictions;
    long long expired;
    long long lock_timeouts;
    long long repairs;
    long long torn;
    long long rebuilds;
} sc_shm_info;

#endif
