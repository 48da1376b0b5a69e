/* Client side: offer a stored session to every connection of a stdlib client context.
 *
 * libssl gives a client no "about to write the ClientHello" callback, but the info
 * callback fires with SSL_CB_HANDSHAKE_START from the handshake state machine before the
 * first flight is built (statem.c: state_machine() calls it, then tls_setup_handshake,
 * and only then does the write machine reach tls_construct_client_hello, which reads
 * s->session). SSL_set_session is legal there in OpenSSL 1.1.1 to 4.0: the connection
 * has no session yet, the method is the context's, and the ClientHello then carries the
 * session's id (TLS 1.2), its ticket (TLS 1.2 ticket extension) or its PSK (TLS 1.3).
 *
 * The info callback takes no user argument and each context has one slot, so each copy
 * of libssl (slot) gets its own permanent trampoline, as slots.c's session trampolines.
 * A context whose info callback is somebody else's is refused (sc_client_install
 * returns 2): chaining would need the other callback's lifetime, which we cannot know.
 *
 * Only client connections with no session yet ask Python: a session given by the
 * application (wrap_socket(session=...)) or a renegotiation keeps its own. */
#include <netinet/in.h>
#include <sys/socket.h>

#include "sesscache.h"

static void sc_py_client_offer(int, SSL_CTX *, SSL *);

static void sc_client_info(int slot, const SSL *ssl, int where)
{
    sc_api *a = &sc_apis[slot];
    if (!(where & SSL_CB_HANDSHAKE_START) || !sc_python_alive)
        return;
    if (a->SSL_is_server(ssl) || a->SSL_get_session(ssl) != NULL)
        return;
    sc_err_mark(a);
    sc_py_client_offer(slot, a->SSL_get_SSL_CTX(ssl), (SSL *)ssl);
    sc_err_pop(a);
}

#define SC_INFO_TRAMPOLINE(n)                                    \
    static void sc_info_cb_##n(const SSL *s, int where, int ret) \
    {                                                            \
        (void)ret;                                               \
        sc_client_info(n, s, where);                             \
    }

SC_INFO_TRAMPOLINE(0)
SC_INFO_TRAMPOLINE(1)
SC_INFO_TRAMPOLINE(2)
SC_INFO_TRAMPOLINE(3)
SC_INFO_TRAMPOLINE(4)
SC_INFO_TRAMPOLINE(5)
SC_INFO_TRAMPOLINE(6)
SC_INFO_TRAMPOLINE(7)

static const sc_info_cb_t sc_info_cbs[SC_MAX_INSTANCES] = {sc_info_cb_0, sc_info_cb_1, sc_info_cb_2,
                                                           sc_info_cb_3, sc_info_cb_4, sc_info_cb_5,
                                                           sc_info_cb_6, sc_info_cb_7};
#if SC_MAX_INSTANCES != 8
#error "one SC_INFO_TRAMPOLINE line per slot"
#endif

/* Install (on = 1) or clear (on = 0) the offering info callback. Returns 1 when done, 2
 * when the context's info callback belongs to somebody else (nothing changed), 0 when
 * this copy lacks the functions, -1 on a bad slot. */
int sc_client_install(int slot, SSL_CTX *ctx, int on)
{
    sc_api *a;
    sc_info_cb_t current;
    if (!sc_slot_ok(slot) || !sc_ready[slot])
        return -1;
    a = &sc_apis[slot];
    if (a->SSL_CTX_set_info_callback == NULL || a->SSL_CTX_get_info_callback == NULL ||
        a->SSL_set_session == NULL)
        return 0;
    current = a->SSL_CTX_get_info_callback(ctx);
    if (current != NULL && current != sc_info_cbs[slot])
        return 2;
    a->SSL_CTX_set_info_callback(ctx, on ? sc_info_cbs[slot] : NULL);
    return 1;
}

