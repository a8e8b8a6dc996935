"""Read shadow spans back from OTLP/JSON files.

The format is the OpenTelemetry Collector ``file`` exporter's: one
``ExportTraceServiceRequest`` as JSON per line, plain or gzip. Reading streams line
by line, so file size does not bound memory; spans of other instrumentation in the
same file are skipped; a malformed line is reported with its number and skipped.

Lines are decoded with msgspec into typed structs that skip what the report does not read (about
twice as fast as ``json.loads`` into dictionaries); a line the typed decoder refuses is decoded again
the general way, so odd but valid OTLP (``null`` lists, numbers as strings) reads as before.

Lines that are not JSON at all (they do not start with ``{`` or ``[``: uvicorn's access log between
the spans when the exporter writes to standard output, a traceback) are skipped and counted in a
:class:`Skipped`, which keeps the first few to show. A file without a single OTLP request (the SDK's
``ConsoleSpanExporter`` output, a pretty-printed JSON document, a log) is refused with one
:class:`NotOTLPError` saying what was expected and what its first lines look like, instead of one
error per line.
"""

from __future__ import annotations

import gzip
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import msgspec

__all__ = [
    "EXPECTED",
    "ErrorHandler",
    "NotOTLPError",
    "Progress",
    "ShadowSpan",
    "Skipped",
    "read_shadow_spans",
    "read_span_batches",
]

ErrorHandler = Callable[[str, int, str], None]  # (path, line number, message) of a skipped line
Progress = Callable[[int], None]  # bytes of input read so far (compressed bytes for gzip), all files

EXPECTED = (
    "expected OTLP JSON lines (one ExportTraceServiceRequest per line, as written by OpenTelemetry's "
    "FileSpanExporter or the Collector's file exporter)"
)
HOW_TO = "see README 'Writing the span file'"
PROBE_LINES = 20  # the first lines of a file without OTLP request, kept to say what it is instead
SHOW_SKIPPED = 5  # lines that are not OTLP: the first few are kept to show, the rest counted
MAX_PENDING = 1000  # malformed lines before the first OTLP request: messages kept, then numbers only
DIAGNOSE_LINES = 1000  # how far to look for what the file is instead
_CONSOLE_MARK = re.compile(r'"trace_id":\s*"0x[0-9a-f]{32}"')  # ConsoleSpanExporter's span context
_OTHER_SIGNALS = {"resourceMetrics": "OTLP metrics", "resourceLogs": "OTLP logs"}


class NotOTLPError(ValueError):
    """The input is not OTLP JSON lines; the message is one line: what was expected, what was found."""


@dataclass(slots=True)
class Skipped:
    """Lines that are not JSON (a log between the spans), skipped: how many, and the first few."""

    count: int = 0
    first: list[tuple[str, int, str]] = field(default_factory=list)  # (path, line number, text)

    def add(self, path: str, number: int, text: str) -> None:
        self.count += 1
        if len(self.first) < SHOW_SKIPPED:
            self.first.append((path, number, text.rstrip("\r\n")[:200]))

    def merge(self, other: Skipped) -> None:
        self.count += other.count
        self.first.extend(other.first[: SHOW_SKIPPED - len(self.first)])


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


# ---- the typed fast path: only the fields the report reads ---------------------------------------


class _Value(msgspec.Struct):
    stringValue: str | None = None
    doubleValue: float | None = None  # "NaN", "Infinity" and int64 strings: lax decoding converts
    intValue: int | None = None
    boolValue: bool | None = None
    arrayValue: _Array | None = None
    kvlistValue: _KvList | None = None
    bytesValue: str | None = None


class _Array(msgspec.Struct):
    values: list[_Value] | None = None


class _KeyValue(msgspec.Struct):
    key: str
    value: _Value | None = None


class _KvList(msgspec.Struct):
    values: list[_KeyValue] | None = None


class _Span(msgspec.Struct):
    traceId: str = ""
    spanId: str = ""
    name: str = ""
    startTimeUnixNano: int | str | None = None
    endTimeUnixNano: int | str | None = None
    attributes: list[_KeyValue] | None = None


class _ScopeSpans(msgspec.Struct):
    spans: list[_Span] | None = None


class _ResourceSpans(msgspec.Struct):
    scopeSpans: list[_ScopeSpans] | None = None
    instrumentationLibrarySpans: list[_ScopeSpans] | None = None


class _Request(msgspec.Struct):
    resourceSpans: list[_ResourceSpans] | None = None


_decode_request = msgspec.json.Decoder(_Request, strict=False).decode


def _typed_value(v: _Value | None) -> Any:
    if v is None:
        return None
    s = v.stringValue
    if s is not None:
        return s
    d = v.doubleValue
    if d is not None:
        return d
    i = v.intValue
    if i is not None:
        return i
    b = v.boolValue
    if b is not None:
        return b
    if v.arrayValue is not None:
        return [_typed_value(x) for x in v.arrayValue.values or ()]
    if v.kvlistValue is not None:
        return {kv.key: _typed_value(kv.value) for kv in v.kvlistValue.values or ()}
    return v.bytesValue


