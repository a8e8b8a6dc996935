"""``isolation="process"``, the helper's side: ``python -m shadow_middleware._helper FD PARENT``.

Started by an app process (``_isolation.HelperClient``) with one end of a private socketpair
as file descriptor ``FD``. It reads the configuration first, configures OpenTelemetry
(``telemetry_setup``, else the standard ``OTEL_*`` variables), then replays every exchange
the app sends into a real :class:`~._tap.Tap` owned by a :class:`~._pipeline.Pipeline`: the
thread mode's own machinery, so every span attribute, metric, bound and outcome is the same.
The outcomes go back to the app (``stats()``) in batches, every 50 ms.

It exits when the app closes it (after draining within the timeout the app gives), and when
the app goes away: EOF on the socket, or SIGTERM (``PR_SET_PDEATHSIG`` on Linux, even on
``kill -9`` of the app); it then drains within ``drain_timeout`` and flushes its exporters
first. SIGINT is ignored: a terminal's Ctrl-C reaches the whole process group, and the app's
own shutdown decides when the helper stops.
"""

from __future__ import annotations

import copy
import logging
import os
import select
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, cast

from ._config import ShadowConfig
from ._dispatch import Job
from ._helperwire import (
    CLOSE,
    CLOSED,
    CONFIG,
    COUNTS,
    EXCHANGE,
    FAILED,
    FLUSH,
    FLUSHED,
    OUTCOME_SLOTS,
    OUTCOMES_MSG,
    Exchange,
    FrameReader,
    frame,
)
from ._loop import _name_native_thread
from ._outcomes import OUTCOMES, Outcome, Reason
from ._pipeline import Pipeline
from ._request import Request
from ._tap import Tap
from ._telemetry import Telemetry, configure_from_env, remote_parent, run_setup

__all__ = ["main"]

logger = logging.getLogger("shadow_middleware")

#: Outcomes are reported at least this often (seconds), or at once when this many are waiting.
REPORT_EVERY = 0.05
REPORT_BATCH = 512
#: While messages keep coming, the helper reads the socket every POLL_EVERY seconds instead of
#: waiting on it: a write to a socket someone waits on wakes that process, which costs the
#: writer (the app) ~20 us when the helper sleeps on another core (an inter-processor
#: interrupt; measured here, against ~6 us without). After ACTIVE_FOR seconds without a
#: message it waits on the socket again (no timer while idle).
POLL_EVERY = 0.002
ACTIVE_FOR = 0.1
_DONTWAIT = getattr(socket, "MSG_DONTWAIT", 0)
_DROPPED = OUTCOMES.index(Outcome.DROPPED)
_DROPPED_NAME = str(Outcome.DROPPED)


class Outbox:
    """What goes back to the app: outcome reports (batched) and replies, in order, written by
    one thread (blocking writes: the app's reader thread always reads)."""

    def __init__(self, sock: socket.socket, errors: Callable[[], dict[int, int]]) -> None:
        self._sock = sock
        self._errors_seen = errors
        self._cond = threading.Condition()
        self._finished: list[tuple[int, tuple[int, ...]]] = []
        self._replies: list[Any] = []
        self._stopping = False
        self.errors: dict[int, int] = {}  # each engine's internal errors already reported
        self.broken = False
        self._thread = threading.Thread(target=self._run, name="shadow-helper-out", daemon=True)
        self._thread.start()

    def finished(self, seq: int, codes: tuple[int, ...]) -> None:
        with self._cond:
            self._finished.append((seq, codes))
            if len(self._finished) >= REPORT_BATCH:
                self._cond.notify()

    def reply(self, message: Any) -> None:
        """Send ``message`` after every outcome reported before it."""
        with self._cond:
            self._replies.append(message)
            self._cond.notify()

    def stop(self, timeout: float = 2.0) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                if not (self._replies or self._stopping or len(self._finished) >= REPORT_BATCH):
                    self._cond.wait(REPORT_EVERY)
                finished, self._finished = self._finished, []
                replies, self._replies = self._replies, []
                stopping = self._stopping
            try:
                errors = []
                for engine, total in self._errors_seen().items():
                    if total > self.errors.get(engine, 0):
                        errors.append((engine, total - self.errors.get(engine, 0)))
                        self.errors[engine] = total
                if finished or errors:
                    self._sock.sendall(frame((OUTCOMES_MSG, finished, errors)))
                for message in replies:
                    self._sock.sendall(frame(message))
            except OSError:
                self.broken = True  # the app is gone: the main loop sees EOF
                return
            if stopping:
                return


