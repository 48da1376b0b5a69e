"""The libssl entry points sesscache calls, gathered in one function table per copy.

A process can hold several copies of libssl: the one the stdlib ``_ssl`` module links,
and the private copy a ``cryptography`` wheel links statically into its extension. A
pointer from one copy must only ever reach functions of the same copy, so every call
sesscache makes goes through ``sc_apis[slot]``, a table filled at run time for each copy
(by the dynamic linker, or from verified symbol addresses: see ``sesscache._binding.copies``).
The compiled module links no libssl at all: it only needs OpenSSL's headers for types
and constants, so one binary serves whatever copies a process holds.

``API`` is the single list of those functions and of which ones every copy must have.
``build_ffi.py`` turns it into the table's fields and into the compiled flags
``sc_api_required(i)``; Python reads both back from the compiled module, so a name and
its requirement are written once. Signatures are the OpenSSL 1.1.1 to 4.0
ABI on LP64 Linux: ``const`` qualifiers differ between versions but not the ABI, and
``long``/``time_t``/``uint64_t`` are all 64 bits there (checked at import time).
"""

# (return type, name, argument list, required). An optional function may be absent from
# an older copy (NULL in the table); the C code checks for NULL before calling it. A copy
# that lacks a required one is refused when its table is filled.
API = [
    ("void", "SSL_CTX_sess_set_new_cb", "SSL_CTX *, int (*)(SSL *, SSL_SESSION *)", True),
    ("void", "SSL_CTX_sess_set_remove_cb", "SSL_CTX *, void (*)(SSL_CTX *, SSL_SESSION *)", True),
    ("void", "SSL_CTX_sess_set_get_cb",
     "SSL_CTX *, SSL_SESSION *(*)(SSL *, const unsigned char *, int, int *)", True),
    ("sc_new_cb_t", "SSL_CTX_sess_get_new_cb", "SSL_CTX *", True),
    ("sc_remove_cb_t", "SSL_CTX_sess_get_remove_cb", "SSL_CTX *", True),
    ("sc_get_cb_t", "SSL_CTX_sess_get_get_cb", "SSL_CTX *", True),
    ("long", "SSL_CTX_ctrl", "SSL_CTX *, int, long, void *", True),
    ("uint64_t", "SSL_CTX_get_options", "const SSL_CTX *", True),
    ("int", "SSL_CTX_get_verify_mode", "const SSL_CTX *", True),
    ("long", "SSL_CTX_get_timeout", "const SSL_CTX *", True),
    ("long", "SSL_CTX_set_timeout", "SSL_CTX *, long", True),
    ("int", "SSL_CTX_set_session_ticket_cb",
     "SSL_CTX *, int (*)(SSL *, void *), void *, void *", False),
    ("void *", "SSL_CTX_get_ex_data", "const SSL_CTX *, int", True),
    ("int", "SSL_CTX_set_ex_data", "SSL_CTX *, int, void *", True),
    ("int", "SSL_CTX_remove_session", "SSL_CTX *, SSL_SESSION *", True),
    ("int", "SSL_CTX_add_session", "SSL_CTX *, SSL_SESSION *", True),
    ("int", "SSL_CTX_set_session_id_context", "SSL_CTX *, const unsigned char *, unsigned int", True),
    ("X509 *", "SSL_CTX_get0_certificate", "const SSL_CTX *", True),
    ("int", "i2d_X509", "const X509 *, unsigned char **", True),
    ("void", "SSL_CTX_flush_sessions", "SSL_CTX *, long", False),
    ("void", "SSL_CTX_flush_sessions_ex", "SSL_CTX *, int64_t", False),
    ("SSL_CTX *", "SSL_get_SSL_CTX", "const SSL *", True),
    ("void *", "SSL_get_ex_data", "const SSL *, int", True),
    ("int", "SSL_set_ex_data", "SSL *, int, void *", True),
    ("SSL_SESSION *", "SSL_get_session", "const SSL *", True),
    ("int", "SSL_session_reused", "const SSL *", True),
    ("int", "SSL_set_session_id_context", "SSL *, const unsigned char *, unsigned int", True),
    ("void", "SSL_CTX_set_client_hello_cb", "SSL_CTX *, int (*)(SSL *, int *, void *), void *", False),
    ("int", "SSL_CTX_set_num_tickets", "SSL_CTX *, size_t", False),
    ("int", "SSL_CTX_set_generate_session_id",
     "SSL_CTX *, int (*)(SSL *, unsigned char *, unsigned int *)", False),
    ("int", "SSL_is_server", "const SSL *", True),
    ("const char *", "SSL_get_servername", "const SSL *, const int", True),
    ("int", "SSL_client_hello_get0_ext", "SSL *, unsigned int, const unsigned char **, size_t *", False),
    ("size_t", "SSL_client_hello_get0_session_id", "SSL *, const unsigned char **", False),
    ("int", "CRYPTO_get_ex_new_index", "int, long, void *, void *, void *, void *", True),
    ("int", "CRYPTO_set_ex_data", "CRYPTO_EX_DATA *, int, void *", True),
    ("void *", "CRYPTO_get_ex_data", "const CRYPTO_EX_DATA *, int", True),
    ("int", "i2d_SSL_SESSION", "const SSL_SESSION *, unsigned char **", True),
    ("SSL_SESSION *", "d2i_SSL_SESSION", "SSL_SESSION **, const unsigned char **, long", True),
    ("void", "SSL_SESSION_free", "SSL_SESSION *", True),
    ("int", "SSL_SESSION_up_ref", "SSL_SESSION *", True),
    ("const unsigned char *", "SSL_SESSION_get_id", "const SSL_SESSION *, unsigned int *", True),
    ("const unsigned char *", "SSL_SESSION_get0_id_context", "const SSL_SESSION *, unsigned int *", True),
    ("const char *", "SSL_SESSION_get0_hostname", "const SSL_SESSION *", True),
    ("long", "SSL_SESSION_get_time", "const SSL_SESSION *", False),
    ("int64_t", "SSL_SESSION_get_time_ex", "const SSL_SESSION *", False),
    ("long", "SSL_SESSION_set_time", "SSL_SESSION *, long", False),
    ("int64_t", "SSL_SESSION_set_time_ex", "SSL_SESSION *, int64_t", False),
    ("long", "SSL_SESSION_get_timeout", "const SSL_SESSION *", True),
    ("long", "SSL_SESSION_set_timeout", "SSL_SESSION *, long", True),
    ("int", "SSL_SESSION_get_protocol_version", "const SSL_SESSION *", True),
    ("const SSL_CIPHER *", "SSL_SESSION_get0_cipher", "const SSL_SESSION *", True),
    ("const char *", "SSL_CIPHER_get_name", "const SSL_CIPHER *", True),
    ("int", "SSL_SESSION_is_resumable", "const SSL_SESSION *", True),
    ("uint32_t", "SSL_SESSION_get_max_early_data", "const SSL_SESSION *", True),
    ("void *", "SSL_SESSION_get_ex_data", "const SSL_SESSION *, int", True),
    ("int", "SSL_SESSION_set_ex_data", "SSL_SESSION *, int, void *", True),
    ("unsigned long", "OpenSSL_version_num", "void", True),
    ("const char *", "OpenSSL_version", "int", True),
    ("void", "ERR_clear_error", "void", True),
    # Callbacks leave the error queue as they found it (slots.c's sc_err_mark/sc_err_pop):
    # in every OpenSSL since 0.9.8, optional so a copy without them is not refused.
    ("int", "ERR_set_mark", "void", False),
    ("int", "ERR_pop_to_mark", "void", False),
    # Session-ticket keys (ticket_keys.py). EVP/HMAC contexts and ciphers are void * here:
    # the ABI is the same and the cdef needs no OpenSSL crypto types. The EVP callback and
    # EVP_MAC/EVP_CIPHER_fetch are 3.0+; HMAC_Init_ex (the 1.1.1 callback's) is deprecated.
    ("int", "SSL_version", "const SSL *", True),
    ("int", "SSL_is_init_finished", "const SSL *", False),
    ("long", "SSL_CTX_callback_ctrl", "SSL_CTX *, int, void (*)(void)", True),
    ("int", "SSL_CTX_set_tlsext_ticket_key_evp_cb",
     "SSL_CTX *, int (*)(SSL *, unsigned char *, unsigned char *, void *, void *, int)", False),
    ("int", "RAND_bytes", "unsigned char *, int", True),
    ("void *", "EVP_CIPHER_fetch", "void *, const char *, const char *", False),
    ("const void *", "EVP_aes_256_cbc", "void", False),
    ("int", "EVP_EncryptInit_ex", "void *, const void *, void *, const unsigned char *, const unsigned char *",
     True),
    ("int", "EVP_DecryptInit_ex", "void *, const void *, void *, const unsigned char *, const unsigned char *",
     True),
    ("int", "EVP_MAC_CTX_set_params", "void *, const void *", False),
    ("int", "HMAC_Init_ex", "void *, const void *, int, const void *, void *", False),
    ("const void *", "EVP_sha256", "void", False),
    # Sealing store values with AES-GCM (seal.c): contexts as void *, as above. The
    # ciphers are fetched once per copy and key size (3.0+) or are EVP_aes_*_gcm (1.1.1).
    ("void *", "EVP_CIPHER_CTX_new", "void", False),
    ("void", "EVP_CIPHER_CTX_free", "void *", False),
    ("int", "EVP_CIPHER_CTX_ctrl", "void *, int, int, void *", False),
    ("int", "EVP_EncryptUpdate", "void *, unsigned char *, int *, const unsigned char *, int", False),
    ("int", "EVP_EncryptFinal_ex", "void *, unsigned char *, int *", False),
    ("int", "EVP_DecryptUpdate", "void *, unsigned char *, int *, const unsigned char *, int", False),
    ("int", "EVP_DecryptFinal_ex", "void *, unsigned char *, int *", False),
    ("void", "EVP_CIPHER_free", "void *", False),
    ("const void *", "EVP_aes_128_gcm", "void", False),
    ("const void *", "EVP_aes_192_gcm", "void", False),
    ("const void *", "EVP_aes_256_gcm", "void", False),
    # SHA-256 for bound session id contexts and certificate fingerprints (sni_binding.c):
    # EVP_Digest with the SHA-256 object fetched once per copy (3.0+) or EVP_sha256 (1.1.1).
    ("int", "EVP_Digest", "const void *, size_t, unsigned char *, unsigned int *, const void *, void *", False),
    ("void *", "EVP_MD_fetch", "void *, const char *, const char *", False),
    ("void", "EVP_MD_free", "void *", False),
    # Client side (client_offer.c): offer a stored session at handshake start.
    ("void", "SSL_CTX_set_info_callback", "SSL_CTX *, void (*)(const SSL *, int, int)", False),
    ("sc_info_cb_t", "SSL_CTX_get_info_callback", "SSL_CTX *", False),
    ("int", "SSL_set_session", "SSL *, SSL_SESSION *", False),
    ("int", "SSL_get_fd", "const SSL *", False),
    ("SSL_SESSION *", "SSL_SESSION_dup", "const SSL_SESSION *", False),
]

