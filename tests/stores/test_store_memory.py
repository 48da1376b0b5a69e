"""MemoryStore: LRU order, byte budget, expiry counters, threads, and a stateful model check."""
from __future__ import annotations

import random
import threading

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from sesscache.errors import ConfigurationError, StoreError, ValueTooLarge
from sesscache.stores import MemoryStore


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def _accounted_bytes(store: MemoryStore) -> int:
    return sum(len(k) + len(v) for k, v, _ in store.entries())


def test_least_recently_used_is_evicted():
    store = MemoryStore(max_sessions=3)
    for key in (b"a", b"b", b"c"):
        store.set(key, key, 60)
    assert store.get(b"a") == b"a"  # a is now the most recent
    store.set(b"d", b"d", 60)
    assert store.get(b"b") is None
    assert [store.get(k) for k in (b"a", b"c", b"d")] == [b"a", b"c", b"d"]
    assert store.evictions == 1
    assert store.expired == 0
    assert store.describe()["entries"] == 3


def test_overwrite_refreshes_recency_and_does_not_evict():
    store = MemoryStore(max_sessions=2)
    store.set(b"a", b"1", 60)
    store.set(b"b", b"1", 60)
    store.set(b"a", b"2", 60)  # overwrite: still two entries, a most recent
    assert store.evictions == 0
    store.set(b"c", b"1", 60)
    assert store.get(b"b") is None
    assert store.get(b"a") == b"2"


def test_max_bytes_evicts_until_the_new_entry_fits():
    store = MemoryStore(max_bytes=100)
    store.set(b"k1", b"x" * 48, 60)  # 50 bytes
    store.set(b"k2", b"x" * 48, 60)  # 100 bytes: full
    store.set(b"k3", b"x" * 8, 60)  # 10 more: k1 must go
    assert store.get(b"k1") is None
    assert store.get(b"k2") is not None and store.get(b"k3") is not None
    assert store.describe()["bytes"] == 60
    assert store.evictions == 1


def test_value_larger_than_max_bytes_is_refused():
    store = MemoryStore(max_bytes=100)
    store.set(b"k", b"v", 60)
    with pytest.raises(ValueTooLarge) as info:
        store.set(b"big", b"x" * 200, 60)
    assert isinstance(info.value, StoreError) and isinstance(info.value, ValueError)
    assert "max_bytes=100" in str(info.value)
    assert store.get(b"k") == b"v"  # nothing evicted for a value that could never fit


def test_expiry_boundary_is_exclusive():
    clock = FakeClock(1000.0)
    store = MemoryStore(clock=clock)
    store.set(b"k", b"v", 1.0)
    clock.now = 1000.999999
    assert store.get(b"k") == b"v"
    clock.now = 1001.0  # exactly at expiry: gone
    assert store.get(b"k") is None
    assert store.expired == 1


def test_expired_entries_are_dropped_when_read_and_counted():
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    store.set(b"a", b"1", 1)
    store.set(b"b", b"1", 1)
    clock.advance(2)
    assert store.get(b"a") is None
    assert store.pop(b"b") is None
    assert store.expired == 2
    assert store.describe()["entries"] == 0
    assert store.describe()["bytes"] == 0


def test_expired_entries_at_the_lru_end_are_purged_by_set():
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    store.set(b"old1", b"1", 1)
    store.set(b"old2", b"1", 1)
    clock.advance(2)
    store.set(b"new", b"1", 60)  # opportunistic purge, nobody read old1/old2
    assert store.describe()["entries"] == 1
    assert store.expired == 2
    assert store.evictions == 0


def test_making_room_drops_expired_before_counting_evictions():
    clock = FakeClock()
    store = MemoryStore(max_sessions=2, clock=clock)
    store.set(b"dead", b"1", 1)
    store.set(b"live", b"1", 60)
    clock.advance(2)
    store.set(b"new", b"1", 60)
    assert store.expired == 1
    assert store.evictions == 0
    assert store.get(b"live") == b"1"


def test_purge_expired_sweeps_the_middle():
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    store.set(b"live1", b"1", 60)
    for i in range(10):
        store.set(b"dead%d" % i, b"1", 1)
    store.set(b"live2", b"1", 60)
    clock.advance(2)
    assert store.purge_expired() == 10
    assert store.describe()["entries"] == 2
    assert store.describe()["bytes"] == _accounted_bytes(store)


def test_describe_reports_limits_and_counters():
    info = MemoryStore(max_sessions=10, max_bytes=1000).describe()
    assert info == {
        "kind": "memory",
        "entries": 0,
        "bytes": 0,
        "max_sessions": 10,
        "max_bytes": 1000,
        "evictions": 0,
        "expired": 0,
        "decoded": 0,
    }


def test_close_wipes_every_entry_and_is_for_good():
    """close() has one meaning for every store (closed for good); a MemoryStore also
    wipes what it held, and a closed one says so instead of answering "nothing here"."""
    store = MemoryStore()
    store.set(b"k", b"v", 60)
    store.close()
    assert len(store) == 0 and store.entries() == []
    with pytest.raises(StoreError, match="MemoryStore was closed"):
        store.get(b"k")
    with pytest.raises(StoreError, match="closed"):
        store.set(b"k", b"v", 60)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_sessions": 0},
        {"max_sessions": -1},
        {"max_sessions": 1.5},
        {"max_sessions": True},
        {"max_bytes": 0},
        {"max_bytes": -5},
        {"max_bytes": "1mb"},
    ],
    ids=repr,
)
def test_bad_limits_are_configuration_errors(kwargs):
    with pytest.raises(ConfigurationError):
        MemoryStore(**kwargs)


