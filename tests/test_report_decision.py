"""Issue 14 in the report: drift (KS, PSI), DeLong's test, the disagreements, the scale machinery.

Every figure is checked against an independent computation: scipy's ``ks_2samp`` / ``kstwo``, a
straightforward O(n^2) DeLong written here, scikit-learn's ``roc_auc_score``, numpy histograms.
"""

from __future__ import annotations

import csv
import json
import math
import os
import pty
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import stats as sps
from sklearn import metrics as skm

from shadow_middleware.report import stats
from shadow_middleware.report.aggregate import ReportOptions, Timeline, aggregate
from shadow_middleware.report.build import build_report
from shadow_middleware.report.cli import trace_url_problem
from shadow_middleware.report.drift import Feature, LiveFeature, load_reference
from shadow_middleware.report.kstest import ks_2samp_pvalue, kstwo_sf
from shadow_middleware.report.policy import Policy

from .test_report import REPO, _labels_csv, run_cli, span, write_spans

# --- Kolmogorov-Smirnov -------------------------------------------------------------------------


@pytest.mark.parametrize("n", [3, 20, 140, 141, 1000, 20_000, 100_001])
def test_kstwo_sf_matches_scipy(n: int) -> None:
    for d in [*np.linspace(0.001, 0.98, 50), 0.6 / n, 1.0 / n, 2.0 / n]:
        mine, ref = kstwo_sf(float(d), n), float(sps.kstwo.sf(d, n))
        assert mine == pytest.approx(ref, rel=1e-6, abs=1e-12), (n, d)


@pytest.mark.parametrize(
    ("n1", "n2"),
    [(8, 8), (7, 13), (300, 450), (1000, 2000), (2500, 2500), (50, 20_000), (12_000, 300), (30_000, 20_000)],
)
@pytest.mark.parametrize("shift", [0.0, 0.1, 0.4])
def test_ks_2samp_pvalue_matches_scipy_auto(n1: int, n2: int, shift: float) -> None:
    """Exact below 10,000 values a side, kstwo beyond: scipy's method='auto', two-sided."""
    rng = np.random.default_rng(n1 * 7 + n2)
    x = rng.normal(0, 1, n1)
    y = np.round(rng.normal(shift, 1, n2), 2)  # ties on one side
    ref = sps.ks_2samp(x, y)
    assert ks_2samp_pvalue(float(ref.statistic), n1, n2) == pytest.approx(ref.pvalue, rel=1e-6, abs=1e-14)


def _live(feature: Feature, values: list[Any]) -> LiveFeature:
    live = LiveFeature(feature, Timeline(feature.bin_counts.size))
    for i, v in enumerate(values):
        live.add(v, 1_700_000_000_000_000_000 + i * 1_000_000_000)
    live.flush()
    return live


def _psi_by_hand(reference: np.ndarray, live: np.ndarray) -> float:
    """Independent PSI: numpy histogram over the reference's decile edges, proportions floored."""
    edges = np.unique(np.percentile(reference, np.arange(10, 100, 10)))
    bounds = np.concatenate(([-np.inf], edges, [np.inf]))  # bins [a, b): a value on an edge goes above
    e, _ = np.histogram(reference, bins=bounds)
    a, _ = np.histogram(live, bins=bounds)
    e = np.maximum(e / e.sum(), 1e-4)
    a = np.maximum(a / a.sum(), 1e-4)
    return float(np.sum((a - e) * np.log(a / e)))


@pytest.mark.parametrize("discrete", [False, True])
def test_drift_ks_is_exact_from_counts_and_psi_matches_numpy(discrete: bool) -> None:
    rng = np.random.default_rng(3)
    ref = rng.normal(50, 10, 3000)
    live = rng.normal(53, 11, 25_000)  # more live values than the batch: several flushes
    if discrete:
        ref, live = np.round(ref / 5), np.round(live / 5)
    feature = Feature.from_values("x", ref.tolist())
    got = _live(feature, [int(v) if discrete and i % 2 else float(v) for i, v in enumerate(live)]).result()
    want = sps.ks_2samp(live, ref)
    assert got["n"] == live.size and got["kind"] == "numeric"
    assert got["ks"] == pytest.approx(want.statistic, abs=1e-12)
    assert got["ks_p"] == pytest.approx(want.pvalue, rel=1e-6, abs=1e-300)
    assert got["psi"] == pytest.approx(_psi_by_hand(ref, live), rel=1e-9)