INCLUDES = """
#include <stdint.h>
#include <time.h>
#include <openssl/opensslv.h>
#include <openssl/ssl.h>
#include <openssl/err.h>
#include <openssl/crypto.h>

#if OPENSSL_VERSION_NUMBER < 0x10101000L
#error "sesscache needs OpenSSL 1.1.1 or newer (TLS 1.3 and the session APIs it relies on)"
#endif

typedef int (*sc_new_cb_t)(SSL *, SSL_SESSION *);
typedef void (*sc_remove_cb_t)(SSL_CTX *, SSL_SESSION *);
typedef SSL_SESSION *(*sc_get_cb_t)(SSL *, const unsigned char *, int, int *);
typedef void (*sc_info_cb_t)(const SSL *, int, int);
"""

TYPES = """
typedef ... SSL_CTX;
typedef ... SSL;
typedef ... SSL_SESSION;
typedef ... SSL_CIPHER;
typedef ... CRYPTO_EX_DATA;
typedef ... X509;
typedef int (*sc_new_cb_t)(SSL *, SSL_SESSION *);
typedef void (*sc_remove_cb_t)(SSL_CTX *, SSL_SESSION *);
typedef SSL_SESSION *(*sc_get_cb_t)(SSL *, const unsigned char *, int, int *);
typedef void (*sc_info_cb_t)(const SSL *, int, int);

static const long OPENSSL_VERSION_NUMBER;
static const int SSL_CTRL_SET_SESS_CACHE_MODE;
static const int SSL_CTRL_GET_SESS_CACHE_MODE;
static const int SSL_CTRL_SESS_NUMBER;
static const int SSL_CTRL_SESS_HIT;
static const int SSL_CTRL_SESS_CB_HIT;
static const int SSL_CTRL_SESS_MISSES;
static const int SSL_CTRL_SESS_TIMEOUTS;
static const int SSL_CTRL_SESS_CACHE_FULL;
static const int SSL_CTRL_SET_SESS_CACHE_SIZE;
static const int SSL_CTRL_SET_MIN_PROTO_VERSION;
static const int SSL_CTRL_SET_MAX_PROTO_VERSION;
static const int SSL_SESS_CACHE_OFF;
static const int SSL_SESS_CACHE_CLIENT;
static const int SSL_SESS_CACHE_SERVER;
static const int SSL_SESS_CACHE_BOTH;
static const int SSL_SESS_CACHE_NO_AUTO_CLEAR;
static const int SSL_SESS_CACHE_NO_INTERNAL_LOOKUP;
static const int SSL_SESS_CACHE_NO_INTERNAL_STORE;
static const int SSL_SESS_CACHE_NO_INTERNAL;
static const int SSL_MAX_SSL_SESSION_ID_LENGTH;
static const int SSL_MAX_SID_CTX_LENGTH;
static const uint64_t SSL_OP_NO_TICKET;
static const uint64_t SSL_OP_NO_ANTI_REPLAY;
static const int TLS1_2_VERSION;
static const int TLS1_3_VERSION;
static const int OPENSSL_VERSION;
static const int TLSEXT_NAMETYPE_host_name;
"""

# sc_api_required(i): 1 when field i of sc_api is required, 0 when optional, -1 past the
# end; sc_api_first_missing(slot): the first required field left NULL in a slot, or -1.
# Both are generated by build_ffi.py from API's last column.
FUNCTIONS = """
int sc_api_required(int);
int sc_api_first_missing(int);
"""

CUSTOMIZATIONS = ""
