"""uvicorn's factory pickles without its store (``--workers`` spawns); the end-to-end runs are in
test_end_to_end.py."""
from __future__ import annotations

import pickle
import ssl

def test_the_factory_pickles_without_its_store(tmp_path, certs):
    from sesscache.integrations.uvicorn import ssl_context_factory

    factory = ssl_context_factory(f"sqlite:{tmp_path / 's.db'}", session_id_context="shop")

    def default_factory():
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(certs.server_pem)
        return context
    context = factory(None, default_factory)
    assert context.options & ssl.OP_NO_TICKET
    copy = pickle.loads(pickle.dumps(factory))
    assert copy.process_cache._cache is None and copy.process_cache.session_id_context == b"shop"
    assert copy.process_cache.cache.session_id_context(copy(None, default_factory)) == b"shop"
