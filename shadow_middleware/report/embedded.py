"""``report --engine chdb``: span files through ClickHouse's engine in-process (chDB, the ``chdb`` extra).

The OTLP JSON lines are read by the engine (``file(..., JSONEachRow)``; plain or gzip), flattened into
the Collector exporter's ``otel_traces`` shape (``Timestamp``, ``TraceId``, ``SpanId``, ``ServiceName``,
``SpanAttributes`` as strings) in a MergeTree table in a temporary directory -- shadow spans only -- and
then :func:`.sql.sql_aggregate` runs the very SQL of ``--clickhouse`` on it: one aggregate, the same
figures as the light reader (see :mod:`.sql` for what the exporter's string attributes change).

Unlike the light reader, the engine reads a file whole or not at all: a malformed line makes the read
fail (:class:`EmbeddedError`); ``--engine auto`` then falls back to the light reader, which reports the
line and skips it.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .aggregate import Aggregate, ReportError, ReportOptions
from .spans import MAX_LINE_BYTES
from .sql import ExternalTable, SpanFilter, sql_aggregate

__all__ = ["AUTO_BYTES", "EmbeddedError", "available", "chdb_aggregate", "lines_fit"]

AUTO_BYTES = 256 * 2**20  # --engine auto uses chDB from this much span data on (when it is installed)
MISSING = "--engine chdb needs chDB (the 'chdb' extra): pip install 'shadow_middleware[chdb]'"

_VALUE = (
    "stringValue Nullable(String), intValue Nullable(String), doubleValue Nullable(String), "
    "boolValue Nullable(Bool)"
)
# the OTLP JSON request, only what the report reads (numbers read as their JSON text)
SCHEMA = (
    "resourceSpans Array(Tuple(scopeSpans Array(Tuple(spans Array(Tuple(traceId String, spanId String, "
    f"startTimeUnixNano String, attributes Array(Tuple(key String, value Tuple({_VALUE}, "
    f"arrayValue Tuple(values Array(Tuple({_VALUE}))))))))))))"
)
# an attribute value as the exporter stores it: the string; ints and doubles as written; bools
# true/false; an array as JSON
_AS_STRING = """multiIf(
  kv.value.stringValue IS NOT NULL, kv.value.stringValue,
  kv.value.intValue IS NOT NULL, kv.value.intValue,
  kv.value.doubleValue IS NOT NULL, kv.value.doubleValue,
  kv.value.boolValue IS NOT NULL, if(kv.value.boolValue, 'true', 'false'),
  notEmpty(kv.value.arrayValue.values),
    toJSONString(arrayMap(x -> coalesce(x.stringValue, x.intValue, x.doubleValue, toString(x.boolValue), ''),
                          kv.value.arrayValue.values)),
  '')"""
FLATTEN = f"""INSERT INTO shadow_report.spans
SELECT fromUnixTimestamp64Nano(toInt64OrZero(sp.startTimeUnixNano)), sp.traceId, sp.spanId, '',
  CAST((arrayMap(kv -> kv.key, kept), arrayMap(kv -> {_AS_STRING}, kept)), 'Map(String, String)') AS attrs
FROM file({{path:String}}, 'JSONEachRow', '{SCHEMA}', {{compression:String}})
ARRAY JOIN resourceSpans AS rs ARRAY JOIN rs.scopeSpans AS ss ARRAY JOIN ss.spans AS sp
-- only the attributes the report reads: smaller maps, faster lookups in every query after
ARRAY JOIN [arrayFilter(kv -> startsWith(kv.key, 'shadow.') OR kv.key = 'error.type', sp.attributes)] AS kept
WHERE has(arrayMap(kv -> kv.key, sp.attributes), 'shadow.target')
  AND has(arrayMap(kv -> kv.key, sp.attributes), 'shadow.outcome')
