/* New sessions on their way to a network store, without Python (issue 22).
 *
 * With a Redis local replica the cache's C fast path answers lookups from the replica's
 * table, but every new session (each TLS 1.3 resumption makes one) entered Python only to
 * be handed to ResilientStore's writer thread. Now the fast path stores it in the
 * replica's table (this process answers for it at once) and copies (key, value, expiry)
 * into this ring; the writer thread, waiting here with the GIL released (cffi releases it
 * around every call), takes them in batches and sends them on in one round trip.
 *
 * Bounded: a full ring drops the session (counted in `dropped`) and never makes the
 * handshake wait; the session stays in the replica's table and OpenSSL's own cache, as
 * with a full write queue in Python. A value larger than a slot is refused before anything
 * is stored: the fast path hands it to Python, which queues it.
 *
 * One ring per ResilientStore and process. After fork() the child's ring is emptied and
 * its lock and condition made anew (sesscache._fork calls sc_ring_after_fork in the child
 * before any other Python code; the parent writes what it holds). The ring itself is never
 * freed, as the fast-path policies that point at it (fast_path.c): a context can outlive
 * its cache and still run a callback. sc_ring_close frees the slots and refuses puts.
 *
 * Lock order: a table's lock is never held while this one is taken (the fast path stores
 * in the table, then puts here). */
#include "sesscache.h"

#define SC_RING_VALUE_MAX    1024 /* larger values go through Python */
#define SC_RING_CAPACITY_MAX 65536

typedef struct {
    unsigned char key[SC_STORE_KEY_MAX];
    unsigned char value[SC_RING_VALUE_MAX];
    unsigned int key_len, value_len;
    double expires; /* wall clock, seconds since the epoch */
} sc_ring_slot;

typedef struct sc_ring {
    pthread_mutex_t lock;
    pthread_cond_t ready; /* signalled when a put finds the writer waiting, and by wake */
    sc_ring_slot *slots;  /* NULL once closed */
    int capacity, start, count;
    clockid_t clock; /* the clock the condition's waits are timed on */
    int waiting;     /* the writer waits in sc_ring_wait */
    int woken;       /* sc_ring_wake: the next wait returns at once */
    long long put, dropped, taken;
} sc_ring;

/* pthread_condattr_setclock as the process's C library has it, handed in by Python
 * (sc_ring_use_setclock; stores/resilient.py asks the dynamic linker): linked directly,
 * glibc 2.34+ binds it to its GLIBC_2.34 version (libpthread moved into libc), newer than
 * the manylinux_2_28 wheels promise (tests/test_build.py), as shm_store.c's mutexes. */
static int (*sc_ring_setclock)(pthread_condattr_t *, clockid_t);

void sc_ring_use_setclock(void *fn)
{
    __atomic_store_n(&sc_ring_setclock, (int (*)(pthread_condattr_t *, clockid_t))fn,
                     __ATOMIC_RELEASE);
}

/* The writer's waits are on the monotonic clock when the C library lets the condition use
 * it; else on the wall clock, where a clock set back lengthens a wait that nothing wakes. */
static void sc_ring_init_sync(sc_ring *r)
{
    pthread_condattr_t attr;
    int (*setclock)(pthread_condattr_t *, clockid_t) =
        __atomic_load_n(&sc_ring_setclock, __ATOMIC_ACQUIRE);
    pthread_mutex_init(&r->lock, NULL);
    pthread_condattr_init(&attr);
    r->clock = CLOCK_REALTIME;
    if (setclock != NULL && setclock(&attr, CLOCK_MONOTONIC) == 0)
        r->clock = CLOCK_MONOTONIC;
    pthread_cond_init(&r->ready, &attr);
    pthread_condattr_destroy(&attr);
}

/* A ring of capacity slots (1 to SC_RING_CAPACITY_MAX), or NULL. */
sc_ring *sc_ring_new(int capacity)
{
    sc_ring *r;
    if (capacity < 1 || capacity > SC_RING_CAPACITY_MAX)
        return NULL;
    r = calloc(1, sizeof(*r));
    if (r == NULL)
        return NULL;
    r->slots = calloc((size_t)capacity, sizeof(*r->slots));
    if (r->slots == NULL) {
        free(r);
        return NULL;
    }
    r->capacity = capacity;
    sc_ring_init_sync(r);
    return r;
}

/* The largest value a slot holds. */
int sc_ring_value_max(void) { return SC_RING_VALUE_MAX; }

/* 1 when a put of a value_len-byte value can be taken (open, fits a slot); it may still
 * be dropped when the ring is full. */
static int sc_ring_accepts(sc_ring *r, size_t key_len, size_t value_len)
{
    return key_len <= SC_STORE_KEY_MAX && value_len <= SC_RING_VALUE_MAX &&
           __atomic_load_n(&r->slots, __ATOMIC_ACQUIRE) != NULL;
}

/* 1: copied in; 0: the ring is full, dropped and counted; -1: closed or too large (the
 * caller hands the session to Python). Never waits for anything but the ring's lock,
 * which is held only to copy one entry in or out. */
