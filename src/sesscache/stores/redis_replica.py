"""A process-local copy of the sessions a fleet writes to Redis, fed by Redis pub/sub.

Why: a lookup in Redis is a round trip to another process. On an idle machine that is ~20 us
from Python; under load each wake-up of redis-server costs a scheduling delay, and inside
handshakes (which keep the CPU busy) lookups measured up to 1.5 ms. With ``RedisStore(url,
local_replica=N)`` every store publishes each session it writes (in the same round trip as
the ``SET``) on a channel of its prefix, and every process subscribes: a background thread
copies each published session into a bounded in-memory table, and ``get`` answers from it
before asking Redis (``SessionCache``'s C fast path reads it too, keyed by the cache's own
keys). A store's own writes go into its process's copy at once (its messages carry the
writer's id and are skipped when they come back), and the background writer publishes what
it writes in one go as one message. A miss there (a session published before this process
subscribed, one evicted from the table, a message lost while reconnecting) is an ordinary
lookup in Redis.

What it costs and where it is wrong:

* every process receives every session the fleet writes (a few hundred bytes each) and holds
  up to ``N`` of them;
* the copy is only read by lookups (``get``, the C fast path). ``pop`` (``single_use``)
  always goes to Redis, where it is atomic, and a delete is published so the copies drop the
  session too. A copy may still hold a session for the moment a delete takes to arrive (when
  the subscription breaks, or the process forks, the whole copy is dropped, so a delete
  missed then leaves nothing stale): do not use a replica where
  a session must stop resuming the very moment it is deleted (``single_use`` is safe: it
  never reads the copy);
* Redis Cluster is not supported (pub/sub there is broadcast to every node).
"""
from __future__ import annotations

import logging
import os
import struct
import threading
import time
import weakref
from typing import Any, Callable, Optional

from .. import _fork
from .memory import MemoryStore

log = logging.getLogger(__name__)

# One message: b"B" + the writer's id (8 bytes) + entries, each b"S" + expiry (wall-clock
# ms since the epoch) + key length + value length + key + value, or b"D" + key length +
# key. (sesscache 0.1's single-entry messages, b"S" + expiry + key length + key + value and
# b"D" + key, are still read, for a fleet upgraded one host at a time.)
_BATCH = b"B"
_WRITER_ID_BYTES = 8
_SET_ENTRY = struct.Struct(">cQHI")
_DELETE_ENTRY = struct.Struct(">cH")
_OLD_SET = struct.Struct(">cQH")
_DELETE = b"D"


def no_permission(exc: BaseException) -> bool:
    """An ACL refusal (redis-py strips the NOPERM code from the message)."""
    return type(exc).__name__ == "NoPermissionError" or "NOPERM" in str(exc)


def set_entry(key: bytes, value: bytes, ttl_ms: int) -> bytes:
    return _SET_ENTRY.pack(b"S", int(time.time() * 1000) + ttl_ms, len(key), len(value)) + key + value


def delete_entry(key: bytes) -> bytes:
    return _DELETE_ENTRY.pack(_DELETE, len(key)) + key


def batch_message(writer_id: bytes, entries: "list[bytes]") -> bytes:
    return b"".join([_BATCH, writer_id, *entries])


