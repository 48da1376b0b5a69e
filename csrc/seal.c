/* Sealing store values with AES-GCM in C, so that a sealed cache keeps the C fast path.
 *
 * The format is sesscache/sealing.py's, byte for byte (envelope.h holds its numbers): a
 * value sealed here opens in Python and the other way round, in this process, in another,
 * and in an older sesscache that seals in Python only. Rotation as there: the first key
 * seals, every key opens (the key id picks which keys to try; two keys sharing an id,
 * 1 in 2**32, are both tried).
 *
 * * A key ring (sc_seal) holds one Sealer's keys, their ids (computed by Python: a hash,
 *   not the key) and counters. It is read by handshakes in any thread and never changes,
 *   except that retiring it (the cache closed or collected) zeroes the keys: readers copy
 *   a key under a sequence lock (no mutex, which a fork could leave held), so a handshake
 *   in flight either got the whole key before the wipe or refuses. A retired ring, like the
 *   fast path's policies that point to it, is never freed: a context can outlive its
 *   cache and still run a callback holding the pointer (about 700 bytes per cache).
 * * Every cipher call goes through the table of the copy of libcrypto that owns the
 *   context (sc_apis[slot], as ticket_keys.c calls it): a bundled copy's handshakes
 *   never meet the linked copy's functions. AES-GCM is fetched once per copy and key size
 *   (EVP_CIPHER_fetch, 3.0+) or taken from EVP_aes_*_gcm (1.1.1).
 * * The 12-byte nonce comes from the kernel (getrandom, as Python's os.urandom), which a
 *   fork cannot make two processes repeat; the copy's RAND_bytes only where getrandom
 *   fails (a seccomp filter).
 *
 * Anything this file does not do (a copy without the functions, a value of another format,
 * an unknown key, failed authentication, no memory) returns 0: the fast path then hands the
 * event to Python, which does it again, counts it and logs it. Counted here too. */
#include "sesscache.h"

#include <openssl/evp.h>

#define SC_SEAL_MAX_KEYS 16
#define SC_SEAL_KEY_MAX  32
#define SC_SEAL_RETRIES  64 /* sequence-lock reads before giving up (a wipe in progress) */

#define SC_SEAL_SEALED   0 /* values sealed */
#define SC_SEAL_OPENED   1 /* values opened */
#define SC_SEAL_REFUSED  2 /* not ours: another format, an unknown key, failed authentication */
#define SC_SEAL_ERRORS   3 /* the copy lacks a function, or a libcrypto call failed */
#define SC_SEAL_COUNTERS 4

#define SC_SEAL_CTRL_GET_TAG 0x10 /* EVP_CTRL_AEAD_GET_TAG / EVP_CTRL_GCM_GET_TAG */
#define SC_SEAL_CTRL_SET_TAG 0x11 /* EVP_CTRL_AEAD_SET_TAG / EVP_CTRL_GCM_SET_TAG */

typedef struct {
    unsigned char id[SC_SEAL_KEY_ID_LEN];
    unsigned char key[SC_SEAL_KEY_MAX];
    int len; /* 16, 24 or 32 */
} sc_seal_key;

struct sc_seal {
    unsigned int seq; /* odd while the keys are being wiped */
    int retired;
    int count;
    sc_seal_key keys[SC_SEAL_MAX_KEYS];
    long long counters[SC_SEAL_COUNTERS];
    struct sc_seal *next_made; /* every ring ever made: none is ever unreachable */
};

static sc_seal *sc_seal_all;

/* Per copy: AES-GCM for 16-, 24- and 32-byte keys, set once (lock-free: the loser of a
 * race gives its fetched cipher back). */
static void *sc_seal_ciphers[SC_MAX_INSTANCES][3];

static void sc_seal_count(sc_seal *s, int which)
{
    __atomic_add_fetch(&s->counters[which], 1, __ATOMIC_RELAXED);
}

/* A ring of count keys (lens[i] bytes each, back to back in keys, newest first) with their
 * ids (SC_SEAL_KEY_ID_LEN bytes each, back to back); NULL for a bad argument or no memory. */
