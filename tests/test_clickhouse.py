"""``report --clickhouse``: the SQL source against ClickHouse's engine (chDB) behind a loopback HTTP
endpoint (tests/chdb_server.py), through clickhouse-connect.

The table is the Collector ClickHouse exporter's own DDL (exporter/clickhouseexporter/internal/
sqltemplates/traces_table.sql, and the older variant: ``Duration Int64``, no ``ScopeName``); the rows are
what the exporter writes for our spans (every attribute value a string, doubles in Go's ES6-like form).
The differential tests run the same spans through the file reader and the SQL source and compare the
JSON reports: equal, but for float sums (relative 1e-9) -- see ``same``.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("chdb")
clickhouse_connect = pytest.importorskip("clickhouse_connect")

from .chdb_server import DDL, OLD_DDL  # noqa: E402
from .test_report import ANY_DATA, span, write_spans  # noqa: E402
from .test_tls import _openssl, _signed  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
USER, PASSWORD = "reporter", "s3cret'pw"


def go_string(v: Any) -> str:
    """pcommon.Value.AsString(), as the exporter stores an attribute: ints decimal, doubles as ES6
    (positional unless < 1e-6 or >= 1e21, shortest digits), bools true/false, arrays as JSON."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v) or math.isinf(v):
            return f"json: unsupported value: {v}"
        a = abs(v)
        if a != 0 and (a < 1e-6 or a >= 1e21):
            mant, exp = repr(v).split("e") if "e" in repr(v) else (f"{v:e}".split("e"))
            return f"{mant}e{'-' if exp.startswith('-') else '+'}{int(exp.lstrip('+-'))}"
        return np.format_float_positional(v, trim="-")
    if isinstance(v, list):
        return json.dumps(v, separators=(",", ":"))
    return str(v)


def _attr(value: dict[str, Any]) -> Any:
    for key, v in value.items():
        if key == "intValue":
            return int(v)
        if key == "arrayValue":
            return [_attr(x) for x in v.get("values", [])]
        return v
    return None


def exporter_row(s: dict[str, Any], service: str = "churn-api") -> list[Any]:
    attrs = {a["key"]: go_string(_attr(a["value"])) for a in s["attributes"]}
    start, end = int(s["startTimeUnixNano"]), int(s["endTimeUnixNano"])
    return [start, s["traceId"], s["spanId"], s["name"], "Client", service, attrs, end - start, "Unset"]


ROW_COLUMNS = ["Timestamp", "TraceId", "SpanId", "SpanName", "SpanKind", "ServiceName", "SpanAttributes"]
ROW_COLUMNS += ["Duration", "StatusCode"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    data = tmp_path_factory.mktemp("chdb")
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "tests" / "chdb_server.py"), str(data / "db"), USER, PASSWORD],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        port = int(line.split()[1])
        client = clickhouse_connect.get_client(
            host="127.0.0.1",
            port=port,
            username=USER,
            password=PASSWORD,
            compress=False,
            autogenerate_session_id=False,
        )
        client.command("CREATE DATABASE IF NOT EXISTS otel")
        yield port, client
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


_tables = iter(range(10**6))


def load(server: Any, spans: list[dict[str, Any]], ddl: str = DDL, service: str = "churn-api") -> str:
    """A fresh exporter table holding ``spans``; its name."""
    _port, client = server
    name = f"traces_{next(_tables)}"
    client.command(ddl.format(db="otel", table=name))
    rows = [exporter_row(s, service) for s in spans]
    if rows:
        client.insert(f"otel.{name}", rows, column_names=ROW_COLUMNS)
    return name


