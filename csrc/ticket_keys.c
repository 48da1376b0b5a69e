/* The C side of shared session-ticket keys: OpenSSL's ticket key callback over a key ring.
 *
 * OpenSSL encrypts TLS 1.2 session tickets and TLS 1.3 stateless tickets with a key it
 * makes at random per SSL_CTX, so a ticket resumes only where it was issued. The ticket
 * key callback (SSL_CTX_set_tlsext_ticket_key_evp_cb on 3.0+, the deprecated HMAC one
 * through SSL_CTX_callback_ctrl(ctx, 72, cb) on 1.1.1) hands OpenSSL the key instead:
 * here, from a *ring* that Python fills from the store, off the handshake path.
 *
 * * A ring (sc_tk_ring) is one TicketKeys object's keys and counters, in C memory,
 *   behind a mutex: handshakes read it, a refresh swaps its keys. It is
 *   reference counted: one reference for the Python object, one per attached context.
 *   Retired key bytes are zeroed before the memory is reused or freed.
 * * Each attached context gets a small state of its own (sc_tk_ctx: its copy's slot
 *   and its ring), hung on the context's ex_data; the ex_data free hook releases it when
 *   OpenSSL frees the SSL_CTX. Nothing here is shared with the session trampolines.
 * * The callback has no user argument, so there is one per slot (generated below). It
 *   finds the state from the connection: SSL_get_SSL_CTX (the context after an SNI
 *   switch), else the context recorded when the SSL was made
 *   (sc_recorded_session_ctx; OpenSSL runs the callback for the *session* context,
 *   which it does not expose). Every EVP/HMAC/RAND function is
 *   called through the same slot's table, so a bundled copy's contexts never meet the
 *   linked copy's functions.
 *
 * Per key: a 16-byte name (sent in every ticket, so not secret), a 32-byte HMAC-SHA256
 * key and a 32-byte AES-256-CBC key: the 80 bytes OpenSSL uses for its own keys.
 *
 * Counting resumption honestly: the decrypt call only says the key name was found; the
 * HMAC check, the session's own checks and TLS 1.3's binder come later. So the decrypt
 * call counts nothing: it leaves a mark on the connection, settled once, as *accepted*
 * (resumed) or *rejected* (a tampered or unusable ticket under a known key, or a handshake
 * that never finished): at the next encrypt call when it is certain there (a full
 * handshake issues a ticket after the client's Finished: rejected; TLS 1.3 issues one
 * after a resumption's Finished: accepted), else when OpenSSL frees the connection (the
 * mark's ex_data free hook: resumed and the handshake finished, or not). */
#include "sesscache.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#define SC_TK_MAX_KEYS      16
#define SC_TK_NAME_BYTES    16
#define SC_TK_KEY_BYTES     80 /* name 16, HMAC 32, AES 32: OpenSSL's own layout */
#define SC_TK_ROLE_CURRENT  1
#define SC_TK_ROLE_PREVIOUS 2
#define SC_TK_ROLE_NEXT     3

#define SC_TK_ISSUED           0
#define SC_TK_ACCEPTED_CURRENT 1
#define SC_TK_ACCEPTED_OLD     2
#define SC_TK_REJECTED_CURRENT 3
#define SC_TK_REJECTED_OLD     4
#define SC_TK_UNKNOWN          5
#define SC_TK_EXPIRED          6
#define SC_TK_NO_KEY           7
#define SC_TK_ERRORS           8
#define SC_TK_COUNTERS         9

/* The connection's mark between a decrypt and the next encrypt (see the module doc). */
#define SC_TK_MARK_CURRENT ((void *)1)
#define SC_TK_MARK_OLD     ((void *)2)

typedef struct {
    unsigned char bytes[SC_TK_KEY_BYTES];
    int role;
    long long not_after; /* Unix time; refused for decryption from then on */
} sc_tk_key;

struct sc_tk_ring {
    pthread_mutex_t lock;           /* (a mutex, not a rwlock: glibc's rwlocks need 2.34) */
    struct sc_tk_ring *prev, *next; /* every live ring, for fork (sc_tk_fork_*) */
    int refs;
    int count;
    sc_tk_key keys[SC_TK_MAX_KEYS];
    long long counters[SC_TK_COUNTERS];
};

