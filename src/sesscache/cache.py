"""``SessionCache``: an external TLS session cache for servers, in one line.

    cache = SessionCache(store=MemoryStore())   # or SQLiteStore(path), RedisStore(url)
    cache.attach(server_context)                 # OpenSSL.SSL.Context or ssl.SSLContext

What it does on each event, and why:

* **New session** (after a full handshake, and for each TLS 1.3 stateful ticket): the
  session is serialized by OpenSSL (DER), wrapped with the time of the full handshake it
  descends from, sealed with AES-GCM when ``seal_keys`` are given, and written under a key
  made of the session id context and the session id, with a time to live of
  ``min(lifetime, the session's own timeout)``. TLS 1.3 stateless tickets are reported by
  OpenSSL too but can never be looked up: they are counted and not stored.
* **Lookup** (a client offers a session this process does not hold): the blob is read,
  opened, checked (expiry against the *original* handshake, so a TLS 1.3 session cannot
  be prolonged forever by resuming it; the SNI name the client asks for must be the one the
  session was made for), parsed by the libssl copy that owns the context, and handed to
  OpenSSL, which checks protocol version, session id context and expiry once more.
* **Remove** (OpenSSL drops a session from its *internal* cache): counted, never
  forwarded to the store. The internal cache evicts when full, flushes on expiry, and
  drops sessions of connections closed without close_notify; with a store shared by
  processes and hosts, deleting there would throw away sessions every other process
  still uses (a process's small local cache is not the source of truth). The store's own
  time to live does the expiring.

Cache modes: in front of a store answered in Python (SQLite, memcached, your own),
``attach`` keeps OpenSSL's internal cache as a first level (``SESS_CACHE_SERVER``): a
session made in this process resumes without Python, and the store serves every other
process and host. Over a store C answers itself (``MemoryStore``, ``shm:``, a Redis
replica) and with ``single_use``, every lookup goes to the store
(``SESS_CACHE_SERVER | SESS_CACHE_NO_INTERNAL``, as nginx and Apache do with a shared
cache): the C table is as fast, and OpenSSL's cache would cost a walk per TLS 1.3
resumption (see ``_internal_cache_by_default``). ``internal_cache=`` decides it yourself.

Failures never fail a handshake: a store that is down, slow or full, a blob that is
tampered with, truncated, too large or expired, is a full handshake, counted in
:attr:`stats` and logged once per burst.
"""
from __future__ import annotations

import logging
import struct
import threading
import time
import weakref
from dataclasses import dataclass, fields
import hashlib
from typing import Any, Callable, Dict, NamedTuple, Optional, Sequence

from . import _fork
from ._binding import hooks as _hooks
from ._binding import ffi, lib
from ._burstlog import BurstLogger
from ._binding.find_context import bind_context
from ._binding.copies import LibsslInstance
from ._call_times import CallTimes
from ._binding.openssl_counts import OpenSSLTally
from .contexts import (
    MAX_SESSION_ID_CONTEXT,
    SESS_CACHE_NO_INTERNAL,
    SESS_CACHE_SERVER,
)
from .errors import ConfigurationError, SealError, SessionError, StorePaused
from .session import session_to_der
from ._id_stamps import issued_at
from .stores import MemoryStore, Store
from .stores.capabilities import capabilities_of, check_store, evictions_of, take
from .stores.resilient import wrap_remote_store

logger = logging.getLogger(__name__)

DEFAULT_LIFETIME = 300.0
#: RFC 8446 forbids tickets (and so sessions) living longer than 7 days.
MAX_LIFETIME = 7 * 24 * 3600.0
#: Apache and Node refuse sessions larger than this; real ones are a few hundred bytes,
#: a few KiB with a client certificate chain.
DEFAULT_MAX_SESSION_SIZE = 10 * 1024
DEFAULT_SESSION_ID_CONTEXT = b"sesscache"

# The store key and envelope format are defined once, in C (csrc/envelope.h, which the
# C fast path writes and reads too): format version, origin time (seconds since the
# epoch), fingerprint of the server context's certificate (SHA-256, first 16 bytes),
# length of the SNI name; then the name (ASCII, lowercase) and the DER. The name is ours,
# not OpenSSL's: a server without a servername callback does not record it in the session.
_ENVELOPE = struct.Struct(f">Bq{lib.SC_ENVELOPE_CERT_LEN}sB")
assert (_ENVELOPE.size, struct.calcsize(">B"), struct.calcsize(">Bq"), struct.calcsize(f">Bq{lib.SC_ENVELOPE_CERT_LEN}s")) == (
    lib.SC_ENVELOPE_SIZE, lib.SC_ENVELOPE_ORIGIN_AT, lib.SC_ENVELOPE_CERT_AT, lib.SC_ENVELOPE_NAME_LEN_AT)
# The format byte is one no sealed blob starts with (sealing's own format byte is 1), so
# a sealed blob read by a cache without keys is told apart at once, not misread.
_ENVELOPE_VERSION = lib.SC_ENVELOPE_VERSION
#: Sealing and the envelope add at most this much to a session's DER.
_MAX_ENVELOPE_OVERHEAD = lib.SC_ENVELOPE_OVERHEAD


class _OtherVersion(SessionError):
    """A stored value in a format another sesscache version writes: the envelope's format
    bytes are the 0xE0 family (this one 0xE1, later ones 0xE2...), sealing's 2 to 15. In a
    rolling deploy such values are expected: a quiet miss, not a refusal."""


def _other_envelope_version(version: int) -> bool:
    return version != _ENVELOPE_VERSION and version & 0xF0 == _ENVELOPE_VERSION & 0xF0


def _other_seal_version(version: int) -> bool:
    from .sealing import VERSION

    return version != VERSION and 1 <= version <= 15
#: How far in the future a session's origin may lie (clocks of a fleet disagree a little).
_CLOCK_SKEW = lib.SC_CLOCK_SKEW