class ReplayTap(Tap):
    """A :class:`Tap` fed from one message, with what the app needs back: the message's
    sequence number and the outcome of each of its targets."""

    __slots__ = ("codes", "pending", "replayed", "reported", "seq")

    seq: int  # the message's
    codes: list[int]  # the outcome of each target counted so far (``OUTCOME_SLOTS`` codes)
    pending: int  # accepted jobs not finished yet
    replayed: bool  # the whole message went through the tap
    reported: bool  # the outcomes went back to the app


class HelperPipeline(Pipeline):
    """The thread mode's pipeline, reporting each message's outcomes back to the app once
    every one of them is counted."""

    def __init__(self, config: ShadowConfig, telemetry: Telemetry, outbox: Outbox) -> None:
        super().__init__(config, telemetry, {t.name: t.sample_rate for t in config.targets})
        self.cpu_budget = 0.0  # the app's budget is the app's: the helper has its own process
        self._outbox = outbox
        #: Replaying what waited in the socket while this helper started (see ``submit``).
        self.starting = True
        self._by_index = [self.states[t.name] for t in config.targets]
        self._codes = {
            (t.name, outcome): i * OUTCOME_SLOTS + j
            for i, t in enumerate(config.targets)
            for j, outcome in enumerate(OUTCOMES)
        }

    @property
    def telemetry(self) -> Telemetry:
        return self._telemetry

    def replay(self, x: Exchange) -> None:
        seq, deferred, body, reason, status = x.seq, x.deferred, x.body, x.reason, x.status
        tap: ReplayTap | None = None
        try:
            states = [self._by_index[i] for i in x.targets]
            if deferred:
                # Sampling by a body value is decided here, at the rate the app had then.
                for state, rate in zip(states, x.rates, strict=True):
                    state.rate = rate
            tap = ReplayTap(self, x.request, states, deferred)
            tap.seq = seq
            tap.codes = []
            tap.pending = 0
            tap.replayed = False
            tap.reported = False
            tap.ctx = remote_parent(x.traceparent, x.tracestate)
            if body is None:
                tap.skip_all(Reason(cast(str, reason)))  # with no body, the app says why
            else:
                tap.feed(body)
                tap.body_complete()
                if status is not None:
                    tap.response_start(status, x.encoding)
                    tap.response_body(x.resp)
                    tap.start = time.perf_counter() - x.primary_ms / 1000.0  # production's duration
                    tap.response_complete()
                tap.finish(Reason(reason) if reason is not None else None)
        except Exception as exc:
            self.error(exc)
        finally:
            if tap is None:
                self._outbox.finished(seq, ())
            else:
                with self._lock:
                    tap.replayed = True
                    ready = tap.pending == 0 and not tap.reported
                    tap.reported = tap.reported or ready
                if ready:
                    self._outbox.finished(seq, tuple(tap.codes))

    def submit(self, job: Job) -> Reason | None:
        tap = job.tap
        if self.starting:
            # What the app sent while this helper started reaches the candidate as one burst,
            # from a process still warming up (imports, first connections, at nice 19): a
            # timeout then says little about the candidate, and a handful of them opened the
            # circuit ("failed 5 times in a row") for a candidate with a few slow answers. The
            # breaker does not count them (as for our own errors); refused connections still
            # do (set again from the error), so a dead candidate is paused as before.
            job.ours = True
        with self._lock:
            tap.pending += 1  # before the job can finish on the loop
        reason = super().submit(job)
        if reason is not None:
            with self._lock:
                tap.pending -= 1
        return reason

    def _count(self, target: str, outcome: str, tap: Any, finished_job: bool) -> None:
        code = self._codes[(target, outcome)]
        with self._lock:
            self._stats[target][outcome] += 1
            if not isinstance(tap, ReplayTap):
                return
            tap.codes.append(code)
            if finished_job:
                tap.pending -= 1
            ready = tap.replayed and tap.pending == 0 and not tap.reported
            tap.reported = tap.reported or ready
        if ready:
            self._outbox.finished(tap.seq, tuple(tap.codes))