def now_ns() -> int:
    return (time.time_ns() // 10**9 - 3600) * 10**9  # an hour ago: within the 180-day TTL


def report(*args: str | Path, env: dict[str, str] | None = None) -> tuple[int, dict[str, Any] | None, str]:
    proc = subprocess.run(
        [sys.executable, "-m", "shadow_middleware", "report", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        env={**os.environ, "SHADOW_CLICKHOUSE_PASSWORD": PASSWORD, **(env or {})},
    )
    doc = json.loads(proc.stdout) if proc.stdout.startswith("{") else None
    return proc.returncode, doc, proc.stderr


def same(a: Any, b: Any, path: str = "") -> None:
    """Equal JSON, floats within relative 1e-9 (sums over the same values in another order)."""
    if isinstance(a, float) and isinstance(b, float | int):
        assert math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12), f"{path}: {a} != {b}"
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), f"{path}: keys {set(a) ^ set(b)}"
        for k in a:
            same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), f"{path}: {a} != {b}"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            same(x, y, f"{path}[{i}]")
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


def dataset(n: int = 600, seed: int = 3) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Two targets, two routes; scores, labels, every outcome, statuses, reasons, recorded inputs,
    diff paths, a duplicate span: what the report reads."""
    rng = random.Random(seed)
    t0 = now_ns()
    spans, labels = [], {}
    for i in range(n):
        y = int(rng.random() < 0.4)
        p = rng.random() * 0.5 + 0.4 * y
        c = min(1.0, max(0.0, p + rng.gauss(0, 0.15)))
        target = "cand-a" if i % 3 else "cand-b"
        route = "POST /predict" if i % 5 else "POST /batch"
        outcome = rng.choice(
            ["match", "match", "match", "mismatch", "error", "timeout", "dropped", "skipped"]
        )
        extra: dict[str, Any] = {
            "shadow.primary.status_code": rng.choice([200, 200, 200, 422, 503]),
            "shadow.candidate.status_code": rng.choice([200, 200, 500]),
            "shadow.request.body.age": rng.choice([18, 25, 33, 40, 51, 67]) + rng.random() * (i % 2),
            "shadow.request.body.plan": rng.choice(["basic", "pro", "team"]),
            "shadow.candidate.server_duration_ms": rng.uniform(0.5, 12.0),
        }
        if outcome == "mismatch":
            extra["shadow.diff.paths"] = ["/score", "/label"]
        if outcome in ("error", "dropped"):
            extra["shadow.reason"] = rng.choice(["http_5xx", "queue_full"])
            extra["error.type"] = rng.choice(["HTTPError", "TimeoutError"])
        if i % 17 == 0:
            extra["shadow.reason"] = "field_missing"
            extra["shadow.missing_fields"] = "/proba"
        scored = outcome in ("match", "mismatch")
        spans.append(
            span(
                i,
                outcome,
                target=target,
                route=route,
                p=round(p, 4) if scored else None,
                c=round(c, 4) if scored else None,
                cid=f"req-{i}" if i % 7 else None,
                pms=rng.uniform(1, 40),
                cms=rng.uniform(2, 60),
                start_ns=t0 + i * 37_000_000 + rng.randrange(1000) * 1000,
                **extra,
            )
        )
        if i % 7:
            labels[f"req-{i}"] = y
    spans.append(spans[5])  # an exporter's retry: counted once, as a duplicate
    return spans, labels


@pytest.fixture(scope="module")
def fixture_data(server: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, Path, Path]:
    tmp = tmp_path_factory.mktemp("data")
    spans, labels = dataset()
    path = write_spans(tmp / "spans.jsonl", spans)
    table = load(server, spans)
    gt = tmp / "labels.csv"
    gt.write_text("correlation_id,label\n" + "".join(f"{k},{v}\n" for k, v in labels.items()))
    rng = random.Random(1)
    ref = tmp / "reference.csv"
    ref.write_text(
        "age,plan\n"
        + "".join(
            f"{rng.choice([18, 25, 33, 40, 51, 67, 70])},{rng.choice(['basic', 'pro'])}\n" for _ in range(300)
        )
    )
    return path, table, gt, ref


OPTION_SETS = [
    (),
    ("--top", "5", "--trace-url", "https://tempo.example/trace/{trace_id}"),
    ("--ground-truth", "{gt}"),
    ("--ground-truth", "{gt}", "--auc-ci", "delong", "--threshold", "0.4"),
    ("--reference", "{ref}"),
    ("--target", "cand-a", "--route", "POST /predict"),
    ("--require", "agreement >= 0.99"),
]


@pytest.mark.parametrize("options", OPTION_SETS, ids=lambda o: " ".join(o) or "plain")
def test_differential_file_and_clickhouse_same_report(
    server: Any, fixture_data: tuple[Path, str, Path, Path], options: tuple[str, ...]
) -> None:
    port, _ = server
    path, table, gt, ref = fixture_data
    opts = [o.replace("{gt}", str(gt)).replace("{ref}", str(ref)) for o in options]
    rules = [] if "--require" in opts else list(ANY_DATA)
    code_f, from_file, err_f = report(path, "--format", "json", *rules, *opts)
    url = f"http://{USER}@127.0.0.1:{port}/otel"
    code_c, from_sql, err_c = report("--clickhouse", url, "--table", table, "--format", "json", *rules, *opts)
    assert from_file is not None, err_f
    assert from_sql is not None, err_c
    assert from_file["spans"] == 600 and from_file["duplicate_spans"] == 1
    same(from_sql, from_file)
    assert code_c == code_f
    # the same SQL on the file, in-process (--engine chdb)
    code_e, embedded, err_e = report(path, "--engine", "chdb", "--format", "json", *rules, *opts)
    assert embedded is not None, err_e
    same(embedded, from_file)
    assert code_e == code_f


def test_older_exporter_schema_and_filters(server: Any, tmp_path: Path) -> None:
    """The older DDL (Duration Int64, no ScopeName); --service, --since and --until select spans."""
    port, _ = server
    spans, _labels = dataset(200, seed=9)
    table = load(server, spans[:100], OLD_DDL, service="churn-api")
    # a second service in the same table, later
    client = server[1]
    client.insert(
        f"otel.{table}", [exporter_row(s, "other-api") for s in spans[100:200]], column_names=ROW_COLUMNS
    )
    path = write_spans(tmp_path / "first.jsonl", spans[:100])
    url = f"http://{USER}@127.0.0.1:{port}/otel"
    _, from_file, _ = report(path, "--format", "json", *ANY_DATA)
    code, by_service, err = report(
        "--clickhouse", url, "--table", table, "--service", "churn-api", "--format", "json", *ANY_DATA
    )
    assert by_service is not None, err
    same(by_service, from_file)
    cut = int(spans[100]["startTimeUnixNano"])
    iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(cut // 10**9)) + f".{cut % 10**9 // 1000:06d}Z"
    _, before, err = report(
        "--clickhouse", url, "--table", table, "--until", iso, "--format", "json", *ANY_DATA
    )
    assert before is not None, err
    same(before, from_file)
    _, after, _ = report("--clickhouse", url, "--table", table, "--since", iso, "--format", "json", *ANY_DATA)
    assert after is not None and after["spans"] == 100
    assert code == 0 or code in (1, 2)


def test_text_and_html_from_clickhouse(
    server: Any, fixture_data: tuple[Path, str, Path, Path], tmp_path: Path
) -> None:
    port, _ = server
    path, table, gt, _ref = fixture_data
    url = f"http://{USER}@127.0.0.1:{port}/otel"
    a = subprocess.run(
        [
            sys.executable,
            "-m",
            "shadow_middleware",
            "report",
            str(path),
            "--ground-truth",
            str(gt),
            "--html",
            str(tmp_path / "f.html"),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    b = subprocess.run(
        [
            sys.executable,
            "-m",
            "shadow_middleware",
            "report",
            "--clickhouse",
            url,
            "--table",
            table,
            "--ground-truth",
            str(gt),
            "--html",
            str(tmp_path / "c.html"),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        env={**os.environ, "SHADOW_CLICKHOUSE_PASSWORD": PASSWORD},
    )
    assert b.returncode == a.returncode, b.stderr
    assert b.stdout == a.stdout
    assert (tmp_path / "c.html").read_text() == (tmp_path / "f.html").read_text()


def test_one_line_errors(server: Any, fixture_data: tuple[Path, str, Path, Path]) -> None:
    port, _ = server
    path, table, _gt, _ref = fixture_data
    url = f"http://{USER}@127.0.0.1:{port}/otel"
    cases = [
        (
            ["--clickhouse", url, "--table", table],
            {"SHADOW_CLICKHOUSE_PASSWORD": "wrong"},
            "authentication failed",
        ),
        (["--clickhouse", url, "--table", "no_such_table"], None, "no table 'no_such_table'"),
        (["--clickhouse", f"http://{USER}@127.0.0.1:1/otel"], None, "cannot reach the server"),
        (["--clickhouse", url, "--table", "t; DROP TABLE x"], None, "is not a plain name"),
        (["--clickhouse", f"http://{USER}:pw@127.0.0.1:{port}/otel"], None, "no password in the URL"),
        (["--clickhouse", f"http://{USER}@127.0.0.1:{port}/otel`x"], None, "is not a plain name"),
        (["--clickhouse", url, "--since", "yesterday"], None, "expected ISO 8601"),
        ([str(path), "--since", "1h"], None, "--since goes with --clickhouse"),
        ([str(path), "--clickhouse", url], None, "span files or --clickhouse, not both"),
        ([], None, "give span file(s), or --clickhouse URL"),
    ]
    for args, env, needle in cases:
        code, _, err = report(*args, env=env)
        assert code == 2, (args, err)
        assert needle in err, (args, err)
        assert len(err.strip().splitlines()) == 1, err
        assert "Traceback" not in err and PASSWORD not in err and "wrong" not in err


def test_table_without_the_exporter_columns(server: Any) -> None:
    port, client = server
    client.command(
        "CREATE TABLE IF NOT EXISTS otel.not_traces (Timestamp DateTime64(9), x String) ENGINE = Memory"
    )
    code, _, err = report("--clickhouse", f"http://{USER}@127.0.0.1:{port}/otel", "--table", "not_traces")
    assert code == 2 and "lacks the exporter's column(s) TraceId, SpanId, ServiceName, SpanAttributes" in err


def test_values_with_quotes_are_parameters_and_queries_read_only(server: Any) -> None:
    """A target, route, service and correlation id full of quotes and backslashes reach the report as
    themselves (they are parameters, never SQL); the source's queries run with readonly=1."""
    port, client = server
    nasty = "x'); DROP TABLE otel.victim; --\\'\""
    client.command("CREATE TABLE IF NOT EXISTS otel.victim (x UInt8) ENGINE = Memory")
    t0 = now_ns()
    spans = [
        span(i, "match", target=nasty, route=nasty, p=0.5, c=0.5, cid=nasty, start_ns=t0 + i)
        for i in range(5)
    ]
    table = load(server, spans, service=nasty)
    _code, doc, err = report(
        "--clickhouse",
        f"http://{USER}@127.0.0.1:{port}/otel",
        "--table",
        table,
        "--service",
        nasty,
        "--target",
        nasty,
        "--format",
        "json",
        *ANY_DATA,
    )
    assert doc is not None, err
    assert [(g["target"], g["route"], g["n"]) for g in doc["targets"]] == [(nasty, nasty, 5)]
    assert client.query("EXISTS TABLE otel.victim").result_rows == [(1,)]
    # readonly: the source's runner refuses a write
    from shadow_middleware.report import clickhouse as ch

    seen: list[dict[str, Any]] = []
    real = clickhouse_connect.get_client

    def spy(**kwargs: Any) -> Any:
        seen.append(kwargs)
        return real(**kwargs)

    os.environ["SHADOW_CLICKHOUSE_PASSWORD"] = PASSWORD
    try:
        clickhouse_connect.get_client = spy
        from shadow_middleware.report.aggregate import ReportOptions
        from shadow_middleware.report.sql import SpanFilter

        def hostile(run: Any, table: str, where: Any, options: Any) -> Any:
            return run("INSERT INTO otel.victim VALUES (1)", {}, [])

        orig = ch.sql_aggregate
        ch.sql_aggregate = hostile
        with pytest.raises(ch.ClickHouseError, match="read-only"):
            ch.clickhouse_aggregate(
                f"http://{USER}@127.0.0.1:{port}/otel", table, SpanFilter(), ReportOptions()
            )
    finally:
        ch.sql_aggregate = orig
        clickhouse_connect.get_client = real
        del os.environ["SHADOW_CLICKHOUSE_PASSWORD"]
    assert seen and seen[0]["settings"] == {"readonly": 1}
    assert client.query("SELECT count() FROM otel.victim").result_rows == [(0,)]


