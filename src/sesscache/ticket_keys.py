"""Shared, rotating session-ticket keys: stateless resumption across processes and hosts.

OpenSSL encrypts session tickets (TLS 1.2 RFC 5077 tickets, TLS 1.3 stateless tickets)
with a random key of each ``SSL_CTX``, so a ticket only resumes on the context that
issued it. :class:`TicketKeys` gives every context attached to it the same small key
ring, kept in a store that all processes share::

    keys = sesscache.TicketKeys(sesscache.SQLiteStore("/run/myapp/tls.db"))
    keys.attach(ssl_context)          # pyOpenSSL or stdlib; tickets stay on

The ring (one store entry) holds three kinds of key:

* the **current** key, which encrypts every new ticket;
* the **next** key, published one rotation ahead: a process whose refresh lags a
  peer's rotation already decrypts the tickets the peer now issues;
* **previous** keys (``keep`` of them), which still decrypt, and whose tickets are
  renewed (OpenSSL issues a fresh ticket under the current key).

Every ``rotate_every`` seconds next becomes current, current becomes previous, the
oldest previous is dropped (its bytes zeroed) and a new next is made. The store entry is
replaced with a compare-and-set, so N processes that find a rotation due make one new
key between them. A key lives ``(keep + 2.5) * rotate_every`` at most, which must be
within 7 days (RFC 8446); each attached context's session timeout is capped at
``keep * rotate_every``, so a key always outlives the tickets it encrypted.

In the handshake only C memory is touched (``csrc/ticket_keys.c``): the store is
read by a background thread every ``refresh_every`` seconds and when a rotation is due.

Faults:

* store unreachable at start: a local random key (logged); tickets resume on this
  process only until the store answers, then the fleet's ring is adopted (the local key
  still decrypts until it ages out);
* store unreachable later: the ring in memory keeps serving, the thread retries with
  backoff (its timer is re-armed after every error, never left stopped); once the
  current key would encrypt past its safe age, a local key takes over, logged;
* a ring written by a newer format, or one it cannot read (malformed, not bytes):
  refused (logged, counted), never misread or overwritten; a local key serves and the
  next refresh that reads a ring adopts it;
* a ring whose keys have all expired while its next rotation is still ahead (a fleet
  stopped for days): rotated at once (logged); when the store takes no writes, a local
  key serves until a refresh can rotate it. :meth:`TicketKeys.keys` lists no expired key.

Keys at rest are as secret as a private key: pass ``seal_keys`` (AES-GCM, the same
:class:`~sesscache.sealing.Sealer` as sessions) when the store is not private memory.
Key bytes are never logged; key *names* (sent in clear in every ticket) are the ids shown.
"""
from __future__ import annotations

import base64
import json
import logging
import os
import random
import threading
import time
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from ._binding import ffi, lib
from . import _fork
from ._burstlog import BurstLogger
from ._binding.find_context import bind_context
from .errors import ConfigurationError, SealError, SesscacheError, StoreError, UnsupportedContext
from .stores.base import BUSY_PATIENCE, retry_while_busy
from .stores.capabilities import CompareAndSet, supports

logger = logging.getLogger(__name__)

__all__ = ["TicketKeys", "TicketKeyStats", "RingFormatError", "KeyInfo", "RingInfo", "read_ring", "RING_KEY"]

#: Longest life of a key, from creation to the last ticket it may decrypt (RFC 8446 4.6.1).
MAX_KEY_LIFETIME = 7 * 24 * 3600.0
#: The store key of the ring (a ``namespace`` keyword makes separate rings in one store).
RING_KEY = b"sesscache:ticket-keys"
FORMAT_VERSION = 1
_MAGIC = b"SCTK"
_PLAIN, _SEALED = 0, 1
_KEY_BYTES = 80  # name 16, HMAC-SHA256 32, AES-256 32: OpenSSL's layout
_NAME_BYTES = 16
_ROLES = {"current": 1, "previous": 2, "next": 3}
_C_COUNTERS = int(lib.SC_TK_COUNTERS)
# A rotation may run this much (of rotate_every) late before the current key counts as
# too old to keep encrypting (then a local key takes over).
_GRACE = 0.5


