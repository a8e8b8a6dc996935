"""The circuit breaker: a candidate that keeps failing is paused, then probed.

After ``failures`` consecutive failures (no answer, a timeout, a 5xx) the circuit opens:
jobs for that target are refused (``dropped``, ``circuit_open``) without being attempted,
so a dead candidate costs almost nothing. After ``cooldown`` seconds one job is let
through as a probe (half-open); a success closes the circuit, a failure keeps it open
twice as long (at most a minute).

Not thread-safe on its own: the dispatcher calls it under its lock.
"""

from __future__ import annotations

import time
from enum import Enum

__all__ = ["Admission", "CircuitBreaker"]

MAX_COOLDOWN = 60.0


class Admission(Enum):
    ALLOW = "allow"
    PROBE = "probe"  # the one job let through a half-open circuit
    REFUSE = "refuse"


class CircuitBreaker:
    """Consecutive-failure breaker for one target. ``failures=0`` disables it."""

    __slots__ = ("_base_cooldown", "_cooldown", "_failures", "_open_until", "_probing", "_threshold")

    def __init__(self, failures: int, cooldown: float) -> None:
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

    def cancel_probe(self) -> None:
        """The probe admitted was refused further on (a full queue): let the next job probe."""
        self._probing = False

    def record(self, failed: bool | None, probe: bool) -> None:
        """One attempt's result: ``failed`` None when it says nothing (cancelled at shutdown)."""
        if self._threshold <= 0:
            return
        if probe:
            self._probing = False
        if failed is None:
            return
        if not failed:
            self._failures = 0
            self._open_until = 0.0
            self._cooldown = 0.0
            return
        self._failures += 1
        if probe:
            # Still down: stay open, twice as long each time, at most a minute.
            self._cooldown = min(max(self._cooldown, self._base_cooldown) * 2, MAX_COOLDOWN)
            self._open_until = time.monotonic() + self._cooldown
        elif self._failures >= self._threshold and not self._open_until:
            self._cooldown = self._base_cooldown
            self._open_until = time.monotonic() + self._cooldown