static int sc_ring_put(sc_ring *r, const unsigned char *key, size_t key_len,
                       const unsigned char *value, size_t value_len, double expires)
{
    sc_ring_slot *slot;
    int done;
    if (key_len > SC_STORE_KEY_MAX || value_len > SC_RING_VALUE_MAX)
        return -1;
    pthread_mutex_lock(&r->lock);
    if (r->slots == NULL) {
        done = -1;
    } else if (r->count >= r->capacity) {
        r->dropped++;
        done = 0;
    } else {
        slot = &r->slots[(r->start + r->count) % r->capacity];
        memcpy(slot->key, key, key_len);
        memcpy(slot->value, value, value_len);
        slot->key_len = (unsigned int)key_len;
        slot->value_len = (unsigned int)value_len;
        slot->expires = expires;
        r->count++;
        r->put++;
        if (r->waiting)
            pthread_cond_signal(&r->ready);
        done = 1;
    }
    pthread_mutex_unlock(&r->lock);
    return done;
}

/* Takes up to cap entries, oldest first: keys into keys (SC_STORE_KEY_MAX bytes each),
 * values into values (sc_ring_value_max() bytes each), their lengths and expiry (wall
 * clock); returns how many. Each slot is wiped once copied (values hold session secrets). */
int sc_ring_take(sc_ring *r, unsigned char *keys, unsigned int *key_lens, unsigned char *values,
                 unsigned int *value_lens, double *expires, int cap)
{
    sc_ring_slot *slot;
    int n = 0;
    pthread_mutex_lock(&r->lock);
    while (r->slots != NULL && n < cap && r->count > 0) {
        slot = &r->slots[r->start];
        memcpy(keys + (size_t)n * SC_STORE_KEY_MAX, slot->key, slot->key_len);
        memcpy(values + (size_t)n * SC_RING_VALUE_MAX, slot->value, slot->value_len);
        key_lens[n] = slot->key_len;
        value_lens[n] = slot->value_len;
        expires[n] = slot->expires;
        explicit_bzero(slot->value, slot->value_len);
        r->start = (r->start + 1) % r->capacity;
        r->count--;
        n++;
    }
    r->taken += n;
    pthread_mutex_unlock(&r->lock);
    return n;
}

/* Waits up to timeout seconds for an entry (or a wake); returns how many are waiting. */
int sc_ring_wait(sc_ring *r, double timeout)
{
    struct timespec until;
    double whole;
    int n;
    clock_gettime(r->clock, &until);
    if (timeout < 0)
        timeout = 0;
    whole = (double)(long long)timeout;
    until.tv_sec += (time_t)whole;
    until.tv_nsec += (long)((timeout - whole) * 1e9);
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&r->lock);
    r->waiting = 1;
    while (r->count == 0 && !r->woken && r->slots != NULL) {
        if (pthread_cond_timedwait(&r->ready, &r->lock, &until) == ETIMEDOUT)
            break;
    }
    r->waiting = 0;
    r->woken = 0;
    n = r->count;
    pthread_mutex_unlock(&r->lock);
    return n;
}

/* The writer's next (or current) sc_ring_wait returns at once: Python queued a write. */
void sc_ring_wake(sc_ring *r)
{
    pthread_mutex_lock(&r->lock);
    r->woken = 1;
    pthread_cond_signal(&r->ready);
    pthread_mutex_unlock(&r->lock);
}

int sc_ring_count(sc_ring *r) { return __atomic_load_n(&r->count, __ATOMIC_ACQUIRE); }

void sc_ring_counts_of(sc_ring *r, long long *put, long long *dropped, long long *taken)
{
    pthread_mutex_lock(&r->lock);
    *put = r->put;
    *dropped = r->dropped;
    *taken = r->taken;
    pthread_mutex_unlock(&r->lock);
}

/* For good: entries still held are wiped, later puts refused (-1), a waiting writer woken. */
void sc_ring_close(sc_ring *r)
{
    sc_ring_slot *slots;
    pthread_mutex_lock(&r->lock);
    slots = r->slots;
    __atomic_store_n(&r->slots, NULL, __ATOMIC_RELEASE);
    r->count = 0;
    r->woken = 1;
    pthread_cond_broadcast(&r->ready);
    pthread_mutex_unlock(&r->lock);
    if (slots != NULL) {
        explicit_bzero(slots, (size_t)r->capacity * sizeof(*slots));
        free(slots);
    }
}

/* In a forked child, before any other thread can exist: the parent's entries are the
 * parent's to write (wiped here), the lock and condition are made anew (a parent's thread
 * may have held the lock at the fork), and the counters start at zero. */
void sc_ring_after_fork(sc_ring *r)
{
    if (r->slots != NULL)
        explicit_bzero(r->slots, (size_t)r->capacity * sizeof(*r->slots));
    r->start = r->count = 0;
    r->waiting = r->woken = 0;
    r->put = r->dropped = r->taken = 0;
    sc_ring_init_sync(r);
}
