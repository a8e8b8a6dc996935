"""The package's OTLP/JSON reader, on files written by the example exporter (the Collector's format)."""

from __future__ import annotations

import gzip
from pathlib import Path

from opentelemetry.exporter.otlp.json.file import FileSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from shadow_middleware.report.spans import read_shadow_spans


def write_spans(path: Path) -> None:
    tp = TracerProvider()
    tp.add_span_processor(SimpleSpanProcessor(FileSpanExporter(path)))
    tracer = tp.get_tracer("shadow_middleware")
    for i in range(3):
        with tracer.start_as_current_span("shadow POST /predict") as span:
            span.set_attributes(
                {
                    "shadow.target": "v2",
                    "shadow.route": "POST /predict",
                    "shadow.outcome": "match" if i else "mismatch",
                    "shadow.diff.count": i,
                    "shadow.diff.paths": ["/a", "/b"],
                    "shadow.primary.duration_ms": 1.5,
                    "shadow.candidate.body.make_offer": True,
                }
            )
    with tp.get_tracer("other.instrumentation").start_as_current_span("GET /health") as span:
        span.set_attribute("http.route", "/health")
    tp.shutdown()


def test_reads_shadow_spans_and_skips_others(tmp_path: Path) -> None:
    path = tmp_path / "spans.jsonl"
    write_spans(path)
    spans = list(read_shadow_spans([path]))
    assert [s.outcome for s in spans] == ["mismatch", "match", "match"]
    first = spans[0]
    assert first.target == "v2" and first.route == "POST /predict"
    assert first.attributes["shadow.diff.paths"] == ["/a", "/b"]
    assert spans[2].attributes["shadow.diff.count"] == 2
    assert first.attributes["shadow.primary.duration_ms"] == 1.5
    assert first.attributes["shadow.candidate.body.make_offer"] is True
    assert len(first.trace_id) == 32 and first.end_ns >= first.start_ns > 0


def test_malformed_lines_are_reported_with_their_number_and_skipped(tmp_path: Path) -> None:
    good = tmp_path / "good.jsonl"
    write_spans(good)
    lines = good.read_text().splitlines()
    mixed = tmp_path / "mixed.jsonl.gz"
    with gzip.open(mixed, "wt") as f:
        f.write(lines[0] + "\n{not json\n[1, 2]\n" + "\n".join(lines[1:]) + "\n")
    errors: list[tuple[str, int, str]] = []
    spans = list(read_shadow_spans([mixed], lambda p, n, m: errors.append((p, n, m))))
    assert len(spans) == 3
    assert [(n) for _, n, _ in errors] == [2, 3]
    assert all(p == str(mixed) for p, _, _ in errors)
