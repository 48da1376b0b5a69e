/* ClientHello bytes, read without OpenSSL.
 *
 * sc_hello_scan_feed: a ClientHello scan for sesscache.aio's per-connection hot path. It
 * makes the same decisions as sesscache.clienthello's Python reader (incomplete / never a
 * ClientHello / complete, on the same bytes, with the same limits: 64 KiB hello, 128 KiB
 * of records, 2^14-byte records) and keeps only what the prefetch needs: the legacy
 * session id, the SNI host name, whether TLS 1.3 is offered, and the first two distinct
 * lookup keys of ClientHello.lookup_keys(). It keeps no error text: when it says
 * "invalid", the Python parser reads the same bytes to say why (the tests hold the two to
 * agreement on every input they generate). Linear like the Python reader: the walk over
 * whole records is resumed where the previous call left it (the state lives in the
 * caller's sc_hello_scan), and a hello spread over several records is copied together
 * once, when complete.
 *
 * sc_server_name_of_extension, sc_psk_identity_of_extension: the two extensions the
 * callbacks read from the ClientHello OpenSSL is processing (SSL_client_hello_get0_ext).
 *
 * Self-contained (C library only): fuzz/ compiles this file on its own. */
#include <stdlib.h>
#include <string.h>

#include "shared_types.h"

#define SC_HELLO_COMPLETE 1
#define SC_HELLO_MORE     0
#define SC_HELLO_INVALID  (-1)
#define SC_HELLO_NOMEM    (-2)

#define SC_CH_MAX_HELLO  ((size_t)65536)
#define SC_CH_MAX_WIRE   (2 * SC_CH_MAX_HELLO)
#define SC_CH_MAX_RECORD ((size_t)16384)

/* The first 1-3 bytes of a record header that can start a handshake record. */
static int sc_ch_prefix_ok(const unsigned char *h, size_t n)
{
    if (n >= 1 && h[0] != 22)
        return 0;
    if (n >= 2 && h[1] != 3)
        return 0;
    return 1;
}

/* A cursor over the handshake body: every read is checked against an end. */
typedef struct {
    const unsigned char *p;
    size_t pos;
} sc_ch_cur;

static int sc_ch_need(const sc_ch_cur *c, size_t count, size_t end)
{
    return c->pos <= end && end - c->pos >= count;
}

static int sc_ch_u16(sc_ch_cur *c, size_t end, size_t *out)
{
    if (!sc_ch_need(c, 2, end))
        return 0;
    *out = ((size_t)c->p[c->pos] << 8) | c->p[c->pos + 1];
    c->pos += 2;
    return 1;
}

/* Length prefix of 1 or 2 bytes in [lo, hi], the vector within end: its start and stop. */
static int sc_ch_vec(sc_ch_cur *c, int size, size_t end, size_t lo, size_t hi, size_t *start,
                     size_t *stop)
{
    size_t len;
    if (size == 1) {
        if (!sc_ch_need(c, 1, end))
            return 0;
        len = c->p[c->pos++];
    } else if (!sc_ch_u16(c, end, &len)) {
        return 0;
    }
    if (len < lo || len > hi || !sc_ch_need(c, len, end))
        return 0;
    *start = c->pos;
    c->pos += len;
    *stop = c->pos;
    return 1;
}

static void sc_ch_add_key(sc_hello_scan *st, const unsigned char *key, size_t len)
{
    int i;
    if (len < 1 || len > 32 || st->nkeys >= 2)
        return;
    for (i = 0; i < st->nkeys; i++)
        if ((size_t)st->key_lens[i] == len && memcmp(st->keys[i], key, len) == 0)
            return;
    memcpy(st->keys[st->nkeys], key, len);
    st->key_lens[st->nkeys++] = (int)len;
}

