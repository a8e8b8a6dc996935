"""``shadow-middleware report`` in a new user's first hour (issue 11, the report's side).

* no rule never means promote: the default policy (item 2);
* input that is not OTLP JSON lines is refused in one line, malformed lines are capped (item 4);
* latency like with like: the candidate's ``Server-Timing`` against production's in-process time,
  and the README's example rules pass for an identical model (item 7);
* reasons and error types in the text and the HTML report (item 9);
* the usage line and the README's command and sample output (item 11).

The span files are written with the helpers of ``tests/test_report.py``, and, where the format is
the point, through the OpenTelemetry SDK's own exporters.
"""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from shadow_middleware.report.policy import (
    DEFAULT_MIN_LABELLED,
    DEFAULT_MIN_SAMPLES,
    DEFAULT_RULES,
    load_policy,
)
from shadow_middleware.report.spans import NotOTLPError, read_shadow_spans

from .test_report import _labels_csv, line_of, run_cli, span, write_spans

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text()
SERVER_MS = "shadow.candidate.server_duration_ms"


def report_section() -> str:
    start = README.index("## Deciding: the report")
    end = README.index("\n## ", start + 1)
    return README[start:end]


def identical_model(n: int = 1000, seed: int = 11) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """A candidate that is the production model: same scores, same decisions; its own time
    (Server-Timing) drawn from the same distribution as production's in-process time; its round
    trip that plus a network hop and the shadow client's queueing."""
    rng = random.Random(seed)
    spans, labels = [], {}
    for i in range(n):
        y = int(rng.random() < 0.3)
        score = round(min(1.0, max(0.0, 0.35 * y + rng.gauss(0.35, 0.2))), 3)
        pms = rng.lognormvariate(0.0, 0.8)  # ~1 ms median, a tail to ~7 ms
        server = rng.lognormvariate(0.0, 0.8)
        rtt = server + 2.0 + rng.expovariate(1 / 1.5)
        spans.append(span(i, "match", p=score, c=score, cid=f"R{i}", pms=pms, cms=rtt, **{SERVER_MS: server}))
        labels[f"R{i}"] = y
    return spans, labels


def json_report(*args: str | Path) -> tuple[int, dict[str, Any]]:
    res = run_cli(*args, "--format", "json")
    assert res.returncode in (0, 1, 2) and res.stdout, res.stderr
    return res.returncode, json.loads(res.stdout)


# --- item 2: the default policy ----------------------------------------------------------------


def html_error_page_spans(n: int = 300) -> list[dict[str, Any]]:
    """A candidate answering an HTML error page where production answers JSON: every exchange is a
    mismatch (``candidate_not_json``), nothing errors or times out, the candidate is fast."""
    return [
        span(i, "mismatch", p=0.4, cms=2.0, **{"shadow.reason": "candidate_not_json", SERVER_MS: 0.5})
        for i in range(n)
    ]


def test_no_rule_never_promotes_a_candidate_that_disagrees_on_everything(tmp_path: Path) -> None:
    path = write_spans(tmp_path / "s.jsonl", html_error_page_spans())
    html = tmp_path / "r.html"
    res = run_cli(path, "--html", html)
    assert res.returncode == 1, res.stdout
    assert "verdict: REJECT (exit status 1)" in res.stdout
    assert "policy: default (no --require/--policy given)" in res.stdout
    assert "FAIL  agreement >= 0.95   (0.0000 vs 0.9500)" in res.stdout
    page = html.read_text()
    assert '<span class="verdict reject">reject</span></h1>' in page
    assert "verdict promote" not in page and "default (no --require/--policy given)" in page

    code, rep = json_report(path)
    assert code == 1 and rep["verdict"] == "reject"
    assert rep["policy"]["source"] == "default"
    assert rep["policy"]["description"] == "default (no --require/--policy given)"
    assert rep["policy"]["min_samples"] == DEFAULT_MIN_SAMPLES
    # with labels too: the agreement floor is lower, but not that low; that the candidate answered
    # no score to join with a label does not make it "not enough data"
    labels = _labels_csv(tmp_path / "l.csv", {f"x{i}": i % 2 for i in range(10)})
    code, rep = json_report(path, "--ground-truth", labels)
    assert code == 1 and rep["verdict"] == "reject"
    assert rep["targets"][0]["ground_truth"]["n"] == 0


