/* Session ids that say when they were issued, so another server can wait for their write.
 *
 * A fleet shares sessions through a network store, and the write of a new session goes
 * behind the handshake (ResilientStore): the client already holds its session id (TLS
 * 1.2) or ticket (TLS 1.3, which with OP_NO_TICKET is the session id) while the write is
 * still on its way. A client that reconnects at once to another server offers an id that
 * server cannot find yet. Without more, that is a full handshake (measured: 0-2 % resumed
 * with a store 20 ms away). With the issue time in the id, the other server tells "not
 * written yet" (issued a few milliseconds ago) from "gone" (issued long ago, or not by
 * sesscache) and waits for the write only in the first case (ResilientStore.new_session_wait).
 *
 * OpenSSL lets a server choose its session ids (SSL_CTX_set_generate_session_id, called
 * for TLS 1.2 session ids and for TLS 1.3 tickets alike, before the new session callback).
 * The layout of the 32 bytes::
 *
 *     24 random bytes (getrandom) | "sc" | issue time: 48-bit ms since the epoch, big-endian
 *
 * 192 random bits keep ids unguessable (OpenSSL's own are 256); the time is visible to
 * whoever sees the id (a TLS 1.2 session id travels in the clear, as the handshake's own
 * timestamps used to), which tells no more than that a session was made then. A forged
 * stamp makes a server wait at most new_session_wait once per handshake, for as many
 * handshakes at a time as max_waiting allows. */
#include "sesscache.h"

/* --- session ids with their issue time ------------------------------------------- */

#define SC_STAMP_RANDOM_BYTES 24

/* No slot argument (OpenSSL passes none): it needs no libssl call, only the kernel's
 * random numbers and the clock, so one function serves every copy. */
static int sc_stamped_session_id(SSL *ssl, unsigned char *id, unsigned int *id_len)
{
    struct timespec now;
    uint64_t ms;
    size_t got = 0;
    int i;
    (void)ssl;
    if (*id_len < 32)
        return 0; /* never asked for less (SSL3_SSL_SESSION_ID_LENGTH is 32) */
    while (got < SC_STAMP_RANDOM_BYTES) {
        ssize_t n = getrandom(id + got, SC_STAMP_RANDOM_BYTES - got, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return 0; /* the handshake fails rather than issue a guessable id */
        }
        got += (size_t)n;
    }
    clock_gettime(CLOCK_REALTIME, &now);
    ms = (uint64_t)now.tv_sec * 1000u + (uint64_t)(now.tv_nsec / 1000000);
    id[24] = 's';
    id[25] = 'c';
    for (i = 0; i < 6; i++)
        id[26 + i] = (unsigned char)(ms >> (8 * (5 - i)));
    *id_len = 32;
    return 1;
}

/* Issue stamped ids on ctx (on = 1) or OpenSSL's own again (0; a callback set before
 * attach is not restored: OpenSSL has no getter). 1 when done, 0 when this copy of OpenSSL
 * has no SSL_CTX_set_generate_session_id or this kernel no getrandom. */
int sc_stamp_session_ids(int slot, SSL_CTX *ctx, int on)
{
    unsigned char probe;
    if (!sc_slot_ok(slot) || !sc_ready[slot] ||
        sc_apis[slot].SSL_CTX_set_generate_session_id == NULL)
        return 0;
    /* A kernel without getrandom, or a seccomp filter that forbids it, would fail every
     * handshake in the callback: then the ids stay OpenSSL's own (nothing waits for them). */
    if (on && getrandom(&probe, 1, GRND_NONBLOCK) < 0 && (errno == ENOSYS || errno == EPERM))
        return 0;
    return sc_apis[slot].SSL_CTX_set_generate_session_id(ctx, on ? sc_stamped_session_id : NULL) ==
           1;
}

int sc_stamped_session_id_for_test(unsigned char *id, unsigned int *id_len)
{
    return sc_stamped_session_id(NULL, id, id_len);
}
