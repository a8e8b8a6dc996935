"""``shadow-middleware report``: summarise shadow spans and decide on promotion.

Reads OTLP/JSON span files (see :mod:`shadow_middleware._otlp_json`), groups the shadow spans by
``(shadow.target, shadow.route)`` and reports per group: outcome counts, agreement with a Wilson
95% CI, decision flips of a score field, score differences, latency percentiles, error and timeout
rates and -- with ``--ground-truth`` -- accuracy, precision, recall, F1, ROC AUC and Brier score of
both models on the same requests, McNemar's test and a bootstrap CI of the AUC difference. A
promotion policy turns it into a verdict and an exit status: 0 promote, 1 reject, 2 not enough data
(or a usage error).

Definitions: ``n`` counts every shadow span of the group; ``compared`` = match + mismatch (the
denominator of agreement, and what ``min_samples`` is checked against); error and timeout rates are
over the attempted exchanges, match + mismatch + error + timeout.

Memory is bounded whatever the input size: per group it keeps counters, two latency reservoirs of
:data:`LATENCY_RESERVOIR` values each (percentiles are exact up to that many spans, estimated from a
seeded uniform sample beyond), :data:`SCATTER_RESERVOIR` score pairs for the plot, at most
:data:`TIMELINE_BUCKETS` time buckets, and -- only with ground truth -- one
``(correlation_id, primary score, candidate score, label)`` tuple per span whose correlation id has
a label, so at most one per labelled span (about 150 bytes each): the labels file bounds it.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from . import _stats
from ._otlp_json import ShadowSpan, read_shadow_spans
from ._policy import Policy, PolicyError, RuleResult, load_policy

__all__ = [
    "OUTCOMES",
    "Group",
    "ReportError",
    "ReportOptions",
    "add_arguments",
    "aggregate",
    "build_report",
    "load_labels",
    "run",
]

OUTCOMES = ("match", "mismatch", "error", "timeout", "dropped", "skipped")
LATENCY_RESERVOIR = 100_000
SCATTER_RESERVOIR = 2_000
TIMELINE_BUCKETS = 240
BOOTSTRAP_RESAMPLES = 1000
SEED = 20240601

_P_BODY = "shadow.primary.body."
_C_BODY = "shadow.candidate.body."

ErrorHandler = Callable[[str, int, str], None]


class ReportError(ValueError):
    """A usage problem (bad option, ambiguous score field, unreadable file): exit status 2."""


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    f = float(value)
    return f if math.isfinite(f) else None


# --- aggregation --------------------------------------------------------------------------------


@dataclass(slots=True)
class DiffStats:
    count: int = 0
    total: float = 0.0
    max: float = 0.0

    def add(self, d: float) -> None:
        self.count += 1
        self.total += d
        self.max = max(self.max, d)

    @property
    def mean(self) -> float | None:
        return self.total / self.count if self.count else None


class Timeline:
    """Match / mismatch counts in time buckets; the bucket width doubles to keep at most ``limit``."""

    def __init__(self, limit: int = TIMELINE_BUCKETS, width_ns: int = 1_000_000) -> None:
        self.limit = limit
        self.width_ns = width_ns
        self.buckets: dict[int, list[int]] = {}

    def add(self, start_ns: int, matched: bool) -> None:
        key = start_ns // self.width_ns
        counts = self.buckets.get(key)
        if counts is None:
            counts = self.buckets[key] = [0, 0]
        counts[0 if matched else 1] += 1
        while len(self.buckets) > self.limit:
            self.width_ns *= 2
            merged: dict[int, list[int]] = {}
            for k, (m, mm) in self.buckets.items():
                c = merged.setdefault(k // 2, [0, 0])
                c[0] += m
                c[1] += mm
            self.buckets = merged

    def series(self, max_buckets: int | None = None) -> tuple[int, list[tuple[int, int, int]]]:
        """``(bucket width ns, [(bucket start ns, matches, mismatches)])`` in time order, merged
        into coarser buckets (the width doubling) until there are at most ``max_buckets``."""
        width, buckets = self.width_ns, dict(self.buckets)
        if buckets and max_buckets:
            while (max(buckets) - min(buckets)) >= max_buckets:
                width *= 2
                merged: dict[int, list[int]] = {}
                for k, (m, mm) in buckets.items():
                    c = merged.setdefault(k // 2, [0, 0])
                    c[0] += m
                    c[1] += mm
                buckets = merged
        return width, [(k * width, m, mm) for k, (m, mm) in sorted(buckets.items())]


@dataclass
class Group:
    target: str
    route: str
    outcomes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    other_outcomes: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    error_types: dict[str, int] = field(default_factory=dict)
    lat_primary: _stats.Reservoir[float] = field(
        default_factory=lambda: _stats.Reservoir(LATENCY_RESERVOIR, SEED)
    )
    lat_candidate: _stats.Reservoir[float] = field(
        default_factory=lambda: _stats.Reservoir(LATENCY_RESERVOIR, SEED + 1)
    )
    scored: int = 0
    flips: int = 0
    score_diff: DiffStats = field(default_factory=DiffStats)
    field_diffs: dict[str, DiffStats] = field(default_factory=dict)
    scatter: _stats.Reservoir[tuple[float, float]] = field(
        default_factory=lambda: _stats.Reservoir(SCATTER_RESERVOIR, SEED + 2)
    )
    timeline: Timeline = field(default_factory=Timeline)
    joined: list[tuple[str, float, float, int]] = field(default_factory=list)
    scored_with_id: int = 0
    first_ns: int | None = None
    last_ns: int | None = None

    @property
    def n(self) -> int:
        return sum(self.outcomes.values()) + self.other_outcomes


@dataclass
class ReportOptions:
    field: str | None = None
    threshold: float = 0.5
    labels: Mapping[str, int] | None = None
    bootstrap: int = BOOTSTRAP_RESAMPLES
    seed: int = SEED


@dataclass
class Aggregate:
    groups: dict[tuple[str, str], Group]
    score_field: str | None
    numeric_fields: list[str]
    spans: int
    malformed: int


def aggregate(
    spans: Iterable[ShadowSpan], options: ReportOptions, malformed_counter: list[int] | None = None
) -> Aggregate:
    """Fold ``spans`` into per-(target, route) groups. Raises :class:`ReportError` when the score
    field is not given and more than one numeric field was recorded."""
    groups: dict[tuple[str, str], Group] = {}
    score_field = options.field
    seen_numeric: dict[str, None] = {}
    labels = options.labels
    threshold = options.threshold
    count = 0
    for span in spans:
        count += 1
        attrs = span.attributes
        key = (span.target, span.route)
        group = groups.get(key)
        if group is None:
            group = groups[key] = Group(*key)
        outcome = span.outcome
        if outcome in group.outcomes:
            group.outcomes[outcome] += 1
        else:
            group.other_outcomes += 1
        reason = attrs.get("shadow.reason")
        if reason is not None:
            group.reasons[str(reason)] = group.reasons.get(str(reason), 0) + 1
        etype = attrs.get("error.type")
        if etype is not None:
            group.error_types[str(etype)] = group.error_types.get(str(etype), 0) + 1
        if span.start_ns:
            group.first_ns = span.start_ns if group.first_ns is None else min(group.first_ns, span.start_ns)
            group.last_ns = span.start_ns if group.last_ns is None else max(group.last_ns, span.start_ns)
            if outcome in ("match", "mismatch"):
                group.timeline.add(span.start_ns, outcome == "match")
        dp = _number(attrs.get("shadow.primary.duration_ms"))
        if dp is not None:
            group.lat_primary.add(dp)
        dc = _number(attrs.get("shadow.candidate.duration_ms"))
        if dc is not None:
            group.lat_candidate.add(dc)

        # recorded values: differences of every numeric field; the score field drives the rest
        for name, value in attrs.items():
            if not name.startswith(_P_BODY):
                continue
            p = _number(value)
            fname = name[len(_P_BODY) :]
            c = _number(attrs.get(_C_BODY + fname))
            if p is None and c is None:
                continue
            if fname not in seen_numeric:
                seen_numeric[fname] = None
                if score_field is None:
                    score_field = fname
            if p is not None and c is not None:
                stats = group.field_diffs.get(fname)
                if stats is None:
                    stats = group.field_diffs[fname] = DiffStats()
                stats.add(abs(p - c))
        for name, value in attrs.items():  # numeric fields only the candidate recorded
            if name.startswith(_C_BODY) and _number(value) is not None:
                fname = name[len(_C_BODY) :]
                if fname not in seen_numeric:
                    seen_numeric[fname] = None
                    if score_field is None:
                        score_field = fname
        if score_field is None:
            continue
        ps = _number(attrs.get(_P_BODY + score_field))
        cs = _number(attrs.get(_C_BODY + score_field))
        if ps is None or cs is None:
            continue
        group.scored += 1
        group.score_diff.add(abs(ps - cs))
        if (ps >= threshold) != (cs >= threshold):
            group.flips += 1
        group.scatter.add((ps, cs))
        if labels is not None:
            cid = attrs.get("shadow.correlation_id")
            if cid is not None:
                group.scored_with_id += 1
                label = labels.get(str(cid))
                if label is not None:
                    group.joined.append((str(cid), ps, cs, label))

    if options.field is None and len(seen_numeric) > 1:
        raise ReportError(
            f"more than one numeric recorded value ({', '.join(seen_numeric)}); "
            "choose the score with --field NAME"
        )
    return Aggregate(groups, score_field, list(seen_numeric), count, 0)


# --- ground truth -------------------------------------------------------------------------------


def _label(value: Any) -> int | None:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int | float) and value in (0, 1):
        return int(value)
    if isinstance(value, str) and value.strip().lower() in ("0", "1", "true", "false", "0.0", "1.0"):
        return 1 if value.strip().lower() in ("1", "true", "1.0") else 0
    return None


def load_labels(path: str | Path, on_error: ErrorHandler | None = None) -> dict[str, int]:
    """``correlation_id -> 0/1`` from a CSV (header ``correlation_id,label``) or JSON lines file.

    Bad rows are reported to ``on_error(path, line, message)`` and skipped; a later row for the same
    id replaces an earlier one.
    """

    def bad(line: int, msg: str) -> None:
        if on_error is not None:
            on_error(str(path), line, msg)

    labels: dict[str, int] = {}
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            head = f.read(4096).lstrip()
            f.seek(0)
            if head.startswith("{"):
                for number, line in enumerate(f, start=1):
                    if not line.strip():
                        continue
                    try:
                        doc = json.loads(line)
                    except ValueError as exc:
                        bad(number, f"not JSON: {exc}")
                        continue
                    if not isinstance(doc, dict) or "correlation_id" not in doc or "label" not in doc:
                        bad(number, "expected an object with correlation_id and label")
                        continue
                    label = _label(doc["label"])
                    if label is None:
                        bad(number, f"label must be 0 or 1, got {doc['label']!r}")
                        continue
                    labels[str(doc["correlation_id"])] = label
            else:
                reader = csv.DictReader(f)
                fields = reader.fieldnames or []
                if "correlation_id" not in fields or "label" not in fields:
                    raise ReportError(f"{path}: expected a CSV header with correlation_id and label")
                for row in reader:
                    cid, raw = row.get("correlation_id"), row.get("label")
                    label = _label(raw)
                    if not cid or label is None:
                        bad(
                            reader.line_num,
                            f"label must be 0 or 1, got {raw!r}" if cid else "no correlation_id",
                        )
                        continue
                    labels[cid] = label
    except OSError as exc:
        raise ReportError(f"{path}: {exc.strerror or exc}") from None
    return labels


# --- metrics ------------------------------------------------------------------------------------


def _latency(res: _stats.Reservoir[float]) -> dict[str, Any]:
    values = sorted(res.items)
    return {
        "p50_ms": _stats.percentile(values, 50),
        "p95_ms": _stats.percentile(values, 95),
        "p99_ms": _stats.percentile(values, 99),
        "mean_ms": sum(values) / len(values) if values else None,
        "max_ms": values[-1] if values else None,
        "latency_n": res.seen,
        "latency_exact": res.exact,
    }


def _ratio(a: int, b: int) -> float | None:
    return a / b if b else None


def ground_truth_metrics(
    joined: Sequence[tuple[str, float, float, int]], threshold: float, bootstrap: int, seed: int
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """``(primary, candidate, comparison)`` metrics on the joined rows."""
    ps = [r[1] for r in joined]
    cs = [r[2] for r in joined]
    ys = [r[3] for r in joined]
    sides: list[dict[str, Any]] = []
    decisions: list[list[bool]] = []
    for scores in (ps, cs):
        d = [s >= threshold for s in scores]
        decisions.append(d)
        cl = _stats.classification(d, ys)
        sides.append(
            {
                "accuracy": cl.accuracy,
                "precision": cl.precision if joined else None,
                "recall": cl.recall if joined else None,
                "f1": cl.f1 if joined else None,
                "auc": _stats.auc(scores, ys) if joined else None,
                "brier": _stats.brier(scores, ys),
                "confusion": {"tp": cl.tp, "fp": cl.fp, "tn": cl.tn, "fn": cl.fn},
            }
        )
    b = sum(
        1 for dp, dc, y in zip(decisions[0], decisions[1], ys, strict=True) if dp == bool(y) and dc != bool(y)
    )
    c = sum(
        1 for dp, dc, y in zip(decisions[0], decisions[1], ys, strict=True) if dp != bool(y) and dc == bool(y)
    )
    p_value, method, stat = _stats.mcnemar(b, c)
    auc_p, auc_c = sides[0]["auc"], sides[1]["auc"]
    ci = _stats.bootstrap_auc_diff(ps, cs, ys, bootstrap, seed) if auc_p is not None else None
    comparison = {
        "n": len(joined),
        "positives": sum(ys),
        "mcnemar": {
            "primary_only_correct": b,
            "candidate_only_correct": c,
            "method": method,
            "statistic": stat,
            "p_value": p_value if joined else None,
        },
        "auc_diff": auc_c - auc_p if auc_p is not None and auc_c is not None else None,
        "auc_diff_ci": list(ci) if ci is not None else None,
        "bootstrap_resamples": bootstrap,
    }
    return sides[0], sides[1], comparison


def group_report(group: Group, agg: Aggregate, options: ReportOptions) -> dict[str, Any]:
    o = group.outcomes
    compared = o["match"] + o["mismatch"]
    attempted = compared + o["error"] + o["timeout"]
    ci = _stats.wilson(o["match"], compared)
    primary = _latency(group.lat_primary)
    candidate = _latency(group.lat_candidate)
    gt: dict[str, Any] | None = None
    if options.labels is not None:
        gp, gc, gt = ground_truth_metrics(group.joined, options.threshold, options.bootstrap, options.seed)
        gt["scored"] = group.scored
        gt["scored_with_id"] = group.scored_with_id
        gt["without_label"] = group.scored_with_id - len(group.joined)
        primary.update(gp)
        candidate.update(gc)
    return {
        "target": group.target,
        "route": group.route,
        "n": group.n,
        "compared": compared,
        "outcomes": dict(o),
        "other_outcomes": group.other_outcomes,
        "agreement": _ratio(o["match"], compared),
        "agreement_ci": list(ci) if ci is not None else None,
        "scored": group.scored,
        "flips": group.flips,
        "flip_rate": _ratio(group.flips, group.scored),
        "mean_abs_diff": group.score_diff.mean,
        "max_abs_diff": group.score_diff.max if group.score_diff.count else None,
        "field_diffs": {
            name: {"n": d.count, "mean_abs": d.mean, "max_abs": d.max}
            for name, d in sorted(group.field_diffs.items())
        },
        "error_rate": _ratio(o["error"], attempted),
        "timeout_rate": _ratio(o["timeout"], attempted),
        "dropped": o["dropped"],
        "skipped": o["skipped"],
        "reasons": dict(sorted(group.reasons.items())),
        "error_types": dict(sorted(group.error_types.items())),
        "first_start_ns": group.first_ns,
        "last_start_ns": group.last_ns,
        "primary": primary,
        "candidate": candidate,
        "ground_truth": gt,
    }


def policy_metrics(g: Mapping[str, Any]) -> dict[str, float | None]:
    """The names a policy rule can use, from one group's report."""
    ci = g["agreement_ci"] or [None, None]
    gt = g["ground_truth"] or {}
    auc_ci = gt.get("auc_diff_ci") or [None, None]
    m: dict[str, float | None] = {
        "n": g["n"],
        "compared": g["compared"],
        "agreement": g["agreement"],
        "agreement_low": ci[0],
        "agreement_high": ci[1],
        "flip_rate": g["flip_rate"],
        "error_rate": g["error_rate"],
        "timeout_rate": g["timeout_rate"],
        "dropped": g["dropped"],
        "skipped": g["skipped"],
        "mean_abs_diff": g["mean_abs_diff"],
        "max_abs_diff": g["max_abs_diff"],
        "gt_n": gt.get("n"),
        "mcnemar_p": (gt.get("mcnemar") or {}).get("p_value"),
        "auc_diff": gt.get("auc_diff"),
        "auc_diff_low": auc_ci[0],
        "auc_diff_high": auc_ci[1],
    }
    for side in ("primary", "candidate"):
        for key in ("p50_ms", "p95_ms", "p99_ms", "accuracy", "precision", "recall", "f1", "auc", "brier"):
            m[f"{side}.{key}"] = g[side].get(key)
    return m