class _CacheParts(NamedTuple):
    """A cache's side of its attachments: counters, log, sealing, and how it reads the store."""

    count: Callable[..., None]
    log: Callable[..., None]
    wrap: Callable[..., bytes]
    timed: Callable[[str, float], None]  #: seconds a store call took (metrics)
    unwrap: Callable[..., "_Stored"]
    read: Callable[[bytes], Optional[bytes]]  #: get, or a single_use take
    wait_for_write: Optional[Callable[..., Optional[bytes]]]
    single_use: bool


class _Stored(NamedTuple):
    origin: int  #: time of the full handshake the session descends from
    server_name: Optional[bytes]  #: the SNI name it was made for (lowercase), or None
    certificate: bytes  #: fingerprint of the certificate of the context that made it
    der: memoryview  #: the session as i2d_SSL_SESSION wrote it
_KEY_PREFIX = ffi.string(lib.SC_STORE_KEY_PREFIX)


@dataclass
class CacheStats:
    """Counters since the cache was made (a snapshot: reading it does not reset it)."""

    hits: int = 0  #: lookups answered with a session OpenSSL accepted for resumption
    misses: int = 0  #: lookups the store had nothing for
    stores: int = 0  #: sessions written to the store
    removes: int = 0  #: OpenSSL internal-cache removals seen (not forwarded)
    evictions: int = 0  #: entries the store evicted to make room (MemoryStore)
    expired: int = 0  #: sessions refused or skipped because their lifetime was over
    rejected: int = 0  #: blobs refused: tampered, foreign, unparsable, other SNI or context
    errors: int = 0  #: store faults (down, slow, locked, full) and callback bugs
    oversize: int = 0  #: sessions larger than max_session_size, not stored
    stateless: int = 0  #: TLS 1.3 stateless tickets, not stored (they are never looked up)

    def as_dict(self) -> Dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def __add__(self, other: "CacheStats") -> "CacheStats":
        """Counters of several caches (worker processes) added up."""
        if not isinstance(other, CacheStats):
            return NotImplemented
        return CacheStats(**{name: value + getattr(other, name) for name, value in self.as_dict().items()})


