/* SessionCache.attach and detach in one call each.
 *
 * Attaching a cache sets a dozen things on a context: the session id context, bound to the
 * SNI name and certificate by the ClientHello callback; the cache mode; the three session
 * callbacks; the context's timeout and the TLS 1.3 lifetime cap; the C fast path; session
 * ids that carry their issue time. Made one cffi call at a time from Python that cost more
 * than making a pyOpenSSL context (issue 22). Here, everything that can refuse is checked
 * first (the copy is ready, no other library's session callback is set, the copy can bind
 * session id contexts, the context's state can be made), then everything is set: an attach
 * that is refused leaves the context as it was.
 *
 * The context has been resolved (and its libssl copy verified) by Python before:
 * sesscache._binding.find_context. The settings are the same for every context a cache
 * attaches with one session id context and mode, so Python keeps one struct per such pair
 * (attach.h). */
#include "sesscache.h"
#include "attach.h"

/* sc_attach's answers: 0 or more is done (SC_ATTACH_NOTE_* bits: what Python warns
 * about), less than 0 is refused, with nothing changed. */
#define SC_ATTACH_NOTE_TICKETS_ON    1 /* the context sends session tickets (no OP_NO_TICKET) */
#define SC_ATTACH_NOTE_NO_CAP        2 /* no TLS 1.3 lifetime cap: no session ticket callback */
#define SC_ATTACH_BAD_SLOT           -1
#define SC_ATTACH_FOREIGN_NEW        -2 /* another library's new-session callback is set */
#define SC_ATTACH_FOREIGN_GET        -3 /* ... get-session callback */
#define SC_ATTACH_FOREIGN_REMOVE     -4 /* ... remove-session callback */
#define SC_ATTACH_CANNOT_BIND        -5 /* this copy cannot bind ids to the name asked */
#define SC_ATTACH_NO_MEMORY          -6
#define SC_ATTACH_SESSION_ID_REFUSED -7 /* SSL_CTX_set_session_id_context failed */
#define SC_ATTACH_BAD_SETTINGS       -8

int sc_attach(int slot, SSL_CTX *ctx, const sc_attach_settings *s)
{
    sc_api *a;
    sc_ctx_state *st;
    int hooks[3], i, notes = 0;
    if (!sc_slot_ok(slot) || !sc_ready[slot] || ctx == NULL)
        return SC_ATTACH_BAD_SLOT;
    if (s == NULL || s->sid_len == 0 || s->sid_len > 32 || s->lifetime <= 0)
        return SC_ATTACH_BAD_SETTINGS;
    a = &sc_apis[slot];
    /* --- what can refuse, before anything changes --- */
    sc_hooks_of(slot, ctx, &hooks[0], &hooks[1], &hooks[2]);
    for (i = 0; i < 3; i++)
        if (hooks[i] == 2)
            return SC_ATTACH_FOREIGN_NEW - i;
    /* Sessions are bound to the name asked for and the certificate, or the cache is not
     * attached at all. */
    if (!sc_can_bind_session_ids(slot))
        return SC_ATTACH_CANNOT_BIND;
    st = sc_state_for(slot, ctx);
    if (st == NULL)
        return SC_ATTACH_NO_MEMORY;
    if (a->SSL_CTX_set_session_id_context(ctx, s->sid, s->sid_len) != 1)
        return SC_ATTACH_SESSION_ID_REFUSED;
    /* --- everything else, which cannot fail --- */
    sc_set_pin(slot, ctx, s->sid, s->sid_len, SC_PIN_BOUND); /* and the ClientHello callback */
    a->SSL_CTX_ctrl(ctx, SSL_CTRL_SET_SESS_CACHE_MODE, s->cache_mode, NULL);
    sc_install(slot, ctx, 1, 1, 1);
    if (a->SSL_CTX_get_timeout(ctx) > s->lifetime)
        a->SSL_CTX_set_timeout(ctx, s->lifetime);
    if (!sc_cap_lifetime(slot, ctx, s->lifetime))
        notes |= SC_ATTACH_NOTE_NO_CAP;
    /* NULL too: a context another cache served before (without detach) must not go on
     * being answered by that cache's fast path. */
    __atomic_store_n(&st->fast, s->fast, __ATOMIC_RELEASE);
    /* Without the function (never seen) or getrandom, ids stay OpenSSL's. */
    sc_stamp_session_ids(slot, ctx, 1);
    if (!(a->SSL_CTX_get_options(ctx) & SSL_OP_NO_TICKET))
        notes |= SC_ATTACH_NOTE_TICKETS_ON;
    return notes;
}

/* Undo sc_attach: the C fast path fast (when not NULL) leaves, the session callbacks are
 * cleared, the cache mode is OpenSSL's default, connections get the configured session id
 * context alone (no longer bound) and OpenSSL's own session ids. The TLS 1.3 lifetime cap
 * and the timeout stay. 1, or SC_ATTACH_BAD_SLOT. */
int sc_detach(int slot, SSL_CTX *ctx, sc_fast *fast)
{
    if (!sc_slot_ok(slot) || !sc_ready[slot] || ctx == NULL)
        return SC_ATTACH_BAD_SLOT;
    if (fast != NULL)
        sc_fast_disable(slot, ctx, fast);
    sc_install(slot, ctx, 0, 0, 0);
    sc_apis[slot].SSL_CTX_ctrl(ctx, SSL_CTRL_SET_SESS_CACHE_MODE, SSL_SESS_CACHE_SERVER, NULL);
    sc_unbind_session_id_context(slot, ctx);
    sc_stamp_session_ids(slot, ctx, 0);
    return 1;
}