class LocalReplica:
    """The table and the subscriber thread of one ``RedisStore`` in one process."""

    def __init__(self, client: Any, channel: bytes, max_sessions: int, retry_after: float = 1.0,
                 prefix: bytes = b"", refused: Optional[Callable[[str, BaseException], None]] = None) -> None:
        self.client = client
        # Called (held weakly) when the server refuses SUBSCRIBE (an ACL without channel
        # rights): the store turns its copy off, with one message. None: logged here, and
        # the subscriber keeps asking.
        self.refused = None if refused is None else _fork.WeakMethod(refused)
        self.channel = channel
        # The table is keyed by the store's keys without the Redis prefix (the cache's own
        # keys), so that SessionCache's C fast path can read it as it reads a MemoryStore.
        self.prefix = prefix
        self.table = MemoryStore(max_sessions=max_sessions)
        self.max_sessions = max_sessions
        self.retry_after = retry_after
        self.received = 0  #: messages read (own ones too)
        self.last_message = 0.0  #: when the last message arrived (Unix time; sesscache.metrics)
        self.malformed = 0  #: messages or entries that could not be read, skipped
        self.closed = False  #: closed for good (the subscriber thread stops)
        self.told_noperm = False  #: the missing SUBSCRIBE right was logged
        # Held while the table is written (put, apply, close): a copy closed (and emptied)
        # stays empty, though the subscriber may be inside a message at that moment.
        self._writing = threading.Lock()
        self._starting = threading.Lock()
        self.pid = -1  #: the process whose subscriber serves this copy
        self.writer_id = b""
        _fork.renew_in_child(self._empty_after_fork)
        self._start()

    def _empty_after_fork(self) -> None:
        """In a forked child: the parent's subscriber thread is not here, so deletes would
        stop arriving while the cache's C fast path went on reading the inherited copy.
        Emptied now, with a writer id of the child's own (the parent would skip the child's
        messages as its own); the child's subscriber starts at its first use of the copy
        from Python (a lookup the copy misses, a write, a delete)."""
        self._starting = threading.Lock()  # a parent's thread may have held it at the fork
        self._renew_identity()

    def _start(self) -> None:
        with self._starting:  # two threads of a fresh child must not start two subscribers
            if self.pid == os.getpid():
                return
            self.pid = os.getpid()
            self._renew_identity()
            self._arrived = threading.Condition(threading.Lock())
            self._waiters = 0
            self.ready = threading.Event()  #: set while the subscription is up
            self._thread = threading.Thread(target=_subscribe_loop, args=(weakref.ref(self),),
                                            name="sesscache-replica", daemon=True)
            self._thread.start()

    def _renew_identity(self) -> None:
        """This process's writer id (a fork gets its own: the parent skips only its own
        messages) and an empty copy (emptied, not replaced: a C fast path made before a fork
        reads this very table)."""
        self.writer_id = os.urandom(_WRITER_ID_BYTES)
        self._writing = threading.Lock()  # the parent's may have been held at the fork
        with self._writing:
            if not self.closed:
                self.table.clear()

    def _here(self) -> None:
        if self.pid != os.getpid() and not self.closed:  # forked: this process needs its own subscriber
            self._start()

    def wait_subscribed(self, timeout: float) -> bool:
        """For tests and benchmarks: True once the subscriber listens."""
        self._here()
        return self.ready.wait(timeout)

    def get(self, key: bytes) -> Optional[bytes]:
        if self.closed:  # (a caller that read the store's copy just before it was turned off)
            return None
        self._here()
        return self.table.get(key)

    def put(self, key: bytes, value: bytes, ttl: float) -> None:
        """This process's own write: in the copy now (the message coming back is skipped)."""
        self._here()
        with self._writing:
            if not self.closed:
                self.table.set(key, value, ttl)

    def forget(self, key: bytes) -> None:
        if self.closed:
            return
        self._here()
        self.table.delete(key)

    def wait_for(self, key: bytes, timeout: float) -> Optional[bool]:
        """Wait up to ``timeout`` seconds for ``key`` to arrive in the copy; True if it is
        there, False if not. None at once while the subscription is down (nothing would
        arrive: wait some other way)."""
        self._here()
        if not self.ready.is_set() or self.closed:
            return None
        with self._arrived:
            self._waiters += 1
            try:
                return self._arrived.wait_for(lambda: self.table.get(key) is not None, timeout)
            finally:
                self._waiters -= 1

    def apply(self, message: bytes) -> None:
        """One message from the channel. A message that cannot be read is skipped and
        counted (``malformed``); it never costs the rest of the copy."""
        self.received += 1
        self.last_message = time.time()
        with self._writing:
            if self.closed:
                return
            try:
                self._apply(message)
            except Exception:  # a value MemoryStore refuses, a ttl out of range, ...
                self.malformed += 1
        if self._waiters:
            with self._arrived:
                self._arrived.notify_all()

    def _apply(self, message: bytes) -> None:
        kind = message[:1]
        if kind == _BATCH:
            # This process's own sets are in the copy already; its own deletes are applied
            # again, in the channel's order, after any set another process made before them.
            own = message[1:1 + _WRITER_ID_BYTES] == self.writer_id
            self._apply_entries(message, 1 + _WRITER_ID_BYTES, deletes_only=own)
        elif kind == b"S" and len(message) >= _OLD_SET.size:
            _, expires_ms, key_length = _OLD_SET.unpack_from(message)
            start = _OLD_SET.size
            key = message[start:start + key_length]
            ttl = expires_ms / 1000.0 - time.time()
            if ttl > 0 and len(key) == key_length and key.startswith(self.prefix):
                self.table.set(key[len(self.prefix):], message[start + key_length:], ttl)
        elif kind == _DELETE:
            key = message[1:]
            if key.startswith(self.prefix):
                self.table.delete(key[len(self.prefix):])
        else:
            self.malformed += 1

    def _apply_entries(self, message: bytes, at: int, deletes_only: bool) -> None:
        now = time.time()
        end = len(message)
        while at < end:
            if message[at:at + 1] == b"S" and at + _SET_ENTRY.size <= end:
                _, expires_ms, key_length, value_length = _SET_ENTRY.unpack_from(message, at)
                at += _SET_ENTRY.size
                if at + key_length + value_length > end:
                    break  # cut short: not ours to guess
                key = message[at:at + key_length]
                value = message[at + key_length:at + key_length + value_length]
                at += key_length + value_length
                ttl = expires_ms / 1000.0 - now
                if not deletes_only and ttl > 0 and key.startswith(self.prefix):
                    self.table.set(key[len(self.prefix):], value, ttl)
            elif message[at:at + 1] == _DELETE and at + _DELETE_ENTRY.size <= end:
                _, key_length = _DELETE_ENTRY.unpack_from(message, at)
                at += _DELETE_ENTRY.size
                if at + key_length > end:
                    break
                key = message[at:at + key_length]
                if key.startswith(self.prefix):
                    self.table.delete(key[len(self.prefix):])
                at += key_length
            else:
                break
        if at != end:
            self.malformed += 1

    def close(self) -> None:
        """For good: the table is closed, emptied (wiped) and stays empty. Closed, not only
        cleared: the cache's C fast path steps aside from a closed store (every event goes
        to Python, which asks Redis); a table merely cleared went on taking this process's
        new sessions from C and answering lookups from them, with no deletes arriving any
        more, and kept them (decoded too) for as long as anything held the copy."""
        with self._writing:
            self.closed = True
            self.table.close()


