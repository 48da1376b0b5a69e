/* SessionCache's common cases in C, for a cache over the in-process store.
 *
 * When a SessionCache over a plain MemoryStore (the real clock) is attached
 * to a context, it hands this file its policy (sc_fast): the session id context, the
 * lifetime and the size cap (the certificate's fingerprint comes from the context's own
 * state, see sni_binding.c). The trampolines then try the fast path first:
 * - new session: describe it, serialize it, wrap it in the envelope (envelope.h) the
 *   Python code writes too, seal it when the cache has seal_keys (seal.c, the Python
 *   code's format too), and store it: no Python at all;
 * - lookup: a miss, or a blob that opens, passes every check and parses, is answered here.
 * Anything else (a session that is stateless before Python has warned about it, from
 * another id context, expired, too large, a blob that does not open or is refused,
 * single_use) is handed over: the trampoline calls the Python handler as it would without
 * the fast path, which does the work again, counts it and logs it. So the C code only has
 * to be right about the cases it accepts, and the Python code stays the one reference for
 * every refusal.
 *
 * sc_fast structs are never freed (about 200 bytes per cache and session id context,
 * shared by every context the cache serves with it, kept on a list of every one made): a
 * context can outlive its cache and still run a callback holding the pointer. */
#include "sesscache.h"

#define SC_FAST_DER_BUFFER  2048 /* larger sessions go through Python */
#define SC_FAST_BLOB_BUFFER (SC_ENVELOPE_SIZE + SC_ENVELOPE_NAME_MAX + SC_FAST_DER_BUFFER)
/* A sealed envelope (seal.c): what a sealed cache's tables hold. */
#define SC_FAST_SEALED_BUFFER (SC_FAST_BLOB_BUFFER + SC_SEAL_OVERHEAD)
/* sc_fast_new's flags. */
#define SC_FAST_NEW_IN_PYTHON  1
#define SC_FAST_MISS_IN_PYTHON 2

/* A new session stored by C that Python must still write on to a remote store. */
typedef struct {
    unsigned char key[SC_STORE_KEY_MAX];
    unsigned char key_len;
    double ttl;
} sc_journal_entry;

struct sc_fast {
    sc_mem *store;
    sc_mem *first;      /* read before store when not NULL (prefetched sessions) */
    int new_in_python;  /* new sessions always go to Python (it writes them on) */
    int miss_in_python; /* a miss in the tables goes to Python (which asks the
                                      * real store: a local replica's table is a subset) */
    unsigned char sid_ctx[32];
    unsigned int sid_ctx_len;
    double lifetime; /* seconds, from the full handshake */
    long long max_session_size;
    int single_use;
    int stateless_noted; /* Python has warned: C may count the rest */
    sc_seal *seal;       /* the cache's sealing keys (seal.c), or NULL: values in the clear */
    long long hits, misses, stores, stateless, handed_over; /* atomic */
    long long from_first;                                   /* of the hits, those read from first */
    long long rejected; /* offers refused before any lookup (sc_fast_note_offer) */
    /* With new_in_python, a journal lets C store new sessions anyway: each is noted here
     * and Python, draining it on the event loop, schedules its write to the real store.
     * When the journal is full the session is handed over instead: none is lost. */
    pthread_mutex_t journal_lock;
    sc_journal_entry *journal; /* a ring of journal_capacity, or NULL: off */
    int journal_capacity, journal_start, journal_count;
    /* With new_in_python, a ring (new_session_ring.c) lets C store new sessions anyway:
     * each goes into the store's table and, copied whole, into the ring, which the store's
     * writer thread drains (sc_fast_use_ring). Atomic; NULL: none. */
    sc_ring *ring;
    struct sc_fast *next_made; /* every policy ever made: none is ever unreachable */
};

static sc_fast *sc_fast_all;

/* For benchmarks: with timing on, each fast-path event's duration in nanoseconds is kept
 * (new: 0, get: 1; the first SC_FAST_SAMPLES of each), since no Python timer can see it. */
