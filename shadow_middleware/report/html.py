"""A self-contained HTML page for ``shadow-middleware report --html``.

Tables plus inline SVG plots drawn here (no JavaScript, no external CSS, fonts or images): latency
CDFs of both models, primary vs candidate score scatter, agreement over time, ROC curves and confusion
matrices when ground truth was given, input drift per input and over time with ``--reference``, and the
largest disagreements, their trace ids linked to the user's trace viewer with ``--trace-url`` (the only
links on the page, and only to that validated http(s) template).
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from . import stats
from .aggregate import Aggregate, Group
from .build import LATENCY_BASES
from .drift import MIN_BUCKET
from .format import fmt
from .metrics import LATENCY_METRICS, QUALITY_METRICS
from .text import fmt_p, latency_note, status_matrix, why_rows

__all__ = ["render_html"]

W, H = 460, 300
ML, MR, MT, MB = 56, 16, 28, 44
PRIMARY = "#1f77b4"
CANDIDATE = "#d62728"
SERIES = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")
MAX_POINTS = 400

Point = tuple[float, float]


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _nice_ticks(lo: float, hi: float) -> list[float]:
    """About five round ticks from ``lo`` to ``hi`` (at most 12, whatever the floats: a step too small
    to move ``t`` at this magnitude must not loop)."""
    raw = (hi - lo) / 5
    if not raw > 0 or not math.isfinite(raw):
        return [lo] if math.isfinite(lo) else []
    mag = 10.0 ** math.floor(math.log10(raw))
    if mag == 0 or not math.isfinite(lo / mag):  # a subnormal range
        return [lo]
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step) * step
    ticks = []
    for i in range(12):
        t = first + i * step
        if t > hi + step * 1e-9:
            break
        ticks.append(round(t, 12))
    return ticks


def _tick_label(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 1e6:  # no wall of digits on an axis
        return f"{v:.3g}"
    if abs(v) >= 100 or v == int(v):
        return f"{v:.0f}"
    return f"{v:.3g}"


class _Plot:
    def __init__(
        self,
        title: str,
        xlabel: str,
        ylabel: str,
        xrange: tuple[float, float],
        yrange: tuple[float, float],
        xlog: bool = False,
        legend_at: str = "top-left",
    ) -> None:
        self.title, self.xlabel, self.ylabel = title, xlabel, ylabel
        self.xlog = xlog
        # "top-left", "bottom-right" (where a ROC curve never is) or "below" (under the plot)
        self.legend_at = legend_at
        x0, x1 = xrange
        if xlog:
            x0, x1 = math.log10(x0), math.log10(x1)
        if x1 <= x0:
            x1 = x0 + 1
        y0, y1 = yrange
        if y1 <= y0:
            y1 = y0 + 1
        self.x0, self.x1, self.y0, self.y1 = x0, x1, y0, y1
        self.parts: list[str] = []
        self.legend: list[tuple[str, str, str]] = []  # label, color, dash

    def sx(self, x: float) -> float:
        if self.xlog:
            x = math.log10(max(x, 10**self.x0))
        return ML + (x - self.x0) / (self.x1 - self.x0) * (W - ML - MR)

    def sy(self, y: float) -> float:
        return H - MB - (y - self.y0) / (self.y1 - self.y0) * (H - MT - MB)

    def polyline(self, points: Sequence[Point], color: str, label: str | None = None, dash: str = "") -> None:
        if not points:
            return
        pts = " ".join(f"{self.sx(x):.1f},{self.sy(y):.1f}" for x, y in points)
        extra = f' stroke-dasharray="{dash}"' if dash else ""
        self.parts.append(
            f'<polyline class="series" points="{pts}" fill="none" stroke="{color}" '
            f'stroke-width="1.8"{extra}/>'
        )
        if label:
            self.legend.append((label, color, dash))

    def dots(self, points: Sequence[Point], color: str) -> None:
        self.parts.append(f'<g fill="{color}" fill-opacity="0.35">')
        self.parts.extend(f'<circle cx="{self.sx(x):.1f}" cy="{self.sy(y):.1f}" r="2"/>' for x, y in points)
        self.parts.append("</g>")

    def svg(self, css_class: str) -> str:
        below = (len(self.legend) + 1) // 2 if self.legend_at == "below" else 0
        height = H + (15 * below + 6 if below else 0)
        out = [
            f'<svg class="plot {css_class}" xmlns="http://www.w3.org/2000/svg" width="{W}" height="{height}" '
            f'viewBox="0 0 {W} {height}" role="img" aria-label="{_e(self.title)}">',
            f"<title>{_e(self.title)}</title>",
            f'<text x="{W / 2}" y="16" text-anchor="middle" font-size="13" font-weight="bold">'
            f"{_e(self.title)}</text>",
            f'<rect x="{ML}" y="{MT}" width="{W - ML - MR}" height="{H - MT - MB}" '
            'fill="none" stroke="#999"/>',
        ]
        if self.xlog:  # the decades inside the range, at most about ten of them (5e-324 ms to 1e19 is 343)
            first, last = math.ceil(self.x0 - 1e-9), math.floor(self.x1 + 1e-9)
            every = max(1, math.ceil((last - first + 1) / 10))
            xt = [10.0**e for e in range(first, last + 1, every)]
        else:
            xt = _nice_ticks(self.x0, self.x1)
        for t in xt:
            x = self.sx(t)
            out.append(f'<line x1="{x:.1f}" y1="{H - MB}" x2="{x:.1f}" y2="{H - MB + 4}" stroke="#666"/>')
            out.append(
                f'<text x="{x:.1f}" y="{H - MB + 16}" text-anchor="middle" font-size="10">'
                f"{_tick_label(t)}</text>"
            )
        for t in _nice_ticks(self.y0, self.y1):
            y = self.sy(t)
            out.append(f'<line x1="{ML - 4}" y1="{y:.1f}" x2="{W - MR}" y2="{y:.1f}" stroke="#eee"/>')
            out.append(
                f'<text x="{ML - 6}" y="{y + 3:.1f}" text-anchor="end" font-size="10">{_tick_label(t)}</text>'
            )
        out.append(
            f'<text x="{(ML + W - MR) / 2}" y="{H - 8}" text-anchor="middle" font-size="11">'
            f"{_e(self.xlabel)}</text>"
        )
        out.append(
            f'<text x="14" y="{(MT + H - MB) / 2}" text-anchor="middle" font-size="11" '
            f'transform="rotate(-90 14 {(MT + H - MB) / 2})">{_e(self.ylabel)}</text>'
        )
        out.extend(self.parts)
        if self.legend and self.legend_at == "below":  # many series: under the plot, two columns
            for i, (label, color, dash) in enumerate(self.legend):
                x0 = ML + (i % 2) * (W - ML - MR) / 2
                y = H + 8 + 15 * (i // 2)
                dashed = f' stroke-dasharray="{dash}"' if dash else ""
                out.append(
                    f'<line x1="{x0}" y1="{y - 4}" x2="{x0 + 18}" y2="{y - 4}" stroke="{color}" '
                    f'stroke-width="3"{dashed}/>'
                )
                out.append(f'<text x="{x0 + 23}" y="{y}" font-size="11">{_e(label)}</text>')
        elif self.legend:
            width = 34 + 6 * max(len(label) for label, _, _ in self.legend)
            height = 15 * len(self.legend) + 6
            if self.legend_at == "bottom-right":
                x0, y0 = W - MR - width - 6, H - MB - height - 6
            else:
                x0, y0 = ML + 6, MT + 4
            out.append(
                f'<rect class="legend" x="{x0}" y="{y0}" width="{width}" height="{height}" '
                'fill="#fff" fill-opacity="0.85" stroke="#ccc"/>'
            )
            for i, (label, color, dash) in enumerate(self.legend):
                y = y0 + 15 + 15 * i
                out.append(
                    f'<line x1="{x0 + 6}" y1="{y - 4}" x2="{x0 + 24}" y2="{y - 4}" '
                    f'stroke="{color}" stroke-width="3"'
                    + (f' stroke-dasharray="{dash}"' if dash else "")
                    + "/>"
                )
                out.append(f'<text x="{x0 + 29}" y="{y}" font-size="11">{_e(label)}</text>')
        out.append("</svg>")
        return "\n".join(out)


def _downsample(points: Sequence[Point]) -> list[Point]:
    if len(points) <= MAX_POINTS:
        return list(points)
    step = (len(points) - 1) / (MAX_POINTS - 1)
    return [points[round(i * step)] for i in range(MAX_POINTS)]


def _cdf(values: Sequence[float]) -> list[Point]:
    s = sorted(values)
    n = len(s)
    return _downsample([(v, (i + 1) / n) for i, v in enumerate(s)])


def latency_plot(group: Group, basis: str) -> str:
    p, c = group.lat_primary.items, group.lat_candidate.items
    server = group.lat_candidate_server.items if basis == "server_timing" else []
    both = [v for v in (*p, *c, *server) if v > 0]
    if not both:
        return '<p class="empty">no latency measurements</p>'
    lo, hi = min(both), max(both)
    xlog = hi / lo > 20
    plot = _Plot(
        "Latency CDF",
        "duration (ms)" + (", log scale" if xlog else ""),
        "fraction of requests",
        (lo, hi) if xlog else (0.0, hi),
        (0.0, 1.0),
        xlog=xlog,
        legend_at="bottom-right",  # a CDF has reached the top by the right: the corner below is empty
    )
    plot.polyline(
        _cdf([v for v in p if v > 0 or not xlog]), PRIMARY, f"primary in-process (n={group.lat_primary.seen})"
    )
    if server:
        plot.polyline(
            _cdf([v for v in server if v > 0 or not xlog]),
            CANDIDATE,
            f"{LATENCY_BASES['server_timing']} (n={group.lat_candidate_server.seen})",
        )
    plot.polyline(
        _cdf([v for v in c if v > 0 or not xlog]),
        CANDIDATE,
        f"{LATENCY_BASES['round_trip']} (n={group.lat_candidate.seen})",
        dash="5 3" if server else "",
    )
    return plot.svg("latency")


def scatter_plot(group: Group, field: str | None, threshold: float) -> str:
    pts = group.scatter.items
    if not pts:
        return '<p class="empty">no score pairs recorded</p>'
    vals = [v for pt in pts for v in pt] + [threshold]
    lo, hi = min(vals), max(vals)
    if lo >= 0 and hi <= 1:
        lo, hi = 0.0, 1.0
    plot = _Plot(f"Scores: {field}", "primary score", "candidate score", (lo, hi), (lo, hi))
    plot.polyline([(lo, lo), (hi, hi)], "#888", None, dash="4 3")
    plot.polyline([(threshold, lo), (threshold, hi)], "#bbb", None, dash="2 2")
    plot.polyline([(lo, threshold), (hi, threshold)], "#bbb", f"threshold {threshold}", dash="2 2")
    plot.dots(pts, "#444")
    return plot.svg("scatter")


def agreement_plot(group: Group) -> str:
    width_ns, series = group.timeline.series(max_buckets=40)
    if not series:
        return '<p class="empty">no comparisons with timestamps</p>'
    t0 = series[0][0]
    width_s = width_ns / 1e9
    points = [((t - t0) / 1e9 + width_s / 2, m / (m + mm)) for t, (m, mm) in series if m + mm]
    xs = [x for x, _ in points]
    ys = [y for _, y in points]
    plot = _Plot(
        f"Agreement over time ({width_s:g} s buckets)",
        "seconds since first span",
        "agreement",
        (0.0, max(xs[-1] + width_s / 2, width_s)),
        (min(0.0, min(ys)), 1.0),
    )
    plot.polyline(
        points if len(points) > 1 else [(0.0, ys[0]), (width_s, ys[0])], PRIMARY, "match / compared"
    )
    plot.dots(points, PRIMARY)
    return plot.svg("agreement")


def _roc(scores: Any, labels: Any) -> list[Point]:
    """ROC points ``(fpr, tpr)`` from (0, 0) to (1, 1), one per distinct threshold (numpy)."""
    pos = int(labels.sum())
    neg = int(labels.size - pos)
    if pos == 0 or neg == 0:
        return []
    order = np.argsort(-scores, kind="mergesort")
    s, y = scores[order], labels[order]
    last = np.append(s[1:] != s[:-1], True)  # the last row of each run of equal scores
    tp = np.cumsum(y)[last]
    fp = np.cumsum(~y)[last]
    return [(0.0, 0.0), *zip((fp / neg).tolist(), (tp / pos).tolist(), strict=True)]


def roc_plot(group: Group) -> str:
    ps, cs, labels = group.joined.arrays()
    p_roc = _roc(ps, labels)
    c_roc = _roc(cs, labels)
    if not p_roc or not c_roc:
        return '<p class="empty">ROC needs both classes among the labelled requests</p>'
    p_auc = stats.auc(ps, labels)
    c_auc = stats.auc(cs, labels)
    plot = _Plot(
        "ROC", "false positive rate", "true positive rate", (0.0, 1.0), (0.0, 1.0), legend_at="bottom-right"
    )
    plot.polyline([(0.0, 0.0), (1.0, 1.0)], "#aaa", None, dash="4 3")
    plot.polyline(_downsample(p_roc), PRIMARY, f"production AUC {fmt(p_auc, 3)}")
    plot.polyline(_downsample(c_roc), CANDIDATE, f"candidate AUC {fmt(c_auc, 3)}")
    return plot.svg("roc")


def _table(rows: Sequence[Sequence[Any]], header: Sequence[str], css_class: str = "") -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_e(fmt(c))}</td>" for c in row) + "</tr>" for row in rows)
    cls = f' class="{css_class}"' if css_class else ""
    return f"<table{cls}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _group_section(g: Mapping[str, Any], group: Group, report: Mapping[str, Any]) -> str:
    o = g["outcomes"]
    ci = g["agreement_ci"]
    parts = [
        f'<section class="group"><h2>{_e(g["target"])} &middot; {_e(g["route"])} '
        f'<span class="verdict {_e(g["verdict"])}">{_e(g["verdict"])}</span></h2>'
    ]
    summary = [
        ["exchanges", g["n"]],
        ["compared (match + mismatch, less no-evidence ones)", g["compared"]],
        ["production failed (kept out)", g["production_failed"]],
        *[[k, o[k]] for k in o],
        ["agreement", g["agreement"]],
        ["agreement 95% CI", f"{ci[0]:.4f} - {ci[1]:.4f}" if ci else None],
        ["decision flip rate", g["flip_rate"]],
        ["mean |primary - candidate|", g["mean_abs_diff"]],
        ["max |primary - candidate|", g["max_abs_diff"]],
        ["error rate", g["error_rate"]],
        ["timeout rate", g["timeout_rate"]],
    ]
    parts.append(_table(summary, ["metric", "value"]))
    parts.extend(f'<p class="note">{_e(note)}</p>' for note in g["notes"])
    why = why_rows(g)
    if why:
        parts.append(_table(why, ["outcome", "kind", "reason / error type", "count"], css_class="why"))
    if g["statuses"]:
        prod, cand, counts = status_matrix(g)
        parts.append(
            _table(
                [[p_status, *row] for p_status, row in zip(prod, counts, strict=True)],
                ["status: production \\ candidate", *cand],
                css_class="statuses",
            )
        )
    p, c = g["primary"], g["candidate"]
    sides = [("primary (in-process)", p, "")]
    if g["latency_basis"] == "server_timing":
        sides.append((LATENCY_BASES["server_timing"], c, "server_"))
    sides.append((LATENCY_BASES["round_trip"], c, ""))
    lat = [
        [name, side[pre + "latency_n"], *(side[pre + k] for k in LATENCY_METRICS), side[pre + "max_ms"]]
        for name, side, pre in sides
    ]
    parts.append(_table(lat, ["latency (ms)", "n", "p50", "p95", "p99", "max"], css_class="latency"))
    parts.append(f'<p class="latency-basis">{_e(latency_note(g))}</p>')
    gt = g["ground_truth"]
    labelled = gt is not None and gt["n"] > 0
    if gt is not None and not labelled:  # no table of n/a, no matrix of zeros
        why_none = "" if g["labels_possible"] else " (no span carries a correlation id)"
        parts.append(f"<p>Ground truth: no request with both scores and a label{_e(why_none)}.</p>")
    if gt is not None and labelled:
        rows = [[k, p.get(k), c.get(k)] for k in QUALITY_METRICS]
        mc = gt["mcnemar"]
        aci = gt["auc_diff_ci"]
        rows.append(["McNemar p (" + mc["method"] + ")", mc["p_value"], ""])
        test = g["auc_diff"] or {}
        method = "bootstrap" if test.get("method", gt["auc_ci_method"]) == "bootstrap" else "DeLong"
        rows.append(
            [
                f"AUC diff (cand - prod), 95% CI ({method})",
                gt["auc_diff"],
                f"[{aci[0]:.4f}, {aci[1]:.4f}]" if aci else None,
            ]
        )
        if test.get("p") is not None:
            rows.append(["AUC diff p (DeLong, two-sided)", fmt_p(test["p"]), ""])
        gaps = []
        if gt["labelled_without_scores"]:
            by = ", ".join(f"{k} {v}" for k, v in gt["labelled_without_scores_by_outcome"].items())
            gaps.append(f"{gt['labelled_without_scores']} labelled exchange(s) without both scores ({by})")
        if gt["conflicting_label_exchanges"]:
            gaps.append(f"{gt['conflicting_label_exchanges']} whose id has conflicting labels")
        tail = f"; not in the metrics: {'; '.join(gaps)}" if gaps else ""
        parts.append(f"<p>Ground truth: {gt['n']} requests with both scores and a label{_e(tail)}.</p>")
        parts.append(_table(rows, ["metric", "production", "candidate"]))
        parts.append(_confusion(p, c, report["threshold"]))
    parts.append(_drift_section(g, group))
    parts.append(_disagreements_section(g))
    policy = report["policy"]
    labelled_n = gt["n"] if gt is not None and g["labels_possible"] else None
    settings = [
        [
            "PASS" if count >= minimum else "INSUFFICIENT",
            f"{name} = {minimum}",
            count,
            minimum,
            "",
        ]
        for name, minimum, count in (
            ("min_samples", policy["min_samples"], g["compared"]),
            ("min_labelled", policy["min_labelled"], labelled_n),
        )
        if minimum and count is not None
    ]
    rules = [[r["status"], r["rule"], r["left"], r["right"], r["note"] or ""] for r in g["rules"]]
    if rules or settings:
        parts.append(f'<p class="policy">Policy: {_e(policy["description"])}</p>')
        parts.append(
            _table(
                settings + rules,
                ["status", "rule", "left", "right", "note"],
                css_class="rules",
            )
        )
    parts.append('<div class="plots">')
    parts.append(latency_plot(group, g["latency_basis"]))
    parts.append(scatter_plot(group, report["score_field"], report["threshold"]))
    parts.append(agreement_plot(group))
    if labelled:
        parts.append(roc_plot(group))
    parts.append("</div></section>")
    return "\n".join(parts)


def _confusion(p: Mapping[str, Any], c: Mapping[str, Any], threshold: float) -> str:
    """Both models' confusion matrices side by side (decision: score >= threshold)."""
    out = ['<div class="confusion">']
    for name, side in (("production", p), ("candidate", c)):
        m = side.get("confusion")
        if not m:
            continue
        out.append(
            f'<table class="confusion-matrix"><caption>{_e(name)}: decision score &ge; {_e(threshold)}'
            "</caption><thead><tr><th></th><th>decided 1</th><th>decided 0</th></tr></thead><tbody>"
            f'<tr><th>label 1</th><td class="ok">{m["tp"]}</td><td class="bad">{m["fn"]}</td></tr>'
            f'<tr><th>label 0</th><td class="bad">{m["fp"]}</td><td class="ok">{m["tn"]}</td></tr>'
            "</tbody></table>"
        )
    out.append("</div>")
    return "".join(out)


