"""Test-only OpenTelemetry setup for app processes: spans as JSON lines in $SPAN_FILE."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult


class JsonLinesExporter(SpanExporter):
    def __init__(self, path: str, pid: int | None = None) -> None:
        self.path = path
        self.pid = pid  # the process the spans are recorded for (the app's, for a helper)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = []
        for span in spans:
            attrs = {k: list(v) if isinstance(v, tuple) else v for k, v in (span.attributes or {}).items()}
            lines.append(
                json.dumps(
                    {
                        "name": span.name,
                        "pid": self.pid or os.getpid(),
                        "trace_id": format(span.context.trace_id, "032x"),
                        "span_id": format(span.context.span_id, "016x"),
                        "parent_span_id": format(span.parent.span_id, "016x") if span.parent else None,
                        "attributes": attrs,
                    }
                )
            )
        # O_APPEND writes of whole lines: several worker processes share the file.
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, ("\n".join(lines) + "\n").encode())
        finally:
            os.close(fd)
        return SpanExportResult.SUCCESS


def tracer_provider() -> TracerProvider | None:
    path = os.environ.get("SPAN_FILE")
    if not path or isolation():
        return None
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(JsonLinesExporter(path)))
    return provider


def helper_telemetry() -> None:
    """``telemetry_setup`` of the test apps under ``SHADOW_ISOLATION=process``: the helper
    writes the same span file, each span under its app process's pid (the helper's parent);
    and, when ``$METRIC_FILE`` is set, the metrics there (OTLP JSON lines, cumulative)."""
    from opentelemetry import metrics, trace

    path = os.environ.get("SPAN_FILE")
    if path:
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(JsonLinesExporter(path, pid=os.getppid())))
        trace.set_tracer_provider(provider)
    metric_file = os.environ.get("METRIC_FILE")
    if metric_file:
        from opentelemetry.exporter.otlp.json.file.metric_exporter import FileMetricExporter
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

        reader = PeriodicExportingMetricReader(FileMetricExporter(metric_file), export_interval_millis=60_000)
        metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))


def metric_sums(path: str | os.PathLike[str]) -> dict[tuple[str, str, str], int]:
    """``shadow.requests`` by (target, route, outcome), from the last export in ``path``."""
    sums: dict[tuple[str, str, str], int] = {}
    with open(path) as f:
        lines = [line for line in f if '"shadow.requests"' in line]
    for rm in json.loads(lines[-1])["resourceMetrics"]:
        for sm in rm["scopeMetrics"]:
            for metric in sm["metrics"]:
                if metric["name"] != "shadow.requests":
                    continue
                for point in metric["sum"]["dataPoints"]:
                    attrs = {a["key"]: a["value"]["stringValue"] for a in point["attributes"]}
                    key = (attrs["shadow.target"], attrs["shadow.route"], attrs["shadow.outcome"])
                    sums[key] = sums.get(key, 0) + int(point["asInt"])
    return sums


def isolation() -> dict[str, str]:
    """``SHADOW_ISOLATION=process`` runs the test apps' engine with a helper process."""
    if os.environ.get("SHADOW_ISOLATION") == "process":
        return {"isolation": "process", "telemetry_setup": "tests.apps.spanfile:helper_telemetry"}
    return {}


def shadow_config():  # type: ignore[no-untyped-def]
    from shadow_middleware import Compare, ShadowConfig, ShadowTarget

    # SHADOW_BASE_URL instead of SHADOW_URL: a base_url target (the request's path appended).
    where = (
        {"base_url": os.environ["SHADOW_BASE_URL"]}
        if "SHADOW_BASE_URL" in os.environ
        else {"url": os.environ["SHADOW_URL"]}
    )
    forward = os.environ.get("SHADOW_FORWARD_HEADERS", "")
    return ShadowConfig(
        **isolation(),
        targets=[ShadowTarget("cand", timeout=float(os.environ.get("SHADOW_TIMEOUT", "2")), **where)],
        routes=os.environ.get("SHADOW_ROUTES", "POST /predict").split(","),
        compare=Compare(fields=["/prediction"], abs_tol=0.01),
        correlation_id="json:/id",
        **({"forward_headers": [n for n in forward.split(",") if n]} if forward else {}),
    )