def test_default_rules_depend_on_ground_truth_and_are_listed(tmp_path: Path) -> None:
    spans, labels = identical_model(300)
    path = write_spans(tmp_path / "s.jsonl", spans)
    lpath = _labels_csv(tmp_path / "l.csv", labels)
    code, rep = json_report(path)
    expected = [d.text for d in DEFAULT_RULES if d.when in ("always", "no_ground_truth")]
    assert code == 0 and rep["policy"]["require"] == expected
    assert [r["status"] for r in rep["targets"][0]["rules"]] == ["PASS"] * len(expected)
    code, rep = json_report(path, "--ground-truth", lpath)
    expected = [d.text for d in DEFAULT_RULES if d.when in ("always", "ground_truth")]
    assert code == 0 and rep["policy"]["require"] == expected
    assert rep["policy"]["min_labelled"] == DEFAULT_MIN_LABELLED
    assert {r["rule"]: r["status"] for r in rep["targets"][0]["rules"]} == dict.fromkeys(expected, "PASS")


def test_default_policy_needs_samples_and_bounds_errors_and_timeouts(tmp_path: Path) -> None:
    few = write_spans(tmp_path / "few.jsonl", [span(i) for i in range(DEFAULT_MIN_SAMPLES - 1)])
    res = run_cli(few)
    assert res.returncode == 2 and "INSUFFICIENT min_samples = 100 (default)   (compared 99)" in res.stdout
    for outcome, rule in (("error", "error_rate <= 0.01"), ("timeout", "timeout_rate <= 0.01")):
        spans = [span(i) for i in range(200)] + [span(1000 + i, outcome, cms=None) for i in range(10)]
        res = run_cli(write_spans(tmp_path / f"{outcome}.jsonl", spans))
        assert res.returncode == 1, res.stdout
        assert f"FAIL  {rule}" in res.stdout


def test_default_policy_rejects_a_candidate_significantly_worse_on_labels(tmp_path: Path) -> None:
    rng = random.Random(5)
    spans, labels = [], {}
    for i in range(600):
        y = int(rng.random() < 0.4)
        p = round(min(1.0, max(0.0, 0.5 * y + rng.gauss(0.25, 0.15))), 3)  # good
        c = round(min(1.0, max(0.0, 0.15 * y + rng.gauss(0.4, 0.15))), 3)  # much worse
        outcome = "match" if (p >= 0.5) == (c >= 0.5) else "mismatch"
        spans.append(span(i, outcome, p=p, c=c, cid=f"R{i}"))
        labels[f"R{i}"] = y
    path = write_spans(tmp_path / "s.jsonl", spans)
    code, rep = json_report(path, "--ground-truth", _labels_csv(tmp_path / "l.csv", labels))
    assert code == 1
    status = {r["rule"]: r["status"] for r in rep["targets"][0]["rules"]}
    assert status["auc_diff_high >= 0"] == "FAIL" and status["mcnemar_p_worse >= 0.05"] == "FAIL"
    gt = rep["targets"][0]["ground_truth"]
    assert gt["mcnemar"]["p_value_worse"] == gt["mcnemar"]["p_value"] < 0.05


def test_default_policy_needs_enough_labels(tmp_path: Path) -> None:
    spans, labels = identical_model(300)
    path = write_spans(tmp_path / "s.jsonl", spans)
    few = _labels_csv(tmp_path / "l.csv", dict(list(labels.items())[:50]))
    res = run_cli(path, "--ground-truth", few)
    assert res.returncode == 2 and "INSUFFICIENT min_labelled = 100 (default)   (labelled 50)" in res.stdout


