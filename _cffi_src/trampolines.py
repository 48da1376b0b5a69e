"""The C side of the three session callbacks, and the ex_data hooks that back them.

libssl calls a plain C function pointer and passes no user argument, so each copy of
libssl (a *slot*) gets its own trio of C trampolines that know their slot; they find the
context's Python hooks through the registry in ``sesscache._callbacks`` and call into
Python through cffi ``extern "Python"`` functions. These are compiled into the module
and live as long as the process: an ``SSL_CTX_free`` that runs the remove callback long
after the Python objects that set the hooks are gone never jumps into freed memory.

ex_data indices registered once per slot:

* ``ctx_idx`` on ``SSL_CTX``: a marker on hooked contexts, whose free function tells
  Python the context is gone (so its registry entry and callables are dropped).
* ``ssl_idx`` on ``SSL``: its new function records the context an ``SSL`` was created
  from. That is the *session* context, whose hooks must run even after an SNI callback
  switched the connection to another ``SSL_CTX`` (OpenSSL does not expose it).
* ``sess_idx`` on ``SSL_SESSION``: counts live sessions of that copy, through OpenSSL's
  own object life cycle, so tests can prove that nothing leaks.

Which context's hooks run: OpenSSL calls the callbacks of the *session context* (the
one the connection was created from), even after an SNI callback switched the
connection to another ``SSL_CTX``, and it does not expose that context. So every hooked
context gets trampolines of its own from a pool (``SC_POOL`` per slot) that know their
context. Past the pool, contexts share one trampoline that asks the connection: the
context recorded by ``ssl_idx`` (OpenSSL up to 3.1 creates an ``SSL``'s ex_data after
setting its context; 4.0 before, so nothing is recorded there) or else
``SSL_get_SSL_CTX``, which is the switched context.

Once Python is finalizing (``sc_set_python_alive(0)`` from an ``atexit`` hook), the
trampolines answer OpenSSL's safe defaults without calling Python.
"""

def _generate_trampolines(slots: int = 8, pool: int = 32) -> str:
    """One trio of trampolines per (slot, pool index), plus the shared one at ``pool``."""
    lines = []
    for slot in range(slots):
        for index in range(pool + 1):
            n = f"{slot}_{index}"
            lines.append(
                f"static int sc_new_cb_{n}(SSL *s, SSL_SESSION *x) "
                f"{{ return sc_on_new({slot}, {index}, s, x); }}\n"
                f"static SSL_SESSION *sc_get_cb_{n}(SSL *s, const unsigned char *id, int len, int *copy) "
                f"{{ return sc_on_get({slot}, {index}, s, id, len, copy); }}\n"
                f"static void sc_remove_cb_{n}(SSL_CTX *c, SSL_SESSION *x) "
                f"{{ sc_on_remove({slot}, c, x); }}")
    for kind, ctype in (("new", "sc_new_cb_t"), ("get", "sc_get_cb_t"), ("remove", "sc_remove_cb_t")):
        rows = ",\n    ".join("{" + ", ".join(f"sc_{kind}_cb_{slot}_{i}" for i in range(pool + 1)) + "}"
                              for slot in range(slots))
        lines.append(f"static const {ctype} sc_{kind}_cbs[SC_MAX_INSTANCES][SC_POOL + 1] = {{\n    {rows}}};")
    return "\n".join(lines)


INCLUDES = """
#include <string.h>
#include <unistd.h>
"""

# What sc_describe_new reports about a new session: declared once, for cffi and for C.
NEW_FACTS = """typedef struct {
    unsigned char id[32]; unsigned int id_len;
    unsigned char sid_ctx[32]; unsigned int sid_ctx_len;
    int protocol; int stateless;
    long long made; long timeout; long long origin;
    void *certificate;
    int der_len;
    char name[256]; int name_len;
} sc_new_facts;"""

TYPES = """
static const int SC_MAX_INSTANCES;
static const int SC_POOL;

@NEW_FACTS@

static const int SC_OFFER_OK;
static const int SC_OFFER_NOT_DER;
static const int SC_OFFER_OTHER_ID;
static const int SC_OFFER_OTHER_CONTEXT;
static const int SC_OFFER_UNREADABLE_NAME;
static const int SC_OFFER_OTHER_NAME;
static const int SC_OFFER_EXPIRED;
""".replace("@NEW_FACTS@", NEW_FACTS)

