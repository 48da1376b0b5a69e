/* The shared-memory store: one fixed-size table in a file of /dev/shm that every process
 * of the host naming it maps (sesscache.stores.SharedMemoryStore), as nginx's
 * `ssl_session_cache shared:` and Apache's mod_socache_shmcb keep theirs.
 *
 * Layout (all offsets from the start of the file):
 *   [0, 4096)        the header: magic, format version, size, C library, geometry, a
 *                    checksum of those, then the counters (atomics, outside the checksum)
 *   stripes          nstripes blocks: a robust process-shared mutex, an LRU clock, an entry
 *                    count, then per slot a last-used tick (u64) and a tag (u32, 0: empty)
 *   slots            nstripes * per_stripe fixed-size slots: generation, checksum, expiry,
 *                    hash, key and value lengths, then key and value bytes
 * A key lives in the stripe its keyed hash names; a set takes an empty slot of the stripe,
 * else an expired one, else the least recently used one (counted as an eviction).
 *
 * Crash safety. A slot's generation is odd while it is written and its checksum covers
 * everything it holds: a slot that does not check out is a miss, and is wiped. The stripe
 * mutexes are PTHREAD_MUTEX_ROBUST: when a holder died (SIGKILL half-way through a write),
 * the next locker gets EOWNERDEAD, re-verifies every slot of the stripe (dropping torn ones)
 * and marks the mutex consistent. Every lock is taken with a deadline
 * (pthread_mutex_timedlock): a holder that is stopped (SIGSTOP, a debugger) costs the
 * others that deadline, counted as a lock timeout and answered as a miss, never a hang.
 *
 * Opening. The file is opened with O_NOFOLLOW, created with O_EXCL and mode 0600; a file
 * that is not a regular file of the caller's user, or is readable by others, is refused.
 * Every process holds a shared flock on it while attached. A process that can take the
 * exclusive lock is alone: it rebuilds a header of another version, size or C library, or
 * a corrupt one, reserving the space with posix_fallocate (a full /dev/shm is an error at
 * open, never a SIGBUS in a handshake), and otherwise re-makes every mutex and re-verifies
 * every slot (a segment whose bytes were damaged while nobody used it loses the damaged
 * entries only: sessions survive a server restart). A process that finds the segment in
 * use with another layout is refused, with what it found.
 *
 * Times are CLOCK_MONOTONIC seconds, the same in every process of the host (the segment
 * does not outlive a reboot, which resets that clock).
 *
 * Decoded sessions, process-local. As memory_store.c keeps the session an entry's DER
 * decodes to beside it, each process keeps the sessions it decoded from the segment in a
 * table of its own (sc_shm_line, nstripes * lines_per_stripe lines, made on first need),
 * never in the segment: a session is a libssl object of one process. A line names the slot
 * it was decoded from, with that slot's generation and checksum: a slot another process
 * rewrote since no longer matches, and its line is replaced when next looked up. The
 * lines of a stripe are only read and written under that stripe's lock; a wipe in this
 * process (eviction, expiry, delete, pop, a torn slot) frees the slot's line with it, and
 * closing frees them all. Lookups hand OpenSSL a copy (SSL_SESSION_dup), never the kept
 * session (see memory_store.c). A line's seq is odd while it changes: a fork that caught
 * another thread half-way leaves the child to forget that line (fork child handler).
 *
 * Lifetime: sc_shm_close marks the handle closed, releases the file (and its flock) and,
 * once the calls under way are done, the mapping; the small struct stays: a context freed
 * later may still run a callback holding a pointer to it, which is then answered "nothing
 * here". */
#include "sesscache.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>

#define SC_SHM_MAGIC             "sesscSHM"
#define SC_SHM_VERSION           1
#define SC_SHM_HEADER_SIZE       4096
#define SC_SHM_STRIPE_HEAD       128
#define SC_SHM_MAX_STRIPES       64
#define SC_SHM_MIN_PER           16
#define SC_SHM_MIN_SIZE          (64 * 1024)
#define SC_SHM_DEFAULT_SIZE      (32ULL * 1024 * 1024)
#define SC_SHM_DEFAULT_ENTRY_CAP 1536 /* a server's session without client certificates fits */
#define SC_SHM_OPEN_TRIES        400  /* of about 5 ms each: two seconds of racing openers */
#define SC_SHM_DECODED_MAX       2048 /* decoded sessions a process keeps per segment, at most */
#if defined(__GLIBC__)
#define SC_SHM_LIBC "glibc"
#else
#define SC_SHM_LIBC "musl"
#endif

/* sc_shm_report.code */
#define SC_SHM_E_ARGS   1
#define SC_SHM_E_OPEN   2
#define SC_SHM_E_OWNER  3
#define SC_SHM_E_MODE   4
#define SC_SHM_E_SPACE  5
#define SC_SHM_E_IN_USE 6
#define SC_SHM_E_MAP    7
#define SC_SHM_E_BUSY   8
#define SC_SHM_E_MUTEX  9

typedef struct {
    char magic[8];
    uint32_t version;
    uint32_t header_size;
    uint64_t size;
    char libc[16];
    uint32_t mutex_size;
    uint32_t pointer_size;
    uint32_t nstripes;
    uint32_t per_stripe;
    uint32_t slot_stride;
    uint32_t entry_cap; /* key + value bytes a slot holds */
    uint32_t stripe_stride;
    uint32_t pad;
    uint64_t slots_at;
    uint64_t seed;
    uint64_t sum; /* of every field above */
    /* counters, atomics: not covered by the checksum */
    int64_t hits, misses, stores, evictions, expired, lock_timeouts, repairs, torn, rebuilds;
} sc_shm_header;

typedef struct {
    pthread_mutex_t lock;
    uint64_t clock;
    uint32_t count;
    uint32_t bytes;
} sc_shm_stripe;

typedef struct {
    uint64_t gen; /* odd while written */
    uint64_t sum; /* of what follows, key and value included */
    double expires;
    uint32_t hash;
    uint32_t klen;
    uint32_t vlen;
    uint32_t pad;
    unsigned char bytes[]; /* key, then value */
} sc_shm_slot;

/* A decoded session of this process (see the top of the file). */
typedef struct {
    uint64_t seq;      /* odd while the line changes */
    uint64_t gen, sum; /* of the slot when it was decoded */
    SSL_SESSION *sess; /* one reference, of libssl copy `slot` */
    uint32_t at;       /* the slot's index in its stripe + 1; 0: empty */
    int slot;
} sc_shm_line;