def test_rules_of_your_own_replace_the_defaults(tmp_path: Path) -> None:
    path = write_spans(tmp_path / "s.jsonl", html_error_page_spans(20))
    code, rep = json_report(path, "--require", "n >= 1", "--require", "min_samples = 0")
    assert code == 0 and rep["policy"]["source"] == "user" and rep["policy"]["require"] == ["n >= 1"]
    assert rep["policy"]["min_samples"] == 0
    policy = tmp_path / "p.toml"
    policy.write_text('min_labelled = 7\nmin_samples = 20\nrequire = ["agreement >= 0"]\n')
    assert load_policy(policy).min_labelled == 7
    code, rep = json_report(path, "--policy", policy)
    assert code == 0 and rep["policy"]["source"] == "user"
    # settings alone are not rules: the default rules apply, with the user's min_samples
    code, rep = json_report(path, "--require", "min_samples = 10")
    assert code == 1 and rep["policy"]["source"] == "default" and rep["policy"]["min_samples"] == 10
    assert "min_samples = 10 given" in rep["policy"]["description"]
    empty = tmp_path / "empty.toml"
    empty.write_text("require = []\n")
    code, rep = json_report(path, "--policy", empty)
    assert code == 2 and rep["policy"]["source"] == "default"  # 20 < 100 comparisons


def test_readme_documents_the_default_policy() -> None:
    section = report_section()
    for d in DEFAULT_RULES:
        assert f"`{d.text}`" in section, d.text
    assert f"`min_samples = {DEFAULT_MIN_SAMPLES}`" in section
    assert f"`min_labelled = {DEFAULT_MIN_LABELLED}`" in section
    assert "replace" in section


# --- item 4: input that is not OTLP JSON lines ---------------------------------------------------