class SessionCache:
    """An external session cache for TLS servers over a pluggable store.

    :param store: where sessions live: ``MemoryStore()`` (the default, this process
        only), ``SQLiteStore(path)`` (processes on one host), ``RedisStore(url)`` (a fleet).
        A network store (``RedisStore``, ``MemcachedStore``) is wrapped in a
        :class:`~sesscache.stores.resilient.ResilientStore`: writes go behind the handshake
        (a lookup elsewhere waits briefly for a session issued moments ago), and a store
        that keeps failing is paused (lookups then count in ``errors`` at no wait); its own
        counters are ``cache.store.stats``.
    :param lifetime: the longest a session may be resumed, in seconds, counted from the
        full handshake it comes from (OpenSSL's own default timeout is 300 s; at most 7
        days, as RFC 8446 allows for TLS 1.3).
    :param seal_keys: keys (16, 24 or 32 bytes) to seal sessions with AES-GCM before they
        reach the store; the first seals, all open. Without keys, whoever can read the
        store can decrypt every connection resumed from what is in it.
    :param max_session_size: larger sessions are not stored (counted in ``oversize``).
    :param single_use: take a session out of the store when it is used (atomically: Redis
        GETDEL, SQLite DELETE ... RETURNING), so each can resume once. Needs
        ``internal_cache=False`` at attach, or the local cache would resume it again. A
        store without its own ``pop`` is taken from with ``get`` then ``delete``, which is
        not atomic: a warning says so when the cache is made.

    The store must have ``get``, ``set`` and ``delete`` (checked here: ConfigurationError
    naming what is missing). These settings are read-only afterwards: the C fast path
    copies them at attach. ``with SessionCache(...) as cache:`` closes it at the end
    (:meth:`close`).
    """

    def __init__(self, store: Optional[Store] = None, *, lifetime: float = DEFAULT_LIFETIME,
                 seal_keys: Optional[Sequence[bytes]] = None,
                 max_session_size: int = DEFAULT_MAX_SESSION_SIZE, single_use: bool = False,
                 log_interval: float = 10.0) -> None:
        if not (isinstance(lifetime, (int, float)) and 0 < lifetime <= MAX_LIFETIME):
            raise ConfigurationError(
                f"lifetime must be more than 0 and at most {MAX_LIFETIME:.0f} s (7 days, the most "
                f"RFC 8446 allows a TLS 1.3 session), got {lifetime!r}")
        if not (isinstance(max_session_size, int) and max_session_size >= 64):
            raise ConfigurationError(
                f"max_session_size must be an int of at least 64 bytes, got {max_session_size!r}")
        # Read-only (properties below): attach copies them into the C fast path, so a
        # later change would reach the Python path only and the two would disagree.
        # A store on the network (RedisStore, MemcachedStore) gets slow writes behind the
        # handshake and a breaker: see stores/resilient.py. cache.store is then the wrapper;
        # cache.store.backend is the store given here.
        self._store: Store = (wrap_remote_store(check_store(store)) if store is not None
                              else MemoryStore())
        self._lifetime = float(lifetime)
        self._max_session_size = max_session_size
        self._single_use = bool(single_use)
        # What the store can do beyond get, set and delete: asked once, here.
        self._capabilities = capabilities_of(self._store)
        self._take = self._capabilities.pop or take(self._store, caps=self._capabilities)
        # A store whose writes land after the handshake waits for a session issued moments
        # ago that it does not hold yet (ResilientStore.wait_for_write).
        self._store_waits_for_write = self._capabilities.wait_for_write
        if self._single_use and self._capabilities.pop is None:
            logger.warning(
                "single_use=True over %s, which has no atomic pop: a session is taken with get "
                "then delete, so two handshakes at the same moment may both resume it. Give the "
                "store a pop that takes atomically (every bundled store has one) where that "
                "matters.", type(self._store).__name__)
        self._sealer = None
        if seal_keys is not None:
            from .sealing import Sealer

            self._sealer = Sealer(seal_keys)
        self._log_interval = log_interval
        # (slot, SSL_CTX address) -> attachment, held weakly: the context's hooks own it,
        # so a context that is gone (gunicorn makes one per connection) leaves no entry,
        # and no address of a freed SSL_CTX is ever used again.
        self._attached = _Attachments()
        self._fast_policies: list = []  # sc_fast *, every one made (never freed)
        self._fast_by_sid: Dict[bytes, Any] = {}  # session id context -> sc_fast * or None
        # (session id context, internal_cache as asked: True, False or None for the default)
        # -> (sc_attach_settings *, sc_fast * or None)
        self._settings: Dict[Any, Any] = {}
        self._parts_made: Optional[_CacheParts] = None
        self._warned_tickets = False
        self._renew_after_fork()
        _fork.renew_in_child(self._renew_after_fork)

    def _renew_after_fork(self) -> None:
        """Fresh counters and locks: at __init__, and in a forked child (a worker counts
        its own traffic only, and a lock another thread held at fork is not held here).
        The C fast path's counters are reset in C (csrc/at_fork.c)."""
        self._stats = CacheStats()
        # What rejected, expired and errors count besides lookups (see outcomes()).
        self._of_new = dict.fromkeys(("rejected", "expired", "errors"), 0)
        self._store_call_times = CallTimes()
        self._stats_lock = threading.Lock()
        self._attached_lock = threading.Lock()
        if not hasattr(self, "_openssl_tally"):
            self._openssl_tally = OpenSSLTally()
        else:  # forked: the inherited contexts' counts so far are the parent's
            self._openssl_tally.restart_after_fork(self._live_contexts())
        self._burst = BurstLogger(logger, self._log_interval)

    # --- settings (fixed when the cache is made) ---------------------------------------

    @property
    def store(self) -> Store:
        """Where sessions live (read-only)."""
        return self._store

    @property
    def lifetime(self) -> float:
        """The longest a session may be resumed, in seconds (read-only: make another
        cache to change it; the C fast path copied it at attach)."""
        return self._lifetime

    @property
    def max_session_size(self) -> int:
        """Larger sessions are not stored (read-only)."""
        return self._max_session_size

    @property
    def single_use(self) -> bool:
        """Sessions are taken out of the store when used (read-only)."""
        return self._single_use

    # --- attaching ------------------------------------------------------------------

    def attach(self, context: Any, *, session_id_context: Optional[bytes] = None,
               internal_cache: Optional[bool] = None) -> None:
        """Serve ``context``'s session lookups from this cache (server side).

        :param session_id_context: up to 32 bytes naming the service; every process and
            host that shares the store must use the same value (sessions only resume
            where it matches). Default ``b"sesscache"``. It is set on the context.
        :param internal_cache: keep OpenSSL's in-process cache in front of the store
            (True) or send every lookup to the store (False). Default: off over a store
            C answers itself (``MemoryStore``, ``shm:``, a Redis replica: as fast, and
            OpenSSL's cache costs a walk over its sessions per TLS 1.3 resumption) and
            with ``single_use``; on in front of a store answered in Python.

        It sets the context's session timeout to ``lifetime`` if it was longer, and
        installs a session ticket callback (which caps each TLS 1.3 session at its first
        handshake's lifetime) and a ClientHello callback (which binds each connection's
        session id context to the SNI name asked and the certificate, so that OpenSSL
        never resumes a session for another name or certificate, from whichever cache):
        replace none of them afterwards. It also has the context issue session ids that
        carry their issue time (``sesscache.session_ids``; a session id generator set
        before is replaced). With session tickets on
        (OpenSSL's default) the cache gets nothing to share; it logs a warning once: set
        ``OP_NO_TICKET``.

        Call it right after configuring the context, before the first connection
        (pyOpenSSL 26.2+ refuses changes to a context after that).
        """
        sid_ctx = DEFAULT_SESSION_ID_CONTEXT if session_id_context is None else session_id_context
        if not isinstance(sid_ctx, bytes) or not 0 < len(sid_ctx) <= MAX_SESSION_ID_CONTEXT:
            raise ConfigurationError(
                f"session_id_context must be 1 to {MAX_SESSION_ID_CONTEXT} bytes, got {sid_ctx!r}; "
                "use a short service name such as b'shop:443', the same in every process")
        bound = bind_context(context)  # once, verified: the one C call below takes it
        _hooks.check_mutable(bound)
        settings, fast = (self._settings.get((sid_ctx, internal_cache))
                          or self._attach_settings(sid_ctx, internal_cache))
        # One C call (csrc/attach.c) sets, after checking everything that can refuse (so a
        # refused attach changes nothing): the session id context, with every connection's
        # bound to the SNI name it asks for and the certificate (OpenSSL itself then
        # refuses a session made for another name or certificate, in its internal cache as
        # in the store and for tickets: RFC 6066 section 3, nginx CVE-2025-23419); the cache
        # mode; the three session callbacks; the context's timeout at most the lifetime and
        # a TLS 1.3 resumption's new session capped at its first handshake's before OpenSSL
        # caches it; the C fast path; session ids that carry their issue time (another
        # server of the fleet that cannot find one yet waits for its write: session_ids.py).
        instance = bound.instance
        done = lib.sc_attach(instance.slot, bound.pointer, settings)
        if done < 0:
            raise self._attach_refused(done, bound)
        attachment = _Attachment(self, self._parts_made or self._parts(), instance, sid_ctx, fast)
        public = self.attach
        _hooks.own(bound, self, new=(attachment.on_new, public), get=(attachment.on_get, public),
                   remove=(attachment.on_remove, public))
        self._attached.add((instance.slot, bound.ctx), attachment)
        if done & lib.SC_ATTACH_NOTE_NO_CAP:
            logger.warning("cannot cap TLS 1.3 session lifetimes on this context (%s); "
                           "the store still refuses sessions past their first handshake's lifetime",
                           bound.instance.describe())
        if done & lib.SC_ATTACH_NOTE_TICKETS_ON:
            self._warn_tickets_starve()

    def _internal_cache_by_default(self, fast: Any) -> bool:
        """attach's default for ``internal_cache``: OpenSSL's internal cache in front of a
        store C answers itself buys nothing (the C table's lookup costs 1.6-2.5 us) and costs
        a walk per TLS 1.3 resumption: OpenSSL keeps that cache sorted by expiry, and a
        resumption's new session, capped at its first handshake's lifetime, expires before
        every session made since that handshake, so OpenSSL walks past them all to insert it
        (OpenSSL 3.0.19: +400 us per resumption with 5,000 sessions cached, twice the whole
        handshake; benchmarks/run.py walk). So: off over C tables, on in front of a store
        answered in Python (where a local hit saves the store's round trip), off with
        ``single_use``. ``fast``: the C fast path's policy for the session id context, or
        None."""
        return not self._single_use and fast is None

    def _attach_settings(self, sid_ctx: bytes, requested: Optional[bool]):
        """What ``sc_attach`` sets on a context (an ``sc_attach_settings *``) and the C fast
        path's policy (or None): the same for every context attached with this session id
        context and ``internal_cache=`` argument (None: the default, worked out here), so
        made once per pair (gunicorn attaches one context per connection; attach asks
        ``_settings`` first). Never freed while the cache lives (under 100 bytes each)."""
        fast = self._fast_policy(sid_ctx)
        internal_cache = self._internal_cache_by_default(fast) if requested is None else requested
        if self._single_use and internal_cache:
            raise ConfigurationError(
                "single_use=True needs attach(..., internal_cache=False): OpenSSL's in-process "
                "cache would otherwise resume a session again without asking the store")
        settings = ffi.new("sc_attach_settings *")
        ffi.memmove(settings.sid, sid_ctx, len(sid_ctx))
        settings.sid_len = len(sid_ctx)
        settings.cache_mode = SESS_CACHE_SERVER if internal_cache else SESS_CACHE_SERVER | SESS_CACHE_NO_INTERNAL
        settings.lifetime = int(self.lifetime)
        settings.fast = ffi.NULL if fast is None else fast
        with self._attached_lock:
            made = self._settings.setdefault((sid_ctx, internal_cache), (settings, fast))
            return self._settings.setdefault((sid_ctx, requested), made)

    @staticmethod
    def _attach_refused(code: int, bound: Any) -> Exception:
        """The error for an ``sc_attach`` that refused (and changed nothing)."""
        foreign = {lib.SC_ATTACH_FOREIGN_NEW: "new", lib.SC_ATTACH_FOREIGN_GET: "get",
                   lib.SC_ATTACH_FOREIGN_REMOVE: "remove"}
        if code in foreign:
            return _hooks.foreign_callback(foreign[code])
        if code == lib.SC_ATTACH_CANNOT_BIND:
            # Without binding each connection's session id context to the SNI name it asks
            # for, a session made for one name could resume for another: refused.
            return ConfigurationError(
                f"{bound.instance.describe()} cannot tell sesscache which server name a client "
                "asks for before it resumes a session (it lacks SSL_CTX_set_client_hello_cb, "
                "SSL_client_hello_get0_ext or SHA-256 through EVP_Digest), so a session made for "
                "one name could resume for "
                "another. Use OpenSSL 1.1.1 or newer built with them (every official build has "
                "them), or do not attach a cache to this context.")
        if code == lib.SC_ATTACH_SESSION_ID_REFUSED:
            return ConfigurationError("OpenSSL refused the session id context")
        if code == lib.SC_ATTACH_NO_MEMORY:
            return MemoryError("no memory for the state sesscache keeps per context")
        return ConfigurationError(f"sc_attach refused the context ({code}): a sesscache bug, please report it")

    def _warn_tickets_starve(self) -> None:
        """Say once, at attach, when the context's session tickets keep sessions from the
        cache: with tickets on (OpenSSL's default), a TLS 1.2 server sends an empty session
        id and a ticket, and TLS 1.3 sends stateless tickets; neither is ever looked up."""
        if self._warned_tickets:
            return
        self._warned_tickets = True
        logger.warning(
            "this context has session tickets on (OpenSSL's default): TLS 1.2 clients resume "
            "with tickets instead of session ids and TLS 1.3 tickets are stateless, so this "
            "cache gets no sessions to share and workers or hosts other than the one that made "
            "a ticket cannot resume it. Set ctx.options |= ssl.OP_NO_TICKET (pyOpenSSL: "
            "ctx.set_options(OpenSSL.SSL.OP_NO_TICKET)) before attach() to share sessions "
            "through the cache.")

    def _fast_policy(self, sid_ctx: bytes):
        """The C fast path's copy of this cache's policy, when C can read its store: the
        plain in-process one (the real clock, no method overridden) or a shared-memory
        segment, for lookups and new sessions, sealed or not (C seals as Python does,
        csrc/seal.c); or, unsealed, a ``PrefetchingStore``'s tables or a Redis replica's,
        for lookups only (they write new sessions on to their real store). Else None. One
        per session id context, shared by every context attached with it (gunicorn
        attaches one per connection)."""
        with self._attached_lock:
            if sid_ctx in self._fast_by_sid:
                return self._fast_by_sid[sid_ctx]
            policy = self._fast_by_sid[sid_ctx] = self._new_fast_policy(sid_ctx)
        return policy

    def _new_fast_policy(self, sid_ctx: bytes):
        """Over the store's C tables (the "C tables" capability: ``c_tables()``, see
        :mod:`sesscache.stores.capabilities`), when it has them. Sealed: only over tables C
        writes new sessions to itself (``new_in_c``), with the Sealer's keys handed to C."""
        c_tables = self._capabilities.c_tables
        if c_tables is None:
            return None
        view = c_tables()
        if view is None:
            return None
        seal = ffi.NULL
        if self._sealer is not None:
            keys = self._sealer.c_ring() if view.new_in_c else None
            if keys is None:
                return None
            seal = keys
        flags = 0 if view.new_in_c else lib.SC_FAST_NEW_IN_PYTHON
        if not view.complete:  # a replica: misses ask the store
            flags |= lib.SC_FAST_MISS_IN_PYTHON
        first = ffi.NULL if view.first is None else view.first
        policy = lib.sc_fast_new(view.table, sid_ctx, len(sid_ctx), self.lifetime, self.max_session_size,
                                 1 if self.single_use else 0, first, flags)
        if policy == ffi.NULL:
            return None
        if seal != ffi.NULL:  # before any context is given the policy
            lib.sc_fast_seal_with(policy, seal)
        # Never freed (a context may outlive the cache and still call in); about 200 bytes.
        self._fast_policies.append(policy)
        if view.policy_made is not None:
            view.policy_made(policy)  # the store counts what C read from it
        return policy

    def detach(self, context: Any) -> None:
        """Stop serving ``context``; its own internal cache keeps working."""
        bound = bind_context(context)
        key = (bound.instance.slot, bound.ctx)
        hooks = _hooks.lookup(*key)
        if hooks is None or hooks.owner is not self:
            raise ConfigurationError("this cache is not attached to that context")
        _hooks.check_mutable(bound)  # before anything changes
        with self._attached_lock:
            attachment = self._attached.pop(key, None)
        fast = attachment.fast if attachment is not None and attachment.fast is not None else ffi.NULL
        # One C call (csrc/attach.c): the fast path leaves, the session callbacks are
        # cleared, the cache mode is OpenSSL's default, the session id context is no longer
        # bound to the name and certificate, and session ids are OpenSSL's own again.
        lib.sc_detach(bound.instance.slot, bound.pointer, fast)
        _hooks.disown(bound)

    def session_id_context(self, context: Any) -> Optional[bytes]:
        """The session id context this cache serves ``context`` with (part of every store
        key), or None when it is not attached to it."""
        bound = bind_context(context)
        with self._attached_lock:
            attachment = self._attached.get((bound.instance.slot, bound.ctx))
        return None if attachment is None else attachment.sid_ctx

    # --- statistics -------------------------------------------------------------------

    @property
    def stats(self) -> CacheStats:
        """A snapshot of the counters; ``evictions`` comes from the store where it keeps one."""
        return self._snapshot()[0]

    def outcomes(self) -> Dict[str, Any]:
        """The counters split by what they count, from one snapshot: ``stats``;
        ``lookups``, the lookups that reached this cache by outcome (``hit``, ``miss``,
        ``rejected``, ``expired``, ``error``; ``hit`` is ``stats.hits``); ``not_stored``, new
        sessions not written by reason (``stateless_ticket``, ``oversize``, ``expired``,
        ``rejected``, ``error``)."""
        stats, of_new = self._snapshot()
        return {
            "stats": stats,
            "lookups": {"hit": stats.hits, "miss": stats.misses,
                        "rejected": stats.rejected - of_new["rejected"],
                        "expired": stats.expired - of_new["expired"],
                        "error": stats.errors - of_new["errors"]},
            "not_stored": {"stateless_ticket": stats.stateless, "oversize": stats.oversize,
                           "expired": of_new["expired"], "rejected": of_new["rejected"],
                           "error": of_new["errors"]},
        }

    def _snapshot(self):
        with self._stats_lock:
            snapshot = CacheStats(**self._stats.as_dict())
            of_new = dict(self._of_new)
        fast = self._fast_counts()  # what the C fast path answered by itself
        for name in ("hits", "misses", "stores", "stateless", "rejected"):
            setattr(snapshot, name, getattr(snapshot, name) + fast[name])
        snapshot.evictions += evictions_of(self.store)
        return snapshot, of_new

    def openssl_counts(self) -> Dict[str, int]:
        """OpenSSL's own session counters of the contexts this cache serves, added up (this
        process's only): ``hits`` (``SSL_CTX_sess_hits``: every handshake OpenSSL resumed,
        from its in-process cache or from this cache), ``cb_hits`` (of them, sessions this
        cache handed over), ``misses`` (offers its in-process cache did not hold),
        ``timeouts``, ``cache_full``; and ``sessions``, what their in-process caches hold now
        (``SSL_CTX_sess_number``). Plain reads of counters OpenSSL keeps anyway; a freed
        context's counts stay in the sums as last read."""
        return self._openssl_tally.read(self._live_contexts())

    def store_call_times(self) -> Dict[str, Any]:
        """Seconds the handshakes waited for store calls: ``{"lookup" | "write": (counts per
        bucket of sesscache._call_times.BUCKETS then +Inf, sum)}`` (a write to a network
        store is its hand-over to the writer thread)."""
        with self._stats_lock:
            return self._store_call_times.snapshot()

    def _live_contexts(self) -> list:
        """``(key, attachment, api, SSL_CTX address, Python context)`` of each context served
        now; holding the Python context keeps its SSL_CTX alive while it is read."""
        with self._attached_lock:
            attached = list(self._attached.items())
        live = []
        for (slot, ctx), attachment in attached:
            hooks = _hooks.lookup(slot, ctx)
            context = hooks.context_ref() if hooks is not None and hooks.owner is self else None
            if context is not None:
                live.append(((slot, ctx), attachment, attachment.api, ctx, context))
        return live

    def handed_over(self) -> int:
        """How many events the C fast path handed to the Python handlers (refusals,
        expired or oversize sessions, ...): for tests and benchmarks."""
        return self._fast_counts()["handed_over"]

    def _fast_counts(self) -> Dict[str, int]:
        """The C fast path's counters, summed over every attachment this cache made."""
        return fast_path_counts(self._fast_policies)

    def _parts(self) -> "_CacheParts":
        """What an attachment (one context's handlers) does through this cache: made once
        (its settings are fixed), shared by every attachment."""
        parts = self._parts_made
        if parts is None:
            parts = self._parts_made = self._new_parts()
        return parts

    def _new_parts(self) -> "_CacheParts":
        return _CacheParts(count=self._count, log=self._log, wrap=self._wrap, timed=self._timed, unwrap=self._unwrap,
                           read=self._take if self._single_use else self._store.get,
                           wait_for_write=self._store_waits_for_write, single_use=self._single_use)

    def _log(self, level: int, topic: str, message: str, *args: Any) -> None:
        self._burst.log(level, topic, message, *args)  # (the burst logger is renewed at fork)

    def _count(self, name: str, amount: int = 1, new_session: bool = False) -> None:
        with self._stats_lock:
            setattr(self._stats, name, getattr(self._stats, name) + amount)
            if new_session:  # not a lookup (outcomes())
                self._of_new[name] += amount

    def _timed(self, operation: str, seconds: float) -> None:
        with self._stats_lock:
            self._store_call_times.observe(operation, seconds)

    # --- keys and blobs -----------------------------------------------------------------

    @staticmethod
    def key_for(session_id_context: bytes, session_id: bytes) -> bytes:
        """The store key: the session id context is part of it, so two services sharing
        a store never see each other's sessions."""
        return _KEY_PREFIX + bytes((len(session_id_context),)) + session_id_context + session_id

    @staticmethod
    def session_id_of(key: bytes) -> bytes:
        """The session id at the end of a store key made by :meth:`key_for` (b"" for a key
        of another shape)."""
        if len(key) < len(_KEY_PREFIX) + 1 or not key.startswith(_KEY_PREFIX):
            return b""
        return key[len(_KEY_PREFIX) + 1 + key[len(_KEY_PREFIX)]:]

    def _wrap(self, key: bytes, origin: int, server_name: bytes, certificate: bytes, der: bytes) -> bytes:
        blob = _ENVELOPE.pack(_ENVELOPE_VERSION, origin, certificate, len(server_name)) + server_name + der
        return self._sealer.seal(key, blob) if self._sealer is not None else blob

    def _unwrap(self, key: bytes, blob: bytes) -> _Stored:
        """What a stored blob holds; SealError or SessionError when it is not ours."""
        if self._sealer is not None:
            if blob and _other_seal_version(blob[0]):
                raise _OtherVersion(f"sealed by another sesscache version (format {blob[0]})")
            blob = self._sealer.open(key, blob)  # SealError for anything not ours
        if len(blob) <= _ENVELOPE.size:
            raise SessionError("stored blob is too short to hold a session")
        version, origin, certificate, name_length = _ENVELOPE.unpack_from(blob)
        if _other_envelope_version(version):
            raise _OtherVersion(f"written by another sesscache version (format {version:#x})")
        if version != _ENVELOPE_VERSION:
            raise SessionError(f"stored blob has format {version}, this sesscache reads {_ENVELOPE_VERSION}")
        start = _ENVELOPE.size + name_length
        if len(blob) <= start:
            raise SessionError("stored blob is too short to hold a session")
        name = bytes(blob[_ENVELOPE.size:start]) or None
        return _Stored(origin, name, certificate, memoryview(blob)[start:])

    # --- closing ------------------------------------------------------------------------

    def close(self) -> None:
        """Detach from every context this cache serves, then close the store (when it has
        ``close``): for good, and calling it again does nothing. A pyOpenSSL context that
        has made connections may not be changed (pyOpenSSL 26.2+): there the cache's
        handlers are turned off inside sesscache instead, and its lookups find nothing."""
        with self._attached_lock:
            attached = list(self._attached.items())
        for (slot, ctx), attachment in attached:
            hooks = _hooks.lookup(slot, ctx)
            ours = hooks is not None and hooks.owner is self
            context = hooks.context_ref() if ours else None
            if context is not None and _hooks.may_change(context):
                self.detach(context)
                continue
            with self._attached_lock:
                self._attached.pop((slot, ctx), None)
            if attachment.fast is not None:
                lib.sc_fast_disable(slot, ffi.cast("SSL_CTX *", ctx), attachment.fast)
            if ours:
                _hooks.turn_off(hooks)
        if self._sealer is not None:  # no context reaches the C keys any more: zeroed
            self._sealer.retire_c_ring()
        if self._capabilities.close is not None:
            self._capabilities.close()

    def __enter__(self) -> "SessionCache":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"<SessionCache store={type(self.store).__name__} lifetime={self.lifetime:.0f}s "
                f"sealed={self._sealer is not None}>")