def _judge(g: dict[str, Any], policy: Policy) -> tuple[str, list[RuleResult]]:
    results = [rule.check(policy_metrics(g)) for rule in policy.rules]
    if g["compared"] < policy.min_samples or g["compared"] == 0:
        return "insufficient", results
    if any(r.status == "FAIL" for r in results):
        return "reject", results
    if any(r.status == "N/A" for r in results):
        return "insufficient", results
    return "promote", results


EXIT_CODES = {"promote": 0, "reject": 1, "insufficient": 2}


def build_report(agg: Aggregate, options: ReportOptions, policy: Policy) -> dict[str, Any]:
    targets: list[dict[str, Any]] = []
    verdicts: list[str] = []
    for key in sorted(agg.groups):
        g = group_report(agg.groups[key], agg, options)
        verdict, results = _judge(g, policy)
        g["verdict"] = verdict
        g["rules"] = [
            {
                "rule": r.rule.text,
                "left": r.left,
                "right": r.right,
                "status": r.status,
                "missing": list(r.missing),
            }
            for r in results
        ]
        verdicts.append(verdict)
        targets.append(g)
    if not verdicts:
        verdict = "insufficient"
    elif "reject" in verdicts:
        verdict = "reject"
    elif "insufficient" in verdicts:
        verdict = "insufficient"
    else:
        verdict = "promote"
    return {
        "verdict": verdict,
        "exit_code": EXIT_CODES[verdict],
        "spans": agg.spans,
        "malformed_lines": agg.malformed,
        "score_field": agg.score_field,
        "numeric_fields": agg.numeric_fields,
        "threshold": options.threshold,
        "ground_truth": options.labels is not None,
        "labels": len(options.labels) if options.labels is not None else None,
        "policy": {"min_samples": policy.min_samples, "require": [r.text for r in policy.rules]},
        "targets": targets,
    }


