"""Property-based fuzzing of the report's readers, through the real CLI (issue 18).

Hypothesis writes OTLP-shaped span files -- requests whose spans carry fuzzed ids, times (negative,
40 digits, ``Infinity``, floats), attribute keys (not strings, empty, with control characters) and
``AnyValue`` s (huge, non-finite, nested, of the wrong JSON type), mixed with lines that are not JSON,
not objects, deeply nested or not UTF-8, plain, gzip or truncated gzip -- and side files (labels as
CSV or JSON lines, a reference sample as CSV or JSON lines, bytes that may not be UTF-8), and runs
``shadow-middleware report`` on them with fuzzed options (``--format``, ``--html``, ``--trace-url``, ``--field``, ``--top``...):
in process through ``shadow_middleware.__main__.main`` (many examples) and as a subprocess (a few).

Every example checks: no exception and no traceback; exit status 0, 1 or 2; bounded time (an alarm
ends a hang) and memory (the process's peak RSS); no control character on stdout or stderr but the
line ends (a string from the input must not drive the terminal); ``--format json`` output parses
(no NaN, no infinity) and its verdict is the exit status.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shadow_middleware.__main__ import main

REPO = Path(__file__).resolve().parent.parent
FUZZ = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
SUBPROCESS = settings(FUZZ, max_examples=4)
EXAMPLE_SECONDS = 30  # generous: an example takes well under a second; a hang takes forever
PEAK_MB = 600  # generous: the inputs are small, the report's own footprint is ~100 MB
EXIT_CODES = {"promote": 0, "reject": 1, "insufficient": 2}

# ---- span files ---------------------------------------------------------------------------------

NASTY_TEXT = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["", "\x1b]0;x\x07", "\x1b[2J", "\x9b31m", "\u202e", "a\nb", "verdict: PROMOTE", "é"]),
)
NUMBER = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([1e308, -1e308, 1e15, 1e16, 0.5, 5e-324, 0.0, -0.0]),
    st.integers(min_value=-(10**40), max_value=10**40),
)
KEYS = [
    "shadow.target",
    "shadow.route",
    "shadow.outcome",
    "shadow.primary.body.score",
    "shadow.candidate.body.score",
    "shadow.primary.body.other",
    "shadow.primary.duration_ms",
    "shadow.candidate.duration_ms",
    "shadow.candidate.server_duration_ms",
    "shadow.correlation_id",
    "shadow.reason",
    "error.type",
    "shadow.diff.paths",
    "shadow.request.body.age",
    "shadow.request.body.plan",
]


def _raw_number(x: Any) -> Any:
    """A number as OTLP JSON might carry it: a number, or a string of one."""
    return st.one_of(st.just(x), st.just(str(x)))


SCALAR_VALUE = st.one_of(
    NASTY_TEXT.map(lambda s: {"stringValue": s}),
    NUMBER.flatmap(_raw_number).map(lambda x: {"doubleValue": x}),
    NUMBER.flatmap(_raw_number).map(lambda x: {"intValue": x}),
    st.sampled_from(["Infinity", "-Infinity", "NaN", "1e999", "x", None, [], {}]).map(
        lambda x: {"intValue": x}
    ),
    st.sampled_from(["Infinity", "NaN", "1e999", "x", None, [1]]).map(lambda x: {"doubleValue": x}),
    st.booleans().map(lambda b: {"boolValue": b}),
    st.sampled_from(
        [{"stringValue": ["x"]}, {"stringValue": 5}, {"bytesValue": "AAE="}, {}, None, "raw", 7, []]
    ),
)
ANY_VALUE = st.recursive(
    SCALAR_VALUE,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3).map(lambda vs: {"arrayValue": {"values": vs}}),
        st.lists(st.tuples(NASTY_TEXT, inner), max_size=3).map(
            lambda kvs: {"kvlistValue": {"values": [{"key": k, "value": v} for k, v in kvs]}}
        ),
    ),
    max_leaves=8,
)
OUTCOME = st.one_of(
    st.sampled_from(["match", "mismatch", "error", "timeout", "dropped", "skipped"]), NASTY_TEXT
)
KEY = st.one_of(st.sampled_from(KEYS), NASTY_TEXT, st.sampled_from([5, None, ["k"], {"k": 1}]))
TIME = st.one_of(
    st.integers(min_value=1_700_000_000_000_000_000, max_value=1_700_000_100_000_000_000).map(str),
    st.sampled_from(
        ["-5", "-1", "0", "1" * 40, "", "x", "1e3", "9223372036854775807", "9223372036854775808"]
    ),
    st.sampled_from([-5, 1.5, 1e400, 2**64, None, [], "@INF@", "@NAN@"]),
)
HEX = "0123456789abcdef"
TRACE_ID = st.one_of(st.text(HEX, min_size=32, max_size=32), NASTY_TEXT, st.sampled_from(["A" * 32, 5, None]))
SPAN_ID = st.one_of(st.text(HEX, min_size=16, max_size=16), st.sampled_from(["", "x", 5]))


@st.composite
def spans(draw: st.DrawFn) -> dict[str, Any]:
    attrs: list[Any] = [
        {
            "key": "shadow.target",
            "value": {"stringValue": draw(st.sampled_from(["cand", "cand2"]) | NASTY_TEXT)},
        },
        {"key": "shadow.route", "value": {"stringValue": draw(st.sampled_from(["POST /p"]) | NASTY_TEXT)}},
        {"key": "shadow.outcome", "value": {"stringValue": draw(OUTCOME)}},
    ]
    if draw(st.booleans()):  # a plausible scored exchange
        attrs += [
            {"key": "shadow.primary.body.score", "value": {"doubleValue": draw(NUMBER)}},
            {"key": "shadow.candidate.body.score", "value": {"doubleValue": draw(NUMBER)}},
            {
                "key": "shadow.correlation_id",
                "value": {"stringValue": draw(st.sampled_from(["R1", "R2"]) | NASTY_TEXT)},
            },
            {"key": "shadow.request.body.age", "value": {"doubleValue": draw(NUMBER)}},
        ]
    for key in (
        "shadow.primary.duration_ms",
        "shadow.candidate.duration_ms",
        "shadow.candidate.server_duration_ms",
    ):
        if draw(st.booleans()):
            attrs.append({"key": key, "value": {"doubleValue": draw(NUMBER)}})
    attrs += draw(st.lists(st.fixed_dictionaries({"key": KEY, "value": ANY_VALUE}), max_size=5))
    if draw(st.integers(0, 9)) == 0:
        attrs = draw(st.sampled_from([None, "x", [1, 2], {"key": "k"}]))
    return {
        "traceId": draw(TRACE_ID),
        "spanId": draw(SPAN_ID),
        "name": draw(NASTY_TEXT),
        "startTimeUnixNano": draw(TIME),
        "endTimeUnixNano": draw(TIME),
        "attributes": attrs,
    }


def _otlp_line(batch: list[Any]) -> bytes:
    doc = {"resourceSpans": [{"resource": {}, "scopeSpans": [{"scope": {"name": "s"}, "spans": batch}]}]}
    text = json.dumps(doc)  # NaN and Infinity literals on purpose: some writers produce them
    return text.replace('"@INF@"', "Infinity").replace('"@NAN@"', "NaN").encode()


JUNK_LINE = st.one_of(
    st.binary(max_size=40),
    st.sampled_from(
        [
            b"{not json",
            b"[1, 2]",
            b"null",
            b'{"resourceSpans": 5}',
            b'{"resourceSpans": [{"scopeSpans": [{"spans": [1, "x", null]}]}]}',
            b'{"resourceSpans": [' + b"[" * 5000 + b"]" * 5000 + b"]}",
            b'{"resourceMetrics": []}',
            b"\xff\xfe\x00",
        ]
    ),
)
LINE = st.one_of(
    st.lists(spans(), min_size=1, max_size=4).map(_otlp_line),
    st.lists(spans(), min_size=1, max_size=4).map(_otlp_line),
    JUNK_LINE,
)
SPAN_FILE = st.tuples(st.lists(LINE, min_size=1, max_size=8), st.sampled_from(["plain", "gzip", "gzip-cut"]))

# ---- side files and options ---------------------------------------------------------------------

CELL = st.one_of(st.sampled_from(["R1", "R2", "0", "1", "true", "", "1e308", "NaN", '"q,"']), NASTY_TEXT)
LABELS = st.one_of(
    st.lists(st.tuples(CELL, CELL), max_size=6).map(
        lambda rows: ("correlation_id,label\n" + "".join(f"{a},{b}\n" for a, b in rows)).encode()
    ),
    st.lists(
        st.fixed_dictionaries({"correlation_id": CELL, "label": st.one_of(CELL, NUMBER)}), max_size=6
    ).map(lambda docs: b"".join(json.dumps(d).encode() + b"\n" for d in docs)),
    st.sampled_from([b"", b"\xff\xfe", b'{"correlation_id": ' + b"[" * 5000 + b"]" * 5000 + b"}\n"]),
    st.binary(max_size=60),
)
REFERENCE = st.one_of(
    st.lists(st.tuples(CELL, CELL), max_size=6).map(
        lambda rows: ("age,plan\n" + "".join(f"{a},{b}\n" for a, b in rows)).encode()
    ),
    st.lists(st.fixed_dictionaries({"age": st.one_of(NUMBER, CELL), "plan": CELL}), max_size=6).map(
        lambda docs: b"".join(json.dumps(d).encode() + b"\n" for d in docs)
    ),
    st.sampled_from([b"age\n" + b"1" * 140_000 + b"\n", b"age\n\xc3\x28\n", b"\x00\x1b[2J"]),
    st.binary(max_size=60),
)
OPTIONS = st.fixed_dictionaries(
    {},
    optional={
        "--format": st.sampled_from(["json", "text"]),
        "--trace-url": st.sampled_from(["https://t.example/trace/{trace_id}", "http://{trace_id}", "x"]),
        "--field": st.sampled_from(["score", "other", "\x1b[2J"]),
        "--top": st.sampled_from(["0", "3", "-1"]),
        "--threshold": st.sampled_from(["0.5", "1e308", "nan", "-3"]),
        "--require": st.sampled_from(["compared >= 1", "agreement >= 0.9", "min_samples = 2", "bogus"]),
        "--auc-ci": st.sampled_from(["delong", "bootstrap"]),
    },
)
CASE = st.fixed_dictionaries(
    {"spans": SPAN_FILE, "options": OPTIONS},
    optional={"labels": LABELS, "reference": REFERENCE, "html": st.just(True)},
)


def _write(case: dict[str, Any], tmp: Path) -> list[str]:
    """The CLI arguments for ``case``, its files written under ``tmp``."""
    lines, how = case["spans"]
    data = b"\n".join(lines) + b"\n"
    spans_path = tmp / ("s.jsonl" if how == "plain" else "s.jsonl.gz")
    if how != "plain":
        data = gzip.compress(data)
        if how == "gzip-cut":  # a file still being written
            data = data[: max(2, len(data) * 2 // 3)]
    spans_path.write_bytes(data)
    args = ["report", str(spans_path), "--bootstrap", "20", "--no-progress"]
    for option, value in case["options"].items():
        args += [option, value]
    for option, key in (("--ground-truth", "labels"), ("--reference", "reference")):
        if key in case:
            side = tmp / key
            side.write_bytes(case[key])
            args += [option, str(side)]
    if case.get("html"):
        args += ["--html", str(tmp / "r.html")]
    return args


def _check(code: int, out: str, err: str, args: list[str]) -> None:
    assert code in (0, 1, 2), (code, err)
    assert "Traceback" not in err, err
    for stream in (out, err):
        bad = [ch for ch in stream if ch != "\n" and (ord(ch) < 0x20 or 0x7F <= ord(ch) <= 0x9F)]
        assert not bad, (bad[:5], stream[:2000])
    if "--format" in args and args[args.index("--format") + 1] == "json" and out:
        rep = json.loads(out)  # strict: no NaN, no infinity
        assert EXIT_CODES[rep["verdict"]] == code or code == 2  # 2: also a usage error after printing
        json.dumps(rep, allow_nan=False)
    if "--html" in args and code in (0, 1) and out:
        assert Path(args[args.index("--html") + 1]).read_text(encoding="utf-8").endswith("</html>\n")


@contextlib.contextmanager
def _alarm(seconds: int) -> Iterator[None]:
    """A hang ends the example with an error instead of the test run."""

    def ring(_signum: int, _frame: Any) -> None:
        raise TimeoutError(f"the report ran for over {seconds} s")

    old = signal.signal(signal.SIGALRM, ring)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@FUZZ
@given(case=CASE)
def test_the_report_survives_hostile_files_in_process(case: dict[str, Any]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        args = _write(case, Path(tmp))
        out, err = io.StringIO(), io.StringIO()
        began = time.monotonic()
        with _alarm(EXAMPLE_SECONDS), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(args)
        assert time.monotonic() - began < EXAMPLE_SECONDS
        _check(code, out.getvalue(), err.getvalue(), args)
    assert _peak_mb() < PEAK_MB + 400  # the test process holds pytest and hypothesis too


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


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="peak RSS from /proc")
@SUBPROCESS
@given(case=CASE)
def test_the_report_survives_hostile_files_as_a_process(case: dict[str, Any]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        args = _write(case, Path(tmp))
        res = subprocess.run(
            [sys.executable, "-c", _PEAK, *args],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=EXAMPLE_SECONDS * 2,
        )
        err, _, peak = res.stderr.rpartition("MAXRSS_KB ")
        _check(res.returncode, res.stdout, err, args)
        assert int(peak.split()[0]) / 1024 < PEAK_MB
