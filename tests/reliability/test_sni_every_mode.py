"""The SNI promise in every mode: a session made for one server name never resumes for
another, whichever cache answers, and always resumes for its own.

One table, real handshakes: stack x TLS version x cache mode x topology.

* cache modes: ``internal`` (``attach()``'s default: OpenSSL's own cache in front, which
  never compares names, so only the bound session id context stops it), ``store``
  (``internal_cache=False``: every lookup through the cache), ``aio`` (``sesscache.aio``,
  over loopback, both with and without the internal cache);
* topologies: ``one-context`` (one context serves both names) and ``virtual-hosts`` (the
  connection starts on a default context whose SNI callback switches it to the context of
  the name asked: OpenSSL keeps using the first one's session cache).

Counted: every refusal in ``rejected`` (also those OpenSSL makes from its internal cache,
which no lookup sees), every resumption through the store in ``hits``.
"""
from __future__ import annotations

import pytest

from sesscache import MemoryStore, SessionCache
from tests.tls import STACKS, TLS12, TLS13

NAME, OTHER = "example.com", "other.example"
# sesscache.testing (the linked stack) has no SNI callback to switch contexts with.
SNI_SWITCHING = ("pyopenssl", "stdlib")


def _switch_to(stack, default, per_name):
    """Make ``default`` switch each connection to ``per_name[name]`` in its SNI callback."""
    if stack.name == "pyopenssl":
        def switch(conn):
            target = per_name.get((conn.get_servername() or b"").decode())
            if target is not None:
                conn.set_context(target)
        default.set_tlsext_servername_callback(switch)
    else:
        def switch(sslobj, name, _context):
            target = per_name.get(name or "")
            if target is not None:
                sslobj.context = target
        default.sni_callback = switch


def _servers(stack, version, topology, internal_cache):
    """(the context connections start on, the caches to count, the cache of the start)"""
    store = MemoryStore()
    entry = stack.server_context(version, internal_cache=internal_cache)
    cache = SessionCache(store)
    if topology == "one-context":
        cache.attach(entry, internal_cache=internal_cache)
        return entry, [cache]
    hosts = {name: stack.server_context(version, internal_cache=internal_cache) for name in (NAME, OTHER)}
    _switch_to(stack, entry, hosts)
    caches = [cache]
    for context in hosts.values():  # each virtual host attached too, as a user would
        host_cache = SessionCache(store)
        host_cache.attach(context, internal_cache=internal_cache)
        caches.append(host_cache)
    cache.attach(entry, internal_cache=internal_cache)  # after its SNI callback is set
    return entry, caches


def _total(caches, name):
    return sum(getattr(c.stats, name) for c in caches)


def _cases():
    for stack_name in sorted(STACKS):
        for version in (TLS12, TLS13):
            for mode in ("internal", "store"):
                for topology in ("one-context", "virtual-hosts"):
                    if topology == "virtual-hosts" and stack_name not in SNI_SWITCHING:
                        continue
                    yield pytest.param(stack_name, version, mode, topology,
                                       id=f"{stack_name}-{version}-{mode}-{topology}")


@pytest.mark.parametrize("stack_name, version, mode, topology", list(_cases()))
def test_a_session_resumes_for_its_own_name_only(certs, stack_name, version, mode, topology):
    stack = STACKS[stack_name](certs)
    internal = mode == "internal"
    server, caches = _servers(stack, version, topology, internal)
    client = stack.client_context()
    for made_for, asked in ((NAME, OTHER), (OTHER, NAME)):
        made = stack.handshake(server, client, server_name=made_for)
        stack.close(made)
        rejected, hits = _total(caches, "rejected"), _total(caches, "hits")
        other = stack.handshake(server, client, made.client_session, server_name=asked)
        stack.close(other)
        assert not other.server_reused, f"a session made for {made_for} resumed for {asked}"
        assert _total(caches, "rejected") == rejected + 1, [c.stats for c in caches]
        assert _total(caches, "hits") == hits
        same = stack.handshake(server, client, made.client_session, server_name=made_for)
        stack.close(same)
        assert same.server_reused, f"a session made for {made_for} did not resume for it"
        assert _total(caches, "rejected") == rejected + 1
        # the internal cache answers for its own sessions without asking the store
        assert _total(caches, "hits") == hits + (0 if internal else 1)
    assert _total(caches, "errors") == 0 and _total(caches, "expired") == 0


