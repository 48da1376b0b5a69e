"""A process-local copy of the sessions a fleet writes to Redis, fed by Redis pub/sub.

Why: a lookup in Redis is a round trip to another process. On an idle machine that is ~20 us
from Python; under load each wake-up of redis-server costs a scheduling delay, and inside
handshakes (which keep the CPU busy) lookups measured up to 1.5 ms. With ``RedisStore(url,
local_replica=N)`` every store publishes each session it writes (in the same round trip as
the ``SET``) on a channel of its prefix, and every process subscribes: a background thread
copies each published session into a bounded in-memory table, and ``get`` answers from it
before asking Redis. A miss there (a session published before this process subscribed, one
evicted from the table, a message lost while reconnecting) is an ordinary lookup in Redis.

What it costs and where it is wrong:

* every process receives every session the fleet writes (a few hundred bytes each) and holds
  up to ``N`` of them;
* the copy is only read by ``get``. ``pop`` (``single_use``) always goes to Redis, where it is
  atomic, and a delete is published so the copies drop the session too. A copy may still hold
  a session for the moment a delete takes to arrive (when the subscription breaks, the whole
  copy is dropped, so a delete missed then leaves nothing stale): do not use a replica where
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
from typing import Any, Optional

from .memory import MemoryStore

log = logging.getLogger(__name__)

# b"S" + expiry (wall-clock ms since the epoch) + key length + key + value; b"D" + key.
_SET = struct.Struct(">cQH")
_DELETE = b"D"


def set_message(key: bytes, value: bytes, ttl_ms: int) -> bytes:
    return _SET.pack(b"S", int(time.time() * 1000) + ttl_ms, len(key)) + key + value


def delete_message(key: bytes) -> bytes:
    return _DELETE + key


class LocalReplica:
    """The table and the subscriber thread of one ``RedisStore`` in one process."""

    def __init__(self, client: Any, channel: bytes, max_sessions: int, retry_after: float = 1.0) -> None:
        self.client = client
        self.channel = channel
        self.max_sessions = max_sessions
        self.retry_after = retry_after
        self.received = 0  #: messages applied (sessions and deletes)
        self._closed = False
        self._start()

    def _start(self) -> None:
        self._pid = os.getpid()
        self.table = MemoryStore(max_sessions=self.max_sessions)
        self._thread = threading.Thread(target=_subscribe_loop, args=(weakref.ref(self),),
                                        name="sesscache-replica", daemon=True)
        self._ready = threading.Event()
        self._thread.start()

    def wait_subscribed(self, timeout: float) -> bool:
        """For tests and benchmarks: True once the subscriber listens."""
        return self._ready.wait(timeout)

    def get(self, key: bytes) -> Optional[bytes]:
        if self._pid != os.getpid():  # forked: this process needs its own subscriber
            self._start()
        return self.table.get(key)

    def forget(self, key: bytes) -> None:
        self.table.delete(key)

    def apply(self, message: bytes) -> None:
        if message[:1] == b"S" and len(message) >= _SET.size:
            _, expires_ms, key_length = _SET.unpack_from(message)
            start = _SET.size
            key = message[start:start + key_length]
            ttl = expires_ms / 1000.0 - time.time()
            if ttl > 0 and len(key) == key_length:
                self.table.set(key, message[start + key_length:], ttl)
        elif message[:1] == _DELETE:
            self.table.delete(message[1:])
        self.received += 1

    def close(self) -> None:
        self._closed = True


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
                if replica is None or replica._closed or replica._pid != os.getpid():
                    return
                replica._ready.set()
                del replica
                message = pubsub.get_message(timeout=1.0)
                if message is not None and message.get("type") == "message":
                    replica = replica_ref()
                    if replica is None:
                        return
                    replica.apply(message["data"])
                    del replica
        except Exception as exc:  # Redis down or restarted: lookups go to Redis meanwhile
            log.debug("sesscache: the session replica's subscription failed (%s); retrying", exc)
            replica = replica_ref()
            if replica is None or replica._closed:
                return
            replica._ready.clear()
            replica.table = MemoryStore(max_sessions=replica.max_sessions)  # deletes may be lost
            del replica
            time.sleep(retry_after)
        finally:
            if pubsub is not None:
                try:
                    pubsub.close()
                except Exception:
                    pass
