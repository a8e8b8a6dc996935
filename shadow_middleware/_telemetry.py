"""OpenTelemetry glue. The only module that imports OpenTelemetry, and only its API:
the application configures the SDK (or not, and then all of this is a cheap no-op).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import metrics, propagate, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from ._result import Result
from ._version import __version__

SCOPE = "shadow_middleware"
# shadow.score.abs_diff bucket boundaries (an advisory the SDK follows unless a View overrides it):
# made for probabilities in [0, 1]
ABS_DIFF_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0)


def capture_context() -> Any:
    """The OpenTelemetry context current in the request's thread/task (a cheap lookup)."""
    return otel_context.get_current()


def trace_context(ctx: Any) -> tuple[str, str]:
    """The W3C ``traceparent`` and ``tracestate`` of the span current in ``ctx`` (a captured
    context), or ``("", "")`` when there is none: what ``isolation="process"`` hands to its
    helper so that the shadow span is parented to the request's trace there."""
    if ctx is None:
        return "", ""
    sc = trace.get_current_span(ctx).get_span_context()
    if not sc.is_valid:
        return "", ""
    state = sc.trace_state.to_header() if sc.trace_state else ""
    return f"00-{sc.trace_id:032x}-{sc.span_id:016x}-{sc.trace_flags:02x}", state


_W3C = TraceContextTextMapPropagator()


def remote_parent(traceparent: str, tracestate: str) -> Any:
    """The context :func:`trace_context` described, in another process (None when empty or
    malformed): a remote parent for :meth:`Telemetry.start_span`. Parsed by OpenTelemetry's
    W3C propagator, whatever global propagator the helper's setup installed."""
    if not traceparent:
        return None
    carrier = {"traceparent": traceparent}
    if tracestate:
        carrier["tracestate"] = tracestate
    ctx = _W3C.extract(carrier)
    return ctx if trace.get_current_span(ctx).get_span_context().is_valid else None


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
        # For alerting without the report: counted only when a thresholded decision flips
        # (Compare.threshold), and one score difference per exchange that compared a number.
        self._flips = meter.create_counter(
            "shadow.decision_flips",
            unit="{flip}",
            description="Shadow exchanges whose thresholded decision differs from production's.",
        )
        try:
            self._abs_diff = meter.create_histogram(
                "shadow.score.abs_diff",
                unit="1",
                description="|production - candidate| of the first compared numeric field.",
                explicit_bucket_boundaries_advisory=ABS_DIFF_BUCKETS,
            )
        except TypeError:  # opentelemetry-api < 1.23: no advisory
            self._abs_diff = meter.create_histogram(
                "shadow.score.abs_diff",
                unit="1",
                description="|production - candidate| of the first compared numeric field.",
            )
        # Two measurements per exchange (three when a number is compared), no more: each costs
        # ~10 us in the SDK. The primary latency and diff counts are on the spans.
        self._metric_attrs: dict[tuple[str, str, str], dict[str, str]] = {}
        self._route_attrs: dict[tuple[str, str], dict[str, str]] = {}
        # shadow.requests is added up here and handed to the SDK in batches (flush_counts, at
        # least every second by the pipeline, and before every force_flush): one SDK
        # measurement per exchange (~25 µs: attribute hashing, locks) was a tenth of its cost.
        self._counts_lock = threading.Lock()
        self._pending_counts: dict[tuple[str, str, str], int] = {}

    def force_flush(self, timeout: float) -> bool:
        """Flush the providers in use (the global ones when none were given) within
        ``timeout`` seconds; the SDK's own atexit does not run under every server."""
        ok = True
        self.flush_counts()
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
        with self._counts_lock:
            pending = self._pending_counts
            pending[key] = pending.get(key, 0) + (result.coalesced_count or 1)
        if result.candidate_ms is not None:
            self._candidate_duration.record(result.candidate_ms / 1000.0, attrs)
        if result.decision_flip or result.score_abs_diff is not None:
            route_key = (result.target, result.route)
            route_attrs = self._route_attrs.get(route_key)
            if route_attrs is None:
                route_attrs = {"shadow.target": route_key[0], "shadow.route": route_key[1]}
                if len(self._route_attrs) < 10_000:
                    self._route_attrs[route_key] = route_attrs
            if result.decision_flip:
                self._flips.add(1, route_attrs)
            if result.score_abs_diff is not None:
                self._abs_diff.record(result.score_abs_diff, route_attrs)

    def flush_counts(self) -> None:
        """Hand the ``shadow.requests`` counts added up so far to the SDK."""
        with self._counts_lock:
            pending, self._pending_counts = self._pending_counts, {}
        for (target, route, outcome), count in pending.items():
            attrs = {"shadow.target": target, "shadow.route": route, "shadow.outcome": outcome}
            self._requests.add(count, attrs)

    def count_outcomes(self, target: str, route: str, outcome: str, count: int) -> None:
        """Add ``count`` exchanges to ``shadow.requests`` at once: outcomes decided where no
        span could be recorded (``isolation="process"``: dropped in the app process)."""
        self._requests.add(count, {"shadow.target": target, "shadow.route": route, "shadow.outcome": outcome})


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
    if r.missing_fields:
        attrs["shadow.missing_fields"] = ",".join(r.missing_fields)
    for suffix, p_val, c_val in r.values:
        if p_val is not None:
            attrs["shadow.primary.body." + suffix] = p_val
        if c_val is not None:
            attrs["shadow.candidate.body." + suffix] = c_val
    if r.correlation_id is not None:
        attrs["shadow.correlation_id"] = r.correlation_id
    for suffix, scalar in r.inputs:
        attrs["shadow.request.body." + suffix] = scalar
    if r.error_type is not None:
        attrs["error.type"] = r.error_type
    if r.coalesced_count is not None:
        attrs["shadow.coalesced_count"] = r.coalesced_count
    return attrs


