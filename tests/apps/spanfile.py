"""Test-only OpenTelemetry setup for app processes: spans as JSON lines in $SPAN_FILE."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult


class JsonLinesExporter(SpanExporter):
    def __init__(self, path: str) -> None:
        self.path = path

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = []
        for span in spans:
            attrs = {k: list(v) if isinstance(v, tuple) else v for k, v in (span.attributes or {}).items()}
            lines.append(
                json.dumps(
                    {
                        "name": span.name,
                        "pid": os.getpid(),
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
    if not path:
        return None
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(JsonLinesExporter(path)))
    return provider


def shadow_config():  # type: ignore[no-untyped-def]
    from shadow_middleware import Compare, ShadowConfig, ShadowTarget

    return ShadowConfig(
        targets=[
            ShadowTarget(
                "cand", url=os.environ["SHADOW_URL"], timeout=float(os.environ.get("SHADOW_TIMEOUT", "2"))
            )
        ],
        routes=os.environ.get("SHADOW_ROUTES", "POST /predict").split(","),
        compare=Compare(fields=["/prediction"], abs_tol=0.01),
        correlation_id="json:/id",
    )