typedef struct {
    int slot;
    int active;       /* 0 after a detach */
    sc_tk_ring *ring; /* one reference, released when OpenSSL frees the context */
} sc_tk_ctx;

/* Per slot: ex_data indices and the fetched cipher (3.0+), set up once. */
static int sc_tk_ready[SC_MAX_INSTANCES];
static int sc_tk_ctx_idx[SC_MAX_INSTANCES];
static int sc_tk_mark_idx[SC_MAX_INSTANCES];
static void *sc_tk_cipher[SC_MAX_INSTANCES];
static pthread_mutex_t sc_tk_setup_lock = PTHREAD_MUTEX_INITIALIZER;

/* OSSL_PARAM's public layout (3.0+), spelled out so this compiles against 1.1.1 headers. */
typedef struct {
    const char *key;
    unsigned int data_type;
    void *data;
    size_t data_size;
    size_t return_size;
} sc_tk_param;
#define SC_TK_PARAM_UTF8_STRING  4
#define SC_TK_PARAM_OCTET_STRING 5

/* Rings and per-context states alive: tests check both go back to zero. */
static long sc_tk_live_rings, sc_tk_live_states;

void sc_tk_live(long *rings, long *states)
{
    *rings = __atomic_load_n(&sc_tk_live_rings, __ATOMIC_SEQ_CST);
    *states = __atomic_load_n(&sc_tk_live_states, __ATOMIC_SEQ_CST);
}

static void sc_tk_wipe(void *p, size_t n)
{
    volatile unsigned char *v = (volatile unsigned char *)p;
    while (n--)
        *v++ = 0;
}

static void sc_tk_count(sc_tk_ring *ring, int which)
{
    __atomic_add_fetch(&ring->counters[which], 1, __ATOMIC_RELAXED);
}

/* --- fork ------------------------------------------------------------------------------
 * A ring's lock held by another thread at fork() (a handshake reading the keys) would stay
 * held in the child for ever: as for the C tables (at_fork.py), every ring lock is taken
 * before the fork and freed on both sides, and made anew in the child. */
static sc_tk_ring *sc_tk_rings; /* every live ring, under sc_tk_setup_lock */
static int sc_tk_fork_state;    /* 0 not yet, 1 registering, 2 done */

static void sc_tk_fork_prepare(void)
{
    sc_tk_ring *ring;
    pthread_mutex_lock(&sc_tk_setup_lock);
    for (ring = sc_tk_rings; ring != NULL; ring = ring->next)
        pthread_mutex_lock(&ring->lock);
}

static void sc_tk_fork_parent(void)
{
    sc_tk_ring *ring;
    for (ring = sc_tk_rings; ring != NULL; ring = ring->next)
        pthread_mutex_unlock(&ring->lock);
    pthread_mutex_unlock(&sc_tk_setup_lock);
}

static void sc_tk_fork_child(void)
{
    sc_tk_ring *ring;
    for (ring = sc_tk_rings; ring != NULL; ring = ring->next)
        pthread_mutex_init(&ring->lock, NULL);
    pthread_mutex_init(&sc_tk_setup_lock, NULL);
}

static void sc_tk_fork_install(void)
{
    int expected = 0;
    if (__atomic_compare_exchange_n(&sc_tk_fork_state, &expected, 1, 0, __ATOMIC_ACQ_REL,
                                    __ATOMIC_ACQUIRE)) {
        pthread_atfork(sc_tk_fork_prepare, sc_tk_fork_parent, sc_tk_fork_child);
        __atomic_store_n(&sc_tk_fork_state, 2, __ATOMIC_RELEASE);
    }
}

/* --- the ring ------------------------------------------------------------------------ */

sc_tk_ring *sc_tk_ring_new(void)
{
    sc_tk_ring *ring = (sc_tk_ring *)calloc(1, sizeof(*ring));
    if (ring == NULL)
        return NULL;
    if (pthread_mutex_init(&ring->lock, NULL) != 0) {
        free(ring);
        return NULL;
    }
    ring->refs = 1;
    sc_tk_fork_install();
    pthread_mutex_lock(&sc_tk_setup_lock);
    ring->next = sc_tk_rings;
    if (sc_tk_rings != NULL)
        sc_tk_rings->prev = ring;
    sc_tk_rings = ring;
    pthread_mutex_unlock(&sc_tk_setup_lock);
    __atomic_add_fetch(&sc_tk_live_rings, 1, __ATOMIC_SEQ_CST);
    return ring;
}