# ---- the helper process's own setup (isolation="process") ------------------------------------


def run_setup(spec: str) -> tuple[Any, Any]:
    """Call the ``"package.module:function"`` a configuration names (``telemetry_setup``) and
    return the ``(tracer_provider, meter_provider)`` it returned, else ``(None, None)``: the
    global providers it installed are then used."""
    import importlib

    module_name, _, qualname = spec.partition(":")
    target: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        target = getattr(target, part)
    returned = target()
    if isinstance(returned, tuple) and len(returned) == 2:
        return returned[0], returned[1]
    return None, None


def configure_from_env(environ: Any) -> str:
    """Configure the OpenTelemetry SDK from the standard ``OTEL_*`` variables, as
    ``opentelemetry-instrument`` does, and install it globally: a ``TracerProvider`` with a
    ``BatchSpanProcessor`` per exporter ``OTEL_TRACES_EXPORTER`` names, a ``MeterProvider``
    with a periodic reader per exporter ``OTEL_METRICS_EXPORTER`` names. Unset, they default
    to ``otlp`` when an OTLP endpoint is set (``OTEL_EXPORTER_OTLP_ENDPOINT`` or the signal's
    own), else to none. ``otlp`` is OTLP/HTTP protobuf, or gRPC when the protocol variable
    says ``grpc``; any other name is an installed exporter's entry point (``console``,
    ``otlp_json_file``, ...). Resource, sampler and batch settings come from their own
    variables, read by the SDK. Returns a description of where telemetry goes.

    Raises ``ImportError`` when the SDK (or a named exporter) is not installed.
    """
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return "nowhere (OTEL_SDK_DISABLED=true)"
    resource = Resource.create()
    span_exporters = [_exporter("traces", name, environ) for name in _exporter_names("traces", environ)]
    metric_exporters = [_exporter("metrics", name, environ) for name in _exporter_names("metrics", environ)]
    tracer_provider = TracerProvider(resource=resource)
    for exporter in span_exporters:
        tracer_provider.add_span_processor(BatchSpanProcessor(exporter))
    readers: list[MetricReader] = [PeriodicExportingMetricReader(e) for e in metric_exporters]
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(MeterProvider(resource=resource, metric_readers=readers))
    where = [f"spans: {', '.join(_exporter_names('traces', environ)) or 'none'}"]
    where.append(f"metrics: {', '.join(_exporter_names('metrics', environ)) or 'none'}")
    return "; ".join(where)


def _exporter_names(signal: str, environ: Any) -> list[str]:
    names = environ.get(f"OTEL_{signal.upper()}_EXPORTER", "").strip()
    if not names:
        endpoint = environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or environ.get(
            f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT"
        )
        return ["otlp"] if endpoint else []
    return [n.strip() for n in names.split(",") if n.strip() and n.strip().lower() != "none"]


def _exporter(signal: str, name: str, environ: Any) -> Any:
    from importlib.metadata import entry_points

    if name == "otlp":
        protocol = (
            environ.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_PROTOCOL")
            or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
            or "http/protobuf"
        ).strip()
        name = "otlp_proto_grpc" if protocol == "grpc" else "otlp_proto_http"
    found = entry_points(group=f"opentelemetry_{signal}_exporter", name=name)
    for entry in found:
        return entry.load()()
    raise ImportError(f"no OpenTelemetry {signal} exporter named {name!r} is installed")
