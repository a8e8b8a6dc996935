"""The example apps' telemetry setup: the OTLP/JSON span file and OTLP/HTTP export.

The span file is written by OpenTelemetry's ``opentelemetry-exporter-otlp-json-file``; these tests
check what the report relies on: its lines read back through the report's reader, they are the
Collector's format, and several processes can append to one file. They use the OpenTelemetry SDK
directly, without a web app.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format
from opentelemetry import trace
from opentelemetry.exporter.otlp.json.file import FileSpanExporter
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from examples.churn.telemetry import DEFAULT_SPAN_FILE, setup_telemetry
from shadow_middleware.report.spans import read_shadow_spans
from tests.otlp_receiver import OtlpReceiver

REPO_ROOT = Path(__file__).resolve().parent.parent
HEX32 = re.compile(r"^[0-9a-f]{32}$")
HEX16 = re.compile(r"^[0-9a-f]{16}$")

# OTLP enum values (opentelemetry/proto/trace/v1/trace.proto); the SDK's SpanKind numbers differ.
SPAN_KIND_SERVER = 2
SPAN_KIND_CLIENT = 3
STATUS_CODE_ERROR = 2

BIG_INT = 2**53 + 1  # not representable as a double: must travel as a string

CLIENT_ATTRIBUTES: dict[str, Any] = {
    "shadow.target": "churn-v2",
    "shadow.status_code": 200,
    "shadow.big": BIG_INT,
    "shadow.negative": -7,
    "shadow.latency_ms": 12.5,
    "shadow.match": False,
    "shadow.fields": ["/churn_probability", "/make_offer"],
    "shadow.ints": [1, 2, 3],
    "shadow.doubles": [0.25, 1.5],
    "shadow.bools": [True, False],
    "shadow.unicode": "probabilité → 0.5",
}

# Every attribute type the middleware records on a shadow span (shadow_middleware/_telemetry.py,
# _span_attributes): str, int, float, bool, list of str -- with the values a JSON encoding most
# likely gets wrong: zero values (proto3 omits defaults), a whole float, an int beyond double
# precision, non-ASCII text; MATCH_ATTRIBUTES adds an empty list.
SHADOW_ATTRIBUTES: dict[str, Any] = {
    "shadow.target": "churn-v2",
    "shadow.route": "POST /predict",
    "shadow.outcome": "mismatch",
    "http.request.method": "POST",
    "url.full": "http://127.0.0.1:8001/predict",
    "server.address": "127.0.0.1",
    "server.port": 8001,
    "shadow.primary.status_code": 200,
    "shadow.candidate.status_code": 200,
    "http.response.status_code": 200,
    "shadow.primary.duration_ms": 3.25,
    "shadow.candidate.duration_ms": 12.0,
    "shadow.diff.count": 2,
    "shadow.diff.paths": ["/churn_probability", "/make_offer"],
    "shadow.candidate.truncated": True,
    "shadow.primary.body.churn_probability": 0.5,
    "shadow.candidate.body.churn_probability": 0.0,
    "shadow.primary.body.make_offer": False,
    "shadow.candidate.body.make_offer": True,
    "shadow.primary.body.tenure": 0,
    "shadow.candidate.body.tenure": BIG_INT,
    "shadow.primary.body.segment": "",
    "shadow.candidate.body.segment": "fidélité → haute",
    "shadow.correlation_id": "c-42",
}
MATCH_ATTRIBUTES: dict[str, Any] = {
    "shadow.target": "churn-v2",
    "shadow.route": "POST /predict",
    "shadow.outcome": "match",
    "shadow.diff.count": 0,
    "shadow.diff.paths": [],
}

ENV_VARS = (
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
    "OTEL_EXPORTER_OTLP_COMPRESSION",
    "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION",
    "OTEL_EXPORTER_OTLP_METRICS_COMPRESSION",
    "OTEL_METRIC_EXPORT_INTERVAL",
    "OTEL_RESOURCE_ATTRIBUTES",
    "OTEL_SERVICE_NAME",
    "EXAMPLE_SPAN_FILE",
)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[pytest.MonkeyPatch]:
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    yield monkeypatch


def make_spans() -> list[ReadableSpan]:
    """A SERVER span with a CLIENT child carrying attributes of every type, an event and a link."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "churn-api"}), shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("shadow_middleware", "1.2.3")
    with tracer.start_as_current_span("other") as other:
        other_ctx = other.get_span_context()
    with (
        tracer.start_as_current_span("POST /predict", kind=SpanKind.SERVER),
        tracer.start_as_current_span(
            "shadow churn-v2",
            kind=SpanKind.CLIENT,
            attributes=CLIENT_ATTRIBUTES,
            links=[Link(other_ctx, {"link.kind": "related"})],
        ) as client,
    ):
        client.add_event("compared", {"diff.count": 2})
        client.set_status(Status(StatusCode.ERROR, "candidate disagreed"))
    spans = list(exporter.get_finished_spans())
    provider.shutdown()
    return spans