/* Whether ctx's info callback is ours (1), none (0) or somebody else's (2). */
int sc_client_installed(int slot, SSL_CTX *ctx)
{
    sc_info_cb_t current;
    if (!sc_slot_ok(slot) || !sc_ready[slot] || sc_apis[slot].SSL_CTX_get_info_callback == NULL)
        return 0;
    current = sc_apis[slot].SSL_CTX_get_info_callback(ctx);
    return current == NULL ? 0 : (current == sc_info_cbs[slot] ? 1 : 2);
}

/* The TCP port of the connection's peer, or -1 when it has no socket (memory BIOs, as
 * asyncio's SSL transport uses) or the socket is not an IP one. */
int sc_client_peer_port(int slot, SSL *ssl)
{
    struct sockaddr_storage peer;
    socklen_t len = sizeof(peer);
    int fd;
    if (!sc_slot_ok(slot) || !sc_ready[slot] || sc_apis[slot].SSL_get_fd == NULL)
        return -1;
    fd = sc_apis[slot].SSL_get_fd(ssl);
    if (fd < 0 || getpeername(fd, (struct sockaddr *)&peer, &len) != 0)
        return -1;
    if (peer.ss_family == AF_INET)
        return ntohs(((struct sockaddr_in *)&peer)->sin_port);
    if (peer.ss_family == AF_INET6)
        return ntohs(((struct sockaddr_in6 *)&peer)->sin6_port);
    return -1;
}

/* Offer the session in der (from a store: any bytes) to ssl. Returns the session's
 * protocol version (0x0303, 0x0304, ...) when offered, 0 when the bytes are no session of
 * this copy or libssl refused it. */
int sc_client_offer(int slot, SSL *ssl, const unsigned char *der, long len)
{
    sc_api *a;
    SSL_SESSION *sess;
    int version = 0;
    if (!sc_slot_ok(slot) || !sc_ready[slot] || sc_apis[slot].SSL_set_session == NULL)
        return 0;
    a = &sc_apis[slot];
    sc_err_mark(a);
    sess = sc_session_from_der(slot, der, len);
    if (sess != NULL) {
        if (a->SSL_SESSION_is_resumable(sess) && a->SSL_set_session(ssl, sess) == 1)
            version = a->SSL_SESSION_get_protocol_version(sess);
        a->SSL_SESSION_free(sess); /* SSL_set_session took its own reference */
    }
    sc_err_pop(a);
    return version;
}

/* Take back an offer made in this callback (another process took the TLS 1.3 ticket
 * first): the connection then builds a ClientHello with no session, as if none was
 * stored. Legal where sc_client_offer was. */
int sc_client_unoffer(int slot, SSL *ssl)
{
    if (!sc_slot_ok(slot) || !sc_ready[slot] || sc_apis[slot].SSL_set_session == NULL)
        return 0;
    return sc_apis[slot].SSL_set_session(ssl, NULL);
}

/* Offer a copy of a session this process holds parsed (ClientSessionCache's memory):
 * returns its protocol version when offered, 0 otherwise. A copy because the connection
 * that takes a session marks it not resumable when it is freed without a close_notify
 * (ssl_clear_bad_session), as most HTTP clients close; SSL_SESSION_dup shares the peer
 * certificate instead of decoding it again as d2i_SSL_SESSION would (CPython copies a
 * session it is given for the same reason). */
int sc_client_offer_copy(int slot, SSL *ssl, SSL_SESSION *held)
{
    sc_api *a;
    SSL_SESSION *copy;
    int version = 0;
    if (!sc_slot_ok(slot) || !sc_ready[slot] || sc_apis[slot].SSL_set_session == NULL ||
        sc_apis[slot].SSL_SESSION_dup == NULL)
        return 0;
    a = &sc_apis[slot];
    if (!a->SSL_SESSION_is_resumable(held))
        return 0;
    sc_err_mark(a);
    copy = a->SSL_SESSION_dup(held);
    if (copy != NULL) {
        if (a->SSL_set_session(ssl, copy) == 1)
            version = a->SSL_SESSION_get_protocol_version(copy);
        a->SSL_SESSION_free(copy);
    }
    sc_err_pop(a);
    return version;
}
