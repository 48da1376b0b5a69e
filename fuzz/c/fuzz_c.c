/* libFuzzer harness over the C that reads bytes an attacker chooses (make fuzz-c).
 *
 * Built by clang with -fsanitize=fuzzer,address,undefined (-fno-sanitize-recover=undefined)
 * from the very files of csrc/ the module compiles, linked to the system's libssl for the
 * session parser. The first byte of an input picks the target, the rest is its input:
 *
 *   0  sc_hello_scan_feed (clienthello.c): the ClientHello scan of sesscache.aio, fed the
 *      bytes in up to four growing pieces (as a connection delivers them), each piece in
 *      a buffer of its exact size so that any read past it is caught.
 *   1  sc_server_name_of_extension and sc_psk_identity_of_extension (clienthello.c): the
 *      server_name and pre_shared_key extension bytes the callbacks read.
 *   2  a stored value as the fast path reads it: sc_envelope_open (envelope.h), the
 *      fast path's checks on the envelope, then sc_parse_offered (session_io.c), which
 *      parses the DER with d2i_SSL_SESSION through the per-copy table and checks the
 *      session's id, name, id context and time, once with the id the fast path asked for
 *      and once with the id the DER itself holds (so mutations get past the id check).
 *   3  the same with the input as the DER alone (sc_parse_offered, sc_session_from_der).
 *   4  a sealed value as a sealed cache's fast path reads it (seal.c): sc_seal_open with a
 *      fixed key (the seeds are envelopes sealed with it), then, opened, target 2 on the
 *      envelope; and the input sealed, opened again (the same bytes) and refused once a
 *      byte the input picks is flipped.
 *
 * Oracles: the sanitizers, no SSL_SESSION left alive after an input, and the scan's and
 * parsers' documented results (lengths within their buffers, results in their ranges).
 * The seed corpus (fuzz/c/corpus) holds real ClientHellos, extensions and envelopes the
 * tests' handshakes made (fuzz/c/make_corpus.py). */
#include "sc_api.h" /* generated: make fuzz-c runs build_ffi.py --api-header */

#include "../../csrc/sesscache.h"

#include "../../csrc/clienthello.c"
#include "../../csrc/session_io.c"
#include "../../csrc/seal.c"

#include <openssl/rand.h>

#include <assert.h>
#include <stdio.h>

/* --- what session_io.c takes from the rest of the module ----------------------------- */

static long sc_fuzz_live;
static int sc_slot_ok(int slot) { return slot == 0; }
static SSL_CTX *sc_session_ctx(int slot, SSL *ssl)
{
    (void)slot;
    return SSL_get_SSL_CTX(ssl);
}
static sc_ctx_state *sc_state_of(int slot, SSL_CTX *ctx)
{
    (void)slot;
    (void)ctx;
    return NULL; /* a context sesscache does not bind: sid_ctx is compared as given */
}
static void sc_state_bound_sid(sc_ctx_state *st, const char *name, int name_len, unsigned char *out)
{
    (void)st;
    (void)name;
    (void)name_len;
    memset(out, 0, 32);
}
static void sc_err_mark(const sc_api *a) { a->ERR_set_mark(); }
static void sc_err_pop(const sc_api *a) { a->ERR_pop_to_mark(); }

static void sc_fuzz_sess_new(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl,
                             void *argp)
{
    (void)parent, (void)ptr, (void)ad, (void)idx, (void)argl, (void)argp;
    __atomic_add_fetch(&sc_fuzz_live, 1, __ATOMIC_SEQ_CST);
}
static void sc_fuzz_sess_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl,
                              void *argp)
{
    (void)parent, (void)ptr, (void)ad, (void)idx, (void)argl, (void)argp;
    __atomic_sub_fetch(&sc_fuzz_live, 1, __ATOMIC_SEQ_CST);
}

#define SC_FUZZ_SET(f) sc_apis[0].f = (__typeof__(sc_apis[0].f))f

static SSL *sc_fuzz_ssl;