def _subscribe_loop(replica_ref: "weakref.ref[LocalReplica]") -> None:
    replica = replica_ref()
    if replica is None:
        return
    client, channel, retry_after = replica.client, replica.channel, replica.retry_after
    del replica
    while True:
        pubsub = None
        try:
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            pubsub.subscribe(channel)
            while True:
                replica = replica_ref()
                if replica is None or replica.closed or replica.pid != os.getpid():
                    return
                replica.ready.set()
                del replica
                message = pubsub.get_message(timeout=1.0)
                if message is not None and message.get("type") == "message":
                    replica = replica_ref()
                    if replica is None:
                        return
                    replica.apply(message["data"])
                    del replica
        except Exception as exc:  # Redis down or restarted: lookups go to Redis meanwhile
            replica = replica_ref()
            if replica is None or replica.closed:
                return
            refused = replica.refused() if no_permission(exc) and replica.refused is not None else None
            if refused is not None:
                del replica
                refused("SUBSCRIBE", exc)  # the store turns its copy off: this thread ends
                return
            if no_permission(exc) and not replica.told_noperm:
                replica.told_noperm = True
                log.error("sesscache: Redis refuses SUBSCRIBE on %r (%s): this process's copy of the "
                          "sessions stays empty and lookups go to Redis. Grant the user '+subscribe "
                          "&%s', or turn local_replica off", channel, exc, channel.decode("latin-1"))
            else:
                log.debug("sesscache: the session replica's subscription failed (%s); retrying", exc)
            replica.ready.clear()
            replica.table.clear()  # deletes may be lost meanwhile
            del replica
            time.sleep(retry_after)
        finally:
            if pubsub is not None:
                try:
                    pubsub.close()
                except Exception:
                    pass
