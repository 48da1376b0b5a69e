/* The in-process session store, in C: a hash table with LRU order and per-entry expiry.
 *
 * sesscache.stores.MemoryStore is a thin Python face over it, and the fast path
 * (fast_path.py) reads and writes it straight from libssl's callbacks, without entering
 * Python. So the embedded default store costs a hash lookup and a copy under a mutex, not a
 * trip through the interpreter (entering Python from a handshake alone costs 5 to 8 us).
 *
 * Entries are one allocation each (header, key, value); removing one wipes it
 * (explicit_bzero) before freeing it, as nginx and Apache do with their session caches:
 * a session's DER holds its master secret. Keys are hashed with FNV-1a under a random
 * per-store seed, so nobody can choose keys that pile up in one bucket.
 *
 * Times are passed in by the caller (monotonic seconds) so Python can inject a clock in
 * tests; the fast path reads CLOCK_MONOTONIC, which is what time.monotonic reads.
 *
 * Decoded sessions beside their DER. Decoding a stored session (d2i_SSL_SESSION) is most
 * of what a lookup through the store costs (3 to 4 us of a 5 us lookup, measured in real
 * handshakes on OpenSSL 3.0 and 4.0), where OpenSSL's own cache hands back a pointer. So
 * an entry the fast path has decoded keeps that session beside its DER, one per libssl
 * copy (sc_mem_keep_decoded), and later lookups hand OpenSSL a copy of it
 * (SSL_SESSION_dup, 0.3 to 0.7 us). The kept session itself never goes to OpenSSL:
 * OpenSSL links a session it is given into its context's cache list and marks it not
 * resumable for every holder when a connection closes uncleanly, so each lookup gets a
 * session of its own. The DER stays the entry's value (what Python, other copies and
 * other stores read); a decoded session goes when its entry goes (replaced, evicted,
 * expired, deleted, popped, closed), and at most decoded_max of them are kept per table
 * (about 1.1 KB each, not counted in max_bytes), the least recently looked up going first.
 *
 * Lifetime: sc_mem_close(store, 1) (the Python object's finalizer) wipes and frees every
 * entry and marks the store closed, but keeps the small struct itself: a context freed
 * later may still run a callback that holds the pointer, and a closed store answers it
 * "nothing here" instead of touching freed memory. That is about 140 bytes per store ever
 * made in the process, kept on a list of every store made (so leak checkers see them as
 * reachable, which they are). */
#include "sesscache.h"

/* --- the in-process store ---------------------------------------------------------- */

struct sc_mem_dec;

typedef struct sc_mem_entry {
    struct sc_mem_entry *next;  /* in its bucket */
    struct sc_mem_entry *newer; /* LRU list: oldest ... newest */
    struct sc_mem_entry *older;
    struct sc_mem_dec *dec; /* its decoded sessions, or NULL */
    uint64_t hash;
    double expires; /* monotonic seconds */
    size_t key_len, value_len;
    unsigned char bytes[]; /* key, then value */
} sc_mem_entry;

/* The decoded sessions of one entry, one per libssl copy, on the table's list of decoded
 * entries (least recently looked up first). */
typedef struct sc_mem_dec {
    sc_mem_entry *entry;
    struct sc_mem_dec *newer, *older;
    SSL_SESSION *sess[SC_MAX_INSTANCES];
} sc_mem_dec;

struct sc_mem {
    pthread_mutex_t lock;
    sc_mem_entry **buckets;
    size_t nbuckets; /* a power of two, or 0 once closed */
    sc_mem_entry *oldest, *newest;
    long long count, bytes;            /* bytes: sum of key + value lengths */
    long long max_sessions, max_bytes; /* max_bytes < 0: no byte limit */
    long long evictions, expired;
    sc_mem_dec *dec_oldest, *dec_newest;
    long long decoded, decoded_max; /* decoded sessions kept, and at most */
    uint64_t seed;
    int closed;
    sc_shm *shm;              /* not NULL: a face of a shared-memory segment (sc_mem_over_shm) */
    struct sc_mem *next_made; /* every store ever made, so none is ever unreachable */
};

static sc_mem *sc_mem_all;

/* How many least-recently-used entries a set inspects for expiry on its way out: the
 * ones nobody reads drift to that end, so that is where expired ones collect. */
