"""Every error sesscache raises derives from :class:`SesscacheError`.

Messages name the limit or the cause and say what to do about it: they are written
for a TLS server operator, not for someone who has read OpenSSL's man pages.
"""
from __future__ import annotations


class SesscacheError(Exception):
    """Base class of every sesscache error."""


class UnsupportedContext(SesscacheError, TypeError):
    """The object is not a TLS context sesscache can hook safely.

    Raised instead of guessing: a pointer into the wrong copy of libssl corrupts memory.
    """


class BindingError(SesscacheError):
    """A libssl copy could not be resolved or verified."""


class SessionError(SesscacheError, ValueError):
    """Bytes that are not a session of this libssl, or a session that cannot be serialized."""


class CallbackError(SesscacheError):
    """A user callback returned something sesscache cannot hand to OpenSSL."""


class StoreError(SesscacheError):
    """A store could not answer: unreachable, too slow, locked, read-only or full.

    The cache treats it as a miss (or a skipped write), counts it and keeps serving.
    """


class ValueTooLarge(StoreError, ValueError):
    """A value exceeds what a store (or the cache's size limit) accepts."""


class SealError(SesscacheError, ValueError):
    """A sealed blob failed authentication: tampered, truncated, swapped or sealed with an unknown key."""


class ConfigurationError(SesscacheError, ValueError):
    """Arguments that cannot work together; the message says which and why."""


class StorePaused(StoreError):
    """The store failed too often in a row and is left alone for a moment (see
    :mod:`sesscache.stores.breaker`): the call was not attempted, so it cost no wait. The
    cache counts it in ``errors`` like any store fault; the pause is logged once, when it
    starts."""