def _die_with_parent(parent: int) -> None:
    """SIGTERM when the parent goes, however it goes (Linux); exit now if it is already gone."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, int(signal.SIGTERM), 0, 0, 0)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:
        sys.exit(0)


def _setup_logging() -> None:
    """Our warnings (circuit breaker, internal errors) to stderr, unless the setup
    configured logging itself."""
    if logging.getLogger().handlers or logger.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(asctime)s shadow-helper[%(process)d] %(levelname)s %(message)s")
    )
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)


class Telemetries:
    """The helper's telemetry, set up once per ``telemetry_setup`` (None: from the ``OTEL_*``
    variables) and shared by every engine naming it: one helper serves all the engines of
    its app process."""

    def __init__(self, quiet: bool) -> None:
        self._quiet = quiet  # an earlier helper of this app process already warned
        self._made: dict[str | None, Telemetry | str] = {}

    def get(self, config: ShadowConfig) -> Telemetry | str:
        """The engine's telemetry, or why its setup failed."""
        spec = config.telemetry_setup
        made = self._made.get(spec)
        if made is None:
            made = self._make(spec)
            self._made[spec] = made
        link = config.span_placement == "link"
        if isinstance(made, Telemetry) and made._link != link:
            # The same providers and instruments (made twice, the SDK would warn); the span
            # placement is the engine's own.
            made = copy.copy(made)
            made._link = link
        return made

    def _make(self, spec: str | None) -> Telemetry | str:
        if spec is not None:
            try:
                tracer_provider, meter_provider = run_setup(spec)
            except BaseException as exc:
                return f"telemetry_setup {spec!r} failed: {exc!r}"
            _setup_logging()
            return Telemetry(tracer_provider, meter_provider)
        _setup_logging()
        try:
            where = configure_from_env(os.environ)
        except ImportError as exc:
            if not self._quiet:
                logger.warning(
                    "no OpenTelemetry SDK in the helper (%s): shadow spans and metrics are not recorded", exc
                )
        else:
            if "spans: none" in where and not self._quiet:
                logger.warning(
                    "telemetry_setup is not set and no OTEL_TRACES_EXPORTER / OTEL_EXPORTER_OTLP_ENDPOINT "
                    "is: the helper exports no shadow span (%s)",
                    where,
                )
        return Telemetry(None, None)


def _yield_to_the_app() -> None:
    """Never compete with the app for the CPU. ``SCHED_IDLE`` (Linux): the helper runs only
    when a core has nothing else to run, and never preempts the app; where that is refused,
    nice 19 (a nice-19 process weighs 1/68 of a normal one). What it cannot take in time waits
    in the socket, and beyond that is dropped (``queue_full``) and counted by the app: on a
    busy machine shadows are dropped, production is never slowed.

    And it need not share the app's core: an app pinned to one core (``taskset``, a pinned
    worker) makes its helper inherit that mask; the helper moves to the machine's other cores
    when there are any (within what its cgroup allows). A wider mask is left as it is."""
    try:
        os.nice(19 - os.nice(0))
    except OSError:
        pass
    if hasattr(os, "sched_setscheduler") and hasattr(os, "SCHED_IDLE"):
        try:
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        except OSError:
            pass
    if hasattr(os, "sched_getaffinity"):
        try:
            mine = os.sched_getaffinity(0)
            others = set(range(os.cpu_count() or 1)) - mine
            if len(mine) == 1 and others:
                os.sched_setaffinity(0, others)
        except OSError:
            pass  # a cpuset that does not allow them: stay where we are


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    fd, parent = int(args[0]), int(args[1])
    quiet = len(args) > 2 and args[2] == "1"
    sock = socket.socket(fileno=fd)
    sock.setblocking(True)

    def on_sigterm(signum: int, frame_: Any) -> None:
        # The parent is gone (PR_SET_PDEATHSIG) or someone asks us to stop: read nothing more
        # (the blocked recv returns EOF), then drain as on EOF.
        try:
            sock.shutdown(socket.SHUT_RD)
        except OSError:
            pass

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, on_sigterm)
    _die_with_parent(parent)
    _yield_to_the_app()
    _name_native_thread(b"shadow-helper")
    engines = Engines(sock, Telemetries(quiet))
    _serve(sock, engines)
    engines.close_all()
    return 0