struct sc_shm {
    unsigned char *base;
    size_t size;
    int fd;
    int closed;   /* atomic */
    int users;    /* calls inside the mapping now; atomic (sc_shm_enter) */
    int own_file; /* fd's open file is this process's own (not one shared since a fork) */
    double lock_timeout;
    sc_shm_header *h;
    uint64_t dev;
    uint64_t ino;
    char *path;
    sc_shm_line *lines; /* decoded sessions, or NULL until the first; atomic */
    uint32_t lines_per_stripe;
    struct sc_shm *next_made; /* every segment opened, for the fork handler */
};

static sc_shm *sc_shm_all;

/* The robust-mutex functions, as the C library of the process has them, handed in by
 * Python (sesscache.stores.shm asks the dynamic linker through ctypes, as the binding does
 * for libssl). Linked directly, glibc 2.34+ binds them to its GLIBC_2.34 versions (libpthread
 * moved into libc), newer than the manylinux_2_28 wheels promise (tests/test_build.py). */
typedef struct {
    int (*mutexattr_init)(pthread_mutexattr_t *);
    int (*mutexattr_destroy)(pthread_mutexattr_t *);
    int (*mutexattr_setpshared)(pthread_mutexattr_t *, int);
    int (*mutexattr_setrobust)(pthread_mutexattr_t *, int);
    int (*mutex_trylock)(pthread_mutex_t *);
    int (*mutex_timedlock)(pthread_mutex_t *, const struct timespec *);
    int (*mutex_consistent)(pthread_mutex_t *);
} sc_shm_pthread_api;

#define SC_SHM_PTHREAD_FUNCTIONS 7
static sc_shm_pthread_api sc_pt;
static int sc_pt_ready; /* atomic */

/* fns: the addresses of the functions above, in that order. 1 when all were given. */
int sc_shm_use_pthread(void *const *fns, int n)
{
    void *copy[SC_SHM_PTHREAD_FUNCTIONS];
    int i;
    if (n != SC_SHM_PTHREAD_FUNCTIONS)
        return 0;
    for (i = 0; i < n; i++)
        if ((copy[i] = fns[i]) == NULL)
            return 0;
    if (__atomic_load_n(&sc_pt_ready, __ATOMIC_ACQUIRE))
        return 1;
    memcpy(&sc_pt, copy, sizeof(sc_pt));
    __atomic_store_n(&sc_pt_ready, 1, __ATOMIC_RELEASE);
    return 1;
}

/* What sesscache reads of an open file: statx where glibc has it (2.28: fstat is a
 * GLIBC_2.33 symbol), fstat elsewhere (musl). */
typedef struct {
    uint64_t size, ino, dev;
    unsigned int uid, mode;
} sc_shm_stat;

static int sc_shm_fstat(int fd, sc_shm_stat *out)
{
#if defined(__GLIBC__)
    struct statx sx;
    if (statx(fd, "", AT_EMPTY_PATH, STATX_BASIC_STATS, &sx) != 0)
        return -1;
    out->size = sx.stx_size;
    out->ino = sx.stx_ino;
    out->dev = ((uint64_t)sx.stx_dev_major << 32) | sx.stx_dev_minor;
    out->uid = sx.stx_uid;
    out->mode = sx.stx_mode;
#else
    struct stat sb;
    if (fstat(fd, &sb) != 0)
        return -1;
    out->size = (uint64_t)sb.st_size;
    out->ino = (uint64_t)sb.st_ino;
    out->dev = (uint64_t)sb.st_dev;
    out->uid = (unsigned int)sb.st_uid;
    out->mode = (unsigned int)sb.st_mode;
#endif
    return 0;
}
static int sc_shm_fork_registered; /* atomic */

/* In a child of fork(): a shared flock belongs to the open file, which parent and child
 * now share (and which the mapping keeps alive): a child detaching (LOCK_UN) would let a
 * third process think the segment unused while the parent still uses it. So the child
 * opens the file anew and takes a shared lock of its own. Process-local work only: no
 * stripe of the segment is touched (a fork must never stall another process). */
