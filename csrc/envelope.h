/* The one definition of what a session looks like in a store: its key and its envelope.
 *
 * cache.py (the Python path) and fast_path.c (the C path) both write and read it; Python
 * takes every number below from the compiled module (lib.SC_ENVELOPE_*, lib.SC_STORE_KEY_*)
 * and checks its struct against the offsets at import, so the two cannot drift apart.
 *
 * Key:      "sc1:" | len(sid_ctx) (1 byte) | sid_ctx (<= 32) | session id (<= 32)
 * Envelope: format (1 byte, SC_ENVELOPE_VERSION) | origin (8 bytes, big-endian, seconds
 *           since the epoch of the full handshake the session descends from) | certificate
 *           fingerprint (16 bytes: SHA-256 of the context's certificate DER, first 16) |
 *           name length (1 byte) | the SNI name (lowercase ASCII) | the session's DER.
 *
 * Self-contained (C library only), so the fuzz harness compiles it on its own. */
#ifndef SC_ENVELOPE_H
#define SC_ENVELOPE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* A format byte no sealed blob starts with (sealing's own format byte is 1). */
#define SC_ENVELOPE_VERSION     0xE1
#define SC_ENVELOPE_ORIGIN_AT   1
#define SC_ENVELOPE_CERT_AT     9
#define SC_ENVELOPE_CERT_LEN    16
#define SC_ENVELOPE_NAME_LEN_AT 25
#define SC_ENVELOPE_SIZE        26 /* the fixed part: >Bq16sB */
#define SC_ENVELOPE_NAME_MAX    255
/* What sealing and the envelope add to a DER at most. */
#define SC_ENVELOPE_OVERHEAD 512
/* How far in the future an origin may lie (the clocks of a fleet disagree a little). */
#define SC_CLOCK_SKEW 60

/* A sealed value (seal.c in C, sesscache/sealing.py in Python; written and read by both):
 * format (1 byte, SC_SEAL_VERSION) | key id (4 bytes: SHA-256 of a label and the key, first
 * 4) | nonce (12 random bytes) | AES-GCM ciphertext of the envelope above | tag (16 bytes).
 * The associated data is format | key id | the store key. */
#define SC_SEAL_VERSION     1
#define SC_SEAL_KEY_ID_LEN  4
#define SC_SEAL_NONCE_AT    5
#define SC_SEAL_NONCE_LEN   12
#define SC_SEAL_HEADER_SIZE 17 /* format, key id, nonce: the ciphertext starts here */
#define SC_SEAL_TAG_LEN     16
#define SC_SEAL_OVERHEAD    33 /* header and tag */

#define SC_STORE_KEY_PREFIX     "sc1:"
#define SC_STORE_KEY_PREFIX_LEN 4
#define SC_STORE_KEY_MAX        (SC_STORE_KEY_PREFIX_LEN + 1 + 32 + 32)

/* An envelope opened in place: pointers into the blob. */
typedef struct {
    long long origin;
    const unsigned char *cert_fp; /* SC_ENVELOPE_CERT_LEN bytes */
    const char *name;             /* NULL when the session was made without a name */
    int name_len;                 /* -1 without a name */
    const unsigned char *der;
    size_t der_len; /* > 0 */
} sc_envelope;

/* The store key of a session id under a session id context; returns its length.
 * key has room for SC_STORE_KEY_MAX bytes; sid_ctx_len and id_len are at most 32. */
static inline size_t sc_envelope_key(const unsigned char *sid_ctx, unsigned int sid_ctx_len,
                                     const unsigned char *id, unsigned int id_len,
                                     unsigned char *key)
{
    memcpy(key, SC_STORE_KEY_PREFIX, SC_STORE_KEY_PREFIX_LEN);
    key[SC_STORE_KEY_PREFIX_LEN] = (unsigned char)sid_ctx_len;
    memcpy(key + SC_STORE_KEY_PREFIX_LEN + 1, sid_ctx, sid_ctx_len);
    memcpy(key + SC_STORE_KEY_PREFIX_LEN + 1 + sid_ctx_len, id, id_len);
    return SC_STORE_KEY_PREFIX_LEN + 1 + (size_t)sid_ctx_len + id_len;
}

/* Writes the envelope's fixed part and the name at out (SC_ENVELOPE_SIZE + name_len
 * bytes; name_len <= SC_ENVELOPE_NAME_MAX); the DER goes right after. Returns the size. */
static inline size_t sc_envelope_put(unsigned char *out, long long origin,
                                     const unsigned char *cert_fp, const char *name,
                                     size_t name_len)
{
    int i;
    out[0] = SC_ENVELOPE_VERSION;
    for (i = 0; i < 8; i++)
        out[SC_ENVELOPE_ORIGIN_AT + i] =
            (unsigned char)((unsigned long long)origin >> (56 - 8 * i));
    memcpy(out + SC_ENVELOPE_CERT_AT, cert_fp, SC_ENVELOPE_CERT_LEN);
    out[SC_ENVELOPE_NAME_LEN_AT] = (unsigned char)name_len;
    if (name_len > 0)
        memcpy(out + SC_ENVELOPE_SIZE, name, name_len);
    return SC_ENVELOPE_SIZE + name_len;
}

/* Opens blob in place: 1 when it is an envelope of this format with a non-empty DER
 * (env filled), 0 when not (another format, a sealed blob, too short). Reads nothing
 * outside blob[0 .. len). */
static inline int sc_envelope_open(const unsigned char *blob, size_t len, sc_envelope *env)
{
    size_t start;
    unsigned long long origin = 0;
    int i;
    if (len <= SC_ENVELOPE_SIZE || blob[0] != SC_ENVELOPE_VERSION)
        return 0;
    start = SC_ENVELOPE_SIZE + (size_t)blob[SC_ENVELOPE_NAME_LEN_AT];
    if (len <= start)
        return 0;
    for (i = 0; i < 8; i++)
        origin = (origin << 8) | blob[SC_ENVELOPE_ORIGIN_AT + i];
    env->origin = (long long)origin;
    env->cert_fp = blob + SC_ENVELOPE_CERT_AT;
    env->name_len = blob[SC_ENVELOPE_NAME_LEN_AT] ? (int)blob[SC_ENVELOPE_NAME_LEN_AT] : -1;
    env->name = env->name_len > 0 ? (const char *)blob + SC_ENVELOPE_SIZE : NULL;
    env->der = blob + start;
    env->der_len = len - start;
    return 1;
}

#endif
