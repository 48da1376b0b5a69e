/* Per-context state: each hooked or pinned SSL_CTX's settings (the session id context to
 * pin or bind, the TLS 1.3 lifetime cap, the cache's C fast path) live in memory of its
 * own, as many contexts as there are (gunicorn makes one per connection), hung on the
 * context's ex_data and freed with it (slots.c's sc_ctx_ex_free). The C callbacks that
 * need them get a pointer to it as their argument. */
#include "sesscache.h"

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
        return 1; /* a first full handshake: its timeout is already the context's */
    allowed = origin + lifetime - made;
    sc_err_mark(a);
    if (allowed < a->SSL_SESSION_get_timeout(sess))
        a->SSL_SESSION_set_timeout(sess, allowed > 1 ? (long)allowed : 1);
    sc_err_pop(a);
    return 1; /* go on making the ticket */
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