def _typed_spans(raw: bytes) -> list[ShadowSpan]:
    """The shadow spans of one line; raises msgspec's errors for anything the typed path cannot read."""
    out: list[ShadowSpan] = []
    request = _decode_request(raw)
    for resource_spans in request.resourceSpans or ():
        for scope_spans in resource_spans.scopeSpans or resource_spans.instrumentationLibrarySpans or ():
            for span in scope_spans.spans or ():
                attrs: dict[str, Any] = {}
                for kv in span.attributes or ():
                    v = kv.value
                    if v is not None:  # the scalars inline
                        x: Any = v.stringValue
                        if x is None:
                            x = v.doubleValue
                            if x is None:
                                x = v.intValue
                                if x is None:
                                    x = v.boolValue
                                    if x is None:
                                        x = _typed_value(v)
                        attrs[kv.key] = x
                    else:
                        attrs[kv.key] = None
                if "shadow.target" not in attrs or "shadow.outcome" not in attrs:
                    continue  # another instrumentation's span
                out.append(
                    ShadowSpan(
                        span.traceId,
                        span.spanId,
                        span.name,
                        int(span.startTimeUnixNano or 0),
                        int(span.endTimeUnixNano or 0),
                        attrs,
                    )
                )
    return out


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
    paths: Iterable[str | Path],
    on_error: ErrorHandler | None = None,
    on_progress: Progress | None = None,
    skipped: Skipped | None = None,
) -> Iterator[ShadowSpan]:
    """Yield the shadow spans in ``paths`` (OTLP/JSON lines, plain or gzip), in file order.

    ``on_error(path, line_number, message)`` hears about each malformed line, which is
    then skipped; a line that is not JSON at all (it starts with neither ``{`` nor ``[``: a log
    line) is counted in ``skipped`` instead. Raises :class:`NotOTLPError` for a file none of whose
    lines is an OTLP trace request (a JSON object with ``resourceSpans``): the file as a whole is
    something else. The malformed and skipped lines before the first request are reported once the
    file is known to be OTLP. ``on_progress(bytes)`` hears how far the reading got (the bytes of all
    files so far, compressed bytes for gzip), every few lines.
    """
    for batch in read_span_batches(paths, on_error, on_progress, skipped):
        yield from batch


def read_span_batches(
    paths: Iterable[str | Path],
    on_error: ErrorHandler | None = None,
    on_progress: Progress | None = None,
    skipped: Skipped | None = None,
) -> Iterator[list[ShadowSpan]]:
    """:func:`read_shadow_spans`, one list per line (an export batch): cheaper to iterate."""
    done = 0
    for path in paths:
        confirmed = False
        probe: list[tuple[str, Any]] = []  # the first non-empty lines, until the file is confirmed
        pending: list[tuple[int, str]] = []  # their errors, reported once it is
        pending_more: list[int] = []  # beyond MAX_PENDING: line numbers only
        others = Skipped()  # this file's lines that are not JSON, merged once it is confirmed
        with open(path, "rb") as raw_file:
            gzipped = raw_file.read(2) == b"\x1f\x8b"
            raw_file.seek(0)
            lines: IO[bytes] = gzip.GzipFile(fileobj=raw_file) if gzipped else raw_file  # type: ignore[assignment]
            for number, line in enumerate(lines, start=1):
                if on_progress is not None and number % 16 == 0:
                    on_progress(done + raw_file.tell())
                if not line.strip():
                    continue
                if confirmed:
                    try:
                        yield _typed_spans(line)
                        continue
                    except (msgspec.DecodeError, ValueError, TypeError):
                        pass  # the general way below decides, and reports what is wrong
                text = line.decode("utf-8", errors="replace")
                doc: Any = None
                if not text.lstrip().startswith(("{", "[")):  # not JSON: a log line, say
                    if confirmed:
                        if skipped is not None:
                            skipped.add(str(path), number, text)
                        continue
                    others.add(str(path), number, text)
                    if len(probe) < PROBE_LINES:
                        probe.append((text.strip()[:200], None))
                    continue
                try:
                    doc = json.loads(text)
                    if not isinstance(doc, dict):
                        raise ValueError("not a JSON object")
                    spans = list(_spans_in_request(doc))
                    if not confirmed and "resourceSpans" in doc:
                        confirmed = True
                        if on_error is not None:
                            for n, msg in pending:
                                on_error(str(path), n, msg)
                            for n in pending_more:
                                on_error(str(path), n, "malformed line")
                        if skipped is not None:
                            skipped.merge(others)
                        probe, pending, pending_more, others = [], [], [], Skipped()
                except (ValueError, TypeError, AttributeError, KeyError) as exc:
                    message = f"{type(exc).__name__}: {exc}"
                    if confirmed:
                        if on_error is not None:
                            on_error(str(path), number, message)
                        continue
                    spans = []
                    if len(pending) < MAX_PENDING:
                        pending.append((number, message[:300]))
                    else:
                        pending_more.append(number)
                if not confirmed:  # nothing to yield: an OTLP request would have confirmed the file
                    if len(probe) < PROBE_LINES:
                        probe.append((text.strip()[:200], doc))
                    continue
                yield spans
            done += os.fstat(raw_file.fileno()).st_size
        if on_progress is not None:
            on_progress(done)
        if probe and not confirmed:  # its first lines, or all of a short file, are something else
            raise NotOTLPError(f"{EXPECTED}; {path} {_looks_like(path, probe)} — {HOW_TO}")