static void sc_fuzz_setup(void)
{
    SSL_CTX *ctx;
    if (sc_fuzz_ssl != NULL)
        return;
    SC_FUZZ_SET(d2i_SSL_SESSION);
    SC_FUZZ_SET(SSL_SESSION_free);
    SC_FUZZ_SET(SSL_SESSION_get_id);
    SC_FUZZ_SET(SSL_SESSION_get0_id_context);
    SC_FUZZ_SET(SSL_SESSION_get_time);
    SC_FUZZ_SET(SSL_SESSION_get_timeout);
    SC_FUZZ_SET(SSL_SESSION_get_ex_data);
    SC_FUZZ_SET(SSL_SESSION_set_ex_data);
    SC_FUZZ_SET(SSL_client_hello_get0_ext);
    SC_FUZZ_SET(ERR_set_mark);
    SC_FUZZ_SET(ERR_pop_to_mark);
    SC_FUZZ_SET(ERR_clear_error);
    SC_FUZZ_SET(RAND_bytes);
    SC_FUZZ_SET(EVP_CIPHER_fetch);
    SC_FUZZ_SET(EVP_CIPHER_free);
    SC_FUZZ_SET(EVP_CIPHER_CTX_new);
    SC_FUZZ_SET(EVP_CIPHER_CTX_free);
    SC_FUZZ_SET(EVP_CIPHER_CTX_ctrl);
    SC_FUZZ_SET(EVP_EncryptInit_ex);
    SC_FUZZ_SET(EVP_EncryptUpdate);
    SC_FUZZ_SET(EVP_EncryptFinal_ex);
    SC_FUZZ_SET(EVP_DecryptInit_ex);
    SC_FUZZ_SET(EVP_DecryptUpdate);
    SC_FUZZ_SET(EVP_DecryptFinal_ex);
    /* The session ex_data index: origins are recorded there, and it counts live sessions. */
    sc_sess_idx[0] = CRYPTO_get_ex_new_index(CRYPTO_EX_INDEX_SSL_SESSION, 0, NULL, sc_fuzz_sess_new,
                                             NULL, sc_fuzz_sess_free);
    sc_ready[0] = 1;
    ctx = SSL_CTX_new(TLS_server_method());
    sc_fuzz_ssl = SSL_new(ctx);
    SSL_CTX_free(ctx);
    assert(sc_fuzz_ssl != NULL && sc_sess_idx[0] >= 0);
}

/* An exact-size copy, so a read one byte past the input is an ASan report. */
static unsigned char *sc_fuzz_copy(const uint8_t *data, size_t n)
{
    unsigned char *copy = malloc(n ? n : 1);
    assert(copy != NULL);
    memcpy(copy, data, n);
    return copy;
}

static void sc_fuzz_hello(const uint8_t *data, size_t n)
{
    sc_hello_scan st;
    size_t cut[4], piece;
    int i, rc = SC_HELLO_MORE;
    memset(&st, 0, sizeof(st));
    /* Up to three cut points chosen by the input's first bytes, then the whole. */
    for (i = 0; i < 3; i++)
        cut[i] = n ? (size_t)data[i % n] * n / 256 : 0;
    cut[3] = n;
    for (i = 0; i < 4 && rc == SC_HELLO_MORE; i++) {
        unsigned char *copy;
        piece = cut[i] < (i ? cut[i - 1] : 0) ? (i ? cut[i - 1] : 0) : cut[i];
        copy = sc_fuzz_copy(data, piece);
        rc = sc_hello_scan_feed(&st, (const char *)copy, piece);
        free(copy);
        cut[i] = piece;
    }
    assert(rc >= SC_HELLO_NOMEM && rc <= SC_HELLO_COMPLETE);
    if (rc == SC_HELLO_COMPLETE) {
        assert(st.consumed <= n);
        assert(st.sid_len >= 0 && st.sid_len <= 32);
        assert(st.sni_len >= -1 && st.sni_len <= 255);
        assert(st.nkeys >= 0 && st.nkeys <= 2);
        for (i = 0; i < st.nkeys; i++)
            assert(st.key_lens[i] >= 1 && st.key_lens[i] <= 32);
    }
}

static void sc_fuzz_extensions(const uint8_t *data, size_t n)
{
    unsigned char *copy = sc_fuzz_copy(data, n), id[32];
    char name[256];
    int got = sc_server_name_of_extension(copy, n, name, (int)sizeof(name));
    assert(got == -2 || (got >= 0 && got <= 255));
    if (got > 0)
        assert(name[got] == '\0');
    got = sc_psk_identity_of_extension(copy, n, id);
    assert(got == 0 || got == 32);
    free(copy);
}

/* sc_parse_offered as the fast path calls it, then with the DER's own id. */
static void sc_fuzz_offer(const unsigned char *der, size_t der_len, const char *name, int name_len,
                          long long origin)
{
    static const unsigned char asked_id[32] = {1, 2, 3};
    static const unsigned char sid_ctx[] = "sesscache";
    const unsigned char *own_id, *own_ctx;
    unsigned int own_id_len = 0, own_ctx_len = 0;
    unsigned char id_copy[32];
    SSL_SESSION *sess;
    int reason;
    long long now = (long long)time(NULL);
    sess = sc_parse_offered(0, sc_fuzz_ssl, der, (long)der_len, asked_id, 32, sid_ctx, 9, name,
                            name_len, origin, now, &reason);
    assert((sess == NULL) == (reason != SC_OFFER_OK));
    if (sess != NULL)
        SSL_SESSION_free(sess);
    sess = sc_session_from_der(0, der, (long)der_len);
    if (sess == NULL)
        return;
    own_id = SSL_SESSION_get_id(sess, &own_id_len);
    own_ctx = SSL_SESSION_get0_id_context(sess, &own_ctx_len);
    if (own_id_len >= 1 && own_id_len <= 32) {
        memcpy(id_copy, own_id, own_id_len);
        {
            SSL_SESSION *again =
                sc_parse_offered(0, sc_fuzz_ssl, der, (long)der_len, id_copy, (int)own_id_len,
                                 own_ctx, own_ctx_len, name, name_len, origin, now, &reason);
            assert((again == NULL) == (reason != SC_OFFER_OK));
            if (again != NULL)
                SSL_SESSION_free(again);
        }
    }
    SSL_SESSION_free(sess);
}