def drift_plot(group: Group) -> str:
    """PSI of each input against the reference, per time bucket."""
    lines: list[tuple[str, list[Point]]] = []
    t0: int | None = None
    width_s = 0.0
    for name, live in sorted(group.inputs.items()):
        # at most 40 points, each from enough live values for a PSI (MIN_BUCKET) when spread evenly
        width_ns, series = live.psi_over_time(max_buckets=max(1, min(40, live.n // (2 * MIN_BUCKET))))
        if not series:
            continue
        t0 = series[0][0] if t0 is None else min(t0, series[0][0])
        width_s = max(width_s, width_ns / 1e9)
        lines.append((name, [(float(t), psi) for t, _n, psi in series if psi is not None]))
    lines = [(name, pts) for name, pts in lines if pts]
    if not lines or t0 is None or max(len(pts) for _, pts in lines) < 2:  # one dot is not a curve
        return '<p class="empty">not enough live values per time bucket for drift over time</p>'
    hours = width_s >= 3600
    unit = 3600.0 if hours else 1.0
    curves = [(name, [((t - t0) / 1e9 / unit, psi) for t, psi in pts]) for name, pts in lines]
    xs = [x for _, pts in curves for x, _ in pts]
    ys = [y for _, pts in curves for _, y in pts]
    plot = _Plot(
        "Input drift over time (PSI vs reference)",
        "hours since first span" if hours else "seconds since first span",
        "PSI",
        (0.0, max(max(xs), width_s / unit)),
        (0.0, max(0.3, max(ys) * 1.1)),
        legend_at="below",
    )
    plot.polyline([(0.0, 0.25), (max(max(xs), width_s / unit), 0.25)], "#bbb", "0.25: a large shift", "4 3")
    for i, (name, pts) in enumerate(curves):
        color = SERIES[i % len(SERIES)]
        plot.polyline(pts if len(pts) > 1 else [*pts, pts[0]], color, name)
        plot.dots(pts, color)
    return plot.svg("drift")


def _drift_section(g: Mapping[str, Any], group: Group) -> str:
    drift = g["drift"]
    features = drift["features"]
    scores = drift["scores"]
    parts = []
    if features:
        rows = [
            [
                name,
                f["kind"],
                f["n"],
                f["reference_n"],
                f["reference_missing"],
                f["psi"],
                f["ks"],
                fmt_p(f["ks_p"]),
            ]
            for name, f in features.items()
        ]
        parts.append("<h3>Input drift against the reference</h3>")
        header = ["input", "kind", "live n", "reference n", "reference missing", "PSI", "KS D", "KS p"]
        parts.append(_table(rows, header, css_class="drift"))
        parts.append(f'<div class="plots">{drift_plot(group)}</div>')
    if scores["psi"] is not None:
        est = "" if scores["exact"] else f" (from a sample of {len(group.scores.items)})"
        parts.append(
            f"<p class=\"score-psi\">Score drift: PSI of the candidate's scores against production's "
            f"{_e(fmt(scores['psi']))} over {scores['n']} scored exchanges{_e(est)}.</p>"
        )
    return "\n".join(parts)


def _disagreements_section(g: Mapping[str, Any]) -> str:
    rows = g["disagreements"]
    if not rows:
        return ""
    body = []
    for i, d in enumerate(rows, start=1):
        trace = _e(d["trace_id"])
        if d["trace_url"]:
            trace = f'<a href="{_e(d["trace_url"])}" rel="noopener noreferrer">{trace}</a>'
        body.append(
            f"<tr><td>{i}</td><td>{_e(fmt(d['abs_diff']))}</td><td>{_e(fmt(d['primary']))}</td>"
            f"<td>{_e(fmt(d['candidate']))}</td><td>{_e(d['correlation_id'] or '')}</td>"
            f'<td class="trace">{trace}</td><td>{_e(", ".join(d["paths"]))}</td></tr>'
        )
    head = "".join(
        f"<th>{h}</th>"
        for h in ("#", "|diff|", "production", "candidate", "correlation id", "trace id", "differing paths")
    )
    return (
        f"<h3>Largest disagreements (top {len(rows)})</h3>"
        f'<table class="disagreements"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'
    )


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;color:#222}
table{border-collapse:collapse;margin:8px 16px 8px 0;display:inline-table;vertical-align:top}
th,td{border:1px solid #ccc;padding:3px 8px;font-size:13px}td{text-align:right}td:first-child{text-align:left}
.why td,.rules td,.disagreements td.trace,.disagreements td:last-child{text-align:left}
.confusion{display:inline-block;vertical-align:top}caption{font-size:12px;padding:2px}
.confusion-matrix td.ok{background:#e6f4ea}.confusion-matrix td.bad{background:#fce8e6}
.disagreements td.trace{font-family:monospace;font-size:12px}
.plots svg{margin:6px;border:1px solid #eee;background:#fff}
.verdict{font-size:14px;padding:2px 8px;border-radius:4px;color:#fff;background:#888}
.verdict.promote{background:#2a7}.verdict.reject{background:#c33}.verdict.insufficient{background:#d90}
"""


def _label_join(report: Mapping[str, Any]) -> str:
    join = report.get("label_join")
    if join is None:
        return ""
    return (
        f"<p>Labels: {join['labels']} usable; {join['without_exchange']} with no exchange in the spans; "
        f"{join['conflicting_ids']} id(s) with conflicting labels dropped.</p>"
    )


def render_html(report: Mapping[str, Any], agg: Aggregate) -> str:
    sections = []
    for g in report["targets"]:
        group = agg.groups[(g["target"], g["route"])]
        sections.append(_group_section(g, group, report))
    policy = report["policy"]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        "<title>shadow report</title>"
        f"<style>{_CSS}</style></head><body>"
        f'<h1>Shadow report <span class="verdict {_e(report["verdict"])}">{_e(report["verdict"])}</span></h1>'
        f"<p>{report['spans']} shadow spans; score field {_e(report['score_field'] or 'n/a')}, "
        f"threshold {_e(report['threshold'])}; policy: {_e(policy['description'])}, "
        f"min_samples {policy['min_samples']}; {len(policy['require'])} rule(s).</p>"
        + _label_join(report)
        + "\n".join(sections)
        + "</body></html>\n"
    )