def fast_path_counts(policies: Sequence[Any]) -> Dict[str, int]:
    """The counters of C fast-path policies (``sc_fast *``), summed: what C answered by
    itself (``hits``, of them ``from_first``: read from a policy's first table; ``misses``,
    ``stores``, ``stateless``; ``rejected``: offers the ClientHello callback found made for
    another name or certificate) and what it ``handed_over`` to Python."""
    totals = dict.fromkeys(("hits", "misses", "stores", "stateless", "handed_over", "from_first",
                            "rejected"), 0)
    counts = ffi.new("sc_fast_counts *")
    for policy in policies:
        lib.sc_fast_counts_of(policy, counts)
        for name in totals:
            totals[name] += getattr(counts, name)
    return totals


class _Attachments:
    """The contexts a cache serves: ``(slot, SSL_CTX address)`` -> its :class:`_Attachment`,
    held weakly (the context's hooks own it: a context that is gone, gunicorn makes one per
    connection, leaves no entry, and no address of a freed SSL_CTX is used again).

    A dict of weak references, each of which drops its own entry when its attachment goes:
    an attach is one store into the dict (atomic under the GIL, as are the copies the
    readers take), where ``WeakValueDictionary`` ran three Python frames under a lock
    (about 2 us of an attach right after making the context)."""

    __slots__ = ("refs",)

    def __init__(self) -> None:
        self.refs: Dict[Any, "weakref.ReferenceType[_Attachment]"] = {}

    def add(self, key: Any, attachment: "_Attachment") -> None:
        refs = self.refs

        def gone(ref: Any, key: Any = key) -> None:
            if refs.get(key) is ref:  # (not a newer attachment of a reused address)
                refs.pop(key, None)

        refs[key] = weakref.ref(attachment, gone)

    def get(self, key: Any) -> Optional["_Attachment"]:
        ref = self.refs.get(key)
        return None if ref is None else ref()

    def pop(self, key: Any, default: Any = None) -> Any:
        ref = self.refs.pop(key, None)
        attachment = None if ref is None else ref()
        return default if attachment is None else attachment

    def items(self) -> list:
        live = []
        for key, ref in list(self.refs.items()):
            attachment = ref()
            if attachment is not None:
                live.append((key, attachment))
        return live

    def values(self) -> list:
        return [attachment for _key, attachment in self.items()]

    def __len__(self) -> int:
        return len(self.items())