static void sc_shm_fork_child(void)
{
    sc_shm *s;
    sc_shm_stat sb;
    int fd;
    for (s = __atomic_load_n(&sc_shm_all, __ATOMIC_ACQUIRE); s != NULL; s = s->next_made) {
        sc_shm_line *lines = __atomic_load_n(&s->lines, __ATOMIC_ACQUIRE);
        size_t i, n = lines == NULL ? 0 : (size_t)s->h->nstripes * s->lines_per_stripe;
        /* A line another thread was changing at the fork: its session may be half given
         * back. Forgotten (at worst one session stays allocated in the child), never used. */
        for (i = 0; i < n; i++)
            if (lines[i].seq & 1) {
                lines[i].sess = NULL;
                lines[i].at = 0;
                lines[i].seq++;
            }
        s->own_file = 0;
        s->users = 0; /* the parent's other threads, caught in a call, are not here */
        if (__atomic_load_n(&s->closed, __ATOMIC_ACQUIRE))
            continue;
        fd = open(s->path, O_RDWR | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
            continue;
        if (sc_shm_fstat(fd, &sb) != 0 || sb.dev != s->dev || sb.ino != s->ino ||
            flock(fd, LOCK_SH | LOCK_NB) != 0) {
            close(fd);
            continue; /* replaced or unlinked since: keep the parent's file */
        }
        close(s->fd);
        s->fd = fd;
        s->own_file = 1;
    }
}

static void sc_shm_register_fork(void) { pthread_atfork(NULL, NULL, sc_shm_fork_child); }

_Static_assert(sizeof(sc_shm_header) <= SC_SHM_HEADER_SIZE, "header fits its page");
_Static_assert(sizeof(sc_shm_stripe) <= SC_SHM_STRIPE_HEAD, "stripe head fits");

static uint64_t sc_shm_mix(uint64_t h, uint64_t v)
{
    h ^= v;
    h *= 0x9e3779b97f4a7c15ULL;
    return h ^ (h >> 31);
}

static uint64_t sc_shm_sum(uint64_t seed, const unsigned char *p, size_t n)
{
    uint64_t h = seed ^ (uint64_t)n, v;
    while (n >= 8) {
        memcpy(&v, p, 8);
        h = sc_shm_mix(h, v);
        p += 8;
        n -= 8;
    }
    v = 0;
    memcpy(&v, p, n);
    return sc_shm_mix(h, v ^ 0xff);
}

static uint32_t sc_shm_hash(const sc_shm *s, const unsigned char *key, size_t len)
{
    uint64_t h = sc_shm_sum(s->h->seed, key, len);
    return (uint32_t)(h >> 32) ^ (uint32_t)h;
}

static uint64_t sc_shm_header_sum(const sc_shm_header *h)
{
    return sc_shm_sum(0x5e55cac4e, (const unsigned char *)h, offsetof(sc_shm_header, sum));
}

static sc_shm_stripe *sc_shm_stripe_of(const sc_shm *s, uint32_t i)
{
    return (sc_shm_stripe *)(s->base + SC_SHM_HEADER_SIZE + (size_t)i * s->h->stripe_stride);
}

static uint64_t *sc_shm_ticks(sc_shm_stripe *st)
{
    return (uint64_t *)((unsigned char *)st + SC_SHM_STRIPE_HEAD);
}

static uint32_t *sc_shm_tags(const sc_shm *s, sc_shm_stripe *st)
{
    return (uint32_t *)(sc_shm_ticks(st) + s->h->per_stripe);
}

static sc_shm_slot *sc_shm_slot_at(const sc_shm *s, uint32_t stripe, uint32_t i)
{
    return (sc_shm_slot *)(s->base + s->h->slots_at +
                           ((size_t)stripe * s->h->per_stripe + i) * s->h->slot_stride);
}

static uint64_t sc_shm_slot_sum(const sc_shm *s, const sc_shm_slot *e)
{
    uint64_t h = sc_shm_sum(s->h->seed, (const unsigned char *)&e->expires,
                            offsetof(sc_shm_slot, bytes) - offsetof(sc_shm_slot, expires));
    return sc_shm_mix(h, sc_shm_sum(s->h->seed, e->bytes, (size_t)e->klen + e->vlen));
}

/* 1 when the slot holds a whole entry that checks out. */
static int sc_shm_slot_ok(const sc_shm *s, const sc_shm_slot *e)
{
    return (e->gen & 1) == 0 && e->klen <= s->h->entry_cap && e->vlen <= s->h->entry_cap &&
           e->klen + e->vlen <= s->h->entry_cap && e->sum == sc_shm_slot_sum(s, e);
}

static uint32_t sc_shm_tag(uint32_t hash) { return hash | 1u; }

static void sc_shm_count(int64_t *counter) { __atomic_add_fetch(counter, 1, __ATOMIC_RELAXED); }

/* The line of slot i of a stripe, or NULL before the first decoded session. */
static sc_shm_line *sc_shm_line_of(sc_shm *s, uint32_t stripe, uint32_t i)
{
    sc_shm_line *lines = __atomic_load_n(&s->lines, __ATOMIC_ACQUIRE);
    if (lines == NULL)
        return NULL;
    return &lines[(size_t)stripe * s->lines_per_stripe + i % s->lines_per_stripe];
}

/* Puts sess (or NULL) on a line (the stripe's lock held); returns what it held before,
 * for the caller to free (after unlocking, when it can). */
static SSL_SESSION *sc_shm_line_set(sc_shm_line *line, const sc_shm_slot *e, uint32_t i, int slot,
                                    SSL_SESSION *sess)
{
    SSL_SESSION *old = line->sess;
    __atomic_store_n(&line->seq, line->seq + 1, __ATOMIC_RELEASE);
    line->sess = sess;
    line->at = sess != NULL ? i + 1 : 0;
    line->slot = slot;
    line->gen = e != NULL ? e->gen : 0;
    line->sum = e != NULL ? e->sum : 0;
    __atomic_store_n(&line->seq, line->seq + 1, __ATOMIC_RELEASE);
    return old;
}

/* Frees this process's decoded session of slot i, if it has one (lock held). */
static void sc_shm_forget_decoded(sc_shm *s, uint32_t stripe, uint32_t i)
{
    sc_shm_line *line = sc_shm_line_of(s, stripe, i);
    SSL_SESSION *old;
    int slot;
    if (line == NULL || line->at != i + 1)
        return;
    slot = line->slot;
    old = sc_shm_line_set(line, NULL, 0, 0, NULL);
    if (old != NULL)
        sc_apis[slot].SSL_SESSION_free(old);
}

/* Wipes slot i of a stripe: the value holds a session's master secret. */
static void sc_shm_wipe(sc_shm *s, uint32_t stripe, sc_shm_stripe *st, uint32_t i)
{
    sc_shm_slot *e = sc_shm_slot_at(s, stripe, i);
    uint32_t *tags = sc_shm_tags(s, st);
    sc_shm_forget_decoded(s, stripe, i);
    if (tags[i] != 0 && st->count > 0) {
        st->count--;
        st->bytes -= (e->klen + e->vlen <= st->bytes) ? e->klen + e->vlen : st->bytes;
    }
    tags[i] = 0;
    e->gen |= 1;
    __atomic_thread_fence(__ATOMIC_RELEASE);
    explicit_bzero(e->bytes, s->h->entry_cap);
    e->klen = e->vlen = 0;
    e->sum = 0;
    e->gen++;
}

/* Re-verifies every slot of a stripe and rebuilds its tags and counts from what checks
 * out: after its lock's holder died, or when a process opens the segment alone. */
static void sc_shm_repair(sc_shm *s, uint32_t stripe)
{
    sc_shm_stripe *st = sc_shm_stripe_of(s, stripe);
    uint32_t *tags = sc_shm_tags(s, st), i;
    uint64_t *ticks = sc_shm_ticks(st);
    st->count = 0;
    st->bytes = 0;
    for (i = 0; i < s->h->per_stripe; i++) {
        sc_shm_slot *e = sc_shm_slot_at(s, stripe, i);
        if (e->klen == 0 && e->vlen == 0 && e->sum == 0 && (e->gen & 1) == 0) {
            tags[i] = 0;
            continue;
        }
        if (!sc_shm_slot_ok(s, e) || e->hash % s->h->nstripes != stripe) {
            if (e->gen != 0 || e->sum != 0 || e->klen != 0)
                sc_shm_count(&s->h->torn);
            tags[i] = 0; /* not counted in: the wipe counts nothing out */
            sc_shm_wipe(s, stripe, st, i);
            continue;
        }
        tags[i] = sc_shm_tag(e->hash);
        if (ticks[i] > st->clock)
            ticks[i] = st->clock;
        st->count++;
        st->bytes += e->klen + e->vlen;
    }
}

static int sc_shm_lock(sc_shm *s, uint32_t stripe)
{
    sc_shm_stripe *st = sc_shm_stripe_of(s, stripe);
    struct timespec deadline;
    double whole;
    int rc = sc_pt.mutex_trylock(&st->lock);
    if (rc == EBUSY) {
        /* On the wall clock: pthread_mutex_clocklock (CLOCK_MONOTONIC) is glibc 2.30, newer
         * than the manylinux_2_28 wheels promise (tests/test_build.py). A clock step during a
         * wait lengthens or shortens that one wait. */
        clock_gettime(CLOCK_REALTIME, &deadline);
        whole = (double)deadline.tv_nsec / 1e9 + s->lock_timeout;
        deadline.tv_sec += (time_t)whole;
        deadline.tv_nsec = (long)((whole - (double)(time_t)whole) * 1e9);
        rc = sc_pt.mutex_timedlock(&st->lock, &deadline);
    }
    if (rc == 0)
        return 1;
    if (rc == EOWNERDEAD) {
        sc_shm_repair(s, stripe);
        sc_shm_count(&s->h->repairs);
        sc_pt.mutex_consistent(&st->lock);
        return 1;
    }
    sc_shm_count(&s->h->lock_timeouts); /* ETIMEDOUT, or a mutex nobody can recover */
    return 0;
}

static void sc_shm_unlock(sc_shm *s, uint32_t stripe)
{
    pthread_mutex_unlock(&sc_shm_stripe_of(s, stripe)->lock);
}

/* The slot holding key in its stripe (lock held), or -1; a torn slot met on the way is
 * wiped. */
static long sc_shm_find(sc_shm *s, uint32_t stripe, sc_shm_stripe *st, const unsigned char *key,
                        size_t klen, uint32_t hash)
{
    uint32_t *tags = sc_shm_tags(s, st), tag = sc_shm_tag(hash), i;
    for (i = 0; i < s->h->per_stripe; i++) {
        sc_shm_slot *e;
        if (tags[i] != tag)
            continue;
        e = sc_shm_slot_at(s, stripe, i);
        if (e->hash != hash || e->klen != klen || e->klen > s->h->entry_cap ||
            memcmp(e->bytes, key, klen) != 0)
            continue;
        if (!sc_shm_slot_ok(s, e)) {
            sc_shm_count(&s->h->torn);
            sc_shm_wipe(s, stripe, st, i);
            return -1;
        }
        return (long)i;
    }
    return -1;
}

static int sc_shm_usable(sc_shm *s)
{
    return s != NULL && !__atomic_load_n(&s->closed, __ATOMIC_ACQUIRE);
}

/* Returns 1 when stored, 0 when not (closed, lock timeout), -1 when key and value do not
 * fit a slot. */
static int sc_shm_set_in(sc_shm *s, const unsigned char *key, size_t klen,
                         const unsigned char *value, size_t vlen, double ttl, double now)
{
    uint32_t hash, stripe, *tags, i, pick = 0;
    sc_shm_stripe *st;
    sc_shm_slot *e;
    uint64_t *ticks, oldest = UINT64_MAX;
    long at;
    int kind = 3; /* of pick: 0 empty, 1 expired, 2 least recently used */
    if (!sc_shm_usable(s))
        return 0;
    if (klen + vlen > s->h->entry_cap)
        return -1;
    hash = sc_shm_hash(s, key, klen);
    stripe = hash % s->h->nstripes;
    if (!sc_shm_lock(s, stripe))
        return 0;
    st = sc_shm_stripe_of(s, stripe);
    tags = sc_shm_tags(s, st);
    ticks = sc_shm_ticks(st);
    at = sc_shm_find(s, stripe, st, key, klen, hash);
    if (at >= 0) {
        pick = (uint32_t)at;
        sc_shm_wipe(s, stripe, st, pick);
    } else {
        for (i = 0; i < s->h->per_stripe && kind > 0; i++) {
            if (tags[i] == 0) {
                pick = i;
                kind = 0;
            } else if (kind > 1 && sc_shm_slot_at(s, stripe, i)->expires <= now) {
                pick = i;
                kind = 1;
            } else if (kind > 1 && ticks[i] < oldest) {
                oldest = ticks[i];
                pick = i;
                kind = 2;
            }
        }
        if (kind == 1)
            sc_shm_count(&s->h->expired);
        else if (kind == 2)
            sc_shm_count(&s->h->evictions);
        if (kind > 0)
            sc_shm_wipe(s, stripe, st, pick);
    }
    e = sc_shm_slot_at(s, stripe, pick);
    e->gen |= 1; /* odd: being written */
    __atomic_thread_fence(__ATOMIC_RELEASE);
    e->expires = now + ttl;
    e->hash = hash;
    e->klen = (uint32_t)klen;
    e->vlen = (uint32_t)vlen;
    e->pad = 0;
    memcpy(e->bytes, key, klen);
    memcpy(e->bytes + klen, value, vlen);
    e->sum = sc_shm_slot_sum(s, e);
    __atomic_thread_fence(__ATOMIC_RELEASE);
    e->gen++;
    tags[pick] = sc_shm_tag(hash);
    ticks[pick] = ++st->clock;
    st->count++;
    st->bytes += (uint32_t)(klen + vlen);
    sc_shm_unlock(s, stripe);
    sc_shm_count(&s->h->stores);
    return 1;
}

/* The live slot of key (lock held), made most recently used, or -1; an expired one is
 * wiped and counted. */
static long sc_shm_live(sc_shm *s, uint32_t stripe, const unsigned char *key, size_t klen,
                        uint32_t hash, double now)
{
    sc_shm_stripe *st = sc_shm_stripe_of(s, stripe);
    long at = sc_shm_find(s, stripe, st, key, klen, hash);
    if (at < 0)
        return -1;
    if (sc_shm_slot_at(s, stripe, (uint32_t)at)->expires <= now) {
        sc_shm_count(&s->h->expired);
        sc_shm_wipe(s, stripe, st, (uint32_t)at);
        return -1;
    }
    sc_shm_ticks(st)[at] = ++st->clock;
    return at;
}

/* Copies the value into out (cap bytes): 1 copied, 0 none (or the lock timed out), -1
 * larger than cap (nothing copied). take: remove it too, atomically. decoded: as
 * sc_mem_lookup's (not with take). */
static int sc_shm_read_in(sc_shm *s, const unsigned char *key, size_t klen, double now, int take,
                          unsigned char *out, size_t cap, size_t *vlen, int slot,
                          SSL_SESSION **decoded)
{
    uint32_t hash, stripe;
    sc_shm_slot *e;
    long at;
    int found = 0;
    if (!sc_shm_usable(s))
        return 0;
    hash = sc_shm_hash(s, key, klen);
    stripe = hash % s->h->nstripes;
    if (!sc_shm_lock(s, stripe)) {
        sc_shm_count(&s->h->misses);
        return 0;
    }
    at = sc_shm_live(s, stripe, key, klen, hash, now);
    if (at >= 0) {
        e = sc_shm_slot_at(s, stripe, (uint32_t)at);
        found = -1;
        if (e->vlen <= cap) {
            memcpy(out, e->bytes + e->klen, e->vlen);
            *vlen = e->vlen;
            found = 1;
            if (take)
                sc_shm_wipe(s, stripe, sc_shm_stripe_of(s, stripe), (uint32_t)at);
            else if (decoded != NULL) {
                sc_shm_line *line = sc_shm_line_of(s, stripe, (uint32_t)at);
                if (line != NULL && line->at == (uint32_t)at + 1 &&
                    (line->gen != e->gen || line->sum != e->sum))
                    sc_shm_forget_decoded(s, stripe, (uint32_t)at); /* rewritten elsewhere */
                else if (line != NULL && line->at == (uint32_t)at + 1 && line->slot == slot &&
                         line->sess != NULL && sc_apis[slot].SSL_SESSION_up_ref(line->sess) == 1)
                    *decoded = line->sess;
            }
        }
    }
    sc_shm_unlock(s, stripe);
    sc_shm_count(found == 1 ? &s->h->hits : &s->h->misses);
    return found;
}

/* Keeps sess (taken over) on the line of the slot holding key, when that slot still holds
 * exactly value; otherwise frees it. */
static void sc_shm_keep_decoded_in(sc_shm *s, const unsigned char *key, size_t klen,
                                   const unsigned char *value, size_t vlen, int slot,
                                   SSL_SESSION *sess)
{
    uint32_t hash, stripe, per;
    sc_shm_line *lines, *line;
    sc_shm_slot *e;
    long at;
    if (!sc_shm_usable(s))
        goto give_back;
    lines = __atomic_load_n(&s->lines, __ATOMIC_ACQUIRE);
    if (lines == NULL) {
        sc_shm_line *none = NULL;
        per = SC_SHM_DECODED_MAX / s->h->nstripes;
        if (per < 1)
            per = 1;
        if (per > s->h->per_stripe)
            per = s->h->per_stripe;
        lines = calloc((size_t)s->h->nstripes * per, sizeof(*lines));
        if (lines == NULL)
            goto give_back;
        /* lines_per_stripe is set once, before the first lines are published (racing
         * callers compute the same value). */
        s->lines_per_stripe = per;
        if (!__atomic_compare_exchange_n(&s->lines, &none, lines, 0, __ATOMIC_ACQ_REL,
                                         __ATOMIC_ACQUIRE))
            free(lines); /* another thread made them first: no session is on these */
    }
    hash = sc_shm_hash(s, key, klen);
    stripe = hash % s->h->nstripes;
    if (!sc_shm_lock(s, stripe))
        goto give_back;
    at = sc_shm_find(s, stripe, sc_shm_stripe_of(s, stripe), key, klen, hash);
    if (at >= 0) {
        e = sc_shm_slot_at(s, stripe, (uint32_t)at);
        line = sc_shm_line_of(s, stripe, (uint32_t)at);
        if (e->vlen == vlen && memcmp(e->bytes + e->klen, value, vlen) == 0) {
            int old_slot = line->slot;
            SSL_SESSION *old = sc_shm_line_set(line, e, (uint32_t)at, slot, sess);
            sess = NULL;
            sc_shm_unlock(s, stripe);
            if (old != NULL)
                sc_apis[old_slot].SSL_SESSION_free(old);
            return;
        }
    }
    sc_shm_unlock(s, stripe);
give_back:
    sc_apis[slot].SSL_SESSION_free(sess);
}

/* 1 deleted, 0 absent, -1 the lock timed out. */
static int sc_shm_delete_in(sc_shm *s, const unsigned char *key, size_t klen)
{
    uint32_t hash, stripe;
    long at;
    if (!sc_shm_usable(s))
        return 0;
    hash = sc_shm_hash(s, key, klen);
    stripe = hash % s->h->nstripes;
    if (!sc_shm_lock(s, stripe))
        return -1;
    at = sc_shm_find(s, stripe, sc_shm_stripe_of(s, stripe), key, klen, hash);
    if (at >= 0)
        sc_shm_wipe(s, stripe, sc_shm_stripe_of(s, stripe), (uint32_t)at);
    sc_shm_unlock(s, stripe);
    return at >= 0;
}

/* Wipes every entry (expired_only: the expired ones); returns how many, or -1 when a
 * stripe's lock timed out (the others are done). */
static long long sc_shm_clear_in(sc_shm *s, int expired_only, double now)
{
    uint32_t stripe, i;
    long long n = 0;
    int timed_out = 0;
    if (!sc_shm_usable(s))
        return 0;
    for (stripe = 0; stripe < s->h->nstripes; stripe++) {
        sc_shm_stripe *st = sc_shm_stripe_of(s, stripe);
        uint32_t *tags;
        if (!sc_shm_lock(s, stripe)) {
            timed_out = 1;
            continue;
        }
        tags = sc_shm_tags(s, st);
        for (i = 0; i < s->h->per_stripe; i++)
            if (tags[i] != 0 && (!expired_only || sc_shm_slot_at(s, stripe, i)->expires <= now)) {
                sc_shm_wipe(s, stripe, st, i);
                n++;
            }
        sc_shm_unlock(s, stripe);
    }
    if (expired_only)
        __atomic_add_fetch(&s->h->expired, n, __ATOMIC_RELAXED);
    return timed_out ? -1 : n;
}

static void sc_shm_describe_in(sc_shm *s, sc_shm_info *info)
{
    sc_shm_header *h = s->h;
    uint32_t stripe;
    memset(info, 0, sizeof(*info));
    info->size = h->size;
    info->stripes = h->nstripes;
    info->slots = (long long)h->nstripes * h->per_stripe;
    info->entry_cap = h->entry_cap;
    for (stripe = 0; stripe < h->nstripes; stripe++) {
        sc_shm_stripe *st = sc_shm_stripe_of(s, stripe);
        info->entries += __atomic_load_n(&st->count, __ATOMIC_RELAXED);
        info->bytes += __atomic_load_n(&st->bytes, __ATOMIC_RELAXED);
    }
#define SC_SHM_READ(field) info->field = __atomic_load_n(&h->field, __ATOMIC_RELAXED)
    SC_SHM_READ(hits);
    SC_SHM_READ(misses);
    SC_SHM_READ(stores);
    SC_SHM_READ(evictions);
    SC_SHM_READ(expired);
    SC_SHM_READ(lock_timeouts);
    SC_SHM_READ(repairs);
    SC_SHM_READ(torn);
    SC_SHM_READ(rebuilds);
#undef SC_SHM_READ
}

/* --- opening ------------------------------------------------------------------------- */

/* The geometry of a segment of `size` bytes with slots for entry_cap bytes, into h. */
static int sc_shm_plan(sc_shm_header *h, uint64_t size, uint32_t entry_cap)
{
    uint64_t stride = (offsetof(sc_shm_slot, bytes) + (uint64_t)entry_cap + 63) & ~(uint64_t)63;
    uint64_t approx, per, stripe_stride, slots_at;
    uint32_t nstripes = SC_SHM_MAX_STRIPES;
    if (size < SC_SHM_MIN_SIZE || entry_cap < 64 || entry_cap > (1u << 24))
        return 0;
    approx = (size - SC_SHM_HEADER_SIZE) / (stride + 12);
    while (nstripes > 1 && approx / nstripes < SC_SHM_MIN_PER)
        nstripes /= 2;
    per = approx / nstripes + 1;
    do {
        per--;
        stripe_stride = (SC_SHM_STRIPE_HEAD + per * 12 + 63) & ~(uint64_t)63;
        slots_at = (SC_SHM_HEADER_SIZE + nstripes * stripe_stride + 4095) & ~(uint64_t)4095;
    } while (per > 0 && slots_at + nstripes * per * stride > size);
    if (per < 1 || per > 0xffffff)
        return 0;
    memset(h, 0, sizeof(*h));
    memcpy(h->magic, SC_SHM_MAGIC, 8);
    h->version = SC_SHM_VERSION;
    h->header_size = SC_SHM_HEADER_SIZE;
    h->size = size;
    strncpy(h->libc, SC_SHM_LIBC, sizeof(h->libc) - 1);
    h->mutex_size = (uint32_t)sizeof(pthread_mutex_t);
    h->pointer_size = (uint32_t)sizeof(void *);
    h->nstripes = nstripes;
    h->per_stripe = (uint32_t)per;
    h->slot_stride = (uint32_t)stride;
    h->entry_cap = entry_cap;
    h->stripe_stride = (uint32_t)stripe_stride;
    h->slots_at = slots_at;
    return 1;
}

/* 1 when the header on the file (mapped at base, file_size bytes) is whole and of the
 * layout `want` describes. */
static int sc_shm_header_matches(const sc_shm_header *on, uint64_t file_size,
                                 const sc_shm_header *want)
{
    return file_size == want->size && memcmp(on, want, offsetof(sc_shm_header, seed)) == 0 &&
           on->sum == sc_shm_header_sum(on);
}

static int sc_shm_init_mutex(pthread_mutex_t *m)
{
    pthread_mutexattr_t attr;
    int rc = sc_pt.mutexattr_init(&attr);
    if (rc == 0)
        rc = sc_pt.mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
    if (rc == 0)
        rc = sc_pt.mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
    if (rc == 0)
        rc = pthread_mutex_init(m, &attr);
    sc_pt.mutexattr_destroy(&attr);
    return rc;
}

/* Alone on the segment (exclusive flock held): make every mutex anew; with keep, keep
 * every slot that checks out, else start empty. 0 or an errno of pthread_mutex_init. */
static int sc_shm_make_stripes(sc_shm *s, int keep)
{
    uint32_t stripe;
    int rc;
    for (stripe = 0; stripe < s->h->nstripes; stripe++) {
        sc_shm_stripe *st = sc_shm_stripe_of(s, stripe);
        rc = sc_shm_init_mutex(&st->lock);
        if (rc != 0)
            return rc;
        if (keep) {
            sc_shm_repair(s, stripe);
        } else {
            st->clock = 0;
            st->count = 0;
            st->bytes = 0;
            memset(sc_shm_ticks(st), 0, (size_t)s->h->per_stripe * 12);
        }
    }
    return 0;
}

static int sc_shm_fail(sc_shm_report *r, int code, int errnum)
{
    r->code = code;
    r->errnum = errnum;
    return 0;
}

/* Maps the file's `size` bytes into s; 0 with *r filled when it cannot. */
static int sc_shm_map(sc_shm *s, uint64_t size, int fd, sc_shm_report *r)
{
    void *base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (base == MAP_FAILED)
        return sc_shm_fail(r, SC_SHM_E_MAP, errno);
    s->base = base;
    s->size = size;
    s->h = (sc_shm_header *)base;
    return 1;
}

/* Alone on the file (exclusive flock): map it, and rebuild or recover it. */
static int sc_shm_take_alone(sc_shm *s, const sc_shm_header *want, int fd, sc_shm_report *r)
{
    sc_shm_stat sb;
    int rebuild, rc;
    if (sc_shm_fstat(fd, &sb) != 0)
        return sc_shm_fail(r, SC_SHM_E_OPEN, errno);
    rebuild = (uint64_t)sb.size != want->size;
    if (!rebuild) {
        sc_shm_header on;
        if (pread(fd, &on, sizeof(on), 0) != (ssize_t)sizeof(on))
            rebuild = 1;
        else
            rebuild = !sc_shm_header_matches(&on, (uint64_t)sb.size, want);
    }
    if (rebuild) {
        struct statvfs fs;
        /* The room first: on a tmpfs as large as the memory (containers), posix_fallocate
         * of more than is free fills the memory page by page before it fails, and the OOM
         * killer chooses someone. */
        if (ftruncate(fd, 0) != 0)
            return sc_shm_fail(r, SC_SHM_E_SPACE, errno);
        if (fstatvfs(fd, &fs) == 0 && (uint64_t)fs.f_bavail * fs.f_frsize < want->size)
            return sc_shm_fail(r, SC_SHM_E_SPACE, ENOSPC);
        if (ftruncate(fd, (off_t)want->size) != 0)
            return sc_shm_fail(r, SC_SHM_E_SPACE, errno);
        rc = posix_fallocate(fd, 0, (off_t)want->size);
        if (rc != 0) {
            if (ftruncate(fd, 0) != 0) { /* give the space back; the file stays, empty */
            }
            return sc_shm_fail(r, SC_SHM_E_SPACE, rc);
        }
    }
    if (!sc_shm_map(s, want->size, fd, r))
        return 0;
    if (rebuild) {
        uint64_t seed;
        memcpy(s->h, want, sizeof(*want));
        if (getrandom(&seed, sizeof(seed), GRND_NONBLOCK) != (ssize_t)sizeof(seed))
            seed = (uint64_t)getpid() ^ (uint64_t)(sc_monotonic() * 1e9);
        s->h->seed = seed;
        s->h->magic[0] = 0; /* not whole until the end */
        rc = sc_shm_make_stripes(s, 0);
        if (rc != 0)
            return sc_shm_fail(r, SC_SHM_E_MUTEX, rc);
        s->h->magic[0] = SC_SHM_MAGIC[0];
        s->h->sum = sc_shm_header_sum(s->h);
        s->h->rebuilds++;
    } else {
        rc = sc_shm_make_stripes(s, 1);
        if (rc != 0)
            return sc_shm_fail(r, SC_SHM_E_MUTEX, rc);
    }
    msync(s->base, SC_SHM_HEADER_SIZE, MS_ASYNC);
    return 1;
}

/* Sharing the file (shared flock): 1 when its header is the one wanted, and then mapped. */
static int sc_shm_join(sc_shm *s, const sc_shm_header *want, int fd, sc_shm_report *r)
{
    sc_shm_stat sb;
    sc_shm_header on;
    if (sc_shm_fstat(fd, &sb) != 0)
        return sc_shm_fail(r, SC_SHM_E_OPEN, errno);
    if ((uint64_t)sb.size < sizeof(on) || pread(fd, &on, sizeof(on), 0) != (ssize_t)sizeof(on))
        return sc_shm_fail(r, SC_SHM_E_BUSY, 0);
    if (!sc_shm_header_matches(&on, (uint64_t)sb.size, want)) {
        if (memcmp(on.magic, SC_SHM_MAGIC, 8) == 0 && on.sum == sc_shm_header_sum(&on)) {
            r->size = on.size;
            r->version = on.version;
            r->entry_cap = on.entry_cap;
            memcpy(r->libc, on.libc, sizeof(r->libc) - 1);
            return sc_shm_fail(r, SC_SHM_E_IN_USE, 0);
        }
        return sc_shm_fail(r, SC_SHM_E_BUSY, 0);
    }
    if (!sc_shm_map(s, want->size, fd, r))
        return 0;
    return 1;
}

static int sc_shm_open_file(const char *path, sc_shm_report *r)
{
    sc_shm_stat sb;
    int fd;
    for (;;) {
        fd = open(path, O_RDWR | O_NOFOLLOW | O_CLOEXEC);
        if (fd >= 0 || errno != ENOENT)
            break;
        fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (fd >= 0) {
            if (fchmod(fd, 0600) != 0) { /* the umask may have taken bits: put them back */
            }
            break;
        }
        if (errno != EEXIST)
            break;
    }
    if (fd < 0)
        return sc_shm_fail(r, SC_SHM_E_OPEN, errno) - 1;
    if (sc_shm_fstat(fd, &sb) != 0) {
        sc_shm_fail(r, SC_SHM_E_OPEN, errno);
        close(fd);
        return -1;
    }
    r->owner = (unsigned int)sb.uid;
    r->mode = (unsigned int)sb.mode;
    if (!S_ISREG(sb.mode) || sb.uid != geteuid()) {
        sc_shm_fail(r, S_ISREG(sb.mode) ? SC_SHM_E_OWNER : SC_SHM_E_MODE, 0);
        close(fd);
        return -1;
    }
    if ((sb.mode & 077) != 0) {
        sc_shm_fail(r, SC_SHM_E_MODE, 0);
        close(fd);
        return -1;
    }
    return fd;
}

/* Opens (creating, rebuilding or recovering) the segment at path; NULL with *r filled
 * when it cannot. lock_timeout: seconds a lock is waited for. */
sc_shm *sc_shm_open(const char *path, unsigned long long size, unsigned int entry_cap,
                    double lock_timeout, sc_shm_report *r)
{
    sc_shm_header want, on;
    sc_shm *s;
    int fd, tries, ok = 0;
    memset(r, 0, sizeof(*r));
    if (!(lock_timeout > 0 && lock_timeout <= 60)) {
        sc_shm_fail(r, SC_SHM_E_ARGS, 0);
        return NULL;
    }
    fd = sc_shm_open_file(path, r);
    if (fd < 0)
        return NULL;
    /* 0 for size or entry_cap: what the segment has, when it has a whole header of this
     * format (a reader such as `sesscache stats --store shm:NAME`), else the default. */
    if (size == 0 || entry_cap == 0) {
        int whole = pread(fd, &on, sizeof(on), 0) == (ssize_t)sizeof(on) &&
                    memcmp(on.magic, SC_SHM_MAGIC, 8) == 0 && on.version == SC_SHM_VERSION &&
                    on.sum == sc_shm_header_sum(&on);
        if (size == 0)
            size = whole ? on.size : SC_SHM_DEFAULT_SIZE;
        if (entry_cap == 0)
            entry_cap = whole ? on.entry_cap : SC_SHM_DEFAULT_ENTRY_CAP;
    }
    if (!sc_shm_plan(&want, size, entry_cap)) {
        sc_shm_fail(r, SC_SHM_E_ARGS, 0);
        close(fd);
        return NULL;
    }
    s = calloc(1, sizeof(*s));
    if (s == NULL) {
        sc_shm_fail(r, SC_SHM_E_MAP, ENOMEM);
        close(fd);
        return NULL;
    }
    s->lock_timeout = lock_timeout;
    for (tries = 0; tries < SC_SHM_OPEN_TRIES && !ok; tries++) {
        if (flock(fd, LOCK_EX | LOCK_NB) == 0) {
            ok = sc_shm_take_alone(s, &want, fd, r);
            if (ok) {
                if (flock(fd, LOCK_SH) != 0) { /* a downgrade cannot wait: never fails */
                }
            } else {
                flock(fd, LOCK_UN);
                break; /* no room, no mapping: an error to report, not a race */
            }
        } else if (flock(fd, LOCK_SH | LOCK_NB) == 0) {
            ok = sc_shm_join(s, &want, fd, r);
            if (!ok) {
                flock(fd, LOCK_UN);
                if (r->code != SC_SHM_E_BUSY && r->code != SC_SHM_E_IN_USE)
                    break;
                if (r->code == SC_SHM_E_IN_USE && tries > 20)
                    break; /* in use with another layout for 100 ms: not a race */
            }
        }
        if (!ok) {
            struct timespec pause = {0, 2000000 + (long)(getpid() % 7) * 500000};
            nanosleep(&pause, NULL);
        }
    }
    if (!ok) {
        if (r->code == 0)
            sc_shm_fail(r, SC_SHM_E_BUSY, 0);
        if (s->base != NULL) /* mapped, then no mutex could be made */
            munmap(s->base, s->size);
        close(fd);
        free(s);
        return NULL;
    }
    r->code = 0;
    s->fd = fd;
    s->own_file = 1;
    s->path = strdup(path);
    {
        sc_shm_stat sb;
        if (s->path == NULL || sc_shm_fstat(fd, &sb) != 0) {
            free(s->path);
            s->path = NULL;
        } else {
            s->dev = sb.dev;
            s->ino = sb.ino;
        }
    }
    if (s->path != NULL) {
        if (!__atomic_exchange_n(&sc_shm_fork_registered, 1, __ATOMIC_ACQ_REL))
            sc_shm_register_fork();
        s->next_made = __atomic_load_n(&sc_shm_all, __ATOMIC_ACQUIRE);
        while (!__atomic_compare_exchange_n(&sc_shm_all, &s->next_made, s, 1, __ATOMIC_ACQ_REL,
                                            __ATOMIC_ACQUIRE))
            ;
    }
    return s;
}

/* Releases the file (and, with it, this process's share of the flock); the mapping and the
 * struct stay, answering "nothing here" (see the top of the file). */
void sc_shm_close(sc_shm *s)
{
    if (s == NULL || __atomic_exchange_n(&s->closed, 1, __ATOMIC_ACQ_REL))
        return;
    /* The mapping keeps the open file (and its lock) alive: unlock explicitly, unless the
     * file is still shared with the parent of a fork. */
    if (s->own_file)
        flock(s->fd, LOCK_UN);
    close(s->fd);
    s->fd = -1;
    /* Unmapped once the calls under way are done (each holds a stripe for microseconds,
     * or lock_timeout at most): the pages go back to the system when the file is gone. */
    while (__atomic_load_n(&s->users, __ATOMIC_SEQ_CST) > 0) {
        struct timespec pause = {0, 100000};
        nanosleep(&pause, NULL);
    }
    {
        /* No call is inside any more, and none will be: the decoded sessions go. */
        sc_shm_line *lines = __atomic_exchange_n(&s->lines, NULL, __ATOMIC_ACQ_REL);
        size_t i, n = lines == NULL ? 0 : (size_t)s->h->nstripes * s->lines_per_stripe;
        for (i = 0; i < n; i++)
            if (lines[i].sess != NULL)
                sc_apis[lines[i].slot].SSL_SESSION_free(lines[i].sess);
        free(lines);
    }
    munmap(s->base, s->size);
    s->base = NULL;
    s->h = NULL;
}

/* For tests: the geometry a segment of these parameters gets (0: none fits). */
long long sc_shm_slots_for(unsigned long long size, unsigned int entry_cap)
{
    sc_shm_header h;
    if (!sc_shm_plan(&h, size, entry_cap))
        return 0;
    return (long long)h.nstripes * h.per_stripe;
}

/* For tests: hold the lock of key's stripe for `seconds` (a process stopped or killed
 * meanwhile leaves it held, as a real holder would). 1 when it was held. */
static int sc_shm_hold_for_test_in(sc_shm *s, const unsigned char *key, size_t klen, double seconds)
{
    uint32_t stripe;
    struct timespec pause;
    if (!sc_shm_usable(s))
        return 0;
    stripe = sc_shm_hash(s, key, klen) % s->h->nstripes;
    if (!sc_shm_lock(s, stripe))
        return 0;
    pause.tv_sec = (time_t)seconds;
    pause.tv_nsec = (long)((seconds - (double)pause.tv_sec) * 1e9);
    nanosleep(&pause, NULL);
    sc_shm_unlock(s, stripe);
    return 1;
}

/* --- the calls Python and the fast path make: inside the mapping only while open -------- */

/* Every call that touches the mapping is counted in while it runs, so that sc_shm_close
 * can unmap it once the calls under way are done (a later call sees it closed). */
static int sc_shm_enter(sc_shm *s)
{
    if (s == NULL)
        return 0;
    __atomic_add_fetch(&s->users, 1, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(&s->closed, __ATOMIC_SEQ_CST)) {
        __atomic_sub_fetch(&s->users, 1, __ATOMIC_SEQ_CST);
        return 0;
    }
    return 1;
}

static void sc_shm_leave(sc_shm *s) { __atomic_sub_fetch(&s->users, 1, __ATOMIC_SEQ_CST); }

int sc_shm_set(sc_shm *s, const unsigned char *key, size_t klen, const unsigned char *value,
               size_t vlen, double ttl, double now)
{
    int rc;
    if (!sc_shm_enter(s))
        return 0;
    rc = sc_shm_set_in(s, key, klen, value, vlen, ttl, now);
    sc_shm_leave(s);
    return rc;
}

int sc_shm_read(sc_shm *s, const unsigned char *key, size_t klen, double now, int take,
                unsigned char *out, size_t cap, size_t *vlen)
{
    int rc;
    if (!sc_shm_enter(s))
        return 0;
    rc = sc_shm_read_in(s, key, klen, now, take, out, cap, vlen, 0, NULL);
    sc_shm_leave(s);
    return rc;
}

/* The fast path's read (sc_mem_lookup's, for a table over the segment). */
static int sc_shm_lookup(sc_shm *s, const unsigned char *key, size_t klen, double now,
                         unsigned char *out, size_t cap, size_t *vlen, int slot,
                         SSL_SESSION **decoded)
{
    int rc;
    if (!sc_shm_enter(s))
        return 0;
    rc = sc_shm_read_in(s, key, klen, now, 0, out, cap, vlen, slot, decoded);
    sc_shm_leave(s);
    return rc;
}

static void sc_shm_keep_decoded(sc_shm *s, const unsigned char *key, size_t klen,
                                const unsigned char *value, size_t vlen, int slot,
                                SSL_SESSION *sess)
{
    if (!sc_shm_enter(s)) {
        sc_apis[slot].SSL_SESSION_free(sess);
        return;
    }
    sc_shm_keep_decoded_in(s, key, klen, value, vlen, slot, sess);
    sc_shm_leave(s);
}

int sc_shm_delete(sc_shm *s, const unsigned char *key, size_t klen)
{
    int rc;
    if (!sc_shm_enter(s))
        return 0;
    rc = sc_shm_delete_in(s, key, klen);
    sc_shm_leave(s);
    return rc;
}

long long sc_shm_clear(sc_shm *s, int expired_only, double now)
{
    long long n;
    if (!sc_shm_enter(s))
        return 0;
    n = sc_shm_clear_in(s, expired_only, now);
    sc_shm_leave(s);
    return n;
}

/* The counters; all zero once closed. */
void sc_shm_describe(sc_shm *s, sc_shm_info *info)
{
    memset(info, 0, sizeof(*info));
    if (!sc_shm_enter(s))
        return;
    sc_shm_describe_in(s, info);
    sc_shm_leave(s);
}

int sc_shm_hold_for_test(sc_shm *s, const unsigned char *key, size_t klen, double seconds)
{
    int rc;
    if (!sc_shm_enter(s))
        return 0;
    rc = sc_shm_hold_for_test_in(s, key, klen, seconds);
    sc_shm_leave(s);
    return rc;
}
