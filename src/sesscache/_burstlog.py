"""Log a recurring problem once per burst, not once per handshake.

A store that is down fails every lookup; a server doing thousands of handshakes a second
must not write thousands of log lines a second about it.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable


class BurstLogger:
    """The first occurrence is logged at once; later ones within ``interval`` seconds
    are counted and reported in one line when the next one comes after the interval.

    Pass strings, not exception objects, as arguments: a log record that holds an
    exception holds its traceback, and with it the whole handshake's call stack.
    """

    def __init__(self, logger: logging.Logger, interval: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._logger = logger
        self._interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._last: dict = {}
        self._suppressed: dict = {}

    def log(self, level: int, topic: str, message: str, *args) -> None:
        now = self._clock()
        with self._lock:
            last = self._last.get(topic)
            if last is not None and now - last < self._interval:
                self._suppressed[topic] = self._suppressed.get(topic, 0) + 1
                return
            self._last[topic] = now
            suppressed = self._suppressed.pop(topic, 0)
        if suppressed:
            message += " (%d more like this in the last %.0f s)"
            args = args + (suppressed, self._interval)
        self._logger.log(level, message, *args)
