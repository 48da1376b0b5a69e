"""SessionCache's common cases in C, for a cache over the in-process store.

When a ``SessionCache`` over a plain ``MemoryStore`` (no sealing, the real clock) is
attached to a context, it hands this module its policy (``sc_fast``): the session id
context, the lifetime, the size cap and the fingerprint of the context's certificate.
The trampolines then try the fast path first:

* new session: describe it, serialize it, wrap it in the same envelope the Python code
  writes (``cache._ENVELOPE``) and store it: no Python at all;
* lookup: a miss, or a blob that opens, passes every check and parses, is answered here.

Anything else (a session that is stateless before Python has warned about it, from
another id context, expired, too large, a blob that does not open or is refused, a
certificate not seen yet, ``single_use``) is *handed over*: the trampoline calls the
Python handler as it would without the fast path, which does the work again, counts it
and logs it. So the C code only has to be right about the cases it accepts, and the
Python code stays the one reference for every refusal.

``sc_fast`` structs are never freed (about 200 bytes per attachment, kept on a list of
every one made): a context can outlive its cache and still run a callback holding the
pointer.
"""

# Declared once, for cffi and for C.
_SHARED_TYPES = """
typedef struct sc_fast sc_fast;
typedef struct {
    long long hits; long long misses; long long stores; long long stateless;
    long long handed_over; long long from_first;
} sc_fast_counts;
"""

INCLUDES = _SHARED_TYPES

# The envelope's numbers, read by cache.py from here too, so C and Python cannot disagree.
TYPES = _SHARED_TYPES + """
static const int SC_ENVELOPE_VERSION;
static const int SC_ENVELOPE_SIZE;
static const int SC_ENVELOPE_OVERHEAD;
static const int SC_CLOCK_SKEW;
static const int SC_STORE_KEY_MAX;
"""

FUNCTIONS = """
sc_fast *sc_fast_new(sc_mem *, const unsigned char *, unsigned int, double, long long, int,
                     sc_mem *, int);
int sc_fast_enable(int, SSL_CTX *, sc_fast *);
void sc_fast_disable(int, SSL_CTX *, sc_fast *);
void sc_fast_learn_certificate(sc_fast *, void *, const unsigned char *);
void sc_fast_stateless_noted(sc_fast *);
void sc_fast_counts_of(sc_fast *, sc_fast_counts *);
int sc_fast_start_journal(sc_fast *, int);
int sc_fast_drain(sc_fast *, unsigned char *, unsigned char *, double *, int);
void sc_fast_time_events(int);
int sc_fast_timed_events(int, unsigned int *, int);
"""

