"""SessionCache.attach and detach, each one C call from a settings struct.

Declarations only: the C, and why it is as it is, lives in ``csrc/attach.c``; the settings
struct in ``csrc/attach.h`` (read here, as the compiler reads it).
"""
from . import c_source, cdef_of_header

INCLUDES = ""

TYPES = cdef_of_header("attach.h") + """
static const int SC_ATTACH_NOTE_TICKETS_ON;
static const int SC_ATTACH_NOTE_NO_CAP;
static const int SC_ATTACH_BAD_SLOT;
static const int SC_ATTACH_FOREIGN_NEW;
static const int SC_ATTACH_FOREIGN_GET;
static const int SC_ATTACH_FOREIGN_REMOVE;
static const int SC_ATTACH_CANNOT_BIND;
static const int SC_ATTACH_NO_MEMORY;
static const int SC_ATTACH_SESSION_ID_REFUSED;
static const int SC_ATTACH_BAD_SETTINGS;
"""

FUNCTIONS = """
int sc_attach(int, SSL_CTX *, const sc_attach_settings *);
int sc_detach(int, SSL_CTX *, sc_fast *);
"""

CUSTOMIZATIONS = c_source('attach.c')