def _in_process(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    import argparse

    from shadow_middleware.report.cli import add_arguments, run

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    code = run(parser.parse_args([str(a) for a in argv]))
    out, err = capsys.readouterr()
    return code, out, err


def test_engine_chdb_gzip_malformed_and_auto_fallback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """--engine chdb reads gzip (by its magic bytes, whatever the name); a file it cannot read is one
    line, exit 2; --engine auto (chDB for large files) falls back to the light reader, which reports the
    malformed line and skips it."""
    import gzip

    from shadow_middleware.report import embedded

    spans, _ = dataset(120, seed=4)
    plain = write_spans(tmp_path / "s.jsonl", spans)
    packed = tmp_path / "s.data"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    _, expected, _ = _in_process(capsys, plain, "--format", "json", *ANY_DATA)
    code, out, err = _in_process(capsys, packed, "--engine", "chdb", "--format", "json", *ANY_DATA)
    same(json.loads(out), json.loads(expected))
    broken = tmp_path / "broken.jsonl"
    broken.write_text(plain.read_text() + '{"resourceSpans": [ {"scopeSpans": oops\n')
    code, out, err = _in_process(capsys, broken, "--engine", "chdb")
    assert code == 2 and out == ""
    assert "chDB cannot read it" in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    monkeypatch.setattr(embedded, "AUTO_BYTES", 1)
    code, out, err = _in_process(capsys, broken, "--format", "json", *ANY_DATA)
    assert "reading with the light reader instead" in err and "skipped malformed line" in err
    doc = json.loads(out)
    assert doc["malformed_lines"] == 1 and doc["spans"] == 120


def test_groups_beyond_max_groups_same_in_both_sources(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A table with more target/route pairs than MAX_GROUPS: the first ones kept (first started
    first), the rest counted, in both sources alike; and what SQL returns stays bounded by the cap."""
    from shadow_middleware.report import aggregate as agg_module
    from shadow_middleware.report import build, sql

    for module in (agg_module, build, sql):
        monkeypatch.setattr(module, "MAX_GROUPS", 3)
    t0 = now_ns()
    spans = [span(i, "match", target=f"t{i % 7}", p=0.5, c=0.5, start_ns=t0 + i * 1000) for i in range(70)]
    path = write_spans(tmp_path / "many.jsonl", spans)
    _, from_file, _ = _in_process(capsys, path, "--format", "json", *ANY_DATA)
    _, embedded, err = _in_process(capsys, path, "--engine", "chdb", "--format", "json", *ANY_DATA)
    doc = json.loads(embedded)
    assert doc["spans_beyond_max_groups"] == 40 and len(doc["targets"]) == 3, err
    same(doc, json.loads(from_file))


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A CA, another CA and a server certificate for 127.0.0.1 (openssl, as tests/test_tls.py)."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")
    d = tmp_path_factory.mktemp("pki")
    for ca in ("ca", "other-ca"):
        _openssl(
            d, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", f"{ca}.key", "-out", f"{ca}.pem", "-days", "2", "-subj", f"/CN={ca}",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        )  # fmt: skip
    ext = "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\nauthorityKeyIdentifier=keyid\n"
    _signed(d, "ca", "server", "127.0.0.1", ext)
    return {p.name: str(p) for p in d.iterdir()}


def test_https_with_ca_file(pki: dict[str, str], tmp_path: Path) -> None:
    """https verifies the server: with its CA in --ca-file the report is the file's; without it, or with
    another CA, one line and exit 2."""
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "tests" / "chdb_server.py"), str(tmp_path / "db"), USER, PASSWORD,
         pki["server.pem"], pki["server.key"]],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline().split()[1])
        client = clickhouse_connect.get_client(
            host="127.0.0.1", port=port, username=USER, password=PASSWORD, secure=True,
            ca_cert=pki["ca.pem"], compress=False, autogenerate_session_id=False,
        )  # fmt: skip
        client.command("CREATE DATABASE IF NOT EXISTS otel")
        spans, _ = dataset(60, seed=5)
        client.command(DDL.format(db="otel", table="otel_traces"))
        client.insert("otel.otel_traces", [exporter_row(s) for s in spans], column_names=ROW_COLUMNS)
        client.close()
        small = write_spans(tmp_path / "small.jsonl", spans)
        _, from_file, _ = report(small, "--format", "json", *ANY_DATA)
        url = f"https://{USER}@127.0.0.1:{port}/otel"
        code, doc, err = report(
            "--clickhouse", url, "--ca-file", pki["ca.pem"], "--format", "json", *ANY_DATA
        )
        assert doc is not None, err
        same(doc, from_file)
        for extra in ([], ["--ca-file", pki["other-ca.pem"]]):
            code, doc, err = report("--clickhouse", url, *extra)
            assert code == 2 and doc is None
            assert "certificate is not trusted" in err and len(err.strip().splitlines()) == 1, err
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


def test_field_choice_same_in_both_sources(server: Any, tmp_path: Path) -> None:
    """Two numeric recorded values: both sources refuse to guess (the same one line, exit 2); with
    --field each, the same report. (Fields first seen on the same span are listed by name from SQL --
    the exporter's map keeps no attribute order -- so here proba starts on the second span.)"""
    port, _ = server
    t0 = now_ns()
    spans = [
        span(i, "match", p=i / 50, c=i / 40, start_ns=t0 + i * 10**6, **{
            "shadow.primary.body.proba": 0.1 * (i % 7), "shadow.candidate.body.proba": 0.1 * (i % 5),
            "shadow.primary.body.label": "yes", "shadow.candidate.body.label": "no",
        })
        for i in range(40)
    ]  # fmt: skip
    for a in ("shadow.primary.body.proba", "shadow.candidate.body.proba"):
        spans[0]["attributes"] = [kv for kv in spans[0]["attributes"] if kv["key"] != a]
    path = write_spans(tmp_path / "two.jsonl", spans)
    table = load(server, spans)
    url = f"http://{USER}@127.0.0.1:{port}/otel"
    code_f, _, err_f = report(path, *ANY_DATA)
    code_c, _, err_c = report("--clickhouse", url, "--table", table, *ANY_DATA)
    assert code_f == code_c == 2
    assert err_c == err_f and "choose the score with --field NAME" in err_c
    for name in ("proba", "score"):
        _, from_file, _ = report(path, "--field", name, "--format", "json", *ANY_DATA)
        _, from_sql, err = report(
            "--clickhouse", url, "--table", table, "--field", name, "--format", "json", *ANY_DATA
        )
        assert from_sql is not None, err
        same(from_sql, from_file)


def test_hostile_values_same_in_both_sources(server: Any, tmp_path: Path) -> None:
    """Values a candidate or a user chose: not finite, absurdly large, negative statuses, control
    characters, quotes, a long reason -- the SQL source's report is the file reader's."""
    port, _ = server
    t0 = now_ns()
    odd: list[dict[str, Any]] = [
        {"shadow.primary.duration_ms": math.nan, "shadow.reason": "r" * 5000},
        {"shadow.candidate.duration_ms": math.inf, "shadow.primary.status_code": -3},
        {"shadow.primary.body.score": 1e300, "shadow.candidate.body.score": 0.5},
        {"shadow.candidate.body.score": -math.inf, "error.type": "\x1b[31mred\u202e"},
        {"shadow.candidate.server_duration_ms": 1e30, "shadow.candidate.status_code": 10**18},
        {"shadow.reason": "field_missing", "shadow.missing_fields": "/a,/b\n'; --"},
    ]
    spans = [
        span(i, ["match", "mismatch", "error"][i % 3], target="t\x00'\"\\", route="r\n\t", p=(i % 10) / 10,
             c=(i % 7) / 7, start_ns=t0 + i * 10**6, **odd[i % len(odd)])
        for i in range(60)
    ]  # fmt: skip
    path = write_spans(tmp_path / "odd.jsonl", spans)
    table = load(server, spans)
    _, from_file, err_f = report(path, "--format", "json", *ANY_DATA)
    _, from_sql, err_c = report(
        "--clickhouse",
        f"http://{USER}@127.0.0.1:{port}/otel",
        "--table",
        table,
        "--format",
        "json",
        *ANY_DATA,
    )
    assert from_file is not None and from_sql is not None, (err_f, err_c)
    assert from_file["out_of_range_values"] > 0
    same(from_sql, from_file)


def test_coalesced_refusal_spans_count_their_exchanges(server: Any, tmp_path: Path) -> None:
    """A dropped span with shadow.coalesced_count stands for that many refusals (outcomes, n, reasons),
    as the file fold counts it; on another outcome, not an integer in [1, 10,000,000]: one."""
    port, _ = server
    t0 = now_ns()
    spans = [span(i, "match", p=0.5, c=0.5, start_ns=t0 + i) for i in range(10)]
    spans += [
        span(
            10 + i,
            "dropped",
            pms=None,
            cms=None,
            start_ns=t0 + 100 + i,
            **{"shadow.reason": "queue_full", **extra},
        )
        for i, extra in enumerate(
            [{"shadow.coalesced_count": 5}] * 3
            + [{}, {"shadow.coalesced_count": "abc"}, {"shadow.coalesced_count": 10**9}]
        )
    ]
    spans.append(span(20, "match", p=0.5, c=0.5, start_ns=t0 + 200, **{"shadow.coalesced_count": 7}))
    table = load(server, spans)
    _, doc, err = report(
        "--clickhouse",
        f"http://{USER}@127.0.0.1:{port}/otel",
        "--table",
        table,
        "--format",
        "json",
        *ANY_DATA,
    )
    assert doc is not None, err
    (g,) = doc["targets"]
    assert doc["spans"] == 17
    assert g["outcomes"]["dropped"] == 3 * 5 + 3 and g["outcomes"]["match"] == 11 and g["n"] == 29
    assert g["reasons"] == {"queue_full": 18} and g["reasons_by_outcome"] == {"dropped": {"queue_full": 18}}
    # The file fold counts them the same way: one aggregate, two sources.
    _, from_file, err_f = report(
        write_spans(tmp_path / "coalesced.jsonl", spans), "--format", "json", *ANY_DATA
    )
    assert from_file is not None, err_f
    same(doc, from_file)


def test_auto_never_hands_a_file_with_an_endless_line_or_gzip_to_chdb(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """chDB holds a whole line to parse it (a 300 MB line took 2-3 GB): --engine auto gives it only
    plain files whose lines all fit the light reader's cap, so a hostile file cannot choose it."""
    import gzip

    from shadow_middleware.report import embedded

    spans, _ = dataset(60, seed=5)
    plain = write_spans(tmp_path / "s.jsonl", spans)
    limit = max(len(line) for line in plain.read_bytes().splitlines())
    assert embedded.lines_fit([plain], limit)
    assert not embedded.lines_fit([plain], limit - 1)
    endless = tmp_path / "endless.jsonl"
    endless.write_bytes(plain.read_bytes() + b"a" * (9 * 2**20) + b"\n" + plain.read_bytes())
    assert not embedded.lines_fit([endless], 8 * 2**20)  # across 4 MiB reads
    assert not embedded.lines_fit([plain, endless], 8 * 2**20)
    packed = tmp_path / "s.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    assert not embedded.lines_fit([packed])

    def refuse(*_: Any) -> None:
        raise AssertionError("handed to chDB")

    monkeypatch.setattr(embedded, "AUTO_BYTES", 1)
    monkeypatch.setattr(embedded, "chdb_aggregate", refuse)
    monkeypatch.setattr(embedded.lines_fit, "__defaults__", (8 * 2**20,))
    for path in (endless, packed):
        _, out, err = _in_process(capsys, path, "--format", "json", *ANY_DATA)
        assert "Traceback" not in err and "handed to chDB" not in err, err
        assert json.loads(out)["spans"] == 60  # the endless file repeats the spans: counted once