class RingFormatError(SesscacheError, ValueError):
    """The store holds a ticket key ring this sesscache cannot read (newer format, not a
    ring, or sealed differently). It is refused, not misread, and never overwritten."""


@dataclass
class TicketKeyStats:
    """What the ticket keys did in this process (all contexts attached to one object)."""

    issued: int = 0  #: tickets encrypted
    #: handshakes resumed from a ticket under a key of the ring, counted once the
    #: handshake has resumed (TLS 1.3: at the ticket that follows; TLS 1.2: when the
    #: connection is freed), never when a ticket was merely decrypted
    resumed: int = 0
    renewed: int = 0  #: ... of which under a previous key (a fresh ticket was issued)
    unknown_key: int = 0  #: tickets under a key not in the ring (another deployment, too old)
    expired_key: int = 0  #: tickets under a key of the ring past its maximum age
    #: tickets under a known key that did not resume (tampered, unusable, or the
    #: connection ended before its handshake finished)
    rejected: int = 0
    no_key: int = 0  #: tickets issued under a throwaway key (none usable): they never resume
    errors: int = 0  #: OpenSSL errors in the callback (random bytes, cipher set-up)
    rotations: int = 0  #: rotations this process made (written to the store)
    refreshes: int = 0  #: successful reads of the ring from the store
    store_errors: int = 0  #: store calls that failed (and were retried)
    local_keys: int = 0  #: local keys made because the store could not be used


@dataclass(frozen=True)
class KeyInfo:
    """One key of a ring, without its secret bytes."""

    key_id: str  #: the key name in hex (sent in clear in every ticket it encrypts)
    role: str  #: "current", "next", "previous" or "local"
    created: float  #: Unix time
    not_after: float  #: Unix time; refused for decryption from then on

    def age(self, now: Optional[float] = None) -> float:
        return (time.time() if now is None else now) - self.created


@dataclass
class _Key:
    material: bytearray  # 80 bytes, zeroed by wipe()
    created: float
    not_after: float
    local: bool = False

    @property
    def name(self) -> bytes:
        return bytes(self.material[:_NAME_BYTES])

    def wipe(self) -> None:
        self.material[:] = bytes(len(self.material))

    @classmethod
    def fresh(cls, now: float, life: float, local: bool = False) -> "_Key":
        material = bytearray(_KEY_BYTES)
        material[:] = os.urandom(_KEY_BYTES)
        return cls(material, now, now + life, local)


@dataclass
class _Ring:
    """The fleet's ring as stored: keys newest first, ``current`` indexing the encrypting one."""

    generation: int
    next_rotation: float
    current: Optional[_Key]
    next: Optional[_Key]
    previous: List[_Key] = field(default_factory=list)
    rotate_every: float = 0.0  # the policy of whoever wrote it (for the command line)
    keep: int = 0

    def keys(self) -> List[Tuple[str, _Key]]:
        out = []
        if self.next is not None:
            out.append(("next", self.next))
        if self.current is not None:
            out.append(("current", self.current))
        out += [("previous", k) for k in self.previous]
        return out

    def wipe(self) -> None:
        for _, key in self.keys():
            key.wipe()


# --- the stored form ---------------------------------------------------------------

def encode_ring(ring: _Ring, sealer: Any, store_key: bytes) -> bytes:
    body = json.dumps({
        "generation": ring.generation,
        "next_rotation": ring.next_rotation,
        "rotate_every": ring.rotate_every,
        "keep": ring.keep,
        "keys": [{"role": role, "created": k.created, "not_after": k.not_after,
                  "material": base64.b64encode(bytes(k.material)).decode("ascii")}
                 for role, k in ring.keys()],
    }, separators=(",", ":")).encode()
    if sealer is None:
        return _MAGIC + bytes([FORMAT_VERSION, _PLAIN]) + body
    return _MAGIC + bytes([FORMAT_VERSION, _SEALED]) + sealer.seal(store_key, body)


def decode_ring(blob: Any, sealer: Any, store_key: bytes) -> _Ring:
    """The ring in ``blob``; RingFormatError for anything this version cannot read.

    The bytes came from a store anyone with store access can write: nothing else ever
    leaves this function (no OverflowError from ``1e999``, no RecursionError from JSON
    nested 100,000 deep, no TypeError from a store value that is not bytes)."""
    try:
        return _decode_ring(blob, sealer, store_key)
    except RingFormatError:
        raise
    except Exception as exc:  # whatever the bytes provoke: a refused ring, never a crash
        raise RingFormatError(f"the ticket key ring in the store is malformed "
                              f"({type(exc).__name__}: {_describe(exc)[:200]})") from None


