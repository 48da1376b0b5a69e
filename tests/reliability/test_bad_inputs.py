"""Bad input, wherever it can enter: values a store hands back, bytes given to
Session.from_bytes, answers of a raw get callback, and ClientHellos no real client sends.

None may crash the process, leak a session, or stop the server from resuming good
sessions afterwards; each gets what BAD_INPUTS.md says (generated from badinputs.py).
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import sesscache
from sesscache import MemoryStore, Session, SessionCache, SessionError
from sesscache.sealing import generate_key
from tests.reliability import badinputs
from tests.reliability.badinputs import CASES, FULL, RESUMED, envelope
from tests.reliability.drive import client_hello, feed_server
from tests.reliability.hello import EXT_PRE_SHARED_KEY, Hello, replace_psk_identity, with_session_id
from tests.tls import TLS12, TLS13

TABLE = Path(__file__).with_name("BAD_INPUTS.md")
NAME = "localhost"
COUNTERS = ("hits", "misses", "rejected", "expired", "errors")


class ScriptedStore(MemoryStore):
    """A MemoryStore that answers chosen keys with chosen values."""

    def __init__(self):
        super().__init__()
        self.inject = {}
        self.keys = []

    def get(self, key):
        if key in self.inject:
            return self.inject[key]
        return super().get(key)

    def set(self, key, value, ttl):
        self.keys.append(key)
        super().set(key, value, ttl)


class Env:
    """A server with a cache, a client, and one real stored session to spoil."""

    def __init__(self, stack, sealed=False, version=TLS12):
        self.stack = stack
        self.version = version
        self.store = ScriptedStore()
        self.seal_key = generate_key()
        self.retired_key = generate_key()
        keys = [self.seal_key] if sealed else None
        self.cache = SessionCache(self.store, lifetime=3600, seal_keys=keys)
        self.server = stack.server_context(version)
        self.cache.attach(self.server, internal_cache=False)
        self.client = stack.client_context()
        self.first = stack.handshake(self.server, self.client, server_name=NAME)
        stack.close(self.first)
        self.session = self.first.client_session
        self.key = self.store.keys[-1]
        self.blob = self.store.get(self.key)
        stored = self.cache._unwrap(self.key, self.blob)
        self.origin, self.name, self.der = stored.origin, stored.server_name or b"", bytes(stored.der)
        self.certificate = stored.certificate
        self.plain_blob = envelope(self)
        self.offer = None
        self.inject_key = None
        self._keep = []

    def other_blob_for(self, key):
        hs = self.stack.handshake(self.server, self.client, server_name=NAME)
        self.stack.close(hs)
        return self.store.get(self.store.keys[-1])

    def foreign_blob_moved(self):
        other_cache = SessionCache(self.store, lifetime=3600, seal_keys=self.cache._sealer and [self.seal_key])
        other = self.stack.server_context(self.version)
        other_cache.attach(other, session_id_context=b"other-service", internal_cache=False)
        hs = self.stack.handshake(other, self.client, server_name=NAME)
        self.stack.close(hs)
        their_key = self.store.keys[-1]
        session_id = their_key[len(SessionCache.key_for(b"other-service", b"")):]
        self.offer = hs.client_session
        self.inject_key = SessionCache.key_for(b"sesscache", session_id)
        self._keep.append(other)
        return self.store.get(their_key)

    def attempt(self, session=None):
        """A resumption attempt: (what happened, counter deltas)."""
        before = self.cache.stats.as_dict()
        try:
            hs = self.stack.handshake(self.server, self.client, session or self.session, server_name=NAME)
            outcome = RESUMED if hs.server_reused else FULL
            self.stack.close(hs)
        except Exception as exc:  # noqa: BLE001 - the outcome is what is checked
            outcome = f"raises {type(exc).__name__}"
        after = self.cache.stats.as_dict()
        delta = {k: after[k] - before[k] for k in COUNTERS if after[k] != before[k]}
        return outcome, delta

    def still_healthy(self):
        self.store.inject.clear()
        outcome, delta = self.attempt()
        assert outcome == RESUMED and delta == {"hits": 1}, (outcome, delta)


# --- the table's cases, one by one -----------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_stored_value(stack, case, caplog):
    env = Env(stack, sealed=case.sealed)
    value = case.make(env)
    env.store.inject[env.inject_key or env.key] = value
    outcome, delta = env.attempt(env.offer)
    assert outcome == case.expected(stack.name), (outcome, delta)
    if case.counter is None:
        assert delta == {}, delta
    else:
        assert delta in [{name: 1} for name in case.counter.split(" or ")], delta
    env.still_healthy()


def test_the_table_is_current():
    text = badinputs.render()
    if os.environ.get("SESSCACHE_WRITE_BAD_INPUTS"):
        TABLE.write_text(text)
    assert TABLE.read_text() == text, (
        "BAD_INPUTS.md is out of date: SESSCACHE_WRITE_BAD_INPUTS=1 pytest tests/reliability/test_bad_inputs.py -k table")


# --- property tests through the get path ------------------------------------------------------

_SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.mark.parametrize("sealed", [False, True], ids=["plain", "sealed"])
def test_random_stored_values(stack, sealed):
    env = Env(stack, sealed=sealed)

    @settings(max_examples=60, **_SETTINGS)
    @given(value=st.binary(max_size=2048))
    def check(value):
        env.store.inject[env.key] = value
        outcome, delta = env.attempt()
        assert outcome == FULL, (outcome, value[:40])
        if badinputs.other_version(value, sealed):  # reads as a later sesscache's format: a quiet miss
            assert delta == {"misses": 1}, delta
        else:
            assert delta in ({"rejected": 1}, {"expired": 1}), delta  # random origin: long expired

    check()
    env.still_healthy()


def test_every_truncation_of_a_stored_blob(stack):
    env = Env(stack)
    for cut in range(len(env.blob)):
        env.store.inject[env.key] = env.blob[:cut]
        outcome, delta = env.attempt()
        assert (outcome, delta) == (FULL, {"rejected": 1}), (cut, outcome, delta)
    env.still_healthy()


@st.composite
def mutations(draw, der):
    mutated = bytearray(der)
    for _ in range(draw(st.integers(1, 4))):
        if not mutated:
            break
        kind = draw(st.sampled_from(["flip", "cut", "insert", "set"]))
        at = draw(st.integers(0, len(mutated) - 1))
        if kind == "flip":
            mutated[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "cut":
            del mutated[at:]
        elif kind == "insert":
            mutated[at:at] = draw(st.binary(min_size=1, max_size=8))
        else:
            mutated[at] = draw(st.integers(0, 255))
    return bytes(mutated)


# Not on the stdlib stack: a failed handshake marks the client's session not resumable,
# and the stdlib cannot rebuild one from bytes; the linked stack runs the same libssl copy.
@pytest.mark.parametrize("stack_name", ["pyopenssl", "linked"])
def test_mutated_stored_der(certs, stack_name):
    """Mutated DER in a valid envelope (what a writer to an unsealed store could do): a full
    handshake, or, if the result still parses as a session with the asked id, a hit that
    resumes or fails that one handshake. Never a crash, and the server stays healthy."""
    from tests.tls import STACKS

    stack = STACKS[stack_name](certs)
    env = Env(stack)
    seen = {}
    client_der = stack.to_session(env.session).to_bytes()

    def fresh_client_session():
        revived = Session.from_bytes(client_der, env.client)
        return revived.to_pyopenssl(env.client) if stack.name == "pyopenssl" else revived

    @settings(max_examples=150, **_SETTINGS)
    @given(der=mutations(env.der))
    def check(der):
        env.store.inject[env.key] = env.cache._wrap(env.key, env.origin, env.name, env.certificate, der)
        outcome, delta = env.attempt(fresh_client_session())
        seen[outcome] = seen.get(outcome, 0) + 1
        if delta == {"hits": 1}:
            with Session.from_bytes(der, env.server) as parsed:
                assert parsed.id == Session.from_bytes(env.der, env.server).id
            return
        # A mutation of the time or timeout fields can leave a session that parses but
        # has expired: refused as such before OpenSSL would.
        assert outcome == FULL and delta in ({"rejected": 1}, {"expired": 1}), (outcome, delta)

    check()
    print(stack.name, seen)
    env.still_healthy()


# --- Session.from_bytes ----------------------------------------------------------------------


def test_every_truncation_through_from_bytes(stack, version):
    env = Env(stack, version=version)
    for cut in range(len(env.der)):
        with pytest.raises(SessionError):
            Session.from_bytes(env.der[:cut], env.server)


def test_session_ids_of_odd_lengths_through_from_bytes(stack):
    env = Env(stack)
    with Session.from_bytes(with_session_id(env.der, b""), env.server) as empty:
        assert empty.id == b""
    for length in (33, 64, 255):
        with pytest.raises(SessionError):
            Session.from_bytes(with_session_id(env.der, b"\x01" * length), env.server)


# --- a raw get callback ----------------------------------------------------------------------


@pytest.mark.parametrize("length", [0, 33])
def test_raw_get_callback_returning_odd_ids(stack, length):
    server = stack.server_context(TLS12)
    store = {}
    sesscache.set_new_session_callback(server, lambda conn, s: store.__setitem__(s.id, s.to_bytes()))
    sesscache.set_get_session_callback(
        server, lambda conn, sid: with_session_id(store[sid], b"\x05" * length) if sid in store else None)
    client = stack.client_context()
    first = stack.handshake(server, client)
    stack.close(first)
    if stack.name == "pyopenssl":
        with pytest.raises(SessionError):  # pyOpenSSL's pattern: raised from do_handshake
            stack.handshake(server, client, first.client_session)
    else:
        again = stack.handshake(server, client, first.client_session)
        assert not again.server_reused
        stack.close(again)
    sesscache.set_get_session_callback(server, lambda conn, sid: store.get(sid)) if stack.name != "pyopenssl" \
        else None


# --- ClientHellos no real client sends --------------------------------------------------------


@pytest.mark.parametrize("internal_cache", [False, True], ids=["store-only", "with-internal"])
def test_client_hello_session_ids(stack, version, internal_cache):
    """Session ids / PSK identities of every length reach the callbacks only when OpenSSL
    itself accepts them: 1 to 32 bytes (TLS 1.2), exactly 32 (TLS 1.3)."""
    server = stack.server_context(version, internal_cache=internal_cache)
    asked = []
    sesscache.set_get_session_callback(server, lambda conn, sid: asked.append(len(sid)))
    client = stack.client_context()
    first = stack.handshake(server, client)
    stack.close(first)
    lengths = (0, 1, 32, 33, 64, 255) if version == TLS12 else (0, 1, 31, 32, 33, 300, 4000)
    for length in lengths:
        hello = Hello.parse(client_hello(stack, client, first.client_session))
        if version == TLS12:
            hello.session_id = b"\x01" * length
        else:
            ext = hello.extension(EXT_PRE_SHARED_KEY)
            hello.replace_extension(EXT_PRE_SHARED_KEY, replace_psk_identity(ext, b"\x01" * length))
        asked.clear()
        answer = feed_server(stack, server, hello.to_bytes())
        assert not answer.reused
        if version == TLS12:
            assert asked == ([length] if 1 <= length <= 32 else []), (length, asked)
            assert answer.alert == (length > 32), (length, answer)
        else:
            assert asked == ([32] if length == 32 else []), (length, asked)
            assert answer.alert == (length == 0), (length, answer)
    # and the server is as good as before
    again = stack.handshake(server, client)
    stack.close(again)