#define SC_FAST_SAMPLES 65536
static int sc_fast_timing;
static unsigned int sc_fast_samples[2][SC_FAST_SAMPLES];
static int sc_fast_sampled[2];

/* Turning it on starts a new set of samples; turning it off keeps them to be read. */
void sc_fast_time_events(int on)
{
    if (on) {
        __atomic_store_n(&sc_fast_sampled[0], 0, __ATOMIC_RELAXED);
        __atomic_store_n(&sc_fast_sampled[1], 0, __ATOMIC_RELAXED);
    }
    __atomic_store_n(&sc_fast_timing, on, __ATOMIC_RELEASE);
}

/* Copies up to cap samples of one kind; returns how many. */
int sc_fast_timed_events(int kind, unsigned int *out, int cap)
{
    int n = __atomic_load_n(&sc_fast_sampled[kind & 1], __ATOMIC_ACQUIRE);
    if (n > SC_FAST_SAMPLES)
        n = SC_FAST_SAMPLES;
    if (n > cap)
        n = cap;
    memcpy(out, sc_fast_samples[kind & 1], (size_t)n * sizeof(unsigned int));
    return n;
}

static void sc_fast_sample(int kind, double started)
{
    int i = __atomic_fetch_add(&sc_fast_sampled[kind], 1, __ATOMIC_ACQ_REL);
    if (i < SC_FAST_SAMPLES)
        sc_fast_samples[kind][i] = (unsigned int)((sc_monotonic() - started) * 1e9);
}

sc_fast *sc_fast_new(sc_mem *store, const unsigned char *sid_ctx, unsigned int sid_ctx_len,
                     double lifetime, long long max_session_size, int single_use, sc_mem *first,
                     int flags)
{
    sc_fast *f;
    if (sid_ctx_len > 32)
        return NULL;
    f = calloc(1, sizeof(*f));
    if (f == NULL)
        return NULL;
    f->store = store;
    f->first = first;
    f->new_in_python = (flags & SC_FAST_NEW_IN_PYTHON) != 0;
    f->miss_in_python = (flags & SC_FAST_MISS_IN_PYTHON) != 0;
    memcpy(f->sid_ctx, sid_ctx, sid_ctx_len);
    f->sid_ctx_len = sid_ctx_len;
    f->lifetime = lifetime;
    f->max_session_size = max_session_size;
    f->single_use = single_use;
    pthread_mutex_init(&f->journal_lock, NULL);
    f->next_made = __atomic_load_n(&sc_fast_all, __ATOMIC_ACQUIRE);
    while (!__atomic_compare_exchange_n(&sc_fast_all, &f->next_made, f, 1, __ATOMIC_ACQ_REL,
                                        __ATOMIC_ACQUIRE))
        ;
    return f;
}

/* Put f in front of ctx's hooks; 1 when done, 0 when ctx has no state (never hooked). */
int sc_fast_enable(int slot, SSL_CTX *ctx, sc_fast *f)
{
    sc_ctx_state *st = sc_state_of(slot, ctx);
    if (st == NULL)
        return 0;
    __atomic_store_n(&st->fast, f, __ATOMIC_RELEASE);
    return 1;
}

