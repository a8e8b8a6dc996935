"""Shared fixtures: a real shadow HTTP server on 127.0.0.1 and in-memory OpenTelemetry."""

from __future__ import annotations

import gzip
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes


Reply = tuple[int, list[tuple[str, str]], bytes]


def json_reply(doc: Any, status: int = 200) -> Reply:
    body = json.dumps(doc).encode()
    return status, [("content-type", "application/json")], body


@dataclass
class ShadowServer:
    """A candidate service that records what it receives and answers as told."""

    port: int = 0
    received: list[Received] = field(default_factory=list)
    reply: Callable[[Received], Reply] = lambda req: json_reply({"prediction": 0.5})
    delay: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.received) >= count:
                    return list(self.received)
            time.sleep(0.01)
        raise AssertionError(f"shadow server got {len(self.received)} requests, expected {count}")


def _handler(server: ShadowServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _any(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length) if length else b""
            req = Received(
                self.command,
                self.path,
                {k.lower(): v for k, v in self.headers.items()},
                body,
            )
            with server.lock:
                server.received.append(req)
            if server.delay:
                time.sleep(server.delay)
            status, headers, out = server.reply(req)
            try:
                self.send_response(status)
                for k, v in headers:
                    self.send_header(k, v)
                if not any(k.lower() == "content-length" for k, _ in headers):
                    self.send_header("content-length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)
            except (BrokenPipeError, ConnectionResetError):
                pass

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _any

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def shadow_server() -> Iterator[ShadowServer]:
    state = ShadowServer()

    class Server(ThreadingHTTPServer):
        request_queue_size = 128  # the client may open 32 connections at once; 5 drops some

    httpd = Server(("127.0.0.1", 0), _handler(state))
    httpd.daemon_threads = True
    state.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()


@dataclass
class Telemetry:
    tracer_provider: TracerProvider
    meter_provider: MeterProvider
    exporter: InMemorySpanExporter
    reader: InMemoryMetricReader

    def spans(self, name_prefix: str = "shadow ") -> list[ReadableSpan]:
        return [s for s in self.exporter.get_finished_spans() if s.name.startswith(name_prefix)]

    def counter_points(self) -> dict[tuple[str, str, str], int]:
        data = self.reader.get_metrics_data()
        out: dict[tuple[str, str, str], int] = {}
        if data is None:
            return out
        for rm in data.resource_metrics:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    if metric.name != "shadow.requests":
                        continue
                    for point in metric.data.data_points:  # type: ignore[union-attr]
                        a = point.attributes or {}
                        key = (str(a["shadow.target"]), str(a["shadow.route"]), str(a["shadow.outcome"]))
                        out[key] = int(point.value)  # type: ignore[union-attr]
        return out


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    exporter = InMemorySpanExporter()
    tp = TracerProvider()
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    mp = MeterProvider(metric_readers=[reader])
    yield Telemetry(tp, mp, exporter, reader)
    tp.shutdown()
    mp.shutdown()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def gzipped(doc: Any) -> bytes:
    return gzip.compress(json.dumps(doc).encode())