def test_threads_hammering_keep_counts_consistent():
    store = MemoryStore(max_sessions=500)
    n_threads, per_thread = 8, 3000
    popped = [[] for _ in range(n_threads)]
    errors = []
    barrier = threading.Barrier(n_threads)

    def work(t: int) -> None:
        rnd = random.Random(t)
        try:
            barrier.wait()
            for i in range(per_thread):
                key = b"%d:%d" % (t, i)
                store.set(key, key, 60)
                other = b"%d:%d" % (rnd.randrange(n_threads), rnd.randrange(i + 1))
                got = store.get(other)
                assert got is None or got == other
                victim = b"%d:%d" % (rnd.randrange(n_threads), rnd.randrange(i + 1))
                got = store.pop(victim)
                if got is not None:
                    assert got == victim
                    popped[t].append(got)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    all_popped = [v for vs in popped for v in vs]
    assert len(all_popped) == len(set(all_popped))  # no session handed out twice
    info = store.describe()
    # every key was set once: it was popped, evicted, or is still there
    assert store.evictions + len(all_popped) + info["entries"] == n_threads * per_thread
    assert store.expired == 0
    assert info["entries"] <= 500
    assert info["bytes"] == _accounted_bytes(store)
    assert not set(all_popped) & {k for k, _, _ in store.entries()}


# -- stateful model checks ------------------------------------------------------------------------

KEYS = st.sampled_from([b"", b"a", b"b", b"\x00", b"k" * 100])
VALUES = st.binary(max_size=40)
TTLS = st.floats(min_value=0.001, max_value=100.0)


class UnboundedMemoryMachine(RuleBasedStateMachine):
    """With room to spare, MemoryStore must match a dict of (value, expires) exactly."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.store = MemoryStore(max_sessions=10_000, clock=self.clock)
        self.model = {}

    def _expected(self, key):
        entry = self.model.get(key)
        if entry is None or entry[1] <= self.clock.now:
            self.model.pop(key, None)
            return None
        return entry[0]

    @rule(key=KEYS, value=VALUES, ttl=TTLS)
    def set(self, key, value, ttl):
        self.store.set(key, value, ttl)
        self.model[key] = (value, self.clock.now + ttl)

    @rule(key=KEYS)
    def get(self, key):
        assert self.store.get(key) == self._expected(key)

    @rule(key=KEYS)
    def pop(self, key):
        expected = self._expected(key)
        self.model.pop(key, None)
        assert self.store.pop(key) == expected

    @rule(key=KEYS)
    def delete(self, key):
        self.store.delete(key)
        self.model.pop(key, None)

    @rule(seconds=st.floats(min_value=0, max_value=60))
    def advance(self, seconds):
        self.clock.advance(seconds)

    @precondition(lambda self: self.model)
    @rule()
    def purge(self):
        self.store.purge_expired()
        for key in list(self.model):
            self._expected(key)
        assert len(self.store) == len(self.model)

    @invariant()
    def accounting(self):
        assert self.store.describe()["bytes"] == _accounted_bytes(self.store)
        assert self.store.evictions == 0
        live = {k for k in self.model if self.model[k][1] > self.clock.now}
        assert live <= {k for k, _, _ in self.store.entries()}


class BoundedMemoryMachine(RuleBasedStateMachine):
    """Under eviction pressure: never more than the limits, never a wrong or expired value,
    and the entry just written is always there."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.store = MemoryStore(max_sessions=3, max_bytes=200, clock=self.clock)
        self.model = {}

    @rule(key=KEYS, value=VALUES, ttl=TTLS)
    def set(self, key, value, ttl):
        self.store.set(key, value, ttl)
        self.model[key] = (value, self.clock.now + ttl)
        assert self.store.get(key) == value

    @rule(key=KEYS)
    def get(self, key):
        got = self.store.get(key)
        entry = self.model.get(key)
        if entry is None or entry[1] <= self.clock.now:
            assert got is None
        else:
            assert got in (None, entry[0])

    @rule(key=KEYS)
    def pop(self, key):
        got = self.store.pop(key)
        entry = self.model.pop(key, None)
        if entry is None or entry[1] <= self.clock.now:
            assert got is None
        else:
            assert got in (None, entry[0])

    @rule(seconds=st.floats(min_value=0, max_value=60))
    def advance(self, seconds):
        self.clock.advance(seconds)

    @invariant()
    def limits(self):
        info = self.store.describe()
        assert info["entries"] <= 3
        assert info["bytes"] <= 200
        assert info["bytes"] == _accounted_bytes(self.store)


TestUnboundedMemory = UnboundedMemoryMachine.TestCase
TestUnboundedMemory.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
TestBoundedMemory = BoundedMemoryMachine.TestCase
TestBoundedMemory.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