SETTINGS input_format_json_read_numbers_as_strings = 1, input_format_skip_unknown_fields = 1,
  storage_file_read_method = 'pread', min_chunk_bytes_for_parallel_parsing = 2097152,
  min_insert_block_size_rows = 65536, min_insert_block_size_bytes = 67108864"""
# Memory (1M spans, 2 GB of JSON): pread, not mmap (a mapped file counts whole in the resident memory:
# 3.1 GB peak); parsing chunks of 2 MB, not 10, and insert blocks of 64K rows, not 1M (1.4 GB -> 0.65 GB)


class EmbeddedError(ValueError):
    """chDB could not read the files (one line)."""


def lines_fit(paths: Sequence[str | Path], limit: int = MAX_LINE_BYTES) -> bool:
    """Whether ``--engine auto`` may hand ``paths`` to chDB: plain files whose every line is at most
    ``limit`` bytes. chDB holds a whole line to parse it (a 300 MB line took 2-3 GB), where the light
    reader skips an over-long line unread in bounded memory: a hostile file must not choose the
    engine that lets it take the machine. Gzip files are not scanned (that would decompress them
    twice) and go to the light reader. One pass of 4 MiB reads, a ``find`` per read."""
    for path in paths:
        with open(path, "rb") as f:
            if f.read(2) == b"\x1f\x8b":
                return False
            f.seek(0)
            run = 0  # bytes since the last newline
            while chunk := f.read(4 * 2**20):
                first = chunk.find(b"\n")
                if first < 0:
                    run += len(chunk)
                    if run > limit:
                        return False
                    continue
                if run + first > limit:
                    return False
                # a chunk (4 MiB) is shorter than the limit: only runs across chunks can exceed it
                run = len(chunk) - chunk.rfind(b"\n") - 1
            if run > limit:
                return False
    return True


def available() -> bool:
    """Whether chDB is installed (without importing it: it is large)."""
    import importlib.util

    return importlib.util.find_spec("chdb") is not None


def _quoted(value: Any) -> str:
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_quoted(x) for x in value) + "]"
    return repr(value)


def _param(value: Any) -> str:
    """A parameter's value in the text form ClickHouse parses (as the HTTP interface sends it)."""
    if isinstance(value, str):
        return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")
    if isinstance(value, list | tuple):
        return _quoted(value)
    return repr(value)


def _tsv(value: Any) -> str:
    text = str(value)
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def chdb_aggregate(paths: Sequence[str | Path], options: ReportOptions) -> Aggregate:
    """The aggregate of the shadow spans in ``paths`` (OTLP JSON lines, plain or gzip), computed by
    chDB. Raises :class:`EmbeddedError` when chDB is missing or cannot read a file."""
    import importlib

    try:
        # Any: chDB's annotations are partial (its calls would be untyped under mypy --strict)
        session: Any = importlib.import_module("chdb.session")
    except ImportError:
        raise EmbeddedError(MISSING) from None
    with tempfile.TemporaryDirectory(prefix="shadow-report-") as tmp:
        db = session.Session(os.path.join(tmp, "db"))
        try:

            def query(sql: str, params: dict[str, Any] | None = None, fmt: str = "CSV") -> Any:
                text = {k: _param(v) for k, v in (params or {}).items()}
                return db.query(sql, fmt, params=text) if text else db.query(sql, fmt)

            query("CREATE DATABASE shadow_report")
            query(
                "CREATE TABLE shadow_report.spans (Timestamp DateTime64(9), TraceId String, SpanId String, "
                "ServiceName LowCardinality(String), SpanAttributes Map(LowCardinality(String), String)) "
                "ENGINE = MergeTree ORDER BY tuple()"
            )
            for path in paths:
                with open(path, "rb") as f:
                    gzipped = f.read(2) == b"\x1f\x8b"
                try:
                    query(
                        FLATTEN,
                        {"path": str(Path(path).resolve()), "compression": "gzip" if gzipped else "none"},
                    )
                except Exception as exc:  # the engine raises one exception type, for any message
                    text = " ".join(str(exc).split())[:300]
                    raise EmbeddedError(f"{path}: chDB cannot read it: {text}") from None

            def run(sql: str, params: dict[str, Any], tables: list[ExternalTable]) -> Sequence[Sequence[Any]]:
                for t in tables:
                    data = os.path.join(tmp, f"{t.name}.tsv")
                    with open(data, "w", encoding="utf-8") as out:
                        for row in t.rows:
                            out.write("\t".join(_tsv(v) for v in row) + "\n")
                    query(f"CREATE TEMPORARY TABLE IF NOT EXISTS {t.name} ({t.structure})")
                    query(f"TRUNCATE TABLE {t.name}")
                    query(
                        f"INSERT INTO {t.name} "
                        "SELECT * FROM file({p:String}, 'TabSeparated', {s:String})",
                        {"p": data, "s": t.structure},
                    )
                result = query(
                    sql + "\nSETTINGS readonly = 2, output_format_json_quote_64bit_integers = 0",
                    params,
                    "JSONCompact",
                )
                rows: list[list[Any]] = json.loads(bytes(result.bytes()))["data"]
                return rows

            try:
                return sql_aggregate(run, "shadow_report.spans", SpanFilter(), options)
            except ReportError:
                raise
            except Exception as exc:  # the engine's (a memory limit, say): one line, or the light reader
                text = " ".join(str(exc).split())[:300]
                raise EmbeddedError(f"chDB failed: {text}") from None
        finally:
            db.close()
