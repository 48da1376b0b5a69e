"""The ``sesscache-ssl:`` endpoint's errors and ``with_session_cache`` in code; the end-to-end run
through the endpoint string (``twist web``) is in test_end_to_end.py."""
from __future__ import annotations

import pytest

from tests.integrations.harness import need_package


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
    # "memory" is answered in C: every lookup goes to it, none to OpenSSL's internal cache
    assert sesscache.get_session_cache_mode(context) == sesscache.SESS_CACHE_SERVER | sesscache.SESS_CACHE_NO_INTERNAL
    assert context.set_options(0) & SSL.OP_NO_TICKET  # set_options returns the options in force
    assert factory.process_cache.cache.session_id_context(context) == b"in-code"
