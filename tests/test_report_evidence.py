"""``shadow-middleware report``: no verdict without evidence (issue 17, the report's side).

* a compared field absent from both answers never reads as agreement (item 1);
* rules of one's own keep the minimum sample (item 2);
* the production x candidate status table, and production's own failures kept out of agreement (item 3);
* groups that can carry no label, ``--route`` / ``--target`` (item 4);
* the gaps of the ground-truth join (item 5);
* the default latency rule on the measured round trip, impossible Server-Timing discarded (item 6);
* lines that are not OTLP between the spans (item 12), and the small ones (item 13).

Span files are written with the helpers of ``tests/test_report.py``.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any

import pytest

from shadow_middleware.report.cli import MISSING_EXTRA
from shadow_middleware.report.policy import DEFAULT_MIN_LABELLED, DEFAULT_MIN_SAMPLES

from .test_report import _labels_csv, line_of, run_cli, span, write_spans

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text()
SERVER_MS = "shadow.candidate.server_duration_ms"


def json_report(*args: str | Path) -> tuple[int, dict[str, Any]]:
    res = run_cli(*args, "--format", "json")
    assert res.returncode in (0, 1, 2) and res.stdout, res.stderr
    return res.returncode, json.loads(res.stdout)


def statuses(p: int, c: int) -> dict[str, int]:
    return {"shadow.primary.status_code": p, "shadow.candidate.status_code": c}


# --- item 1: a compared field missing from both answers ------------------------------------------


@pytest.mark.parametrize("outcome", ["mismatch", "skipped", "match"])
def test_a_missing_compared_field_is_never_promoted_and_is_named(tmp_path: Path, outcome: str) -> None:
    """150 exchanges whose compared field (a typo) is absent from both answers: whatever outcome the
    runtime gives them, the report does not promote, exits 2 and names the field."""
    missing = {"shadow.reason": "field_missing", "shadow.missing_fields": "/churn_probabilty"}
    spans = [span(i, outcome, **statuses(200, 200), **missing) for i in range(150)]
    path = write_spans(tmp_path / "s.jsonl", spans)
    res = run_cli(path)
    assert res.returncode == 2, res.stdout
    assert "verdict: INSUFFICIENT" in res.stdout
    assert "/churn_probabilty" in res.stdout and "compare.fields" in res.stdout
    code, rep = json_report(path)
    g = rep["targets"][0]
    assert code == 2 and g["verdict"] == "insufficient"
    assert g["missing_fields"] == ["/churn_probabilty"] and g["field_missing"] == 150
    assert g["agreement"] is None  # no evidence of agreement either way
    # not even with a lenient rule of one's own
    code, rep = json_report(path, "--require", "error_rate <= 1", "--require", "min_samples = 0")
    assert code == 2 and "/churn_probabilty" in rep["targets"][0]["verdict_reason"]


def test_some_answers_missing_a_field_keep_the_rest_but_never_promote(tmp_path: Path) -> None:
    missing = {"shadow.reason": "field_missing", "shadow.missing_fields": "/a,/b"}
    spans = [span(i, "match") for i in range(300)]
    spans += [span(1000 + i, "mismatch", **missing) for i in range(10)]
    code, rep = json_report(write_spans(tmp_path / "s.jsonl", spans))
    g = rep["targets"][0]
    assert code == 2 and g["compared"] == 300 and g["agreement"] == 1.0
    assert g["missing_fields"] == ["/a", "/b"] and g["reasons"]["field_missing"] == 10
    assert all(r["status"] in ("PASS", "SKIP") for r in g["rules"])  # all else is fine: still not promote


def test_old_spans_that_all_match_with_no_recorded_value_get_a_note(tmp_path: Path) -> None:
    """Spans of a runtime before ``field_missing``: a typo made every exchange ``match`` and recorded no
    compared value. The report cannot tell that from a whole-document comparison, so it says so."""
    code, rep = json_report(write_spans(tmp_path / "old.jsonl", [span(i) for i in range(150)]))
    assert any("check it for a typo" in note for note in rep["targets"][0]["notes"])
    code, rep = json_report(write_spans(tmp_path / "new.jsonl", [span(i, p=0.3, c=0.3) for i in range(150)]))
    assert code == 0 and not rep["targets"][0]["notes"]


# --- item 2: rules of one's own keep the minimum sample ------------------------------------------


def test_rules_of_your_own_keep_the_minimum_samples(tmp_path: Path) -> None:
    path = write_spans(tmp_path / "s.jsonl", [span(i) for i in range(3)])
    res = run_cli(path, "--require", "agreement >= 0.95")
    assert res.returncode == 2, res.stdout
    assert f"INSUFFICIENT min_samples = {DEFAULT_MIN_SAMPLES}" in res.stdout
    policy = tmp_path / "p.toml"
    policy.write_text('require = ["agreement >= 0.95"]\n')
    code, rep = json_report(path, "--policy", policy)
    assert code == 2 and rep["policy"]["source"] == "user"
    assert rep["policy"]["min_samples"] == DEFAULT_MIN_SAMPLES
    # set explicitly, the user's value holds
    code, rep = json_report(path, "--require", "agreement >= 0.95", "--require", "min_samples = 3")
    assert code == 0 and rep["policy"]["min_samples"] == 3


def test_rules_of_your_own_keep_the_minimum_labelled(tmp_path: Path) -> None:
    spans = [span(i, p=0.2 + 0.6 * (i % 2), c=0.2 + 0.6 * (i % 2), cid=f"R{i}") for i in range(150)]
    labels = _labels_csv(tmp_path / "l.csv", {f"R{i}": i % 2 for i in range(10)})
    path = write_spans(tmp_path / "s.jsonl", spans)
    code, rep = json_report(path, "--ground-truth", labels, "--require", "candidate.auc >= primary.auc")
    assert code == 2 and rep["policy"]["min_labelled"] == DEFAULT_MIN_LABELLED
    assert "min_labelled" in rep["targets"][0]["verdict_reason"]


def test_readme_says_the_minimum_samples_hold_under_rules_of_your_own() -> None:
    section = README[README.index("## Deciding: the report") :]
    assert re.search(r"`min_samples`.{0,200}hold.{0,200}rules of your own", section, re.S), section[:3000]


# --- item 3: statuses ------------------------------------------------------------------------------


def test_status_table_in_text_json_and_html(tmp_path: Path) -> None:
    """A candidate answering 404 to everything: the status table shows it, the reason is counted."""
    spans = [
        span(i, "mismatch", **statuses(200, 404), **{"shadow.reason": "status_mismatch"}) for i in range(150)
    ]
    path = write_spans(tmp_path / "s.jsonl", spans)
    html = tmp_path / "r.html"
    res = run_cli(path, "--html", html)
    assert res.returncode == 1
    table = res.stdout[res.stdout.index("status: production \\ candidate") :].splitlines()
    assert table[0].split()[-1] == "404"
    assert table[1].split() == ["200", "150"]
    assert "status_mismatch 150 (mismatch)" in res.stdout
    _, rep = json_report(path)
    assert rep["targets"][0]["statuses"] == [{"primary": 200, "candidate": 404, "n": 150}]
    page = html.read_text()
    assert "production \\ candidate" in page and ">404<" in page and ">150<" in page


def test_production_failures_are_not_held_against_an_identical_candidate(tmp_path: Path) -> None:
    """An identical model: where production itself answered 503 or 422 and the candidate 200, the
    exchange is no evidence of disagreement; it is kept out of agreement and shown."""
    spans = [span(i, "match", **statuses(200, 200)) for i in range(300)]
    spans += [
        span(
            1000 + i,
            "mismatch",
            **statuses(503 if i % 2 else 422, 200),
            **{"shadow.reason": "status_mismatch"},
        )
        for i in range(40)
    ]
    path = write_spans(tmp_path / "s.jsonl", spans)
    code, rep = json_report(path)
    g = rep["targets"][0]
    assert code == 0, g["rules"]
    assert g["compared"] == 300 and g["agreement"] == 1.0 and g["production_failed"] == 40
    assert {(s["primary"], s["candidate"]): s["n"] for s in g["statuses"]} == {
        (200, 200): 300,
        (503, 200): 20,
        (422, 200): 20,
    }
    text = run_cli(path).stdout
    assert "production itself failed (status >= 400) in 40 exchange(s)" in text
    # the candidate timing out where production failed too is no evidence against it either
    both = [*spans, *(span(3000 + i, "timeout", **statuses(503, 200)) for i in range(10))]
    code, rep = json_report(write_spans(tmp_path / "both.jsonl", both))
    g = rep["targets"][0]
    assert code == 0 and g["timeout_rate"] == 0.0 and g["production_failed"] == 50
    # where production answered, a candidate that answers otherwise still fails agreement
    spans += [span(2000 + i, "mismatch", **statuses(200, 404)) for i in range(40)]
    code, rep = json_report(write_spans(tmp_path / "t.jsonl", spans))
    assert code == 1 and rep["targets"][0]["compared"] == 340


# --- item 4: groups without labels, --route and --target ------------------------------------------


def two_routes(tmp_path: Path) -> tuple[Path, Path]:
    rng = random.Random(3)
    spans, labels = [], {}
    for i in range(300):
        y = int(rng.random() < 0.4)
        score = round(min(1.0, max(0.0, 0.4 * y + rng.gauss(0.3, 0.15))), 3)
        spans.append(span(i, p=score, c=score, cid=f"R{i}", route="POST /predict"))
        labels[f"R{i}"] = y
    # a batch route: no correlation id can be read from it
    spans += [span(1000 + i, p=0.3, c=0.3, route="POST /batch") for i in range(200)]
    return write_spans(tmp_path / "s.jsonl", spans), _labels_csv(tmp_path / "l.csv", labels)


def test_groups_without_possible_labels_are_judged_without_them(tmp_path: Path) -> None:
    path, labels = two_routes(tmp_path)
    code, rep = json_report(path, "--ground-truth", labels)
    assert code == 0, [(g["route"], g["verdict"], g["verdict_reason"]) for g in rep["targets"]]
    batch = next(g for g in rep["targets"] if g["route"] == "POST /batch")
    assert batch["labels_possible"] is False and batch["verdict"] == "promote"
    assert any("no label can join" in note for note in batch["notes"])
    rules = {r["rule"] for r in batch["rules"]}
    assert "agreement >= 0.95" in rules and "auc_diff_high >= 0" not in rules  # the no-label defaults
    res = run_cli(path, "--ground-truth", labels)
    assert "judged by the rules that need no labels" in res.stdout
    # a rule of one's own that needs labels is skipped there, not "not enough data"
    code, rep = json_report(path, "--ground-truth", labels, "--require", "candidate.auc >= primary.auc")
    batch = next(g for g in rep["targets"] if g["route"] == "POST /batch")
    assert code == 0 and batch["rules"][0]["status"] == "SKIP"


def test_route_and_target_filters(tmp_path: Path) -> None:
    path, _ = two_routes(tmp_path)
    code, rep = json_report(path, "--route", "POST /batch")
    assert code == 0 and [g["route"] for g in rep["targets"]] == ["POST /batch"]
    _, rep = json_report(path, "--route", "POST /batch", "--route", "POST /predict", "--target", "cand")
    assert len(rep["targets"]) == 2
    res = run_cli(path, "--route", "POST /predit")
    assert res.returncode == 2 and not res.stdout
    assert "--route 'POST /predit'" in res.stderr and "'POST /batch', 'POST /predict'" in res.stderr
    res = run_cli(path, "--target", "v3")
    assert res.returncode == 2 and "--target 'v3'" in res.stderr and "'cand'" in res.stderr


# --- item 5: the ground-truth join's gaps --------------------------------------------------------


def test_ground_truth_join_gaps_are_counted_and_shown(tmp_path: Path) -> None:
    rng = random.Random(9)
    spans, labels = [], {}
    for i in range(243):
        y = int(rng.random() < 0.4)
        score = round(min(1.0, max(0.0, 0.4 * y + rng.gauss(0.3, 0.15))), 3)
        spans.append(span(i, p=score, c=score, cid=f"R{i}"))
        labels[f"R{i}"] = y
    # labelled exchanges whose candidate failed: no candidate score
    spans += [span(1000 + i, "error", p=0.5, cid=f"E{i}", cms=None) for i in range(30)]
    spans += [span(2000 + i, "timeout", p=0.5, cid=f"T{i}", cms=None) for i in range(9)]
    labels.update({f"E{i}": 1 for i in range(30)} | {f"T{i}": 0 for i in range(9)})
    labels.update({f"GONE{i}": 1 for i in range(7)})  # labels with no exchange
    lpath = tmp_path / "l.csv"
    rows = "".join(f"{k},{v}\n" for k, v in labels.items())
    # R0..R4 given both labels (conflicting), R5 twice the same
    rows += "".join(f"R{i},{1 - labels[f'R{i}']}\n" for i in range(5)) + f"R5,{labels['R5']}\n"
    lpath.write_text("correlation_id,label\n" + rows)
    _, rep = json_report(write_spans(tmp_path / "s.jsonl", spans), "--ground-truth", lpath)
    join = rep["label_join"]
    assert join == {
        "labels": len(labels) - 5,
        "without_exchange": 7,
        "conflicting_ids": 5,
        "duplicate_rows": 6,
    }
    gt = rep["targets"][0]["ground_truth"]
    assert gt["n"] == 243 - 5  # conflicting ids are out of the quality metrics
    assert gt["labelled_without_scores"] == 39
    assert gt["labelled_without_scores_by_outcome"] == {"error": 30, "timeout": 9}
    assert gt["conflicting_label_exchanges"] == 5
    text = run_cli(tmp_path / "s.jsonl", "--ground-truth", lpath).stdout
    assert "39 labelled exchange(s) without both scores (error 30, timeout 9)" in text
    assert "7 with no exchange in the spans; 5 id(s) with conflicting labels dropped" in text


# --- item 6: latency on the measured round trip -----------------------------------------------------


@pytest.mark.parametrize("server_timing", [0.05, None])
def test_a_slow_candidate_is_not_promoted_with_or_without_server_timing(
    tmp_path: Path, server_timing: float | None
) -> None:
    """A candidate sleeping 400 ms per answer against a production of ~1 ms: whatever it claims in
    Server-Timing, the default policy does not promote it."""
    extra = {SERVER_MS: server_timing} if server_timing is not None else {}
    spans = [span(i, pms=1.07, cms=400.0 + i % 13, **extra) for i in range(300)]
    path = write_spans(tmp_path / "s.jsonl", spans)
    code, rep = json_report(path)
    assert code == 1, rep["targets"][0]["rules"]
    rule = next(r for r in rep["targets"][0]["rules"] if r["rule"].startswith("candidate.p95_ms"))
    assert rule["status"] == "FAIL"


def test_server_timing_longer_than_the_round_trip_is_discarded_and_shown(tmp_path: Path) -> None:
    spans = [span(i, pms=1.0, cms=5.0, **{SERVER_MS: 0.8}) for i in range(200)]
    spans += [span(1000 + i, pms=1.0, cms=5.0, **{SERVER_MS: 50.0}) for i in range(30)]
    path = write_spans(tmp_path / "s.jsonl", spans)
    code, rep = json_report(path)
    c = rep["targets"][0]["candidate"]
    assert c["server_latency_n"] == 200 and c["server_latency_discarded"] == 30
    assert c["server_p99_ms"] == pytest.approx(0.8)
    assert code == 0
    text = run_cli(path).stdout
    assert "30 Server-Timing value(s) longer than the measured round trip" in text


# --- item 12: lines that are not OTLP ----------------------------------------------------------------


def test_access_log_lines_between_spans_are_skipped_counted_and_shown(tmp_path: Path) -> None:
    path = tmp_path / "stdout.log"
    with open(path, "w") as f:
        f.write("INFO:     Started server process [4242]\nINFO:     Waiting for application startup.\n")
        for k in range(30):  # more than the 20 first lines before the first span
            f.write(f'INFO:     127.0.0.1:5{k:04d} - "POST /predict HTTP/1.1" 200 OK\n')
        for k in range(0, 150, 50):
            f.write(line_of([span(i) for i in range(k, k + 50)]) + "\n")
            f.write('INFO:     127.0.0.1:6000 - "POST /predict HTTP/1.1" 200 OK \x1b[31mred\x1b[0m\n')
    res = run_cli(path, "--format", "json")
    assert res.returncode == 0, res.stderr
    rep = json.loads(res.stdout)
    assert rep["skipped_lines"] == 35 and rep["targets"][0]["compared"] == 150
    shown = [ln for ln in res.stderr.splitlines() if "skipped line that is not OTLP" in ln]
    assert len(shown) == 5 and shown[0].startswith(f"{path}:1: ") and "Started server process" in shown[0]
    assert (
        "... and 30 more; 35 line(s) that are not OTLP skipped in all" in res.stderr
        and "\x1b" not in res.stderr
    )
    # a file with no OTLP line at all is still refused, in one line
    log = tmp_path / "only.log"
    log.write_text("".join(f"INFO: line {k}\n" for k in range(50)))
    res = run_cli(log)
    assert res.returncode == 2 and len(res.stderr.splitlines()) == 1
    assert "expected OTLP JSON lines" in res.stderr


# --- item 13: the small ones -------------------------------------------------------------------------


def test_install_line_says_how_from_a_checkout() -> None:
    assert "pip install -e '.[report]'" in MISSING_EXTRA
    section = README[README.index("## Deciding: the report") :]
    assert "pip install -e '.[report]'" in section[:2000]


def test_a_directory_is_named_as_such(tmp_path: Path) -> None:
    res = run_cli(tmp_path)
    assert res.returncode == 2 and "is a directory" in res.stderr and "no such file" not in res.stderr


def test_trace_url_placeholder_message_is_a_sentence(tmp_path: Path) -> None:
    path = write_spans(tmp_path / "s.jsonl", [span(1)])
    res = run_cli(path, "--trace-url", "https://t.example/{trace_id}/{span_id}")
    assert res.returncode == 2
    assert "--trace-url must have no placeholder other than {trace_id}" in res.stderr


# --- item 7: missing values in a numeric reference column -------------------------------------------


def test_na_in_a_numeric_reference_column_is_missing_not_categorical(tmp_path: Path) -> None:
    rng = random.Random(21)
    values = [round(rng.gauss(50, 10), 2) for _ in range(2000)]
    clean = tmp_path / "clean.csv"
    clean.write_text("x,y\n" + "".join(f"{v},k\n" for v in values))
    tokens = ["NA", "nan", "null", "None", "?", "", " n/a "]
    dirty = tmp_path / "dirty.csv"
    rows = [str(v) for v in values]
    for k, token in enumerate(tokens):  # 7 missing values among 2007 rows: 0.35 %
        rows.insert(100 * k + 5, token)
    dirty.write_text("x,y\n" + "".join(f"{r},k\n" for r in rows))
    spans = [span(i, **{"shadow.request.body.x": round(rng.gauss(51, 10), 2)}) for i in range(400)]
    path = write_spans(tmp_path / "s.jsonl", spans)
    _, want = json_report(path, "--reference", clean, "--require", "n >= 0")
    _, got = json_report(path, "--reference", dirty, "--require", "n >= 0")
    f_want = want["targets"][0]["drift"]["features"]["x"]
    f_got = got["targets"][0]["drift"]["features"]["x"]
    assert f_got["kind"] == "numeric" and f_got["reference_missing"] == len(tokens)
    for k in ("n", "reference_n", "psi", "ks", "ks_p"):
        assert f_got[k] == f_want[k], k
    text = run_cli(path, "--reference", dirty, "--require", "n >= 0").stdout
    assert re.search(r"ref\. missing.*\n\s+x\s+400\s.*\s7$", text, re.M), text


def test_a_json_array_reference_names_the_formats(tmp_path: Path) -> None:
    ref = tmp_path / "ref.json"
    ref.write_text(json.dumps([{"x": 1}, {"x": 2}], indent=2))
    path = write_spans(tmp_path / "s.jsonl", [span(1)])
    res = run_cli(path, "--reference", ref)
    assert res.returncode == 2
    assert "JSON array" in res.stderr and "JSON lines" in res.stderr and "no rows" not in res.stderr


# --- item 13: the HTML -------------------------------------------------------------------------------


def test_html_omits_what_an_unlabelled_group_cannot_show(tmp_path: Path) -> None:
    """With --ground-truth but no label joining: no n/a quality table, no confusion matrices of zeros,
    no "(bootstrap)" label when DeLong is the method."""
    spans = [span(i, p=0.3, c=0.3, cid=f"R{i}") for i in range(200)]
    labels = _labels_csv(tmp_path / "l.csv", {"other1": 1, "other2": 0})
    html = tmp_path / "r.html"
    res = run_cli(write_spans(tmp_path / "s.jsonl", spans), "--ground-truth", labels, "--html", html)
    assert res.returncode in (0, 1, 2)
    page = html.read_text()
    assert (
        '<table class="confusion-matrix"' not in page and "(bootstrap)" not in page and "McNemar" not in page
    )
    assert "no request with both scores and a label" in page


def _svg(page: str, css_class: str) -> str:
    start = page.index(f'<svg class="plot {css_class}"')
    return page[start : page.index("</svg>", start)]


def test_html_latency_legend_is_clear_of_the_curves_and_a_single_drift_point_is_no_plot(
    tmp_path: Path,
) -> None:
    from shadow_middleware.report.html import MT, H

    rng = random.Random(4)
    ref = tmp_path / "ref.csv"
    ref.write_text("x\n" + "".join(f"{rng.gauss(0, 1):.3f}\n" for _ in range(500)))
    # every span in the same millisecond: one time bucket, one point of drift over time
    spans = [
        span(i, start_ns=1_700_000_000_000_000_000, **{"shadow.request.body.x": rng.gauss(0, 1)})
        for i in range(300)
    ]
    html = tmp_path / "r.html"
    run_cli(
        write_spans(tmp_path / "s.jsonl", spans), "--reference", ref, "--html", html, "--require", "n >= 0"
    )
    page = html.read_text()
    assert "Input drift against the reference" in page
    assert '<svg class="plot drift"' not in page  # one dot is not a curve over time
    legend = re.search(r'<rect class="legend" x="[\d.]+" y="([\d.]+)"', _svg(page, "latency"))
    assert legend is not None
    assert float(legend.group(1)) > MT + (H - MT) / 3  # not at the top, where the CDFs climb
