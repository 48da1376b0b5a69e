"""The C side of the three session callbacks, and the ex_data hooks that back them.

libssl calls a plain C function pointer and passes no user argument, so each copy of
libssl (a *slot*) gets its own trio of C trampolines that know their slot; they find the
context's Python hooks through the registry in ``sesscache.callbacks`` and call into
Python through cffi ``extern "Python"`` functions. These are compiled into the module
and live as long as the process: an ``SSL_CTX_free`` that runs the remove callback long
after the Python objects that set the hooks are gone never jumps into freed memory.

ex_data indices registered once per slot:

* ``ctx_idx`` on ``SSL_CTX``: the context's *state* (``sc_ctx_state``, below), made the
  first time sesscache hooks or pins a context and freed by OpenSSL's ex_data free hook
  with the context, after telling Python the context is gone.
* ``ssl_idx`` on ``SSL``: the context a server connection started on, its *session
  context*. OpenSSL runs the session callbacks of that context, also after an SNI
  callback switched the connection to another ``SSL_CTX``, and it does not expose it. It
  is recorded twice: by the ex_data new hook (OpenSSL up to 3.1 sets the context before
  creating ex_data; 3.2 and 4.0 after, so nothing is recorded there) and by the
  ClientHello callback every hooked server context gets (before any SNI switch).
* ``sess_idx`` on ``SSL_SESSION``: counts live sessions of that copy, through OpenSSL's
  own object life cycle, so tests can prove that nothing leaks; and carries each
  session's origin (the time of its first full handshake).

Per-context state, not a pool: each hooked context's settings (the session id context to
pin or bind, the TLS 1.3 lifetime cap, the cache's C fast path) live in memory of its
own, as many contexts as there are (gunicorn makes one per connection), and the C
callbacks that need them get a pointer to it as their argument.

Binding sessions to the server name and certificate: for a context a ``SessionCache``
serves, the ClientHello callback sets the connection's session id context to a digest of
the configured one, the certificate of the context and the SNI name the client asks for.
OpenSSL copies it into every session made on the connection and resumes a session only
where it matches (``ssl_get_prev_session``, for its internal cache, the external cache
and tickets alike, TLS 1.2 and 1.3). So a session made for one name is a full handshake
for any other, whichever cache holds it: OpenSSL's own check does the refusing, as
nginx's per-virtual-host context does since CVE-2025-23419.

Once Python is finalizing (``sc_set_python_alive(0)`` from an ``atexit`` hook), the
trampolines answer OpenSSL's safe defaults without calling Python.
"""

def _generate_trampolines(slots: int = 8) -> str:
    """One trio of trampolines per slot: the slot is all they need to know."""
    lines = []
    for slot in range(slots):
        lines.append(
            f"static int sc_new_cb_{slot}(SSL *s, SSL_SESSION *x) "
            f"{{ return sc_on_new({slot}, s, x); }}\n"
            f"static SSL_SESSION *sc_get_cb_{slot}(SSL *s, const unsigned char *id, int len, int *copy) "
            f"{{ return sc_on_get({slot}, s, id, len, copy); }}\n"
            f"static void sc_remove_cb_{slot}(SSL_CTX *c, SSL_SESSION *x) "
            f"{{ sc_on_remove({slot}, c, x); }}")
    for kind, ctype in (("new", "sc_new_cb_t"), ("get", "sc_get_cb_t"), ("remove", "sc_remove_cb_t")):
        row = ", ".join(f"sc_{kind}_cb_{slot}" for slot in range(slots))
        lines.append(f"static const {ctype} sc_{kind}_cbs[SC_MAX_INSTANCES] = {{{row}}};")
    return "\n".join(lines)


INCLUDES = """
#include <string.h>
#include <unistd.h>
#include <pthread.h>
#include <time.h>
"""