static void sc_tk_ring_retain(sc_tk_ring *ring)
{
    __atomic_add_fetch(&ring->refs, 1, __ATOMIC_ACQ_REL);
}

void sc_tk_ring_release(sc_tk_ring *ring)
{
    if (ring == NULL || __atomic_sub_fetch(&ring->refs, 1, __ATOMIC_ACQ_REL) != 0)
        return;
    pthread_mutex_lock(&sc_tk_setup_lock);
    if (ring->prev != NULL)
        ring->prev->next = ring->next;
    else
        sc_tk_rings = ring->next;
    if (ring->next != NULL)
        ring->next->prev = ring->prev;
    pthread_mutex_unlock(&sc_tk_setup_lock);
    sc_tk_wipe(ring->keys, sizeof(ring->keys));
    pthread_mutex_destroy(&ring->lock);
    free(ring);
    __atomic_sub_fetch(&sc_tk_live_rings, 1, __ATOMIC_SEQ_CST);
}

/* Replace the ring's keys: count keys of SC_TK_KEY_BYTES each in material, with their
 * roles and expiry times. At most one key may have the current role. The old key bytes
 * are zeroed. Returns 1, or 0 for a bad argument (the ring is then left as it was). */
int sc_tk_ring_load(sc_tk_ring *ring, const unsigned char *material, const int *roles,
                    const long long *not_after, int count)
{
    int i, current = 0;
    if (ring == NULL || count < 0 || count > SC_TK_MAX_KEYS)
        return 0;
    for (i = 0; i < count; i++) {
        if (roles[i] < SC_TK_ROLE_CURRENT || roles[i] > SC_TK_ROLE_NEXT)
            return 0;
        current += roles[i] == SC_TK_ROLE_CURRENT;
    }
    if (current > 1)
        return 0;
    pthread_mutex_lock(&ring->lock);
    sc_tk_wipe(ring->keys, sizeof(ring->keys));
    for (i = 0; i < count; i++) {
        memcpy(ring->keys[i].bytes, material + (size_t)i * SC_TK_KEY_BYTES, SC_TK_KEY_BYTES);
        ring->keys[i].role = roles[i];
        ring->keys[i].not_after = not_after[i];
    }
    ring->count = count;
    pthread_mutex_unlock(&ring->lock);
    return 1;
}

/* The names (not the keys) in the ring, with their roles: for tests and diagnostics. */
int sc_tk_ring_names(sc_tk_ring *ring, unsigned char *names, int *roles, int room)
{
    int i, n;
    pthread_mutex_lock(&ring->lock);
    n = ring->count < room ? ring->count : room;
    for (i = 0; i < n; i++) {
        memcpy(names + (size_t)i * SC_TK_NAME_BYTES, ring->keys[i].bytes, SC_TK_NAME_BYTES);
        roles[i] = ring->keys[i].role;
    }
    pthread_mutex_unlock(&ring->lock);
    return n;
}

void sc_tk_counters(sc_tk_ring *ring, long long *out, int n)
{
    int i;
    for (i = 0; i < n && i < SC_TK_COUNTERS; i++)
        out[i] = __atomic_load_n(&ring->counters[i], __ATOMIC_RELAXED);
}

/* --- ex_data hooks (argl carries the slot) ------------------------------------------- */

static void sc_tk_ctx_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl,
                           void *argp)
{
    sc_tk_ctx *state = (sc_tk_ctx *)ptr;
    (void)parent;
    (void)ad;
    (void)idx;
    (void)argl;
    (void)argp;
    if (state == NULL)
        return;
    sc_tk_ring_release(state->ring);
    free(state);
    __atomic_sub_fetch(&sc_tk_live_states, 1, __ATOMIC_SEQ_CST);
}

/* Count a marked connection once: accepted if it resumed (and its handshake finished,
 * where the copy tells), else rejected. */
