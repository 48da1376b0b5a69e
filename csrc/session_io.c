/* Sessions in and out of DER, their times and origin, the SNI name a ClientHello asks
 * for, and the cache's two hot checks in one C call each: the facts of a new session
 * (sc_describe_new) and the checks on an offered one (sc_parse_offered). */
#include "sesscache.h"

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

static void sc_copy_bytes(unsigned char *to, unsigned int *to_len, const unsigned char *from,
                          unsigned int len)
{
    *to_len = len;
    if (from != NULL && len > 0)
        memcpy(to, from, len > 32 ? 32 : len);
}

/* Fills out for a new session; the origin is recorded on the session when missing.
 * The DER is written to der unless the session is a stateless TLS 1.3 ticket's. */
int sc_describe_new(int slot, SSL *ssl, SSL_SESSION *sess, SSL_CTX *session_ctx, sc_new_facts *out,
                    unsigned char *der, int derlen)
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
        out->stateless =
            !(options & SSL_OP_NO_TICKET) &&
            !(a->SSL_SESSION_get_max_early_data(sess) > 0 && !(options & SSL_OP_NO_ANTI_REPLAY));
    }
    out->made = sc_session_time(slot, sess);
    out->timeout = a->SSL_SESSION_get_timeout(sess);
    out->origin = sc_session_origin(slot, sess);
    if (out->origin <= 1) {
        out->origin = out->made;
        sc_session_set_origin(slot, sess, out->origin);
    }
    out->certificate =
        session_ctx != NULL ? (void *)a->SSL_CTX_get0_certificate(session_ctx) : NULL;
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
        if (x >= 'A' && x <= 'Z')
            x = (char)(x + 32);
        if (y >= 'A' && y <= 'Z')
            y = (char)(y + 32);
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
                              const unsigned char *id, int id_len, const unsigned char *sid_ctx,
                              unsigned int sid_ctx_len, const char *made_for, int made_for_len,
                              long long origin, long long now, int *reason)
{
    SSL_SESSION *sess = sc_session_from_der(slot, der, derlen);
    if (sess == NULL) {
        *reason = SC_OFFER_NOT_DER;
        return NULL;
    }
    return sc_check_offered(slot, ssl, sess, id, id_len, sid_ctx, sid_ctx_len, made_for,
                            made_for_len, origin, now, reason);
}

/* The checks of sc_parse_offered on a session already decoded (sess: one reference, taken
 * over: returned when it passes, freed when not). */
static SSL_SESSION *sc_check_offered(int slot, SSL *ssl, SSL_SESSION *sess, const unsigned char *id,
                                     int id_len, const unsigned char *sid_ctx,
                                     unsigned int sid_ctx_len, const char *made_for,
                                     int made_for_len, long long origin, long long now, int *reason)
{
    sc_api *a = &sc_apis[slot];
    const unsigned char *bytes;
    unsigned int len;
    char asked[256];
    int asked_len;
    sc_ctx_state *st;
    unsigned char expected[32];
    *reason = SC_OFFER_OK;
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
        if (st != NULL && __atomic_load_n(&st->pin, __ATOMIC_ACQUIRE) == SC_PIN_BOUND &&
            st->sid_len == sid_ctx_len && memcmp(st->sid, sid_ctx, sid_ctx_len) == 0) {
            sc_state_bound_sid(st, asked, asked_len, expected);
            sid_ctx = expected;
            sid_ctx_len = 32;
        }
        bytes = a->SSL_SESSION_get0_id_context(sess, &len);
        if (len != sid_ctx_len || memcmp(bytes, sid_ctx, len) != 0)
            *reason = SC_OFFER_OTHER_CONTEXT;
    }
    if (*reason == SC_OFFER_OK &&
        sc_session_time(slot, sess) + a->SSL_SESSION_get_timeout(sess) <= now)
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
 * do_handshake) would report them as its own failure: they are popped here, and only
 * they (errors queued before the call stay, see sc_err_mark). */
SSL_SESSION *sc_session_from_der(int slot, const unsigned char *der, long len)
{
    sc_api *a = &sc_apis[slot];
    const unsigned char *p = der;
    SSL_SESSION *sess;
    sc_err_mark(a);
    sess = a->d2i_SSL_SESSION(NULL, &p, len);
    if (sess != NULL && p != der + len) {
        a->SSL_SESSION_free(sess); /* trailing bytes: not one clean session */
        sess = NULL;
    }
    if (a->ERR_pop_to_mark != NULL && a->ERR_set_mark != NULL)
        sc_err_pop(a);
    else if (sess == NULL)
        a->ERR_clear_error(); /* a copy without marks: at least nothing of ours stays */
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
    size_t extlen;
    if (a->SSL_client_hello_get0_ext == NULL || outlen < 1)
        return -1;
    if (!a->SSL_client_hello_get0_ext(ssl, 0 /* server_name */, &ext, &extlen))
        return 0;
    return sc_server_name_of_extension(ext, extlen, out, outlen);
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
