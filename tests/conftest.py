"""Shared fixtures: certificates, the TLS stacks, and the session leak check."""
from __future__ import annotations

import gc
import os
from dataclasses import dataclass

import pytest

from tests.tls import STACKS, TLS12, TLS13

# Real redis-server and memcached processes (and the store fixtures) for every test dir.
pytest_plugins = ["tests.server_fixtures"]


@dataclass
class Certs:
    ca_pem: str
    server_pem: str  # cert chain + key for localhost, example.com, other.example
    other_server_pem: str  # same names, a different key and certificate


@pytest.fixture(scope="session")
def certs(tmp_path_factory) -> Certs:
    import trustme

    folder = tmp_path_factory.mktemp("certs")
    ca = trustme.CA()
    server = ca.issue_cert("localhost", "example.com", "other.example", "127.0.0.1")
    other = ca.issue_cert("localhost", "example.com", "other.example", "127.0.0.1")
    paths = Certs(str(folder / "ca.pem"), str(folder / "server.pem"), str(folder / "other.pem"))
    ca.cert_pem.write_to_path(paths.ca_pem)
    server.private_key_and_cert_chain_pem.write_to_path(paths.server_pem)
    other.private_key_and_cert_chain_pem.write_to_path(paths.other_server_pem)
    return paths


@pytest.fixture(params=sorted(STACKS))
def stack(request, certs):
    return STACKS[request.param](certs)


@pytest.fixture(params=[TLS12, TLS13])
def version(request):
    return request.param


def _live_counts():
    from sesscache._binding.copies import all_instances
    from sesscache.contexts import live_session_count

    return {inst.describe(): live_session_count(inst) for inst in all_instances()}


@pytest.fixture(scope="session", autouse=True)
def cpython_session_leak_measured(certs):
    """Measure CPython's SSLObject.session leak once, before any test starts threads."""
    from tests.tls import StdlibStack

    stack = StdlibStack(certs)
    hs = stack.handshake(stack.server_context(TLS12), stack.client_context())
    stack.close(hs)


@pytest.fixture(scope="module", autouse=True)
def sessions_do_not_leak_per_module():
    """After every test module, every SSL_SESSION that module made has been freed.

    Counted by OpenSSL's own object life cycle (sesscache's ex_data hook), per copy of
    libssl, once the module's contexts and connections are collected.
    """
    from tests.tls import cpython_leaked_sessions

    yield
    for _ in range(3):
        gc.collect()
    # Sessions CPython itself leaked (python/cpython#116810) are not ours to free.
    leaked = {name: count - cpython_leaked_sessions.get(name, 0)
              for name, count in _live_counts().items()}
    leaked = {name: count for name, count in leaked.items() if count}
    assert not leaked, f"SSL_SESSION objects still alive after the module: {leaked}"


def pytest_report_header(config):
    try:
        import sesscache
        from sesscache import testing

        lines = [f"sesscache stdlib libssl: {sesscache.libssl_info().describe()}",
                 f"sesscache.testing linked libssl: {testing.linked_instance().describe()}",
                 f"matrix focus: {os.environ.get('SESSCACHE_MATRIX_FOCUS', 'all')}"]
        try:
            from OpenSSL import SSL
            lines.append(f"pyOpenSSL libssl: {sesscache.libssl_info(SSL.Context(SSL.TLS_METHOD)).describe()}")
        except Exception as exc:  # reported, and the pyOpenSSL tests fail on their own
            lines.append(f"pyOpenSSL libssl: unavailable ({exc})")
        return lines
    except Exception as exc:
        return [f"sesscache not importable: {exc}"]


# --- the version matrix ---------------------------------------------------------------
# Each row of ci/matrix.py is there for one copy of libssl: the "system" row runs
# everything; a "bundled" row (a cryptography wheel's OpenSSL) needs only what runs on
# pyOpenSSL, and a "linked" row (sesscache.testing's module linked to another OpenSSL)
# only what runs on that linked libssl. The rest is the same code on the same OpenSSL as the
# system row, so it is deselected there (reported by pytest as deselected, not skipped).
_FOCUS_MODULES = {
    "bundled": ("tests/binding/test_instances.py", "tests/binding/test_elf.py",
                "tests/binding/test_session.py", "tests/cache/test_client_cache.py"),
    "linked": ("tests/binding/test_instances.py", "tests/test_build.py"),
}
_FOCUS_WORD = {"bundled": "pyopenssl", "linked": "linked"}


def pytest_collection_modifyitems(config, items):
    if os.environ.get("SESSCACHE_MATRIX_ROW"):
        # Packaging is not a matter of which OpenSSL runs: the suite's own run (make test)
        # covers it, from a git checkout, which a row's snapshot is not.
        packaging = [item for item in items if item.nodeid.startswith("tests/packaging/")]
        if packaging:
            config.hook.pytest_deselected(items=packaging)
            items[:] = [item for item in items if item not in packaging]
    focus = os.environ.get("SESSCACHE_MATRIX_FOCUS", "all")
    if focus not in _FOCUS_WORD:
        return
    word, modules = _FOCUS_WORD[focus], _FOCUS_MODULES[focus]
    keep, drop = [], []
    for item in items:
        path = item.nodeid.split("::", 1)[0]
        (keep if word in item.nodeid.lower() or path in modules else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
