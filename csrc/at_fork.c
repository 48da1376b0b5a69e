/* fork() and the C tables: every mutex sesscache owns is free and consistent in the child.
 *
 * The locks: each sc_mem's (MemoryStore, and sesscache.aio's prefetch tables,
 * which are sc_mem tables too) and each fast-path policy's journal_lock. (A
 * context's certificate fingerprint is kept under a sequence lock, trampolines.py: a
 * writer caught by the fork leaves readers that compute it themselves, never waiting.) A thread of the parent that holds one at fork() does not exist in
 * the child, so the lock would stay held there for ever and the child's first handshake
 * would hang. The handlers registered with pthread_atfork (every kind of fork, from
 * Python's os.fork or from C) take every lock before the fork, so no table is caught
 * half-changed, and release them on both sides; a table made by another thread during the
 * fork gets its lock made anew in the child.
 *
 * Counters: the child starts its own at zero (the fast path's, the seal rings' and the tables' evictions
 * and expired), so the stats of prefork workers add up without the parent's traffic
 * counted once per worker. sesscache._fork does the same for the Python side.
 *
 * Lock order: the fast path takes a journal lock and then a table's lock (a journal entry
 * and its stored session go together), never the other way: so do the handlers. */
#include "sesscache.h"

/* --- fork() ---------------------------------------------------------------------------- */

/* What sc_fork_prepare locked: the lists only ever grow at their head, so everything
 * from these heads on was locked, and anything nearer the head was made during the fork. */
static sc_fast *sc_fork_fast_locked;
static sc_mem *sc_fork_mem_locked;

static void sc_fork_prepare(void)
{
    sc_fast *f;
    sc_mem *m;
    sc_fork_fast_locked = __atomic_load_n(&sc_fast_all, __ATOMIC_ACQUIRE);
    for (f = sc_fork_fast_locked; f != NULL; f = f->next_made) {
        pthread_mutex_lock(&f->journal_lock);
    }
    sc_fork_mem_locked = __atomic_load_n(&sc_mem_all, __ATOMIC_ACQUIRE);
    for (m = sc_fork_mem_locked; m != NULL; m = m->next_made)
        pthread_mutex_lock(&m->lock);
}

static void sc_fork_unlock(void)
{
    sc_fast *f;
    sc_mem *m;
    for (m = sc_fork_mem_locked; m != NULL; m = m->next_made)
        pthread_mutex_unlock(&m->lock);
    for (f = sc_fork_fast_locked; f != NULL; f = f->next_made) {
        pthread_mutex_unlock(&f->journal_lock);
    }
}

static void sc_fork_parent(void) { sc_fork_unlock(); }

static void sc_fork_child(void)
{
    sc_fast *f;
    sc_mem *m;
    sc_fork_unlock(); /* this thread took them: it is the one the child runs on */
    /* Made by another thread while this one forked: that thread may have held the lock,
     * and it is not in the child. Nothing else can touch them here yet. */
    for (f = __atomic_load_n(&sc_fast_all, __ATOMIC_ACQUIRE); f != sc_fork_fast_locked && f != NULL;
         f = f->next_made) {
        pthread_mutex_init(&f->journal_lock, NULL);
    }
    for (m = __atomic_load_n(&sc_mem_all, __ATOMIC_ACQUIRE); m != sc_fork_mem_locked && m != NULL;
         m = m->next_made)
        pthread_mutex_init(&m->lock, NULL);
    /* The child counts its own traffic only. */
    for (f = __atomic_load_n(&sc_fast_all, __ATOMIC_ACQUIRE); f != NULL; f = f->next_made) {
        f->hits = f->misses = f->stores = f->stateless = f->handed_over = f->from_first = 0;
        f->rejected = 0;
    }
    for (m = __atomic_load_n(&sc_mem_all, __ATOMIC_ACQUIRE); m != NULL; m = m->next_made)
        m->evictions = m->expired = 0;
    sc_seal_fork_child();
}

/* 0: not yet, 1: being registered, 2: registered, 3: failed. An atomic flag rather than
 * pthread_once, which glibc 2.34 moved into libc under a new symbol version: the wheel
 * would then need glibc 2.34 (tests/test_build.py holds the module to 2.28). Python calls
 * this with the GIL held, so a second caller never waits on a first. */
static int sc_fork_state;

/* Registers the handlers, once per process (children inherit them); 1 when they are. */
int sc_at_fork_install(void)
{
    int expected = 0;
    if (__atomic_compare_exchange_n(&sc_fork_state, &expected, 1, 0, __ATOMIC_ACQ_REL,
                                    __ATOMIC_ACQUIRE))
        __atomic_store_n(&sc_fork_state,
                         pthread_atfork(sc_fork_prepare, sc_fork_parent, sc_fork_child) == 0 ? 2
                                                                                             : 3,
                         __ATOMIC_RELEASE);
    return __atomic_load_n(&sc_fork_state, __ATOMIC_ACQUIRE) == 2;
}
