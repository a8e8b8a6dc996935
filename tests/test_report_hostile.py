"""The report reads hostile files (issue 18): a candidate's answers and users' request bodies fill the
spans, and labels and reference files come from elsewhere. Whatever they hold: no traceback, no hang,
memory bounded, exit status 0/1/2 only, nothing that drives the terminal, one exchange counted once."""

from __future__ import annotations

import gzip
import json
import re
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from shadow_middleware.report import aggregate as aggregate_module
from shadow_middleware.report.aggregate import ReportOptions, SeenIds, Timeline, aggregate
from shadow_middleware.report.build import build_report, trace_link
from shadow_middleware.report.cli import trace_url_problem
from shadow_middleware.report.format import clean, fmt
from shadow_middleware.report.policy import Policy
from shadow_middleware.report.spans import MAX_LINE_BYTES

from .test_report import REPO, line_of, span, write_spans

ANY_DATA = ("--require", "compared >= 1")
# a Python traceback, or an escape sequence reaching the terminal
TRACEBACK = "Traceback (most recent call last)"


def run_cli(*args: str | Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(
        [sys.executable, "-m", "shadow_middleware", "report", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=timeout,
    )
    assert TRACEBACK not in res.stderr, res.stderr[-3000:]
    assert res.returncode in (0, 1, 2), res.stderr[-3000:]
    return res


def scored(n: int, **extra: Any) -> list[dict[str, Any]]:
    return [span(i, "match", p=0.2, c=0.25, cid=f"R{i}", **extra) for i in range(n)]


def _with_inputs(n: int) -> list[dict[str, Any]]:
    return scored(n, **{"shadow.request.body.age": 30})


def _reference(path: Path) -> Path:
    path.write_text("age\n" + "\n".join(str(20 + i % 30) for i in range(200)) + "\n")
    return path


# --- 1. finite but huge values ------------------------------------------------------------------


def test_huge_finite_values_are_ignored_counted_and_every_format_survives(tmp_path: Path) -> None:
    spans = scored(40)
    for i, s in enumerate(spans[:10]):
        huge = 1e308 if i % 2 else -1e308
        s["attributes"] += [
            {"key": "shadow.candidate.server_duration_ms", "value": {"doubleValue": 1e308}},
        ]
        for a in s["attributes"]:
            if a["key"] == "shadow.candidate.body.score":
                a["value"] = {"doubleValue": huge}
            if a["key"] == "shadow.candidate.duration_ms":
                a["value"] = {"doubleValue": 1e308}
    spans[10]["attributes"].append({"key": "shadow.primary.duration_ms", "value": {"doubleValue": -1e300}})
    spans[11]["attributes"].append({"key": "shadow.diff.count", "value": {"intValue": "9" * 40}})
    path = write_spans(tmp_path / "s.jsonl", spans)
    html = tmp_path / "r.html"
    text = run_cli(path, "--html", html, *ANY_DATA)
    assert "inf" not in text.stdout and "nan" not in text.stdout
    assert not re.search(r"\d{33}", text.stdout), text.stdout  # no wall of digits (trace ids: 32)
    assert "recorded number(s) not finite or beyond" in text.stdout
    assert html.read_text().endswith("</html>\n")
    res = run_cli(path, "--format", "json", *ANY_DATA)
    rep = json.loads(res.stdout)
    assert rep["out_of_range_values"] == 10 + 10 + 10 + 2  # score, duration, server time; -1e300, 40 digits
    g = rep["targets"][0]
    assert g["scored"] == 30 and g["max_abs_diff"] == pytest.approx(0.05)
    assert g["candidate"]["latency_n"] == 30


def test_plots_survive_any_range_of_values(tmp_path: Path) -> None:
    """A latency CDF from 5e-324 ms to 1e18 ms (343 decades on a log axis), scores of ±1e18."""
    spans = [
        span(i, "match", p=-1e18 if i % 2 else 1e18, c=0.3, pms=5e-324 if i == 0 else 1e18, cms=3.0)
        for i in range(10)
    ]
    html = tmp_path / "r.html"
    run_cli(write_spans(tmp_path / "s.jsonl", spans), "--html", html, *ANY_DATA)
    page = html.read_text()
    assert page.endswith("</html>\n") and page.count("<svg") >= 3


def test_numbers_format_sanely() -> None:
    assert fmt(1e300) == "1.0000e+300" and fmt(-2.5e12, 2) == "-2.50e+12"
    assert fmt(123456.5) == "123456.5000" and fmt(None) == "n/a" and fmt(7) == "7"


# --- 2. times: negative, absurd, infinite -------------------------------------------------------


def test_timeline_series_terminates_whatever_the_keys() -> None:
    t = Timeline()
    t.buckets = {-1: [1, 0], 0: [0, 1]}  # -1 // 2 == -1: halving alone never joins them
    width, series = t.series(max_buckets=1)
    assert series and width >= 2**64


@pytest.mark.parametrize("start", ['"-5"', '"' + "1" * 40 + '"', "Infinity", "-7", "1.5e400", '"1e3"'])
def test_a_bad_start_time_is_a_malformed_line_not_a_hang(tmp_path: Path, start: str) -> None:
    good = _with_inputs(40)
    bad = _with_inputs(1)[0]
    bad["startTimeUnixNano"] = "@START@"
    path = tmp_path / "s.jsonl"
    path.write_text(
        line_of(good[:20])
        + "\n"
        + line_of([bad]).replace('"@START@"', start)
        + "\n"
        + line_of(good[20:])
        + "\n"
    )
    html = tmp_path / "r.html"
    began = time.monotonic()
    res = run_cli(
        path,
        "--reference",
        _reference(tmp_path / "ref.csv"),
        "--html",
        html,
        "--format",
        "json",
        *ANY_DATA,
        timeout=60,
    )
    assert time.monotonic() - began < 60
    rep = json.loads(res.stdout)
    assert rep["malformed_lines"] == 1 and rep["spans"] == 40
    assert f"{path}:2: skipped malformed line" in res.stderr
    assert html.read_text().endswith("</html>\n")


# --- 3. memory bounded by the input -------------------------------------------------------------

_PEAK = (
    "import runpy, sys\n"
    "sys.argv = ['shadow_middleware'] + sys.argv[1:]\n"
    "try:\n"
    "    runpy.run_module('shadow_middleware', run_name='__main__')\n"
    "except SystemExit as exc:\n"
    "    rc = exc.code\n"
    "hwm = [ln for ln in open('/proc/self/status') if ln.startswith('VmHWM:')][0].split()[1]\n"
    "print('MAXRSS_KB', hwm, file=sys.stderr)\n"
    "sys.exit(rc)\n"
)


def _peak_run(*args: str | Path) -> tuple[subprocess.CompletedProcess[str], float]:
    res = subprocess.run(
        [sys.executable, "-c", _PEAK, "report", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert TRACEBACK not in res.stderr and res.returncode in (0, 1, 2), res.stderr[-3000:]
    return res, int(res.stderr.split("MAXRSS_KB")[1].split()[0]) / 1024


def test_an_endless_line_in_gzip_is_skipped_in_bounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl.gz"
    spans = scored(40)
    with gzip.open(path, "wb", compresslevel=1) as f:
        f.write(line_of(spans[:20]).encode() + b"\n")
        chunk = b"a" * 2**20
        for _ in range(300):  # a 300 MB line, 300 KB of gzip
            f.write(chunk)
        f.write(b"\n" + line_of(spans[20:]).encode() + b"\n")
    assert path.stat().st_size < 2e6
    res, peak_mb = _peak_run(path, "--format", "json", *ANY_DATA)
    rep = json.loads(res.stdout)
    assert rep["spans"] == 40 and rep["malformed_lines"] == 1
    assert f"{path}:2: skipped malformed line: line longer than {MAX_LINE_BYTES // 2**20} MiB" in res.stderr
    assert peak_mb < 150, f"peak RSS {peak_mb:.0f} MB"


def test_many_groups_are_capped_counted_and_never_promoted(tmp_path: Path) -> None:
    n = 2 * aggregate_module.MAX_GROUPS + 500
    spans = [span(i, "match", route=f"POST /r{i}", p=0.2, c=0.2) for i in range(n)]
    path = write_spans(tmp_path / "s.jsonl", spans, per_line=500)
    res = run_cli(path, "--format", "json", *ANY_DATA)
    rep = json.loads(res.stdout)
    assert len(rep["targets"]) == rep["max_groups"] == aggregate_module.MAX_GROUPS
    assert rep["spans_beyond_max_groups"] == n - aggregate_module.MAX_GROUPS
    assert rep["verdict"] == "insufficient" and res.returncode == 2  # every kept group passes
    text = run_cli(path, *ANY_DATA)
    assert f"{n - aggregate_module.MAX_GROUPS} span(s) of target/route groups beyond the first" in text.stdout


def test_a_group_costs_little_until_its_reservoirs_fill() -> None:
    """1,000 groups of one span each: before, five seeded generators each (~38 KB a group)."""
    spans = [
        aggregate_module.ShadowSpan(
            f"{i:032x}",
            f"{i:016x}",
            "s",
            1,
            2,
            {
                "shadow.target": "c",
                "shadow.route": f"r{i}",
                "shadow.outcome": "match",
                "shadow.primary.duration_ms": 1.0,
                "shadow.candidate.duration_ms": 2.0,
            },
        )
        for i in range(1000)
    ]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        agg = aggregate(spans, ReportOptions())
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(agg.groups) == 1000
    assert kept / 1000 < 8000, f"{kept / 1000:.0f} bytes a group"


# --- 4. one hostile line is one malformed line --------------------------------------------------


def _hostile_line(kind: str) -> str:
    s = scored(1)[0]
    s["traceId"], s["spanId"] = "f" * 32, "e" * 16
    if kind == "deep":
        s["attributes"].append({"key": "shadow.diff.paths", "value": "@DEEP@"})
        deep = '{"arrayValue": {"values": [' * 3000 + '{"stringValue": "x"}' + "]}}" * 3000
        return line_of([s]).replace('"@DEEP@"', deep)
    if kind == "deep-kvlist":
        value: Any = {"stringValue": "x"}
        for _ in range(40):  # parses; nests deeper than the reader accepts
            value = {"kvlistValue": {"values": [{"key": "k", "value": value}]}}
        s["attributes"].append({"key": "shadow.reason", "value": value})
        return line_of([s])
    if kind == "start-infinity":
        s["startTimeUnixNano"] = "@X@"
        return line_of([s]).replace('"@X@"', "Infinity")
    if kind == "int-infinity":
        s["attributes"].append({"key": "shadow.diff.count", "value": {"intValue": "@X@"}})
        return line_of([s]).replace('"@X@"', "Infinity")
    if kind == "int-40-digits":
        s["attributes"].append({"key": "shadow.diff.count", "value": {"intValue": "9" * 40}})
        return line_of([s])
    if kind == "key-not-a-string":
        s["attributes"].append({"key": 5, "value": {"stringValue": "x"}})
        return line_of([s])
    if kind == "key-list":
        s["attributes"].append({"key": ["a"], "value": {"stringValue": "x"}})
        return line_of([s])
    if kind == "string-value-deep-list":
        s["attributes"].append({"key": "shadow.reason", "value": {"stringValue": "@DEEP@"}})
        return line_of([s]).replace('"@DEEP@"', "[" * 900 + "]" * 900)
    raise AssertionError(kind)


HOSTILE = [
    "deep",
    "deep-kvlist",
    "start-infinity",
    "int-infinity",
    "key-not-a-string",
    "key-list",
    "string-value-deep-list",
]


@pytest.mark.parametrize("kind", HOSTILE)
def test_one_hostile_line_is_skipped_as_malformed(tmp_path: Path, kind: str) -> None:
    good = _with_inputs(40)
    path = tmp_path / "s.jsonl"
    path.write_text(line_of(good[:20]) + "\n" + _hostile_line(kind) + "\n" + line_of(good[20:]) + "\n")
    res = run_cli(path, "--format", "json", "--reference", _reference(tmp_path / "ref.csv"), *ANY_DATA)
    rep = json.loads(res.stdout)
    assert rep["malformed_lines"] == 1 and rep["spans"] == 40, res.stderr
    assert f"{path}:2: skipped malformed line" in res.stderr


def _side(tmp_path: Path, name: str, content: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    return path


SIDE_FILES = {
    "labels-not-utf8.csv": (b"correlation_id,label\nR1,1\nR\xff\xfe2,0\n", 3, "not UTF-8"),
    "labels-huge-field.csv": (b'correlation_id,label\nR1,1\n"' + b"x" * 200_000 + b'",1\n', 3, "CSV"),
    "labels-deep.jsonl": (
        b'{"correlation_id": "R1", "label": 1}\n{"correlation_id": '
        + b"[" * 100_000
        + b"]" * 100_000
        + b"}\n",
        2,
        "nested too deep",
    ),
    "labels-long-line.csv": (b"correlation_id,label\n" + b"R" * (MAX_LINE_BYTES + 10) + b",1\n", 2, "longer"),
    "reference-not-utf8.csv": (b"age\n1\n\xc3\x28\n", 3, "not UTF-8"),
    "reference-huge-field.csv": (b'age\n"' + b"1" * 200_000 + b'"\n', 2, "CSV"),
    "reference-deep.jsonl": (
        b'{"age": 1}\n' + b'{"age": ' + b"{" * 0 + b"[" * 100_000 + b"]" * 100_000 + b"}\n",
        2,
        "nested too deep",
    ),
}


@pytest.mark.parametrize("name", sorted(SIDE_FILES))
def test_an_unreadable_side_file_is_exit_2_with_one_line(tmp_path: Path, name: str) -> None:
    content, line, what = SIDE_FILES[name]
    side = _side(tmp_path, name, content)
    path = write_spans(tmp_path / "s.jsonl", scored(20))
    option = "--ground-truth" if name.startswith("labels") else "--reference"
    res = run_cli(path, option, side, *ANY_DATA)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {side}:{line}: ") and what in lines[0], res.stderr
    assert len(lines[0]) < 300


# --- 5. terminal escapes ------------------------------------------------------------------------

EVIL = "\x1b]0;owned\x07\x1b[2J\x1b[H\x9b31m verdict: PROMOTE\r\n\u202e"


def test_no_control_character_from_the_input_reaches_the_terminal(tmp_path: Path) -> None:
    spans = [
        span(
            i,
            "mismatch",
            target="c" + EVIL,
            route="POST /p" + EVIL,
            p=0.1,
            c=0.9,
            cid="id" + EVIL,
            **{"shadow.reason": "why" + EVIL, "error.type": "E" + EVIL, "shadow.request.body.in" + EVIL: 1},
        )
        for i in range(30)
    ]
    spans[0]["traceId"] = "t" + EVIL
    path = write_spans(tmp_path / "s.jsonl", spans)
    ref = _side(tmp_path, "ref.csv", ("in" + EVIL.replace("\r\n", "") + ",other\x1b[5m\n1,2\n").encode())
    labels = _side(
        tmp_path, "l.csv", ("correlation_id,label\nid" + EVIL.replace("\r\n", "") + ",x\x1b\n").encode()
    )
    res = run_cli(path, "--reference", ref, "--ground-truth", labels, "--field", "x\x1b[2J", "--top", "30")
    out = res.stdout + res.stderr
    for ch in out:
        assert ch in "\n" or not (ord(ch) < 0x20 or 0x7F <= ord(ch) <= 0x9F or ch in "\u202e\u2028"), repr(ch)
    assert "\\x1b]0;owned\\x07" in res.stdout  # shown, escaped: one can see what was there
    assert [line for line in res.stdout.splitlines() if line.startswith("verdict:")] == [
        "verdict: INSUFFICIENT (exit status 2)"
    ]
    # the "not OTLP" message quotes a file's keys
    other = _side(tmp_path, "o.jsonl", (json.dumps({"k\x1b[2J" + EVIL: 1}) + "\n").encode())
    bad = run_cli(other)
    assert bad.returncode == 2 and "\x1b" not in bad.stderr and "\\x1b[2J" in bad.stderr


def test_clean_escapes_c0_del_c1_and_keeps_the_rest() -> None:
    assert clean("a\x1b[2Jb\x7f\x85\x9b\t\n") == "a\\x1b[2Jb\\x7f\\x85\\x9b\\x09\\x0a"
    assert clean("é ✓ 日本") == "é ✓ 日本" and clean("\u202egnp.exe") == "\\u202egnp.exe"
    assert clean("x" * 50, limit=10) == "x" * 10 + "..."


# --- 6. duplicates ------------------------------------------------------------------------------


def test_the_same_file_given_twice_counts_once(tmp_path: Path) -> None:
    path = write_spans(tmp_path / "s.jsonl", scored(120))
    policy = ("--require", "min_samples = 200", "--require", "agreement >= 0.9")
    once = json.loads(run_cli(path, "--format", "json", *policy).stdout)
    twice_res = run_cli(path, path, "--format", "json", *policy)
    twice = json.loads(twice_res.stdout)
    assert once["verdict"] == twice["verdict"] == "insufficient"  # 120 compared, not 240
    assert twice["targets"][0]["compared"] == once["targets"][0]["compared"] == 120
    assert twice["duplicate_spans"] == 120 and once["duplicate_spans"] == 0
    assert twice_res.returncode == 2
    text = run_cli(path, path, *policy).stdout
    assert "120 duplicate span(s) ignored" in text


def test_seen_ids_are_exact_across_runs_and_chunks() -> None:
    seen = SeenIds()
    keys: list[int | None] = [k * 7919 % 100_003 for k in range(30_000)]
    first = [seen.new(keys[i : i + 300]) for i in range(0, len(keys), 300)]
    assert all(all(f) for f in first) and seen.runs
    again = seen.new([*keys[::97], None, None, -1])
    assert again == [False] * len(keys[::97]) + [True, True, True]
    assert seen.new([-1, 5 * 10**9, 5 * 10**9]) == [False, True, False]


# --- 7. trace links -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "template",
    [
        "http://{trace_id}",
        "https://{trace_id}.tempo.example/",
        "https://tempo.example{trace_id}/x",
        "https://u:{trace_id}@tempo.example/",
        "https://[{trace_id}/",
        "http{trace_id}://tempo.example/",
    ],
)
def test_the_trace_id_never_chooses_the_links_host(tmp_path: Path, template: str) -> None:
    assert trace_url_problem(template) is not None
    path = write_spans(tmp_path / "s.jsonl", scored(5))
    res = run_cli(path, "--trace-url", template)
    assert res.returncode == 2 and res.stderr.startswith("error: --trace-url ")


def test_only_otlp_trace_ids_are_linked() -> None:
    t = "https://tempo.example/trace/{trace_id}#x"
    assert trace_url_problem(t) is None
    assert (
        trace_link(t, "0123456789abcdef" * 2)
        == "https://tempo.example/trace/0123456789abcdef0123456789abcdef#x"
    )
    for bad in ("", "0123456789ABCDEF" * 2, "0" * 31, "0" * 33, "g" * 32, "../" * 11):
        assert trace_link(t, bad) is None, bad


def test_build_report_json_is_always_compliant() -> None:
    """The JSON document never holds NaN or an infinity, even from spans that did not come through the
    reader: numbers beyond ±1e19 are no value, the sums of the others stay finite."""
    spans = [
        aggregate_module.ShadowSpan(
            f"{i:032x}",
            f"{i:016x}",
            "s",
            1,
            2,
            {
                "shadow.target": "c",
                "shadow.route": "r",
                "shadow.outcome": "match",
                "shadow.primary.body.s": (1e308 if i % 3 else 1e15) * (-1) ** i,
                "shadow.candidate.body.s": -(1e308 if i % 3 else 1e15) * (-1) ** i,
                "shadow.primary.duration_ms": 1e308 if i % 3 else 1e15,
                "shadow.candidate.duration_ms": 1e308 if i % 3 else 1e15,
            },
        )
        for i in range(2000)
    ]
    opts = ReportOptions()
    rep = build_report(aggregate(spans, opts), opts, Policy())
    json.dumps(rep, allow_nan=False)
    g = rep["targets"][0]
    assert g["scored"] == 667 and g["mean_abs_diff"] == 2e15 and g["primary"]["latency_n"] == 667


def test_endless_distinct_reasons_error_types_and_fields_are_bounded_per_group(tmp_path: Path) -> None:
    """Reasons, error types and compared fields come from the input: beyond 100 distinct ones per
    group they count as "(other)" (fields: not compared), and the report stays small."""
    spans = [
        span(
            i,
            f"out{i}",
            **{"shadow.reason": f"r{i}", "error.type": f"E{i}"},
            **{f"shadow.primary.body.f{i}": 1.0, f"shadow.candidate.body.f{i}": 2.0},
        )
        for i in range(2000)
    ]
    path = write_spans(tmp_path / "s.jsonl", spans, per_line=200)
    res = run_cli(path, "--format", "json", "--field", "f1", *ANY_DATA)
    g = json.loads(res.stdout)["targets"][0]
    limit = aggregate_module.MAX_KINDS
    assert len(g["reasons"]) == len(g["error_types"]) == limit + 1
    assert g["reasons"]["(other)"] == g["error_types"]["(other)"] == 2000 - limit
    assert len(g["reasons_by_outcome"]) == limit + 1 and len(g["field_diffs"]) == limit
    assert sum(sum(r.values()) for r in g["reasons_by_outcome"].values()) == 2000
    assert len(res.stdout) < 200_000


@pytest.mark.parametrize("damage", ["truncated", "garbage-member", "corrupt-deflate"])
def test_a_truncated_or_corrupt_gzip_keeps_what_was_read(tmp_path: Path, damage: str) -> None:
    """A gzip file still being written ends mid-stream (EOFError was a traceback: exit 1, "reject")."""
    first = (line_of(scored(20)) + "\n").encode()
    second = (line_of(scored(40)[20:]) + "\n").encode()
    whole = gzip.compress(first, compresslevel=1)  # a member of its own: the damage comes after it
    rest = gzip.compress(second * 50, compresslevel=1)
    if damage == "truncated":
        data = whole + rest[: len(rest) // 2]
    elif damage == "garbage-member":
        data = whole + b"\x1f\x8bnot gzip at all" * 10
    else:
        data = whole + rest[:20] + bytes(range(256)) * 4 + rest[1044:]
    path = tmp_path / "s.jsonl.gz"
    path.write_bytes(data)
    res = run_cli(path, "--format", "json", *ANY_DATA)
    rep = json.loads(res.stdout)
    assert rep["malformed_lines"] == 1 and rep["spans"] >= 20, res.stderr
    assert "gzip data truncated or corrupt" in res.stderr


@pytest.mark.parametrize(
    ("content", "what"),
    [
        (b"\xff\xfemin_samples = 1\n", "not UTF-8"),
        (b"a = " + b"[" * 5000 + b"]" * 5000 + b"\n", "nested too deep"),
    ],
)
def test_an_unreadable_policy_file_is_exit_2_with_one_line(tmp_path: Path, content: bytes, what: str) -> None:
    policy = _side(tmp_path, "p.toml", content)
    res = run_cli(write_spans(tmp_path / "s.jsonl", scored(5)), "--policy", policy)
    assert res.returncode == 2 and res.stderr.startswith(f"error: {policy}: {what}"), res.stderr
    assert res.stderr.count("\n") == 1
