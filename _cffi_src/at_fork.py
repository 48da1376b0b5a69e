"""fork() and the C tables: every mutex sesscache owns is free and consistent in the child.

Declarations only: the C, and why it is as it is, lives in ``csrc/at_fork.c``.
"""
from . import c_source

INCLUDES = ""

TYPES = ""

FUNCTIONS = """
int sc_at_fork_install(void);
"""

CUSTOMIZATIONS = c_source('at_fork.c')