# What sc_describe_new reports about a new session: declared once, for cffi and for C.
# bound: 1 when the session's id context is the one sesscache bound its connection to
# (name and certificate), 0 when it is another, -1 when the context is not bound.
NEW_FACTS = """typedef struct {
    unsigned char id[32]; unsigned int id_len;
    unsigned char sid_ctx[32]; unsigned int sid_ctx_len;
    int protocol; int stateless;
    long long made; long timeout; long long origin;
    void *certificate;
    int der_len;
    char name[256]; int name_len;
    int bound;
} sc_new_facts;"""

TYPES = """
static const int SC_MAX_INSTANCES;

@NEW_FACTS@

static const int SC_OFFER_OK;
static const int SC_OFFER_NOT_DER;
static const int SC_OFFER_OTHER_ID;
static const int SC_OFFER_OTHER_CONTEXT;
static const int SC_OFFER_UNREADABLE_NAME;
static const int SC_OFFER_OTHER_NAME;
static const int SC_OFFER_EXPIRED;

static const int SC_PIN_NONE;
static const int SC_PIN_CONTEXT;
static const int SC_PIN_BOUND;
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
int sc_bind_session_id_context(int, SSL_CTX *, const unsigned char *, unsigned int);
void sc_unbind_session_id_context(int, SSL_CTX *);
int sc_pin_of(int, SSL_CTX *);
int sc_cap_lifetime(int, SSL_CTX *, long);
int sc_describe_new(int, SSL *, SSL_SESSION *, SSL_CTX *, sc_new_facts *, unsigned char *, int);
SSL_SESSION *sc_parse_offered(int, SSL *, const unsigned char *, long, const unsigned char *, int,
                              const unsigned char *, unsigned int, const char *, int, long long,
                              long long, int *);
void sc_sha256(const unsigned char *, size_t, unsigned char *);
int sc_bound_session_id_context(const unsigned char *, unsigned int, const unsigned char *,
                                const char *, int, unsigned char *);

int sc_session_set_origin(int, SSL_SESSION *, long long);
void sc_flush_sessions(int, SSL_CTX *, long long);
"""

