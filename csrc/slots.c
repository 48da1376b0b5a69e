/* The slots: one per copy of libssl in the process (the stdlib's, a cryptography wheel's
 * private one, ...), each with its own function table (sc_apis[slot]), its ex_data indices
 * and its trio of session-callback trampolines.
 *
 * libssl calls a plain C function pointer and passes no user argument, so each slot gets
 * its own trio of trampolines that know their slot; they find the context's Python hooks
 * through the registry in sesscache.callbacks and call into Python through cffi
 * extern "Python" functions. They are compiled into the module and live as long as the
 * process: an SSL_CTX_free that runs the remove callback long after the Python objects
 * that set the hooks are gone never jumps into freed memory.
 *
 * ex_data indices registered once per slot:
 * - ctx_idx on SSL_CTX: the context's state (sc_ctx_state, context_state.c), made the
 *   first time sesscache hooks or pins a context and freed by OpenSSL's ex_data free hook
 *   with the context, after telling Python the context is gone.
 * - ssl_idx on SSL: the context a server connection started on, its session context.
 *   OpenSSL runs the session callbacks of that context, also after an SNI callback
 *   switched the connection to another SSL_CTX, and it does not expose it. It is recorded
 *   twice: by the ex_data new hook (OpenSSL up to 3.1 sets the context before creating
 *   ex_data; 3.2 and 4.0 after, so nothing is recorded there) and by the ClientHello
 *   callback every hooked server context gets (before any SNI switch).
 * - sess_idx on SSL_SESSION: counts live sessions of that copy, through OpenSSL's own
 *   object life cycle, so tests can prove that nothing leaks; and carries each session's
 *   origin (the time of its first full handshake).
 *
 * Once Python is finalizing (sc_set_python_alive(0) from an atexit hook), the
 * trampolines answer OpenSSL's safe defaults without calling Python. */
#include "sesscache.h"

static long sc_live[SC_MAX_INSTANCES];
static volatile int sc_python_alive = 1;

static int sc_slot_ok(int slot) { return slot >= 0 && slot < SC_MAX_INSTANCES; }

sc_api *sc_api_slot(int slot) { return sc_slot_ok(slot) ? &sc_apis[slot] : NULL; }

void sc_set_python_alive(int alive) { sc_python_alive = alive; }

long sc_live_sessions(int slot)
{
    return sc_slot_ok(slot) ? __atomic_load_n(&sc_live[slot], __ATOMIC_SEQ_CST) : -1;
}

static void sc_err_mark(const sc_api *a)
{
    if (a->ERR_set_mark != NULL && a->ERR_pop_to_mark != NULL)
        a->ERR_set_mark();
}

static void sc_err_pop(const sc_api *a)
{
    if (a->ERR_set_mark != NULL && a->ERR_pop_to_mark != NULL)
        a->ERR_pop_to_mark();
}

/* --- ex_data hooks (argl carries the slot) ------------------------------------ */

static void sc_ctx_ex_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl,
                           void *argp)
{
    sc_ctx_state *st = (sc_ctx_state *)ptr;
    (void)ad;
    (void)idx;
    (void)argp;
    /* Called for every SSL_CTX of this copy; only those sesscache touched have a state.
     * OpenSSL frees ex_data after flushing the context's sessions, and no connection of
     * the context is left: nothing can reach the state after this. */
    if (st == NULL)
        return;
    if (sc_python_alive) {
        sc_err_mark(&sc_apis[argl]);
        SC_KEEPING_PENDING_ERROR(sc_py_context_freed((int)argl, (SSL_CTX *)parent));
        sc_err_pop(&sc_apis[argl]);
    }
    free(st);
}

/* (The two ex_data new hooks below call CRYPTO_set_ex_data alone, which fails only when
 * memory runs out in the middle of OpenSSL making the object: an error that is the
 * caller's to see, so they set no mark.) */
static void sc_ssl_ex_new(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl,
                          void *argp)
{
    /* OpenSSL up to 3.1 sets ssl->ctx (== session_ctx) before creating ex_data. The SSL
     * holds a reference on its session context, so the stored pointer cannot dangle. */
    sc_api *a = &sc_apis[argl];
    SSL_CTX *ctx;
    (void)ptr;
    (void)argp;
    if (parent == NULL)
        return;
    ctx = a->SSL_get_SSL_CTX((const SSL *)parent);
    if (ctx != NULL)
        a->CRYPTO_set_ex_data(ad, idx, ctx);
}

static void sc_sess_ex_new(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl,
                           void *argp)
{
    (void)parent;
    (void)ptr;
    (void)argp;
    /* A marker, so the free hook only counts sessions created after registration. */
    if (sc_apis[argl].CRYPTO_set_ex_data(ad, idx, (void *)1) == 1)
        __atomic_add_fetch(&sc_live[argl], 1, __ATOMIC_SEQ_CST);
}

