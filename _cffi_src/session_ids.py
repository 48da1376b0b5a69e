"""Session ids that say when they were issued, so another server can wait for their write.

Declarations only: the C, and why it is as it is, lives in ``csrc/id_stamps.c``.
"""
from . import c_source

INCLUDES = ""

TYPES = """
static const int SC_STAMP_RANDOM_BYTES;
"""

FUNCTIONS = """
int sc_stamp_session_ids(int, SSL_CTX *, int);
int sc_stamped_session_id_for_test(unsigned char *, unsigned int *);
"""

CUSTOMIZATIONS = c_source('id_stamps.c')
