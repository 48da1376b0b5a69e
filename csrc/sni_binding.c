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

/* --- SHA-256 (FIPS 180-4), for session id contexts and certificate fingerprints ------
 * Computed here rather than by the libssl copy: a context's copy may be one whose
 * digest functions sesscache never resolved, and these inputs are public. */
typedef struct {
    uint32_t h[8];
    uint64_t len;
    unsigned char buf[64];
    size_t used;
} sc_sha256_ctx;

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
        w[i] = ((uint32_t)p[4 * i] << 24) | ((uint32_t)p[4 * i + 1] << 16) |
               ((uint32_t)p[4 * i + 2] << 8) | (uint32_t)p[4 * i + 3];
    for (i = 16; i < 64; i++)
        w[i] = (SC_ROR(w[i - 2], 17) ^ SC_ROR(w[i - 2], 19) ^ (w[i - 2] >> 10)) + w[i - 7] +
               (SC_ROR(w[i - 15], 7) ^ SC_ROR(w[i - 15], 18) ^ (w[i - 15] >> 3)) + w[i - 16];
    a = c->h[0];
    b = c->h[1];
    cc = c->h[2];
    d = c->h[3];
    e = c->h[4];
    f = c->h[5];
    g = c->h[6];
    h = c->h[7];
    for (i = 0; i < 64; i++) {
        t1 = h + (SC_ROR(e, 6) ^ SC_ROR(e, 11) ^ SC_ROR(e, 25)) + ((e & f) ^ (~e & g)) +
             sc_sha256_k[i] + w[i];
        t2 = (SC_ROR(a, 2) ^ SC_ROR(a, 13) ^ SC_ROR(a, 22)) + ((a & b) ^ (a & cc) ^ (b & cc));
        h = g;
        g = f;
        f = e;
        e = d + t1;
        d = cc;
        cc = b;
        b = a;
        a = t1 + t2;
    }
    c->h[0] += a;
    c->h[1] += b;
    c->h[2] += cc;
    c->h[3] += d;
    c->h[4] += e;
    c->h[5] += f;
    c->h[6] += g;
    c->h[7] += h;
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
            continue; /* a writer is busy */
        if (__atomic_load_n(&st->cert, __ATOMIC_ACQUIRE) != cert)
            break; /* another certificate: compute it */
        memcpy(out, st->cert_fp, 16);
        __atomic_thread_fence(__ATOMIC_ACQUIRE);
        if (__atomic_load_n(&st->cert_seq, __ATOMIC_RELAXED) == seq)
            return;
    }
    sc_cert_fp(a, cert, out);
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
            name_len = -2; /* OpenSSL cannot say: refuse, as for an unreadable name */
        sc_state_cert_fp(st, fp);
        sc_bound_session_id_context(st->sid, st->sid_len, fp, name, name_len, bound);
        a->SSL_set_session_id_context(ssl, bound, 32);
        sc_fast_note_offer(st, ssl, name, name_len, fp);
        break;
    default:
        break;
    }
    return 1; /* SSL_CLIENT_HELLO_SUCCESS */
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