def read_lines(path: Path) -> list[dict[str, Any]]:
    text = path.read_text(encoding="utf-8")
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def all_spans(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        span
        for resource_spans in doc["resourceSpans"]
        for scope_spans in resource_spans["scopeSpans"]
        for span in scope_spans["spans"]
    ]


def hex_ids_to_base64(doc: dict[str, Any]) -> dict[str, Any]:
    """Undo the OTLP/JSON id encoding so protobuf's canonical JSON parser accepts the document."""

    def convert(obj: dict[str, Any]) -> None:
        for key in ("traceId", "spanId", "parentSpanId"):
            if key in obj:
                obj[key] = base64.b64encode(bytes.fromhex(obj[key])).decode()

    for span in all_spans(doc):
        convert(span)
        for link in span.get("links", []):
            convert(link)
    return doc


def attribute_map(kvs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {kv["key"]: kv["value"] for kv in kvs}


def typed(value: Any) -> Any:
    """``value`` with every scalar's type made explicit (``1 == 1.0 == True`` in Python)."""
    if isinstance(value, dict):
        return {key: typed(v) for key, v in value.items()}
    if isinstance(value, list | tuple):
        return ("list", [typed(v) for v in value])
    return (type(value).__name__, value)


# --- (a) the file format -------------------------------------------------------------------------


def test_exported_file_reads_back_through_the_report_reader(tmp_path: Path) -> None:
    path = tmp_path / "spans.jsonl"
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "churn-api"}), shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(memory))
    provider.add_span_processor(SimpleSpanProcessor(FileSpanExporter(path)))
    server_tracer = provider.get_tracer("opentelemetry.instrumentation.fastapi")
    tracer = provider.get_tracer("shadow_middleware", "1.2.3")
    with server_tracer.start_as_current_span("POST /predict", kind=SpanKind.SERVER):
        for attributes in (SHADOW_ATTRIBUTES, MATCH_ATTRIBUTES):
            with tracer.start_as_current_span("shadow churn-v2", kind=SpanKind.CLIENT, attributes=attributes):
                pass
    provider.shutdown()
    mismatch, match, server = memory.get_finished_spans()
    assert mismatch.context is not None and match.context is not None and server.context is not None

    errors: list[str] = []
    read = list(read_shadow_spans([path], lambda p, n, m: errors.append(f"{p}:{n}: {m}")))
    assert errors == []
    # The server span is another instrumentation's: the reader skips it.
    assert [span.span_id for span in read] == [
        format(mismatch.context.span_id, "016x"),
        format(match.context.span_id, "016x"),
    ]
    for span, sdk_span, attributes in zip(
        read, (mismatch, match), (SHADOW_ATTRIBUTES, MATCH_ATTRIBUTES), strict=True
    ):
        assert span.trace_id == format(server.context.trace_id, "032x")
        assert span.name == "shadow churn-v2"
        assert (span.start_ns, span.end_ns) == (sdk_span.start_time, sdk_span.end_time)
        assert typed(span.attributes) == typed(attributes)
        assert (span.target, span.route, span.outcome) == (
            "churn-v2",
            "POST /predict",
            attributes["shadow.outcome"],
        )

    # One line per export (SimpleSpanProcessor: per span). The reader keeps no parent: check the lines.
    lines = read_lines(path)
    assert len(lines) == 3
    parents = {span["spanId"]: span.get("parentSpanId") for doc in lines for span in all_spans(doc)}
    server_id = format(server.context.span_id, "016x")
    assert parents == {read[0].span_id: server_id, read[1].span_id: server_id, server_id: None}


def test_file_lines_round_trip_to_the_protobuf_request(tmp_path: Path) -> None:
    """The lines are the Collector's format: protobuf's JSON mapping of the request, with hex ids."""
    spans = make_spans()
    path = tmp_path / "spans.jsonl"
    exporter = FileSpanExporter(path)
    assert exporter.export(spans) is SpanExportResult.SUCCESS
    assert exporter.export(spans[:1]) is SpanExportResult.SUCCESS
    exporter.shutdown()

    lines = read_lines(path)
    assert len(lines) == 2
    for doc, batch in zip(lines, (spans, spans[:1]), strict=True):
        for span in all_spans(doc):
            assert HEX32.match(span["traceId"]) and HEX16.match(span["spanId"])
        parsed = json_format.Parse(json.dumps(hex_ids_to_base64(doc)), ExportTraceServiceRequest())
        assert parsed == encode_spans(batch)


