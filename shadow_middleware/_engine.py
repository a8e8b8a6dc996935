"""The framework-free engine: config, sampling, the dispatcher and telemetry.

Adapters (ASGI, WSGI) ask :meth:`Shadow.match` whether a request is on a shadowed
route, open an :class:`Exchange` for it, and feed that exchange the bytes they see
pass. Every method an adapter calls on an exchange swallows our own errors: a bug
here is counted, never raised into the app.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import random
import threading
import time
import weakref
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote

from ._compare import MISSING, compare_bodies, decode_body, resolve, try_json
from ._config import RouteTable, ShadowConfig, Source
from ._dispatch import Dispatcher, Job, Primary, TargetState
from ._result import OUTCOMES, Result
from ._telemetry import Telemetry, capture_context

__all__ = ["Exchange", "Shadow"]

logger = logging.getLogger("shadow_middleware")

MARKER = "x-shadow-request"

# Never forwarded: hop-by-hop (RFC 9110 §7.6.1), framing the client recomputes, and
# trace headers that are replaced by the shadow span's own.
_NEVER_FORWARD = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
        "expect",
        MARKER,
        "traceparent",
        "tracestate",
    }
)

_FNV_OFFSET = 0xCBF29CE484222325
_FNV_PRIME = 0x100000001B3
_MASK64 = 0xFFFFFFFFFFFFFFFF


def sample_point(key: str) -> float:
    """Map a key to [0, 1): 64-bit FNV-1a (GoReplay's limiter hash), then murmur3's
    64-bit finalizer so that keys differing only in their last characters (``cust-1``,
    ``cust-2``) spread over the whole range.

    Deterministic across processes and restarts (unlike ``hash()``), so the same
    customer stays in or out of the sample everywhere; raising a rate only adds keys.
    """
    h = _FNV_OFFSET
    for byte in key.encode("utf-8", "surrogatepass"):
        h = ((h ^ byte) * _FNV_PRIME) & _MASK64
    h ^= h >> 33
    h = (h * 0xFF51AFD7ED558CCD) & _MASK64
    h ^= h >> 33
    h = (h * 0xC4CEB9FE1A85EC53) & _MASK64
    h ^= h >> 33
    return h / 18446744073709551616.0


def quote_path(path: str) -> str:
    """Percent-encode a decoded path for the wire, leaving reserved characters alone."""
    return quote(path, safe="/:@!$&'()*+,;=-._~%")


class Shadow:
    """The shadow engine. Framework-free; shared by any number of middlewares.

    Parameters:
        config: a validated :class:`ShadowConfig`.
        tracer_provider: the OpenTelemetry ``TracerProvider`` to use; the global one
            when omitted.
        meter_provider: the OpenTelemetry ``MeterProvider`` to use; the global one
            when omitted.

    The background machinery (one daemon thread with its own event loop) starts on
    the first shadowed request in each process, so an engine built before a fork
    (gunicorn ``--preload``) starts fresh in every worker.
    """

    def __init__(
        self, config: ShadowConfig, *, tracer_provider: Any = None, meter_provider: Any = None
    ) -> None:
        if not isinstance(config, ShadowConfig):
            raise ValueError(f"config: must be a ShadowConfig, got {type(config).__name__}")
        self.config = config
        self._telemetry = Telemetry(tracer_provider, meter_provider, link=config.span_placement == "link")
        self._routes = RouteTable(config.compiled_routes)
        # The kill switch wins over any configuration given in code.
        self._enabled = config.enabled and not _killed(os.environ.get("SHADOW_ENABLED"))
        self._closed = False
        self._rates = {t.name: t.sample_rate for t in config.targets}
        self._target_header_names = {t.name: {k.lower() for k in t.headers} for t in config.targets}
        self._reset_process_state()
        ref = weakref.ref(self)

        def after_fork() -> None:
            engine = ref()
            if engine is not None:
                engine._reset_process_state()

        def at_exit() -> None:
            engine = ref()
            if engine is not None:
                engine.close(engine.config.drain_timeout)

        os.register_at_fork(after_in_child=after_fork)
        atexit.register(at_exit)

    def _reset_process_state(self) -> None:
        # Everything tied to a process: a forked child starts with fresh locks, no
        # dispatcher thread (threads do not survive fork) and its own counters.
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._states = {t.name: TargetState(t) for t in self.config.targets}
        for name, state in self._states.items():
            state.rate = self._rates[name]
        self._dispatcher: Dispatcher | None = None
        self._stats = {t.name: dict.fromkeys(OUTCOMES, 0) for t in self.config.targets}
        self._seq = 0
        self._incomplete: dict[int, None] = {}
        self._flush_waiters = 0
        self.internal_errors = 0

    # ---- public API --------------------------------------------------------------

    def stats(self) -> dict[str, int]:
        """Outcome counts over all targets in this process."""
        totals = dict.fromkeys(OUTCOMES, 0)
        with self._lock:
            for per_target in self._stats.values():
                for outcome, count in per_target.items():
                    totals[outcome] += count
        return totals

    def stats_by_target(self) -> dict[str, dict[str, int]]:
        """Outcome counts per target in this process."""
        with self._lock:
            return {name: dict(counts) for name, counts in self._stats.items()}

    def set_enabled(self, enabled: bool) -> None:
        """Turn shadowing on or off for the next request; safe from any thread."""
        self._enabled = bool(enabled)

    def set_sample_rate(self, target: str, rate: float) -> None:
        """Change one target's sample rate for the next request; safe from any thread."""
        if target not in self._rates:
            raise ValueError(f"target: unknown target {target!r}")
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0.0 <= rate <= 1.0:
            raise ValueError(f"sample_rate: must be in [0, 1], got {rate!r}")
        self._rates[target] = float(rate)
        self._states[target].rate = float(rate)

    @property
    def enabled(self) -> bool:
        return self._enabled and not self._closed

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every shadow job accepted so far has finished and its span ended.

        Returns False if that did not happen within ``timeout`` seconds. Callable from
        any thread except the dispatcher's own.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            if self._pid != os.getpid():
                return True
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

    def close(self, timeout: float = 5.0) -> None:
        """Flush, then stop the background machinery. Idempotent.

        Jobs still running after ``timeout`` are cancelled and counted as ``dropped``
        (reason ``shutdown``). Afterwards requests pass through unshadowed.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
        start = time.monotonic()
        dispatcher = self._dispatcher
        if dispatcher is None or dispatcher.pid != os.getpid():
            return
        self.flush(timeout)
        dispatcher.close(max(0.0, timeout - (time.monotonic() - start)))

    # ---- adapter API ---------------------------------------------------------------

    def match(self, method: str, path: str) -> str | None:
        """The route pattern ``(method, path)`` falls under, if shadowing applies."""
        if not self._enabled or self._closed:
            return None
        return self._routes.match(method, path)

    def begin(
        self,
        route: str,
        method: str,
        path: str,
        query: str,
        headers: list[tuple[str, str]],
        content_length: int | None,
    ) -> Exchange | None:
        """Open an exchange for a request on ``route``; None when nothing is to be done.

        ``path`` is the percent-encoded request path and ``headers`` are
        ``(lower-case name, value)`` pairs. Never raises.
        """
        try:
            for name, _ in headers:
                if name == MARKER:
                    return None  # a shadow request itself: never shadow it again
            sample = self.config.sample_source
            key: str | None = None
            if sample is not None and sample.kind == "header":
                key = _header(headers, sample.name)
            chosen: list[TargetState] = []
            deferred = False
            for state in self._states.values():
                rate = state.rate
                if rate <= 0.0:
                    continue
                if rate >= 1.0:
                    chosen.append(state)
                elif sample is not None and sample.kind == "json":
                    chosen.append(state)
                    deferred = True  # decided once the body is here
                elif key is not None:
                    if sample_point(key) < rate:
                        chosen.append(state)
                elif random.random() < rate:
                    chosen.append(state)
            if not chosen:
                return None
            ex = Exchange(self, route, method, path, query, headers, chosen, deferred)
            if content_length is not None and content_length > self.config.max_body_bytes:
                ex.skip_all("body_too_large")
                return None
            return ex
        except Exception as exc:
            self._internal_error(exc)
            return None

    # ---- internals -----------------------------------------------------------------

    def _internal_error(self, exc: BaseException) -> None:
        self.internal_errors += 1
        logger.warning("shadow_middleware internal error (ignored): %r", exc, exc_info=exc)

    def _dispatcher_for_process(self) -> Dispatcher:
        dispatcher = self._dispatcher
        if dispatcher is not None and dispatcher.pid == os.getpid():
            return dispatcher
        with self._lock:
            if self._dispatcher is None or self._dispatcher.pid != os.getpid():
                self._dispatcher = Dispatcher(
                    self._states,
                    self.config.max_queue,
                    self.config.max_response_bytes,
                    self.config.primary_timeout,
                    self.config.circuit_failures,
                    self.config.circuit_cooldown,
                    on_start=self._on_start,
                    on_done=self._on_done,
                    on_emit=self._emit_record,
                    on_error=self._internal_error,
                )
            return self._dispatcher

    def _submit(self, job: Job) -> str | None:
        """Queue a job; returns a drop reason when it was refused."""
        with self._lock:
            if self._closed:
                return "shutdown"
            self._seq += 1
            job.seq = self._seq
            self._incomplete[job.seq] = None
        reason = self._dispatcher_for_process().admit(job)
        if reason is not None:
            self._retire(job.seq)
        return reason

    def _retire(self, seq: int) -> None:
        with self._lock:
            self._incomplete.pop(seq, None)
            if self._flush_waiters:
                self._cond.notify_all()

    def _count(self, target: str, outcome: str) -> None:
        with self._lock:
            self._stats[target][outcome] += 1

    def _emit_now(self, ex: Exchange, state: TargetState, outcome: str, reason: str) -> None:
        """An exchange that ends before any shadow call (skipped, dropped): counted here,
        its span recorded on the dispatcher thread, never in the request's."""
        target = state.target
        result = Result(
            target.name,
            ex.route,
            ex.method,
            target.url_for(ex.path, ex.query),
            target.host,
            target.port,
            outcome=outcome,
            reason=reason,
            correlation_id=ex.correlation_id,
        )
        self._count(target.name, outcome)
        with self._lock:
            self._seq += 1
            seq = self._seq
            self._incomplete[seq] = None
        record = (result, ex.ctx, ex.headers, time.time_ns(), seq)
        refused = self._dispatcher_for_process().emit(record)
        if refused == "closed":
            self._emit_record(record)  # shutting down: nothing left to protect
        elif refused is not None:
            # Backlog full: the outcome is still counted and in the metrics; its span is shed.
            try:
                self._telemetry.record_metrics(result)
            except Exception as exc:
                self._internal_error(exc)
            finally:
                self._retire(seq)

    def _emit_record(self, record: tuple[Result, Any, list[tuple[str, str]], int, int]) -> None:
        result, ctx, headers, start_ns, seq = record
        try:
            span = self._telemetry.start_span(ctx, headers, "shadow " + result.route, start_ns)
            self._telemetry.finish(span, result)
        except Exception as exc:
            self._internal_error(exc)
        finally:
            self._retire(seq)

    def _on_start(self, job: Job) -> None:
        # On the dispatcher loop: the span starts with the shadow call, and the call
        # carries that span's traceparent.
        ex: Exchange = job.exchange
        target = job.state.target
        job.start_ns = time.time_ns()
        job.span = self._telemetry.start_span(ex.ctx, ex.headers, "shadow " + ex.route, job.start_ns)
        propagation = self._telemetry.propagation_headers(job.span)
        skip = self._target_header_names[target.name]
        headers = [(k, v) for k, v in ex.forward if k not in skip and k not in propagation]
        headers.extend(target.headers.items())
        headers.append((MARKER, target.name))
        headers.extend(propagation.items())
        job.headers = headers

    def _on_done(self, job: Job) -> None:
        # On the dispatcher loop, once the candidate's and production's answers are in.
        try:
            result = self._judge(job)
        except Exception as exc:
            self._internal_error(exc)
            target = job.state.target
            ex = job.exchange
            result = Result(target.name, ex.route, ex.method, job.url, target.host, target.port)
            result.reason = "internal_error"
        self._count(result.target, result.outcome)
        try:
            self._telemetry.finish(job.span, result)
        except Exception as exc:
            self._internal_error(exc)
        finally:
            job.span = None
            job.body = b""
            self._retire(job.seq)

    def _judge(self, job: Job) -> Result:
        ex: Exchange = job.exchange
        target = job.state.target
        primary = job.primary
        assert primary is not None
        r = Result(
            target.name,
            ex.route,
            ex.method,
            job.url,
            target.host,
            target.port,
            correlation_id=ex.correlation_id,
        )
        if primary.status is not None:
            r.primary_status = primary.status
            r.primary_ms = primary.duration_ms
        candidate = job.candidate
        if candidate is not None:
            r.candidate_status = candidate.status
            r.candidate_ms = job.candidate_ms
            r.candidate_truncated = candidate.truncated
        if job.error == "shutdown":
            r.outcome, r.reason = "dropped", "shutdown"
        elif job.error == "timeout":
            r.outcome, r.error_type = "timeout", "timeout"
        elif job.error is not None or candidate is None:
            r.outcome, r.error_type = "error", job.error or "Error"
        elif primary.failure is not None or primary.status is None:
            r.outcome, r.reason = "skipped", primary.failure or "no_response"
        elif candidate.status >= 500 and primary.status < 500:
            r.outcome, r.error_type = "error", str(candidate.status)
        else:
            cap = self.config.max_response_bytes
            diff = compare_bodies(
                self.config.compare,
                decode_body(primary.body, primary.content_encoding, cap),
                decode_body(candidate.body, candidate.content_encoding, cap),
            )
            r.diff_count = diff.count
            r.diff_paths = diff.paths
            r.values = diff.values
            same = diff.count == 0 and candidate.status == primary.status
            r.outcome = "match" if same else "mismatch"
        return r


def _killed(value: str | None) -> bool:
    return value is not None and value.strip().lower() in ("0", "false", "no", "off")


def engine_for(
    shadow: Shadow | None,
    config: ShadowConfig | None,
    tracer_provider: Any,
    meter_provider: Any,
) -> tuple[Shadow, bool]:
    """The engine a middleware uses, and whether the middleware owns it."""
    if shadow is not None and config is not None:
        raise ValueError("shadow: give exactly one of shadow= and config=, not both")
    if shadow is not None:
        if not isinstance(shadow, Shadow):
            raise ValueError(f"shadow: must be a Shadow, got {type(shadow).__name__}")
        if tracer_provider is not None or meter_provider is not None:
            raise ValueError("tracer_provider: pass providers to Shadow(...) when giving shadow=")
        return shadow, False
    if config is None:
        if not os.environ.get("SHADOW_CONFIG") and not os.environ.get("SHADOW_TARGETS"):
            raise ValueError(
                "config: give exactly one of shadow= and config=, or set SHADOW_CONFIG to a TOML file"
            )
        config = ShadowConfig.from_env()
    return Shadow(config, tracer_provider=tracer_provider, meter_provider=meter_provider), True


def _header(headers: Iterable[tuple[str, str]], name: str) -> str | None:
    for key, value in headers:
        if key == name:
            return value
    return None


class Exchange:
    """One request on a shadowed route, as seen by an adapter. Every method is safe:
    it never raises and does nothing once something went wrong inside it."""

    __slots__ = (
        "_body_done",
        "_broken",
        "_chunks",
        "_deferred",
        "_finished",
        "_gone",
        "_jobs",
        "_over",
        "_primary",
        "_resp_chunks",
        "_resp_done",
        "_resp_encoding",
        "_resp_size",
        "_resp_status",
        "_size",
        "_states",
        "correlation_id",
        "ctx",
        "forward",
        "headers",
        "method",
        "path",
        "query",
        "route",
        "shadow",
        "start",
    )

    def __init__(
        self,
        shadow: Shadow,
        route: str,
        method: str,
        path: str,
        query: str,
        headers: list[tuple[str, str]],
        states: list[TargetState],
        deferred: bool,
    ) -> None:
        self.shadow = shadow
        self.route = route
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.ctx = capture_context()
        self.start = time.perf_counter()
        self.correlation_id: str | None = None
        self.forward: list[tuple[str, str]] = []
        self._states = states
        self._deferred = deferred
        self._chunks: list[bytes] = []
        self._size = 0
        self._over = False
        self._body_done = False
        self._jobs: list[Job] = []
        self._resp_status: int | None = None
        self._resp_encoding = ""
        self._resp_chunks: list[bytes] = []
        self._resp_size = 0
        self._resp_done = False
        self._primary: Primary | None = None
        self._finished = False
        self._broken = False
        self._gone = False

    @property
    def body_done(self) -> bool:
        return self._body_done

    def skip_all(self, reason: str) -> None:
        states, self._states = self._states, []
        for state in states:
            self.shadow._emit_now(self, state, "skipped", reason)

    def _fail(self, exc: BaseException) -> None:
        self._broken = True
        self.shadow._internal_error(exc)

    # ---- request body ----------------------------------------------------------

    def feed(self, chunk: bytes | bytearray | memoryview) -> None:
        """A piece of the request body, as the app reads it."""
        if self._over or self._body_done or self._broken:
            return
        try:
            self._size += len(chunk)
            if self._size > self.shadow.config.max_body_bytes:
                self._over = True
                self._chunks = []
            elif chunk:
                self._chunks.append(bytes(chunk))
        except Exception as exc:
            self._fail(exc)

    def body_complete(self) -> None:
        """The app has read the whole request body: start the shadow calls now."""
        if self._body_done or self._broken:
            return
        self._body_done = True
        try:
            if self._over:
                self.skip_all("body_too_large")
                return
            body = b"".join(self._chunks)
            self._chunks = []
            self._start_jobs(body)
        except Exception as exc:
            self._fail(exc)
            self.skip_all("internal_error")

    def _start_jobs(self, body: bytes) -> None:
        shadow = self.shadow
        config = shadow.config
        doc: Any = None
        parsed = False

        def value_of(source: Source) -> str | None:
            nonlocal doc, parsed
            if source.kind == "header":
                return _header(self.headers, source.name)
            if not parsed:
                parsed = True
                ok, doc = try_json(body)
                if not ok:
                    doc = None
            found = resolve(doc, source.tokens) if doc is not None else MISSING
            if found is MISSING or found is None:
                return None
            if isinstance(found, dict | list):
                return json.dumps(found, sort_keys=True)[:256]
            if isinstance(found, bool):
                return "true" if found else "false"
            return str(found)[:256]

        if config.correlation_source is not None:
            self.correlation_id = value_of(config.correlation_source)
        states = self._states
        if self._deferred and config.sample_source is not None:
            key = value_of(config.sample_source)
            point = sample_point(key) if key is not None else None
            states = [
                s
                for s in states
                if s.rate >= 1.0 or (point if point is not None else random.random()) < s.rate
            ]
        self._states = []
        drop = config.drop_headers
        forward = []
        connection_tokens: set[str] = set()
        for name, value in self.headers:
            if name == "connection":
                connection_tokens.update(t.strip().lower() for t in value.split(","))
        for name, value in self.headers:
            if name in _NEVER_FORWARD or name in drop or name in connection_tokens:
                continue
            forward.append((name, value))
        self.forward = forward
        for state in states:
            job = Job(state, self.method, state.target.url_for(self.path, self.query), [], body, self)
            reason = shadow._submit(job)
            if reason is not None:
                shadow._emit_now(self, state, "dropped", reason)
            else:
                self._jobs.append(job)
        if self._primary is not None and self._jobs:
            # The app answered before it finished reading the body: compare with that answer.
            self._deliver(self._primary)

    def disconnected(self) -> None:
        """The client went away before sending the whole body."""
        self._gone = True

    # ---- response --------------------------------------------------------------

    def response_start(self, status: int, content_encoding: str) -> None:
        if self._broken:
            return
        self._resp_status = status
        self._resp_encoding = content_encoding

    def response_body(self, chunk: bytes | bytearray | memoryview) -> None:
        """A piece of production's response body, as it is sent."""
        if self._broken or self._resp_done:
            return
        if not self._jobs and (self._body_done or self._over or not self._states):
            return  # nothing will ever compare this response: do not copy it
        try:
            room = self.shadow.config.max_response_bytes - self._resp_size
            if room > 0 and chunk:
                piece = bytes(chunk[:room])
                self._resp_chunks.append(piece)
                self._resp_size += len(piece)
        except Exception as exc:
            self._fail(exc)

    def response_complete(self) -> None:
        """Production's response has been sent completely."""
        if self._resp_done or self._broken:
            return
        self._resp_done = True
        try:
            self._primary = Primary(
                self._resp_status,
                self._resp_encoding,
                b"".join(self._resp_chunks),
                (time.perf_counter() - self.start) * 1000.0,
                None,
            )
            self._resp_chunks = []
            if self._jobs:
                self._deliver(self._primary)
        except Exception as exc:
            self._fail(exc)

    def _deliver(self, primary: Primary) -> None:
        jobs, self._jobs = self._jobs, []
        dispatcher = self.shadow._dispatcher
        if dispatcher is not None and jobs:
            dispatcher.deliver(jobs, primary)

    def finish(self, failure: str | None = None) -> None:
        """The request is over (always called, from a ``finally``).

        ``failure`` says why production has no complete answer, if it has none:
        ``primary_exception``, ``client_disconnect``.
        """
        if self._finished:
            return
        self._finished = True
        try:
            if self._broken:
                failure = "internal_error"
            elif self._gone:  # the root cause, even if the app then raised over it
                failure = "client_disconnect"
            if not self._body_done:
                self.skip_all(failure or "body_not_read")
            elif self._jobs and not self._resp_done:
                self._deliver(Primary(None, "", b"", None, failure or "no_response"))
            elif self._states:
                self.skip_all(failure or "internal_error")
        except Exception as exc:
            self.shadow._internal_error(exc)
