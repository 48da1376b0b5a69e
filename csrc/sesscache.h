/* What the C files of sesscache's core module share.
 *
 * build_ffi.py compiles the files of this directory as ONE translation unit (cffi's API
 * mode makes one extension from one source), in the order of _cffi_src.C_FILES, after
 * OpenSSL's headers and the per-copy function table `sc_api` (generated from
 * _cffi_src/libssl_api.py's API list: the one list of libssl functions sesscache calls).
 * Functions private to the module are `static` and declared here when another file calls
 * them; functions Python calls are declared in the cdef of _cffi_src/<area>.py.
 *
 * The files, by job:
 *   slots.c          per-copy tables, ex_data hooks, the slot trampolines of the session
 *                    callbacks, installing and inspecting hooks
 *   context_state.c  per-context state (sc_ctx_state), the TLS 1.3 lifetime cap
 *   sni_binding.c    session id contexts pinned or bound to the SNI name and certificate,
 *                    the ClientHello callback, SHA-256 through the copy's EVP
 *   session_io.c     session DER in and out, times, the new-session facts and the checks
 *                    on an offered session
 *   memory_store.c   the in-process store's table
 *   shm_store.c      the shared-memory store's segment (one table for every process)
 *   fast_path.c      the cache's common cases without Python
 *   new_session_ring.c  new sessions handed to a network store's writer thread without Python
 *   at_fork.c        fork() and the tables' locks
 *   clienthello.c    the ClientHello scan of sesscache.aio (self-contained)
 *   ticket_keys.c    the session-ticket key callback over a key ring
 *   seal.c           sealing store values with AES-GCM (sealing.py's format) in C
 *   id_stamps.c      session ids that carry their issue time
 *   api_table.c      the function table's required column
 *   client_offer.c   clients: offer a stored session at handshake start (info callback)
 *   attach.c         SessionCache.attach and detach, each one call from a settings struct
 *                    (attach.h)
 * envelope.h holds the store key and envelope format, shared_types.h the types Python
 * reads. */
#ifndef SC_SESSCACHE_H
#define SC_SESSCACHE_H

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "envelope.h"
#include "shared_types.h"

#define SC_MAX_INSTANCES 8

/* SSL_CTX_free (and with it the remove callback and the ex_data free hook) can run while
 * Python is unwinding with an exception set, when the context's last reference goes with
 * a frame's locals. Calling into Python then fails (Python 3.9 reports a SystemError and
 * the call is lost), so the pending exception is set aside around the call. */
#define SC_KEEPING_PENDING_ERROR(call)                 \
    do {                                               \
        PyGILState_STATE sc_gil = PyGILState_Ensure(); \
        PyObject *sc_type, *sc_value, *sc_tb;          \
        PyErr_Fetch(&sc_type, &sc_value, &sc_tb);      \
        call;                                          \
        PyErr_Restore(sc_type, sc_value, sc_tb);       \
        PyGILState_Release(sc_gil);                    \
    } while (0)

/* cffi defines the extern "Python" functions after this code: declare them first. */
static int sc_py_new_session(int, SSL_CTX *, SSL *, SSL_SESSION *);
static SSL_SESSION *sc_py_get_session(int, SSL_CTX *, SSL *, const unsigned char *, int);
static void sc_py_remove_session(int, SSL_CTX *, SSL_SESSION *);
static void sc_py_context_freed(int, SSL_CTX *);

/* --- per-copy tables (slots.c) ---------------------------------------------------- */

static sc_api sc_apis[SC_MAX_INSTANCES];
static int sc_ready[SC_MAX_INSTANCES];
static int sc_ctx_idx[SC_MAX_INSTANCES];
static int sc_ssl_idx[SC_MAX_INSTANCES];
/* On SSL: the fast path that counted the refusal of the session this connection's
 * ClientHello offers, until a lookup takes the count over (sc_fast_note_offer). */
static int sc_offer_idx[SC_MAX_INSTANCES];
static int sc_sess_idx[SC_MAX_INSTANCES];

static int sc_slot_ok(int slot);
static SSL_CTX *sc_session_ctx(int slot, SSL *ssl);

/* Every callback sesscache gives libssl, and every entry point that parses bytes it was
 * handed, brackets its libssl calls with these: errors those calls push (a DER that does
 * not parse, a failed allocation) are sesscache's business, handled where they happen;
 * left on the queue, the next unrelated call on the thread (SSL_get_error after
 * SSL_do_handshake, pyOpenSSL's or CPython's error check) would report them as its own
 * failure. ERR_pop_to_mark pops exactly what came after the mark: errors already queued
 * stay. (ERR_set_mark on an empty queue sets no mark; the pop then empties the queue,
 * which is again what it found.) */
static void sc_err_mark(const sc_api *a);
static void sc_err_pop(const sc_api *a);

/* --- per-context state (context_state.c) ----------------------------------------- */

#define SC_PIN_NONE    0 /* only the ClientHello record of the session context */
#define SC_PIN_CONTEXT 1 /* set the configured session id context on each connection */
#define SC_PIN_BOUND   2 /* set one bound to the SNI name and the certificate */

typedef struct sc_ctx_state {
    int slot;
    SSL_CTX *ctx;
    int pin; /* SC_PIN_*; atomic */
    unsigned int sid_len;
    unsigned char sid[32]; /* the configured session id context */
    long lifetime;         /* TLS 1.3 cap in seconds, 0: none; atomic */
    struct sc_fast *fast;  /* the cache's C fast path, or NULL; atomic */
    /* The fingerprint of the context's certificate, recomputed when it changes (a reload),
     * under a sequence lock rather than a mutex: a lock held by another thread at fork()
     * would stay held in the child forever. */
    unsigned int cert_seq;                       /* odd while a thread rewrites the two below */
    const void *cert;                            /* the certificate cert_fp is of */
    unsigned char cert_fp[SC_ENVELOPE_CERT_LEN]; /* SHA-256 of its DER, first 16 bytes */
} sc_ctx_state;

