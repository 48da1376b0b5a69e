/* Session id contexts pinned to the configured value, or bound to the server name and
 * certificate, and the ClientHello callback that sets them.
 *
 * Binding: for a context a SessionCache serves, the ClientHello callback sets the
 * connection's session id context to a digest of the configured one, the certificate of
 * the context and the SNI name the client asks for. OpenSSL copies it into every session
 * made on the connection and resumes a session only where it matches
 * (ssl_get_prev_session, for its internal cache, the external cache and tickets alike,
 * TLS 1.2 and 1.3). So a session made for one name is a full handshake for any other,
 * whichever cache holds it: OpenSSL's own check does the refusing, as nginx's
 * per-virtual-host context does since CVE-2025-23419. */
#include "sesscache.h"

/* --- SHA-256, through the copy's own EVP ----------------------------------------------
 * For session id contexts and certificate fingerprints. Each slot digests with its own
 * libcrypto (EVP_Digest, resolved per copy like every other function), with the SHA-256
 * object fetched once per slot on 3.0+ (EVP_sha256() would make every call fetch it
 * again) or OpenSSL 1.1.1's static one. Measured against the hand-written SHA-256 this
 * replaces (gcc -O2, OpenSSL 3.0.19, x86-64 with SHA extensions, 1M digests each):
 * 100 bytes (a bound context's input) 606 -> 255 ns, 800 bytes (a certificate) 4059 ->
 * 1040 ns; EVP_sha256() without the fetch: 468 and 1587 ns (docs/decisions.md). */

static const void *sc_sha256_md[SC_MAX_INSTANCES]; /* fetched once per slot; never freed */

static const void *sc_slot_sha256_md(int slot)
{
    sc_api *a = &sc_apis[slot];
    const void *md = __atomic_load_n(&sc_sha256_md[slot], __ATOMIC_ACQUIRE);
    const void *expected = NULL;
    void *fetched;
    if (md != NULL || a->EVP_Digest == NULL)
        return md;
    if (a->EVP_MD_fetch == NULL)
        md = a->EVP_sha256 != NULL ? a->EVP_sha256() : NULL;
    else if ((fetched = a->EVP_MD_fetch(NULL, "SHA256", NULL)) != NULL) {
        /* Two threads may fetch at once: one keeps its object, the other's is freed. */
        if (!__atomic_compare_exchange_n(&sc_sha256_md[slot], &expected, fetched, 0,
                                         __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
            if (a->EVP_MD_free != NULL)
                a->EVP_MD_free(fetched);
            return expected;
        }
        return fetched;
    }
    if (md != NULL)
        __atomic_store_n(&sc_sha256_md[slot], md, __ATOMIC_RELEASE);
    return md;
}

/* SHA-256 of data into out (32 bytes) with the slot's libcrypto; 1 when done, 0 when this
 * copy cannot (no EVP_Digest or no SHA-256 resolved, or it failed). */
static int sc_slot_sha256(int slot, const unsigned char *data, size_t len, unsigned char *out)
{
    const void *md;
    unsigned int n = 0;
    if (!sc_slot_ok(slot) || !sc_ready[slot] || (md = sc_slot_sha256_md(slot)) == NULL)
        return 0;
    return sc_apis[slot].EVP_Digest(data, len, out, &n, md, NULL) == 1 && n == 32;
}

/* A slot that can digest, for the two entry points without a slot argument (tests and
 * diagnostics compare them with hashlib); -1 when no registered copy can. */
static int sc_any_sha256_slot(void)
{
    int slot;
    for (slot = 0; slot < SC_MAX_INSTANCES; slot++)
        if (sc_ready[slot] && sc_slot_sha256_md(slot) != NULL)
            return slot;
    return -1;
}

/* SHA-256 of data with the first copy that can; zeros when none can. */
void sc_sha256(const unsigned char *data, size_t len, unsigned char *out)
{
    if (!sc_slot_sha256(sc_any_sha256_slot(), data, len, out))
        memset(out, 0, 32);
}

/* --- session id contexts bound to the server name and certificate ----------------- */

static const unsigned char sc_binding_tag[] = "sesscache/bound-session-id-context/1";

/* The session id context of a connection to a bound context: SHA-256 over a tag, the
 * configured context, the certificate's fingerprint and the SNI name asked for, in
 * lowercase (name_len 0: no name; negative: a name that cannot be compared, for which
 * `unique` makes a context no other connection ever has), digested by the slot's
 * libcrypto. Writes 32 bytes; returns 32. Should the digest fail, the context written is
 * one no other connection has either (fail closed: no resumption, never a wrong one).
 * tests/binding/test_bound_session_id_context.py computes the same with hashlib. */
static int sc_bound_sid_digest(int slot, const unsigned char *sid, unsigned int sid_len,
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
        if (!sc_slot_sha256(slot, input, at, out))
            goto unique_without_digest;
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
    if (!sc_slot_sha256(slot, input, at, out))
        goto unique_without_digest;
    memcpy(memo_input, input, at);
    memcpy(memo_out, out, 32);
    memo_len = at;
    return 32;
unique_without_digest:
    n[0] = __atomic_add_fetch(&unique, 1, __ATOMIC_RELAXED);
    n[1] = (unsigned long long)getpid();
    n[2] = (unsigned long long)time(NULL);
    memset(out, 0xff, 8);
    memcpy(out + 8, n, sizeof(n));
    return 32;
}

/* The same with the first copy that can digest (for tests: no connection to take a slot
 * from). */
int sc_bound_session_id_context(const unsigned char *sid, unsigned int sid_len,
                                const unsigned char *cert_fp, const char *name, int name_len,
                                unsigned char *out)
{
    return sc_bound_sid_digest(sc_any_sha256_slot(), sid, sid_len, cert_fp, name, name_len, out);
}

/* The fingerprint of a certificate: SHA-256 of its DER, first 16 bytes; zeros for none
 * (as cache.py computes it). 1 when done; 0 when the certificate could not be read or
 * digested: out is then all 0xff, which matches no session's fingerprint. */
static int sc_cert_fp(int slot, const void *cert, unsigned char *out)
{
    sc_api *a = &sc_apis[slot];
    unsigned char digest[32], *der, *p;
    int n = cert != NULL ? a->i2d_X509((const X509 *)cert, NULL) : 0;
    int done = 0;
    memset(out, 0, 16);
    if (cert == NULL)
        return 1;
    if (n > 0 && (der = malloc((size_t)n)) != NULL) {
        p = der;
        if (a->i2d_X509((const X509 *)cert, &p) == n &&
            sc_slot_sha256(slot, der, (size_t)n, digest)) {
            memcpy(out, digest, 16);
            done = 1;
        }
        free(der);
    }
    if (!done)
        memset(out, 0xff, 16);
    return done;
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
            continue; /* a writer is busy */
        if (__atomic_load_n(&st->cert, __ATOMIC_ACQUIRE) != cert)
            break; /* another certificate: compute it */
        memcpy(out, st->cert_fp, 16);
        __atomic_thread_fence(__ATOMIC_ACQUIRE);
        if (__atomic_load_n(&st->cert_seq, __ATOMIC_RELAXED) == seq)
            return;
    }
    if (!sc_cert_fp(st->slot, cert, out))
        return; /* not remembered: the next connection tries again */
    seq = __atomic_load_n(&st->cert_seq, __ATOMIC_ACQUIRE);
    if (!(seq & 1) && __atomic_compare_exchange_n(&st->cert_seq, &seq, seq + 1, 0, __ATOMIC_ACQ_REL,
                                                  __ATOMIC_ACQUIRE)) {
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
    sc_bound_sid_digest(st->slot, st->sid, st->sid_len, fp, name, name_len, out);
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
    sc_err_mark(a);
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
            name_len = -2; /* OpenSSL cannot say: refuse, as for an unreadable name */
        sc_state_cert_fp(st, fp);
        sc_bound_sid_digest(st->slot, st->sid, st->sid_len, fp, name, name_len, bound);
        a->SSL_set_session_id_context(ssl, bound, 32);
        sc_fast_note_offer(st, ssl, name, name_len, fp);
        break;
    default:
        break;
    }
    sc_err_pop(a);
    return 1; /* SSL_CLIENT_HELLO_SUCCESS */
}