sc_seal *sc_seal_new(const unsigned char *keys, const int *lens, const unsigned char *ids,
                     int count)
{
    sc_seal *s;
    size_t at = 0;
    int i;
    if (count < 1 || count > SC_SEAL_MAX_KEYS)
        return NULL;
    for (i = 0; i < count; i++)
        if (lens[i] != 16 && lens[i] != 24 && lens[i] != 32)
            return NULL;
    s = (sc_seal *)calloc(1, sizeof(*s));
    if (s == NULL)
        return NULL;
    for (i = 0; i < count; i++) {
        memcpy(s->keys[i].id, ids + (size_t)i * SC_SEAL_KEY_ID_LEN, SC_SEAL_KEY_ID_LEN);
        memcpy(s->keys[i].key, keys + at, (size_t)lens[i]);
        s->keys[i].len = lens[i];
        at += (size_t)lens[i];
    }
    s->count = count;
    s->next_made = __atomic_load_n(&sc_seal_all, __ATOMIC_ACQUIRE);
    while (!__atomic_compare_exchange_n(&sc_seal_all, &s->next_made, s, 1, __ATOMIC_ACQ_REL,
                                        __ATOMIC_ACQUIRE))
        ;
    return s;
}

/* Zero the ring's keys for good: nothing seals or opens with it afterwards. */
void sc_seal_retire(sc_seal *s)
{
    int expected = 0, i;
    if (s == NULL || !__atomic_compare_exchange_n(&s->retired, &expected, 1, 0, __ATOMIC_ACQ_REL,
                                                  __ATOMIC_ACQUIRE))
        return;
    __atomic_add_fetch(&s->seq, 1, __ATOMIC_ACQ_REL); /* odd: readers wait or refuse */
    for (i = 0; i < SC_SEAL_MAX_KEYS; i++)            /* (the ids, not secret, stay) */
        explicit_bzero(s->keys[i].key, SC_SEAL_KEY_MAX);
    __atomic_add_fetch(&s->seq, 1, __ATOMIC_RELEASE);
}

/* In a forked child (at_fork.c): every ring counts the child's own traffic only. */
static void sc_seal_fork_child(void)
{
    sc_seal *s;
    for (s = __atomic_load_n(&sc_seal_all, __ATOMIC_ACQUIRE); s != NULL; s = s->next_made)
        memset(s->counters, 0, sizeof(s->counters));
}

void sc_seal_counts_of(sc_seal *s, long long *out, int n)
{
    int i;
    for (i = 0; i < n && i < SC_SEAL_COUNTERS; i++)
        out[i] = __atomic_load_n(&s->counters[i], __ATOMIC_RELAXED);
}

/* Copies key i into out; its length, or 0 when the ring is retired (or being wiped). */
static int sc_seal_key_copy(sc_seal *s, int i, unsigned char *out)
{
    unsigned int seq;
    int tries, len;
    for (tries = 0; tries < SC_SEAL_RETRIES; tries++) {
        seq = __atomic_load_n(&s->seq, __ATOMIC_ACQUIRE);
        if (seq & 1)
            continue;
        if (__atomic_load_n(&s->retired, __ATOMIC_ACQUIRE))
            return 0;
        len = s->keys[i].len;
        memcpy(out, s->keys[i].key, SC_SEAL_KEY_MAX);
        __atomic_thread_fence(__ATOMIC_ACQUIRE);
        if (__atomic_load_n(&s->seq, __ATOMIC_RELAXED) == seq)
            return len;
    }
    return 0;
}

/* Whether the copy in slot has every function sealing calls. */
int sc_seal_supported(int slot)
{
    sc_api *a;
    if (!sc_slot_ok(slot) || !sc_ready[slot])
        return 0;
    a = &sc_apis[slot];
    return a->EVP_CIPHER_CTX_new != NULL && a->EVP_CIPHER_CTX_free != NULL &&
           a->EVP_CIPHER_CTX_ctrl != NULL && a->EVP_EncryptUpdate != NULL &&
           a->EVP_EncryptFinal_ex != NULL && a->EVP_DecryptUpdate != NULL &&
           a->EVP_DecryptFinal_ex != NULL &&
           (a->EVP_CIPHER_fetch != NULL ||
            (a->EVP_aes_128_gcm != NULL && a->EVP_aes_192_gcm != NULL &&
             a->EVP_aes_256_gcm != NULL));
}

