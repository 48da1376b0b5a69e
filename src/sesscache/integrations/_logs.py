"""The ``sesscache`` logger's records, sent where the server writes its own log.

The library itself only has a ``NullHandler`` (a library does not configure logging); a
server integration is the server's configuration, so it adds one handler that passes each
record on to the server's logging: gunicorn's error log, ``uvicorn.error``,
``hypercorn.error``, Twisted's log. Warnings then appear with no configuration at all.
Records below the server's level are dropped as the server would drop them.
"""
from __future__ import annotations

import copy
import logging
from typing import Callable, Optional

PACKAGE_LOGGER = "sesscache"


class ServerLogHandler(logging.Handler):
    """Passes ``sesscache`` records to the logger ``target()`` returns (looked up at each
    record, so a server that configures its logging later is followed)."""

    def __init__(self, server: str, target: Callable[[], Optional[logging.Logger]]) -> None:
        super().__init__()
        self.server = server
        self.target = target

    def emit(self, record: logging.LogRecord) -> None:
        target = self.target()
        if target is None or not target.isEnabledFor(record.levelno):
            return
        try:
            passed = copy.copy(record)  # other handlers see the record as it was made
            passed.msg = f"[{record.name}] {record.getMessage()}"  # the server's format may not name the logger
            passed.args = ()
            passed.exc_info = passed.exc_text = None  # getMessage() does not hold the traceback:
            if record.exc_info:
                passed.msg += "\n" + logging.Formatter().formatException(record.exc_info)
            _call_handlers_below_root(target, passed)
        except Exception:
            self.handleError(record)


def _call_handlers_below_root(logger: logging.Logger, record: logging.LogRecord) -> None:
    """What ``logger.handle`` does, less the root logger's handlers: the record reaches those
    through the ``sesscache`` logger's own propagation already."""
    root = logging.getLogger()
    while logger is not None and logger is not root:
        for handler in logger.handlers:
            if record.levelno >= handler.level:
                handler.handle(record)
        if not logger.propagate:
            break
        logger = logger.parent


def route_to_logger(server: str, name: str) -> ServerLogHandler:
    """Send ``sesscache`` records to the stdlib logger ``name`` (once per process)."""
    return _install(ServerLogHandler(server, lambda: logging.getLogger(name)))


def route_to_twisted() -> ServerLogHandler:
    """Send ``sesscache`` records to Twisted's log (``twisted.logger``)."""
    return _install(_TwistedHandler())


class _TwistedHandler(ServerLogHandler):
    def __init__(self) -> None:
        super().__init__("twisted", lambda: None)

    def emit(self, record: logging.LogRecord) -> None:
        if logging.getLogger().handlers:
            return  # the standard library's logging is configured (Daphne): the record reaches it
        from twisted.logger import Logger, LogLevel

        level = (LogLevel.critical if record.levelno >= logging.CRITICAL else
                 LogLevel.error if record.levelno >= logging.ERROR else
                 LogLevel.warn if record.levelno >= logging.WARNING else
                 LogLevel.info if record.levelno >= logging.INFO else LogLevel.debug)
        try:
            Logger(namespace=record.name).emit(level, "{message}", message=record.getMessage())
        except Exception:
            self.handleError(record)


def _install(handler: ServerLogHandler) -> ServerLogHandler:
    package = logging.getLogger(PACKAGE_LOGGER)
    for existing in package.handlers:
        if isinstance(existing, ServerLogHandler) and existing.server == handler.server:
            return existing
    package.addHandler(handler)
    # Records are made only at the package logger's level: follow the server's (INFO by default
    # for uvicorn and Hypercorn) unless someone set one for sesscache.
    if package.level == logging.NOTSET:
        package.setLevel(logging.INFO)
    return handler
