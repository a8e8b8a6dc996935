"""The CPU budget of shadow work inside the app process (``ShadowConfig.cpu_budget``).

What shadowing costs the app process is measured, not assumed: the background thread's own
CPU clock (``_loop``: every engine's dispatcher, HTTP client, comparison, spans and metrics
run there), the CPU clocks of the OpenTelemetry SDK's export threads (named ``Otel...``: the
batch span processor encodes and sends every shadow span there — about as much CPU again as
the dispatcher's; the app's own spans, if it records any through the same SDK, count too, so
the budget errs toward production) plus an estimate of what each shadowed request costs on
the request path (the copies and the hand-off: a constant per shadowed request, measured
with ``bench.micro``), over a sliding window of one second.

Admission is not on/off: each budget has an admitted share, corrected at every sample by
(budget / usage) ** GAIN — damped, because the usage is a one-second average and admitted work
shows in the clocks later (the SDK's thread encodes its spans afterwards) — and a request is
admitted with that probability; on/off admission overshot the budget ~2x in the benchmark.
Sampling happens on the request path, at most every SAMPLE_EVERY seconds (a few
``clock_gettime`` of other threads' CPU clocks), so no timer runs while nothing is shadowed.

One meter per process, as there is one background thread per process: engines with
different budgets compare the same measurement with their own figure.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections import deque
from typing import Any

from ._loop import background_thread_id

__all__ = ["PROCESS_PATH_COST", "REQUEST_PATH_COST", "CpuMeter", "meter"]

#: Seconds of CPU one shadowed request costs the app outside the measured threads: the request
#: path (the adapter's wrapping, the capped copies, the body's JSON for a correlation id and
#: recorded inputs, the hand-off) and the GIL hand-overs it causes. ``bench.micro`` (the tap
#: API alone) shows ~20 µs; the FastAPI example under load used ~2x a 0.10 budget with 20 µs
#: assumed (bench/RESULTS.md, issue 19), i.e. ~150 µs per admitted shadow not on the measured
#: clocks; 100 µs errs toward production without refusing much in thread-light apps.
REQUEST_PATH_COST = 100e-6
#: The same with ``isolation="process"``: the capture, one marshal and one send (the app's
#: whole added CPU per shadowed request in the benchmark's arm 2b: +40 µs).
PROCESS_PATH_COST = 40e-6
#: The window the usage is measured over, and how often it is sampled.
WINDOW = 1.0
SAMPLE_EVERY = 0.05
#: The OpenTelemetry SDK's worker threads (batch span processor, periodic metric reader).
SDK_THREADS = ("Otel",)
#: The smallest admitted share: a budget far below the usage still lets a shadow through now
#: and then (and is followed again quickly when the usage falls).
MIN_SHARE = 0.001
#: Each sample corrects the share by (budget / usage) ** GAIN: about the full correction over a
#: window (the usage is a one-second average, so a stronger gain overshoots and oscillates).
GAIN = 0.2


class CpuMeter:
    """Shadow CPU in this process, as a fraction of one core over the last ``WINDOW``."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.usage = 0.0
        self.request_cpu = 0.0  # estimated seconds spent on request paths (GIL-protected adds)
        self._lock = threading.Lock()
        self._samples: deque[tuple[float, float]] = deque()
        self._next = 0.0
        self._shares: dict[float, float] = {}  # budget -> the share of requests admitted
        self._threads_cpu = 0.0  # the measured threads' CPU, added up from their deltas
        self._last: dict[int, float] = {}  # each measured thread's clock when last read
        self._clocks: dict[int, int | None] = {}

    def charge(self, seconds: float = REQUEST_PATH_COST) -> None:
        """A shadowed request went through the request path (an estimate, not a measure)."""
        self.request_cpu += seconds

    def admit(self, budget: float) -> bool:
        """Whether to admit one more shadow under ``budget`` (a fraction of one core)."""
        now = time.monotonic()
        if now >= self._next:
            self.sample(now)
        share = self._shares.get(budget)
        if share is None:
            if len(self._shares) > 64:  # budgets changed live many times: start afresh
                self._shares = {}
            self._shares[budget] = share = 1.0
        return share >= 1.0 or random.random() < share

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
            usage = self.usage = (total - before) / max(WINDOW, now - then)
            shares = self._shares
            for budget, share in list(shares.items()):
                factor = (budget / usage) ** GAIN if usage > 0.0 else 2.0
                shares[budget] = min(1.0, max(MIN_SHARE, share * factor))
        finally:
            self._lock.release()

    def _background_cpu(self) -> float:
        """The measured threads' CPU seconds, as a running total: a thread that ends leaves
        what it spent in the total (deltas are added, never a sum that could go down)."""
        tids = [background_thread_id()]
        tids += [t.ident for t in threading.enumerate() if t.name.startswith(SDK_THREADS) and t.ident]
        last = self._last
        seen: dict[int, float] = {}
        for tid in tids:
            if not tid:
                continue
            now = self._thread_cpu(tid)
            if now is None:
                continue
            before = last.get(tid)
            if before is not None and now > before:
                self._threads_cpu += now - before
            seen[tid] = now
        self._last = seen
        if len(self._clocks) > 64:
            self._clocks = {tid: c for tid, c in self._clocks.items() if tid in seen}
        return self._threads_cpu

    def _thread_cpu(self, tid: int) -> float | None:
        clocks = self._clocks
        if tid not in clocks:
            getter: Any = getattr(time, "pthread_getcpuclockid", None)
            try:
                clocks[tid] = getter(tid) if getter is not None else None
            except OSError:  # not on this platform: the estimate only
                clocks[tid] = None
        clock = clocks[tid]
        if clock is None:
            return None
        try:
            return time.clock_gettime(clock)
        except OSError:
            return None  # the thread has ended


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
