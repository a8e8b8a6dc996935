"""A loopback ClickHouse HTTP endpoint whose engine is chDB (ClickHouse in-process), for the tests.

No ClickHouse server installs on these machines; this is the server's HTTP shell around ClickHouse's own
engine, so clickhouse-connect runs DDL, inserts and queries for real: the SQL, the types, server-side
parameters (``param_<name>``), external data (multipart), ``readonly`` and the error messages
(``Code: 60. DB::Exception: ...``) come from the engine. The shell does only what a server does around
it: HTTP Basic authentication against one user, the ``database`` parameter, external data as temporary
tables, insert data read from the request body.

``DDL`` and ``OLD_DDL`` are the exporter's traces table (current, and the older one), with
``{db}``/``{table}`` to fill.

Run: ``python tests/chdb_server.py DATA_DIR USER PASSWORD [CERT KEY]`` (with a certificate: https) -- prints ``PORT <n>`` once listening on
127.0.0.1 (an ephemeral port).
"""

from __future__ import annotations

import base64
import email.parser
import email.policy
import os
import re
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from chdb import session  # type: ignore[import-untyped]

_FORMAT = re.compile(r"\s+FORMAT\s+(\w+)\s*;?\s*$", re.IGNORECASE)
_INSERT = re.compile(r"^\s*INSERT\s+INTO\s+(.+?)\s+FORMAT\s+(\w+)\s*$", re.IGNORECASE | re.DOTALL)
_INSERT_BODY = re.compile(rb"(INSERT\s+INTO\s+.+?\s+FORMAT\s+\w+)[ \t]*\r?\n?", re.IGNORECASE | re.DOTALL)
_CODE = re.compile(r"Code: (\d+)")
BYTES_LOG = os.environ.get("CHDB_SERVER_BYTES_LOG")  # a file: one line per response, its body's bytes


# exporter/clickhouseexporter/internal/sqltemplates/traces_table.sql (the bloom-filter variant, TTL 180 days)
DDL = """CREATE TABLE IF NOT EXISTS {db}.{table} (
    Timestamp DateTime64(9) CODEC(Delta(8), ZSTD(1)),
    TraceId String CODEC(ZSTD(1)),
    SpanId String CODEC(ZSTD(1)),
    ParentSpanId String CODEC(ZSTD(1)),
    TraceState String CODEC(ZSTD(1)),
    SpanName LowCardinality(String) CODEC(ZSTD(1)),
    SpanKind LowCardinality(String) CODEC(ZSTD(1)),
    ServiceName LowCardinality(String) CODEC(ZSTD(1)),
    ResourceAttributes Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    ScopeName String CODEC(ZSTD(1)),
    ScopeVersion String CODEC(ZSTD(1)),
    SpanAttributes Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    Duration UInt64 CODEC(T64, ZSTD(1)),
    StatusCode LowCardinality(String) CODEC(ZSTD(1)),
    StatusMessage String CODEC(ZSTD(1)),
    Events Nested (
        Timestamp DateTime64(9),
        Name LowCardinality(String),
        Attributes Map(LowCardinality(String), String)
    ) CODEC(ZSTD(1)),
    Links Nested (
        TraceId String,
        SpanId String,
        TraceState String,
        Attributes Map(LowCardinality(String), String)
    ) CODEC(ZSTD(1)),
    ResourceAttributeItems Array(String) ALIAS arrayMap(kv -> concat(kv.1, '=', kv.2),
        CAST(ResourceAttributes, 'Array(Tuple(String, String))')),
    SpanAttributeItems Array(String) ALIAS arrayMap(kv -> concat(kv.1, '=', kv.2),
        CAST(SpanAttributes, 'Array(Tuple(String, String))')),
    INDEX idx_trace_id TraceId TYPE bloom_filter(0.001) GRANULARITY 1,
    INDEX idx_res_attr_key mapKeys(ResourceAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_res_attr_value mapValues(ResourceAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_span_attr_key mapKeys(SpanAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_span_attr_value mapValues(SpanAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_duration Duration TYPE minmax GRANULARITY 1,
    INDEX idx_lower_span_name lower(SpanName) TYPE tokenbf_v1(32768, 3, 0) GRANULARITY 8
) ENGINE = MergeTree()
PARTITION BY toDate(Timestamp)
PRIMARY KEY (ServiceName, SpanName, toDateTime(Timestamp))
ORDER BY (ServiceName, SpanName, toDateTime(Timestamp), Timestamp)
TTL toDateTime(Timestamp) + toIntervalDay(180)
SETTINGS index_granularity = 8192, ttl_only_drop_parts = 1"""

# the older exporter's: Duration Int64, no ScopeName/ScopeVersion
OLD_DDL = DDL.replace("Duration UInt64", "Duration Int64").replace(
    "    ScopeName String CODEC(ZSTD(1)),\n    ScopeVersion String CODEC(ZSTD(1)),\n", ""
)


class Engine:
    def __init__(self, path: str, user: str, password: str) -> None:
        self.session = session.Session(path)
        self.lock = threading.Lock()
        self.user, self.password = user, password
        self.tmp = tempfile.mkdtemp(prefix="chdb-ext-")

    def run(self, sql: str, fmt: str, params: dict[str, str]) -> bytes:
        result = self.session.query(sql, fmt, params=params) if params else self.session.query(sql, fmt)
        return bytes(result.bytes()) if result is not None else b""