/* The body checks of clienthello._parse_body, in the same order of containers. */
static int sc_ch_body(sc_hello_scan *st, const unsigned char *p, size_t end)
{
    sc_ch_cur c = {p, 0};
    size_t version, s, e, xs, xe, ext_end, type;
    size_t psk_ids = 0, psk_start = 0, psk_stop = 0;
    int psk_seen = 0, i;
    unsigned char seen[8192];

    if (!sc_ch_u16(&c, end, &version) || (version >> 8) != 3)
        return 0;
    if (!sc_ch_need(&c, 32, end))
        return 0;
    c.pos += 32;
    if (!sc_ch_vec(&c, 1, end, 0, 32, &s, &e))
        return 0;
    st->sid_len = (int)(e - s);
    memcpy(st->sid, p + s, e - s);
    if (!sc_ch_vec(&c, 2, end, 2, 0xFFFE, &s, &e) || (e - s) % 2)
        return 0;
    if (!sc_ch_vec(&c, 1, end, 1, 0xFF, &s, &e))
        return 0;
    if (c.pos < end) {
        if (!sc_ch_vec(&c, 2, end, 0, 0xFFFF, &s, &ext_end) || ext_end != end)
            return 0;
        c.pos = s;
        memset(seen, 0, sizeof(seen));
        while (c.pos < ext_end) {
            if (!sc_ch_u16(&c, ext_end, &type))
                return 0;
            if (seen[type >> 3] & (1u << (type & 7)))
                return 0; /* an extension twice */
            seen[type >> 3] |= (unsigned char)(1u << (type & 7));
            if (!sc_ch_vec(&c, 2, ext_end, 0, 0xFFFF, &xs, &xe))
                return 0;
            if (psk_seen)
                return 0; /* pre_shared_key is not the last extension */
            c.pos = xs;
            if (type == 0) { /* server_name */
                size_t le, ns, ne, name_type;
                int host = 0;
                if (!sc_ch_vec(&c, 2, xe, 1, 0xFFFF, &s, &le) || le != xe)
                    return 0;
                c.pos = s;
                while (c.pos < le) {
                    if (!sc_ch_need(&c, 1, le))
                        return 0;
                    name_type = p[c.pos++];
                    if (!sc_ch_vec(&c, 2, le, 1, 0xFFFF, &ns, &ne))
                        return 0;
                    if (name_type != 0)
                        continue;
                    if (host || ne - ns > 255)
                        return 0;
                    for (i = 0; (size_t)i < ne - ns; i++)
                        if (p[ns + i] < 0x21 || p[ns + i] >= 0x7F)
                            return 0;
                    memcpy(st->sni, p + ns, ne - ns);
                    st->sni_len = (int)(ne - ns);
                    host = 1;
                }
                if (!host)
                    return 0;
            } else if (type == 43) { /* supported_versions */
                if (!sc_ch_vec(&c, 1, xe, 2, 254, &s, &e) || e != xe || (e - s) % 2)
                    return 0;
                for (; s < e; s += 2)
                    if (p[s] == 0x03 && p[s + 1] == 0x04)
                        st->offers_tls13 = 1;
            } else if (type == 41) { /* pre_shared_key */
                size_t ie, be, binders = 0;
                psk_seen = 1;
                if (!sc_ch_vec(&c, 2, xe, 7, 0xFFFF, &s, &ie))
                    return 0;
                c.pos = psk_start = s;
                psk_stop = ie;
                while (c.pos < ie) {
                    if (!sc_ch_vec(&c, 2, ie, 1, 0xFFFF, &s, &e) || !sc_ch_need(&c, 4, ie))
                        return 0;
                    c.pos += 4;
                    psk_ids++;
                }
                if (!sc_ch_vec(&c, 2, xe, 33, 0xFFFF, &s, &be))
                    return 0;
                c.pos = s;
                while (c.pos < be) {
                    if (!sc_ch_vec(&c, 1, be, 32, 255, &s, &e))
                        return 0;
                    binders++;
                }
                if (be != xe || binders != psk_ids)
                    return 0;
            } else if (type == 42) { /* early_data: empty in a ClientHello */
                if (xe != xs)
                    return 0;
            } else if (type == 16) { /* ALPN */
                size_t le;
                if (!sc_ch_vec(&c, 2, xe, 2, 0xFFFF, &s, &le) || le != xe)
                    return 0;
                c.pos = s;
                while (c.pos < le)
                    if (!sc_ch_vec(&c, 1, le, 1, 0xFF, &s, &e))
                        return 0;
            }
            c.pos = xe;
        }
    }

    /* ClientHello.lookup_keys(), first two distinct. */
    if (!st->offers_tls13) {
        sc_ch_add_key(st, st->sid, (size_t)st->sid_len);
    } else if (psk_ids) {
        /* The identities again, now that the whole hello is known to be valid. */
        for (s = psk_start; s < psk_stop && st->nkeys < 2; s = e + 4) {
            e = s + 2 + (((size_t)p[s] << 8) | p[s + 1]);
            sc_ch_add_key(st, p + s + 2, e - s - 2);
        }
    } else {
        sc_ch_add_key(st, st->sid, (size_t)st->sid_len);
    }
    return 1;
}