def test_file_exporter_writes_nothing_for_empty_batches(tmp_path: Path) -> None:
    path = tmp_path / "spans.jsonl"
    exporter = FileSpanExporter(path)
    assert exporter.export([]) is SpanExportResult.SUCCESS
    exporter.shutdown()
    assert path.read_bytes() == b""


def test_unwritable_span_file_fails_at_setup(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # The official exporter opens the file when it is built: a bad EXAMPLE_SPAN_FILE stops the app at
    # startup instead of losing every span later.
    clean_env.setenv("EXAMPLE_SPAN_FILE", str(tmp_path / "missing-dir" / "spans.jsonl"))
    with pytest.raises(FileNotFoundError):
        setup_telemetry("churn-api")


# --- (b) several processes, one file -------------------------------------------------------------

WRITER = textwrap.dedent(
    """
    import os, sys, time
    from opentelemetry.exporter.otlp.json.file import FileSpanExporter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    path, go, tag = sys.argv[1:4]
    batches, per_batch, pad = (int(arg) for arg in sys.argv[4:7])
    memory = InMemorySpanExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("writer")
    for i in range(per_batch):
        with tracer.start_as_current_span(f"{tag}-{i}", attributes={"tag": tag, "pad": tag * pad}):
            pass
    spans = memory.get_finished_spans()
    exporter = FileSpanExporter(path)
    print("ready", flush=True)
    while not os.path.exists(go):
        time.sleep(0.001)
    for _ in range(batches):
        assert exporter.export(spans).name == "SUCCESS"
    exporter.shutdown()
    provider.shutdown()
    """
)


# Lines of ~3.5 kB wait in the file object's buffer for the exporter's flush after each export;
# lines of ~43 kB go past the buffer: either way, a line must reach the file in one write.
@pytest.mark.parametrize("pad", [10, 4000])
def test_concurrent_processes_append_whole_lines(tmp_path: Path, pad: int) -> None:
    path, go = tmp_path / "shared.jsonl", tmp_path / "go"
    batches, per_batch = 150, 10
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path), str(go), tag, str(batches), str(per_batch), str(pad)],
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        for tag in ("A", "B", "C")
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready"
        go.touch()
        for proc in procs:
            assert proc.wait(timeout=120) == 0
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()

    raw = path.read_bytes()
    assert raw.endswith(b"\n")
    lines = raw.split(b"\n")[:-1]
    assert len(lines) == 3 * batches
    counts: dict[str, int] = {}
    for line in lines:
        spans = all_spans(json.loads(line))  # a torn or interleaved line would not parse
        assert len(spans) == per_batch
        tags = {attribute_map(span["attributes"])["tag"]["stringValue"] for span in spans}
        assert len(tags) == 1
        tag = tags.pop()
        counts[tag] = counts.get(tag, 0) + 1
    assert counts == {"A": batches, "B": batches, "C": batches}


# --- (c) OTLP/HTTP to a receiver -----------------------------------------------------------------


@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_setup_telemetry_exports_spans_and_metrics_over_otlp_http(
    clean_env: pytest.MonkeyPatch, tmp_path: Path, compression: str
) -> None:
    with OtlpReceiver() as receiver:
        clean_env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
        clean_env.setenv("OTEL_EXPORTER_OTLP_COMPRESSION", compression)
        tracer_provider, meter_provider, description = setup_telemetry("churn-api")
        try:
            assert receiver.endpoint in description
            assert "file" not in description
            assert trace.get_tracer_provider() is not tracer_provider

            tracer = tracer_provider.get_tracer("shadow_middleware", "1.2.3")
            with (
                tracer.start_as_current_span("POST /predict", kind=SpanKind.SERVER) as server,
                tracer.start_as_current_span(
                    "shadow churn-v2", kind=SpanKind.CLIENT, attributes=CLIENT_ATTRIBUTES
                ) as client,
            ):
                client.set_status(Status(StatusCode.ERROR, "candidate disagreed"))
            assert tracer_provider.force_flush()

            (span,) = receiver.wait_for_spans(lambda s: s["name"] == "shadow churn-v2", timeout=10)
            assert span["kind"] == SPAN_KIND_CLIENT
            assert span["scope"] == "shadow_middleware"
            assert span["trace_id"] == format(client.get_span_context().trace_id, "032x")
            assert span["span_id"] == format(client.get_span_context().span_id, "016x")
            assert span["parent_span_id"] == format(server.get_span_context().span_id, "016x")
            assert span["attributes"] == CLIENT_ATTRIBUTES
            assert span["resource"]["service.name"] == "churn-api"
            assert span["status_code"] == STATUS_CODE_ERROR
            (server_span,) = receiver.wait_for_spans(lambda s: s["kind"] == SPAN_KIND_SERVER)
            assert server_span["parent_span_id"] is None

            meter = meter_provider.get_meter("shadow_middleware", "1.2.3")
            meter.create_counter("shadow.requests").add(1, {"shadow.target": "churn-v2"})
            meter.create_histogram("shadow.latency", unit="ms").record(12.5)
            assert meter_provider.force_flush()
            assert {"shadow.requests", "shadow.latency"} <= receiver.metric_names()

            encodings = {headers.get("Content-Encoding") for headers in receiver.request_headers}
            assert encodings == ({"gzip"} if compression == "gzip" else {None})
        finally:
            tracer_provider.shutdown()
            meter_provider.shutdown()
    assert not (tmp_path / DEFAULT_SPAN_FILE).exists()