static void sc_sess_ex_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl,
                            void *argp)
{
    (void)parent;
    (void)ad;
    (void)idx;
    (void)argp;
    if (ptr != NULL)
        __atomic_sub_fetch(&sc_live[argl], 1, __ATOMIC_SEQ_CST);
}

/* CRYPTO_EX_INDEX_SSL, _SSL_CTX and _SSL_SESSION are 0, 1 and 2 in every OpenSSL since
 * 1.1.0; the numbers are part of the ABI, so they hold for copies we did not compile
 * against too. */
int sc_register_ex_indices(int slot)
{
    sc_api *a;
    if (!sc_slot_ok(slot))
        return 0;
    a = &sc_apis[slot];
    if (sc_ready[slot])
        return 1;
    sc_ctx_idx[slot] =
        a->CRYPTO_get_ex_new_index(1, slot, NULL, NULL, NULL, (void *)sc_ctx_ex_free);
    sc_ssl_idx[slot] = a->CRYPTO_get_ex_new_index(0, slot, NULL, (void *)sc_ssl_ex_new, NULL, NULL);
    sc_sess_idx[slot] = a->CRYPTO_get_ex_new_index(2, slot, NULL, (void *)sc_sess_ex_new, NULL,
                                                   (void *)sc_sess_ex_free);
    sc_offer_idx[slot] = a->CRYPTO_get_ex_new_index(0, slot, NULL, NULL, NULL, NULL);
    if (sc_ctx_idx[slot] < 0 || sc_ssl_idx[slot] < 0 || sc_sess_idx[slot] < 0 ||
        sc_offer_idx[slot] < 0)
        return 0;
    sc_ready[slot] = 1;
    return 1;
}

/* --- the trampolines ------------------------------------------------------------ */

static SSL_CTX *sc_session_ctx(int slot, SSL *ssl)
{
    sc_api *a = &sc_apis[slot];
    SSL_CTX *ctx = (SSL_CTX *)a->SSL_get_ex_data(ssl, sc_ssl_idx[slot]);
    return ctx != NULL ? ctx : a->SSL_get_SSL_CTX(ssl);
}

/* The context recorded when the SSL was created, or NULL (for tests and diagnostics). */
SSL_CTX *sc_recorded_session_ctx(int slot, SSL *ssl)
{
    if (!sc_slot_ok(slot) || !sc_ready[slot])
        return NULL;
    return (SSL_CTX *)sc_apis[slot].SSL_get_ex_data(ssl, sc_ssl_idx[slot]);
}

static int sc_on_new(int slot, SSL *ssl, SSL_SESSION *sess)
{
    SSL_CTX *ctx;
    if (!sc_python_alive)
        return 0;
    sc_err_mark(&sc_apis[slot]);
    ctx = sc_session_ctx(slot, ssl);
    /* Python takes its own reference when it keeps the session: always 0 here, so
     * OpenSSL drops the one it took for us and ownership stays simple. */
    if (!sc_fast_on_new(slot, ssl, sess, ctx))
        sc_py_new_session(slot, ctx, ssl, sess);
    sc_err_pop(&sc_apis[slot]);
    return 0;
}

static SSL_SESSION *sc_on_get(int slot, SSL *ssl, const unsigned char *id, int len, int *copy)
{
    SSL_SESSION *sess;
    SSL_CTX *ctx;
    if (!sc_python_alive)
        return NULL;
    sc_err_mark(&sc_apis[slot]);
    ctx = sc_session_ctx(slot, ssl);
    /* A lookup counts what it refuses itself (see sc_fast_note_offer). */
    sc_fast_uncount_refused_offer(slot, ssl);
    if (!sc_fast_on_get(slot, ssl, id, len, ctx, &sess))
        sess = sc_py_get_session(slot, ctx, ssl, id, len);
    sc_err_pop(&sc_apis[slot]);
    /* Python hands back a reference of its own (fresh from d2i, or up-ref'd): OpenSSL
     * takes it over. copy = 1 here would leak one session per hit. */
    *copy = 0;
    return sess;
}

static void sc_on_remove(int slot, SSL_CTX *ctx, SSL_SESSION *sess)
{
    /* OpenSSL hands the remove callback the context it runs for: no lookup needed. */
    if (sc_python_alive) {
        sc_err_mark(&sc_apis[slot]);
        SC_KEEPING_PENDING_ERROR(sc_py_remove_session(slot, ctx, sess));
        sc_err_pop(&sc_apis[slot]);
    }
}

/* One trio of trampolines per slot: libssl passes no user argument, so the slot is what
 * each knows. */
#define SC_TRAMPOLINES(n)                                                                  \
    static int sc_new_cb_##n(SSL *s, SSL_SESSION *x) { return sc_on_new(n, s, x); }        \
    static SSL_SESSION *sc_get_cb_##n(SSL *s, const unsigned char *id, int len, int *copy) \
    {                                                                                      \
        return sc_on_get(n, s, id, len, copy);                                             \
    }                                                                                      \
    static void sc_remove_cb_##n(SSL_CTX *c, SSL_SESSION *x) { sc_on_remove(n, c, x); }

