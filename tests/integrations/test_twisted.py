"""Twisted through the ``sesscache-ssl:`` endpoint string, as Daphne and ``twist`` take it: one
``twist web`` process, >= 99 % resumed on TLS 1.2 and 1.3 (Twisted's ``ssl:`` out of the box
beside it); and the endpoint's errors."""
from __future__ import annotations

import sys

import pytest

from tests.integrations.harness import ServerProcess, assert_resumed, free_port, measure, need_package, report


def _twist_web(folder, endpoint: str, port: int) -> ServerProcess:
    (folder / "site").mkdir(exist_ok=True)
    (folder / "site" / "index.html").write_text("ok")
    return ServerProcess([sys.executable, "-m", "twisted", "web", "--listen", endpoint, "--path",
                          str(folder / "site")], folder, port)


@pytest.mark.slow
def test_twist_web_through_the_endpoint_string(tmp_path, certs):
    need_package("twisted")
    port = free_port()
    with _twist_web(tmp_path, f"ssl:{port}:privateKey={certs.server_pem}:interface=127.0.0.1", port) as server:
        plain = measure(server.port)
    port = free_port()
    store = f"sqlite\\:{tmp_path / 'sessions.db'}"
    endpoint = (f"sesscache-ssl:{port}:privateKey={certs.server_pem}:interface=127.0.0.1"
                f":store={store}:sessionIdContext=twisted-test")
    with _twist_web(tmp_path, endpoint, port) as server:
        cached = measure(server.port)
        report("Twisted (twist web), sesscache-ssl: endpoint", plain, cached)
        assert_resumed(cached, server)


def test_the_endpoint_names_what_it_needs(certs):
    need_package("twisted")
    from twisted.internet import reactor
    from twisted.internet.endpoints import serverFromString

    import sesscache

    with pytest.raises(sesscache.ConfigurationError, match="store=URL and sessionIdContext=NAME"):
        serverFromString(reactor, f"sesscache-ssl:0:privateKey={certs.server_pem}")
    with pytest.raises(sesscache.ConfigurationError, match="unknown store"):
        serverFromString(reactor, f"sesscache-ssl:0:privateKey={certs.server_pem}:store=nowhere:sessionIdContext=x")


def test_with_session_cache_in_code(certs):
    need_package("twisted")
    from OpenSSL import SSL
    from twisted.internet import ssl as tssl

    import sesscache
    from sesscache.integrations.twisted import with_session_cache

    pem = open(certs.server_pem, "rb").read()
    cert = tssl.PrivateCertificate.loadPEM(pem)
    options = tssl.CertificateOptions(privateKey=cert.privateKey.original, certificate=cert.original)
    factory = with_session_cache(options, "memory", session_id_context="in-code")
    context = factory.getContext()
    assert factory.getContext() is context
    assert sesscache.get_session_cache_mode(context) == sesscache.SESS_CACHE_SERVER
    assert context.set_options(0) & SSL.OP_NO_TICKET  # set_options returns the options in force
    assert factory.process_cache.cache.session_id_context(context) == b"in-code"