static void sc_fuzz_envelope(const uint8_t *data, size_t n)
{
    unsigned char *copy = sc_fuzz_copy(data, n);
    sc_envelope env;
    double now = (double)time(NULL);
    if (sc_envelope_open(copy, n, &env)) {
        assert(env.der_len > 0 && env.der + env.der_len == copy + n);
        assert(env.name_len == -1 || (env.name_len >= 1 && env.name_len <= 255));
        assert(env.name == NULL || (const unsigned char *)env.name + env.name_len == env.der);
        /* The fast path's checks before the parse (fast_path.c): size, lifetime, clock. */
        if ((long long)n <= 10 * 1024 + SC_ENVELOPE_OVERHEAD &&
            !((double)env.origin + 300.0 <= now || (double)env.origin > now + SC_CLOCK_SKEW))
            sc_fuzz_offer(env.der, env.der_len, env.name, env.name_len, env.origin);
        /* And the parse regardless of them (the Python path parses before it checks). */
        sc_fuzz_offer(env.der, env.der_len, env.name, env.name_len, (long long)now);
    }
    free(copy);
}

/* The key and store key of target 4's seeds (fuzz/c/make_corpus.py seals with the same). */
static const unsigned char sc_fuzz_seal_key[32] = {0,  1,  2,  3,  4,  5,  6,  7,  8,  9,  10,
                                                   11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21,
                                                   22, 23, 24, 25, 26, 27, 28, 29, 30, 31};
static const unsigned char sc_fuzz_store_key[] =
    "sc1:\x09sesscache0123456789abcdef0123456789abcdef";

static void sc_fuzz_sealed(const uint8_t *data, size_t n)
{
    static sc_seal *ring;
    static const unsigned char id[4] = {0x17, 0x4e, 0x31, 0x94}; /* key_id(sc_fuzz_seal_key) */
    static const int len = 32;
    size_t klen = sizeof(sc_fuzz_store_key) - 1, got, again;
    unsigned char *copy = sc_fuzz_copy(data, n), *out, *sealed;
    if (ring == NULL)
        ring = sc_seal_new(sc_fuzz_seal_key, &len, id, 1);
    assert(ring != NULL && sc_seal_supported(0));
    /* As the fast path reads a stored value: into a buffer of exactly the room it has. */
    out = malloc(n > SC_SEAL_OVERHEAD ? n - SC_SEAL_OVERHEAD : 1);
    got = sc_seal_open(0, ring, sc_fuzz_store_key, klen, copy, n, out,
                       n > SC_SEAL_OVERHEAD ? n - SC_SEAL_OVERHEAD : 0);
    assert(got == 0 || got == n - SC_SEAL_OVERHEAD);
    if (got > 0)
        sc_fuzz_envelope(out, got);
    free(out);
    /* The input as an envelope to seal: opens to the same bytes, and not once changed. */
    if (n >= 1 && n <= 4096) {
        sealed = malloc(n + SC_SEAL_OVERHEAD);
        out = malloc(n);
        got = sc_seal_blob(0, ring, sc_fuzz_store_key, klen, copy, n, sealed, n + SC_SEAL_OVERHEAD);
        assert(got == n + SC_SEAL_OVERHEAD);
        again = sc_seal_open(0, ring, sc_fuzz_store_key, klen, sealed, got, out, n);
        assert(again == n && memcmp(out, copy, n) == 0);
        sealed[copy[0] % got] ^= 0x01;
        assert(sc_seal_open(0, ring, sc_fuzz_store_key, klen, sealed, got, out, n) == 0);
        free(out);
        free(sealed);
    }
    free(copy);
}

static void sc_fuzz_der(const uint8_t *data, size_t n)
{
    unsigned char *copy = sc_fuzz_copy(data, n);
    sc_fuzz_offer(copy, n, NULL, -1, (long long)time(NULL));
    free(copy);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    sc_fuzz_setup();
    if (size < 1)
        return 0;
    switch (data[0] % 5) {
    case 0:
        sc_fuzz_hello(data + 1, size - 1);
        break;
    case 1:
        sc_fuzz_extensions(data + 1, size - 1);
        break;
    case 2:
        sc_fuzz_envelope(data + 1, size - 1);
        break;
    case 3:
        sc_fuzz_der(data + 1, size - 1);
        break;
    default:
        sc_fuzz_sealed(data + 1, size - 1);
        break;
    }
    ERR_clear_error();
    if (__atomic_load_n(&sc_fuzz_live, __ATOMIC_SEQ_CST) != 0) {
        fprintf(stderr, "sesscache fuzz: %ld SSL_SESSION left alive\n", sc_fuzz_live);
        abort();
    }
    return 0;
}