SC_TRAMPOLINES(0)
SC_TRAMPOLINES(1)
SC_TRAMPOLINES(2)
SC_TRAMPOLINES(3)
SC_TRAMPOLINES(4)
SC_TRAMPOLINES(5)
SC_TRAMPOLINES(6)
SC_TRAMPOLINES(7)

static const sc_new_cb_t sc_new_cbs[SC_MAX_INSTANCES] = {sc_new_cb_0, sc_new_cb_1, sc_new_cb_2,
                                                         sc_new_cb_3, sc_new_cb_4, sc_new_cb_5,
                                                         sc_new_cb_6, sc_new_cb_7};
static const sc_get_cb_t sc_get_cbs[SC_MAX_INSTANCES] = {sc_get_cb_0, sc_get_cb_1, sc_get_cb_2,
                                                         sc_get_cb_3, sc_get_cb_4, sc_get_cb_5,
                                                         sc_get_cb_6, sc_get_cb_7};
static const sc_remove_cb_t sc_remove_cbs[SC_MAX_INSTANCES] = {
    sc_remove_cb_0, sc_remove_cb_1, sc_remove_cb_2, sc_remove_cb_3,
    sc_remove_cb_4, sc_remove_cb_5, sc_remove_cb_6, sc_remove_cb_7};
#if SC_MAX_INSTANCES != 8
#error "one SC_TRAMPOLINES line per slot"
#endif

/* Install (1) or clear (0) each of the three hooks; -1 leaves that hook as it is.
 * Returns 1, or -1 on a bad slot. */
int sc_install(int slot, SSL_CTX *ctx, int new_cb, int get_cb, int remove_cb)
{
    sc_api *a;
    if (!sc_slot_ok(slot) || !sc_ready[slot])
        return -1;
    a = &sc_apis[slot];
    if (new_cb >= 0)
        a->SSL_CTX_sess_set_new_cb(ctx, new_cb ? sc_new_cbs[slot] : NULL);
    if (get_cb >= 0)
        a->SSL_CTX_sess_set_get_cb(ctx, get_cb ? sc_get_cbs[slot] : NULL);
    if (remove_cb >= 0)
        a->SSL_CTX_sess_set_remove_cb(ctx, remove_cb ? sc_remove_cbs[slot] : NULL);
    return 1;
}

/* Which hooks are set on ctx: 1 = ours, 0 = none, 2 = somebody else's. */
int sc_hooks_of(int slot, SSL_CTX *ctx, int *new_cb, int *get_cb, int *remove_cb)
{
    sc_api *a = &sc_apis[slot];
    sc_new_cb_t n;
    sc_get_cb_t g;
    sc_remove_cb_t r;
    if (!sc_slot_ok(slot) || !sc_ready[slot])
        return 0;
    n = a->SSL_CTX_sess_get_new_cb(ctx);
    g = a->SSL_CTX_sess_get_get_cb(ctx);
    r = a->SSL_CTX_sess_get_remove_cb(ctx);
    *new_cb = n == NULL ? 0 : (n == sc_new_cbs[slot] ? 1 : 2);
    *get_cb = g == NULL ? 0 : (g == sc_get_cbs[slot] ? 1 : 2);
    *remove_cb = r == NULL ? 0 : (r == sc_remove_cbs[slot] ? 1 : 2);
    return 1;
}

/* SSL_CTX_get_options of the context at address ctx through the slot's table, -1 on a bad
 * slot: one call for the check that a context found by its Python object reads the same
 * through sesscache's table as through its owner's (find_context.py, per attach). */
long long sc_options_at(int slot, uintptr_t ctx)
{
    if (!sc_slot_ok(slot) || !sc_ready[slot] || ctx == 0)
        return -1;
    return (long long)sc_apis[slot].SSL_CTX_get_options((const SSL_CTX *)ctx);
}

/* Whether n bytes at p can be read, without touching them from user space: the kernel
 * reports EFAULT for a write(2) from an unmapped buffer. Used before trusting a pointer
 * found by layout (the SSL_CTX inside a stdlib ssl.SSLContext). */
int sc_memory_readable(const void *p, size_t n)
{
    int fds[2];
    char sink[64];
    ssize_t w;
    int ok = 1;
    if (pipe(fds) != 0)
        return 0;
    while (ok && n > 0) {
        size_t chunk = n < sizeof(sink) ? n : sizeof(sink);
        w = write(fds[1], p, chunk);
        ok = w > 0 && read(fds[0], sink, (size_t)w) == w;
        if (ok) {
            p = (const char *)p + w;
            n -= (size_t)w;
        }
    }
    close(fds[0]);
    close(fds[1]);
    return ok;
}