def console_exporter_file(path: Path, n: int, compact: bool = False) -> Path:
    """Real ``ConsoleSpanExporter`` output of shadow spans, written by the SDK."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

    with open(path, "w") as out:
        exporter = (
            ConsoleSpanExporter(out=out, formatter=lambda s: s.to_json(indent=None) + "\n")
            if compact
            else ConsoleSpanExporter(out=out)
        )
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        tracer = provider.get_tracer("shadow_middleware")
        for i in range(n):
            attrs = {
                "shadow.target": "v2",
                "shadow.route": "POST /predict",
                "shadow.outcome": "match",
                "shadow.primary.duration_ms": 1.0 + i,
                "shadow.candidate.duration_ms": 2.0 + i,
            }
            with tracer.start_as_current_span("shadow POST /predict", attributes=attrs):
                pass
        provider.shutdown()
    return path


@pytest.mark.parametrize("compact", [False, True])
def test_console_exporter_output_is_refused_in_one_line(tmp_path: Path, compact: bool) -> None:
    path = console_exporter_file(tmp_path / "console.txt", 200, compact)
    assert len(path.read_text().splitlines()) >= 200
    res = run_cli(path)
    assert res.returncode == 2
    assert res.stdout == ""
    (line,) = res.stderr.splitlines()
    assert line == (
        "error: expected OTLP JSON lines (one ExportTraceServiceRequest per line, as written by "
        f"OpenTelemetry's FileSpanExporter or the Collector's file exporter); {path} looks like "
        "ConsoleSpanExporter output — see README 'Writing the span file'"
    )
    with pytest.raises(NotOTLPError, match="ConsoleSpanExporter"):
        list(read_shadow_spans([path]))


@pytest.mark.parametrize(
    "content,needle",
    [
        ("INFO:     Started server process [1]\nINFO:     Waiting for application startup.\n", "is not JSON"),
        ('{"resourceMetrics": []}\n', "holds OTLP metrics, not spans"),
        (
            '{"spans": [], "service": "x"}\n' * 30,
            "holds JSON objects of another shape (keys: spans, service)",
        ),
        ('{\n  "resourceSpans": []\n}\n', "pretty-printed JSON document"),
        ("[1, 2]\n", "holds JSON lists"),
    ],
)
def test_other_input_is_refused_saying_what_it_looks_like(tmp_path: Path, content: str, needle: str) -> None:
    path = tmp_path / "in.txt"
    path.write_text(content)
    res = run_cli(path)
    assert res.returncode == 2
    (line,) = res.stderr.splitlines()
    assert "expected OTLP JSON lines" in line and needle in line, line


def test_malformed_lines_in_a_real_otlp_file_are_reported_capped(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    with open(path, "w") as f:
        f.write("{truncated by a crash\n")  # the first line: still an OTLP file, told once it is clear
        for i in range(30):
            f.write(line_of([span(i)]) + "\n")
            if i < 24:
                f.write('{"resourceSpans": [{"scopeSpans": [{"spans": [{"attributes": 3}]}]}]}\n')
    res = run_cli(path, "--format", "json", "--require", "compared >= 1", "--require", "min_samples = 1")
    assert res.returncode == 0, res.stderr
    rep = json.loads(res.stdout)
    assert rep["malformed_lines"] == 25 and rep["targets"][0]["compared"] == 30
    lines = res.stderr.splitlines()
    assert len(lines) == 11, lines
    assert lines[0].startswith(f"{path}:1: skipped malformed line:")
    assert all(": skipped malformed line: " in ln for ln in lines[:10])
    assert lines[10] == "... and 15 more malformed line(s) skipped (25 in all)"


# --- item 7: latency like with like ---------------------------------------------------------------


def test_server_timing_is_reported_and_compared(tmp_path: Path) -> None:
    spans, _ = identical_model(1000)
    path = write_spans(tmp_path / "s.jsonl", spans)
    code, rep = json_report(path)
    assert code == 0
    g = rep["targets"][0]
    assert g["latency_basis"] == "server_timing"
    values = [
        next(a["value"]["doubleValue"] for a in s["attributes"] if a["key"] == SERVER_MS) for s in spans
    ]
    for q in (50, 95, 99):
        assert g["candidate"][f"server_p{q}_ms"] == pytest.approx(np.percentile(values, q))
    assert g["candidate"]["server_latency_n"] == 1000
    # the old keys keep their meaning: the round trip
    rtt = [
        next(a["value"]["doubleValue"] for a in s["attributes"] if a["key"] == "shadow.candidate.duration_ms")
        for s in spans
    ]
    assert g["candidate"]["p99_ms"] == pytest.approx(np.percentile(rtt, 99))

    text = run_cli(path, "--html", tmp_path / "r.html").stdout
    assert re.search(r"candidate server time \(Server-Timing\)\s+1000\s", text)
    assert re.search(r"candidate round trip\s+1000\s", text)
    assert "latency compared: production in-process vs candidate server time (Server-Timing)" in text
    page = (tmp_path / "r.html").read_text()
    assert "candidate server time (Server-Timing)" in page and "latency compared" in page
    # a rule on the server time
    res = run_cli(path, "--require", "candidate.server_p99_ms <= 1.2 * primary.p99_ms + 1")
    assert res.returncode == 0 and "PASS  candidate.server_p99_ms" in res.stdout


def test_without_server_timing_the_round_trip_is_labelled_and_not_judged_by_default(tmp_path: Path) -> None:
    spans = [span(i, cms=5.0 + i % 7, **({SERVER_MS: 0.5} if i < 20 else {})) for i in range(200)]
    path = write_spans(tmp_path / "s.jsonl", spans)
    code, rep = json_report(path)
    g = rep["targets"][0]
    assert g["latency_basis"] == "round_trip" and g["candidate"]["server_p99_ms"] is None
    assert g["candidate"]["server_latency_n"] == 20
    latency_rule = next(r for r in g["rules"] if r["rule"].startswith("candidate.server_p95_ms"))
    assert latency_rule["status"] == "SKIP" and "no Server-Timing" in latency_rule["note"]
    assert code == 0  # skipped, not "not enough data"
    text = run_cli(path).stdout
    assert "Server-Timing on 20 of 200 answers only" in text and "not like for like" in text
    assert "candidate server time (Server-Timing)" not in text.split("policy:")[0]
    # a rule of the user's own on the server time: not available, so not enough data
    res = run_cli(path, "--require", "candidate.server_p99_ms <= primary.p99_ms")
    assert res.returncode == 2 and "unavailable: candidate.server_p99_ms" in res.stdout


def readme_rules() -> list[str]:
    """Every rule the README's report section shows: the command's ``--require`` and the examples."""
    section = report_section()
    rules = re.findall(r'--require "([^"]+)"', section)
    table = next(ln for ln in section.splitlines() if ln.startswith("| `--require EXPR`"))
    rules += [
        r for r in re.findall(r"`([^`]+)`", table) if re.search(r"[<>=]", r) and not r.startswith("require")
    ]
    return rules


def test_readme_example_rules_pass_for_an_identical_model(tmp_path: Path) -> None:
    rules = readme_rules()
    assert len(rules) >= 4 and any("server_p" in r for r in rules), rules
    spans, labels = identical_model(1000)
    path = write_spans(tmp_path / "s.jsonl", spans)
    args: list[str | Path] = [path, "--ground-truth", _labels_csv(tmp_path / "l.csv", labels)]
    for rule in rules:
        args += ["--require", rule]
    res = run_cli(*args)
    assert res.returncode == 0, res.stdout
    # and the rule the README used to show does not: the round trip carries the network hop
    res = run_cli(path, "--require", "candidate.p99_ms <= 1.2 * primary.p99_ms")
    assert res.returncode == 1


def test_demo_rules_pass_for_an_identical_model(tmp_path: Path) -> None:
    from examples.demo import report_rules

    spans, labels = identical_model(1000)
    path = write_spans(tmp_path / "s.jsonl", spans)
    args: list[str | Path] = [path, "--ground-truth", _labels_csv(tmp_path / "l.csv", labels)]
    for rule in report_rules(1000):
        args += ["--require", rule]
    res = run_cli(*args)
    assert res.returncode == 0, res.stdout


# --- item 9: reasons and error types -------------------------------------------------------------


def test_reasons_and_error_types_in_text_and_html(tmp_path: Path) -> None:
    spans = [span(i) for i in range(10)]
    spans += [span(100 + i, "mismatch", **{"shadow.reason": "candidate_not_json"}) for i in range(4)]
    spans += [span(200 + i, "error", cms=None, **{"error.type": "ConnectionRefusedError"}) for i in range(3)]
    spans += [
        span(300 + i, "dropped", pms=None, cms=None, **{"shadow.reason": "circuit_open"}) for i in range(5)
    ]
    path = write_spans(tmp_path / "s.jsonl", spans)
    html = tmp_path / "r.html"
    res = run_cli(path, "--html", html, "--require", "n >= 1")
    assert "reasons: candidate_not_json 4 (mismatch), circuit_open 5 (dropped)" in res.stdout
    assert "error types: ConnectionRefusedError 3" in res.stdout
    page = html.read_text()
    table = page.split('<table class="why">')[1].split("</table>")[0]
    rows = re.findall(r"<tr>(.*?)</tr>", table.split("<tbody>")[1])
    cells = [re.findall(r"<td>(.*?)</td>", row) for row in rows]
    assert ["mismatch", "reason", "candidate_not_json", "4"] in cells
    assert ["dropped", "reason", "circuit_open", "5"] in cells
    assert ["error / timeout", "error type", "ConnectionRefusedError", "3"] in cells
    _, rep = json_report(path, "--require", "n >= 1")
    g = rep["targets"][0]
    assert g["reasons"] == {"candidate_not_json": 4, "circuit_open": 5}  # unchanged key
    assert g["reasons_by_outcome"] == {"dropped": {"circuit_open": 5}, "mismatch": {"candidate_not_json": 4}}


# --- item 11: usage line, README command and sample output ----------------------------------------


def test_usage_names_the_command_as_it_was_run() -> None:
    script = Path(sys.executable).parent / "shadow-middleware"
    res = subprocess.run([str(script), "report", "--help"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and res.stdout.startswith("usage: shadow-middleware report ")
    res = subprocess.run(
        [sys.executable, "-m", "shadow_middleware", "report", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert res.returncode == 0 and res.stdout.startswith("usage: python -m shadow_middleware report ")


def test_readme_command_and_its_sample_output_agree() -> None:
    section = report_section()
    command = section.split("```sh\n")[1].split("```")[0]
    sample = section.split("```text\n")[1].split("```")[0]
    rules = re.findall(r'--require "([^"]+)"', command)
    assert rules
    shown = re.findall(r"^    (?:PASS|FAIL|N/A|SKIP)\s+(.+?)   \(", sample, flags=re.M)
    shown = [rule for rule in shown if not rule.endswith(" (default)")]  # settings the command left alone
    assert shown == rules, (shown, rules)
    assert "verdict: " in sample