class Handler(BaseHTTPRequestHandler):
    engine: Engine
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        self.handle_query(b"")

    def do_POST(self) -> None:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if not size:
                    self.rfile.readline()
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            body = b"".join(chunks)
        else:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.handle_query(body)

    def reply(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        if BYTES_LOG:  # what the server sent back, for bench/report_clickhouse.py
            with open(BYTES_LOG, "a") as log:
                log.write(f"{len(body)}\n")
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def authorised(self) -> bool:
        e = self.engine
        user = self.headers.get("X-ClickHouse-User")
        key = self.headers.get("X-ClickHouse-Key")
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Basic "):
            user, _, key = base64.b64decode(auth[6:]).decode().partition(":")
        return (user or "default") == e.user and (key or "") == e.password

    def handle_query(self, body: bytes) -> None:
        if urlsplit(self.path).path == "/ping":
            self.reply(200, b"Ok.\n")
            return
        if not self.authorised():
            self.reply(
                516,
                b"Code: 516. DB::Exception: " + self.engine.user.encode() + b": Authentication failed: "
                b"password is incorrect, or there is no user with such name. (AUTHENTICATION_FAILED)\n",
                {"X-ClickHouse-Exception-Code": "516"},
            )
            return
        qs = {k: v[-1] for k, v in parse_qs(urlsplit(self.path).query, keep_blank_values=True).items()}
        fields: dict[str, str] = {}
        files: dict[str, bytes] = {}
        ctype = self.headers.get("Content-Type", "")
        query = qs.get("query", "")
        data = b""
        if ctype.startswith("multipart/form-data"):
            msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
                b"Content-Type: " + ctype.encode() + b"\r\n\r\n" + body
            )
            for part in msg.iter_parts():
                name = part.get_param("name", header="content-disposition")
                payload = part.get_payload(decode=True) or b""
                if part.get_filename():
                    files[str(name)] = payload
                else:
                    fields[str(name)] = payload.decode()
            query = fields.get("query", query)
        elif body:
            if query and _INSERT.match(query):
                data = body
            elif not query and body[:6].upper() == b"INSERT" and (m := _INSERT_BODY.match(body)):
                query, data = m.group(1).decode(), body[m.end() :]
            else:
                query = (query + "\n" + body.decode()) if query else body.decode()
        params = {k[6:]: v for k, v in {**qs, **fields}.items() if k.startswith("param_")}
        try:
            out, fmt = self.execute(query, qs, params, files, data)
        except Exception as exc:  # the engine's error, as the server sends it
            text = str(exc)
            code = _CODE.search(text)
            status = 404 if code and code.group(1) in ("60", "81") else 500
            self.reply(
                status, text.encode() + b"\n", {"X-ClickHouse-Exception-Code": code.group(1) if code else "1"}
            )
            return
        self.reply(
            200,
            out,
            {
                "X-ClickHouse-Format": fmt,
                "X-ClickHouse-Timezone": "UTC",
                "X-ClickHouse-Summary": '{"read_rows":"0","read_bytes":"0","written_rows":"0"}',
                "Content-Type": "application/octet-stream",
            },
        )

    def execute(
        self, query: str, qs: dict[str, str], params: dict[str, str], files: dict[str, bytes], data: bytes
    ) -> tuple[bytes, str]:
        e = self.engine
        with e.lock:
            db = qs.get("database")
            e.run(f"USE `{db}`" if db else "USE default", "CSV", {})
            created = []
            try:
                for name, payload in files.items():
                    structure = qs.get(f"{name}_structure") or fields_of(qs.get(f"{name}_types", ""))
                    fmt = qs.get(f"{name}_format", "TabSeparated")
                    path = os.path.join(e.tmp, f"{name}.data")
                    with open(path, "wb") as f:
                        f.write(payload)
                    e.run(f"CREATE TEMPORARY TABLE `{name}` ({structure})", "CSV", {})
                    created.append(name)
                    e.run(
                        f"INSERT INTO `{name}` SELECT * FROM file('{path}', {fmt}, '{structure}')", "CSV", {}
                    )
                insert = _INSERT.match(query)
                if insert:
                    path = os.path.join(e.tmp, "insert.data")
                    with open(path, "wb") as f:
                        f.write(data)
                    target = insert.group(1)
                    e.run(f"INSERT INTO {target} SELECT * FROM file('{path}', {insert.group(2)})", "CSV", {})
                    return b"", "TabSeparated"
                fmt = "TabSeparated"
                m = _FORMAT.search(query)
                if m:
                    fmt = m.group(1)
                    query = query[: m.start()]
                if qs.get("readonly") in ("1", "2"):
                    if not re.match(
                        r"\s*(SELECT|WITH|SHOW|DESCRIBE|DESC|EXISTS|EXPLAIN)\b", query, re.IGNORECASE
                    ):
                        # the server's own check (readonly also forbids what a SETTINGS clause cannot follow)
                        raise RuntimeError(
                            "Code: 164. DB::Exception: "
                            + e.user
                            + ": Cannot execute query in readonly mode. (READONLY)"
                        )
                    query += f"\nSETTINGS readonly = {qs['readonly']}"
                return e.run(query, fmt, params), fmt
            finally:
                for name in created:
                    e.run(f"DROP TEMPORARY TABLE IF EXISTS `{name}`", "CSV", {})


def fields_of(types: str) -> str:
    return ", ".join(f"_{i + 1} {t}" for i, t in enumerate(t for t in types.split(",") if t))


def main() -> None:
    path, user, password = sys.argv[1:4]
    Handler.engine = Engine(path, user, password)
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    if len(sys.argv) > 5:  # https: CERT KEY
        import ssl

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(sys.argv[4], sys.argv[5])
        server.socket = context.wrap_socket(server.socket, server_side=True)
    print(f"PORT {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