static void sc_tk_settle(sc_tk_ring *ring, void *mark, int resumed)
{
    int old = mark == SC_TK_MARK_OLD;
    sc_tk_count(ring, resumed ? (old ? SC_TK_ACCEPTED_OLD : SC_TK_ACCEPTED_CURRENT)
                              : (old ? SC_TK_REJECTED_OLD : SC_TK_REJECTED_CURRENT));
}

static sc_tk_ctx *sc_tk_state(int slot, SSL *ssl);

/* The mark's ex_data free hook (argl carries the slot): OpenSSL frees ex_data first in
 * SSL_free (1.1.1 to 3.x), so the connection, its context and its session are whole. */
static void sc_tk_mark_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl,
                            void *argp)
{
    sc_api *a = &sc_apis[argl];
    sc_tk_ctx *state;
    (void)ad;
    (void)idx;
    (void)argp;
    if (ptr == NULL || parent == NULL)
        return;
    state = sc_tk_state((int)argl, (SSL *)parent);
    if (state != NULL)
        sc_tk_settle(
            state->ring, ptr,
            a->SSL_session_reused((SSL *)parent) &&
                (a->SSL_is_init_finished == NULL || a->SSL_is_init_finished((SSL *)parent)));
}

static int sc_tk_setup(int slot)
{
    sc_api *a;
    int ok;
    if (!sc_slot_ok(slot) || !sc_ready[slot])
        return 0;
    if (__atomic_load_n(&sc_tk_ready[slot], __ATOMIC_ACQUIRE))
        return 1;
    a = &sc_apis[slot];
    pthread_mutex_lock(&sc_tk_setup_lock);
    if (!sc_tk_ready[slot]) {
        sc_tk_ctx_idx[slot] =
            a->CRYPTO_get_ex_new_index(1, slot, NULL, NULL, NULL, (void *)sc_tk_ctx_free);
        sc_tk_mark_idx[slot] =
            a->CRYPTO_get_ex_new_index(0, slot, NULL, NULL, NULL, (void *)sc_tk_mark_free);
        /* 3.0+: fetch AES-256-CBC once, not on every ticket (EVP_aes_256_cbc would make
         * each EVP_*Init_ex fetch it again). 1.1.1: the static cipher object. */
        if (a->EVP_CIPHER_fetch != NULL)
            sc_tk_cipher[slot] = a->EVP_CIPHER_fetch(NULL, "AES-256-CBC", NULL);
        else if (a->EVP_aes_256_cbc != NULL)
            sc_tk_cipher[slot] = (void *)a->EVP_aes_256_cbc();
        ok = sc_tk_ctx_idx[slot] >= 0 && sc_tk_mark_idx[slot] >= 0 && sc_tk_cipher[slot] != NULL;
        __atomic_store_n(&sc_tk_ready[slot], ok, __ATOMIC_RELEASE);
    }
    pthread_mutex_unlock(&sc_tk_setup_lock);
    return sc_tk_ready[slot];
}

/* Which callback this copy can take: 2 = the EVP one (3.0+), 1 = the HMAC one through
 * SSL_CTX_callback_ctrl (1.1.1), 0 = neither (functions missing from the copy). */
int sc_tk_supported(int slot)
{
    sc_api *a;
    if (!sc_slot_ok(slot) || !sc_ready[slot])
        return 0;
    a = &sc_apis[slot];
    if (a->RAND_bytes == NULL || a->EVP_EncryptInit_ex == NULL || a->EVP_DecryptInit_ex == NULL ||
        (a->EVP_CIPHER_fetch == NULL && a->EVP_aes_256_cbc == NULL))
        return 0;
    if (a->SSL_CTX_set_tlsext_ticket_key_evp_cb != NULL && a->EVP_MAC_CTX_set_params != NULL)
        return 2;
    if (a->SSL_CTX_callback_ctrl != NULL && a->HMAC_Init_ex != NULL && a->EVP_sha256 != NULL)
        return 1;
    return 0;
}

/* --- the callback -------------------------------------------------------------------- */