def test_drift_same_distribution_is_quiet_and_wrong_kinds_are_counted_apart() -> None:
    rng = np.random.default_rng(5)
    ref = rng.uniform(0, 1, 5000)
    feature = Feature.from_values("x", [str(v) for v in ref])  # CSV cells are strings
    assert feature.numeric
    values: list[Any] = [*rng.uniform(0, 1, 5000).tolist(), "oops", True, None, float("nan")]
    got = _live(feature, values).result()
    assert got["n"] == 5000 and got["wrong_kind"] == 4
    assert got["psi"] < 0.01 and got["ks_p"] > 0.01


def test_categorical_psi_by_hand() -> None:
    ref = ["a"] * 50 + ["b"] * 30 + ["c"] * 20
    feature = Feature.from_values("plan", ref)
    assert not feature.numeric and feature.labels == ["a", "b", "c", "(other)"]
    live = _live(feature, ["a"] * 20 + ["b"] * 40 + ["z"] * 40).result()
    e = np.array([0.5, 0.3, 0.2, 1e-4])
    a = np.array([0.2, 0.4, 1e-4, 0.4])  # "c" never seen live, "z" unknown -> (other)
    assert live["psi"] == pytest.approx(float(np.sum((a - e) * np.log(a / e))))
    assert live["ks"] is None and live["ks_p"] is None
    booleans = Feature.from_values("fiber", ["true", "false", "true"])
    assert _live(booleans, [True, False, True]).result()["psi"] == pytest.approx(0.0)


def test_load_reference_csv_and_jsonl(tmp_path: Path) -> None:
    c = tmp_path / "ref.csv"
    c.write_text("tenure,plan,empty\n1,a,\n2,b,\n3.5,a,\n")
    ref = load_reference(c)
    assert ref.rows == 3 and set(ref.features) == {"tenure", "plan"}
    assert ref.features["tenure"].numeric and ref.features["tenure"].n == 3
    j = tmp_path / "ref.jsonl"
    j.write_text('{"tenure": 1, "plan": "a", "fiber": true}\n{"tenure": 2, "nested": {"x": 1}}\nnot json\n')
    errors: list[tuple[str, int, str]] = []
    ref = load_reference(j, lambda p, n, m: errors.append((p, n, m)))
    assert ref.rows == 2 and not ref.features["fiber"].numeric and "nested" not in ref.features
    assert errors and errors[0][1] == 3


# --- DeLong -----------------------------------------------------------------------------------


