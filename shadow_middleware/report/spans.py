"""Read shadow spans back from OTLP/JSON files.

The format is the OpenTelemetry Collector ``file`` exporter's: one
``ExportTraceServiceRequest`` as JSON per line, plain or gzip. Reading streams line
by line, so file size does not bound memory; spans of other instrumentation in the
same file are skipped; a malformed line is reported with its number and skipped.

A file that is not OTLP JSON lines at all (the SDK's ``ConsoleSpanExporter`` output, a
pretty-printed JSON document, a log) is recognised from its first lines and refused with
one :class:`NotOTLPError` saying what was expected, instead of one error per line.
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

__all__ = ["EXPECTED", "ErrorHandler", "NotOTLPError", "ShadowSpan", "read_shadow_spans"]

ErrorHandler = Callable[[str, int, str], None]  # (path, line number, message) of a skipped line

EXPECTED = (
    "expected OTLP JSON lines (one ExportTraceServiceRequest per line, as written by OpenTelemetry's "
    "FileSpanExporter or the Collector's file exporter)"
)
HOW_TO = "see README 'Writing the span file'"
PROBE_LINES = 20  # a file none of whose first 20 non-empty lines is an OTLP request is not OTLP
DIAGNOSE_LINES = 1000  # how far to look for what the file is instead
_CONSOLE_MARK = re.compile(r'"trace_id":\s*"0x[0-9a-f]{32}"')  # ConsoleSpanExporter's span context
_OTHER_SIGNALS = {"resourceMetrics": "OTLP metrics", "resourceLogs": "OTLP logs"}


class NotOTLPError(ValueError):
    """The input is not OTLP JSON lines; the message is one line: what was expected, what was found."""


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


def _looks_like(path: str | Path, first: list[tuple[str, Any]]) -> str:
    """What a file whose first lines held no OTLP request is instead, for the error message.

    ``first``: its first non-empty lines (at most :data:`PROBE_LINES`), each with its parsed JSON
    (``None`` when the line is not JSON)."""
    with _open(path) as lines:
        for number, line in enumerate(lines):
            if number >= DIAGNOSE_LINES:
                break
            if _CONSOLE_MARK.search(line):
                return "looks like ConsoleSpanExporter output"
    for _line, doc in first:
        if isinstance(doc, dict):
            context = doc.get("context")
            if isinstance(context, dict) and "trace_id" in context:
                return "looks like ConsoleSpanExporter output"
            for key, what in _OTHER_SIGNALS.items():
                if key in doc:
                    return f"holds {what}, not spans"
    text, doc = first[0]
    if text in ("{", "["):
        return "looks like one pretty-printed JSON document, not one request per line"
    if isinstance(doc, dict):
        keys = ", ".join(list(doc)[:5]) or "none"
        return f"holds JSON objects of another shape (keys: {keys})"
    if doc is not None:
        return f"holds JSON {type(doc).__name__}s, not objects"
    return "is not JSON lines"


def read_shadow_spans(
    paths: Iterable[str | Path], on_error: ErrorHandler | None = None
) -> Iterator[ShadowSpan]:
    """Yield the shadow spans in ``paths`` (OTLP/JSON lines, plain or gzip), in file order.

    ``on_error(path, line_number, message)`` hears about each malformed line, which is
    then skipped. Raises :class:`NotOTLPError` for a file none of whose first
    :data:`PROBE_LINES` non-empty lines is an OTLP trace request (a JSON object with
    ``resourceSpans``): the file as a whole is something else. The malformed lines among those
    first ones are reported once the file is known to be OTLP.
    """
    for path in paths:
        confirmed = False
        probe: list[tuple[str, Any]] = []  # the first non-empty lines, until the file is confirmed
        pending: list[tuple[int, str]] = []  # their errors, reported once it is
        with _open(path) as lines:
            for number, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                doc: Any = None
                try:
                    doc = json.loads(line)
                    if not isinstance(doc, dict):
                        raise ValueError("not a JSON object")
                    spans = list(_spans_in_request(doc))
                    if not confirmed and "resourceSpans" in doc:
                        confirmed = True
                        if on_error is not None:
                            for n, msg in pending:
                                on_error(str(path), n, msg)
                        probe, pending = [], []
                except (ValueError, TypeError, AttributeError, KeyError) as exc:
                    message = f"{type(exc).__name__}: {exc}"
                    if confirmed:
                        if on_error is not None:
                            on_error(str(path), number, message)
                        continue
                    spans = []
                    pending.append((number, message))
                if not confirmed:  # nothing to yield: an OTLP request would have confirmed the file
                    probe.append((line.strip()[:200], doc))
                    if len(probe) >= PROBE_LINES:
                        break
                    continue
                yield from spans
        if probe and not confirmed:  # its first lines, or all of a short file, are something else
            raise NotOTLPError(f"{EXPECTED}; {path} {_looks_like(path, probe)} — {HOW_TO}")