static sc_tk_ctx *sc_tk_state(int slot, SSL *ssl)
{
    sc_api *a = &sc_apis[slot];
    SSL_CTX *ctx = a->SSL_get_SSL_CTX(ssl);
    sc_tk_ctx *state =
        ctx != NULL ? (sc_tk_ctx *)a->SSL_CTX_get_ex_data(ctx, sc_tk_ctx_idx[slot]) : NULL;
    if (state == NULL) {
        /* An SNI callback switched to a context without keys: the session context's, as
         * recorded when the SSL was made (trampolines.py; OpenSSL up to 3.x). */
        ctx = sc_recorded_session_ctx(slot, ssl);
        if (ctx != NULL)
            state = (sc_tk_ctx *)a->SSL_CTX_get_ex_data(ctx, sc_tk_ctx_idx[slot]);
    }
    return state;
}

static int sc_tk_mac_init(sc_api *a, int evp, void *hctx, const unsigned char *hmac_key)
{
    sc_tk_param params[3];
    static char digest[] = "SHA256";
    if (!evp)
        return a->HMAC_Init_ex(hctx, hmac_key, 32, a->EVP_sha256(), NULL) == 1;
    memset(params, 0, sizeof(params));
    params[0].key = "key";
    params[0].data_type = SC_TK_PARAM_OCTET_STRING;
    params[0].data = (void *)hmac_key;
    params[0].data_size = 32;
    params[0].return_size = (size_t)-1; /* OSSL_PARAM_UNMODIFIED */
    params[1].key = "digest";
    params[1].data_type = SC_TK_PARAM_UTF8_STRING;
    params[1].data = digest;
    params[1].data_size = sizeof(digest) - 1;
    params[1].return_size = (size_t)-1;
    return a->EVP_MAC_CTX_set_params(hctx, params) == 1;
}

static int sc_tk_encrypt(int slot, sc_tk_ring *ring, SSL *ssl, unsigned char *name,
                         unsigned char *iv, void *cctx, void *hctx, int evp)
{
    sc_api *a = &sc_apis[slot];
    void *mark = a->SSL_get_ex_data(ssl, sc_tk_mark_idx[slot]);
    const sc_tk_key *key = NULL;
    unsigned char throwaway[SC_TK_KEY_BYTES];
    const unsigned char *bytes;
    int i, rv;
    if (mark != NULL) {
        /* A ticket under a known key was decrypted on this connection, and OpenSSL now
         * issues a ticket: if the handshake did not resume, that ticket was refused; a
         * TLS 1.3 resumption has finished by now (tickets follow the client's Finished).
         * A TLS 1.2 renewal goes out before the client's Finished: settled at the free. */
        int reused = a->SSL_session_reused(ssl);
        if (!reused || a->SSL_version(ssl) == TLS1_3_VERSION) {
            a->SSL_set_ex_data(ssl, sc_tk_mark_idx[slot], NULL);
            sc_tk_settle(ring, mark, reused);
        }
    }
    if (a->RAND_bytes(iv, 16) != 1) {
        sc_tk_count(ring, SC_TK_ERRORS);
        return -1;
    }
    pthread_mutex_lock(&ring->lock);
    for (i = 0; i < ring->count; i++)
        if (ring->keys[i].role == SC_TK_ROLE_CURRENT)
            key = &ring->keys[i];
    /* Never encrypt under a key past its age (its refresh thread may be stuck). Returning
     * 0 ("no ticket") is not an option: OpenSSL 1.1.1 then writes a TLS 1.2-shaped empty
     * ticket into a TLS 1.3 handshake, which the client rejects (measured). So a random
     * key nobody holds: the ticket is valid on the wire and never decrypts anywhere. */
    if (key != NULL && (long long)time(NULL) >= key->not_after)
        key = NULL;
    if (key != NULL) {
        bytes = key->bytes;
    } else {
        pthread_mutex_unlock(&ring->lock);
        if (a->RAND_bytes(throwaway, sizeof(throwaway)) != 1) {
            sc_tk_count(ring, SC_TK_ERRORS);
            return -1;
        }
        bytes = throwaway;
    }
    memcpy(name, bytes, SC_TK_NAME_BYTES);
    rv = a->EVP_EncryptInit_ex(cctx, sc_tk_cipher[slot], NULL, bytes + 48, iv) == 1 &&
                 sc_tk_mac_init(a, evp, hctx, bytes + 16)
             ? 1
             : -1;
    if (key != NULL)
        pthread_mutex_unlock(&ring->lock);
    else
        sc_tk_wipe(throwaway, sizeof(throwaway));
    sc_tk_count(ring, rv != 1 ? SC_TK_ERRORS : key != NULL ? SC_TK_ISSUED : SC_TK_NO_KEY);
    return rv;
}