CUSTOMIZATIONS = r"""
/* --- the fast path ------------------------------------------------------------------ */

/* The envelope cache.py writes and reads (it takes these numbers from here): a format
 * byte no sealed blob starts with; its size, >Bq16sB (format, origin, certificate
 * fingerprint, name length); what sealing and the envelope add to a DER at most; how far
 * in the future an origin may lie (the clocks of a fleet disagree a little). */
#define SC_ENVELOPE_VERSION 0xE1
#define SC_ENVELOPE_SIZE 26
#define SC_ENVELOPE_OVERHEAD 512
#define SC_CLOCK_SKEW 60
#define SC_FAST_DER_BUFFER 2048      /* larger sessions go through Python */
#define SC_FAST_BLOB_BUFFER (SC_ENVELOPE_SIZE + 255 + SC_FAST_DER_BUFFER)
#define SC_STORE_KEY_MAX (5 + 32 + 32)   /* b"sc1:" + len + sid_ctx + id */

/* A new session stored by C that Python must still write on to a remote store. */
typedef struct {
    unsigned char key[SC_STORE_KEY_MAX];
    unsigned char key_len;
    double ttl;
} sc_journal_entry;

struct sc_fast {
    sc_mem *store;
    sc_mem *first;                   /* read before store when not NULL (prefetched sessions) */
    int new_in_python;               /* new sessions always go to Python (it writes them on) */
    unsigned char sid_ctx[32];
    unsigned int sid_ctx_len;
    double lifetime;                 /* seconds, from the full handshake */
    long long max_session_size;
    int single_use;
    int stateless_noted;             /* Python has warned: C may count the rest */
    pthread_mutex_t cert_lock;
    void *cert;                      /* the certificate the fingerprint is of */
    unsigned char fingerprint[16];
    long long hits, misses, stores, stateless, handed_over;  /* atomic */
    long long from_first;            /* of the hits, those read from first */
    /* With new_in_python, a journal lets C store new sessions anyway: each is noted here
     * and Python, draining it on the event loop, schedules its write to the real store.
     * When the journal is full the session is handed over instead: none is lost. */
    pthread_mutex_t journal_lock;
    sc_journal_entry *journal;       /* a ring of journal_capacity, or NULL: off */
    int journal_capacity, journal_start, journal_count;
    struct sc_fast *next_made;       /* every policy ever made: none is ever unreachable */
};

static sc_fast *sc_pool_fast[SC_MAX_INSTANCES][SC_POOL];
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
    if (n > SC_FAST_SAMPLES) n = SC_FAST_SAMPLES;
    if (n > cap) n = cap;
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
                     double lifetime, long long max_session_size, int single_use,
                     sc_mem *first, int new_in_python)
{
    sc_fast *f;
    if (sid_ctx_len > 32)
        return NULL;
    f = calloc(1, sizeof(*f));
    if (f == NULL)
        return NULL;
    f->store = store;
    f->first = first;
    f->new_in_python = new_in_python;
    memcpy(f->sid_ctx, sid_ctx, sid_ctx_len);
    f->sid_ctx_len = sid_ctx_len;
    f->lifetime = lifetime;
    f->max_session_size = max_session_size;
    f->single_use = single_use;
    pthread_mutex_init(&f->cert_lock, NULL);
    pthread_mutex_init(&f->journal_lock, NULL);
    f->next_made = __atomic_load_n(&sc_fast_all, __ATOMIC_ACQUIRE);
    while (!__atomic_compare_exchange_n(&sc_fast_all, &f->next_made, f, 1, __ATOMIC_ACQ_REL,
                                        __ATOMIC_ACQUIRE))
        ;
    return f;
}

/* Put f in front of ctx's hooks; -1 when ctx has no trampoline of its own (the shared
 * one cannot tell contexts apart), so Python serves it. */
int sc_fast_enable(int slot, SSL_CTX *ctx, sc_fast *f)
{
    int i;
    if (!sc_slot_ok(slot))
        return -1;
    i = sc_pool_find(slot, ctx);
    if (i < 0)
        return -1;
    __atomic_store_n(&sc_pool_fast[slot][i], f, __ATOMIC_RELEASE);
    return i;
}

void sc_fast_disable(int slot, SSL_CTX *ctx, sc_fast *f)
{
    int i;
    if (!sc_slot_ok(slot))
        return;
    i = sc_pool_find(slot, ctx);
    if (i >= 0)
        __atomic_compare_exchange_n(&sc_pool_fast[slot][i], &f, NULL, 0, __ATOMIC_ACQ_REL,
                                    __ATOMIC_ACQUIRE);
}

/* Called when a pool entry is released (its context freed or unhooked). */
static void sc_fast_forget(int slot, int index)
{
    __atomic_store_n(&sc_pool_fast[slot][index], NULL, __ATOMIC_RELEASE);
}

void sc_fast_learn_certificate(sc_fast *f, void *cert, const unsigned char *fingerprint)
{
    pthread_mutex_lock(&f->cert_lock);
    f->cert = cert;
    memcpy(f->fingerprint, fingerprint, 16);
    pthread_mutex_unlock(&f->cert_lock);
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
    free(ring);  /* another thread turned it on first */
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

void sc_fast_counts_of(sc_fast *f, sc_fast_counts *out)
{
    out->hits = __atomic_load_n(&f->hits, __ATOMIC_RELAXED);
    out->misses = __atomic_load_n(&f->misses, __ATOMIC_RELAXED);
    out->stores = __atomic_load_n(&f->stores, __ATOMIC_RELAXED);
    out->stateless = __atomic_load_n(&f->stateless, __ATOMIC_RELAXED);
    out->handed_over = __atomic_load_n(&f->handed_over, __ATOMIC_RELAXED);
    out->from_first = __atomic_load_n(&f->from_first, __ATOMIC_RELAXED);
}

static void sc_fast_count(long long *counter)
{
    __atomic_add_fetch(counter, 1, __ATOMIC_RELAXED);
}

/* 1 with the fingerprint copied when cert is the one learnt, else 0. */
static int sc_fast_fingerprint(sc_fast *f, void *cert, unsigned char *out)
{
    int known;
    pthread_mutex_lock(&f->cert_lock);
    known = f->cert != NULL && f->cert == cert;
    if (known)
        memcpy(out, f->fingerprint, 16);
    pthread_mutex_unlock(&f->cert_lock);
    return known;
}

static sc_fast *sc_fast_for(int slot, int index)
{
    sc_fast *f;
    if (index >= SC_POOL)
        return NULL;
    f = __atomic_load_n(&sc_pool_fast[slot][index], __ATOMIC_ACQUIRE);
    if (f == NULL || __atomic_load_n(&f->store->closed, __ATOMIC_RELAXED))
        return NULL;
    if (f->first != NULL && __atomic_load_n(&f->first->closed, __ATOMIC_RELAXED))
        return NULL;
    return f;
}

static size_t sc_store_key(const sc_fast *f, const unsigned char *id, unsigned int id_len,
                           unsigned char *key)
{
    /* cache.key_for: b"sc1:" + len(sid_ctx) + sid_ctx + id */
    memcpy(key, "sc1:", 4);
    key[4] = (unsigned char)f->sid_ctx_len;
    memcpy(key + 5, f->sid_ctx, f->sid_ctx_len);
    memcpy(key + 5 + f->sid_ctx_len, id, id_len);
    return 5 + f->sid_ctx_len + id_len;
}

/* 1: the new session was stored (or counted as a stateless ticket); 0: hand it over. */
static int sc_fast_new_session(int slot, int index, SSL *ssl, SSL_SESSION *sess, SSL_CTX *ctx)
{
    sc_fast *f = sc_fast_for(slot, index);
    sc_new_facts facts;
    unsigned char blob[SC_FAST_BLOB_BUFFER];
    unsigned char key[SC_STORE_KEY_MAX];
    unsigned char *der = blob + SC_ENVELOPE_SIZE + 255;
    double now, expires;
    size_t key_len, at, i;
    long long origin;
    int stored;
    if (f == NULL)
        return 0;
    facts.der_len = 0;
    if (f->new_in_python && __atomic_load_n(&f->journal, __ATOMIC_ACQUIRE) == NULL)
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
    if (facts.sid_ctx_len != f->sid_ctx_len || memcmp(facts.sid_ctx, f->sid_ctx, f->sid_ctx_len) != 0)
        goto hand_over;
    now = sc_wall_clock();
    expires = (double)facts.origin + f->lifetime;
    if ((double)(facts.made + facts.timeout) < expires)
        expires = (double)(facts.made + facts.timeout);
    if (expires <= now || facts.der_len <= 0 || facts.der_len > f->max_session_size)
        goto hand_over;
    /* The envelope, as cache._wrap writes it, built in front of the DER. */
    at = SC_ENVELOPE_SIZE + 255 - SC_ENVELOPE_SIZE - (size_t)facts.name_len;
    blob[at] = SC_ENVELOPE_VERSION;
    origin = facts.origin;
    for (i = 0; i < 8; i++)
        blob[at + 1 + i] = (unsigned char)((unsigned long long)origin >> (56 - 8 * i));
    if (!sc_fast_fingerprint(f, facts.certificate, blob + at + 9))
        goto hand_over;
    blob[at + 25] = (unsigned char)facts.name_len;
    memcpy(blob + at + SC_ENVELOPE_SIZE, facts.name, (size_t)facts.name_len);
    key_len = sc_store_key(f, facts.id, facts.id_len, key);
    if (f->new_in_python) {
        /* Stored and noted together, or neither: a journal with no room hands over. */
        pthread_mutex_lock(&f->journal_lock);
        if (f->journal == NULL || f->journal_count >= f->journal_capacity) {
            pthread_mutex_unlock(&f->journal_lock);
            goto hand_over;
        }
    }
    stored = sc_mem_set(f->store, key, key_len, blob + at,
                        SC_ENVELOPE_SIZE + (size_t)facts.name_len + (size_t)facts.der_len,
                        expires - now, sc_monotonic());
    if (f->new_in_python) {
        if (stored == 1) {
            sc_journal_entry *e = &f->journal[(f->journal_start + f->journal_count) % f->journal_capacity];
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
    if (facts.der_len > 0)  /* the session's secrets stay on no stack */
        explicit_bzero(der, (size_t)facts.der_len);
    sc_fast_count(&f->handed_over);
    return 0;
}

/* 1: answered (*out: the session, or NULL for a miss); 0: hand the lookup over. */
static int sc_fast_get_session(int slot, int index, SSL *ssl, const unsigned char *id, int id_len,
                               SSL_CTX *ctx, SSL_SESSION **out)
{
    sc_fast *f = sc_fast_for(slot, index);
    unsigned char blob[SC_FAST_BLOB_BUFFER];
    unsigned char key[5 + 32 + 32];
    unsigned char fingerprint[16];
    size_t blob_len = 0, key_len, start;
    long long origin = 0;
    double now, clock;
    int found = 0, from_first, reason, i;
    SSL_SESSION *sess;
    *out = NULL;
    if (f == NULL)
        return 0;
    if (f->single_use || id_len < 1 || id_len > 32)
        goto hand_over;
    key_len = sc_store_key(f, id, (unsigned int)id_len, key);
    clock = sc_monotonic();
    if (f->first != NULL)
        found = sc_mem_copy_into(f->first, key, key_len, clock, blob, sizeof(blob), &blob_len);
    from_first = found != 0;
    if (found == 0)
        found = sc_mem_copy_into(f->store, key, key_len, clock, blob, sizeof(blob), &blob_len);
    if (found == 0) {
        sc_fast_count(&f->misses);
        return 1;
    }
    if (found < 0 || blob_len <= SC_ENVELOPE_SIZE || blob[0] != SC_ENVELOPE_VERSION
            || (long long)blob_len > f->max_session_size + SC_ENVELOPE_OVERHEAD)
        goto hand_over;
    start = SC_ENVELOPE_SIZE + blob[25];
    if (blob_len <= start)
        goto hand_over;
    for (i = 0; i < 8; i++)
        origin = (long long)(((unsigned long long)origin << 8) | blob[1 + i]);
    now = sc_wall_clock();
    if ((double)origin + f->lifetime <= now || (double)origin > now + SC_CLOCK_SKEW)
        goto hand_over;
    if (!sc_fast_fingerprint(f, sc_apis[slot].SSL_CTX_get0_certificate(ctx), fingerprint)
            || memcmp(fingerprint, blob + 9, 16) != 0)
        goto hand_over;
    sess = sc_parse_offered(slot, ssl, blob + start, (long)(blob_len - start), id, id_len,
                            f->sid_ctx, f->sid_ctx_len, blob[25] ? (const char *)blob + SC_ENVELOPE_SIZE : NULL,
                            blob[25] ? (int)blob[25] : -1, origin, (long long)now, &reason);
    explicit_bzero(blob, blob_len);
    if (sess == NULL)
        goto hand_over;
    sc_fast_count(&f->hits);
    if (from_first)
        sc_fast_count(&f->from_first);
    *out = sess;
    return 1;
hand_over:
    explicit_bzero(blob, blob_len);
    sc_fast_count(&f->handed_over);
    return 0;
}

static int sc_fast_on_new(int slot, int index, SSL *ssl, SSL_SESSION *sess, SSL_CTX *ctx)
{
    double started;
    int done;
    if (!__atomic_load_n(&sc_fast_timing, __ATOMIC_ACQUIRE))
        return sc_fast_new_session(slot, index, ssl, sess, ctx);
    started = sc_monotonic();
    done = sc_fast_new_session(slot, index, ssl, sess, ctx);
    if (done)
        sc_fast_sample(0, started);
    return done;
}

static int sc_fast_on_get(int slot, int index, SSL *ssl, const unsigned char *id, int id_len,
                          SSL_CTX *ctx, SSL_SESSION **out)
{
    double started;
    int done;
    if (!__atomic_load_n(&sc_fast_timing, __ATOMIC_ACQUIRE))
        return sc_fast_get_session(slot, index, ssl, id, id_len, ctx, out);
    started = sc_monotonic();
    done = sc_fast_get_session(slot, index, ssl, id, id_len, ctx, out);
    if (done)
        sc_fast_sample(1, started);
    return done;
}
"""