def _delong_reference(p: np.ndarray, c: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """DeLong, DeLong & Clarke-Pearson (1988) the straightforward way: the O(m n) kernel matrix
    psi(X_i, Y_j) gives the structural components V10, V01. Returns (difference, variance)."""
    v10, v01, aucs = [], [], []
    for s in (p, c):
        x, z = s[y == 1], s[y == 0]
        kernel = (x[:, None] > z[None, :]).astype(float) + 0.5 * (x[:, None] == z[None, :])
        aucs.append(kernel.mean())
        v10.append(kernel.mean(axis=1))
        v01.append(kernel.mean(axis=0))
    m, n = len(v10[0]), len(v01[0])
    s10, s01 = np.cov(np.array(v10)), np.cov(np.array(v01))
    var = (s10[0, 0] + s10[1, 1] - 2 * s10[0, 1]) / m + (s01[0, 0] + s01[1, 1] - 2 * s01[0, 1]) / n
    return aucs[1] - aucs[0], var


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_delong_matches_the_quadratic_reference_and_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = (rng.random(600) < 0.35).astype(int)
    p = np.round(0.6 * y + rng.normal(0, 1, 600), 1)  # heavy ties
    c = np.round(1.0 * y + rng.normal(0, 1, 600), 2)
    got = stats.delong(p, c, y)
    assert got is not None
    diff, var = _delong_reference(p, c, y)
    assert got.auc_primary == pytest.approx(skm.roc_auc_score(y, p), abs=1e-12)
    assert got.auc_candidate == pytest.approx(skm.roc_auc_score(y, c), abs=1e-12)
    assert got.estimate == pytest.approx(diff, abs=1e-12)
    assert got.se == pytest.approx(math.sqrt(var), rel=1e-9)
    z = diff / math.sqrt(var)
    assert got.p == pytest.approx(2 * sps.norm.sf(abs(z)), rel=1e-9)
    assert (got.low, got.high) == pytest.approx(
        (diff - 1.959964 * math.sqrt(var), diff + 1.959964 * math.sqrt(var))
    )


def test_delong_degenerate_cases() -> None:
    y = [0, 0, 1, 1, 0, 1]
    s = [0.1, 0.4, 0.35, 0.8, 0.2, 0.9]
    same = stats.delong(s, s, y)
    assert same is not None and same.estimate == 0 and same.p == 1.0 and same.low == same.high == 0
    assert stats.delong(s, s, [1, 0, 0, 0, 0, 0]) is None  # one positive: no covariance
    assert stats.midranks([3, 1, 3, 2]).tolist() == sps.rankdata([3, 1, 3, 2]).tolist()


def test_reservoir_algorithm_l_is_uniform() -> None:
    """Each of 1,000 positions ends up in a 100-item reservoir about 10 % of the time."""
    hits = np.zeros(1000)
    for seed in range(400):
        r: stats.Reservoir[int] = stats.Reservoir(100, seed=seed)
        for i in range(1000):
            r.add(i)
        assert len(r.items) == 100 and len(set(r.items)) == 100
        hits[r.items] += 1
    chi2 = float(((hits - 40) ** 2 / 40).sum())
    assert sps.chi2.sf(chi2, 999) > 1e-3, chi2
    assert hits[:100].mean() == pytest.approx(40, rel=0.15) and hits[900:].mean() == pytest.approx(
        40, rel=0.15
    )


def test_timeline_add_many_equals_adding_one_by_one() -> None:
    rng = np.random.default_rng(2)
    starts = np.sort(rng.integers(0, 7 * 86_400 * 10**9, 5000))
    idx = rng.integers(0, 4, 5000)
    one, many = Timeline(4), Timeline(4)
    for t, i in zip(starts.tolist(), idx.tolist(), strict=True):
        one.add(t, i)
    for k in range(0, 5000, 700):
        many.add_many(starts[k : k + 700], idx[k : k + 700])
    assert (one.width_ns, one.buckets) == (many.width_ns, many.buckets)


# --- through the CLI --------------------------------------------------------------------------


def _scored(n: int, seed: int, drift: float = 0.0) -> tuple[list[dict[str, Any]], dict[str, int]]:
    rng = random.Random(seed)
    spans, labels = [], {}
    for i in range(n):
        y = int(rng.random() < 0.35)
        p = min(1.0, max(0.0, 0.3 * y + rng.gauss(0.35, 0.2)))
        c = min(1.0, max(0.0, 0.45 * y + rng.gauss(0.3, 0.18)))
        outcome = "match" if (p >= 0.5) == (c >= 0.5) else "mismatch"
        extra = {
            "shadow.request.body.tenure": rng.randint(0, 72),
            "shadow.request.body.charges": round(rng.gauss(70 + drift, 10), 2),
            "shadow.request.body.plan": rng.choice(["basic", "pro"]),
            "shadow.diff.paths": ["/score"] if outcome == "mismatch" else [],
        }
        spans.append(span(i, outcome, p=p, c=c, cid=f"R{i}", **extra))
        labels[f"R{i}"] = y
    return spans, labels


def test_cli_json_has_auc_diff_drift_and_disagreements(tmp_path: Path) -> None:
    spans, labels = _scored(800, 11, drift=8.0)
    path = write_spans(tmp_path / "s.jsonl", spans)
    ref = tmp_path / "ref.csv"
    rng = random.Random(12)
    with open(ref, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["tenure", "charges", "plan", "unused"])
        for _ in range(1500):
            w.writerow([rng.randint(0, 72), round(rng.gauss(70, 10), 2), rng.choice(["basic", "pro"]), 1])
    res = run_cli(
        path,
        "--ground-truth",
        _labels_csv(tmp_path / "l.csv", labels),
        "--reference",
        ref,
        "--top",
        "7",
        "--format",
        "json",
        "--require",
        "drift.max_psi <= 0.1",
    )
    assert res.returncode == 1, res.stderr  # charges drifted by 0.8 sd
    assert "reference columns never recorded live: unused" in res.stderr
    g = json.loads(res.stdout)["targets"][0]
    ps = np.array([s_["attributes"][5]["value"]["doubleValue"] for s_ in spans])  # primary score
    # independent: the spans' own values
    attrs = [{a["key"]: next(iter(a["value"].values())) for a in s_["attributes"]} for s_ in spans]
    p = np.array([a["shadow.primary.body.score"] for a in attrs])
    c = np.array([a["shadow.candidate.body.score"] for a in attrs])
    y = np.array([labels[a["shadow.correlation_id"]] for a in attrs])
    assert ps.size == 800
    diff, var = _delong_reference(p, c, y)
    assert set(g["auc_diff"]) >= {"estimate", "ci", "p"} and g["auc_diff"]["method"] == "delong"
    assert g["auc_diff"]["estimate"] == pytest.approx(diff, abs=1e-12)
    assert g["auc_diff"]["ci"][1] - g["auc_diff"]["ci"][0] == pytest.approx(2 * 1.959964 * math.sqrt(var))
    charges = np.array([a["shadow.request.body.charges"] for a in attrs])
    with open(ref) as f:
        ref_rows = list(csv.DictReader(f))
    ref_charges = np.array([float(r["charges"]) for r in ref_rows])
    feat = g["drift"]["features"]["charges"]
    want = sps.ks_2samp(charges, ref_charges)
    assert set(feat) >= {"n", "psi", "ks", "ks_p"} and feat["n"] == 800
    assert feat["ks"] == pytest.approx(want.statistic) and feat["ks_p"] == pytest.approx(
        want.pvalue, rel=1e-6
    )
    assert feat["psi"] == pytest.approx(_psi_by_hand(ref_charges, charges))
    assert g["drift"]["max_psi"] == feat["psi"] > 0.1
    assert g["drift"]["features"]["tenure"]["psi"] < 0.1 and g["drift"]["features"]["plan"]["ks"] is None
    # score PSI: candidate against production, bins at production's deciles
    assert g["drift"]["scores"]["psi"] == pytest.approx(_psi_by_hand(p, c))
    # disagreements: the 7 largest |p - c|, largest first, with what identifies them
    order = sorted(range(800), key=lambda i: (-abs(p[i] - c[i]), i))[:7]
    got = g["disagreements"]
    assert [d["correlation_id"] for d in got] == [f"R{i}" for i in order]
    assert [d["abs_diff"] for d in got] == pytest.approx([abs(p[i] - c[i]) for i in order])
    assert got[0]["trace_id"] == f"{order[0]:032x}" and got[0]["primary"] == pytest.approx(p[order[0]])
    assert all(
        d["paths"] == (["/score"] if (p[i] >= 0.5) != (c[i] >= 0.5) else [])
        for d, i in zip(got, order, strict=True)
    )
    assert got[0]["trace_url"] is None


def test_auc_ci_bootstrap_option_and_default_rule_on_delong(tmp_path: Path) -> None:
    spans, labels = _scored(400, 21)
    path = write_spans(tmp_path / "s.jsonl", spans)
    gt = _labels_csv(tmp_path / "l.csv", labels)
    boot = run_cli(
        path, "--ground-truth", gt, "--auc-ci", "bootstrap", "--bootstrap", "200", "--format", "json"
    )
    g = json.loads(boot.stdout)["targets"][0]
    assert g["auc_diff"]["method"] == "bootstrap" and g["auc_diff"]["p"] is None
    text = run_cli(path, "--ground-truth", gt)
    assert "DeLong 95% CI" in text.stdout and "auc_diff_high >= 0" in text.stdout
    assert "PASS  auc_diff_high >= 0" in text.stdout  # the candidate is better: the rule reads DeLong's CI
    assert "largest disagreements (top 5 of 20" in text.stdout


def test_trace_url_is_validated_and_escaped(tmp_path: Path) -> None:
    assert trace_url_problem("https://tempo.example/trace/{trace_id}") is None
    assert trace_url_problem("http://jaeger:16686/trace/{trace_id}?x=1") is None
    for bad in (
        "https://tempo.example/trace/",
        "javascript:alert(1)//{trace_id}",
        "ftp://x/{trace_id}",
        "https:///{trace_id}",
        "https://x/{trace_id}/{span_id}",
        'https://x/{trace_id}"><script>',
        "https://x/ {trace_id}",
    ):
        assert trace_url_problem(bad) is not None, bad
    spans, _labels = _scored(60, 3)
    spans[0]["traceId"] = 'ab"<x>&'  # a hostile file: escaped in HTML, and not an OTLP trace id: no link
    path = write_spans(tmp_path / "s.jsonl", spans)
    html = tmp_path / "r.html"
    res = run_cli(
        path, "--html", html, "--trace-url", "https://tempo.example/trace/{trace_id}", *("--top", "60")
    )
    assert res.returncode in (0, 1, 2), res.stderr
    page = html.read_text()
    assert 'href="https://tempo.example/trace/00000000000000000000000000000001"' in page
    assert "https://tempo.example/trace/ab" not in page and 'ab"<x>' not in page
    assert "ab&quot;&lt;x&gt;&amp;" in page
    bad = run_cli(path, "--trace-url", "https://tempo.example/trace/")
    assert bad.returncode == 2 and "--trace-url must contain {trace_id}" in bad.stderr


def test_html_has_drift_confusion_disagreements_and_a_roc_legend_off_the_curves(tmp_path: Path) -> None:
    spans, labels = _scored(500, 8, drift=5.0)
    path = write_spans(tmp_path / "s.jsonl", spans)
    ref = tmp_path / "ref.jsonl"
    rng = random.Random(1)
    ref.write_text(
        "".join(
            json.dumps({"tenure": rng.randint(0, 72), "charges": rng.gauss(70, 10)}) + "\n"
            for _ in range(800)
        )
    )
    html = tmp_path / "r.html"
    res = run_cli(
        path, "--ground-truth", _labels_csv(tmp_path / "l.csv", labels), "--reference", ref, "--html", html
    )
    assert res.returncode in (0, 1), res.stderr
    page = html.read_text()
    assert page.count('class="confusion-matrix"') == 2 and "decided 1" in page
    assert 'class="plot drift"' in page and 'class="drift"' in page and ">charges<" in page
    assert 'class="disagreements"' in page and "<a href" not in page  # no --trace-url: no links
    roc = page[page.index('class="plot roc"') :]
    roc = roc[: roc.index("</svg>")]
    legend = roc[roc.index('class="legend"') :]
    x = float(legend.split('x="')[1].split('"')[0])
    y = float(legend.split('y="')[1].split('"')[0])
    assert x > 460 / 2 and y > 300 / 2  # bottom right, below the diagonal where no ROC curve goes


def test_progress_bar_on_a_terminal_only(tmp_path: Path) -> None:
    path = write_spans(tmp_path / "s.jsonl", [span(i) for i in range(2000)], per_line=20)
    cmd = [
        sys.executable,
        "-m",
        "shadow_middleware",
        "report",
        str(path),
        "--format",
        "json",
        "--require",
        "n >= 1",
    ]
    piped = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=60)
    assert piped.returncode == 0 and "reading [" not in piped.stderr
    leader, follower = pty.openpty()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=follower, cwd=REPO)
    os.close(follower)
    out, _ = proc.communicate(timeout=60)
    chunks = []
    while True:
        try:
            data = os.read(leader, 4096)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    os.close(leader)
    assert proc.returncode == 0 and json.loads(out)["spans"] == 2000
    assert b"reading [" in b"".join(chunks) and b"100%" in b"".join(chunks)


def test_missing_report_extra_says_what_to_install(tmp_path: Path) -> None:
    path = write_spans(tmp_path / "s.jsonl", [span(0)])
    code = (
        "import sys; sys.modules['msgspec'] = None\n"
        "from shadow_middleware.__main__ import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code, "report", str(path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert res.returncode == 2 and "pip install 'shadow_middleware[report]'" in res.stderr
    check = subprocess.run(
        [sys.executable, "-c", code, "check-config", "--help"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert check.returncode == 0  # the other command needs none of it


def test_aggregate_api_still_takes_plain_spans(tmp_path: Path) -> None:
    spans, labels = _scored(300, 4)
    from shadow_middleware.report.spans import read_shadow_spans

    opts = ReportOptions(labels=labels, top=3)
    rep = build_report(
        aggregate(read_shadow_spans([write_spans(tmp_path / "s.jsonl", spans)]), opts), opts, Policy()
    )
    g = rep["targets"][0]
    assert len(g["disagreements"]) == 3 and g["auc_diff"]["method"] == "delong"
    assert g["ground_truth"]["n"] == 300
