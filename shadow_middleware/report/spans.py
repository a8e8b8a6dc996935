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

Every line is hostile input (a candidate's answers and users' request bodies fill the attributes): a
line longer than :data:`MAX_LINE_BYTES` is skipped unread (memory stays bounded by that cap, whatever
the file), and a line is malformed -- reported, counted, skipped -- when a start or end time is not a
whole number of nanoseconds in ``[0, 2**63)``, an ``intValue`` is not an integer, an attribute key is not
a string, or attribute values nest deeper than :data:`MAX_DEPTH`. A number attribute that is not
finite or beyond ± :data:`MAX_VALUE` is read as no value (``None``) and counted in
:attr:`ShadowSpan.out_of_range`: no sum, mean or plot of the report can overflow.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import re
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import msgspec

__all__ = [
    "EXPECTED",
    "MAX_DEPTH",
    "MAX_LINE_BYTES",
    "MAX_TIME_NS",
    "MAX_VALUE",
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
# One export batch per line: the Collector's default batch (8,192 spans of a few KB at most) fits.
MAX_LINE_BYTES = 16 * 2**20
MAX_DEPTH = 32  # attribute values nest (arrays, key-value lists) at most this deep; ours: 1
MAX_TIME_NS = 2**63 - 1  # OTLP times are fixed64; numpy's int64 holds them; year 2262
# A recorded number beyond this is absurd for a score or a duration (1e19 ms: 300 million years); it is
# above every int64, so an OTLP intValue (an id, a count) always reads as itself; and the report's float
# sums and squares of such numbers stay far from overflowing.
MAX_VALUE = 1e19
_TIME = re.compile(r"[0-9]{1,19}")
# what decoding a hostile line can raise (KeyError: an attribute without "key")
_MALFORMED = (ValueError, TypeError, KeyError, AttributeError, OverflowError, RecursionError)
TOO_LONG = f"line longer than {MAX_LINE_BYTES // 2**20} MiB"


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
    out_of_range: int = 0  # number attributes read as None: not finite, or beyond ±MAX_VALUE

    @property
    def target(self) -> str:
        return str(self.attributes.get("shadow.target", ""))

    @property
    def route(self) -> str:
        return str(self.attributes.get("shadow.route", ""))

    @property
    def outcome(self) -> str:
        return str(self.attributes.get("shadow.outcome", ""))


def span_time(raw: Any) -> int:
    """A start or end time in ns (a JSON string or number; missing: 0); raises ``ValueError`` unless a
    whole number in ``[0, MAX_TIME_NS]`` (``"-5"``, 40 digits, ``Infinity`` are malformed)."""
    if raw is None or raw == "" or raw == 0:
        return 0
    if isinstance(raw, str) and _TIME.fullmatch(raw):
        t = int(raw)
    elif isinstance(raw, int) and not isinstance(raw, bool):
        t = raw
    elif isinstance(raw, float) and math.isfinite(raw) and raw.is_integer():
        t = int(raw)
    else:
        raise ValueError(f"time is not a whole number of nanoseconds: {str(raw)[:40]!r}")
    if not 0 <= t <= MAX_TIME_NS:
        raise ValueError(f"time out of range [0, 2**63): {str(raw)[:40]}")
    return t


def _integer(raw: Any) -> int:
    if isinstance(raw, float) and not (math.isfinite(raw) and raw.is_integer()):
        raise ValueError("intValue is not an integer")
    return int(raw)  # int64 travels as a JSON string; beyond ±MAX_VALUE it reads as no value


def any_value(value: Any, depth: int = 0) -> Any:
    """Decode an OTLP/JSON ``AnyValue``; raises ``ValueError`` for one that cannot be (see the module)."""
    if depth > MAX_DEPTH:
        raise ValueError(f"attribute value nested deeper than {MAX_DEPTH}")
    if not isinstance(value, dict):  # not an AnyValue: scalars kept, anything else is no value
        return value if isinstance(value, str | int | float | bool) else None
    if "stringValue" in value:
        s = value["stringValue"]
        if s is not None and not isinstance(s, str):
            raise ValueError("stringValue is not a string")
        return s
    if "intValue" in value:
        return _integer(value["intValue"])
    if "doubleValue" in value:
        raw = value["doubleValue"]
        return float(raw) if not isinstance(raw, str) else float(raw.replace("Infinity", "inf"))
    if "boolValue" in value:
        return bool(value["boolValue"])
    if "arrayValue" in value:
        return [any_value(v, depth + 1) for v in (value["arrayValue"] or {}).get("values", [])]
    if "kvlistValue" in value:
        return attributes_of((value["kvlistValue"] or {}).get("values", []), depth + 1)
    if "bytesValue" in value:
        b = value["bytesValue"]
        return b if isinstance(b, str) else None
    return None


def _in_range(attrs: dict[str, Any]) -> int:
    """Set the number attributes that are not finite or beyond ±MAX_VALUE to ``None``; how many."""
    bad = 0
    for key, value in attrs.items():
        number = isinstance(value, float | int) and not isinstance(value, bool)
        if number and not -MAX_VALUE <= value <= MAX_VALUE:
            attrs[key] = None
            bad += 1
    return bad


def attributes_of(items: Iterable[Any], depth: int = 0) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        if isinstance(item, dict):
            key = item["key"]
            if not isinstance(key, str):
                raise ValueError("attribute key is not a string")
            out[key] = any_value(item.get("value"), depth)
    return out


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


def _typed_value(v: _Value | None, depth: int = 0) -> Any:
    if depth > MAX_DEPTH:
        raise ValueError(f"attribute value nested deeper than {MAX_DEPTH}")
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
        return [_typed_value(x, depth + 1) for x in v.arrayValue.values or ()]
    if v.kvlistValue is not None:
        return {kv.key: _typed_value(kv.value, depth + 1) for kv in v.kvlistValue.values or ()}
    return v.bytesValue


def _typed_spans(raw: bytes) -> list[ShadowSpan]:
    """The shadow spans of one line; raises msgspec's errors for anything the typed path cannot read."""
    out: list[ShadowSpan] = []
    request = _decode_request(raw)
    for resource_spans in request.resourceSpans or ():
        for scope_spans in resource_spans.scopeSpans or resource_spans.instrumentationLibrarySpans or ():
            for span in scope_spans.spans or ():
                attrs: dict[str, Any] = {}
                bad = 0
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
                                elif not -MAX_VALUE <= x <= MAX_VALUE:
                                    x = None
                                    bad += 1
                            elif not -MAX_VALUE <= x <= MAX_VALUE:  # also NaN
                                x = None
                                bad += 1
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
                        span_time(span.startTimeUnixNano),
                        span_time(span.endTimeUnixNano),
                        attrs,
                        bad,
                    )
                )
    return out