/* AES-GCM for a key of len bytes in the copy in slot, or NULL. */
static const void *sc_seal_cipher(int slot, int len)
{
    static const char *const names[3] = {"AES-128-GCM", "AES-192-GCM", "AES-256-GCM"};
    sc_api *a = &sc_apis[slot];
    int which = len == 16 ? 0 : len == 24 ? 1 : 2;
    void *cipher = __atomic_load_n(&sc_seal_ciphers[slot][which], __ATOMIC_ACQUIRE);
    void *expected = NULL;
    if (cipher != NULL)
        return cipher;
    if (a->EVP_CIPHER_fetch != NULL)
        cipher = a->EVP_CIPHER_fetch(NULL, names[which], NULL);
    else
        cipher = (void *)(which == 0   ? a->EVP_aes_128_gcm()
                          : which == 1 ? a->EVP_aes_192_gcm()
                                       : a->EVP_aes_256_gcm());
    if (cipher == NULL)
        return NULL;
    if (!__atomic_compare_exchange_n(&sc_seal_ciphers[slot][which], &expected, cipher, 0,
                                     __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
        if (a->EVP_CIPHER_fetch != NULL && a->EVP_CIPHER_free != NULL)
            a->EVP_CIPHER_free(cipher); /* another thread set it first */
        cipher = expected;
    }
    return cipher;
}

static int sc_seal_nonce(sc_api *a, unsigned char *nonce)
{
    size_t got = 0;
    ssize_t n;
    while (got < SC_SEAL_NONCE_LEN) {
        n = getrandom(nonce + got, SC_SEAL_NONCE_LEN - got, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return a->RAND_bytes(nonce, SC_SEAL_NONCE_LEN) == 1;
        got += (size_t)n;
    }
    return 1;
}

/* Seals plain (an envelope) for the store key skey into out: the sealed length (plen +
 * SC_SEAL_OVERHEAD), or 0 when it cannot (then out holds nothing of use). */
size_t sc_seal_blob(int slot, sc_seal *s, const unsigned char *skey, size_t sklen,
                    const unsigned char *plain, size_t plen, unsigned char *out, size_t cap)
{
    sc_api *a;
    unsigned char key[SC_SEAL_KEY_MAX];
    const void *cipher;
    void *cctx;
    int len, n = 0, tail = 0, ok;
    if (s == NULL || plen < 1 || plen > (1 << 24) || sklen > 255 || cap < plen + SC_SEAL_OVERHEAD)
        return 0;
    if (!sc_seal_supported(slot)) {
        sc_seal_count(s, SC_SEAL_ERRORS);
        return 0;
    }
    a = &sc_apis[slot];
    len = sc_seal_key_copy(s, 0, key);
    if (len == 0)
        return 0; /* retired */
    cipher = sc_seal_cipher(slot, len);
    cctx = cipher != NULL ? a->EVP_CIPHER_CTX_new() : NULL;
    out[0] = SC_SEAL_VERSION;
    memcpy(out + 1, s->keys[0].id, SC_SEAL_KEY_ID_LEN);
    ok = cctx != NULL && sc_seal_nonce(a, out + SC_SEAL_NONCE_AT) &&
         a->EVP_EncryptInit_ex(cctx, cipher, NULL, key, out + SC_SEAL_NONCE_AT) == 1 &&
         a->EVP_EncryptUpdate(cctx, NULL, &n, out, 1 + SC_SEAL_KEY_ID_LEN) == 1 &&
         (sklen == 0 || a->EVP_EncryptUpdate(cctx, NULL, &n, skey, (int)sklen) == 1) &&
         a->EVP_EncryptUpdate(cctx, out + SC_SEAL_HEADER_SIZE, &n, plain, (int)plen) == 1 &&
         (size_t)n == plen &&
         a->EVP_EncryptFinal_ex(cctx, out + SC_SEAL_HEADER_SIZE + n, &tail) == 1 && tail == 0 &&
         a->EVP_CIPHER_CTX_ctrl(cctx, SC_SEAL_CTRL_GET_TAG, SC_SEAL_TAG_LEN,
                                out + SC_SEAL_HEADER_SIZE + plen) == 1;
    explicit_bzero(key, sizeof(key));
    if (cctx != NULL)
        a->EVP_CIPHER_CTX_free(cctx); /* (which zeroes its key schedule) */
    sc_seal_count(s, ok ? SC_SEAL_SEALED : SC_SEAL_ERRORS);
    return ok ? plen + SC_SEAL_OVERHEAD : 0;
}

/* One try with key i: 1 when sealed opens into out (clen bytes), else 0 (out zeroed). */
static int sc_seal_try(sc_api *a, sc_seal *s, int i, const void **cipher_of, int slot,
                       const unsigned char *skey, size_t sklen, const unsigned char *sealed,
                       size_t clen, unsigned char *out)
{
    unsigned char key[SC_SEAL_KEY_MAX], tag[SC_SEAL_TAG_LEN];
    const void *cipher;
    void *cctx;
    int len, n = 0, tail = 0, ok;
    len = sc_seal_key_copy(s, i, key);
    if (len == 0)
        return 0;
    cipher = sc_seal_cipher(slot, len);
    *cipher_of = cipher;
    cctx = cipher != NULL ? a->EVP_CIPHER_CTX_new() : NULL;
    memcpy(tag, sealed + SC_SEAL_HEADER_SIZE + clen, SC_SEAL_TAG_LEN);
    ok = cctx != NULL &&
         a->EVP_DecryptInit_ex(cctx, cipher, NULL, key, sealed + SC_SEAL_NONCE_AT) == 1 &&
         a->EVP_DecryptUpdate(cctx, NULL, &n, sealed, 1 + SC_SEAL_KEY_ID_LEN) == 1 &&
         (sklen == 0 || a->EVP_DecryptUpdate(cctx, NULL, &n, skey, (int)sklen) == 1) &&
         a->EVP_DecryptUpdate(cctx, out, &n, sealed + SC_SEAL_HEADER_SIZE, (int)clen) == 1 &&
         (size_t)n == clen &&
         a->EVP_CIPHER_CTX_ctrl(cctx, SC_SEAL_CTRL_SET_TAG, SC_SEAL_TAG_LEN, tag) == 1 &&
         a->EVP_DecryptFinal_ex(cctx, out + n, &tail) > 0 && tail == 0;
    explicit_bzero(key, sizeof(key));
    if (cctx != NULL)
        a->EVP_CIPHER_CTX_free(cctx);
    if (!ok)
        explicit_bzero(out, clen); /* unauthenticated bytes are never used */
    return ok;
}

/* Opens a value sealed for the store key skey into out: the envelope's length (slen -
 * SC_SEAL_OVERHEAD), or 0 when it is not a value one of the ring's keys sealed for that
 * store key (another format, an unknown or retired key, tampered, truncated, extended,
 * stored under another key) or cannot be opened here. Reads nothing outside
 * sealed[0 .. slen); writes only out[0 .. slen - SC_SEAL_OVERHEAD). */
size_t sc_seal_open(int slot, sc_seal *s, const unsigned char *skey, size_t sklen,
                    const unsigned char *sealed, size_t slen, unsigned char *out, size_t cap)
{
    sc_api *a;
    const void *cipher = NULL;
    size_t clen;
    int i;
    if (s == NULL || sklen > 255)
        return 0;
    if (slen <= SC_SEAL_OVERHEAD || slen > (1 << 24) || sealed[0] != SC_SEAL_VERSION ||
        cap < slen - SC_SEAL_OVERHEAD) {
        sc_seal_count(s, SC_SEAL_REFUSED);
        return 0;
    }
    if (!sc_seal_supported(slot)) {
        sc_seal_count(s, SC_SEAL_ERRORS);
        return 0;
    }
    a = &sc_apis[slot];
    clen = slen - SC_SEAL_OVERHEAD;
    for (i = 0; i < s->count; i++) {
        if (memcmp(s->keys[i].id, sealed + 1, SC_SEAL_KEY_ID_LEN) != 0)
            continue;
        if (sc_seal_try(a, s, i, &cipher, slot, skey, sklen, sealed, clen, out)) {
            sc_seal_count(s, SC_SEAL_OPENED);
            return clen;
        }
        if (cipher == NULL && !__atomic_load_n(&s->retired, __ATOMIC_ACQUIRE)) {
            sc_seal_count(s, SC_SEAL_ERRORS);
            return 0;
        }
    }
    sc_seal_count(s, SC_SEAL_REFUSED);
    return 0;
}
