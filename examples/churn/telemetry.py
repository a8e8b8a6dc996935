"""OpenTelemetry SDK setup for the example apps.

``shadow_middleware`` only uses the OpenTelemetry *API*; an application decides where telemetry
goes. The example apps call :func:`setup_telemetry`, which follows the standard environment
variables:

* ``OTEL_EXPORTER_OTLP_ENDPOINT`` (e.g. ``http://127.0.0.1:4318``) -- spans and metrics go to an
  OTLP/HTTP receiver such as the OpenTelemetry Collector. The signal-specific
  ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`` work too.
* ``SHADOW_SPAN_FILE`` -- spans are also appended to this file as OTLP/JSON lines, the format of
  the Collector's ``file`` exporter. Without any OTLP endpoint, spans go to ``shadow-spans.jsonl``
  in the working directory, so the demo works with nothing else running.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Sequence
from typing import Any

from google.protobuf.json_format import MessageToDict
from opentelemetry import metrics, trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

__all__ = [
    "DEFAULT_SPAN_FILE",
    "OtlpJsonFileExporter",
    "install_global",
    "setup_telemetry",
    "spans_to_otlp_json",
]

DEFAULT_SPAN_FILE = "shadow-spans.jsonl"
SPAN_FILE_ENV = "SHADOW_SPAN_FILE"
DEFAULT_METRIC_EXPORT_INTERVAL_MS = 5000

_OTLP_ENDPOINT = "OTEL_EXPORTER_OTLP_ENDPOINT"
_OTLP_TRACES_ENDPOINT = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
_OTLP_METRICS_ENDPOINT = "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"
_METRIC_EXPORT_INTERVAL = "OTEL_METRIC_EXPORT_INTERVAL"


def _b64_to_hex(value: str) -> str:
    return base64.b64decode(value).hex()


def _ids_to_hex(obj: dict[str, Any]) -> None:
    for key in ("traceId", "spanId", "parentSpanId"):
        if key in obj:
            obj[key] = _b64_to_hex(obj[key])


def spans_to_otlp_json(spans: Sequence[ReadableSpan]) -> str:
    """One ``ExportTraceServiceRequest`` as OTLP/JSON, without a trailing newline.

    Protobuf's canonical JSON mapping differs from OTLP/JSON in two ways that matter here: it writes
    ``bytes`` ids as base64 (OTLP/JSON: lowercase hex) and enums as names (OTLP/JSON: integers).
    Everything else -- lowerCamelCase keys, 64-bit integers as strings, omitted defaults -- agrees.
    """
    request = MessageToDict(encode_spans(spans), use_integers_for_enums=True)
    for resource_spans in request.get("resourceSpans", []):
        for scope_spans in resource_spans.get("scopeSpans", []):
            for span in scope_spans.get("spans", []):
                _ids_to_hex(span)
                for link in span.get("links", []):
                    _ids_to_hex(link)
    return json.dumps(request, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


class OtlpJsonFileExporter(SpanExporter):
    """Append each exported batch to ``path`` as one line of OTLP/JSON.

    The file is opened with ``O_APPEND`` for every batch and the line is written with a single
    ``write``, so several processes (e.g. gunicorn workers) can share one file without tearing lines.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if not spans:
            return SpanExportResult.SUCCESS
        data = (spans_to_otlp_json(spans) + "\n").encode("utf-8")
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError:
            return SpanExportResult.FAILURE
        try:
            written = os.write(fd, data)
            # A regular file only writes short on a full disk or a signal; finish the line anyway.
            while written < len(data):
                written += os.write(fd, data[written:])
        except OSError:
            return SpanExportResult.FAILURE
        finally:
            os.close(fd)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def setup_telemetry(service_name: str) -> tuple[TracerProvider, MeterProvider, str]:
    """Build (but do not install globally) a tracer provider and a meter provider.

    Returns ``(tracer_provider, meter_provider, description)``; the description says where telemetry
    goes, for a startup log line.
    """
    resource = Resource.create({SERVICE_NAME: service_name})
    tracer_provider = TracerProvider(resource=resource)
    readers: list[MetricReader] = []
    destinations: list[str] = []

    base = os.environ.get(_OTLP_ENDPOINT, "").strip()
    traces_endpoint = os.environ.get(_OTLP_TRACES_ENDPOINT, "").strip()
    metrics_endpoint = os.environ.get(_OTLP_METRICS_ENDPOINT, "").strip()
    otlp_spans = bool(base or traces_endpoint)

    if otlp_spans:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    if base or metrics_endpoint:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

        interval = None if os.environ.get(_METRIC_EXPORT_INTERVAL) else DEFAULT_METRIC_EXPORT_INTERVAL_MS
        readers.append(PeriodicExportingMetricReader(OTLPMetricExporter(), export_interval_millis=interval))

    if base and not traces_endpoint and not metrics_endpoint:
        destinations.append(f"OTLP/HTTP → {base}")
    else:
        if otlp_spans:
            destinations.append(f"OTLP/HTTP spans → {traces_endpoint or base}")
        if readers:
            destinations.append(f"OTLP/HTTP metrics → {metrics_endpoint or base}")

    span_file = os.environ.get(SPAN_FILE_ENV, "").strip() or (None if otlp_spans else DEFAULT_SPAN_FILE)
    if span_file:
        tracer_provider.add_span_processor(BatchSpanProcessor(OtlpJsonFileExporter(span_file)))
        destinations.append(f"file {span_file}")

    meter_provider = MeterProvider(resource=resource, metric_readers=readers)
    description = " and ".join(destinations)
    if not readers:
        description += " (metrics not exported)"
    return tracer_provider, meter_provider, description


def install_global(tracer_provider: TracerProvider, meter_provider: MeterProvider) -> None:
    """Make the providers the process-wide defaults (OpenTelemetry allows this once per process)."""
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(meter_provider)
