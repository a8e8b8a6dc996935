"""The background dispatcher: an engine's shadow calls, on the process's background loop.

Requests hand work over through a lock-protected inbox; the loop (``_loop``, one thread
per process) is woken once per batch, not once per item, so a burst costs one
self-pipe write.

Admission (the bounds) is decided in the caller's thread, under the same lock, so
a full queue is refused immediately without touching the loop.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any, Protocol

from ._circuit import Admission, CircuitBreaker
from ._http import CandidateResponse, candidate_fault
from ._loop import background_loop, on_background_thread
from ._outcomes import Reason
from ._wire import ShadowURL

logger = logging.getLogger("shadow_middleware")

#: While hand-offs keep coming, the loop drains them every POLL_EVERY seconds instead of being
#: woken for each; after ACTIVE_FOR seconds without one it waits to be woken again.
POLL_EVERY = 0.002
ACTIVE_FOR = 0.1

if TYPE_CHECKING:
    from ._config import ShadowTarget


@dataclass(slots=True)
class Primary:
    """What the primary answered (or why there is nothing to compare with)."""

    status: int | None
    content_encoding: str
    body: bytes
    duration_ms: float | None
    failure: str | None  # a skip reason when the primary has no usable answer


class Job:
    """One shadow exchange: one request copied to one target."""

    __slots__ = (
        "awaiting",
        "body",
        "candidate",
        "candidate_ms",
        "error",
        "finished",
        "headers",
        "method",
        "ours",
        "primary",
        "probe",
        "seq",
        "span",
        "start_ns",
        "state",
        "tap",
        "timer",
        "url",
    )

    def __init__(
        self,
        state: TargetState,
        method: str,
        url: ShadowURL,
        body: bytes,
        tap: Any,
    ) -> None:
        self.state = state
        self.method = method
        self.url = url
        self.headers: list[tuple[str, str]] = []  # set on the loop, with the span's traceparent
        self.body = body
        self.tap = tap  # the request this job copies (a Tap; opaque here)
        self.seq = 0
        self.span: Any = None
        self.start_ns = 0
        self.candidate: CandidateResponse | None = None
        self.candidate_ms: float | None = None
        self.error: str | None = None  # "timeout", an exception class name, "shutdown"
        self.ours = False  # the error is ours (a refused request, a bug), not the candidate's
        self.primary: Primary | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.finished = False
        self.probe = False  # the one job let through a half-open circuit
        self.awaiting = False  # the candidate answered; the primary has not (yet)


class TargetState:
    """Per-process runtime state of one target."""

    __slots__ = ("active", "breaker", "rate", "target", "waiting")

    def __init__(self, target: ShadowTarget, rate: float, breaker: CircuitBreaker) -> None:
        self.target = target
        self.rate = rate  # live: Shadow.set_sample_rate changes it
        self.active = 0  # jobs started (or about to be) and not yet released
        self.waiting: deque[Job] = deque()
        self.breaker = breaker


class HTTPClient(Protocol):
    """What the dispatcher needs of an HTTP client (``_http.MiniHTTPClient``; the
    benchmark injects others). Bounded reads and no redirects are the client's job."""

    async def send(
        self, method: str, url: ShadowURL, headers: list[tuple[str, str]], body: bytes, timeout: float
    ) -> CandidateResponse: ...

    async def close(self) -> None: ...


class Sink(Protocol):
    """The engine side of the dispatcher, called on the dispatcher's loop only."""

    def start(self, job: Job) -> None:
        """Just before the call: start the span and set ``job.headers``."""

    def done(self, job: Job) -> None:
        """Both answers are in (or given up on): compare, count, end the span."""

    def emit(self, record: Any) -> None:
        """Record the telemetry of an outcome decided in a request thread."""

    def error(self, exc: BaseException) -> None:
        """One of our own bugs: count it, never raise it."""


class _Work(Enum):
    START = "start"  # a job may start its call
    PRIMARY = "primary"  # the primary's answer arrived for a job that was waiting for it
    EMIT = "emit"  # telemetry of an outcome decided in a request thread


