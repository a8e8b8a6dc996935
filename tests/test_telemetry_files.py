"""The example apps' telemetry setup: the OTLP/JSON file exporter and OTLP/HTTP export.

These use the OpenTelemetry SDK directly, without a web app.
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
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from examples.churn.telemetry import DEFAULT_SPAN_FILE, OtlpJsonFileExporter, setup_telemetry
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
    "SHADOW_SPAN_FILE",
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


# --- (a) the file format -------------------------------------------------------------------------


def test_file_exporter_writes_collector_style_otlp_json(tmp_path: Path) -> None:
    spans = make_spans()
    path = tmp_path / "spans.jsonl"
    exporter = OtlpJsonFileExporter(path)
    assert exporter.export(spans) is SpanExportResult.SUCCESS
    assert exporter.force_flush() is True
    exporter.shutdown()

    (doc,) = read_lines(path)
    resource_spans = doc["resourceSpans"]
    assert len(resource_spans) == 1
    resource = attribute_map(resource_spans[0]["resource"]["attributes"])
    assert resource["service.name"] == {"stringValue": "churn-api"}
    (scope_spans,) = resource_spans[0]["scopeSpans"]
    assert scope_spans["scope"] == {"name": "shadow_middleware", "version": "1.2.3"}

    by_name = {span["name"]: span for span in scope_spans["spans"]}
    sdk_by_name = {span.name: span for span in spans}
    server, client = by_name["POST /predict"], by_name["shadow churn-v2"]

    for name, span in by_name.items():
        sdk_span = sdk_by_name[name]
        assert sdk_span.context is not None
        assert HEX32.match(span["traceId"]) and HEX16.match(span["spanId"])
        assert span["traceId"] == format(sdk_span.context.trace_id, "032x")
        assert span["spanId"] == format(sdk_span.context.span_id, "016x")
        assert span["startTimeUnixNano"] == str(sdk_span.start_time)
        assert span["endTimeUnixNano"] == str(sdk_span.end_time)
    assert "parentSpanId" not in server
    assert "parentSpanId" not in by_name["other"]
    assert client["parentSpanId"] == server["spanId"]
    assert client["traceId"] == server["traceId"]

    assert server["kind"] == SPAN_KIND_SERVER
    assert client["kind"] == SPAN_KIND_CLIENT
    assert client["status"] == {"code": STATUS_CODE_ERROR, "message": "candidate disagreed"}

    attrs = attribute_map(client["attributes"])
    assert attrs["shadow.target"] == {"stringValue": "churn-v2"}
    assert attrs["shadow.status_code"] == {"intValue": "200"}
    assert attrs["shadow.big"] == {"intValue": str(BIG_INT)}
    assert attrs["shadow.negative"] == {"intValue": "-7"}
    assert attrs["shadow.latency_ms"] == {"doubleValue": 12.5}
    assert attrs["shadow.match"] == {"boolValue": False}
    assert attrs["shadow.unicode"] == {"stringValue": "probabilité → 0.5"}
    assert attrs["shadow.fields"] == {
        "arrayValue": {"values": [{"stringValue": "/churn_probability"}, {"stringValue": "/make_offer"}]}
    }
    assert attrs["shadow.ints"] == {"arrayValue": {"values": [{"intValue": str(i)} for i in (1, 2, 3)]}}
    assert attrs["shadow.doubles"] == {
        "arrayValue": {"values": [{"doubleValue": 0.25}, {"doubleValue": 1.5}]}
    }
    assert attrs["shadow.bools"] == {"arrayValue": {"values": [{"boolValue": True}, {"boolValue": False}]}}

    (event,) = client["events"]
    assert event["name"] == "compared"
    assert isinstance(event["timeUnixNano"], str)
    assert attribute_map(event["attributes"])["diff.count"] == {"intValue": "2"}
    (link,) = client["links"]
    assert link["traceId"] == by_name["other"]["traceId"]
    assert link["spanId"] == by_name["other"]["spanId"]


def test_file_lines_round_trip_to_the_protobuf_request(tmp_path: Path) -> None:
    spans = make_spans()
    path = tmp_path / "spans.jsonl"
    exporter = OtlpJsonFileExporter(path)
    exporter.export(spans)
    exporter.export(spans[:1])

    lines = read_lines(path)
    assert len(lines) == 2
    for doc, batch in zip(lines, (spans, spans[:1]), strict=True):
        parsed = json_format.Parse(json.dumps(hex_ids_to_base64(doc)), ExportTraceServiceRequest())
        assert parsed == encode_spans(batch)


def test_file_exporter_skips_empty_batches(tmp_path: Path) -> None:
    path = tmp_path / "spans.jsonl"
    assert OtlpJsonFileExporter(path).export([]) is SpanExportResult.SUCCESS
    assert not path.exists()


def test_file_exporter_reports_failure_for_unwritable_path(tmp_path: Path) -> None:
    exporter = OtlpJsonFileExporter(tmp_path / "missing-dir" / "spans.jsonl")
    assert exporter.export(make_spans()) is SpanExportResult.FAILURE


# --- (b) several processes, one file -------------------------------------------------------------

WRITER = textwrap.dedent(
    """
    import os, sys, time
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from examples.churn.telemetry import OtlpJsonFileExporter

    path, go, tag, batches, per_batch = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
    memory = InMemorySpanExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("writer")
    for i in range(per_batch):
        with tracer.start_as_current_span(f"{tag}-{i}", attributes={"tag": tag, "pad": tag * 4000}):
            pass
    spans = memory.get_finished_spans()
    exporter = OtlpJsonFileExporter(path)
    print("ready", flush=True)
    while not os.path.exists(go):
        time.sleep(0.001)
    for _ in range(batches):
        assert exporter.export(spans).name == "SUCCESS"
    provider.shutdown()
    """
)


def test_concurrent_processes_append_whole_lines(tmp_path: Path) -> None:
    path, go = tmp_path / "shared.jsonl", tmp_path / "go"
    batches, per_batch = 150, 10
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path), str(go), tag, str(batches), str(per_batch)],
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
        clean_env.setenv("SHADOW_SPAN_FILE", str(span_file))
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
    clean_env.setenv("SHADOW_SPAN_FILE", str(span_file))
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