class Engines:
    """The pipeline of each engine of the app process, by engine id."""

    def __init__(self, sock: socket.socket, telemetries: Telemetries) -> None:
        self.sock = sock
        self.telemetries = telemetries
        self.pipelines: dict[int, HelperPipeline] = {}
        self.closing: list[threading.Thread] = []
        self.outbox = Outbox(sock, self.errors)

    def errors(self) -> dict[int, int]:
        return {engine: p.internal_errors for engine, p in list(self.pipelines.items())}

    def configure(self, message: Any) -> None:
        _, engine, config_data, path, _ = message
        for entry in reversed(path):
            if entry not in sys.path:
                sys.path.insert(0, entry)
        config = ShadowConfig.from_env({}, base=config_data)
        telemetry = self.telemetries.get(config)
        if isinstance(telemetry, str):
            self.outbox.reply((FAILED, engine, telemetry))
            return  # its exchanges are dropped (no pipeline): the app logs why
        self.pipelines[engine] = HelperPipeline(config, telemetry, self.outbox)

    def caught_up(self) -> None:
        """The socket is empty: what waited while the helper (or an engine) started is replayed."""
        for pipeline in list(self.pipelines.values()):
            pipeline.starting = False

    def exchange(self, message: Any) -> None:
        x = Exchange.decode(message)
        pipeline = self.pipelines.get(x.engine)
        if pipeline is None:
            self.outbox.finished(x.seq, tuple(i * OUTCOME_SLOTS + _DROPPED for i in x.targets))
        else:
            pipeline.replay(x)  # never raises

    def counts(self, message: Any) -> None:
        pipeline = self.pipelines.get(message[1])
        if pipeline is None:
            return
        targets = pipeline.config.targets
        for index, route, outcome, count, reason in message[2]:
            name = targets[index].name
            if outcome == _DROPPED_NAME:
                # Refused in the app: no span of its own, a share of the interval's coalesced one.
                pipeline.coalesce(name, Request(route, route.partition(" ")[0], "", "", []), reason, count)
            else:
                pipeline.telemetry.count_outcomes(name, route, outcome, count)

    def flush(self, message: Any) -> None:
        _, engine, flush_id, timeout = message
        pipeline = self.pipelines.get(engine)
        if pipeline is None:
            self.outbox.reply((FLUSHED, flush_id, True))
            return
        threading.Thread(target=_flush, args=(pipeline, self.outbox, flush_id, timeout), daemon=True).start()

    def close(self, message: Any) -> None:
        _, engine, timeout = message
        pipeline = self.pipelines.pop(engine, None)
        if pipeline is None:
            self.outbox.reply((CLOSED, engine, True))
            return
        thread = threading.Thread(target=_close, args=(pipeline, self.outbox, engine, timeout), daemon=True)
        thread.start()
        self.closing.append(thread)

    def close_all(self) -> None:
        """The app has gone (or let us go): drain every engine within its drain_timeout."""
        for engine, pipeline in list(self.pipelines.items()):
            self.close((CLOSE, engine, pipeline.config.drain_timeout))
        for thread in self.closing:
            thread.join()
        self.outbox.stop()


def _serve(sock: socket.socket, engines: Engines) -> None:
    """Handle messages until the app closes its end or goes away."""
    reader = FrameReader()
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN)
    last = time.monotonic()
    backlog: list[Any] = []
    while True:
        for message in backlog:
            kind = message[0]
            try:
                if kind == EXCHANGE:
                    engines.exchange(message)
                elif kind == CONFIG:
                    engines.configure(message)
                elif kind == COUNTS:
                    engines.counts(message)
                elif kind == FLUSH:
                    engines.flush(message)
                elif kind == CLOSE:
                    engines.close(message)
            except Exception as exc:
                logger.warning("shadow_middleware internal error (ignored): %r", exc, exc_info=exc)
        try:
            data = sock.recv(1 << 18, _DONTWAIT) if _DONTWAIT else sock.recv(1 << 18)
        except BlockingIOError:
            backlog = []
            engines.caught_up()  # with what waited during the start-up
            if time.monotonic() - last < ACTIVE_FOR:
                time.sleep(POLL_EVERY)
            else:
                poller.poll()  # idle: wait on the socket (SIGTERM makes it readable, see main)
            continue
        except OSError:
            return
        if not data:
            return  # the app went away, or let us go: drain within drain_timeout
        last = time.monotonic()
        backlog = reader.feed(data)


def _flush(pipeline: HelperPipeline, outbox: Outbox, flush_id: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    done = pipeline.flush(timeout)
    ok = pipeline.telemetry.force_flush(max(deadline - time.monotonic(), 0.0)) and done
    outbox.reply((FLUSHED, flush_id, ok))


def _close(pipeline: HelperPipeline, outbox: Outbox, engine: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    try:
        pipeline.close(timeout)
        ok = pipeline.telemetry.force_flush(max(deadline - time.monotonic(), 0.5))
    except Exception as exc:
        pipeline.error(exc)
        ok = False
    outbox.reply((CLOSED, engine, ok))


if __name__ == "__main__":
    sys.exit(main())
