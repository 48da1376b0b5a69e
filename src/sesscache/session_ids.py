"""The public path of :mod:`sesscache._id_stamps` (when a session id sesscache issued was made,
and how long a lookup waits for its write): kept so that ``import sesscache.session_ids`` goes
on working. The module was renamed so as not to read like ``_cffi_src/session_ids.py``."""
from ._id_stamps import *  # noqa: F401,F403
from ._id_stamps import __all__  # noqa: F401
