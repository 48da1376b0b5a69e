"""Just enough of a linked libssl to run real handshakes without a Python TLS stack.

Used by ``sesscache.testing`` so the test suite can exercise the callbacks, reference
counts and serialization on an OpenSSL that neither pyOpenSSL nor the stdlib runs on
(the 1.1.1 row of the version matrix). These functions are called directly, so they are
compiled into a module of their own, ``sesscache._sesscache_testing_cffi``, which links
libssl (the system's, or ``OPENSSL_DIR``'s with an rpath). It is built only on request
(``SESSCACHE_BUILD_TESTING=1``: the Makefile and the matrix set it) and never goes into
the wheel, whose core module links no OpenSSL. The core reaches that libssl the way it
reaches the stdlib's: through the dynamic linker, from this module's own lookup scope.
"""

INCLUDES = ""

TYPES = """
typedef ... SSL_METHOD;
typedef ... BIO;
typedef ... BIO_METHOD;
static const int SSL_ERROR_NONE;
static const int SSL_ERROR_WANT_READ;
static const int SSL_ERROR_WANT_WRITE;
static const int SSL_ERROR_ZERO_RETURN;
static const int SSL_ERROR_SSL;
static const int SSL_ERROR_SYSCALL;
static const int SSL_VERIFY_NONE;
static const int SSL_VERIFY_PEER;
static const int SSL_FILETYPE_PEM;
static const int SSL_CTRL_SET_TLSEXT_HOSTNAME;
static const int SSL_SENT_SHUTDOWN;
static const int SSL_RECEIVED_SHUTDOWN;
"""

FUNCTIONS = """
const SSL_METHOD *TLS_server_method(void);
const SSL_METHOD *TLS_client_method(void);
SSL_CTX *SSL_CTX_new(const SSL_METHOD *);
void SSL_CTX_free(SSL_CTX *);
int SSL_CTX_use_certificate_chain_file(SSL_CTX *, const char *);
int SSL_CTX_use_PrivateKey_file(SSL_CTX *, const char *, int);
int SSL_CTX_load_verify_locations(SSL_CTX *, const char *, const char *);
void SSL_CTX_set_verify(SSL_CTX *, int, void *);
uint64_t SSL_CTX_set_options(SSL_CTX *, uint64_t);

SSL *SSL_new(SSL_CTX *);
void SSL_free(SSL *);
void SSL_set_bio(SSL *, BIO *, BIO *);
void SSL_set_connect_state(SSL *);
void SSL_set_accept_state(SSL *);
int SSL_do_handshake(SSL *);
int SSL_get_error(const SSL *, int);
int SSL_read(SSL *, void *, int);
int SSL_write(SSL *, const void *, int);
int SSL_shutdown(SSL *);
void SSL_set_shutdown(SSL *, int);
int SSL_set_session(SSL *, SSL_SESSION *);
SSL_SESSION *SSL_get1_session(SSL *);
long SSL_ctrl(SSL *, int, long, void *);
SSL_CTX *SSL_set_SSL_CTX(SSL *, SSL_CTX *);
const char *SSL_get_version(const SSL *);
unsigned long ERR_get_error(void);
unsigned long ERR_peek_error(void);
unsigned long ERR_peek_last_error(void);
void ERR_clear_error(void);
void ERR_error_string_n(unsigned long, char *, size_t);

BIO *BIO_new(const BIO_METHOD *);
const BIO_METHOD *BIO_s_mem(void);
int BIO_read(BIO *, void *, int);
int BIO_write(BIO *, const void *, int);
size_t BIO_ctrl_pending(BIO *);
"""

CUSTOMIZATIONS = ""
