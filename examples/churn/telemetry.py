"""OpenTelemetry SDK setup for the example apps.

``shadow_middleware`` only uses the OpenTelemetry *API*; an application decides where telemetry
goes. The example apps call :func:`setup_telemetry`, which follows the standard environment
variables:

* ``OTEL_EXPORTER_OTLP_ENDPOINT`` (e.g. ``http://127.0.0.1:4318``) -- spans and metrics go to an
  OTLP/HTTP receiver such as the OpenTelemetry Collector. The signal-specific
  ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`` work too.
* ``EXAMPLE_SPAN_FILE`` -- spans are also appended to this file as OTLP/JSON lines, the format of
  the Collector's ``file`` exporter, by OpenTelemetry's own exporter
  (``opentelemetry-exporter-otlp-json-file``). Without any OTLP endpoint, spans go to
  ``shadow-spans.jsonl`` in the working directory, so the demo works with nothing else running.
"""

from __future__ import annotations

import os

from opentelemetry import metrics, trace
from opentelemetry.exporter.otlp.json.file import FileSpanExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

__all__ = ["DEFAULT_SPAN_FILE", "helper_telemetry", "install_global", "setup_telemetry"]

DEFAULT_SPAN_FILE = "shadow-spans.jsonl"
SPAN_FILE_ENV = "EXAMPLE_SPAN_FILE"
DEFAULT_METRIC_EXPORT_INTERVAL_MS = 5000

_OTLP_ENDPOINT = "OTEL_EXPORTER_OTLP_ENDPOINT"
_OTLP_TRACES_ENDPOINT = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
_OTLP_METRICS_ENDPOINT = "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"
_METRIC_EXPORT_INTERVAL = "OTEL_METRIC_EXPORT_INTERVAL"


def setup_telemetry(service_name: str) -> tuple[TracerProvider, MeterProvider, str]:
    """Build (but do not install globally) a tracer provider and a meter provider.

    Returns ``(tracer_provider, meter_provider, description)``; the description says where telemetry
    goes, for a startup log line. The span file is opened (created if needed, in append mode) here,
    so a path that cannot be written fails now with ``OSError`` rather than at the first export.
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
        # One line per export, written and flushed in one piece under the exporter's lock; the file is
        # opened with O_APPEND, so gunicorn workers forked after --preload share it without tearing lines.
        tracer_provider.add_span_processor(BatchSpanProcessor(FileSpanExporter(span_file)))
        destinations.append(f"file {span_file}")

    meter_provider = MeterProvider(resource=resource, metric_readers=readers)
    description = " and ".join(destinations)
    if not readers:
        description += " (metrics not exported)"
    return tracer_provider, meter_provider, description


def helper_telemetry() -> tuple[TracerProvider, MeterProvider]:
    """``telemetry_setup`` for ``isolation="process"``
    (``SHADOW_TELEMETRY_SETUP=examples.churn.telemetry:helper_telemetry``): the same destinations,
    set up in the helper process that records the shadow spans and metrics."""
    tracer_provider, meter_provider, _ = setup_telemetry("churn-api")
    return tracer_provider, meter_provider


def install_global(tracer_provider: TracerProvider, meter_provider: MeterProvider) -> None:
    """Make the providers the process-wide defaults (OpenTelemetry allows this once per process)."""
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(meter_provider)