CUSTOMIZATIONS = r"""
#define SC_MAX_INSTANCES 8

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

/* --- per-context state ---------------------------------------------------------- */

#define SC_PIN_NONE 0      /* only the ClientHello record of the session context */
#define SC_PIN_CONTEXT 1   /* set the configured session id context on each connection */
#define SC_PIN_BOUND 2     /* set one bound to the SNI name and the certificate */

struct sc_fast;
typedef struct sc_ctx_state {
    int slot;
    SSL_CTX *ctx;
    int pin;                        /* SC_PIN_*; atomic */
    unsigned int sid_len;
    unsigned char sid[32];          /* the configured session id context */
    long lifetime;                  /* TLS 1.3 cap in seconds, 0: none; atomic */
    struct sc_fast *fast;           /* the cache's C fast path, or NULL; atomic */
    /* The fingerprint of the context's certificate, recomputed when it changes (a reload),
     * under a sequence lock rather than a mutex: a lock held by another thread at fork()
     * would stay held in the child forever. */
    unsigned int cert_seq;          /* odd while a thread rewrites the two below */
    const void *cert;               /* the certificate cert_fp is of */
    unsigned char cert_fp[16];      /* SHA-256 of its DER, first 16 bytes */
} sc_ctx_state;

/* The fast path (fast_path.py, compiled after this file). */
static int sc_fast_on_new(int, SSL *, SSL_SESSION *, SSL_CTX *);
static int sc_fast_on_get(int, SSL *, const unsigned char *, int, SSL_CTX *, SSL_SESSION **);
static void sc_fast_note_offer(sc_ctx_state *, SSL *, const char *, int, const unsigned char *);
static void sc_fast_uncount_refused_offer(int, SSL *);

static sc_api sc_apis[SC_MAX_INSTANCES];
static int sc_ready[SC_MAX_INSTANCES];
static int sc_ctx_idx[SC_MAX_INSTANCES];
static int sc_ssl_idx[SC_MAX_INSTANCES];
/* On SSL: the fast path that counted the refusal of the session this connection's
 * ClientHello offers, until a lookup takes the count over (sc_fast_note_offer). */
static int sc_offer_idx[SC_MAX_INSTANCES];
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

static SSL_CTX *sc_session_ctx(int slot, SSL *ssl);
long long sc_session_origin(int slot, SSL_SESSION *sess);
long long sc_session_time(int slot, SSL_SESSION *sess);
int sc_requested_server_name(int slot, SSL *ssl, char *out, int outlen);

/* The state of ctx, or NULL when sesscache never hooked or pinned it. */
static sc_ctx_state *sc_state_of(int slot, SSL_CTX *ctx)
{
    if (ctx == NULL || !sc_slot_ok(slot) || !sc_ready[slot])
        return NULL;
    return (sc_ctx_state *)sc_apis[slot].SSL_CTX_get_ex_data(ctx, sc_ctx_idx[slot]);
}

/* The state of ctx, made on first need. Called from Python (which holds the GIL, and so
 * never races itself here) while the context is being configured. */
static sc_ctx_state *sc_state_for(int slot, SSL_CTX *ctx)
{
    sc_ctx_state *st = sc_state_of(slot, ctx);
    if (st != NULL || ctx == NULL || !sc_slot_ok(slot) || !sc_ready[slot])
        return st;
    st = calloc(1, sizeof(*st));
    if (st == NULL)
        return NULL;
    st->slot = slot;
    st->ctx = ctx;
    if (sc_apis[slot].SSL_CTX_set_ex_data(ctx, sc_ctx_idx[slot], st) != 1) {
        free(st);
        return NULL;
    }
    return st;
}

/* --- ex_data hooks (argl carries the slot) ------------------------------------ */

static void sc_ctx_ex_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx,
                           long argl, void *argp)
{
    sc_ctx_state *st = (sc_ctx_state *)ptr;
    (void)ad; (void)idx; (void)argp;
    /* Called for every SSL_CTX of this copy; only those sesscache touched have a state.
     * OpenSSL frees ex_data after flushing the context's sessions, and no connection of
     * the context is left: nothing can reach the state after this. */
    if (st == NULL)
        return;
    if (sc_python_alive) {
        SC_KEEPING_PENDING_ERROR(sc_py_context_freed((int)argl, (SSL_CTX *)parent));
    }
    free(st);
}

static void sc_ssl_ex_new(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx,
                          long argl, void *argp)
{
    /* OpenSSL up to 3.1 sets ssl->ctx (== session_ctx) before creating ex_data. The SSL
     * holds a reference on its session context, so the stored pointer cannot dangle. */
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
    sc_offer_idx[slot] = a->CRYPTO_get_ex_new_index(0, slot, NULL, NULL, NULL, NULL);
    if (sc_ctx_idx[slot] < 0 || sc_ssl_idx[slot] < 0 || sc_sess_idx[slot] < 0
            || sc_offer_idx[slot] < 0)
        return 0;
    sc_ready[slot] = 1;
    return 1;
}

static int sc_client_hello_cb(SSL *ssl, int *alert, void *arg);

/* Make sure a hooked context has its state (so its free is reported to Python) and its
 * ClientHello callback (which records the session context of each server connection).
 * Unhooking changes nothing: the state stays until the context is freed. */
int sc_mark_context(int slot, SSL_CTX *ctx, int hooked)
{
    sc_ctx_state *st;
    if (!sc_slot_ok(slot) || !sc_ready[slot])
        return 0;
    if (!hooked)
        return 1;
    st = sc_state_for(slot, ctx);
    if (st == NULL)
        return 0;
    if (sc_apis[slot].SSL_CTX_set_client_hello_cb != NULL)
        sc_apis[slot].SSL_CTX_set_client_hello_cb(ctx, sc_client_hello_cb, st);
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
    ctx = sc_session_ctx(slot, ssl);
    /* Python takes its own reference when it keeps the session: always 0 here, so
     * OpenSSL drops the one it took for us and ownership stays simple. */
    if (!sc_fast_on_new(slot, ssl, sess, ctx))
        sc_py_new_session(slot, ctx, ssl, sess);
    return 0;
}

static SSL_SESSION *sc_on_get(int slot, SSL *ssl, const unsigned char *id, int len, int *copy)
{
    SSL_SESSION *sess;
    SSL_CTX *ctx;
    if (!sc_python_alive)
        return NULL;
    ctx = sc_session_ctx(slot, ssl);
    /* A lookup counts what it refuses itself (see sc_fast_note_offer). */
    sc_fast_uncount_refused_offer(slot, ssl);
    if (!sc_fast_on_get(slot, ssl, id, len, ctx, &sess))
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

/* --- SHA-256 (FIPS 180-4), for session id contexts and certificate fingerprints ------
 * Computed here rather than by the libssl copy: a context's copy may be one whose
 * digest functions sesscache never resolved, and these inputs are public. */
typedef struct { uint32_t h[8]; uint64_t len; unsigned char buf[64]; size_t used; } sc_sha256_ctx;

static const uint32_t sc_sha256_k[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

#define SC_ROR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void sc_sha256_block(sc_sha256_ctx *c, const unsigned char *p)
{
    uint32_t w[64], a, b, d, e, f, g, h, cc, t1, t2;
    int i;
    for (i = 0; i < 16; i++)
        w[i] = ((uint32_t)p[4 * i] << 24) | ((uint32_t)p[4 * i + 1] << 16)
             | ((uint32_t)p[4 * i + 2] << 8) | (uint32_t)p[4 * i + 3];
    for (i = 16; i < 64; i++)
        w[i] = (SC_ROR(w[i - 2], 17) ^ SC_ROR(w[i - 2], 19) ^ (w[i - 2] >> 10)) + w[i - 7]
             + (SC_ROR(w[i - 15], 7) ^ SC_ROR(w[i - 15], 18) ^ (w[i - 15] >> 3)) + w[i - 16];
    a = c->h[0]; b = c->h[1]; cc = c->h[2]; d = c->h[3];
    e = c->h[4]; f = c->h[5]; g = c->h[6]; h = c->h[7];
    for (i = 0; i < 64; i++) {
        t1 = h + (SC_ROR(e, 6) ^ SC_ROR(e, 11) ^ SC_ROR(e, 25)) + ((e & f) ^ (~e & g))
           + sc_sha256_k[i] + w[i];
        t2 = (SC_ROR(a, 2) ^ SC_ROR(a, 13) ^ SC_ROR(a, 22)) + ((a & b) ^ (a & cc) ^ (b & cc));
        h = g; g = f; f = e; e = d + t1; d = cc; cc = b; b = a; a = t1 + t2;
    }
    c->h[0] += a; c->h[1] += b; c->h[2] += cc; c->h[3] += d;
    c->h[4] += e; c->h[5] += f; c->h[6] += g; c->h[7] += h;
}

static void sc_sha256_init(sc_sha256_ctx *c)
{
    static const uint32_t iv[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                   0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    memcpy(c->h, iv, sizeof(iv));
    c->len = 0;
    c->used = 0;
}

static void sc_sha256_update(sc_sha256_ctx *c, const unsigned char *p, size_t n)
{
    c->len += n;
    while (n > 0) {
        size_t take = 64 - c->used < n ? 64 - c->used : n;
        memcpy(c->buf + c->used, p, take);
        c->used += take;
        p += take;
        n -= take;
        if (c->used == 64) {
            sc_sha256_block(c, c->buf);
            c->used = 0;
        }
    }
}

static void sc_sha256_final(sc_sha256_ctx *c, unsigned char *out)
{
    uint64_t bits = c->len * 8;
    int i;
    c->buf[c->used++] = 0x80;
    if (c->used > 56) {
        memset(c->buf + c->used, 0, 64 - c->used);
        sc_sha256_block(c, c->buf);
        c->used = 0;
    }
    memset(c->buf + c->used, 0, 56 - c->used);
    for (i = 0; i < 8; i++)
        c->buf[56 + i] = (unsigned char)(bits >> (56 - 8 * i));
    sc_sha256_block(c, c->buf);
    for (i = 0; i < 8; i++) {
        out[4 * i] = (unsigned char)(c->h[i] >> 24);
        out[4 * i + 1] = (unsigned char)(c->h[i] >> 16);
        out[4 * i + 2] = (unsigned char)(c->h[i] >> 8);
        out[4 * i + 3] = (unsigned char)c->h[i];
    }
}

void sc_sha256(const unsigned char *data, size_t len, unsigned char *out)
{
    sc_sha256_ctx c;
    sc_sha256_init(&c);
    sc_sha256_update(&c, data, len);
    sc_sha256_final(&c, out);
}

/* --- session id contexts bound to the server name and certificate ----------------- */

static const unsigned char sc_binding_tag[] = "sesscache/bound-session-id-context/1";

/* The session id context of a connection to a bound context: SHA-256 over a tag, the
 * configured context, the certificate's fingerprint and the SNI name asked for, in
 * lowercase (name_len 0: no name; negative: a name that cannot be compared, for which
 * `unique` makes a context no other connection ever has). Writes 32 bytes; returns 32.
 * tests/binding/test_bound_session_id_context.py computes the same with hashlib. */
int sc_bound_session_id_context(const unsigned char *sid, unsigned int sid_len,
                                const unsigned char *cert_fp, const char *name, int name_len,
                                unsigned char *out)
{
    static unsigned long long unique;
    /* The digest's input, laid out in one buffer: the tag (with its NUL), the configured
     * context's length and bytes, the fingerprint, the kind of name (0 none, 1 a host
     * name, 2 unreadable) and the name in lowercase (or, unreadable, what makes it unique). */
    unsigned char input[sizeof(sc_binding_tag) + 1 + 32 + 16 + 1 + 255];
    /* Each thread remembers its last input and digest: a server answers the same few
     * names over and over, and the digest is most of this function's cost. */
    static __thread unsigned char memo_input[sizeof(input)], memo_out[32];
    static __thread size_t memo_len;
    unsigned long long n[3];
    size_t at = 0;
    int i;
    if (sid_len > 32)
        sid_len = 32;
    memcpy(input, sc_binding_tag, sizeof(sc_binding_tag));
    at = sizeof(sc_binding_tag);
    input[at++] = (unsigned char)sid_len;
    memcpy(input + at, sid, sid_len);
    at += sid_len;
    memcpy(input + at, cert_fp, 16);
    at += 16;
    if (name_len < 0 || name_len > 255) {
        /* unique in this process (the counter) and among processes sharing a store */
        input[at++] = 2;
        n[0] = __atomic_add_fetch(&unique, 1, __ATOMIC_RELAXED);
        n[1] = (unsigned long long)getpid();
        n[2] = (unsigned long long)time(NULL);
        memcpy(input + at, n, sizeof(n));
        at += sizeof(n);
        sc_sha256(input, at, out);
        return 32;
    }
    input[at++] = name_len > 0 ? 1 : 0;
    for (i = 0; i < name_len; i++) {
        unsigned char byte = (unsigned char)name[i];
        input[at++] = (byte >= 'A' && byte <= 'Z') ? (unsigned char)(byte + 32) : byte;
    }
    if (memo_len == at && memcmp(memo_input, input, at) == 0) {
        memcpy(out, memo_out, 32);
        return 32;
    }
    sc_sha256(input, at, out);
    memcpy(memo_input, input, at);
    memcpy(memo_out, out, 32);
    memo_len = at;
    return 32;
}

/* The fingerprint of a certificate: SHA-256 of its DER, first 16 bytes; zeros for none
 * (as cache.py computes it). */
static void sc_cert_fp(sc_api *a, const void *cert, unsigned char *out)
{
    unsigned char digest[32], *der, *p;
    int n = cert != NULL ? a->i2d_X509((const X509 *)cert, NULL) : 0;
    memset(out, 0, 16);
    if (n > 0 && (der = malloc((size_t)n)) != NULL) {
        p = der;
        if (a->i2d_X509((const X509 *)cert, &p) == n) {
            sc_sha256(der, (size_t)n, digest);
            memcpy(out, digest, 16);
        }
        free(der);
    }
}

/* The fingerprint of the context's current certificate, computed once per certificate. */
static void sc_state_cert_fp(sc_ctx_state *st, unsigned char *out)
{
    sc_api *a = &sc_apis[st->slot];
    const void *cert = a->SSL_CTX_get0_certificate(st->ctx);
    unsigned int seq;
    int tries;
    for (tries = 0; tries < 64; tries++) {
        seq = __atomic_load_n(&st->cert_seq, __ATOMIC_ACQUIRE);
        if (seq & 1)
            continue;  /* a writer is busy */
        if (__atomic_load_n(&st->cert, __ATOMIC_ACQUIRE) != cert)
            break;     /* another certificate: compute it */
        memcpy(out, st->cert_fp, 16);
        __atomic_thread_fence(__ATOMIC_ACQUIRE);
        if (__atomic_load_n(&st->cert_seq, __ATOMIC_RELAXED) == seq)
            return;
    }
    sc_cert_fp(a, cert, out);
    seq = __atomic_load_n(&st->cert_seq, __ATOMIC_ACQUIRE);
    if (!(seq & 1) && __atomic_compare_exchange_n(&st->cert_seq, &seq, seq + 1, 0,
                                                  __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
        __atomic_store_n(&st->cert, cert, __ATOMIC_RELAXED);
        memcpy(st->cert_fp, out, 16);
        __atomic_store_n(&st->cert_seq, seq + 2, __ATOMIC_RELEASE);
    }
}

/* The session id context a connection of a bound context has for the name asked. */
static void sc_state_bound_sid(sc_ctx_state *st, const char *name, int name_len, unsigned char *out)
{
    unsigned char fp[16];
    sc_state_cert_fp(st, fp);
    sc_bound_session_id_context(st->sid, st->sid_len, fp, name, name_len, out);
}

/* The ClientHello callback of every hooked or pinned server context: it runs before
 * OpenSSL looks a session up, makes a new one, or calls an SNI callback. */
static int sc_client_hello_cb(SSL *ssl, int *alert, void *arg)
{
    sc_ctx_state *st = (sc_ctx_state *)arg;
    sc_api *a = &sc_apis[st->slot];
    unsigned char bound[32], fp[16];
    char name[256];
    int name_len;
    (void)alert;
    /* (only when set: setting a slot a connection never used grows its ex_data) */
    if (a->SSL_get_ex_data(ssl, sc_offer_idx[st->slot]) != NULL)
        a->SSL_set_ex_data(ssl, sc_offer_idx[st->slot], NULL);
    if (a->SSL_get_ex_data(ssl, sc_ssl_idx[st->slot]) == NULL)
        a->SSL_set_ex_data(ssl, sc_ssl_idx[st->slot], st->ctx);
    switch (__atomic_load_n(&st->pin, __ATOMIC_ACQUIRE)) {
    case SC_PIN_CONTEXT:
        /* CPython 3.13 sets b"Python\0" on every server connection (python/cpython#105293),
         * overriding the context's value: set the configured one back. */
        a->SSL_set_session_id_context(ssl, st->sid, st->sid_len);
        break;
    case SC_PIN_BOUND:
        name_len = sc_requested_server_name(st->slot, ssl, name, sizeof(name));
        if (name_len == -1)
            name_len = -2;  /* OpenSSL cannot say: refuse, as for an unreadable name */
        sc_state_cert_fp(st, fp);
        sc_bound_session_id_context(st->sid, st->sid_len, fp, name, name_len, bound);
        a->SSL_set_session_id_context(ssl, bound, 32);
        sc_fast_note_offer(st, ssl, name, name_len, fp);
        break;
    default:
        break;
    }
    return 1;  /* SSL_CLIENT_HELLO_SUCCESS */
}

/* Record how ctx's connections get their session id context (pin: SC_PIN_CONTEXT or
 * SC_PIN_BOUND) and install the ClientHello callback that sets it. 1 when done, 0 when
 * this OpenSSL has no ClientHello callback. Pinning a bound context to the value it is
 * bound with leaves it bound. */
static int sc_set_pin(int slot, SSL_CTX *ctx, const unsigned char *bytes, unsigned int len, int pin)
{
    sc_ctx_state *st;
    if (len == 0 || len > 32 || !sc_slot_ok(slot) || !sc_ready[slot]
            || sc_apis[slot].SSL_CTX_set_client_hello_cb == NULL)
        return 0;
    st = sc_state_for(slot, ctx);
    if (st == NULL)
        return 0;
    if (pin == SC_PIN_CONTEXT && __atomic_load_n(&st->pin, __ATOMIC_ACQUIRE) == SC_PIN_BOUND
            && st->sid_len == len && memcmp(st->sid, bytes, len) == 0)
        return 1;
    memcpy(st->sid, bytes, len);
    st->sid_len = len;
    __atomic_store_n(&st->pin, pin, __ATOMIC_RELEASE);
    sc_apis[slot].SSL_CTX_set_client_hello_cb(ctx, sc_client_hello_cb, st);
    return 1;
}

/* Set the configured session id context on each connection of ctx (stdlib contexts:
 * CPython 3.13 overrides it per connection). */
int sc_pin_session_id_context(int slot, SSL_CTX *ctx, const unsigned char *bytes, unsigned int len)
{
    return sc_set_pin(slot, ctx, bytes, len, SC_PIN_CONTEXT);
}

/* Bind each connection's session id context to the configured one, the certificate and
 * the SNI name asked for. 1 when done; 0 when this OpenSSL cannot (no ClientHello
 * callback, or no way to read the ClientHello's server_name: the caller must refuse). */
int sc_bind_session_id_context(int slot, SSL_CTX *ctx, const unsigned char *bytes, unsigned int len)
{
    if (!sc_slot_ok(slot) || sc_apis[slot].SSL_client_hello_get0_ext == NULL)
        return 0;
    return sc_set_pin(slot, ctx, bytes, len, SC_PIN_BOUND);
}

/* Back from bound to the configured context alone (a cache detached). */
void sc_unbind_session_id_context(int slot, SSL_CTX *ctx)
{
    sc_ctx_state *st = sc_state_of(slot, ctx);
    int bound = SC_PIN_BOUND;
    if (st != NULL)
        __atomic_compare_exchange_n(&st->pin, &bound, SC_PIN_CONTEXT, 0, __ATOMIC_ACQ_REL,
                                    __ATOMIC_ACQUIRE);
}

/* How ctx's connections get their session id context: SC_PIN_*; -1 without a state. */
int sc_pin_of(int slot, SSL_CTX *ctx)
{
    sc_ctx_state *st = sc_state_of(slot, ctx);
    return st == NULL ? -1 : __atomic_load_n(&st->pin, __ATOMIC_ACQUIRE);
}

/* Capping a TLS 1.3 session's lifetime at its first full handshake's.
 *
 * A TLS 1.3 resumption issues a new session, dated now, with the context's full timeout:
 * a client could keep a session alive forever. OpenSSL calls the ticket generation
 * callback for each new TLS 1.3 session after dating it and *before* putting it in its
 * internal cache, where shortening its timeout is cheap. (Done afterwards, OpenSSL 4.0
 * re-sorts its whole session list under a lock: 1.6 ms per handshake with 18k sessions
 * cached, measured.) The session's origin rides in its ex_data (sc_session_origin). */
static int sc_cap_ticket_cb(SSL *ssl, void *arg)
{
    const sc_ctx_state *st = (const sc_ctx_state *)arg;
    sc_api *a = &sc_apis[st->slot];
    long lifetime = __atomic_load_n(&st->lifetime, __ATOMIC_ACQUIRE);
    SSL_SESSION *sess = a->SSL_get_session(ssl);
    long long origin, made, allowed;
    if (sess == NULL || lifetime <= 0)
        return 1;
    origin = sc_session_origin(st->slot, sess);
    made = sc_session_time(st->slot, sess);
    if (origin <= 1 || made <= 0)
        return 1;  /* a first full handshake: its timeout is already the context's */
    allowed = origin + lifetime - made;
    if (allowed < a->SSL_SESSION_get_timeout(sess))
        a->SSL_SESSION_set_timeout(sess, allowed > 1 ? (long)allowed : 1);
    return 1;  /* go on making the ticket */
}

/* Returns 1 when installed, 0 when it cannot be (no such callback in this OpenSSL). */
int sc_cap_lifetime(int slot, SSL_CTX *ctx, long lifetime)
{
    sc_ctx_state *st;
    if (!sc_slot_ok(slot) || !sc_ready[slot] || sc_apis[slot].SSL_CTX_set_session_ticket_cb == NULL)
        return 0;
    st = sc_state_for(slot, ctx);
    if (st == NULL)
        return 0;
    __atomic_store_n(&st->lifetime, lifetime, __ATOMIC_RELEASE);
    return sc_apis[slot].SSL_CTX_set_session_ticket_cb(ctx, sc_cap_ticket_cb, NULL, st) == 1;
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
    sc_ctx_state *st;
    unsigned char expected[32];
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
    /* Was the session made under the id context sesscache bound its connection to? */
    out->bound = -1;
    st = sc_state_of(slot, session_ctx);
    if (st != NULL && __atomic_load_n(&st->pin, __ATOMIC_ACQUIRE) == SC_PIN_BOUND) {
        sc_state_bound_sid(st, out->name, out->name_len, expected);
        out->bound = out->sid_ctx_len == 32 && memcmp(out->sid_ctx, expected, 32) == 0;
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
 * one asked for, the client asks for the server name it was made for (made_for_len -1:
 * made without one), its id context is the one this connection has (for a bound context:
 * sid_ctx bound to the name asked and the certificate; else sid_ctx itself), and it has
 * not expired. A name that cannot be read, or a copy of OpenSSL that cannot say which
 * name the client asks for, is refused (fail closed). Returns the session (one
 * reference, origin recorded) or NULL with *reason set. */
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
    sc_ctx_state *st;
    unsigned char expected[32];
    *reason = SC_OFFER_OK;
    sess = sc_session_from_der(slot, der, derlen);
    if (sess == NULL) {
        *reason = SC_OFFER_NOT_DER;
        return NULL;
    }
    bytes = a->SSL_SESSION_get_id(sess, &len);
    if ((int)len != id_len || memcmp(bytes, id, len) != 0)
        *reason = SC_OFFER_OTHER_ID;
    asked_len = 0;
    if (*reason == SC_OFFER_OK) {
        asked_len = sc_requested_server_name(slot, ssl, asked, sizeof(asked));
        if (asked_len < 0)
            *reason = SC_OFFER_UNREADABLE_NAME;
        else if (!(made_for_len < 0 ? asked_len == 0
                   : sc_same_name(asked, asked_len, made_for, made_for_len)))
            *reason = SC_OFFER_OTHER_NAME;
    }
    if (*reason == SC_OFFER_OK) {
        st = sc_state_of(slot, sc_session_ctx(slot, ssl));
        if (st != NULL && __atomic_load_n(&st->pin, __ATOMIC_ACQUIRE) == SC_PIN_BOUND
                && st->sid_len == sid_ctx_len && memcmp(st->sid, sid_ctx, sid_ctx_len) == 0) {
            sc_state_bound_sid(st, asked, asked_len, expected);
            sid_ctx = expected;
            sid_ctx_len = 32;
        }
        bytes = a->SSL_SESSION_get0_id_context(sess, &len);
        if (len != sid_ctx_len || memcmp(bytes, sid_ctx, len) != 0)
            *reason = SC_OFFER_OTHER_CONTEXT;
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