/* 1 when this copy can bind connections' session id contexts to the SNI name asked for
 * and the certificate: it has the ClientHello callback, a way to read the ClientHello's
 * server_name, and SHA-256 in its libcrypto. */
static int sc_can_bind_session_ids(int slot)
{
    return sc_slot_ok(slot) && sc_ready[slot] &&
           sc_apis[slot].SSL_CTX_set_client_hello_cb != NULL &&
           sc_apis[slot].SSL_client_hello_get0_ext != NULL && sc_slot_sha256_md(slot) != NULL;
}

/* Record how ctx's connections get their session id context (pin: SC_PIN_CONTEXT or
 * SC_PIN_BOUND) and install the ClientHello callback that sets it. 1 when done, 0 when
 * this OpenSSL has no ClientHello callback. Pinning a bound context to the value it is
 * bound with leaves it bound. */
static int sc_set_pin(int slot, SSL_CTX *ctx, const unsigned char *bytes, unsigned int len, int pin)
{
    sc_ctx_state *st;
    if (len == 0 || len > 32 || !sc_slot_ok(slot) || !sc_ready[slot] ||
        sc_apis[slot].SSL_CTX_set_client_hello_cb == NULL)
        return 0;
    st = sc_state_for(slot, ctx);
    if (st == NULL)
        return 0;
    if (pin == SC_PIN_CONTEXT && __atomic_load_n(&st->pin, __ATOMIC_ACQUIRE) == SC_PIN_BOUND &&
        st->sid_len == len && memcmp(st->sid, bytes, len) == 0)
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
 * callback, no way to read the ClientHello's server_name, or no SHA-256 in its libcrypto:
 * the caller must refuse). */
int sc_bind_session_id_context(int slot, SSL_CTX *ctx, const unsigned char *bytes, unsigned int len)
{
    if (!sc_can_bind_session_ids(slot))
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