FUNCTIONS = """
extern "Python" int sc_py_new_session(int, SSL_CTX *, SSL *, SSL_SESSION *);
extern "Python" SSL_SESSION *sc_py_get_session(int, SSL_CTX *, SSL *, const unsigned char *, int);
extern "Python" void sc_py_remove_session(int, SSL_CTX *, SSL_SESSION *);
extern "Python" void sc_py_context_freed(int, SSL_CTX *);

sc_api *sc_api_slot(int);
int sc_register_ex_indices(int);
void sc_set_python_alive(int);
long sc_live_sessions(int);

int sc_install(int, SSL_CTX *, int, int, int);
int sc_hooks_of(int, SSL_CTX *, int *, int *, int *);
int sc_mark_context(int, SSL_CTX *, int);

int sc_session_der_len(int, SSL_SESSION *);
int sc_session_der(int, SSL_SESSION *, unsigned char *, int);
SSL_SESSION *sc_session_from_der(int, const unsigned char *, long);
long long sc_session_time(int, SSL_SESSION *);
int sc_session_set_time(int, SSL_SESSION *, long long);
int sc_requested_server_name(int, SSL *, char *, int);
int sc_certificate_der(int, SSL_CTX *, unsigned char *, int);
int sc_memory_readable(const void *, size_t);
SSL_CTX *sc_recorded_session_ctx(int, SSL *);
long long sc_session_origin(int, SSL_SESSION *);
int sc_pin_session_id_context(int, SSL_CTX *, const unsigned char *, unsigned int);
int sc_cap_lifetime(int, SSL_CTX *, long);
int sc_describe_new(int, SSL *, SSL_SESSION *, SSL_CTX *, sc_new_facts *, unsigned char *, int);
SSL_SESSION *sc_parse_offered(int, SSL *, const unsigned char *, long, const unsigned char *, int,
                              const unsigned char *, unsigned int, const char *, int, long long,
                              long long, int *);

int sc_session_set_origin(int, SSL_SESSION *, long long);
void sc_flush_sessions(int, SSL_CTX *, long long);
"""