# --- text output --------------------------------------------------------------------------------


def _f(value: Any, digits: int = 4) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _table(rows: Sequence[Sequence[str]], indent: str = "  ") -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = []
    for row in rows:
        cells = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]
        out.append(indent + "  ".join(cells).rstrip())
    return out


def format_text(report: Mapping[str, Any]) -> str:
    lines: list[str] = []
    field_name = report["score_field"]
    lines.append(
        f"shadow report: {report['spans']} shadow spans, {len(report['targets'])} target/route group(s); "
        f"score field {field_name or 'n/a'}, decision threshold {report['threshold']}"
    )
    if report["malformed_lines"]:
        lines.append(f"({report['malformed_lines']} malformed line(s) skipped, see stderr)")
    for g in report["targets"]:
        o = g["outcomes"]
        lines.append("")
        lines.append(f"== {g['target']}  {g['route']}")
        lines.append(
            f"  exchanges {g['n']}, compared {g['compared']}; "
            + ", ".join(f"{k} {o[k]}" for k in OUTCOMES)
            + (f", other {g['other_outcomes']}" if g["other_outcomes"] else "")
        )
        ci = g["agreement_ci"]
        lines.append(
            f"  agreement {_f(g['agreement'])}"
            + (f"  (95% CI {ci[0]:.4f} - {ci[1]:.4f})" if ci else "")
            + f"; error rate {_f(g['error_rate'])}, timeout rate {_f(g['timeout_rate'])}"
        )
        if g["scored"]:
            lines.append(
                f"  decision flips {g['flips']} / {g['scored']} = {_f(g['flip_rate'])}; "
                f"|primary - candidate| {field_name}: mean {_f(g['mean_abs_diff'])}, "
                f"max {_f(g['max_abs_diff'])}"
            )
        for name, d in g["field_diffs"].items():
            if name != field_name:
                lines.append(
                    f"  |primary - candidate| {name}: mean {_f(d['mean_abs'])}, max {_f(d['max_abs'])}"
                )
        if g["reasons"]:
            lines.append("  reasons: " + ", ".join(f"{k} {v}" for k, v in g["reasons"].items()))
        if g["error_types"]:
            lines.append("  error types: " + ", ".join(f"{k} {v}" for k, v in g["error_types"].items()))
        p, c = g["primary"], g["candidate"]
        rows = [["latency (ms)", "n", "p50", "p95", "p99", "max"]]
        for label, side in (("primary", p), ("candidate", c)):
            est = "" if side["latency_exact"] else "~"
            rows.append(
                [label, str(side["latency_n"])]
                + [est + _f(side[k], 2) for k in ("p50_ms", "p95_ms", "p99_ms", "max_ms")]
            )
        lines.append("")
        lines.extend(_table(rows))
        gt = g["ground_truth"]
        if gt is not None:
            lines.append("")
            lines.append(
                f"  ground truth: {gt['n']} requests with both scores and a label "
                f"({gt['positives']} positive); {gt['without_label']} scored request(s) without a label"
            )
            rows = [["metric", "production", "candidate", "diff"]]
            for k in ("accuracy", "precision", "recall", "f1", "auc", "brier"):
                a, b = p.get(k), c.get(k)
                rows.append([k, _f(a), _f(b), _f(b - a) if a is not None and b is not None else "n/a"])
            lines.extend(_table(rows))
            mc = gt["mcnemar"]
            lines.append(
                f"  McNemar ({mc['method']}): production-only correct {mc['primary_only_correct']}, "
                f"candidate-only correct {mc['candidate_only_correct']}, p = {_f(mc['p_value'])}"
            )
            aci = gt["auc_diff_ci"]
            lines.append(
                f"  AUC difference (candidate - production) {_f(gt['auc_diff'])}, "
                f"bootstrap 95% CI "
                + (f"[{aci[0]:.4f}, {aci[1]:.4f}]" if aci else "n/a")
                + f" ({gt['bootstrap_resamples']} paired resamples)"
            )
        if g["rules"] or report["policy"]["min_samples"]:
            lines.append("")
            lines.append("  policy:")
            ms = report["policy"]["min_samples"]
            if ms:
                ok = "PASS" if g["compared"] >= ms else "INSUFFICIENT"
                lines.append(f"    {ok:<5} min_samples = {ms}   (compared {g['compared']})")
            for r in g["rules"]:
                if r["status"] == "N/A":
                    detail = (
                        "unavailable: " + ", ".join(r["missing"])
                        if r["missing"]
                        else "undefined (division by 0)"
                    )
                else:
                    detail = f"{_f(r['left'])} vs {_f(r['right'])}"
                lines.append(f"    {r['status']:<5} {r['rule']}   ({detail})")
        lines.append(f"  group verdict: {g['verdict']}")
    lines.append("")
    lines.append(f"verdict: {report['verdict'].upper()} (exit status {report['exit_code']})")
    return "\n".join(lines) + "\n"