#define SC_MEM_PURGE_PEEK    2
#define SC_MEM_FIRST_BUCKETS 64
/* Decoded sessions a table keeps at most (fewer when it holds fewer entries). */
#define SC_MEM_DECODED_MAX 2048

double sc_monotonic(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

double sc_wall_clock(void)
{
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static uint64_t sc_mem_hash(const sc_mem *m, const unsigned char *key, size_t len)
{
    uint64_t h = 0xcbf29ce484222325ULL ^ m->seed;
    size_t i;
    for (i = 0; i < len; i++) {
        h ^= key[i];
        h *= 0x100000001b3ULL;
    }
    return h ^ (h >> 29);
}

sc_mem *sc_mem_new(long long max_sessions, long long max_bytes)
{
    sc_mem *m = calloc(1, sizeof(*m));
    if (m == NULL)
        return NULL;
    m->buckets = calloc(SC_MEM_FIRST_BUCKETS, sizeof(*m->buckets));
    if (m->buckets == NULL) {
        free(m);
        return NULL;
    }
    m->nbuckets = SC_MEM_FIRST_BUCKETS;
    m->max_sessions = max_sessions;
    m->max_bytes = max_bytes;
    m->decoded_max = max_sessions < SC_MEM_DECODED_MAX ? max_sessions : SC_MEM_DECODED_MAX;
    if (getrandom(&m->seed, sizeof(m->seed), GRND_NONBLOCK) != (ssize_t)sizeof(m->seed))
        m->seed = (uint64_t)(uintptr_t)m ^ (uint64_t)(sc_monotonic() * 1e9);
    pthread_mutex_init(&m->lock, NULL);
    m->next_made = __atomic_load_n(&sc_mem_all, __ATOMIC_ACQUIRE);
    while (!__atomic_compare_exchange_n(&sc_mem_all, &m->next_made, m, 1, __ATOMIC_ACQ_REL,
                                        __ATOMIC_ACQUIRE))
        ;
    return m;
}

/* A table the fast path reads and writes like any other, whose every read and write goes
 * to the segment s (its own lock, buckets and counters stay unused). Closed by
 * sc_mem_close_forever, as a MemoryStore's table: s itself is never freed. */
sc_mem *sc_mem_over_shm(sc_shm *s)
{
    sc_mem *m = sc_mem_new(1, -1);
    if (m != NULL)
        m->shm = s;
    return m;
}

static void sc_mem_unlink(sc_mem *m, sc_mem_entry *e)
{
    sc_mem_entry **p = &m->buckets[e->hash & (m->nbuckets - 1)];
    while (*p != e)
        p = &(*p)->next;
    *p = e->next;
    if (e->older)
        e->older->newer = e->newer;
    else
        m->oldest = e->newer;
    if (e->newer)
        e->newer->older = e->older;
    else
        m->newest = e->older;
    m->count--;
    m->bytes -= (long long)(e->key_len + e->value_len);
}

static void sc_mem_wipe(sc_mem_entry *e)
{
    explicit_bzero(e, sizeof(*e) + e->key_len + e->value_len);
    free(e);
}

/* Frees an entry's decoded sessions (lock held). */
static void sc_mem_forget_decoded(sc_mem *m, sc_mem_entry *e)
{
    sc_mem_dec *d = e->dec;
    int slot;
    if (d == NULL)
        return;
    if (d->older)
        d->older->newer = d->newer;
    else
        m->dec_oldest = d->newer;
    if (d->newer)
        d->newer->older = d->older;
    else
        m->dec_newest = d->older;
    for (slot = 0; slot < SC_MAX_INSTANCES; slot++)
        if (d->sess[slot] != NULL) {
            sc_apis[slot].SSL_SESSION_free(d->sess[slot]);
            m->decoded--;
        }
    free(d);
    e->dec = NULL;
}

static void sc_mem_drop(sc_mem *m, sc_mem_entry *e)
{
    sc_mem_forget_decoded(m, e);
    sc_mem_unlink(m, e);
    sc_mem_wipe(e);
}

/* Moves an entry's decoded sessions to the recent end of their list (lock held). */
static void sc_mem_touch_decoded(sc_mem *m, sc_mem_dec *d)
{
    if (m->dec_newest == d)
        return;
    if (d->older)
        d->older->newer = d->newer;
    else
        m->dec_oldest = d->newer;
    d->newer->older = d->older;
    d->older = m->dec_newest;
    d->newer = NULL;
    m->dec_newest->newer = d;
    m->dec_newest = d;
}

static void sc_mem_touch(sc_mem *m, sc_mem_entry *e)
{
    if (m->newest == e)
        return;
    if (e->older)
        e->older->newer = e->newer;
    else
        m->oldest = e->newer;
    e->newer->older = e->older;
    e->older = m->newest;
    e->newer = NULL;
    m->newest->newer = e;
    m->newest = e;
}

static sc_mem_entry *sc_mem_find(sc_mem *m, const unsigned char *key, size_t len, uint64_t h)
{
    sc_mem_entry *e;
    if (m->nbuckets == 0)
        return NULL;
    for (e = m->buckets[h & (m->nbuckets - 1)]; e != NULL; e = e->next)
        if (e->hash == h && e->key_len == len && memcmp(e->bytes, key, len) == 0)
            return e;
    return NULL;
}

/* Doubles the buckets when there are more entries than buckets; a failed allocation
 * only leaves the chains longer. */
static void sc_mem_grow(sc_mem *m)
{
    size_t n = m->nbuckets * 2, i;
    sc_mem_entry **b, *e, *next;
    if ((long long)m->nbuckets >= m->count || n > ((size_t)1 << 30))
        return;
    b = calloc(n, sizeof(*b));
    if (b == NULL)
        return;
    for (i = 0; i < m->nbuckets; i++)
        for (e = m->buckets[i]; e != NULL; e = next) {
            next = e->next;
            e->next = b[e->hash & (n - 1)];
            b[e->hash & (n - 1)] = e;
        }
    free(m->buckets);
    m->buckets = b;
    m->nbuckets = n;
}

static int sc_mem_over_limits(const sc_mem *m)
{
    return m->count > m->max_sessions || (m->max_bytes >= 0 && m->bytes > m->max_bytes);
}

/* Returns 1 when stored, 0 when memory ran out (or the store is closed), -1 when the
 * entry alone is larger than max_bytes. */
int sc_mem_set(sc_mem *m, const unsigned char *key, size_t klen, const unsigned char *value,
               size_t vlen, double ttl, double now)
{
    uint64_t h;
    sc_mem_entry *e, *old;
    int i;
    if (m->shm != NULL)
        return __atomic_load_n(&m->closed, __ATOMIC_RELAXED)
                   ? 0
                   : sc_shm_set(m->shm, key, klen, value, vlen, ttl, now);
    h = sc_mem_hash(m, key, klen);
    if (m->max_bytes >= 0 && (long long)(klen + vlen) > m->max_bytes)
        return -1;
    e = malloc(sizeof(*e) + klen + vlen);
    if (e == NULL)
        return 0;
    e->dec = NULL;
    e->hash = h;
    e->expires = now + ttl;
    e->key_len = klen;
    e->value_len = vlen;
    memcpy(e->bytes, key, klen);
    memcpy(e->bytes + klen, value, vlen);
    pthread_mutex_lock(&m->lock);
    if (m->closed) {
        pthread_mutex_unlock(&m->lock);
        sc_mem_wipe(e);
        return 0;
    }
    old = sc_mem_find(m, key, klen, h);
    if (old != NULL)
        sc_mem_drop(m, old);
    e->next = m->buckets[h & (m->nbuckets - 1)];
    m->buckets[h & (m->nbuckets - 1)] = e;
    e->newer = NULL;
    e->older = m->newest;
    if (m->newest)
        m->newest->newer = e;
    else
        m->oldest = e;
    m->newest = e;
    m->count++;
    m->bytes += (long long)(klen + vlen);
    if (sc_mem_over_limits(m)) {
        while (sc_mem_over_limits(m) && m->oldest != NULL) {
            old = m->oldest;
            if (old->expires <= now)
                m->expired++;
            else
                m->evictions++;
            sc_mem_drop(m, old);
        }
    } else {
        for (i = 0; i < SC_MEM_PURGE_PEEK && m->oldest != NULL && m->oldest->expires <= now; i++) {
            m->expired++;
            sc_mem_drop(m, m->oldest);
        }
    }
    sc_mem_grow(m);
    pthread_mutex_unlock(&m->lock);
    return 1;
}

/* The entry under key, made most recently used; an expired one is dropped (and counted)
 * and reported as missing. Call with the lock held. */
static sc_mem_entry *sc_mem_live(sc_mem *m, const unsigned char *key, size_t klen, double now)
{
    sc_mem_entry *e = sc_mem_find(m, key, klen, sc_mem_hash(m, key, klen));
    if (e == NULL)
        return NULL;
    if (e->expires <= now) {
        m->expired++;
        sc_mem_drop(m, e);
        return NULL;
    }
    sc_mem_touch(m, e);
    return e;
}

/* A malloc'd copy of the value (free it with sc_mem_free_copy), or NULL when there is
 * none. take: remove it too, atomically (of threads taking one key, one gets it). */
unsigned char *sc_mem_get(sc_mem *m, const unsigned char *key, size_t klen, double now, int take,
                          size_t *vlen)
{
    sc_mem_entry *e;
    unsigned char *copy = NULL;
    pthread_mutex_lock(&m->lock);
    e = sc_mem_live(m, key, klen, now);
    if (e != NULL) {
        copy = malloc(e->value_len ? e->value_len : 1);
        if (copy != NULL) {
            memcpy(copy, e->bytes + e->key_len, e->value_len);
            *vlen = e->value_len;
            if (take)
                sc_mem_drop(m, e);
        }
    }
    pthread_mutex_unlock(&m->lock);
    return copy;
}

/* Copies the value into out (cap bytes) for the fast path: 1 copied, 0 none, -1 larger
 * than cap (nothing copied: the caller hands the lookup to Python). With decoded not
 * NULL, a copied value's session as libssl copy `slot` decoded it is put there (one
 * reference, the caller's to free; never to hand to OpenSSL: dup it), or NULL. */
static int sc_mem_lookup(sc_mem *m, const unsigned char *key, size_t klen, double now,
                         unsigned char *out, size_t cap, size_t *vlen, int slot,
                         SSL_SESSION **decoded)
{
    sc_mem_entry *e;
    int found = 0;
    if (decoded != NULL)
        *decoded = NULL;
    if (m->shm != NULL)
        return __atomic_load_n(&m->closed, __ATOMIC_RELAXED)
                   ? 0
                   : sc_shm_lookup(m->shm, key, klen, now, out, cap, vlen, slot, decoded);
    pthread_mutex_lock(&m->lock);
    e = sc_mem_live(m, key, klen, now);
    if (e != NULL) {
        found = -1;
        if (e->value_len <= cap) {
            memcpy(out, e->bytes + e->key_len, e->value_len);
            *vlen = e->value_len;
            found = 1;
            if (decoded != NULL && e->dec != NULL && e->dec->sess[slot] != NULL &&
                sc_apis[slot].SSL_SESSION_up_ref(e->dec->sess[slot]) == 1) {
                *decoded = e->dec->sess[slot];
                sc_mem_touch_decoded(m, e->dec);
            }
        }
    }
    pthread_mutex_unlock(&m->lock);
    return found;
}

static int sc_mem_copy_into(sc_mem *m, const unsigned char *key, size_t klen, double now,
                            unsigned char *out, size_t cap, size_t *vlen)
{
    return sc_mem_lookup(m, key, klen, now, out, cap, vlen, 0, NULL);
}

/* Keeps sess (libssl copy `slot`'s session decoded from value, one reference, taken
 * over) beside the entry under key, when that entry still holds exactly value and has
 * none for this copy yet; otherwise frees it. At decoded_max, the least recently looked
 * up entry's decoded sessions make room. */
static void sc_mem_keep_decoded(sc_mem *m, const unsigned char *key, size_t klen,
                                const unsigned char *value, size_t vlen, int slot,
                                SSL_SESSION *sess)
{
    sc_mem_entry *e;
    sc_mem_dec *d;
    if (m->shm != NULL) {
        sc_shm_keep_decoded(m->shm, key, klen, value, vlen, slot, sess);
        return;
    }
    pthread_mutex_lock(&m->lock);
    e = m->closed ? NULL : sc_mem_find(m, key, klen, sc_mem_hash(m, key, klen));
    if (e != NULL && m->decoded_max > 0 && e->value_len == vlen &&
        memcmp(e->bytes + e->key_len, value, vlen) == 0 &&
        (e->dec == NULL || e->dec->sess[slot] == NULL)) {
        d = e->dec;
        if (d == NULL && (d = calloc(1, sizeof(*d))) != NULL) {
            d->entry = e;
            d->older = m->dec_newest;
            if (m->dec_newest)
                m->dec_newest->newer = d;
            else
                m->dec_oldest = d;
            m->dec_newest = d;
            e->dec = d;
        }
        while (d != NULL && m->decoded >= m->decoded_max && m->dec_oldest != d)
            sc_mem_forget_decoded(m, m->dec_oldest->entry);
        if (d != NULL && m->decoded < m->decoded_max) {
            d->sess[slot] = sess;
            m->decoded++;
            sess = NULL;
            sc_mem_touch_decoded(m, d);
        }
    }
    pthread_mutex_unlock(&m->lock);
    if (sess != NULL)
        sc_apis[slot].SSL_SESSION_free(sess);
}

void sc_mem_free_copy(unsigned char *copy, size_t len)
{
    if (copy != NULL) {
        explicit_bzero(copy, len);
        free(copy);
    }
}

int sc_mem_delete(sc_mem *m, const unsigned char *key, size_t klen)
{
    sc_mem_entry *e;
    pthread_mutex_lock(&m->lock);
    e = sc_mem_find(m, key, klen, sc_mem_hash(m, key, klen));
    if (e != NULL)
        sc_mem_drop(m, e);
    pthread_mutex_unlock(&m->lock);
    return e != NULL;
}

long long sc_mem_purge_expired(sc_mem *m, double now)
{
    sc_mem_entry *e, *newer;
    long long dropped = 0;
    pthread_mutex_lock(&m->lock);
    for (e = m->oldest; e != NULL; e = newer) {
        newer = e->newer;
        if (e->expires <= now) {
            sc_mem_drop(m, e);
            dropped++;
        }
    }
    m->expired += dropped;
    pthread_mutex_unlock(&m->lock);
    return dropped;
}

/* Drops every entry; forever: also the buckets, and the store answers nothing from now
 * on (its Python object is gone, but a libssl callback may still hold the pointer). */
void sc_mem_close(sc_mem *m, int forever)
{
    pthread_mutex_lock(&m->lock);
    while (m->oldest != NULL)
        sc_mem_drop(m, m->oldest);
    if (forever && !m->closed) {
        m->closed = 1;
        free(m->buckets);
        m->buckets = NULL;
        m->nbuckets = 0;
    }
    pthread_mutex_unlock(&m->lock);
}

void sc_mem_close_forever(sc_mem *m)
{
    if (m != NULL)
        sc_mem_close(m, 1);
}

void sc_mem_describe(sc_mem *m, sc_mem_info *info)
{
    pthread_mutex_lock(&m->lock);
    info->entries = m->count;
    info->bytes = m->bytes;
    info->evictions = m->evictions;
    info->expired = m->expired;
    info->decoded = m->decoded;
    pthread_mutex_unlock(&m->lock);
}

/* Every entry, least recently used first, as (u32 key length, u32 value length, double
 * expires, key, value) records: for tests and debugging. Returns the size needed; writes
 * only when cap is enough. */
size_t sc_mem_dump(sc_mem *m, unsigned char *out, size_t cap)
{
    sc_mem_entry *e;
    size_t need = 0, at = 0;
    uint32_t lens[2];
    pthread_mutex_lock(&m->lock);
    for (e = m->oldest; e != NULL; e = e->newer)
        need += 16 + e->key_len + e->value_len;
    if (need <= cap)
        for (e = m->oldest; e != NULL; e = e->newer) {
            lens[0] = (uint32_t)e->key_len;
            lens[1] = (uint32_t)e->value_len;
            memcpy(out + at, lens, 8);
            memcpy(out + at + 8, &e->expires, 8);
            memcpy(out + at + 16, e->bytes, e->key_len + e->value_len);
            at += 16 + e->key_len + e->value_len;
        }
    pthread_mutex_unlock(&m->lock);
    return need;
}