CUSTOMIZATIONS = r"""
#define SC_MAX_INSTANCES 8
#define SC_POOL 32

/* SSL_CTX_free (and with it the remove callback and the ex_data free hook) can run while
 * Python is unwinding with an exception set, when the context's last reference goes with
 * a frame's locals. Calling into Python then fails (Python 3.9 reports a SystemError and
 * the call is lost), so the pending exception is set aside around the call. */
#define SC_KEEPING_PENDING_ERROR(call)                                   \
    do {                                                                 \
        PyGILState_STATE sc_gil = PyGILState_Ensure();                   \
        PyObject *sc_type, *sc_value, *sc_tb;                            \
        PyErr_Fetch(&sc_type, &sc_value, &sc_tb);                        \
        call;                                                            \
        PyErr_Restore(sc_type, sc_value, sc_tb);                         \
        PyGILState_Release(sc_gil);                                      \
    } while (0)

/* cffi defines the extern "Python" functions after this code: declare them first. */
static int sc_py_new_session(int, SSL_CTX *, SSL *, SSL_SESSION *);
static SSL_SESSION *sc_py_get_session(int, SSL_CTX *, SSL *, const unsigned char *, int);
static void sc_py_remove_session(int, SSL_CTX *, SSL_SESSION *);
static void sc_py_context_freed(int, SSL_CTX *);

/* The fast path (fast_path.py, compiled after this file). */
static int sc_fast_on_new(int, int, SSL *, SSL_SESSION *, SSL_CTX *);
static int sc_fast_on_get(int, int, SSL *, const unsigned char *, int, SSL_CTX *, SSL_SESSION **);
static void sc_fast_forget(int, int);

static sc_api sc_apis[SC_MAX_INSTANCES];
static int sc_ready[SC_MAX_INSTANCES];
static int sc_ctx_idx[SC_MAX_INSTANCES];
static int sc_ssl_idx[SC_MAX_INSTANCES];
static int sc_sess_idx[SC_MAX_INSTANCES];
static long sc_live[SC_MAX_INSTANCES];
static volatile int sc_python_alive = 1;

static int sc_slot_ok(int slot) { return slot >= 0 && slot < SC_MAX_INSTANCES; }

sc_api *sc_api_slot(int slot) { return sc_slot_ok(slot) ? &sc_apis[slot] : NULL; }

void sc_set_python_alive(int alive) { sc_python_alive = alive; }

long sc_live_sessions(int slot)
{
    return sc_slot_ok(slot) ? __atomic_load_n(&sc_live[slot], __ATOMIC_SEQ_CST) : -1;
}

static void sc_pool_release(int slot, SSL_CTX *ctx);
static SSL_CTX *sc_session_ctx(int slot, SSL *ssl);
long long sc_session_origin(int slot, SSL_SESSION *sess);
long long sc_session_time(int slot, SSL_SESSION *sess);

/* --- ex_data hooks (argl carries the slot) ------------------------------------ */

static void sc_ctx_ex_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx,
                           long argl, void *argp)
{
    (void)ad; (void)idx; (void)argp;
    /* Called for every SSL_CTX of this copy; only hooked ones carry the marker. */
    if (ptr == NULL)
        return;
    sc_pool_release((int)argl, (SSL_CTX *)parent);
    if (sc_python_alive) {
        SC_KEEPING_PENDING_ERROR(sc_py_context_freed((int)argl, (SSL_CTX *)parent));
    }
}

static void sc_ssl_ex_new(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx,
                          long argl, void *argp)
{
    /* SSL_new sets ssl->ctx (== session_ctx) before creating ex_data. The SSL holds a
     * reference on its session context, so the stored pointer cannot dangle. */
    sc_api *a = &sc_apis[argl];
    SSL_CTX *ctx;
    (void)ptr; (void)argp;
    if (parent == NULL)
        return;
    ctx = a->SSL_get_SSL_CTX((const SSL *)parent);
    if (ctx != NULL)
        a->CRYPTO_set_ex_data(ad, idx, ctx);
}

static void sc_sess_ex_new(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx,
                           long argl, void *argp)
{
    (void)parent; (void)ptr; (void)argp;
    /* A marker, so the free hook only counts sessions created after registration. */
    if (sc_apis[argl].CRYPTO_set_ex_data(ad, idx, (void *)1) == 1)
        __atomic_add_fetch(&sc_live[argl], 1, __ATOMIC_SEQ_CST);
}

static void sc_sess_ex_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx,
                            long argl, void *argp)
{
    (void)parent; (void)ad; (void)idx; (void)argp;
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
    sc_ctx_idx[slot] = a->CRYPTO_get_ex_new_index(1, slot, NULL, NULL, NULL,
                                                  (void *)sc_ctx_ex_free);
    sc_ssl_idx[slot] = a->CRYPTO_get_ex_new_index(0, slot, NULL, (void *)sc_ssl_ex_new,
                                                  NULL, NULL);
    sc_sess_idx[slot] = a->CRYPTO_get_ex_new_index(2, slot, NULL, (void *)sc_sess_ex_new,
                                                   NULL, (void *)sc_sess_ex_free);
    if (sc_ctx_idx[slot] < 0 || sc_ssl_idx[slot] < 0 || sc_sess_idx[slot] < 0)
        return 0;
    sc_ready[slot] = 1;
    return 1;
}

static int sc_pool_is_pinned(int slot, SSL_CTX *ctx);

int sc_mark_context(int slot, SSL_CTX *ctx, int hooked)
{
    if (!sc_slot_ok(slot) || !sc_ready[slot])
        return 0;
    if (!hooked && sc_pool_is_pinned(slot, ctx))
        return 1;  /* still needs the free notification to release its pool entry */
    return sc_apis[slot].SSL_CTX_set_ex_data(ctx, sc_ctx_idx[slot], hooked ? (void *)1 : NULL);
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

/* The pool: sc_pool_ctx[slot][i] is the context trampoline i serves (NULL: free).
 * Index SC_POOL is the shared trampoline. Entries are claimed with a compare-and-swap
 * and released when the context is freed or fully unhooked, after which OpenSSL
 * cannot call them for that context any more. */
static SSL_CTX *sc_pool_ctx[SC_MAX_INSTANCES][SC_POOL];
/* 1 while the entry also pins a session id context (see below): kept even with no hooks. */
static int sc_pool_pinned[SC_MAX_INSTANCES][SC_POOL];

static SSL_CTX *sc_owner(int slot, int index, SSL *ssl)
{
    SSL_CTX *ctx = NULL;
    if (index < SC_POOL)
        ctx = __atomic_load_n(&sc_pool_ctx[slot][index], __ATOMIC_ACQUIRE);
    return ctx != NULL ? ctx : sc_session_ctx(slot, ssl);
}

static int sc_on_new(int slot, int index, SSL *ssl, SSL_SESSION *sess)
{
    SSL_CTX *ctx;
    if (!sc_python_alive)
        return 0;
    ctx = sc_owner(slot, index, ssl);
    /* Python takes its own reference when it keeps the session: always 0 here, so
     * OpenSSL drops the one it took for us and ownership stays simple. */
    if (!sc_fast_on_new(slot, index, ssl, sess, ctx))
        sc_py_new_session(slot, ctx, ssl, sess);
    return 0;
}

static SSL_SESSION *sc_on_get(int slot, int index, SSL *ssl, const unsigned char *id,
                              int len, int *copy)
{
    SSL_SESSION *sess;
    SSL_CTX *ctx;
    if (!sc_python_alive)
        return NULL;
    ctx = sc_owner(slot, index, ssl);
    if (!sc_fast_on_get(slot, index, ssl, id, len, ctx, &sess))
        sess = sc_py_get_session(slot, ctx, ssl, id, len);
    /* Python hands back a reference of its own (fresh from d2i, or up-ref'd): OpenSSL
     * takes it over. copy = 1 here would leak one session per hit. */
    *copy = 0;
    return sess;
}

static void sc_on_remove(int slot, SSL_CTX *ctx, SSL_SESSION *sess)
{
    /* OpenSSL hands the remove callback the context it runs for: no lookup needed. */
    if (sc_python_alive) {
        SC_KEEPING_PENDING_ERROR(sc_py_remove_session(slot, ctx, sess));
    }
}

@TRAMPOLINES@

static int sc_pool_find(int slot, SSL_CTX *ctx)
{
    int i;
    for (i = 0; i < SC_POOL; i++)
        if (__atomic_load_n(&sc_pool_ctx[slot][i], __ATOMIC_ACQUIRE) == ctx)
            return i;
    return -1;
}

static int sc_pool_claim(int slot, SSL_CTX *ctx)
{
    int i = sc_pool_find(slot, ctx);
    SSL_CTX *expected;
    if (i >= 0)
        return i;
    for (i = 0; i < SC_POOL; i++) {
        expected = NULL;
        if (__atomic_compare_exchange_n(&sc_pool_ctx[slot][i], &expected, ctx, 0,
                                        __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
            return i;
    }
    return SC_POOL;  /* the shared trampoline */
}

static void sc_pool_release(int slot, SSL_CTX *ctx)
{
    int i = sc_pool_find(slot, ctx);
    if (i >= 0) {
        sc_fast_forget(slot, i);
        __atomic_store_n(&sc_pool_pinned[slot][i], 0, __ATOMIC_RELEASE);
        __atomic_store_n(&sc_pool_ctx[slot][i], NULL, __ATOMIC_RELEASE);
    }
}

static int sc_pool_is_pinned(int slot, SSL_CTX *ctx)
{
    int i = sc_pool_find(slot, ctx);
    return i >= 0 && __atomic_load_n(&sc_pool_pinned[slot][i], __ATOMIC_ACQUIRE);
}

/* Install (1) or clear (0) each of the three hooks; -1 leaves that hook as it is.
 * Returns the trampoline index used (SC_POOL: the shared one), -1 on a bad slot. */
int sc_install(int slot, SSL_CTX *ctx, int new_cb, int get_cb, int remove_cb)
{
    sc_api *a;
    int i;
    if (!sc_slot_ok(slot) || !sc_ready[slot])
        return -1;
    a = &sc_apis[slot];
    i = sc_pool_claim(slot, ctx);
    if (new_cb >= 0)
        a->SSL_CTX_sess_set_new_cb(ctx, new_cb ? sc_new_cbs[slot][i] : NULL);
    if (get_cb >= 0)
        a->SSL_CTX_sess_set_get_cb(ctx, get_cb ? sc_get_cbs[slot][i] : NULL);
    if (remove_cb >= 0)
        a->SSL_CTX_sess_set_remove_cb(ctx, remove_cb ? sc_remove_cbs[slot][i] : NULL);
    if (a->SSL_CTX_sess_get_new_cb(ctx) == NULL && a->SSL_CTX_sess_get_get_cb(ctx) == NULL
            && a->SSL_CTX_sess_get_remove_cb(ctx) == NULL && !sc_pool_is_pinned(slot, ctx))
        sc_pool_release(slot, ctx);
    return i;
}

/* Pinning a context's session id context onto each of its connections.
 *
 * CPython 3.13 sets b"Python\0" as the session id context of every server-side SSL it
 * makes (python/cpython#105293), which overrides the context's: sessions would carry
 * CPython's id context instead of the one the cache was attached with, for every
 * service alike. A ClientHello callback runs before OpenSSL looks a session up or
 * makes a new one, and sets the context's value back on the connection. Its data lives
 * in static memory per pool index, so it can never dangle. */
typedef struct { int slot; unsigned int len; unsigned char bytes[32]; } sc_sid_t;
static sc_sid_t sc_pool_sid[SC_MAX_INSTANCES][SC_POOL];

static int sc_pin_sid_cb(SSL *ssl, int *alert, void *arg)
{
    const sc_sid_t *sid = (const sc_sid_t *)arg;
    (void)alert;
    sc_apis[sid->slot].SSL_set_session_id_context(ssl, sid->bytes, sid->len);
    return 1;  /* SSL_CLIENT_HELLO_SUCCESS */
}

/* Returns 1 when pinned, 0 when it cannot be (no pool entry left, or no ClientHello
 * callback in this OpenSSL). The context is marked so its free releases the entry. */
int sc_pin_session_id_context(int slot, SSL_CTX *ctx, const unsigned char *bytes, unsigned int len)
{
    int i;
    if (!sc_slot_ok(slot) || !sc_ready[slot] || len == 0 || len > 32
            || sc_apis[slot].SSL_CTX_set_client_hello_cb == NULL)
        return 0;
    i = sc_pool_claim(slot, ctx);
    if (i >= SC_POOL)
        return 0;
    sc_pool_sid[slot][i].slot = slot;
    sc_pool_sid[slot][i].len = len;
    memcpy(sc_pool_sid[slot][i].bytes, bytes, len);
    __atomic_store_n(&sc_pool_pinned[slot][i], 1, __ATOMIC_RELEASE);
    sc_apis[slot].SSL_CTX_set_ex_data(ctx, sc_ctx_idx[slot], (void *)1);
    sc_apis[slot].SSL_CTX_set_client_hello_cb(ctx, sc_pin_sid_cb, &sc_pool_sid[slot][i]);
    return 1;
}

/* Capping a TLS 1.3 session's lifetime at its first full handshake's.
 *
 * A TLS 1.3 resumption issues a new session, dated now, with the context's full timeout:
 * a client could keep a session alive forever. OpenSSL calls the ticket generation
 * callback for each new TLS 1.3 session after dating it and *before* putting it in its
 * internal cache, where shortening its timeout is cheap. (Done afterwards, OpenSSL 4.0
 * re-sorts its whole session list under a lock: 1.6 ms per handshake with 18k sessions
 * cached, measured.) The session's origin rides in its ex_data (sc_session_origin). */
static long sc_pool_lifetime[SC_MAX_INSTANCES][SC_POOL];
typedef struct { int slot; int index; } sc_cap_t;
static sc_cap_t sc_pool_cap[SC_MAX_INSTANCES][SC_POOL];

static int sc_cap_ticket_cb(SSL *ssl, void *arg)
{
    const sc_cap_t *cap = (const sc_cap_t *)arg;
    sc_api *a = &sc_apis[cap->slot];
    long lifetime = __atomic_load_n(&sc_pool_lifetime[cap->slot][cap->index], __ATOMIC_ACQUIRE);
    SSL_SESSION *sess = a->SSL_get_session(ssl);
    long long origin, made, allowed;
    if (sess == NULL || lifetime <= 0)
        return 1;
    origin = sc_session_origin(cap->slot, sess);
    made = sc_session_time(cap->slot, sess);
    if (origin <= 1 || made <= 0)
        return 1;  /* a first full handshake: its timeout is already the context's */
    allowed = origin + lifetime - made;
    if (allowed < a->SSL_SESSION_get_timeout(sess))
        a->SSL_SESSION_set_timeout(sess, allowed > 1 ? (long)allowed : 1);
    return 1;  /* go on making the ticket */
}

/* Returns 1 when installed, 0 when it cannot be (no pool entry, or no such callback). */
int sc_cap_lifetime(int slot, SSL_CTX *ctx, long lifetime)
{
    int i;
    if (!sc_slot_ok(slot) || !sc_ready[slot] || sc_apis[slot].SSL_CTX_set_session_ticket_cb == NULL)
        return 0;
    i = sc_pool_find(slot, ctx);
    if (i < 0)
        return 0;
    sc_pool_cap[slot][i].slot = slot;
    sc_pool_cap[slot][i].index = i;
    __atomic_store_n(&sc_pool_lifetime[slot][i], lifetime, __ATOMIC_RELEASE);
    return sc_apis[slot].SSL_CTX_set_session_ticket_cb(ctx, sc_cap_ticket_cb, NULL, &sc_pool_cap[slot][i]) == 1;
}

static int sc_is_ours(const void *const *table, const void *fn)
{
    int i;
    for (i = 0; i <= SC_POOL; i++)
        if (table[i] == fn)
            return 1;
    return 0;
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
    *new_cb = n == NULL ? 0 : (sc_is_ours((const void *const *)sc_new_cbs[slot], (const void *)n) ? 1 : 2);
    *get_cb = g == NULL ? 0 : (sc_is_ours((const void *const *)sc_get_cbs[slot], (const void *)g) ? 1 : 2);
    *remove_cb = r == NULL ? 0 : (sc_is_ours((const void *const *)sc_remove_cbs[slot], (const void *)r) ? 1 : 2);
    return 1;
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

/* The time of the full handshake a session descends from, kept in the session's
 * ex_data slot (which otherwise holds the marker 1 of the live-session count).
 * OpenSSL copies ex_data when it duplicates a session, which is how a TLS 1.3
 * resumption makes its new session: so the origin survives resumptions, and a cache
 * can refuse to let a session outlive its first handshake's lifetime. 0: unknown. */
long long sc_session_origin(int slot, SSL_SESSION *sess)
{
    void *value;
    if (!sc_slot_ok(slot) || !sc_ready[slot])
        return 0;
    value = sc_apis[slot].SSL_SESSION_get_ex_data(sess, sc_sess_idx[slot]);
    return (intptr_t)value > 1 ? (long long)(intptr_t)value : 0;
}

int sc_session_set_origin(int slot, SSL_SESSION *sess, long long origin)
{
    sc_api *a;
    if (!sc_slot_ok(slot) || !sc_ready[slot] || origin <= 1)
        return 0;
    a = &sc_apis[slot];
    /* Only sessions that carry the marker are counted; keep uncounted ones uncounted. */
    if (a->SSL_SESSION_get_ex_data(sess, sc_sess_idx[slot]) == NULL)
        return 0;
    return a->SSL_SESSION_set_ex_data(sess, sc_sess_idx[slot], (void *)(intptr_t)origin);
}

/* --- the cache's hot paths, one C call each ------------------------------------------
 * What SessionCache needs from OpenSSL for one new session, and the checks it makes on
 * one offered session, done here rather than as a dozen calls through cffi. */

@NEW_FACTS@

#define SC_OFFER_OK 0
#define SC_OFFER_NOT_DER 1
#define SC_OFFER_OTHER_ID 2
#define SC_OFFER_OTHER_CONTEXT 3
#define SC_OFFER_UNREADABLE_NAME 4
#define SC_OFFER_OTHER_NAME 5
#define SC_OFFER_EXPIRED 6

int sc_session_der(int slot, SSL_SESSION *sess, unsigned char *buf, int buflen);
SSL_SESSION *sc_session_from_der(int slot, const unsigned char *der, long len);
int sc_requested_server_name(int slot, SSL *ssl, char *out, int outlen);

static void sc_copy_bytes(unsigned char *to, unsigned int *to_len, const unsigned char *from,
                          unsigned int len)
{
    *to_len = len;
    if (from != NULL && len > 0)
        memcpy(to, from, len > 32 ? 32 : len);
}

/* Fills out for a new session; the origin is recorded on the session when missing.
 * The DER is written to der unless the session is a stateless TLS 1.3 ticket's. */
int sc_describe_new(int slot, SSL *ssl, SSL_SESSION *sess, SSL_CTX *session_ctx,
                    sc_new_facts *out, unsigned char *der, int derlen)
{
    sc_api *a;
    const unsigned char *bytes;
    unsigned int len;
    const char *name;
    uint64_t options;
    size_t i;
    if (!sc_slot_ok(slot) || !sc_ready[slot])
        return 0;
    a = &sc_apis[slot];
    bytes = a->SSL_SESSION_get_id(sess, &len);
    sc_copy_bytes(out->id, &out->id_len, bytes, len);
    bytes = a->SSL_SESSION_get0_id_context(sess, &len);
    sc_copy_bytes(out->sid_ctx, &out->sid_ctx_len, bytes, len);
    out->protocol = a->SSL_SESSION_get_protocol_version(sess);
    out->stateless = 0;
    if (out->protocol == TLS1_3_VERSION) {
        /* Tickets on: the ticket carries the session and the server is never asked for
         * it by id. Early data with anti-replay turns tickets stateful. */
        options = a->SSL_CTX_get_options(a->SSL_get_SSL_CTX(ssl));
        out->stateless = !(options & SSL_OP_NO_TICKET)
            && !(a->SSL_SESSION_get_max_early_data(sess) > 0 && !(options & SSL_OP_NO_ANTI_REPLAY));
    }
    out->made = sc_session_time(slot, sess);
    out->timeout = a->SSL_SESSION_get_timeout(sess);
    out->origin = sc_session_origin(slot, sess);
    if (out->origin <= 1) {
        out->origin = out->made;
        sc_session_set_origin(slot, sess, out->origin);
    }
    out->certificate = session_ctx != NULL ? (void *)a->SSL_CTX_get0_certificate(session_ctx) : NULL;
    out->der_len = out->stateless ? 0 : sc_session_der(slot, sess, der, derlen);
    out->name_len = 0;
    name = a->SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    if (name != NULL) {
        for (i = 0; name[i] != '\0' && i < 255; i++)
            out->name[i] = (name[i] >= 'A' && name[i] <= 'Z') ? (char)(name[i] + 32) : name[i];
        out->name[i] = '\0';
        out->name_len = (int)i;
    }
    return 1;
}

static int sc_same_name(const char *a, int alen, const char *b, int blen)
{
    int i;
    if (alen != blen)
        return 0;
    for (i = 0; i < alen; i++) {
        char x = a[i], y = b[i];
        if (x >= 'A' && x <= 'Z') x = (char)(x + 32);
        if (y >= 'A' && y <= 'Z') y = (char)(y + 32);
        if (x != y)
            return 0;
    }
    return 1;
}

/* Parse an offered session and check it as OpenSSL and the cache would: its id is the
 * one asked for, its id context is the cache's, the client asks for the server name it
 * was made for (made_for_len -1: made without one), and it has not expired. Returns the
 * session (one reference, origin recorded) or NULL with *reason set. */
SSL_SESSION *sc_parse_offered(int slot, SSL *ssl, const unsigned char *der, long derlen,
                              const unsigned char *id, int id_len,
                              const unsigned char *sid_ctx, unsigned int sid_ctx_len,
                              const char *made_for, int made_for_len,
                              long long origin, long long now, int *reason)
{
    sc_api *a = &sc_apis[slot];
    SSL_SESSION *sess;
    const unsigned char *bytes;
    unsigned int len;
    char asked[256];
    int asked_len;
    *reason = SC_OFFER_OK;
    sess = sc_session_from_der(slot, der, derlen);
    if (sess == NULL) {
        *reason = SC_OFFER_NOT_DER;
        return NULL;
    }
    bytes = a->SSL_SESSION_get_id(sess, &len);
    if ((int)len != id_len || memcmp(bytes, id, len) != 0)
        *reason = SC_OFFER_OTHER_ID;
    if (*reason == SC_OFFER_OK) {
        bytes = a->SSL_SESSION_get0_id_context(sess, &len);
        if (len != sid_ctx_len || memcmp(bytes, sid_ctx, len) != 0)
            *reason = SC_OFFER_OTHER_CONTEXT;
    }
    if (*reason == SC_OFFER_OK) {
        asked_len = sc_requested_server_name(slot, ssl, asked, sizeof(asked));
        if (asked_len == -2)
            *reason = SC_OFFER_UNREADABLE_NAME;
        else if (asked_len >= 0 && !(made_for_len < 0 ? asked_len == 0
                                     : sc_same_name(asked, asked_len, made_for, made_for_len)))
            *reason = SC_OFFER_OTHER_NAME;
    }
    if (*reason == SC_OFFER_OK && sc_session_time(slot, sess) + a->SSL_SESSION_get_timeout(sess) <= now)
        *reason = SC_OFFER_EXPIRED;
    if (*reason != SC_OFFER_OK) {
        a->SSL_SESSION_free(sess);
        return NULL;
    }
    sc_session_set_origin(slot, sess, origin);
    return sess;
}

/* --- sessions ------------------------------------------------------------------- */

int sc_session_der_len(int slot, SSL_SESSION *sess)
{
    return sc_apis[slot].i2d_SSL_SESSION(sess, NULL);
}

/* Serialize into buf; returns the length, 0 on failure, or -(length needed) when buf is
 * too small (then nothing is written). One sizing pass, one writing pass. */
int sc_session_der(int slot, SSL_SESSION *sess, unsigned char *buf, int buflen)
{
    sc_api *a = &sc_apis[slot];
    unsigned char *p = buf;
    int n = a->i2d_SSL_SESSION(sess, NULL);
    if (n <= 0)
        return 0;
    if (n > buflen)
        return -n;
    return a->i2d_SSL_SESSION(sess, &p);
}

/* A new session (one reference, owned by the caller) or NULL. A failed parse leaves
 * errors on that copy's error queue, where a later, unrelated call (a pyOpenSSL
 * do_handshake) would report them as its own failure: clear them here. */
SSL_SESSION *sc_session_from_der(int slot, const unsigned char *der, long len)
{
    sc_api *a = &sc_apis[slot];
    const unsigned char *p = der;
    SSL_SESSION *sess = a->d2i_SSL_SESSION(NULL, &p, len);
    if (sess == NULL || p != der + len) {
        if (sess != NULL)
            a->SSL_SESSION_free(sess);  /* trailing bytes: not one clean session */
        a->ERR_clear_error();
        return NULL;
    }
    return sess;
}

long long sc_session_time(int slot, SSL_SESSION *sess)
{
    sc_api *a = &sc_apis[slot];
    if (a->SSL_SESSION_get_time_ex != NULL)
        return (long long)a->SSL_SESSION_get_time_ex(sess);
    if (a->SSL_SESSION_get_time != NULL)
        return (long long)a->SSL_SESSION_get_time(sess);
    return -1;
}

int sc_session_set_time(int slot, SSL_SESSION *sess, long long t)
{
    sc_api *a = &sc_apis[slot];
    if (a->SSL_SESSION_set_time_ex != NULL)
        return a->SSL_SESSION_set_time_ex(sess, (int64_t)t) != 0;
    if (a->SSL_SESSION_set_time != NULL)
        return a->SSL_SESSION_set_time(sess, (long)t) != 0;
    return 0;
}

void sc_flush_sessions(int slot, SSL_CTX *ctx, long long t)
{
    sc_api *a = &sc_apis[slot];
    if (a->SSL_CTX_flush_sessions_ex != NULL)
        a->SSL_CTX_flush_sessions_ex(ctx, (int64_t)t);
    else if (a->SSL_CTX_flush_sessions != NULL)
        a->SSL_CTX_flush_sessions(ctx, (long)t);
}

/* The SNI host name of the ClientHello being processed, copied into out (NUL-ended).
 * Only meaningful inside the get callback: OpenSSL keeps the parsed ClientHello until
 * it has looked the session up, and processes the server_name extension (and any
 * SNI context switch) only afterwards, so SSL_get_servername cannot answer yet.
 * Returns the name's length, 0 when the hello has no host name, -1 when OpenSSL cannot
 * say (no SSL_client_hello_get0_ext, or not inside the ClientHello's processing), and
 * -2 for a name that cannot be a host name (empty, malformed, longer than outlen - 1):
 * a cache must refuse to resume for those, since it cannot compare them. */
int sc_requested_server_name(int slot, SSL *ssl, char *out, int outlen)
{
    sc_api *a = &sc_apis[slot];
    const unsigned char *ext;
    size_t extlen, listlen, namelen;
    if (a->SSL_client_hello_get0_ext == NULL || outlen < 1)
        return -1;
    if (!a->SSL_client_hello_get0_ext(ssl, 0 /* server_name */, &ext, &extlen))
        return 0;
    /* ServerNameList: u16 length, then entries of (u8 type, u16 length, bytes). */
    if (extlen < 2)
        return -2;
    listlen = ((size_t)ext[0] << 8) | ext[1];
    if (listlen + 2 != extlen)
        return -2;
    ext += 2;
    while (listlen >= 3) {
        namelen = ((size_t)ext[1] << 8) | ext[2];
        if (namelen + 3 > listlen)
            return -2;
        if (ext[0] == 0 /* host_name */) {
            if (namelen == 0 || namelen >= (size_t)outlen)
                return -2;
            memcpy(out, ext + 3, namelen);
            out[namelen] = '\0';
            return (int)namelen;
        }
        ext += 3 + namelen;
        listlen -= 3 + namelen;
    }
    return listlen == 0 ? 0 : -2;
}

/* The DER of the context's (current) certificate into buf; its length, 0 when the
 * context has none, or -(length needed) when buf is too small. */
int sc_certificate_der(int slot, SSL_CTX *ctx, unsigned char *buf, int buflen)
{
    sc_api *a = &sc_apis[slot];
    X509 *cert = a->SSL_CTX_get0_certificate(ctx);
    unsigned char *p = buf;
    int n;
    if (cert == NULL)
        return 0;
    n = a->i2d_X509(cert, NULL);
    if (n <= 0)
        return 0;
    if (n > buflen)
        return -n;
    return a->i2d_X509(cert, &p);
}
""".replace("@TRAMPOLINES@", _generate_trampolines()).replace(
    "@NEW_FACTS@", NEW_FACTS)