# --- command line -------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spans", metavar="SPANS", nargs="+", help="OTLP/JSON span files (plain or gzip)")
    parser.add_argument(
        "--field", metavar="NAME", help="recorded value used as the score (default: the only numeric one)"
    )
    parser.add_argument(
        "--threshold", type=float, default=0.5, metavar="T", help="decision: score >= T (default 0.5)"
    )
    parser.add_argument(
        "--ground-truth", metavar="FILE", help="labels: CSV (correlation_id,label) or JSON lines, labels 0/1"
    )
    parser.add_argument("--policy", metavar="TOML", help="policy file: min_samples = N, require = [rules]")
    parser.add_argument(
        "--require",
        metavar="EXPR",
        action="append",
        default=[],
        help="a rule, e.g. 'agreement >= 0.95' (repeatable)",
    )
    parser.add_argument(
        "--format", choices=("text", "json"), default="text", help="output format (default text)"
    )
    parser.add_argument(
        "--html", metavar="FILE", help="also write a self-contained HTML report with SVG plots"
    )
    parser.add_argument(
        "--bootstrap",
        type=int,
        default=BOOTSTRAP_RESAMPLES,
        metavar="N",
        help=f"bootstrap resamples for the AUC difference CI (default {BOOTSTRAP_RESAMPLES})",
    )