def capped_lines(
    f: IO[bytes], cap: int = MAX_LINE_BYTES, broken: list[str] | None = None
) -> Iterator[bytes | None]:
    """The lines of ``f`` (newline kept), ``None`` for a line longer than ``cap`` bytes: that line is
    read past ``cap`` bytes at a time and never held whole (``for line in f`` would hold it).

    A gzip stream that is truncated (a file still being written) or corrupt ends the lines; with
    ``broken`` given, what was wrong is appended to it instead of raised."""
    try:
        readline = f.readline
        while True:
            line = readline(cap)
            if not line:
                return
            if len(line) < cap or line.endswith(b"\n"):
                yield line
                continue
            while (rest := readline(cap)) and not rest.endswith(b"\n"):
                pass
            yield None
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        if broken is None:
            raise
        broken.append(f"gzip data truncated or corrupt ({exc}); the rest of the file is skipped")


def _spans_in_request(doc: Any) -> Iterator[ShadowSpan]:
    for resource_spans in doc.get("resourceSpans") or ():
        scopes = resource_spans.get("scopeSpans") or resource_spans.get("instrumentationLibrarySpans") or ()
        for scope_spans in scopes:
            for span in scope_spans.get("spans") or ():
                attrs = attributes_of(span.get("attributes") or ())
                if "shadow.target" not in attrs or "shadow.outcome" not in attrs:
                    continue  # another instrumentation's span
                bad = _in_range(attrs)
                yield ShadowSpan(
                    trace_id=str(span.get("traceId", "")),
                    span_id=str(span.get("spanId", "")),
                    name=str(span.get("name", "")),
                    start_ns=span_time(span.get("startTimeUnixNano")),
                    end_ns=span_time(span.get("endTimeUnixNano")),
                    attributes=attrs,
                    out_of_range=bad,
                )