class _Attachment:
    """The handlers of one cache on one context (one libssl copy, one id context)."""

    __slots__ = ("__weakref__", "cache", "parts", "instance", "slot", "sid_ctx", "api", "_warned_sid", "_warned_tickets",
                 "_certificate", "_local", "fast")

    def __init__(self, cache: SessionCache, parts: _CacheParts, instance: LibsslInstance, sid_ctx: bytes,
                 fast: Any = None) -> None:
        self.cache = cache
        self.parts = parts  #: what the attachment does through its cache
        self.fast = fast  #: the C fast path's policy (sc_fast *), or None
        self.instance = instance
        self.slot = instance.slot
        self.sid_ctx = sid_ctx
        self.api = instance.api
        self._warned_sid = False
        self._warned_tickets = False
        self._certificate = (None, b"")  # (X509 address, fingerprint), recomputed on change
        self._local: Optional[threading.local] = None  # made at the first new session

    # -- new ---------------------------------------------------------------------

    def on_new(self, hooks, ssl, session) -> None:
        facts, der = self._buffers()
        try:
            self._store_new(hooks, ssl, session, facts, der)
        finally:
            # The DER holds the master secret: wiped after each use, as the C paths wipe
            # theirs, not kept in the thread's buffer until the next session.
            ffi.memmove(der, _ZEROS, _DER_BUFFER)

    def _store_new(self, hooks, ssl, session, facts, der) -> None:
        cache = self.cache
        lib.sc_describe_new(self.slot, ssl, session, ffi.cast("SSL_CTX *", hooks.ctx), facts, der, _DER_BUFFER)
        if not 1 <= facts.id_len <= 32:
            self.parts.count("rejected", new_session=True)
            return
        if facts.stateless:
            self.parts.count("stateless")
            if not self._warned_tickets:
                self._warned_tickets = True
                if self.fast is not None:  # warned once: C may count the rest itself
                    lib.sc_fast_stateless_noted(self.fast)
                logger.warning(
                    "this context sends TLS 1.3 stateless tickets, which carry the "
                    "session to the client and are never looked up in a cache: TLS 1.3 sessions "
                    "will not be shared through the store. Set OP_NO_TICKET on the context "
                    "(ssl.OP_NO_TICKET / OpenSSL.SSL.OP_NO_TICKET) to share them.")
            return
        if facts.bound != 1:
            # Not made under the session id context the ClientHello callback bound its
            # connection to (the configured one, the name, the certificate): the client's
            # server name could not be read (the callback then gives the connection a
            # context no other has: such sessions resume nowhere), or something replaced
            # that callback or set a connection's id context afterwards (then it is not one
            # of the 32-byte digests sesscache sets). Not stored either way.
            if facts.sid_ctx_len != 32 and not self._warned_sid:
                self._warned_sid = True
                logger.error(
                    "sessions on this context do not carry the session id context this cache "
                    "binds each connection to (the session_id_context given to attach(), the "
                    "server name and the certificate), so they are not stored: something "
                    "replaced the context's ClientHello callback or set a connection's session "
                    "id context after attach(). Attach the cache last, after the server library "
                    "has configured the context.")
            return
        now = time.time()
        expires = min(facts.origin + cache.lifetime, facts.made + facts.timeout)
        if expires <= now:
            self.parts.count("expired", new_session=True)
            return
        # (OpenSSL's own copy was capped before it reached the internal cache: see
        # sc_cap_lifetime. Shortening it here would make OpenSSL 4.0 re-sort its cache.)
        if facts.der_len > 0:
            der_bytes = ffi.unpack(ffi.cast("char *", der), facts.der_len)
        else:  # larger than the buffer (a long client certificate chain), or no DER at all
            der_bytes = session_to_der(self.instance, session)
        if len(der_bytes) > cache.max_session_size:
            self.parts.count("oversize")
            self.parts.log(logging.WARNING, "oversize",
                             "a %d-byte session is over max_session_size (%d) and is not "
                             "stored; raise max_session_size if such sessions are expected (large "
                             "client certificate chains)", len(der_bytes), cache.max_session_size)
            return
        key = cache.key_for(self.sid_ctx, ffi.unpack(ffi.cast("char *", facts.id), facts.id_len))
        name = ffi.unpack(facts.name, facts.name_len)
        certificate = self._fingerprint(hooks.ctx, int(ffi.cast("uintptr_t", facts.certificate)))
        blob = self.parts.wrap(key, int(facts.origin), name, certificate, der_bytes)
        started = time.perf_counter()
        try:
            cache.store.set(key, blob, expires - now)
        except Exception as exc:  # StoreError, or a custom store's bug: never a failed handshake
            self.parts.timed("write", time.perf_counter() - started)
            self._store_failed("write", exc)
            return
        self.parts.timed("write", time.perf_counter() - started)
        self.parts.count("stores")

    def _buffers(self):
        """Per-thread scratch space for sc_describe_new (handshakes run in many threads)."""
        local = self._local
        if local is None:
            local = self._local = threading.local()
        try:
            return local.facts, local.der
        except AttributeError:
            local.facts = ffi.new("sc_new_facts *")
            local.der = ffi.new("unsigned char[]", _DER_BUFFER)
            return local.facts, local.der

    # -- get ---------------------------------------------------------------------------

    def on_get(self, hooks, ssl, session_id: bytes):
        cache = self.cache
        if not 1 <= len(session_id) <= 32:
            self.parts.count("rejected")
            return ffi.NULL
        key = cache.key_for(self.sid_ctx, session_id)
        started = time.perf_counter()
        try:
            blob = self.parts.read(key)
        except Exception as exc:
            self.parts.timed("lookup", time.perf_counter() - started)
            self._store_failed("read", exc)
            return ffi.NULL
        self.parts.timed("lookup", time.perf_counter() - started)
        if blob is None:
            blob = self._wait_for_write(key, session_id)
        if blob is None:
            self.parts.count("misses")
            return ffi.NULL
        if not isinstance(blob, (bytes, bytearray, memoryview)):  # a custom store's bug
            self._store_failed("read", TypeError(f"the store returned {type(blob).__name__}, not bytes"))
            return ffi.NULL
        if len(blob) > cache.max_session_size + _MAX_ENVELOPE_OVERHEAD:
            # Not ours to open (or decrypt): we never write anything that large.
            return self._reject("size", SessionError(f"a {len(blob)}-byte blob is larger than any "
                                                     "session this cache stores"))
        try:
            stored = self.parts.unwrap(key, blob)
        except _OtherVersion as exc:  # a rolling deploy: another version's session, a quiet miss
            self.parts.count("misses")
            logger.debug("sesscache: a stored session %s: a miss", exc)
            return ffi.NULL
        except (SealError, SessionError) as exc:
            return self._reject("blob", exc)
        now = time.time()
        if stored.origin + cache.lifetime <= now:
            self.parts.count("expired")
            return ffi.NULL
        if stored.origin > now + _CLOCK_SKEW:
            return self._reject("origin", SessionError("the session claims a full handshake in the future"))
        if stored.certificate != self._certificate_of(hooks.ctx):
            # Another server (another key) shares the store and the id context: resuming
            # would let the client skip ever seeing this server's certificate.
            return self._reject("certificate", SessionError(
                "the session was made by a server with another certificate"))
        made_for = stored.server_name
        reason = ffi.new("int *")
        session = lib.sc_parse_offered(
            self.slot, ssl, ffi.from_buffer(stored.der), len(stored.der), session_id, len(session_id),
            self.sid_ctx, len(self.sid_ctx), made_for if made_for else ffi.NULL,
            len(made_for) if made_for else -1, stored.origin, int(now), reason)
        if session == ffi.NULL:
            if reason[0] == lib.SC_OFFER_EXPIRED:  # as OpenSSL would refuse it after us
                self.parts.count("expired")
                return ffi.NULL
            return self._reject("check", SessionError(_OFFER_REFUSALS.get(reason[0], "refused")))
        self.parts.count("hits")
        return session

    def _wait_for_write(self, key: bytes, session_id: bytes) -> Optional[bytes]:
        """A miss for a session issued moments ago, over a store whose writes land after
        the handshake (``ResilientStore``): its write may still be on the way (the client
        reconnected at once to another server). The store waits for it, up to its
        ``new_session_wait``; any other miss is a miss at once."""
        wait = self.parts.wait_for_write
        if wait is None:
            return None
        issued = issued_at(session_id)
        if issued is None:
            return None
        try:
            return wait(key, issued, self.parts.single_use)
        except Exception:  # a failing store is counted by its own lookups: a plain miss
            return None

    def _fingerprint(self, ctx: int, cert: int) -> bytes:
        """Fingerprint of the session context's certificate (not the SNI-switched one's:
        a lookup happens before the switch), recomputed only when the certificate changes."""
        cached_for, fingerprint = self._certificate
        if cert == cached_for:
            return fingerprint
        pointer = ffi.cast("SSL_CTX *", ctx)
        buffer = ffi.new("unsigned char[]", 16384)
        length = lib.sc_certificate_der(self.slot, pointer, buffer, 16384)
        if length < 0:
            buffer = ffi.new("unsigned char[]", -length)
            length = lib.sc_certificate_der(self.slot, pointer, buffer, -length)
        der = ffi.unpack(ffi.cast("char *", buffer), max(length, 0))
        fingerprint = hashlib.sha256(der).digest()[:16] if der else b"\0" * 16
        self._certificate = (cert, fingerprint)
        return fingerprint

    def _certificate_of(self, ctx: int) -> bytes:
        cert = self.api.SSL_CTX_get0_certificate(ffi.cast("SSL_CTX *", ctx))
        return self._fingerprint(ctx, int(ffi.cast("uintptr_t", cert)))

    # -- remove ---------------------------------------------------------------------------

    def on_remove(self, hooks, session) -> None:
        self.parts.count("removes")

    # -- failures ---------------------------------------------------------------------------

    def _store_failed(self, what: str, exc: BaseException) -> None:
        self.parts.count("errors", new_session=what == "write")
        if isinstance(exc, StorePaused):  # not tried: the pause was logged when it began
            return
        self.parts.log(logging.WARNING, "store-" + what,
                              "session store %s failed (%s: %s); the handshake goes on as "
                              "a full one", what, type(exc).__name__, str(exc))

    def _reject(self, topic: str, exc: BaseException):
        self.parts.count("rejected")
        self.parts.log(logging.WARNING, "reject-" + topic,
                              "refused a stored session: %s", str(exc))
        return ffi.NULL


_OFFER_REFUSALS = {
    lib.SC_OFFER_NOT_DER: "the stored bytes are not a session this OpenSSL can read",
    lib.SC_OFFER_OTHER_ID: "the stored session has another session id than its key",
    lib.SC_OFFER_OTHER_CONTEXT: "the stored session belongs to another session id context",
    lib.SC_OFFER_UNREADABLE_NAME: "the client's server name cannot be read as a host name",
    # Resuming across names skips the certificate and client-verification settings of the
    # name asked for (nginx CVE-2025-23419, httpd CVE-2025-23048).
    lib.SC_OFFER_OTHER_NAME: "the session was made for another server name than the client asks for",
}
#: Scratch space for a new session's DER: nearly all sessions fit.
_DER_BUFFER = 2048
_ZEROS = bytes(_DER_BUFFER)