def run(args: argparse.Namespace, stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    malformed = [0]

    def on_error(path: str, line: int, msg: str) -> None:
        malformed[0] += 1
        print(f"{path}:{line}: skipped malformed line: {msg}", file=err)

    try:
        if args.bootstrap < 0:
            raise ReportError("--bootstrap must be >= 0")
        if not math.isfinite(args.threshold):
            raise ReportError("--threshold must be a finite number")
        policy = load_policy(args.policy, args.require) if args.policy else Policy()
        if not args.policy:
            for text in args.require:
                policy.add(text)
        labels = None
        if args.ground_truth:
            labels = load_labels(
                args.ground_truth, lambda p, n, m: print(f"{p}:{n}: skipped label row: {m}", file=err)
            )
        for path in args.spans:
            if not Path(path).is_file():
                raise ReportError(f"{path}: no such file")
        options = ReportOptions(
            field=args.field, threshold=args.threshold, labels=labels, bootstrap=args.bootstrap
        )
        agg = aggregate(read_shadow_spans(args.spans, on_error), options)
    except (ReportError, PolicyError) as exc:
        print(f"error: {exc}", file=err)
        return 2
    except OSError as exc:
        print(f"error: {exc}", file=err)
        return 2
    agg.malformed = malformed[0]
    if args.field and args.field not in agg.numeric_fields:
        print(f"warning: no numeric recorded value named {args.field!r} in the spans", file=err)
    report = build_report(agg, options, policy)
    if args.format == "json":
        out.write(json.dumps(report, indent=2, allow_nan=False) + "\n")
    else:
        out.write(format_text(report))
    if args.html:
        from ._html import render_html

        try:
            Path(args.html).write_text(render_html(report, agg), encoding="utf-8")
        except OSError as exc:
            print(f"error: {args.html}: {exc.strerror or exc}", file=err)
            return 2
    code: int = report["exit_code"]
    return code