static int sc_tk_decrypt(int slot, sc_tk_ring *ring, SSL *ssl, const unsigned char *name,
                         const unsigned char *iv, void *cctx, void *hctx, int evp)
{
    sc_api *a = &sc_apis[slot];
    const sc_tk_key *key = NULL;
    int i, rv;
    pthread_mutex_lock(&ring->lock);
    for (i = 0; i < ring->count; i++)
        if (memcmp(ring->keys[i].bytes, name, SC_TK_NAME_BYTES) == 0)
            key = &ring->keys[i];
    if (key == NULL) {
        rv = 0;
        sc_tk_count(ring, SC_TK_UNKNOWN);
    } else if ((long long)time(NULL) >= key->not_after) {
        rv = 0;
        sc_tk_count(ring, SC_TK_EXPIRED);
    } else if (a->EVP_DecryptInit_ex(cctx, sc_tk_cipher[slot], NULL, key->bytes + 48, iv) != 1 ||
               !sc_tk_mac_init(a, evp, hctx, key->bytes + 16)) {
        rv = -1;
        sc_tk_count(ring, SC_TK_ERRORS);
    } else {
        /* An older key: resume, and issue a fresh ticket under the current one. The
         * current key, and the next one (a peer that rotated before this process
         * refreshed): fine as they are in TLS 1.2. In TLS 1.3 a fresh ticket after every
         * resumption, as OpenSSL does with its own key (RFC 8446 C.4: a client should
         * not use one ticket twice). */
        int old = key->role == SC_TK_ROLE_PREVIOUS;
        rv = old || a->SSL_version(ssl) == TLS1_3_VERSION ? 2 : 1;
        /* Counted when it is known whether the handshake resumed (sc_tk_settle). A mark
         * left by an earlier decrypt (a HelloRetryRequest's second ClientHello) is
         * replaced, not counted twice. */
        a->SSL_set_ex_data(ssl, sc_tk_mark_idx[slot], old ? SC_TK_MARK_OLD : SC_TK_MARK_CURRENT);
    }
    pthread_mutex_unlock(&ring->lock);
    return rv;
}

static int sc_tk_on_key(int slot, SSL *ssl, unsigned char *name, unsigned char *iv, void *cctx,
                        void *hctx, int enc, int evp)
{
    sc_tk_ctx *state;
    int result = 0;
    sc_err_mark(&sc_apis[slot]);
    state = sc_tk_state(slot, ssl);
    if (state == NULL || !__atomic_load_n(&state->active, __ATOMIC_ACQUIRE))
        result = 0; /* detached: no ticket issued, none accepted */
    else if (enc)
        result = sc_tk_encrypt(slot, state->ring, ssl, name, iv, cctx, hctx, evp);
    else
        result = sc_tk_decrypt(slot, state->ring, ssl, name, iv, cctx, hctx, evp);
    sc_err_pop(&sc_apis[slot]);
    return result;
}

/* One pair of callbacks per slot: OpenSSL passes no user argument. */
#define SC_TK_CALLBACKS(n)                                                                         \
    static int sc_tk_evp_cb_##n(SSL *s, unsigned char *name, unsigned char *iv, void *c, void *h,  \
                                int enc)                                                           \
    {                                                                                              \
        return sc_tk_on_key(n, s, name, iv, c, h, enc, 1);                                         \
    }                                                                                              \
    static int sc_tk_hmac_cb_##n(SSL *s, unsigned char *name, unsigned char *iv, void *c, void *h, \
                                 int enc)                                                          \
    {                                                                                              \
        return sc_tk_on_key(n, s, name, iv, c, h, enc, 0);                                         \
    }
SC_TK_CALLBACKS(0)
SC_TK_CALLBACKS(1)
SC_TK_CALLBACKS(2)
SC_TK_CALLBACKS(3)
SC_TK_CALLBACKS(4)
SC_TK_CALLBACKS(5)
SC_TK_CALLBACKS(6)
SC_TK_CALLBACKS(7)