# Bounds of what a ring may hold: times as Unix seconds up to the year 5138 (C keeps them
# as long long), counts that fit anything that reads them.
_MAX_TIME = 1e11
_MAX_COUNT = 2 ** 53
_MAX_RING_KEYS = 64


def _int(data: Any, name: str, default: Any = None) -> int:
    value = data.get(name, default) if default is not None else data[name]
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_COUNT:
        raise ValueError(f"{name} must be an integer from 0 to 2**53, got {str(value)[:40]}")
    return value


def _seconds(data: Any, name: str, default: Any = None) -> float:
    value = data.get(name, default) if default is not None else data[name]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= _MAX_TIME:
        raise ValueError(f"{name} must be seconds from 0 to 1e11, got {str(value)[:40]}")
    return float(value)


def _decode_ring(blob: Any, sealer: Any, store_key: bytes) -> _Ring:
    if not isinstance(blob, (bytes, bytearray, memoryview)):
        raise RingFormatError(
            f"the store entry {store_key!r} holds a {type(blob).__name__}, not bytes: it is not a "
            "sesscache ticket key ring; give TicketKeys a namespace of its own in this store")
    blob = bytes(blob)
    if len(blob) < 6 or blob[:4] != _MAGIC:
        raise RingFormatError(
            f"the store entry {store_key!r} is not a sesscache ticket key ring; give "
            "TicketKeys a namespace of its own in this store")
    version, sealing = blob[4], blob[5]
    if version != FORMAT_VERSION:
        raise RingFormatError(
            f"the ticket key ring in the store has format version {version}; this sesscache "
            f"reads version {FORMAT_VERSION}. A newer sesscache wrote it: upgrade this process "
            "(the ring is left as it is, not misread and not overwritten)")
    body = blob[6:]
    if sealing == _SEALED:
        if sealer is None:
            raise RingFormatError(
                "the ticket key ring in the store is sealed; pass the same seal_keys to TicketKeys")
        try:
            body = sealer.open(store_key, body)
        except SealError as exc:
            raise RingFormatError(f"the ticket key ring does not open with these seal_keys ({exc})") from exc
    elif sealing == _PLAIN:
        if sealer is not None:
            raise RingFormatError(
                "the ticket key ring in the store is not sealed but seal_keys were given: "
                "refusing keys anyone with store access could have written; clear the entry "
                "(python -m sesscache keys rotate) or drop seal_keys everywhere")
    else:
        raise RingFormatError(f"the ticket key ring has an unknown sealing flag {sealing}")
    ring = None
    try:
        data = json.loads(body)
        if not isinstance(data, dict):
            raise ValueError(f"a JSON {type(data).__name__}, not an object")
        ring = _Ring(_int(data, "generation"), _seconds(data, "next_rotation"), None, None,
                     rotate_every=_seconds(data, "rotate_every", 0), keep=_int(data, "keep", 0))
        entries = data["keys"]
        if not isinstance(entries, list) or len(entries) > _MAX_RING_KEYS:
            raise ValueError(f"keys must be a list of at most {_MAX_RING_KEYS} keys")
        for entry in entries:
            if not isinstance(entry, dict) or not isinstance(entry.get("material"), str):
                raise ValueError("a key that is not an object with a base64 material")
            material = bytearray(base64.b64decode(entry["material"], validate=True))
            if len(material) != _KEY_BYTES:
                raise ValueError(f"a key of {len(material)} bytes")
            key = _Key(material, _seconds(entry, "created"), _seconds(entry, "not_after"))
            role = entry.get("role")
            if role == "current":
                ring.current = key
            elif role == "next":
                ring.next = key
            elif role == "previous":
                ring.previous.append(key)
            else:
                key.wipe()
                raise ValueError(f"unknown role {str(role)[:40]!r}")
    except Exception as exc:
        if ring is not None:
            ring.wipe()
        raise RingFormatError(f"the ticket key ring in the store is malformed "
                              f"({type(exc).__name__}: {_describe(exc)[:200]})") from None
    return ring


