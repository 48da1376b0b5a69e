"""The store key and envelope format (csrc/envelope.h, their one definition).

``cache.py`` builds and opens the Python path's keys and envelopes from these numbers,
and ``fast_path.c`` the C path's from the header itself, so the two cannot disagree.
"""

INCLUDES = ""

TYPES = """
static const int SC_ENVELOPE_VERSION;
static const int SC_ENVELOPE_ORIGIN_AT;
static const int SC_ENVELOPE_CERT_AT;
static const int SC_ENVELOPE_CERT_LEN;
static const int SC_ENVELOPE_NAME_LEN_AT;
static const int SC_ENVELOPE_SIZE;
static const int SC_ENVELOPE_NAME_MAX;
static const int SC_ENVELOPE_OVERHEAD;
static const int SC_CLOCK_SKEW;
static char *const SC_STORE_KEY_PREFIX;
static const int SC_STORE_KEY_MAX;
"""

FUNCTIONS = ""

CUSTOMIZATIONS = ""