@pytest.mark.parametrize("version", [TLS12, TLS13])
@pytest.mark.parametrize("label, name", [("absent", None), ("empty", b""), ("256", b"a" * 256),
                                         ("300", b"b" * 300), ("other", b"other.example")])
def test_unreadable_or_other_names_with_the_internal_cache_in_front(stack, version, label, name):
    """The default mode, with a client free to send any server_name extension (a real
    ClientHello rewritten, the TLS 1.3 binder recomputed): never resumed, counted once."""
    from tests.reliability.test_security import offer_with_server_name

    resumed, cache = offer_with_server_name(stack, version, name, internal_cache=True)
    assert not resumed, f"a session made for example.com resumed for server name {label}"
    assert cache.stats.rejected == 1 and cache.stats.hits == 0, cache.stats


@pytest.mark.parametrize("version", [TLS12, TLS13])
def test_the_same_name_still_resumes_through_the_rewriting_client(stack, version):
    from tests.reliability.test_security import offer_with_server_name

    resumed, cache = offer_with_server_name(stack, version, b"example.com", internal_cache=True)
    assert resumed and cache.stats.rejected == 0


# --- sesscache.aio, over loopback ------------------------------------------------------

@pytest.mark.parametrize("internal_cache", [True, False], ids=["internal", "store"])
@pytest.mark.parametrize("topology", ["one-context", "virtual-hosts"])
@pytest.mark.parametrize("version", [TLS12, TLS13])
def test_aio_resumes_for_its_own_name_only(certs, version, topology, internal_cache):
    from tests.aio.client import resumed
    from tests.aio.conftest import Servers, run

    servers = Servers(certs)
    stack = STACKS["stdlib"](certs)

    async def scenario():
        context = servers.server_context(version)
        if topology == "virtual-hosts":
            _switch_to(stack, context, {name: servers.server_context(version) for name in (NAME, OTHER)})
        _server, port, cache, _store = await servers.start(MemoryStore(), version=version, context=context,
                                                           internal_cache=internal_cache)
        client = servers.client_context()
        try:
            for made_for, asked in ((NAME, OTHER), (OTHER, NAME)):
                _reused, session, _client = await resumed(port, client, None, server_hostname=made_for)
                rejected, hits = cache.stats.rejected, cache.stats.hits
                reused, _, _ = await resumed(port, client, session, server_hostname=asked)
                assert not reused, f"a session made for {made_for} resumed for {asked}"
                assert cache.stats.rejected == rejected + 1, cache.stats
                reused, _, _ = await resumed(port, client, session, server_hostname=made_for)
                assert reused, f"a session made for {made_for} did not resume for it"
                assert cache.stats.rejected == rejected + 1
                assert cache.stats.hits == hits + (0 if internal_cache else 1), cache.stats
            assert cache.stats.errors == 0 and cache.stats.expired == 0
        finally:
            await servers.close()

    run(scenario())


@pytest.mark.parametrize("stack_name", sorted(STACKS))
@pytest.mark.parametrize("version", [TLS12, TLS13])
def test_tickets_on_openssls_default_never_resume_for_another_name(certs, stack_name, version):
    """OpenSSL's default, tickets on: TLS 1.2 tickets and TLS 1.3 stateless tickets carry the
    session to the client, and no cache is asked. The bound session id context is inside the
    ticket's session, so OpenSSL refuses a ticket for another name too (not counted: no
    lookup and no stored session is involved), and still resumes it for its own name."""
    stack = STACKS[stack_name](certs)
    server = stack.server_context(version, tickets=True, internal_cache=True)
    cache = SessionCache(MemoryStore())
    cache.attach(server)
    client = stack.client_context()
    made = stack.handshake(server, client, server_name=NAME)
    stack.close(made)
    other = stack.handshake(server, client, made.client_session, server_name=OTHER)
    stack.close(other)
    assert not other.server_reused, f"a ticket made for {NAME} resumed for {OTHER}"
    same = stack.handshake(server, client, made.client_session, server_name=NAME)
    stack.close(same)
    assert same.server_reused, f"a ticket made for {NAME} did not resume for it"
    assert cache.stats.hits == 0 and cache.stats.errors == 0
