"""OpenTelemetry glue. The only module that imports OpenTelemetry, and only its API:
the application configures the SDK (or not, and then all of this is a cheap no-op).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import metrics, propagate, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from ._result import Result
from ._version import __version__

SCOPE = "shadow_middleware"


def capture_context() -> Any:
    """The OpenTelemetry context current in the request's thread/task (a cheap lookup)."""
    return otel_context.get_current()


class Telemetry:
    """Creates the shadow spans and records the metrics."""

    def __init__(self, tracer_provider: Any = None, meter_provider: Any = None, link: bool = False) -> None:
        self._link = link
        self._tracer_provider = tracer_provider
        self._meter_provider = meter_provider
        self._tracer = trace.get_tracer(SCOPE, __version__, tracer_provider=tracer_provider)
        meter = metrics.get_meter(SCOPE, __version__, meter_provider=meter_provider)
        self._requests = meter.create_counter(
            "shadow.requests",
            unit="{request}",
            description="Shadow exchanges by target, route and outcome.",
        )
        self._candidate_duration = meter.create_histogram(
            "shadow.candidate.duration",
            unit="s",
            description="Duration of the shadow (candidate) HTTP exchange.",
        )
        # Two measurements per exchange, no more: each costs ~10 us in the SDK. The primary
        # latency and diff counts are on the spans.
        self._metric_attrs: dict[tuple[str, str, str], dict[str, str]] = {}

    def force_flush(self, timeout: float) -> bool:
        """Flush the providers in use (the global ones when none were given) within
        ``timeout`` seconds; the SDK's own atexit does not run under every server."""
        ok = True
        providers = (
            self._tracer_provider or trace.get_tracer_provider(),
            self._meter_provider or metrics.get_meter_provider(),
        )
        deadline = time.monotonic() + timeout
        for provider in providers:
            flush = getattr(provider, "force_flush", None)  # the API's no-op providers have none
            if flush is None:
                continue
            millis = int(max(deadline - time.monotonic(), 0.0) * 1000)
            try:
                ok = flush(timeout_millis=millis) is not False and ok
            except Exception:  # an exporter's failure is not the app's problem
                ok = False
        return ok

    def start_span(
        self,
        parent: Any,
        headers: Iterable[tuple[str, str]],
        name: str,
        start_ns: int,
    ) -> Span:
        """Start the CLIENT span of one shadow exchange.

        Its parent is the span current when the request arrived, else whatever the
        global propagator extracts from the incoming headers, else none.
        """
        if parent is None or not trace.get_current_span(parent).get_span_context().is_valid:
            carrier: dict[str, str] = {}
            for key, value in headers:
                carrier.setdefault(key, value)
            parent = propagate.extract(carrier)
        if self._link:
            # Its own trace, linked to the request: the primary traces stay untouched.
            request = trace.get_current_span(parent).get_span_context()
            links = [trace.Link(request)] if request.is_valid else None
            return self._tracer.start_span(
                name, context=otel_context.Context(), kind=SpanKind.CLIENT, start_time=start_ns, links=links
            )
        return self._tracer.start_span(name, context=parent, kind=SpanKind.CLIENT, start_time=start_ns)

    @staticmethod
    def propagation_headers(span: Span) -> dict[str, str]:
        """The W3C ``traceparent`` of ``span``, built directly (the global propagator's
        context round trip costs more than the rest of the span)."""
        ctx = span.get_span_context()
        if not ctx.is_valid:
            return {}
        return {"traceparent": f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{ctx.trace_flags:02x}"}

    def finish(self, span: Span | None, result: Result) -> None:
        """Record ``result`` on ``span`` (starting one if needed), end it, and count it."""
        if span is None:
            span = self._tracer.start_span(
                f"shadow {result.route}",
                context=otel_context.Context(),
                kind=SpanKind.CLIENT,
            )
        if span.is_recording():
            span.set_attributes(_span_attributes(result))
            if result.outcome in ("error", "timeout"):
                span.set_status(Status(StatusCode.ERROR))
        span.end(end_time=time.time_ns())
        self.record_metrics(result)

    def record_metrics(self, result: Result) -> None:
        key = (result.target, result.route, str(result.outcome))
        attrs = self._metric_attrs.get(key)
        if attrs is None:
            attrs = {"shadow.target": key[0], "shadow.route": key[1], "shadow.outcome": key[2]}
            if len(self._metric_attrs) < 10_000:
                self._metric_attrs[key] = attrs
        self._requests.add(1, attrs)
        if result.candidate_ms is not None:
            self._candidate_duration.record(result.candidate_ms / 1000.0, attrs)


def _span_attributes(r: Result) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        "shadow.target": r.target,
        "shadow.route": r.route,
        "shadow.outcome": str(r.outcome),
        "http.request.method": r.method,
        "url.full": r.url,
        "server.address": r.server_address,
        "server.port": r.server_port,
    }
    if r.reason is not None:
        attrs["shadow.reason"] = str(r.reason)
    for name, value in (
        ("shadow.primary.status_code", r.primary_status),
        ("shadow.primary.duration_ms", r.primary_ms),
        ("shadow.candidate.status_code", r.candidate_status),
        ("http.response.status_code", r.candidate_status),
        ("shadow.candidate.duration_ms", r.candidate_ms),
        ("shadow.candidate.server_duration_ms", r.candidate_server_ms),
    ):
        if value is not None:  # absent, not null, when there is no such figure
            attrs[name] = value
    if r.diff_count is not None:
        attrs["shadow.diff.count"] = r.diff_count
        attrs["shadow.diff.paths"] = r.diff_paths
    if r.candidate_truncated:
        attrs["shadow.candidate.truncated"] = True
    for suffix, p_val, c_val in r.values:
        if p_val is not None:
            attrs["shadow.primary.body." + suffix] = p_val
        if c_val is not None:
            attrs["shadow.candidate.body." + suffix] = c_val
    if r.correlation_id is not None:
        attrs["shadow.correlation_id"] = r.correlation_id
    if r.error_type is not None:
        attrs["error.type"] = r.error_type
    return attrs
