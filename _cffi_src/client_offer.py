"""Declarations of the client side's C (csrc/client_offer.c): the info-callback
trampolines that offer a stored session at handshake start, the peer port of a
connection, and the offer itself. The C, and why it is as it is, lives in that file.
"""
from . import c_source

INCLUDES = ""

TYPES = """
static const int SSL_CB_HANDSHAKE_START;
"""

FUNCTIONS = """
extern "Python" void sc_py_client_offer(int, SSL_CTX *, SSL *);

int sc_client_install(int, SSL_CTX *, int);
int sc_client_installed(int, SSL_CTX *);
int sc_client_peer_port(int, SSL *);
int sc_client_offer(int, SSL *, const unsigned char *, long);
int sc_client_unoffer(int, SSL *);
int sc_client_offer_copy(int, SSL *, SSL_SESSION *);
"""

CUSTOMIZATIONS = c_source('client_offer.c')
