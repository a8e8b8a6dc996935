"""A minimal OTLP/HTTP (protobuf) receiver for tests: a stand-in for the OpenTelemetry Collector.

Usage::

    with OtlpReceiver() as receiver:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
        ...
        spans = receiver.wait_for_spans(lambda s: s["name"] == "shadow churn-v2", count=1)
"""

from __future__ import annotations

import gzip
import threading
import time
import zlib
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

__all__ = ["OtlpReceiver", "SpanDict", "any_value", "attributes"]

SpanDict = dict[str, Any]


def any_value(value: AnyValue) -> Any:
    """Flatten an OTLP ``AnyValue`` to a Python value (None when unset)."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [any_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return attributes(value.kvlist_value.values)
    return getattr(value, kind)


def attributes(kvs: Iterable[KeyValue]) -> dict[str, Any]:
    """Flatten OTLP attributes (a repeated ``KeyValue``) to a dict."""
    return {kv.key: any_value(kv.value) for kv in kvs}


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _reply(self, status: int, body: bytes = b"", content_type: str = "application/x-protobuf") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0]
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if path not in ("/v1/traces", "/v1/metrics"):
            self._reply(404, b"not found", "text/plain")
            return
        content_type = (self.headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()
        if content_type != "application/x-protobuf":
            self._reply(415, b"only application/x-protobuf", "text/plain")
            return
        encoding = (self.headers.get("Content-Encoding") or "").strip().lower()
        try:
            if encoding == "gzip":
                body = gzip.decompress(body)
            elif encoding == "deflate":
                body = zlib.decompress(body)
            elif encoding not in ("", "identity"):
                self._reply(415, b"unsupported Content-Encoding", "text/plain")
                return
            if path == "/v1/traces":
                trace_request = ExportTraceServiceRequest.FromString(body)
                self.server.receiver._add_traces(trace_request, dict(self.headers.items()))
                self._reply(200, ExportTraceServiceResponse().SerializeToString())
            else:
                metrics_request = ExportMetricsServiceRequest.FromString(body)
                self.server.receiver._add_metrics(metrics_request, dict(self.headers.items()))
                self._reply(200, ExportMetricsServiceResponse().SerializeToString())
        except Exception as exc:  # a malformed payload must fail the export, not kill the server
            self._reply(400, f"bad request: {exc}".encode(), "text/plain")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    receiver: OtlpReceiver


class OtlpReceiver:
    """OTLP/HTTP receiver on 127.0.0.1 (random port), serving from a daemon thread.

    Use as a context manager, or call :meth:`start` and :meth:`close`.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.trace_requests: list[ExportTraceServiceRequest] = []
        self.metrics_requests: list[ExportMetricsServiceRequest] = []
        self.request_headers: list[dict[str, str]] = []
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> OtlpReceiver:
        server = _Server(("127.0.0.1", 0), _Handler)
        server.receiver = self
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="otlp-receiver", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> OtlpReceiver:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("OtlpReceiver is not running")
        return int(self._server.server_address[1])

    @property
    def endpoint(self) -> str:
        """Base URL for ``OTEL_EXPORTER_OTLP_ENDPOINT`` (exporters append ``/v1/traces`` etc.)."""
        return f"http://127.0.0.1:{self.port}"

    # --- recording -------------------------------------------------------------------------

    def _add_traces(self, request: ExportTraceServiceRequest, headers: dict[str, str]) -> None:
        with self._cond:
            self.trace_requests.append(request)
            self.request_headers.append(headers)
            self._cond.notify_all()

    def _add_metrics(self, request: ExportMetricsServiceRequest, headers: dict[str, str]) -> None:
        with self._cond:
            self.metrics_requests.append(request)
            self.request_headers.append(headers)
            self._cond.notify_all()

    # --- queries ---------------------------------------------------------------------------

    def spans(self) -> list[SpanDict]:
        """Every received span, flattened, in arrival order.

        ``kind`` is the OTLP enum (``SPAN_KIND_CLIENT`` = 3), which is NOT the SDK's ``SpanKind``
        value (``SpanKind.CLIENT.value`` = 2). Ids are lowercase hex.
        """
        with self._cond:
            requests = list(self.trace_requests)
        return self._flatten(requests)

    @staticmethod
    def _flatten(requests: list[ExportTraceServiceRequest]) -> list[SpanDict]:
        out: list[SpanDict] = []
        for request in requests:
            for resource_spans in request.resource_spans:
                resource = attributes(resource_spans.resource.attributes)
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        out.append(
                            {
                                "name": span.name,
                                "kind": int(span.kind),
                                "trace_id": span.trace_id.hex(),
                                "span_id": span.span_id.hex(),
                                "parent_span_id": span.parent_span_id.hex() or None,
                                "scope": scope_spans.scope.name,
                                "attributes": attributes(span.attributes),
                                "resource": resource,
                                "status_code": int(span.status.code),
                                "status_message": span.status.message,
                                "start_time_unix_nano": span.start_time_unix_nano,
                                "end_time_unix_nano": span.end_time_unix_nano,
                            }
                        )
        return out

    def metric_names(self) -> set[str]:
        with self._cond:
            requests = list(self.metrics_requests)
        return {
            metric.name
            for request in requests
            for resource_metrics in request.resource_metrics
            for scope_metrics in resource_metrics.scope_metrics
            for metric in scope_metrics.metrics
        }

    def wait_for_spans(
        self,
        predicate: Callable[[SpanDict], bool] | None = None,
        count: int = 1,
        timeout: float = 10.0,
    ) -> list[SpanDict]:
        """Wait until at least ``count`` received spans satisfy ``predicate``; return all that do.

        Raises ``TimeoutError`` (listing the span names seen) if they do not arrive in time.
        """
        deadline = time.monotonic() + timeout
        while True:
            with self._cond:
                requests = list(self.trace_requests)
            spans = self._flatten(requests)
            matching = [s for s in spans if predicate is None or predicate(s)]
            if len(matching) >= count:
                return matching
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                names = sorted({s["name"] for s in spans})
                raise TimeoutError(
                    f"expected {count} matching span(s) within {timeout}s, got {len(matching)}; "
                    f"received {len(spans)} span(s) named {names}"
                )
            with self._cond:
                if len(self.trace_requests) == len(requests):
                    self._cond.wait(remaining)