class Dispatcher:
    """Runs shadow calls on a private loop; bounded by ``max_queue`` and per-target concurrency.

    Parameters:
        states: the per-target state, by target name (shared with the engine).
        max_queue: jobs that may wait for a free concurrency slot, over all targets.
        primary_timeout: seconds a finished call waits for the primary's answer.
        client: a factory called on the loop thread to build the HTTP client.
        sink: the engine's callbacks (see :class:`Sink`).
    """

    def __init__(
        self,
        states: dict[str, TargetState],
        max_queue: int,
        primary_timeout: float,
        client: Callable[[], HTTPClient],
        sink: Sink,
    ) -> None:
        self.pid = os.getpid()
        self._states = states
        self._max_queue = max_queue
        self._primary_timeout = primary_timeout
        self._sink = sink
        self._emits = 0
        self._max_emits = max(1000, max_queue)
        self._lock = threading.Lock()
        self._inbox: list[tuple[_Work, Any]] = []
        self._wake_pending = False  # a drain is scheduled (woken, or the next poll)
        self._active_until = 0.0
        self._waiting = 0
        self._closed = False
        self._open: set[Job] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop = background_loop()
        # Built on the loop's thread: a client may bind to the running loop.
        self._client: HTTPClient = asyncio.run_coroutine_threadsafe(_build(client), self._loop).result()

    # ---- called from request threads ---------------------------------------------

    def admit(self, job: Job) -> Reason | None:
        """Accept ``job`` (None) or refuse it, returning the drop reason."""
        state = job.state
        with self._lock:
            if self._closed:
                return Reason.SHUTDOWN
            admission = state.breaker.admit()
            if admission is Admission.REFUSE:
                return Reason.CIRCUIT_OPEN
            job.probe = admission is Admission.PROBE
            if state.active < state.target.max_concurrency:
                state.active += 1
                self._push_locked(_Work.START, job)
            elif self._waiting < self._max_queue:
                state.waiting.append(job)
                self._waiting += 1
            else:
                if job.probe:
                    state.breaker.cancel_probe()
                return Reason.QUEUE_FULL
            self._open.add(job)
        return None

    def would_refuse(self, state: TargetState) -> Reason | None:
        """Why :meth:`admit` would refuse a job for ``state`` now, if it would (a peek without
        the lock or side effects, so that a request is refused before it is copied; the
        admission itself still decides for the requests let through)."""
        if state.breaker.refusing():
            return Reason.CIRCUIT_OPEN
        if state.active >= state.target.max_concurrency and self._waiting >= self._max_queue:
            return Reason.QUEUE_FULL
        return None

    def deliver(self, jobs: list[Job], primary: Primary) -> None:
        """Hand the primary's answer to the jobs of one request."""
        with self._lock:
            if self._closed:
                return
            for job in jobs:
                job.primary = primary
                # Usually the primary finishes first and the job picks the answer up when its
                # own call ends: no wake-up. Only a job already waiting needs the loop.
                if job.awaiting:
                    self._push_locked(_Work.PRIMARY, job)

    def emit(self, record: Any) -> str | None:
        """Queue the telemetry of an outcome decided in a request thread, so that span
        recording and export never run there. Refused (with the reason) when closed or
        when the backlog is full."""
        with self._lock:
            if self._closed:
                return "closed"
            if self._emits >= self._max_emits:
                return "full"
            self._emits += 1
            self._push_locked(_Work.EMIT, record)
        return None

    def later(self, delay: float, callback: Callable[[], None]) -> None:
        """Run ``callback`` on the loop in ``delay`` seconds (any thread; one self-pipe write)."""
        try:
            self._loop.call_soon_threadsafe(self._loop.call_later, delay, callback)
        except RuntimeError:  # loop closed
            pass

    def _push_locked(self, kind: _Work, payload: Any) -> None:
        self._inbox.append((kind, payload))
        if not self._wake_pending:
            self._wake_pending = True
            try:
                self._loop.call_soon_threadsafe(self._drain)
            except RuntimeError:  # loop already closed: shutdown raced us
                self._wake_pending = False

    # ---- the loop thread ---------------------------------------------------------

    def _drain(self) -> None:
        with self._lock:
            items = self._inbox
            self._inbox = []
            now = time.monotonic()
            if items:
                self._active_until = now + ACTIVE_FOR
            # While work keeps coming the loop drains on a timer, and a hand-off needs no wake-up
            # (a write to the loop's self-pipe, and the wake of a thread that may sleep on
            # another core); idle, it sleeps until the next hand-off wakes it.
            polling = now < self._active_until and not self._closed
            self._wake_pending = polling
        if polling:
            self._loop.call_later(POLL_EVERY, self._drain)
        for kind, payload in items:
            try:
                if kind is _Work.START:
                    self._start(payload)
                elif kind is _Work.PRIMARY:
                    if payload.awaiting:
                        self._complete(payload)
                else:
                    with self._lock:
                        self._emits -= 1
                    self._sink.emit(payload)
            except BaseException as exc:  # never let one job kill the loop
                self._sink.error(exc)

    def _start(self, job: Job) -> None:
        if job.finished:
            return
        # Kept until its coroutine ends (it discards itself there: a done callback would cost
        # one more loop iteration per job).
        self._tasks.add(self._loop.create_task(self._call(job)))

    async def _call(self, job: Job) -> None:
        try:
            await self._exchange(job)
        finally:
            task = asyncio.current_task()
            if task is not None:
                self._tasks.discard(task)

    async def _exchange(self, job: Job) -> None:
        started = time.perf_counter()
        try:
            self._sink.start(job)
            target = job.state.target
            job.candidate = await self._client.send(
                job.method, job.url, job.headers, job.body, target.timeout
            )
        except asyncio.CancelledError:
            job.error = Reason.SHUTDOWN
            raise
        except TimeoutError:
            job.error = "timeout"
        except Exception as exc:
            job.error = type(exc).__name__
            job.ours = not candidate_fault(exc)
        finally:
            job.candidate_ms = (time.perf_counter() - started) * 1000.0
            self._release(job.state)
            self._record_health(job)
        with self._lock:
            ready = job.primary is not None
            job.awaiting = not ready
        if ready:
            self._complete(job)
        else:
            job.timer = self._loop.call_later(self._primary_timeout, self._primary_gave_up, job)

    def _release(self, state: TargetState) -> None:
        with self._lock:
            if state.waiting and not self._closed:
                nxt = state.waiting.popleft()
                self._waiting -= 1
            else:
                state.active -= 1
                return
        self._start(nxt)

    def _record_health(self, job: Job) -> None:
        """Feed the circuit breaker: no answer or a 5xx is a failure, any other answer a
        success. Our own errors (``job.ours``) and shutdown say nothing about the candidate."""
        if job.error == Reason.SHUTDOWN or job.ours:
            failed: bool | None = None
        else:
            failed = job.error is not None or job.candidate is None or job.candidate.status >= 500
        error = ""
        if failed:
            candidate = job.candidate
            error = job.error or (f"HTTP {candidate.status}" if candidate is not None else "no answer")
        with self._lock:
            line = job.state.breaker.record(failed, job.probe, error)
        if line is not None:
            logger.warning("%s", line)

    def _primary_gave_up(self, job: Job) -> None:
        with self._lock:
            if job.primary is None:
                job.primary = Primary(None, "", b"", None, Reason.PRIMARY_TIMEOUT)
        self._complete(job)

    def _complete(self, job: Job) -> None:
        if job.finished:
            return
        job.finished = True
        if job.timer is not None:
            job.timer.cancel()
        with self._lock:
            self._open.discard(job)
        try:
            self._sink.done(job)
        except BaseException as exc:
            self._sink.error(exc)

    # ---- shutdown ----------------------------------------------------------------

    def close(self, timeout: float) -> None:
        """Cancel whatever is still open and close the client (the shared loop runs on)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if on_background_thread():
            return  # cannot wait for the loop from the loop itself
        done = threading.Event()

        async def shutdown() -> None:
            try:
                for task in list(self._tasks):
                    task.cancel()
                if self._tasks:
                    await asyncio.wait(list(self._tasks), timeout=max(timeout, 0.1))
                with self._lock:
                    leftover = list(self._open)
                    for state in self._states.values():
                        state.waiting.clear()
                    self._waiting = 0
                for job in leftover:
                    if job.error is None and job.candidate is None:
                        job.error = Reason.SHUTDOWN
                    if job.primary is None:
                        job.primary = Primary(None, "", b"", None, Reason.SHUTDOWN)
                    self._complete(job)
                await self._client.close()
            finally:
                done.set()

        try:
            asyncio.run_coroutine_threadsafe(shutdown(), self._loop)
        except RuntimeError:
            return
        done.wait(timeout + 2.0)


async def _build(factory: Callable[[], HTTPClient]) -> HTTPClient:
    return factory()
