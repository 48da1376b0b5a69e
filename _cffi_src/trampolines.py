"""Declarations of the session callbacks' C side: slot trampolines and ex_data hooks
(csrc/slots.c), per-context state and the TLS 1.3 lifetime cap (csrc/context_state.c),
session id contexts pinned or bound to the SNI name and certificate (csrc/sni_binding.c),
session I/O and the cache's new-session and offered-session checks (csrc/session_io.c).
The C itself, and why it is as it is, lives in those files.
"""
from . import c_source

INCLUDES = ""

TYPES = """
static const int SC_MAX_INSTANCES;

static const int SC_OFFER_OK;
static const int SC_OFFER_NOT_DER;
static const int SC_OFFER_OTHER_ID;
static const int SC_OFFER_OTHER_CONTEXT;
static const int SC_OFFER_UNREADABLE_NAME;
static const int SC_OFFER_OTHER_NAME;
static const int SC_OFFER_EXPIRED;

static const int SC_PIN_NONE;
static const int SC_PIN_CONTEXT;
static const int SC_PIN_BOUND;
"""

FUNCTIONS = """
extern "Python" int sc_py_new_session(int, SSL_CTX *, SSL *, SSL_SESSION *);
extern "Python" SSL_SESSION *sc_py_get_session(int, SSL_CTX *, SSL *, const unsigned char *, int);
extern "Python" void sc_py_remove_session(int, SSL_CTX *, SSL_SESSION *);
extern "Python" void sc_py_context_freed(int, SSL_CTX *);

sc_api *sc_api_slot(int);
int sc_register_ex_indices(int);
void sc_set_python_alive(int);
long sc_live_sessions(int);

int sc_install(int, SSL_CTX *, int, int, int);
int sc_hooks_of(int, SSL_CTX *, int *, int *, int *);
int sc_mark_context(int, SSL_CTX *, int);

int sc_session_der_len(int, SSL_SESSION *);
int sc_session_der(int, SSL_SESSION *, unsigned char *, int);
SSL_SESSION *sc_session_from_der(int, const unsigned char *, long);
long long sc_session_time(int, SSL_SESSION *);
int sc_session_set_time(int, SSL_SESSION *, long long);
int sc_requested_server_name(int, SSL *, char *, int);
int sc_certificate_der(int, SSL_CTX *, unsigned char *, int);
int sc_memory_readable(const void *, size_t);
long long sc_options_at(int, uintptr_t);
SSL_CTX *sc_recorded_session_ctx(int, SSL *);
long long sc_session_origin(int, SSL_SESSION *);
int sc_pin_session_id_context(int, SSL_CTX *, const unsigned char *, unsigned int);
int sc_bind_session_id_context(int, SSL_CTX *, const unsigned char *, unsigned int);
void sc_unbind_session_id_context(int, SSL_CTX *);
int sc_pin_of(int, SSL_CTX *);
int sc_cap_lifetime(int, SSL_CTX *, long);
int sc_describe_new(int, SSL *, SSL_SESSION *, SSL_CTX *, sc_new_facts *, unsigned char *, int);
SSL_SESSION *sc_parse_offered(int, SSL *, const unsigned char *, long, const unsigned char *, int,
                              const unsigned char *, unsigned int, const char *, int, long long,
                              long long, int *);
void sc_sha256(const unsigned char *, size_t, unsigned char *);
int sc_bound_session_id_context(const unsigned char *, unsigned int, const unsigned char *,
                                const char *, int, unsigned char *);

int sc_session_set_origin(int, SSL_SESSION *, long long);
void sc_flush_sessions(int, SSL_CTX *, long long);
"""

CUSTOMIZATIONS = c_source('slots.c', 'context_state.c', 'sni_binding.c', 'session_io.c')