void sc_fast_disable(int slot, SSL_CTX *ctx, sc_fast *f)
{
    sc_ctx_state *st = sc_state_of(slot, ctx);
    if (st != NULL)
        __atomic_compare_exchange_n(&st->fast, &f, NULL, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
}

/* Seal what f stores and open what it reads with seal's keys: set once, before f is
 * enabled on any context. */
void sc_fast_seal_with(sc_fast *f, sc_seal *seal)
{
    __atomic_store_n(&f->seal, seal, __ATOMIC_RELEASE);
}

/* A value read from f's tables, sealed or not, as an envelope in place: blob itself when
 * f does not seal, else plain (SC_FAST_BLOB_BUFFER bytes) with *len its length, or NULL
 * when it does not open (seal.c counts why; the event goes to Python). */
static const unsigned char *sc_fast_unsealed(int slot, const sc_fast *f, const unsigned char *key,
                                             size_t key_len, const unsigned char *blob, size_t *len,
                                             unsigned char *plain)
{
    if (f->seal == NULL)
        return blob;
    *len = sc_seal_open(slot, f->seal, key, key_len, blob, *len, plain, SC_FAST_BLOB_BUFFER);
    return *len > 0 ? plain : NULL;
}

void sc_fast_stateless_noted(sc_fast *f)
{
    __atomic_store_n(&f->stateless_noted, 1, __ATOMIC_RELEASE);
}

/* Turn the journal on, with room for capacity entries; 1 when it is on (a second call
 * changes nothing), 0 when it cannot be (bad capacity, no memory). It stays on, and its
 * ring allocated, as long as the policy lives. */
int sc_fast_start_journal(sc_fast *f, int capacity)
{
    sc_journal_entry *ring;
    if (__atomic_load_n(&f->journal, __ATOMIC_ACQUIRE) != NULL)
        return 1;
    if (capacity < 1 || capacity > 1 << 20)
        return 0;
    ring = calloc((size_t)capacity, sizeof(*ring));
    if (ring == NULL)
        return 0;
    pthread_mutex_lock(&f->journal_lock);
    if (f->journal == NULL) {
        f->journal_capacity = capacity;
        __atomic_store_n(&f->journal, ring, __ATOMIC_RELEASE);
        ring = NULL;
    }
    pthread_mutex_unlock(&f->journal_lock);
    free(ring); /* another thread turned it on first */
    return 1;
}

/* Takes up to cap entries, oldest first: keys into keys (SC_STORE_KEY_MAX bytes each),
 * their lengths and time to live; returns how many. */
int sc_fast_drain(sc_fast *f, unsigned char *keys, unsigned char *key_lens, double *ttls, int cap)
{
    int n = 0;
    sc_journal_entry *e;
    pthread_mutex_lock(&f->journal_lock);
    while (n < cap && f->journal_count > 0) {
        e = &f->journal[f->journal_start];
        memcpy(keys + (size_t)n * SC_STORE_KEY_MAX, e->key, e->key_len);
        key_lens[n] = e->key_len;
        ttls[n] = e->ttl;
        f->journal_start = (f->journal_start + 1) % f->journal_capacity;
        f->journal_count--;
        n++;
    }
    pthread_mutex_unlock(&f->journal_lock);
    return n;
}

/* New sessions go to ring too from now on (for a store whose writer thread drains it);
 * not for single_use, whose lookups pop from the real store and must find them there. */
void sc_fast_use_ring(sc_fast *f, sc_ring *ring)
{
    if (!f->single_use)
        __atomic_store_n(&f->ring, ring, __ATOMIC_RELEASE);
}

void sc_fast_counts_of(sc_fast *f, sc_fast_counts *out)
{
    out->hits = __atomic_load_n(&f->hits, __ATOMIC_RELAXED);
    out->misses = __atomic_load_n(&f->misses, __ATOMIC_RELAXED);
    out->stores = __atomic_load_n(&f->stores, __ATOMIC_RELAXED);
    out->stateless = __atomic_load_n(&f->stateless, __ATOMIC_RELAXED);
    out->handed_over = __atomic_load_n(&f->handed_over, __ATOMIC_RELAXED);
    out->from_first = __atomic_load_n(&f->from_first, __ATOMIC_RELAXED);
    out->rejected = __atomic_load_n(&f->rejected, __ATOMIC_RELAXED);
}

static void sc_fast_count(long long *counter) { __atomic_add_fetch(counter, 1, __ATOMIC_RELAXED); }

/* The fast path of a context's state, unless it has none or its stores are closed. */
static sc_fast *sc_fast_of(sc_ctx_state *st)
{
    sc_fast *f;
    if (st == NULL)
        return NULL;
    f = __atomic_load_n(&st->fast, __ATOMIC_ACQUIRE);
    if (f == NULL || __atomic_load_n(&f->store->closed, __ATOMIC_RELAXED))
        return NULL;
    if (f->first != NULL && __atomic_load_n(&f->first->closed, __ATOMIC_RELAXED))
        return NULL;
    return f;
}

static size_t sc_store_key(const sc_fast *f, const unsigned char *id, unsigned int id_len,
                           unsigned char *key)
{
    return sc_envelope_key(f->sid_ctx, f->sid_ctx_len, id, id_len, key);
}

/* A new session for a store with a ring: into the store's table (this process answers
 * for it at once), then into the ring for the writer thread. 1: done (a full ring drops
 * it, counted there: the table and OpenSSL's cache still hold it); 0: hand it over. */
static int sc_fast_new_into_ring(sc_fast *f, sc_ring *ring, const unsigned char *key,
                                 size_t key_len, const unsigned char *value, size_t value_len,
                                 double expires, double now)
{
    if (!sc_ring_accepts(ring, key_len, value_len))
        return 0;
    if (sc_mem_set(f->store, key, key_len, value, value_len, expires - now, sc_monotonic()) != 1)
        return 0;
    return sc_ring_put(ring, key, key_len, value, value_len, expires) >= 0;
}

/* 1: the new session was stored (or counted as a stateless ticket); 0: hand it over. */
static int sc_fast_new_session(int slot, SSL *ssl, SSL_SESSION *sess, SSL_CTX *ctx)
{
    sc_ctx_state *st = sc_state_of(slot, ctx);
    sc_fast *f = sc_fast_of(st);
    sc_new_facts facts;
    unsigned char blob[SC_FAST_BLOB_BUFFER];
    unsigned char sealed[SC_FAST_SEALED_BUFFER];
    unsigned char key[SC_STORE_KEY_MAX];
    unsigned char fingerprint[SC_ENVELOPE_CERT_LEN];
    unsigned char *der = blob + SC_ENVELOPE_SIZE + SC_ENVELOPE_NAME_MAX;
    const unsigned char *value;
    double now, expires;
    size_t key_len, at, value_len;
    int stored;
    sc_ring *ring;
    if (f == NULL)
        return 0;
    facts.der_len = 0;
    ring = f->new_in_python ? __atomic_load_n(&f->ring, __ATOMIC_ACQUIRE) : NULL;
    if (f->new_in_python && ring == NULL && __atomic_load_n(&f->journal, __ATOMIC_ACQUIRE) == NULL)
        goto hand_over;
    if (!sc_describe_new(slot, ssl, sess, ctx, &facts, der, SC_FAST_DER_BUFFER))
        goto hand_over;
    if (facts.id_len < 1 || facts.id_len > 32)
        goto hand_over;
    if (facts.stateless) {
        if (!__atomic_load_n(&f->stateless_noted, __ATOMIC_ACQUIRE))
            goto hand_over;
        sc_fast_count(&f->stateless);
        return 1;
    }
    if (facts.bound == 0 ||
        (facts.bound < 0 && (facts.sid_ctx_len != f->sid_ctx_len ||
                             memcmp(facts.sid_ctx, f->sid_ctx, f->sid_ctx_len) != 0)))
        goto hand_over;
    now = sc_wall_clock();
    expires = (double)facts.origin + f->lifetime;
    if ((double)(facts.made + facts.timeout) < expires)
        expires = (double)(facts.made + facts.timeout);
    if (expires <= now || facts.der_len <= 0 || facts.der_len > f->max_session_size)
        goto hand_over;
    /* The envelope (envelope.h), built in front of the DER. */
    at = SC_ENVELOPE_SIZE + SC_ENVELOPE_NAME_MAX - SC_ENVELOPE_SIZE - (size_t)facts.name_len;
    sc_state_cert_fp(st, fingerprint);
    sc_envelope_put(blob + at, facts.origin, fingerprint, facts.name, (size_t)facts.name_len);
    key_len = sc_store_key(f, facts.id, facts.id_len, key);
    value = blob + at;
    value_len = SC_ENVELOPE_SIZE + (size_t)facts.name_len + (size_t)facts.der_len;
    if (f->seal != NULL) {
        value_len =
            sc_seal_blob(slot, f->seal, key, key_len, value, value_len, sealed, sizeof(sealed));
        if (value_len == 0)
            goto hand_over;
        value = sealed;
    }
    if (ring != NULL) {
        stored = sc_fast_new_into_ring(f, ring, key, key_len, value, value_len, expires, now);
        if (!stored)
            goto hand_over;
        explicit_bzero(der, (size_t)facts.der_len);
        sc_fast_count(&f->stores);
        return 1;
    }
    if (f->new_in_python) {
        /* Stored and noted together, or neither: a journal with no room hands over. */
        pthread_mutex_lock(&f->journal_lock);
        if (f->journal == NULL || f->journal_count >= f->journal_capacity) {
            pthread_mutex_unlock(&f->journal_lock);
            goto hand_over;
        }
    }
    stored = sc_mem_set(f->store, key, key_len, value, value_len, expires - now, sc_monotonic());
    if (f->new_in_python) {
        if (stored == 1) {
            sc_journal_entry *e =
                &f->journal[(f->journal_start + f->journal_count) % f->journal_capacity];
            memcpy(e->key, key, key_len);
            e->key_len = (unsigned char)key_len;
            e->ttl = expires - now;
            f->journal_count++;
        }
        pthread_mutex_unlock(&f->journal_lock);
    }
    if (stored != 1)
        goto hand_over;
    explicit_bzero(der, (size_t)facts.der_len);
    sc_fast_count(&f->stores);
    return 1;
hand_over:
    if (facts.der_len > 0) /* the session's secrets stay on no stack */
        explicit_bzero(der, (size_t)facts.der_len);
    sc_fast_count(&f->handed_over);
    return 0;
}

/* The session a lookup hands OpenSSL, checked as sc_parse_offered checks one (NULL with
 * *reason set when refused). From the table's decoded session when it has one (`kept`:
 * one reference, given back here): a copy of it, since the kept one must never reach a
 * connection (memory_store.c); else decoded from the DER, and a copy of that kept beside
 * the entry for the next lookups (DER stays the entry's value). Errors a failed copy
 * queues are the trampoline's to pop (sc_on_get brackets the lookup). */
static SSL_SESSION *sc_fast_offered(int slot, SSL *ssl, sc_mem *table, const unsigned char *key,
                                    size_t key_len, const unsigned char *blob, size_t blob_len,
                                    const sc_fast *f, const sc_envelope *env,
                                    const unsigned char *id, int id_len, long long now,
                                    SSL_SESSION *kept, int *reason)
{
    sc_api *a = &sc_apis[slot];
    SSL_SESSION *sess = NULL, *copy;
    if (kept != NULL) {
        sess = a->SSL_SESSION_dup != NULL ? a->SSL_SESSION_dup(kept) : NULL;
        a->SSL_SESSION_free(kept);
        if (sess != NULL)
            return sc_check_offered(slot, ssl, sess, id, id_len, f->sid_ctx, f->sid_ctx_len,
                                    env->name, env->name_len, env->origin, now, reason);
    }
    sess = sc_parse_offered(slot, ssl, env->der, (long)env->der_len, id, id_len, f->sid_ctx,
                            f->sid_ctx_len, env->name, env->name_len, env->origin, now, reason);
    if (sess != NULL && a->SSL_SESSION_dup != NULL) {
        copy = a->SSL_SESSION_dup(sess); /* before any connection has used sess */
        if (copy != NULL)
            sc_mem_keep_decoded(table, key, key_len, blob, blob_len, slot, copy);
    }
    return sess;
}

/* 1: answered (*out: the session, or NULL for a miss); 0: hand the lookup over. */
static int sc_fast_get_session(int slot, SSL *ssl, const unsigned char *id, int id_len,
                               SSL_CTX *ctx, SSL_SESSION **out)
{
    sc_ctx_state *st = sc_state_of(slot, ctx);
    sc_fast *f = sc_fast_of(st);
    unsigned char blob[SC_FAST_SEALED_BUFFER];
    unsigned char plain[SC_FAST_BLOB_BUFFER]; /* the envelope when sealed */
    const unsigned char *opened;
    unsigned char key[SC_STORE_KEY_MAX];
    unsigned char fingerprint[SC_ENVELOPE_CERT_LEN];
    sc_envelope env;
    size_t blob_len = 0, opened_len = 0, key_len;
    double now, clock;
    int found = 0, from_first, reason;
    SSL_SESSION *sess, *kept = NULL;
    sc_mem *table;
    *out = NULL;
    if (f == NULL)
        return 0;
    if (f->single_use || id_len < 1 || id_len > 32)
        goto hand_over;
    key_len = sc_store_key(f, id, (unsigned int)id_len, key);
    clock = sc_monotonic();
    table = f->first;
    if (table != NULL)
        found =
            sc_mem_lookup(table, key, key_len, clock, blob, sizeof(blob), &blob_len, slot, &kept);
    from_first = found != 0;
    if (found == 0) {
        table = f->store;
        found =
            sc_mem_lookup(table, key, key_len, clock, blob, sizeof(blob), &blob_len, slot, &kept);
    }
    if (found == 0) {
        if (f->miss_in_python)
            goto hand_over;
        sc_fast_count(&f->misses);
        return 1;
    }
    if (found < 0 || (long long)blob_len > f->max_session_size + SC_ENVELOPE_OVERHEAD)
        goto hand_over;
    opened_len = blob_len;
    opened = sc_fast_unsealed(slot, f, key, key_len, blob, &opened_len, plain);
    if (opened == NULL || !sc_envelope_open(opened, opened_len, &env))
        goto hand_over;
    now = sc_wall_clock();
    if ((double)env.origin + f->lifetime <= now || (double)env.origin > now + SC_CLOCK_SKEW)
        goto hand_over;
    sc_state_cert_fp(st, fingerprint);
    if (memcmp(fingerprint, env.cert_fp, SC_ENVELOPE_CERT_LEN) != 0)
        goto hand_over;
    sess = sc_fast_offered(slot, ssl, table, key, key_len, blob, blob_len, f, &env, id, id_len,
                           (long long)now, kept, &reason);
    kept = NULL; /* given back */
    explicit_bzero(blob, blob_len);
    if (f->seal != NULL)
        explicit_bzero(plain, opened_len);
    if (sess == NULL)
        goto hand_over;
    sc_fast_count(&f->hits);
    if (from_first)
        sc_fast_count(&f->from_first);
    *out = sess;
    return 1;
hand_over:
    if (kept != NULL)
        sc_apis[slot].SSL_SESSION_free(kept);
    explicit_bzero(blob, blob_len);
    if (f->seal != NULL)
        explicit_bzero(plain, opened_len);
    sc_fast_count(&f->handed_over);
    return 0;
}

static int sc_fast_on_new(int slot, SSL *ssl, SSL_SESSION *sess, SSL_CTX *ctx)
{
    double started;
    int done;
    if (!__atomic_load_n(&sc_fast_timing, __ATOMIC_ACQUIRE))
        return sc_fast_new_session(slot, ssl, sess, ctx);
    started = sc_monotonic();
    done = sc_fast_new_session(slot, ssl, sess, ctx);
    if (done)
        sc_fast_sample(0, started);
    return done;
}

static int sc_fast_on_get(int slot, SSL *ssl, const unsigned char *id, int id_len, SSL_CTX *ctx,
                          SSL_SESSION **out)
{
    double started;
    int done;
    if (!__atomic_load_n(&sc_fast_timing, __ATOMIC_ACQUIRE))
        return sc_fast_get_session(slot, ssl, id, id_len, ctx, out);
    started = sc_monotonic();
    done = sc_fast_get_session(slot, ssl, id, id_len, ctx, out);
    if (done)
        sc_fast_sample(1, started);
    return done;
}

/* --- offers refused before any lookup ------------------------------------------------
 * With OpenSSL's internal cache in front, a session this process made is resumed (or
 * refused) without any callback: when the client asks for another name, or the context
 * has a new certificate, OpenSSL refuses it on its own, because the connection's bound
 * session id context differs, and nothing would count it. So the ClientHello callback
 * looks the offered session up in the tables the fast path reads: when it was made for
 * another name or certificate, the refusal is counted and the connection marked. When a
 * lookup follows in the handshake (OpenSSL's internal cache did not hold the session),
 * it takes the count back and counts what it decides itself. One offer, one count. */

/* The session id a ClientHello offers: the first TLS 1.3 PSK identity when it has the
 * length of a session id (a stateful ticket), else the legacy session id (TLS 1.2).
 * Returns its length, 0 for none. */
static int sc_offered_id(sc_api *a, SSL *ssl, unsigned char *id)
{
    const unsigned char *ext, *legacy;
    size_t extlen, len;
    if (a->SSL_client_hello_get0_ext(ssl, 41 /* pre_shared_key */, &ext, &extlen) && extlen >= 4)
        return sc_psk_identity_of_extension(ext, extlen, id);
    if (a->SSL_client_hello_get0_session_id == NULL)
        return 0;
    len = a->SSL_client_hello_get0_session_id(ssl, &legacy);
    if (len < 1 || len > 32)
        return 0;
    memcpy(id, legacy, len);
    return (int)len;
}

static void sc_fast_note_offer(sc_ctx_state *st, SSL *ssl, const char *name, int name_len,
                               const unsigned char *cert_fp)
{
    sc_fast *f = sc_fast_of(st);
    sc_api *a = &sc_apis[st->slot];
    unsigned char blob[SC_FAST_SEALED_BUFFER];
    unsigned char plain[SC_FAST_BLOB_BUFFER]; /* the envelope when sealed */
    const unsigned char *opened = NULL;
    unsigned char key[SC_STORE_KEY_MAX];
    unsigned char id[32];
    size_t blob_len = 0, opened_len = 0, key_len;
    sc_envelope env;
    double clock;
    int id_len, found = 0, refused;
    if (f == NULL || a->SSL_client_hello_get0_ext == NULL)
        return;
    /* Without OpenSSL's internal lookup every offer reaches a lookup, which counts. */
    if (a->SSL_CTX_ctrl(st->ctx, SSL_CTRL_GET_SESS_CACHE_MODE, 0, NULL) &
        SSL_SESS_CACHE_NO_INTERNAL_LOOKUP)
        return;
    id_len = sc_offered_id(a, ssl, id);
    if (id_len <= 0)
        return;
    key_len = sc_store_key(f, id, (unsigned int)id_len, key);
    clock = sc_monotonic();
    if (f->first != NULL)
        found = sc_mem_copy_into(f->first, key, key_len, clock, blob, sizeof(blob), &blob_len);
    if (found == 0)
        found = sc_mem_copy_into(f->store, key, key_len, clock, blob, sizeof(blob), &blob_len);
    if (found == 1) {
        opened_len = blob_len;
        opened = sc_fast_unsealed(st->slot, f, key, key_len, blob, &opened_len, plain);
    }
    if (opened == NULL || !sc_envelope_open(opened, opened_len, &env)) {
        explicit_bzero(blob, blob_len);
        if (f->seal != NULL)
            explicit_bzero(plain, opened_len);
        return; /* not one the lookup could resume: whatever happens is counted there */
    }
    refused =
        memcmp(env.cert_fp, cert_fp, SC_ENVELOPE_CERT_LEN) != 0 || name_len < 0 ||
        !(env.name == NULL ? name_len == 0 : sc_same_name(name, name_len, env.name, env.name_len));
    explicit_bzero(blob, blob_len);
    if (f->seal != NULL)
        explicit_bzero(plain, opened_len);
    if (refused && a->SSL_set_ex_data(ssl, sc_offer_idx[st->slot], f) == 1)
        sc_fast_count(&f->rejected);
}

/* A lookup is about to decide on the offer: take back the count made for it above. */
static void sc_fast_uncount_refused_offer(int slot, SSL *ssl)
{
    sc_api *a = &sc_apis[slot];
    sc_fast *f = (sc_fast *)a->SSL_get_ex_data(ssl, sc_offer_idx[slot]);
    if (f != NULL) {
        a->SSL_set_ex_data(ssl, sc_offer_idx[slot], NULL);
        __atomic_sub_fetch(&f->rejected, 1, __ATOMIC_RELAXED);
    }
}
