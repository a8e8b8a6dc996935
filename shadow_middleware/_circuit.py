"""The circuit breaker: a candidate that keeps failing is paused, then probed.

After ``failures`` consecutive failures of the candidate (no answer, a timeout, a bad
answer, a 5xx; never one of our own errors, see ``_http.candidate_fault``) the circuit opens:
jobs for that target are refused (``dropped``, ``circuit_open``) without being attempted,
so a dead candidate costs almost nothing. After ``cooldown`` seconds one job is let
through as a probe (half-open); a success closes the circuit, a failure keeps it open
twice as long (at most a minute).

Opening and closing are worth a line in the server log (a dead candidate is otherwise
invisible): :meth:`CircuitBreaker.record` returns that line, at most one "opened" per
``LOG_INTERVAL`` seconds per target, never one per request. Not thread-safe on its own:
the dispatcher calls it under its lock and logs outside it.
"""

from __future__ import annotations

import time
from enum import Enum

__all__ = ["Admission", "CircuitBreaker"]

MAX_COOLDOWN = 60.0
LOG_INTERVAL = 60.0


class Admission(Enum):
    ALLOW = "allow"
    PROBE = "probe"  # the one job let through a half-open circuit
    REFUSE = "refuse"


class CircuitBreaker:
    """Consecutive-failure breaker for one target. ``failures=0`` disables it."""

    __slots__ = (
        "_base_cooldown",
        "_cooldown",
        "_failures",
        "_last_log",
        "_open_until",
        "_probing",
        "_suppressed",
        "_threshold",
        "name",
    )

    def __init__(self, failures: int, cooldown: float, name: str = "") -> None:
        self.name = name  # the target's, for the log
        self._last_log = -LOG_INTERVAL
        self._suppressed = 0
        self._threshold = failures
        self._base_cooldown = cooldown
        self._failures = 0  # consecutive
        self._open_until = 0.0  # time.monotonic(); 0.0 = closed
        self._probing = False
        self._cooldown = 0.0

    @property
    def is_open(self) -> bool:
        return self._open_until != 0.0

    def admit(self) -> Admission:
        """May a job be attempted now?"""
        if not self._open_until:
            return Admission.ALLOW
        if self._probing or time.monotonic() < self._open_until:
            return Admission.REFUSE
        self._probing = True
        return Admission.PROBE

    def refusing(self) -> bool:
        """Whether :meth:`admit` would refuse now (a peek, without side effects: no lock, no
        probe taken; the admission itself decides)."""
        open_until = self._open_until
        return bool(open_until) and (self._probing or time.monotonic() < open_until)

    def cancel_probe(self) -> None:
        """The probe admitted was refused further on (a full queue): let the next job probe."""
        self._probing = False

    def record(self, failed: bool | None, probe: bool, error: str = "") -> str | None:
        """One attempt's result: ``failed`` None when it says nothing (cancelled at shutdown,
        or our own error); ``error`` describes a failure. Returns a line to log, if any."""
        if self._threshold <= 0:
            return None
        if probe:
            self._probing = False
        if failed is None:
            return None
        if not failed:
            was_open = bool(self._open_until)
            self._failures = 0
            self._open_until = 0.0
            self._cooldown = 0.0
            if was_open:
                return f"shadow target {self.name!r} answers again: circuit closed, shadowing resumes"
            return None
        self._failures += 1
        if probe:
            # Still down: stay open, twice as long each time, at most a minute.
            self._cooldown = min(max(self._cooldown, self._base_cooldown) * 2, MAX_COOLDOWN)
            self._open_until = time.monotonic() + self._cooldown
        elif self._failures >= self._threshold and not self._open_until:
            self._cooldown = self._base_cooldown
            self._open_until = time.monotonic() + self._cooldown
            return self._opened(error)
        return None

    def _opened(self, error: str) -> str | None:
        now = time.monotonic()
        if now - self._last_log < LOG_INTERVAL:
            self._suppressed += 1
            return None
        self._last_log = now
        again = (
            f" (opened {self._suppressed} more time(s) since the last message)" if self._suppressed else ""
        )
        self._suppressed = 0
        return (
            f"shadow target {self.name!r} failed {self._failures} times in a row "
            f"(last error: {error or 'unknown'}): circuit open, its shadow requests are dropped "
            f"(circuit_open) and one is tried every {self._cooldown:g}s or more{again}; "
            "production is not affected. Check that the candidate is up and reachable."
        )
