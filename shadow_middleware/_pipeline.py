"""One process's shadow machinery: the per-target state, the dispatcher, the counters.

A :class:`Pipeline` belongs to one ``Shadow`` engine in one process; a forked worker
gets a fresh one (threads and locks do not survive ``fork``). It is the engine side of
both narrow interfaces: the per-request tap hands it jobs (``_tap.Owner``), and the
dispatcher calls it back on its loop (``_dispatch.Sink``) to start spans, judge finished
jobs and record telemetry. It also keeps the books that make ``flush()`` and the
"every eligible request ends in exactly one counted outcome" promise work.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from ._budget import meter
from ._circuit import CircuitBreaker
from ._config import ShadowConfig
from ._dispatch import Dispatcher, HTTPClient, Job, Primary, TargetState
from ._http import MiniHTTPClient
from ._judge import early_result, judge, unjudged_result, warn_missing_fields
from ._outcomes import OUTCOMES, Outcome, Reason
from ._request import Request
from ._result import Result
from ._tap import Tap
from ._telemetry import Telemetry
from ._wire import outgoing_headers

__all__ = ["Pipeline", "default_client"]

logger = logging.getLogger("shadow_middleware")

#: Builds the shadow HTTP client, on the dispatcher's thread (the benchmark swaps it).
default_client: Callable[[int], HTTPClient] = MiniHTTPClient

# An outcome decided in a request thread, waiting for its span on the dispatcher's thread.
_Record = tuple[Result, Any, list[tuple[str, str]], int, int]

#: Refusals (``dropped``) are coalesced: counted at once, but one span per target, route and
#: reason every COALESCE_EVERY seconds (and at flush / close), carrying the count
#: (``shadow.coalesced_count``). A refused shadow must cost next to nothing: a span per refusal
#: made the shadow machinery busiest exactly when a slow candidate had most requests refused.
COALESCE_EVERY = 1.0


class Pipeline:
    """Parameters:
    config: the engine's configuration.
    telemetry: where spans and metrics go.
    rates: the live sample rate of each target, by name.
    """

    def __init__(self, config: ShadowConfig, telemetry: Telemetry, rates: Mapping[str, float]) -> None:
        self.config = config
        self.pid = os.getpid()
        self._telemetry = telemetry
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self.states = {
            t.name: TargetState(
                t, rates[t.name], CircuitBreaker(config.circuit_failures, config.circuit_cooldown, t.name)
            )
            for t in config.targets
        }
        self._target_header_names = {t.name: frozenset(k.lower() for k in t.headers) for t in config.targets}
        self._dispatcher: Dispatcher | None = None
        self._stats = {t.name: dict.fromkeys(OUTCOMES, 0) for t in config.targets}
        self._closed = False
        # Flush bookkeeping: every accepted job and every queued record has a sequence
        # number until its span has ended.
        self._seq = 0
        self._incomplete: dict[int, None] = {}
        self._flush_waiters = 0
        self.internal_errors = 0
        self._missing_warned: set[str] = set()  # Compare.fields pointers logged as missing
        # (target, route, reason) -> [count, the first request, its time_ns]
        self._coalesced: dict[tuple[str, str, str], list[Any]] = {}
        self._coalesce_armed = False
        self.cpu_budget = config.cpu_budget  # live: Shadow.set_cpu_budget changes it

    # ---- counters ----------------------------------------------------------------

    def stats_by_target(self) -> dict[str, dict[str, int]]:
        with self._lock:
            return {name: dict(counts) for name, counts in self._stats.items()}

    def _count(self, target: str, outcome: str, tap: Any, finished_job: bool) -> None:
        """Count one exchange's outcome: ``tap``'s, for ``target``; ``finished_job``: it ends
        an accepted job (else it was decided before any call). The helper process
        (``isolation="process"``) also reports it back to the app here."""
        with self._lock:
            self._stats[target][outcome] += 1

    # ---- the tap's side (request threads) ------------------------------------------

    def open(self, request: Request, chosen: list[TargetState], deferred: bool) -> Tap:
        """The tap of one request for which ``chosen`` targets were sampled."""
        return Tap(self, request, chosen, deferred)

    def submit(self, job: Job) -> Reason | None:
        """Queue a job; returns a drop reason when it was refused."""
        budget = self.cpu_budget
        if budget > 0.0 and job.tap._deferred and not meter().admit(budget):
            # A json: sample key decides only now; any other request was admitted in Shadow.begin.
            return Reason.CPU_BUDGET
        with self._lock:
            if self._closed:
                return Reason.SHUTDOWN
            self._seq += 1
            job.seq = self._seq
            self._incomplete[job.seq] = None
        reason = self._dispatcher_for_process().admit(job)
        if reason is not None:
            self._retire(job.seq)
        return reason

    def end_early(self, tap: Tap, state: TargetState, outcome: Outcome, reason: Reason) -> None:
        """An exchange that ends before any shadow call (skipped, dropped): counted here,
        its span recorded on the dispatcher thread, never in the request's; a refusal
        (dropped) only adds to its coalesced span."""
        target = state.target
        if outcome is Outcome.DROPPED:
            self._count(target.name, outcome, tap, False)
            self.coalesce(target.name, tap.request, reason, 1)
            return
        result = early_result(target, tap.request, outcome, reason)
        result.correlation_id = tap.correlation_id
        result.inputs = tap.inputs
        self._count(target.name, outcome, tap, False)
        with self._lock:
            self._seq += 1
            seq = self._seq
            self._incomplete[seq] = None
        record: _Record = (result, tap.ctx, tap.request.headers, time.time_ns(), seq)
        refused = self._dispatcher_for_process().emit(record)
        if refused == "closed":
            self.emit(record)  # shutting down: nothing left to protect
        elif refused is not None:
            # Backlog full: the outcome is still counted and in the metrics; its span is shed.
            try:
                self._telemetry.record_metrics(result)
            except Exception as exc:
                self.error(exc)
            finally:
                self._retire(seq)

    def would_refuse(self, chosen: list[TargetState]) -> Reason | None:
        """The reason every chosen target would refuse a job now (queue full, circuit open),
        else None: such a request is refused in ``Shadow.begin``, before anything is copied."""
        dispatcher = self._dispatcher
        if dispatcher is None or len(chosen) != 1:
            return None
        return dispatcher.would_refuse(chosen[0])

    def refuse(self, request: Request, chosen: list[TargetState], reason: Reason) -> None:
        """Refuse a request's shadows at admission, before any copy (``dropped``, ``reason``)."""
        for state in chosen:
            self._count(state.target.name, Outcome.DROPPED, None, False)
            self.coalesce(state.target.name, request, reason, 1)

    def coalesce(self, target: str, request: Request, reason: str, count: int) -> None:
        """Add ``count`` refusals (already counted) of requests like ``request`` to the
        coalesced span of their interval (the first one's method, path and query stand for all)."""
        key = (target, request.route, reason)
        with self._lock:
            entry = self._coalesced.get(key)
            if entry is not None:
                entry[0] += count
                return
            self._coalesced[key] = [count, request, time.time_ns()]
            arm = not self._coalesce_armed
            self._coalesce_armed = True
            closed = self._closed
        if closed:
            self.flush_coalesced()  # shutting down: nothing left to protect
        elif arm:
            self._dispatcher_for_process().later(COALESCE_EVERY, self.flush_coalesced)

    def flush_coalesced(self) -> None:
        """Record the coalesced spans of the interval, and hand the interval's
        ``shadow.requests`` counts to the SDK."""
        with self._lock:
            table, self._coalesced = self._coalesced, {}
            self._coalesce_armed = False
        for (name, _, reason), (count, request, _) in table.items():
            try:
                target = self.states[name].target
                result = early_result(target, request, Outcome.DROPPED, Reason(reason))
                result.coalesced_count = count
                # A root span: it stands for many requests, of as many traces.
                self._telemetry.finish(None, result)
            except Exception as exc:
                self.error(exc)
        try:
            self._telemetry.flush_counts()
        except Exception as exc:
            self.error(exc)

    def _arm_interval(self) -> None:
        """The interval's timer (loop thread), if none is armed: counts leave within a second."""
        with self._lock:
            if self._coalesce_armed:
                return
            self._coalesce_armed = True
        dispatcher = self._dispatcher
        if dispatcher is not None:
            dispatcher.later(COALESCE_EVERY, self.flush_coalesced)

    def deliver(self, jobs: list[Job], primary: Primary) -> None:
        dispatcher = self._dispatcher
        if dispatcher is not None:
            dispatcher.deliver(jobs, primary)

    def internal_error(self, exc: BaseException) -> None:
        self.error(exc)

    # ---- the dispatcher's side (its loop thread) -------------------------------------

    def start(self, job: Job) -> None:
        # The span starts with the shadow call, and the call carries that span's traceparent.
        tap: Tap = job.tap
        job.start_ns = time.time_ns()
        job.span = self._telemetry.start_span(
            tap.ctx, tap.request.headers, "shadow " + tap.request.route, job.start_ns
        )
        target = job.state.target
        job.headers = outgoing_headers(
            tap.forward,
            target,
            self._target_header_names[target.name],
            self._telemetry.propagation_headers(job.span),
        )

    def done(self, job: Job) -> None:
        try:
            result = judge(job, self.config)
            if result.missing_fields:
                warn_missing_fields(result, self._missing_warned)
        except Exception as exc:
            self.error(exc)
            result = unjudged_result(job)
        self._count(result.target, result.outcome, job.tap, True)
        try:
            self._telemetry.finish(job.span, result)
        except Exception as exc:
            self.error(exc)
        finally:
            job.span = None
            job.body = b""
            self._retire(job.seq)
        if not self._coalesce_armed:
            self._arm_interval()

    def emit(self, record: Any) -> None:
        result, ctx, headers, start_ns, seq = record
        try:
            span = self._telemetry.start_span(ctx, headers, "shadow " + result.route, start_ns)
            self._telemetry.finish(span, result)
        except Exception as exc:
            self.error(exc)
        finally:
            self._retire(seq)
        if not self._coalesce_armed:
            self._arm_interval()

    def error(self, exc: BaseException) -> None:
        self.internal_errors += 1
        logger.warning("shadow_middleware internal error (ignored): %r", exc, exc_info=exc)

    # ---- lifecycle -----------------------------------------------------------------

    def _dispatcher_for_process(self) -> Dispatcher:
        dispatcher = self._dispatcher
        if dispatcher is not None:
            return dispatcher
        with self._lock:
            if self._dispatcher is None:
                cap = self.config.max_response_bytes
                self._dispatcher = Dispatcher(
                    self.states,
                    self.config.max_queue,
                    self.config.primary_timeout,
                    client=lambda: default_client(cap),
                    sink=self,
                )
            return self._dispatcher

    def _retire(self, seq: int) -> None:
        with self._lock:
            self._incomplete.pop(seq, None)
            if self._flush_waiters:
                self._cond.notify_all()

    def flush(self, timeout: float) -> bool:
        """Wait until every job accepted so far has finished and its span ended (and the
        coalesced spans of refusals so far are recorded)."""
        self.flush_coalesced()
        deadline = time.monotonic() + timeout
        with self._cond:
            horizon = self._seq
            self._flush_waiters += 1
            try:
                while self._incomplete and next(iter(self._incomplete)) <= horizon:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return False
                    self._cond.wait(remaining)
                return True
            finally:
                self._flush_waiters -= 1

    def close(self, timeout: float) -> None:
        """Refuse new work, flush within ``timeout``, then cancel and count what is left."""
        with self._lock:
            self._closed = True
        dispatcher = self._dispatcher
        if dispatcher is None:
            return
        start = time.monotonic()
        self.flush(timeout)
        dispatcher.close(max(0.0, timeout - (time.monotonic() - start)))