int sc_hello_scan_feed(sc_hello_scan *st, const char *data, size_t n)
{
    const unsigned char *b = (const unsigned char *)data;
    size_t pos = st->pos, got = st->got, total = st->total, records = st->records;
    unsigned char hdr[4];
    int hdrlen = st->hdrlen;
    const unsigned char *msg;
    unsigned char *joined = NULL;
    int ok;

    if (n < pos)
        return SC_HELLO_INVALID; /* the caller's buffer shrank: not the bytes walked */
    memcpy(hdr, st->hdr, 4);
    while (hdrlen < 4 || got < total) {
        size_t have = n - pos, rlen, end, body, avail;
        if (have < 5) {
            if (!sc_ch_prefix_ok(b + pos, have < 3 ? have : 3))
                return SC_HELLO_INVALID;
            st->needed = 5 - have + (hdrlen == 4 ? total - got : (size_t)(4 - hdrlen));
            return SC_HELLO_MORE;
        }
        if (!sc_ch_prefix_ok(b + pos, 3))
            return SC_HELLO_INVALID;
        rlen = ((size_t)b[pos + 3] << 8) | b[pos + 4];
        if (rlen == 0 || rlen > SC_CH_MAX_RECORD)
            return SC_HELLO_INVALID;
        end = pos + 5 + rlen;
        if (end > SC_CH_MAX_WIRE)
            return SC_HELLO_INVALID;
        body = pos + 5;
        avail = n - body < rlen ? n - body : rlen;
        if (hdrlen < 4) {
            size_t take = (size_t)(4 - hdrlen);
            if (take > avail)
                take = avail;
            memcpy(hdr + hdrlen, b + body, take);
            hdrlen += (int)take;
            if (hdrlen && hdr[0] != 1)
                return SC_HELLO_INVALID;
            if (hdrlen == 4) {
                total = 4 + (((size_t)hdr[1] << 16) | ((size_t)hdr[2] << 8) | hdr[3]);
                if (total > SC_CH_MAX_HELLO)
                    return SC_HELLO_INVALID;
            }
        }
        if (hdrlen == 4 && got + rlen > total)
            return SC_HELLO_INVALID; /* bytes after the hello in its last record */
        if (avail < rlen) {
            size_t known = hdrlen == 4 ? total : 4;
            st->needed = rlen - avail;
            if (known > got + rlen)
                st->needed += 5 + (known - got - rlen);
            return SC_HELLO_MORE;
        }
        got += rlen;
        pos = end;
        records++;
        st->pos = pos;
        st->got = got;
        st->total = total;
        st->records = records;
        memcpy(st->hdr, hdr, 4);
        st->hdrlen = hdrlen;
    }

    if (records == 1) {
        msg = b + 5;
    } else {
        size_t at = 0, off = 0;
        joined = malloc(total);
        if (joined == NULL)
            return SC_HELLO_NOMEM;
        while (off < pos) {
            size_t rlen = ((size_t)b[off + 3] << 8) | b[off + 4];
            memcpy(joined + at, b + off + 5, rlen);
            at += rlen;
            off += 5 + rlen;
        }
        msg = joined;
    }
    st->offers_tls13 = 0;
    st->sid_len = 0;
    st->sni_len = -1;
    st->nkeys = 0;
    ok = sc_ch_body(st, msg + 4, total - 4);
    free(joined);
    st->needed = 0;
    st->consumed = pos;
    return ok ? SC_HELLO_COMPLETE : SC_HELLO_INVALID;
}

/* The SNI host name in a server_name extension's bytes, copied into out (NUL-ended).
 * Returns the name's length, 0 when the list holds no host name, and -2 for a name that
 * cannot be a host name (empty, malformed, longer than outlen - 1): a cache must refuse
 * to resume for those, since it cannot compare them. */
static int sc_server_name_of_extension(const unsigned char *ext, size_t extlen, char *out,
                                       int outlen)
{
    size_t listlen, namelen;
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

/* The first identity of a pre_shared_key extension's bytes when it has the length of a
 * session id (a stateful TLS 1.3 ticket): copied into id (32 bytes), returns 32; else 0. */
static int sc_psk_identity_of_extension(const unsigned char *ext, size_t extlen, unsigned char *id)
{
    size_t listlen, len;
    if (extlen < 4)
        return 0;
    listlen = ((size_t)ext[0] << 8) | ext[1];
    len = ((size_t)ext[2] << 8) | ext[3];
    if (listlen + 2 <= extlen && len + 2 <= listlen && len == 32) {
        memcpy(id, ext + 4, 32);
        return 32;
    }
    return 0;
}
