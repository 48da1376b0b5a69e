"""Background handshake traffic for the fault tests: threads that keep making a session and
resuming it while the test breaks the store underneath, each handshake timed."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Dict, List

from tests.reliability.helpers import client_for
from tests.tls import TLS12


@dataclass
class Record:
    phase: str
    kind: str  # "full" or "resume"
    reused: bool
    seconds: float


@dataclass
class Traffic:
    """``threads`` threads alternate a full handshake and a resumption of its session
    (TLS 1.2, so every resumption is a store lookup) until :meth:`stop`."""

    stack: object
    server: object
    threads: int = 3
    phase: str = "start"
    records: List[Record] = field(default_factory=list)
    failures: List[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._workers = [threading.Thread(target=self._run, name=f"traffic-{i}", daemon=True)
                         for i in range(self.threads)]

    def start(self) -> "Traffic":
        for worker in self._workers:
            worker.start()
        return self

    def _run(self) -> None:
        stack = self.stack
        client = client_for(stack, TLS12)
        try:
            while not self._stop.is_set():
                for kind in ("full", "resume"):
                    phase = self.phase
                    start = time.monotonic()
                    hs = stack.handshake(self.server, client, session if kind == "resume" else None)
                    took = time.monotonic() - start
                    if kind == "full":
                        session = hs.client_session
                    with self._lock:
                        self.records.append(Record(phase, kind, hs.server_reused, took))
                    stack.close(hs)
                    del hs
        except BaseException as exc:  # a handshake that failed: the one thing that must not happen
            import traceback

            with self._lock:
                self.failures.append("".join(traceback.format_exception(exc)))

    def enter(self, phase: str, seconds: float) -> None:
        """Switch to ``phase`` and let traffic run in it for ``seconds``."""
        self.phase = phase
        time.sleep(seconds)

    def stop(self) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(60)
        assert not any(w.is_alive() for w in self._workers), "a traffic thread hung"

    def in_phase(self, phase: str) -> List[Record]:
        with self._lock:
            return [r for r in self.records if r.phase == phase]

    def resumed_in(self, phase: str) -> int:
        return sum(1 for r in self.in_phase(phase) if r.kind == "resume" and r.reused)

    def slowest(self) -> float:
        with self._lock:
            return max((r.seconds for r in self.records), default=0.0)

    def summary(self) -> Dict[str, str]:
        out = {}
        phases = list(dict.fromkeys(r.phase for r in self.records))
        for phase in phases:
            records = self.in_phase(phase)
            resumes = [r for r in records if r.kind == "resume"]
            out[phase] = (f"{len(records)} handshakes, {sum(r.reused for r in resumes)}/{len(resumes)} "
                          f"resumed, slowest {max(r.seconds for r in records) * 1000:.0f} ms")
        return out
