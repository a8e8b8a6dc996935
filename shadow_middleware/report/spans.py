"""Read shadow spans back from OTLP/JSON files.

The format is the OpenTelemetry Collector ``file`` exporter's: one
``ExportTraceServiceRequest`` as JSON per line, plain or gzip. Reading streams line
by line, so file size does not bound memory; spans of other instrumentation in the
same file are skipped; a malformed line is reported with its number and skipped.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

__all__ = ["ErrorHandler", "ShadowSpan", "read_shadow_spans"]

ErrorHandler = Callable[[str, int, str], None]  # (path, line number, message) of a skipped line


@dataclass(slots=True)
class ShadowSpan:
    trace_id: str
    span_id: str
    name: str
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]

    @property
    def target(self) -> str:
        return str(self.attributes.get("shadow.target", ""))

    @property
    def route(self) -> str:
        return str(self.attributes.get("shadow.route", ""))

    @property
    def outcome(self) -> str:
        return str(self.attributes.get("shadow.outcome", ""))


def any_value(value: Any) -> Any:
    """Decode an OTLP/JSON ``AnyValue``."""
    if not isinstance(value, dict):
        return value
    if "stringValue" in value:
        return value["stringValue"]
    if "intValue" in value:
        return int(value["intValue"])  # int64 travels as a JSON string
    if "doubleValue" in value:
        raw = value["doubleValue"]
        return float(raw) if not isinstance(raw, str) else float(raw.replace("Infinity", "inf"))
    if "boolValue" in value:
        return bool(value["boolValue"])
    if "arrayValue" in value:
        return [any_value(v) for v in (value["arrayValue"] or {}).get("values", [])]
    if "kvlistValue" in value:
        return attributes_of((value["kvlistValue"] or {}).get("values", []))
    if "bytesValue" in value:
        return value["bytesValue"]
    return None


def attributes_of(items: Iterable[Any]) -> dict[str, Any]:
    return {item["key"]: any_value(item.get("value")) for item in items if isinstance(item, dict)}


def _open(path: str | Path) -> IO[str]:
    with open(path, "rb") as probe:
        gzipped = probe.read(2) == b"\x1f\x8b"
    if gzipped:
        return gzip.open(path, "rt", encoding="utf-8", errors="replace")
    return open(path, encoding="utf-8", errors="replace")


def _spans_in_request(doc: Any) -> Iterator[ShadowSpan]:
    for resource_spans in doc.get("resourceSpans") or ():
        scopes = resource_spans.get("scopeSpans") or resource_spans.get("instrumentationLibrarySpans") or ()
        for scope_spans in scopes:
            for span in scope_spans.get("spans") or ():
                attrs = attributes_of(span.get("attributes") or ())
                if "shadow.target" not in attrs or "shadow.outcome" not in attrs:
                    continue  # another instrumentation's span
                yield ShadowSpan(
                    trace_id=str(span.get("traceId", "")),
                    span_id=str(span.get("spanId", "")),
                    name=str(span.get("name", "")),
                    start_ns=int(span.get("startTimeUnixNano") or 0),
                    end_ns=int(span.get("endTimeUnixNano") or 0),
                    attributes=attrs,
                )


def read_shadow_spans(
    paths: Iterable[str | Path], on_error: ErrorHandler | None = None
) -> Iterator[ShadowSpan]:
    """Yield the shadow spans in ``paths`` (OTLP/JSON lines, plain or gzip), in file order.

    ``on_error(path, line_number, message)`` hears about each malformed line, which is
    then skipped.
    """
    for path in paths:
        with _open(path) as lines:
            for number, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                try:
                    doc = json.loads(line)
                    if not isinstance(doc, dict):
                        raise ValueError("not a JSON object")
                    spans = list(_spans_in_request(doc))
                except (ValueError, TypeError, AttributeError, KeyError) as exc:
                    if on_error is not None:
                        on_error(str(path), number, f"{type(exc).__name__}: {exc}")
                    continue
                yield from spans
