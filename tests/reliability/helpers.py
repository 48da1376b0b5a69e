"""Shared pieces of the reliability suite: a store that counts what the cache asked of it,
version control on every stack, the live-session count, and a timed handshake."""
from __future__ import annotations

import gc
import ssl
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import sesscache
from tests.tls import TLS12, TLS13

# A handshake that meets a faulty store waits at most the store's timeout for each of its
# (at most two) store calls, plus a full handshake. Asserted generously: a bound, not a
# speed goal, so that a loaded CI machine does not turn it into a flaky test.
HANDSHAKE_BOUND = 2.0


class CountingStore:
    """Wraps a store and counts every call the cache makes and how each ended, so the
    cache's statistics can be checked against what really happened, exactly."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self._lock = threading.Lock()
        self.calls: Dict[str, int] = {}

    def _note(self, what: str) -> None:
        with self._lock:
            self.calls[what] = self.calls.get(what, 0) + 1

    def count(self, what: str) -> int:
        with self._lock:
            return self.calls.get(what, 0)

    def get(self, key):
        try:
            value = self.inner.get(key)
        except BaseException:
            self._note("get-raised")
            raise
        self._note("get-none" if value is None else "get-value")
        return value

    def pop(self, key):
        try:
            value = self.inner.pop(key)
        except BaseException:
            self._note("pop-raised")
            raise
        self._note("pop-none" if value is None else "pop-value")
        return value

    def set(self, key, value, ttl):
        try:
            self.inner.set(key, value, ttl)
        except BaseException:
            self._note("set-raised")
            raise
        self._note("set-ok")

    def delete(self, key):
        self.inner.delete(key)

    def close(self):
        self.inner.close()

    def describe(self):
        return self.inner.describe()

    @property
    def evictions(self):
        return getattr(self.inner, "evictions", 0)

    def check(self, stats: sesscache.CacheStats) -> None:
        """The cache's counters agree with the calls it made, exactly."""
        raised = self.count("get-raised") + self.count("set-raised") + self.count("pop-raised")
        assert stats.errors == raised, (stats, self.calls)
        assert stats.stores == self.count("set-ok"), (stats, self.calls)
        assert stats.misses == self.count("get-none") + self.count("pop-none"), (stats, self.calls)
        answered = self.count("get-value") + self.count("pop-value")
        assert stats.hits <= answered, (stats, self.calls)


def live(where) -> int:
    """Live SSL_SESSIONs of a libssl copy, less those CPython itself leaked (#116810)."""
    from tests.tls import cpython_leaked_sessions

    for _ in range(2):
        gc.collect()
    instance = sesscache.libssl_info(where) if not isinstance(where, sesscache.LibsslInstance) else where
    return sesscache.live_session_count(instance) - cpython_leaked_sessions.get(instance.describe(), 0)


def allow_tls12_and_13(stack, server_ctx) -> None:
    """Let a server context made for one version speak both, so one context serves
    clients of either (the version is then the client's choice)."""
    if stack.name == "pyopenssl":
        server_ctx.set_min_proto_version(stack.SSL.TLS1_2_VERSION)
        server_ctx.set_max_proto_version(stack.SSL.TLS1_3_VERSION)
    elif stack.name == "stdlib":
        server_ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        server_ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    else:
        from sesscache._binding import ffi, lib

        api = sesscache.libssl_info(server_ctx).api
        api.SSL_CTX_ctrl(server_ctx.pointer, lib.SSL_CTRL_SET_MIN_PROTO_VERSION, lib.TLS1_2_VERSION, ffi.NULL)
        api.SSL_CTX_ctrl(server_ctx.pointer, lib.SSL_CTRL_SET_MAX_PROTO_VERSION, lib.TLS1_3_VERSION, ffi.NULL)


def client_for(stack, version: str):
    """A client context of ``stack`` that speaks at most ``version``."""
    ctx = stack.client_context()
    if stack.name == "pyopenssl":
        ctx.set_max_proto_version({TLS12: stack.SSL.TLS1_2_VERSION, TLS13: stack.SSL.TLS1_3_VERSION}[version])
    elif stack.name == "stdlib":
        ctx.maximum_version = {TLS12: ssl.TLSVersion.TLSv1_2, TLS13: ssl.TLSVersion.TLSv1_3}[version]
    else:
        from sesscache._binding import ffi, lib

        api = sesscache.libssl_info(ctx).api
        number = {TLS12: lib.TLS1_2_VERSION, TLS13: lib.TLS1_3_VERSION}[version]
        api.SSL_CTX_ctrl(ctx.pointer, lib.SSL_CTRL_SET_MAX_PROTO_VERSION, number, ffi.NULL)
    return ctx


@dataclass
class Tally:
    """What a traffic thread did, for the expected counts."""

    full: int = 0  # handshakes offering no session
    resumed: int = 0  # offered a stored session, and resumed
    foreign: int = 0  # offered a session the store never had
    not_resumed: int = 0  # offered a stored session, got a full handshake (faults)
    durations: List[float] = field(default_factory=list)
    failures: List[str] = field(default_factory=list)

    def add(self, other: "Tally") -> None:
        self.full += other.full
        self.resumed += other.resumed
        self.foreign += other.foreign
        self.not_resumed += other.not_resumed
        self.durations.extend(other.durations)
        self.failures.extend(other.failures)


def timed_handshake(stack, server, client, session=None, server_name=None):
    start = time.monotonic()
    hs = stack.handshake(server, client, session, server_name=server_name)
    return hs, time.monotonic() - start


def run_threads(count: int, target, *args) -> None:
    errors: List[BaseException] = []

    def wrapped(index):
        try:
            target(index, *args)
        except BaseException as exc:  # reported below, with the thread's traceback
            errors.append(exc)
            raise

    threads = [threading.Thread(target=wrapped, args=(i,), name=f"traffic-{i}") for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not any(t.is_alive() for t in threads), "a traffic thread hung"
    if errors:
        raise errors[0]


def expected_gets(version: str, t: Tally) -> int:
    """Lookups OpenSSL makes: one per offered session. (A client that can speak TLS 1.3
    also sends a random legacy session id with no session, for middlebox compatibility,
    which a TLS 1.2 server looks up too; these clients are capped at their version, so
    they send none.)"""
    return t.resumed + t.foreign + t.not_resumed


def expected_news(version: str, t: Tally) -> int:
    """Sessions made: one per TLS 1.2 full handshake; TLS 1.3 stateful tickets, two after
    a full handshake and one after a resumption (OpenSSL's default num_tickets)."""
    fulls = t.full + t.foreign + t.not_resumed
    if version == TLS12:
        return fulls
    return 2 * fulls + t.resumed


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def describe_durations(durations: List[float]) -> str:
    if not durations:
        return "no handshakes"
    ordered = sorted(durations)
    return (f"{len(ordered)} handshakes, median {ordered[len(ordered) // 2] * 1000:.1f} ms, "
            f"max {ordered[-1] * 1000:.0f} ms")


def fresh_session_of(stack, hs) -> Optional[Any]:
    return hs.client_session