def _looks_like(path: str | Path, first: list[tuple[str, Any]]) -> str:
    """What a file whose first lines held no OTLP request is instead, for the error message.

    ``first``: its first non-empty lines (at most :data:`PROBE_LINES`), each with its parsed JSON
    (``None`` when the line is not JSON)."""
    with open(path, "rb") as raw_file:
        gzipped = raw_file.read(2) == b"\x1f\x8b"
        raw_file.seek(0)
        f: IO[bytes] = gzip.GzipFile(fileobj=raw_file) if gzipped else raw_file  # type: ignore[assignment]
        for number, raw in enumerate(capped_lines(f, broken=[])):
            if number >= DIAGNOSE_LINES:
                break
            if raw is not None and _CONSOLE_MARK.search(raw.decode("utf-8", errors="replace")):
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
        # beyond MAX_PENDING: counted only (the CLI prints the first few messages; a count keeps a
        # file of millions of malformed lines before its first OTLP request from growing memory)
        pending_more = 0
        last_more = 0  # the line number of the last one counted
        others = Skipped()  # this file's lines that are not JSON, merged once it is confirmed
        with open(path, "rb") as raw_file:
            gzipped = raw_file.read(2) == b"\x1f\x8b"
            raw_file.seek(0)
            lines: IO[bytes] = gzip.GzipFile(fileobj=raw_file) if gzipped else raw_file  # type: ignore[assignment]
            broken: list[str] = []
            number = 0
            for number, line in enumerate(capped_lines(lines, broken=broken), start=1):
                if on_progress is not None and number % 16 == 0:
                    on_progress(done + raw_file.tell())
                if line is None:  # too long to read: malformed, whatever it holds
                    if confirmed:
                        if on_error is not None:
                            on_error(str(path), number, TOO_LONG)
                        continue
                    if len(pending) < MAX_PENDING:
                        pending.append((number, TOO_LONG))
                    else:
                        pending_more += 1
                        last_more = number
                    if len(probe) < PROBE_LINES:
                        probe.append(("", None))
                    continue
                if not line.strip():
                    continue
                if confirmed:
                    try:
                        yield _typed_spans(line)
                        continue
                    except (msgspec.DecodeError, ValueError, TypeError, OverflowError, RecursionError):
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
                    # an OTLP request confirms the file even when one of its spans is malformed
                    if not confirmed and "resourceSpans" in doc:
                        confirmed = True
                        if on_error is not None:
                            for n, msg in pending:
                                on_error(str(path), n, msg)
                            for _ in range(pending_more):
                                on_error(str(path), last_more, "malformed line")
                        if skipped is not None:
                            skipped.merge(others)
                        probe, pending, pending_more, others = [], [], 0, Skipped()
                    spans = list(_spans_in_request(doc))
                except _MALFORMED as exc:
                    # the message quotes at most a little of the line (the CLI escapes it for a terminal)
                    message = f"{type(exc).__name__}: {str(exc)[:200]}"
                    if confirmed:
                        if on_error is not None:
                            on_error(str(path), number, message)
                        continue
                    spans = []
                    if len(pending) < MAX_PENDING:
                        pending.append((number, message[:300]))
                    else:
                        pending_more += 1
                        last_more = number
                if not confirmed:  # nothing to yield: an OTLP request would have confirmed the file
                    if len(probe) < PROBE_LINES:
                        probe.append((text.strip()[:200], doc))
                    continue
                yield spans
            if broken and on_error is not None:  # counted as one malformed line, the one that broke
                on_error(str(path), number + 1, broken[0])
            done += os.fstat(raw_file.fileno()).st_size
        if on_progress is not None:
            on_progress(done)
        if probe and not confirmed:  # its first lines, or all of a short file, are something else
            raise NotOTLPError(f"{EXPECTED}; {path} {_looks_like(path, probe)} — {HOW_TO}")