def test_setup_telemetry_with_endpoint_and_span_file_writes_both(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    span_file = tmp_path / "both.jsonl"
    with OtlpReceiver() as receiver:
        clean_env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
        clean_env.setenv("EXAMPLE_SPAN_FILE", str(span_file))
        tracer_provider, meter_provider, description = setup_telemetry("churn-api")
        try:
            assert receiver.endpoint in description and str(span_file) in description
            with tracer_provider.get_tracer("t").start_as_current_span("both", kind=SpanKind.CLIENT):
                pass
            assert tracer_provider.force_flush()
            (received,) = receiver.wait_for_spans(lambda s: s["name"] == "both")
        finally:
            tracer_provider.shutdown()
            meter_provider.shutdown()
    (written,) = [span for doc in read_lines(span_file) for span in all_spans(doc)]
    assert written["name"] == "both"
    assert written["spanId"] == received["span_id"]
    assert written["kind"] == SPAN_KIND_CLIENT


# --- (d) no endpoint: the default file -----------------------------------------------------------


def test_setup_telemetry_without_endpoint_writes_the_default_file(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    tracer_provider, meter_provider, description = setup_telemetry("churn-api")
    try:
        assert DEFAULT_SPAN_FILE in description
        assert "OTLP" not in description
        with tracer_provider.get_tracer("shadow_middleware").start_as_current_span(
            "shadow churn-v2", kind=SpanKind.CLIENT, attributes={"shadow.outcome": "match"}
        ):
            pass
        assert tracer_provider.force_flush()
        (doc,) = read_lines(tmp_path / DEFAULT_SPAN_FILE)
        resource = attribute_map(doc["resourceSpans"][0]["resource"]["attributes"])
        assert resource["service.name"] == {"stringValue": "churn-api"}
        (span,) = all_spans(doc)
        assert span["name"] == "shadow churn-v2"
        assert span["kind"] == SPAN_KIND_CLIENT
        assert attribute_map(span["attributes"])["shadow.outcome"] == {"stringValue": "match"}
        # Metrics have no reader without an endpoint: recording works and goes nowhere.
        meter_provider.get_meter("shadow_middleware").create_counter("shadow.requests").add(1)
        assert meter_provider.force_flush()
    finally:
        tracer_provider.shutdown()
        meter_provider.shutdown()


def test_setup_telemetry_honours_shadow_span_file_without_endpoint(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    span_file = tmp_path / "custom.jsonl"
    clean_env.setenv("EXAMPLE_SPAN_FILE", str(span_file))
    tracer_provider, meter_provider, description = setup_telemetry("churn-api")
    try:
        assert str(span_file) in description
        with tracer_provider.get_tracer("t").start_as_current_span("x"):
            pass
        assert tracer_provider.force_flush()
    finally:
        tracer_provider.shutdown()
        meter_provider.shutdown()
    assert [span["name"] for doc in read_lines(span_file) for span in all_spans(doc)] == ["x"]
    assert not (tmp_path / DEFAULT_SPAN_FILE).exists()


def test_otlp_receiver_rejects_other_content(clean_env: pytest.MonkeyPatch) -> None:
    import urllib.error
    import urllib.request

    with OtlpReceiver() as receiver:
        request = urllib.request.Request(
            receiver.endpoint + "/v1/traces",
            data=b"{}",
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(request, timeout=5)
        assert info.value.code == 415
        info.value.close()
        with pytest.raises(TimeoutError):
            receiver.wait_for_spans(timeout=0.05)
