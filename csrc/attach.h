/* What SessionCache.attach installs on a context, in one struct: Python fills one per
 * cache and session id context (and cache mode), and every context attached with them gets
 * it in one C call (attach.c). Plain C only: build_ffi.py hands this file to cffi's cdef too
 * (its preprocessor lines dropped). */
#ifndef SC_ATTACH_H
#define SC_ATTACH_H

typedef struct {
    unsigned char sid[32]; /* the configured session id context */
    unsigned int sid_len;  /* 1 to 32 */
    long cache_mode;       /* SSL_CTX_set_session_cache_mode's */
    long lifetime;         /* seconds: the context's timeout at most, and the TLS 1.3 cap */
    sc_fast *fast;         /* the cache's C fast path, or NULL */
} sc_attach_settings;

#endif
