"""The background dispatcher: one daemon thread running its own asyncio loop.

Why a thread of its own rather than the app's loop: WSGI apps have no loop, and an
ASGI app's loop may be short-lived (a test client runs each request in a fresh
loop). Requests hand work over through a lock-protected inbox; the loop is woken
once per batch, not once per item, so a burst costs one self-pipe write.

Admission (the bounds) is decided in the caller's thread, under the same lock, so
a full queue is refused immediately without touching the loop.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._client import CandidateResponse, make_client

if TYPE_CHECKING:
    from ._config import ShadowTarget


@dataclass(slots=True)
class Primary:
    """What production answered (or why there is nothing to compare with)."""

    status: int | None
    content_encoding: str
    body: bytes
    duration_ms: float | None
    failure: str | None  # a skip reason when production has no usable answer


class Job:
    """One shadow exchange: one request copied to one target."""

    __slots__ = (
        "awaiting",
        "body",
        "candidate",
        "candidate_ms",
        "error",
        "exchange",
        "finished",
        "headers",
        "method",
        "primary",
        "probe",
        "seq",
        "span",
        "start_ns",
        "state",
        "timer",
        "url",
    )

    def __init__(
        self,
        state: TargetState,
        method: str,
        url: str,
        headers: list[tuple[str, str]],
        body: bytes,
        exchange: Any,
    ) -> None:
        self.state = state
        self.method = method
        self.url = url
        self.headers = headers
        self.body = body
        self.exchange = exchange  # the request this job copies (owned by the engine)
        self.seq = 0
        self.span: Any = None
        self.start_ns = 0
        self.candidate: CandidateResponse | None = None
        self.candidate_ms: float | None = None
        self.error: str | None = None  # "timeout", an exception class name, "shutdown"
        self.primary: Primary | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.finished = False
        self.probe = False  # the one job let through a half-open circuit
        self.awaiting = False  # the candidate answered; production has not (yet)


class TargetState:
    """Per-process runtime state of one target."""

    __slots__ = ("active", "cooldown", "failures", "open_until", "probing", "rate", "target", "waiting")

    def __init__(self, target: ShadowTarget) -> None:
        self.target = target
        self.rate = target.sample_rate
        self.active = 0  # jobs started (or about to be) and not yet released
        self.waiting: deque[Job] = deque()
        # Circuit breaker: consecutive failures; while open, jobs are not attempted.
        self.failures = 0
        self.open_until = 0.0  # time.monotonic(); 0.0 = closed
        self.probing = False
        self.cooldown = 0.0


Hook = Callable[[Job], None]


class Dispatcher:
    """Runs shadow calls on a private loop; bounded by ``max_queue`` and per-target concurrency."""

    def __init__(
        self,
        states: dict[str, TargetState],
        max_queue: int,
        max_response_bytes: int,
        primary_timeout: float,
        circuit_failures: int,
        circuit_cooldown: float,
        on_start: Hook,
        on_done: Hook,
        on_emit: Callable[[Any], None],
        on_error: Callable[[BaseException], None],
    ) -> None:
        self.pid = os.getpid()
        self._states = states
        self._max_queue = max_queue
        self._primary_timeout = primary_timeout
        self._circuit_failures = circuit_failures
        self._circuit_cooldown = circuit_cooldown
        self._on_start = on_start  # builds the span and final headers, on the loop
        self._on_done = on_done  # compares and emits, on the loop, once both answers are in
        self._on_emit = on_emit  # emits an outcome decided in a request thread (skipped, dropped)
        self._emits = 0
        self._max_emits = max(1000, max_queue)
        self._on_error = on_error
        self._lock = threading.Lock()
        self._inbox: list[tuple[int, Any]] = []
        self._wake_pending = False
        self._waiting = 0
        self._closed = False
        self._open: set[Job] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._client = make_client(max_response_bytes)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="shadow-dispatcher", daemon=True)
        self._thread.start()

    # ---- called from request threads ---------------------------------------------

    def admit(self, job: Job) -> str | None:
        """Accept ``job`` (None) or refuse it, returning the drop reason."""
        state = job.state
        with self._lock:
            if self._closed:
                return "shutdown"
            if state.open_until:
                if state.probing or time.monotonic() < state.open_until:
                    return "circuit_open"
                state.probing = True  # half-open: this job probes whether the target is back
                job.probe = True
            if state.active < state.target.max_concurrency:
                state.active += 1
                self._push_locked(_START, job)
            elif self._waiting < self._max_queue:
                state.waiting.append(job)
                self._waiting += 1
            else:
                if job.probe:
                    state.probing = False
                return "queue_full"
            self._open.add(job)
        return None

    def deliver(self, jobs: list[Job], primary: Primary) -> None:
        """Hand production's answer to the jobs of one request."""
        with self._lock:
            if self._closed:
                return
            for job in jobs:
                job.primary = primary
                # Usually production finishes first and the job picks the answer up when its
                # own call ends: no wake-up. Only a job already waiting needs the loop.
                if job.awaiting:
                    self._push_locked(_PRIMARY, job)

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
            self._push_locked(_EMIT, record)
        return None

    def _push_locked(self, kind: int, payload: Any) -> None:
        self._inbox.append((kind, payload))
        if not self._wake_pending:
            self._wake_pending = True
            try:
                self._loop.call_soon_threadsafe(self._drain)
            except RuntimeError:  # loop already closed: shutdown raced us
                self._wake_pending = False

    # ---- the loop thread ---------------------------------------------------------

    def _run(self) -> None:
        _name_native_thread(b"shadow-dispatch")
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_forever()
        finally:
            self._loop.close()

    def _drain(self) -> None:
        with self._lock:
            items = self._inbox
            self._inbox = []
            self._wake_pending = False
        for kind, payload in items:
            try:
                if kind == _START:
                    self._start(payload)
                elif kind == _PRIMARY:
                    if payload.awaiting:
                        self._complete(payload)
                else:
                    with self._lock:
                        self._emits -= 1
                    self._on_emit(payload)
            except BaseException as exc:  # never let one job kill the loop
                self._on_error(exc)

    def _start(self, job: Job) -> None:
        if job.finished:
            return
        task = self._loop.create_task(self._call(job))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _call(self, job: Job) -> None:
        started = time.perf_counter()
        try:
            self._on_start(job)
            target = job.state.target
            job.candidate = await self._client.send(
                job.method, job.url, job.headers, job.body, target.timeout
            )
        except asyncio.CancelledError:
            job.error = "shutdown"
            raise
        except TimeoutError:
            job.error = "timeout"
        except Exception as exc:
            job.error = type(exc).__name__
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
        """Feed the circuit breaker: no answer or a 5xx is a failure, any other answer a success."""
        if self._circuit_failures <= 0:
            return
        state = job.state
        if job.error == "shutdown":
            failed: bool | None = None
        else:
            failed = job.error is not None or job.candidate is None or job.candidate.status >= 500
        with self._lock:
            if job.probe:
                state.probing = False
            if failed is None:
                return
            if not failed:
                state.failures = 0
                state.open_until = 0.0
                state.cooldown = 0.0
                return
            state.failures += 1
            if job.probe:
                # Still down: stay open, twice as long each time, at most a minute.
                state.cooldown = min(max(state.cooldown, self._circuit_cooldown) * 2, 60.0)
                state.open_until = time.monotonic() + state.cooldown
            elif state.failures >= self._circuit_failures and not state.open_until:
                state.cooldown = self._circuit_cooldown
                state.open_until = time.monotonic() + state.cooldown

    def _primary_gave_up(self, job: Job) -> None:
        with self._lock:
            if job.primary is None:
                job.primary = Primary(None, "", b"", None, "primary_timeout")
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
            self._on_done(job)
        except BaseException as exc:
            self._on_error(exc)

    # ---- shutdown ----------------------------------------------------------------

    def close(self, timeout: float) -> None:
        """Cancel whatever is still open, close the client and stop the thread."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if not self._thread.is_alive():
            return
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
                        job.error = "shutdown"
                    if job.primary is None:
                        job.primary = Primary(None, "", b"", None, "shutdown")
                    self._complete(job)
                await self._client.close()
            finally:
                done.set()
                self._loop.stop()

        try:
            asyncio.run_coroutine_threadsafe(shutdown(), self._loop)
        except RuntimeError:
            return
        done.wait(timeout + 2.0)
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=2.0)


_START = 0
_PRIMARY = 1
_EMIT = 2


def _name_native_thread(name: bytes) -> None:
    """Name the OS thread (Linux), so ``top -H`` and /proc show the dispatcher for what it is."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(15, ctypes.c_char_p(name[:15]), 0, 0, 0)  # PR_SET_NAME
    except (OSError, AttributeError):
        pass
