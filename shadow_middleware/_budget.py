"""The CPU budget of shadow work inside the app process (``ShadowConfig.cpu_budget``).

What shadowing costs the app process is measured, not assumed: the background thread's own
CPU clock (``_loop``: every engine's dispatcher, HTTP client, comparison, spans and metrics
run there) plus an estimate of what each shadowed request costs on the request path (the
copies and the hand-off: a constant per shadowed request, measured with ``bench.micro``),
over a sliding window of one second. Admission reads one float: whether the last
sample is over the engine's budget. Sampling happens on the request path too, at most every
SAMPLE_EVERY seconds (one ``clock_gettime`` of another thread's CPU clock, ~1 µs), so no
timer runs while nothing is shadowed.

One meter per process, as there is one background thread per process: engines with
different budgets compare the same measurement with their own figure.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque

from ._loop import background_thread_id

__all__ = ["REQUEST_PATH_COST", "CpuMeter", "meter"]

#: Seconds of CPU one shadowed request costs on the request path (thread mode: the capped
#: copies, the job hand-off; process mode: the copy, one marshal and one send), an estimate
#: from ``python -m bench.micro`` on the development VM; the background thread's share is
#: measured, not estimated.
REQUEST_PATH_COST = 20e-6
#: The window the usage is measured over, and how often it is sampled.
WINDOW = 1.0
SAMPLE_EVERY = 0.05


class CpuMeter:
    """Shadow CPU in this process, as a fraction of one core over the last ``WINDOW``."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.usage = 0.0
        self.request_cpu = 0.0  # estimated seconds spent on request paths (GIL-protected adds)
        self._lock = threading.Lock()
        self._samples: deque[tuple[float, float]] = deque()
        self._next = 0.0
        self._clock: int | None = None
        self._clock_tid = 0

    def charge(self, requests: int = 1) -> None:
        """A shadowed request went through the request path (an estimate, not a measure)."""
        self.request_cpu += REQUEST_PATH_COST * requests

    def over(self, budget: float) -> bool:
        """Whether shadow work is over ``budget`` (a fraction of one core) right now."""
        now = time.monotonic()
        if now >= self._next:
            self.sample(now)
        return self.usage > budget

    def sample(self, now: float) -> None:
        if not self._lock.acquire(blocking=False):
            return  # another thread is sampling: its figure will do
        try:
            self._next = now + SAMPLE_EVERY
            total = self.request_cpu + self._background_cpu()
            samples = self._samples
            samples.append((now, total))
            # The baseline: the last sample at least a window old (older ones go), else the
            # first. Spend over max(window, age of the baseline): a burst shorter than the
            # window is allowed up to budget x window of CPU (a test suite's hundred requests,
            # a deploy's warm-up), a sustained rate is measured as such.
            while len(samples) > 2 and samples[1][0] <= now - WINDOW:
                samples.popleft()
            then, before = samples[0]
            self.usage = (total - before) / max(WINDOW, now - then)
        finally:
            self._lock.release()

    def _background_cpu(self) -> float:
        tid = background_thread_id()
        if not tid:
            return 0.0
        if tid != self._clock_tid:
            try:
                self._clock = time.pthread_getcpuclockid(tid)
            except (AttributeError, OSError):  # not on this platform: the estimate only
                self._clock = None
            self._clock_tid = tid
        if self._clock is None:
            return 0.0
        try:
            return time.clock_gettime(self._clock)
        except OSError:
            return 0.0


_meter: CpuMeter | None = None
_meter_lock = threading.Lock()


def meter() -> CpuMeter:
    """This process's meter (a forked child gets its own)."""
    global _meter
    m = _meter
    if m is not None and m.pid == os.getpid():
        return m
    with _meter_lock:
        if _meter is None or _meter.pid != os.getpid():
            _meter = CpuMeter()
        return _meter