@dataclass(frozen=True)
class RingInfo:
    """A stored ring, without key bytes (for ``python -m sesscache keys show``)."""

    generation: int  #: rotations since the ring was made (0: no ring in the store)
    next_rotation: float  #: Unix time
    rotate_every: float
    keep: int
    keys: Tuple[KeyInfo, ...]


def read_ring(store: Any, *, namespace: bytes = RING_KEY,
              seal_keys: Optional[Sequence[bytes]] = None) -> RingInfo:
    """The ring in ``store`` without its key bytes. StoreError, RingFormatError as they come."""
    blob = _store_call(store.get, namespace)
    if blob is None:
        return RingInfo(0, 0.0, 0.0, 0, ())
    ring = decode_ring(blob, _sealer(seal_keys), namespace)
    try:
        return RingInfo(ring.generation, ring.next_rotation, ring.rotate_every, ring.keep, tuple(
            KeyInfo(k.name.hex(), role, k.created, k.not_after) for role, k in ring.keys()))
    finally:
        ring.wipe()


def _sealer(seal_keys: Optional[Sequence[bytes]]) -> Any:
    if seal_keys is None:
        return None
    from .sealing import Sealer

    return Sealer(seal_keys)


# --- the object users hold -----------------------------------------------------------

class TicketKeys:
    """A ticket key ring shared through ``store``, served to every attached context.

    :param store: any store with ``compare_and_set``
        (:class:`~sesscache.stores.base.CompareAndSetStore`: memory, SQLite, Redis,
        memcached, or your own ``BaseStore`` subclass); it makes the fleet rotate once.
    :param rotate_every: seconds between rotations (default 12 hours).
    :param keep: previous keys kept for decryption (default 3). Tickets live at most
        ``keep * rotate_every`` (attached contexts' session timeouts are capped to that).
    :param refresh_every: seconds between reads of the ring (default 60); a rotation
        due is also noticed at its time.
    :param seal_keys: AES keys to seal the ring at rest (see :mod:`sesscache.sealing`);
        every process must use the same.
    :param namespace: the store key of the ring; separate deployments sharing one store
        must use separate namespaces (their tickets then do not resume on each other).
    :param background: run the refresh thread (default). False: call :meth:`refresh`
        and :meth:`maybe_rotate` yourself.
    :param clock: wall-clock seconds (``time.time``); injectable for tests. The C side
        checks key expiry against the real clock.

    Construction reads (or creates) the ring at once; a store that does not answer
    then leaves a local key in place (logged).
    """

    def __init__(self, store: Any, *, rotate_every: float = 12 * 3600.0, keep: int = 3,
                 refresh_every: float = 60.0, seal_keys: Optional[Sequence[bytes]] = None,
                 namespace: bytes = RING_KEY, background: bool = True,
                 clock: Callable[[], float] = time.time, log_interval: float = 10.0) -> None:
        if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
            raise ConfigurationError(f"keep must be an int >= 1 (previous keys kept), got {keep!r}")
        if not isinstance(rotate_every, (int, float)) or not rotate_every >= 1:
            raise ConfigurationError(f"rotate_every must be >= 1 second, got {rotate_every!r}")
        if (keep + 2 + _GRACE) * rotate_every > MAX_KEY_LIFETIME:
            longest = MAX_KEY_LIFETIME / (keep + 2 + _GRACE)
            raise ConfigurationError(
                f"with keep={keep}, rotate_every={rotate_every:.0f}s lets a key live "
                f"{(keep + 2 + _GRACE) * rotate_every / 86400:.1f} days (next, current, {keep} "
                f"previous, and a grace); TLS 1.3 allows 7: use rotate_every <= {longest:.0f}s "
                "or a smaller keep")
        if not isinstance(refresh_every, (int, float)) or not refresh_every > 0:
            raise ConfigurationError(f"refresh_every must be > 0 seconds, got {refresh_every!r}")
        if not isinstance(namespace, bytes) or not namespace:
            raise ConfigurationError(f"namespace must be non-empty bytes, got {namespace!r}")
        if not supports(store, CompareAndSet):
            raise ConfigurationError(
                f"{type(store).__name__} has no compare_and_set(key, expected, value, ttl), which "
                "TicketKeys needs to rotate the fleet's keys once; subclass "
                "sesscache.stores.BaseStore (a non-atomic default) or implement it atomically")
        self.store = store
        self.rotate_every = float(rotate_every)
        self.keep = keep
        self.refresh_every = float(refresh_every)
        self.namespace = namespace
        self._sealer = _sealer(seal_keys)
        self._clock = clock
        self._burst = BurstLogger(logger, log_interval)
        self._lock = threading.RLock()
        self._stats = TicketKeyStats()
        ring = lib.sc_tk_ring_new()
        if ring == ffi.NULL:
            raise MemoryError("sesscache: cannot allocate a ticket key ring")
        self._c_ring = ffi.gc(ring, lib.sc_tk_ring_release)
        self._ring: Optional[_Ring] = None  # the fleet's, as last read
        self._local: List[_Key] = []  # keys made here when the store could not be used
        self._blob: Optional[bytes] = None  # the stored entry the ring came from
        self._attached: Dict[Tuple[int, int], Any] = {}
        self._closed = False
        self._wake = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._background = background
        self._failures = 0
        self._refresh(first=True)
        _fork.renew_in_child(self._after_fork_in_child)
        if background:
            self._start_thread()

    # --- lifetimes -------------------------------------------------------------------

    @property
    def key_lifetime(self) -> float:
        """Seconds from a key's creation to its last possible decryption."""
        return (self.keep + 2 + _GRACE) * self.rotate_every

    @property
    def ticket_lifetime(self) -> float:
        """Longest ticket lifetime the ring serves (attached contexts are capped to it)."""
        return self.keep * self.rotate_every

    # --- attaching -------------------------------------------------------------------

    def attach(self, context: Any) -> None:
        """Encrypt and decrypt ``context``'s session tickets with this ring.

        ``context`` is a server-side ``OpenSSL.SSL.Context`` or ``ssl.SSLContext``; its
        tickets stay on (leave ``OP_NO_TICKET`` off). Its session timeout is lowered to
        :attr:`ticket_lifetime` when longer. A :class:`~sesscache.SessionCache` may be
        attached to the same context (it then serves clients that send no ticket).
        """
        if self._closed:
            raise ConfigurationError("this TicketKeys is closed; make a new one")
        bound = bind_context(context)
        slot, api = bound.instance.slot, bound.instance.api
        done = lib.sc_tk_attach(slot, bound.pointer, self._c_ring)
        if done == 0:
            raise UnsupportedContext(
                f"{bound.instance.describe()} lacks the functions for a ticket key callback "
                "(SSL_CTX_set_tlsext_ticket_key_evp_cb and EVP_MAC on 3.0+, or HMAC_Init_ex on "
                "1.1.1); use OpenSSL 1.1.1 or newer built with them")
        if done == -2:
            raise ConfigurationError(
                "this context is already served by another TicketKeys; a context keeps one ring "
                "for its life: make a new context, or attach that TicketKeys instead")
        if done < 0:
            raise SesscacheError(f"OpenSSL refused the ticket key callback on {bound.instance.describe()}")
        if api.SSL_CTX_get_options(bound.pointer) & lib.SSL_OP_NO_TICKET:
            logger.warning("sesscache: TicketKeys attached to a context with OP_NO_TICKET set: "
                           "it issues no TLS 1.2 tickets and only stateful TLS 1.3 ones, so the "
                           "shared keys are unused; clear OP_NO_TICKET to use them")
        timeout = int(api.SSL_CTX_get_timeout(bound.pointer))
        if timeout > self.ticket_lifetime:
            api.SSL_CTX_set_timeout(bound.pointer, int(self.ticket_lifetime))
            logger.info("sesscache: session timeout of an attached context lowered from %ds to "
                        "%ds so that no ticket outlives its key", timeout, int(self.ticket_lifetime))
        with self._lock:
            self._attached[(slot, bound.ctx)] = weakref.ref(context) if _weakrefable(context) else None

    def detach(self, context: Any) -> None:
        """Give ``context`` back OpenSSL's own per-context ticket key."""
        bound = bind_context(context)
        lib.sc_tk_detach(bound.instance.slot, bound.pointer)
        with self._lock:
            self._attached.pop((bound.instance.slot, bound.ctx), None)

    # --- the ring ------------------------------------------------------------------------

    def rotate(self) -> None:
        """Rotate the fleet's ring now: next becomes current, a new next is made. The
        others pick it up at their next refresh (their tickets keep resuming meanwhile:
        they already hold the new current key as their next). StoreError when the store
        cannot be written."""
        self._rotate(force=True)

    def maybe_rotate(self) -> bool:
        """Rotate if the ring's rotation time has passed (what the background thread
        does); True when this call rotated. Of many processes calling it at once, one
        rotates and the others adopt its ring."""
        return self._rotate(force=False)

    def refresh(self) -> None:
        """Read the ring from the store now (and rotate it if due). Store trouble is
        logged and counted, never raised: the ring in memory keeps serving."""
        self._refresh(first=False)

    def _refresh(self, first: bool) -> None:
        # At start, a busy store (a SQLite file the other workers are opening at the same
        # moment) is waited out, briefly: otherwise each worker made a local key, and no
        # ticket resumed across them until the next refresh.
        try:
            retry_while_busy(lambda: self._rotate(force=False), patience=BUSY_PATIENCE if first else 0.0)
        except Exception as exc:
            self._refresh_failed(first, exc)
            return
        self._failures = 0

    def _refresh_failed(self, first: bool, exc: BaseException) -> None:
        """Store trouble of any kind, a ring it cannot read: keep serving."""
        self._failures += 1
        with self._lock:
            self._stats.store_errors += 1
        known = isinstance(exc, (StoreError, RingFormatError))
        self._burst.log(logging.ERROR if first or not isinstance(exc, StoreError) else logging.WARNING,
                        "refresh", "sesscache: ticket keys: %s",
                        _describe(exc) if known else f"{type(exc).__name__}: {_describe(exc)}")
        self._ensure_usable_key(first=first, unreadable=isinstance(exc, RingFormatError))

    def _rotate(self, force: bool) -> bool:
        with self._lock:
            for _ in range(8):  # a lost compare-and-set: read again and decide again
                blob = _store_call(self.store.get, self.namespace)
                ring = decode_ring(blob, self._sealer, self.namespace) if blob is not None else None
                now = self._clock()
                if ring is not None and not force and now < ring.next_rotation:
                    if ring.current is not None and now < ring.current.not_after:
                        self._adopt(ring, blob)
                        return False
                    # Not due by its time, yet nothing in it may encrypt (its keys expired:
                    # a fleet stopped for days, a ring written with a wrong time): rotated
                    # now, the whole fleet resumes again; if the write fails, a local key.
                    self._burst.log(logging.WARNING, "dead-ring",
                                    "sesscache: ticket keys: the ring in the store (generation %d) has "
                                    "no current key that is still valid, and its next rotation is %.0f s "
                                    "away; rotating it now", ring.generation, ring.next_rotation - now)
                new = self._rotated(ring, now)
                new_blob = encode_ring(new, self._sealer, self.namespace)
                if _store_call(self.store.compare_and_set, self.namespace, blob, new_blob, self._ring_ttl()):
                    if ring is not None:
                        ring.wipe()
                    self._stats.rotations += 1
                    logger.info("sesscache: ticket keys rotated (generation %d, current key %s)",
                                new.generation, new.current.name.hex() if new.current else "-")
                    self._adopt(new, new_blob)
                    return True
                new.wipe()
                if ring is not None:
                    ring.wipe()
                force = False  # someone else rotated meanwhile: that is the fleet's rotation
            raise StoreError("the ticket key ring kept changing under 8 compare-and-set attempts")

    def _rotated(self, ring: Optional[_Ring], now: float) -> _Ring:
        life = self.key_lifetime
        policy = {"rotate_every": self.rotate_every, "keep": self.keep}
        if ring is None:
            return _Ring(1, now + self.rotate_every, _Key.fresh(now, life), _Key.fresh(now, life), **policy)
        current = ring.next if ring.next is not None and now < ring.next.not_after else _Key.fresh(now, life)
        previous = ([ring.current] if ring.current is not None else []) + ring.previous
        kept = [_copy(k) for k in previous if now < k.not_after][:self.keep]
        return _Ring(ring.generation + 1, now + self.rotate_every, _copy(current), _Key.fresh(now, life),
                     kept, **policy)

    def _adopt(self, ring: _Ring, blob: bytes) -> None:
        """Serve ``ring`` (already under self._lock)."""
        self._stats.refreshes += 1
        if blob == self._blob and self._ring is not None:
            ring.wipe()
            self._load()  # drops keys that aged out
            return
        if self._local:
            logger.warning("sesscache: ticket keys: the store answers again; the fleet's ring is "
                           "back in use (the local key still decrypts until it ages out)")
        old, self._ring, self._blob = self._ring, ring, blob
        self._load()
        if old is not None:
            old.wipe()

    def _ensure_usable_key(self, first: bool, unreadable: bool = False) -> None:
        """The store could not be used: keep serving, and make a local key when there is
        no key fit to encrypt (none at all, or the current one past its safe age)."""
        with self._lock:
            now = self._clock()
            usable = [k for _, k in self._serving() if _fit_to_encrypt(k, now, self)]
            if usable:
                self._load()
                return
            key = _Key.fresh(now, (self.keep + 1 + _GRACE) * self.rotate_every, local=True)
            self._local.insert(0, key)
            self._stats.local_keys += 1
            if unreadable:
                logger.error("sesscache: ticket keys: the ring in the store cannot be used; using "
                             "a local random key (tickets resume on this process only until the "
                             "store holds a ring this process reads: the next refresh adopts it)")
            elif first:
                logger.error("sesscache: ticket keys: the store is unreachable at start; using a "
                             "local random key (tickets resume on this process only until the "
                             "store answers)")
            else:
                logger.error("sesscache: ticket keys: the store has been unreachable past the "
                             "current key's maximum age; using a local random key (tickets resume "
                             "on this process only until the store answers)")
            self._load()

    def _serving(self) -> List[Tuple[str, _Key]]:
        """What the C ring holds: the encrypting key first."""
        keys = list(self._ring.keys()) if self._ring is not None else []
        local = [("local", k) for k in self._local]
        now = self._clock()
        fleet_current = next((k for role, k in keys if role == "current"), None)
        if self._local and (fleet_current is None or not _fit_to_encrypt(fleet_current, now, self)):
            # The local key encrypts; the fleet's keys still decrypt.
            keys = [("previous" if role == "current" else role, k) for role, k in keys]
            return local[:1] + keys + local[1:]
        return keys + [("local-old", k) for k in self._local]

    def _load(self) -> None:
        """Copy the serving keys into the C ring; drop (and zero) keys past their age."""
        now = self._clock()
        for key in [k for k in self._local if now >= k.not_after]:
            key.wipe()
            self._local.remove(key)
        serving = [(role, k) for role, k in self._serving() if now < k.not_after]
        serving = serving[:int(lib.SC_TK_MAX_KEYS)]
        material = bytearray(_KEY_BYTES * len(serving))
        roles = ffi.new("int[]", max(1, len(serving)))
        not_after = ffi.new("long long[]", max(1, len(serving)))
        for i, (role, key) in enumerate(serving):
            material[i * _KEY_BYTES:(i + 1) * _KEY_BYTES] = key.material
            roles[i] = {"local": 1, "local-old": 2}.get(role, _ROLES.get(role, 2))
            not_after[i] = int(key.not_after)
        try:
            buf = ffi.from_buffer(material) if serving else ffi.NULL
            if not lib.sc_tk_ring_load(self._c_ring, buf, roles, not_after, len(serving)):
                raise SesscacheError("sesscache: the C ticket key ring refused the keys")
        finally:
            material[:] = bytes(len(material))

    def _ring_ttl(self) -> float:
        return self.key_lifetime + self.rotate_every

    # --- what it holds and did ---------------------------------------------------------

    @property
    def generation(self) -> int:
        """The generation of the fleet's ring as last read from the store (0: none read yet,
        or a ring this process cannot use); it goes up by one at every rotation."""
        with self._lock:
            return self._ring.generation if self._ring is not None else 0

    def keys(self) -> List[KeyInfo]:
        """The keys served now, encrypting one first (no key bytes)."""
        with self._lock:
            now = self._clock()
            return [KeyInfo(k.name.hex(), "local" if role.startswith("local") else role,
                            k.created, k.not_after) for role, k in self._serving() if now < k.not_after]

    @property
    def stats(self) -> TicketKeyStats:
        counts = ffi.new("long long[]", _C_COUNTERS)
        lib.sc_tk_counters(self._c_ring, counts, _C_COUNTERS)
        c = {name: int(counts[getattr(lib, "SC_TK_" + name.upper())]) for name in (
            "issued", "accepted_current", "accepted_old", "rejected_current", "rejected_old",
            "unknown", "expired", "no_key", "errors")}
        with self._lock:
            py = self._stats
            return TicketKeyStats(
                issued=c["issued"],
                resumed=c["accepted_current"] + c["accepted_old"],
                renewed=c["accepted_old"],
                unknown_key=c["unknown"], expired_key=c["expired"],
                rejected=c["rejected_current"] + c["rejected_old"],
                no_key=c["no_key"], errors=c["errors"], rotations=py.rotations,
                refreshes=py.refreshes, store_errors=py.store_errors, local_keys=py.local_keys)

    # --- the background thread -----------------------------------------------------------

    def _start_thread(self) -> None:
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sesscache-ticket-keys", daemon=True)
        self._thread.start()

    def _delay(self) -> float:
        """Seconds until the thread should look at the store again."""
        if self._failures:
            return min(self.refresh_every, 2.0 ** min(self._failures, 6)) * random.uniform(0.5, 1.0)
        delay = self.refresh_every
        ring = self._ring
        if ring is not None:
            # At the rotation time, plus a little spread so a fleet does not stampede.
            until = ring.next_rotation - self._clock() + random.uniform(0, min(5.0, self.rotate_every / 100))
            delay = min(delay, max(until, 0.05))
        return delay

    def _run(self) -> None:
        while not self._closed:
            self._wake.wait(self._delay())
            self._wake.clear()
            if self._closed:
                return
            try:
                self.refresh()
            except Exception:  # never let the thread die: the next round retries
                with self._lock:
                    self._stats.store_errors += 1
                self._failures += 1
                logger.exception("sesscache: ticket keys: unexpected error in the refresh thread")

    def close(self) -> None:
        """Stop the thread and detach from every context; the keys are zeroed when the
        last attached context is freed. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._wake.set()
        with self._lock:
            attached = list(self._attached.values())
            self._attached.clear()
            if self._ring is not None:
                self._ring.wipe()
            for key in self._local:
                key.wipe()
            self._local = []
            self._ring = None
        for ref in attached:
            context = ref() if ref is not None else None
            if context is not None:
                try:
                    self.detach(context)
                except (SesscacheError, TypeError):
                    pass
        lib.sc_tk_ring_load(self._c_ring, ffi.NULL, ffi.NULL, ffi.NULL, 0)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def __enter__(self) -> "TicketKeys":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        keys = self.keys()
        return (f"<TicketKeys {len(keys)} keys, rotate_every={self.rotate_every:.0f}s, "
                f"keep={self.keep}, store={self.store!r}>")

    def _after_fork_in_child(self) -> None:
        # Threads do not survive fork (gunicorn/uvicorn workers): start this process's own.
        self._lock = threading.RLock()
        if self._background and not self._closed:
            self._start_thread()


def _fit_to_encrypt(key: _Key, now: float, owner: TicketKeys) -> bool:
    """A key may encrypt while it will still decrypt for a whole ticket lifetime after."""
    return now < key.not_after - owner.ticket_lifetime


def _copy(key: _Key) -> _Key:
    return _Key(bytearray(key.material), key.created, key.not_after, key.local)


def _weakrefable(obj: Any) -> bool:
    try:
        weakref.ref(obj)
        return True
    except TypeError:
        return False


def _store_call(method: Callable[..., Any], *args: Any) -> Any:
    """A store call whose failures of any kind (a custom store's RuntimeError) are StoreError."""
    try:
        return method(*args)
    except StoreError:
        raise
    except Exception as exc:
        raise StoreError(f"{getattr(method, '__qualname__', 'the store')} raised "
                         f"{type(exc).__name__}: {_describe(exc)}") from exc


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