static sc_ctx_state *sc_state_of(int slot, SSL_CTX *ctx);
static sc_ctx_state *sc_state_for(int slot, SSL_CTX *ctx);

/* --- SNI-bound session id contexts (sni_binding.c) --------------------------------- */

static int sc_client_hello_cb(SSL *ssl, int *alert, void *arg);
static void sc_state_cert_fp(sc_ctx_state *st, unsigned char *out);
static void sc_state_bound_sid(sc_ctx_state *st, const char *name, int name_len,
                               unsigned char *out);

/* --- sessions (session_io.c) ------------------------------------------------------- */

#define SC_OFFER_OK              0
#define SC_OFFER_NOT_DER         1
#define SC_OFFER_OTHER_ID        2
#define SC_OFFER_OTHER_CONTEXT   3
#define SC_OFFER_UNREADABLE_NAME 4
#define SC_OFFER_OTHER_NAME      5
#define SC_OFFER_EXPIRED         6

long long sc_session_origin(int slot, SSL_SESSION *sess);
int sc_session_set_origin(int slot, SSL_SESSION *sess, long long origin);
long long sc_session_time(int slot, SSL_SESSION *sess);
int sc_session_der(int slot, SSL_SESSION *sess, unsigned char *buf, int buflen);
SSL_SESSION *sc_session_from_der(int slot, const unsigned char *der, long len);
int sc_requested_server_name(int slot, SSL *ssl, char *out, int outlen);
int sc_describe_new(int slot, SSL *ssl, SSL_SESSION *sess, SSL_CTX *session_ctx, sc_new_facts *out,
                    unsigned char *der, int derlen);
SSL_SESSION *sc_parse_offered(int slot, SSL *ssl, const unsigned char *der, long derlen,
                              const unsigned char *id, int id_len, const unsigned char *sid_ctx,
                              unsigned int sid_ctx_len, const char *made_for, int made_for_len,
                              long long origin, long long now, int *reason);
static SSL_SESSION *sc_check_offered(int slot, SSL *ssl, SSL_SESSION *sess, const unsigned char *id,
                                     int id_len, const unsigned char *sid_ctx,
                                     unsigned int sid_ctx_len, const char *made_for,
                                     int made_for_len, long long origin, long long now,
                                     int *reason);
static int sc_same_name(const char *a, int alen, const char *b, int blen);

/* --- the in-process store (memory_store.c) ----------------------------------------- */

double sc_monotonic(void);
double sc_wall_clock(void);
int sc_mem_set(sc_mem *m, const unsigned char *key, size_t klen, const unsigned char *value,
               size_t vlen, double ttl, double now);
static int sc_mem_copy_into(sc_mem *m, const unsigned char *key, size_t klen, double now,
                            unsigned char *out, size_t cap, size_t *len);
static int sc_mem_lookup(sc_mem *m, const unsigned char *key, size_t klen, double now,
                         unsigned char *out, size_t cap, size_t *vlen, int slot,
                         SSL_SESSION **decoded);
static void sc_mem_keep_decoded(sc_mem *m, const unsigned char *key, size_t klen,
                                const unsigned char *value, size_t vlen, int slot,
                                SSL_SESSION *sess);

/* --- the shared-memory store (shm_store.c): an sc_mem made by sc_mem_over_shm hands
 * every read and write to it, so the fast path serves it as it serves a MemoryStore ----- */

int sc_shm_set(sc_shm *s, const unsigned char *key, size_t klen, const unsigned char *value,
               size_t vlen, double ttl, double now);
static int sc_shm_lookup(sc_shm *s, const unsigned char *key, size_t klen, double now,
                         unsigned char *out, size_t cap, size_t *vlen, int slot,
                         SSL_SESSION **decoded);
static void sc_shm_keep_decoded(sc_shm *s, const unsigned char *key, size_t klen,
                                const unsigned char *value, size_t vlen, int slot,
                                SSL_SESSION *sess);

/* --- sealing (seal.c): 0 when it cannot, and the fast path hands the event over --- */

int sc_seal_supported(int slot);
static void sc_seal_fork_child(void);
size_t sc_seal_blob(int slot, sc_seal *s, const unsigned char *skey, size_t sklen,
                    const unsigned char *plain, size_t plen, unsigned char *out, size_t cap);
size_t sc_seal_open(int slot, sc_seal *s, const unsigned char *skey, size_t sklen,
                    const unsigned char *sealed, size_t slen, unsigned char *out, size_t cap);

/* --- the fast path (fast_path.c) --------------------------------------------------- */

static int sc_fast_on_new(int, SSL *, SSL_SESSION *, SSL_CTX *);
static int sc_fast_on_get(int, SSL *, const unsigned char *, int, SSL_CTX *, SSL_SESSION **);
static void sc_fast_note_offer(sc_ctx_state *, SSL *, const char *, int, const unsigned char *);
static void sc_fast_uncount_refused_offer(int, SSL *);

/* --- the ClientHello bytes OpenSSL hands a callback (clienthello.c) ---------------- */

static int sc_server_name_of_extension(const unsigned char *ext, size_t extlen, char *out,
                                       int outlen);
static int sc_psk_identity_of_extension(const unsigned char *ext, size_t extlen, unsigned char *id);

#endif