/* EVP_CIPHER_CTX * and EVP_MAC_CTX * / HMAC_CTX * as void *: the table's types. */
typedef int (*sc_tk_cb_t)(SSL *, unsigned char *, unsigned char *, void *, void *, int);
static const sc_tk_cb_t sc_tk_evp_cbs[SC_MAX_INSTANCES] = {
    sc_tk_evp_cb_0, sc_tk_evp_cb_1, sc_tk_evp_cb_2, sc_tk_evp_cb_3,
    sc_tk_evp_cb_4, sc_tk_evp_cb_5, sc_tk_evp_cb_6, sc_tk_evp_cb_7};
static const sc_tk_cb_t sc_tk_hmac_cbs[SC_MAX_INSTANCES] = {
    sc_tk_hmac_cb_0, sc_tk_hmac_cb_1, sc_tk_hmac_cb_2, sc_tk_hmac_cb_3,
    sc_tk_hmac_cb_4, sc_tk_hmac_cb_5, sc_tk_hmac_cb_6, sc_tk_hmac_cb_7};

#define SC_TK_CTRL_SET_TICKET_KEY_CB 72 /* SSL_CTRL_SET_TLSEXT_TICKET_KEY_CB, every version */

/* Serve ctx's tickets from ring. A context keeps the first ring it is given until
 * OpenSSL frees it (a handshake in another thread may be reading it: it is never freed
 * under one); detaching only switches it off. Returns 2 (EVP callback) or 1 (HMAC
 * callback) when set, 0 when this copy cannot (see sc_tk_supported), -2 when the context
 * already holds another ring, -1 when OpenSSL refused. */
int sc_tk_attach(int slot, SSL_CTX *ctx, sc_tk_ring *ring)
{
    sc_api *a;
    sc_tk_ctx *state;
    int kind = sc_tk_supported(slot), ok;
    if (kind == 0 || ring == NULL || !sc_tk_setup(slot))
        return 0;
    a = &sc_apis[slot];
    state = (sc_tk_ctx *)a->SSL_CTX_get_ex_data(ctx, sc_tk_ctx_idx[slot]);
    if (state != NULL && state->ring != ring)
        return -2;
    if (state == NULL) {
        state = (sc_tk_ctx *)calloc(1, sizeof(*state));
        if (state == NULL)
            return -1;
        state->slot = slot;
        state->ring = ring;
        sc_tk_ring_retain(ring);
        if (a->SSL_CTX_set_ex_data(ctx, sc_tk_ctx_idx[slot], state) != 1) {
            sc_tk_ring_release(ring);
            free(state);
            return -1;
        }
        __atomic_add_fetch(&sc_tk_live_states, 1, __ATOMIC_SEQ_CST);
    }
    __atomic_store_n(&state->active, 1, __ATOMIC_RELEASE);
    if (kind == 2)
        ok = a->SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, sc_tk_evp_cbs[slot]) == 1;
    else
        ok = a->SSL_CTX_callback_ctrl(ctx, SC_TK_CTRL_SET_TICKET_KEY_CB,
                                      (void (*)(void))sc_tk_hmac_cbs[slot]) == 1;
    return ok ? kind : -1;
}

/* Give ctx OpenSSL's own per-context key back. */
int sc_tk_detach(int slot, SSL_CTX *ctx)
{
    sc_api *a;
    sc_tk_ctx *state;
    int kind = sc_tk_supported(slot);
    if (kind == 0 || !sc_tk_setup(slot))
        return 0;
    a = &sc_apis[slot];
    if (kind == 2)
        a->SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, NULL);
    else
        a->SSL_CTX_callback_ctrl(ctx, SC_TK_CTRL_SET_TICKET_KEY_CB, NULL);
    state = (sc_tk_ctx *)a->SSL_CTX_get_ex_data(ctx, sc_tk_ctx_idx[slot]);
    if (state != NULL)
        __atomic_store_n(&state->active, 0, __ATOMIC_RELEASE);
    return 1;
}

/* The ring serving ctx (not a new reference), or NULL: for tests. */
sc_tk_ring *sc_tk_ring_of(int slot, SSL_CTX *ctx)
{
    sc_tk_ctx *state;
    if (!sc_tk_setup(slot))
        return NULL;
    state = (sc_tk_ctx *)sc_apis[slot].SSL_CTX_get_ex_data(ctx, sc_tk_ctx_idx[slot]);
    return state != NULL ? state->ring : NULL;
}
