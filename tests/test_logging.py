"""Logging as a library should (issue 16, 10): a raising raw callback is logged once per
burst, not once per handshake; messages do not repeat the ``sesscache:`` prefix the
logger name carries; the package logger has a NullHandler."""
from __future__ import annotations

import logging

import pytest

import sesscache
from sesscache import SessionCache
from tests.tls import TLS12


def test_the_package_logger_has_a_null_handler():
    handlers = logging.getLogger("sesscache").handlers
    assert any(isinstance(h, logging.NullHandler) for h in handlers), handlers


def _sesscache_records(caplog):
    return [r for r in caplog.records if r.name.startswith("sesscache")]


def test_a_raising_raw_callback_is_logged_once_per_burst(stack, caplog):
    server = stack.server_context(TLS12)
    calls = []

    def bad_new(conn, session):
        calls.append(1)
        raise ValueError("cannot store")

    sesscache.set_new_session_callback(server, bad_new)
    caplog.set_level(logging.DEBUG, logger="sesscache")
    client = stack.client_context()
    for _ in range(20):
        if stack.name == "pyopenssl":  # pyOpenSSL raises it again from the handshake
            with pytest.raises(ValueError, match="cannot store"):
                stack.handshake(server, client)
        else:
            stack.close(stack.handshake(server, client))
    assert len(calls) == 20
    logged = [r for r in _sesscache_records(caplog) if "new-session callback raised" in r.getMessage()]
    assert len(logged) == 1, [r.getMessage()[:80] for r in logged]
    assert "Traceback" in logged[0].getMessage() and "cannot store" in logged[0].getMessage()
    assert logged[0].levelno == logging.ERROR


def test_messages_do_not_repeat_the_logger_name(stack, caplog):
    """One message from the raw layer and two from the cache (an oversize session, a
    store that fails): none starts with ``sesscache:``, the record's name says it."""
    caplog.set_level(logging.DEBUG, logger="sesscache")

    class DownStore(sesscache.MemoryStore):
        def set(self, key, value, ttl):
            raise sesscache.StoreError("down (the test says so)")

    for cache in (SessionCache(max_session_size=64), SessionCache(DownStore())):
        server = stack.server_context(TLS12)
        cache.attach(server, internal_cache=False)
        stack.close(stack.handshake(server, stack.client_context()))
    server = stack.server_context(TLS12)
    sesscache.set_new_session_callback(server, lambda conn, session: 1 / 0)
    try:
        stack.close(stack.handshake(server, stack.client_context()))
    except ZeroDivisionError:
        pass
    messages = [r.getMessage() for r in _sesscache_records(caplog)]
    assert any("max_session_size" in m for m in messages)
    assert any("session store write failed" in m for m in messages)
    assert any("callback raised ZeroDivisionError" in m for m in messages)
    assert not [m for m in messages if m.startswith("sesscache:")], messages
