"""The report (the ``--format json`` document) and the verdict the promotion policy gives it.

Definitions: ``n`` counts every shadow span of a group; ``compared`` = match + mismatch (the
denominator of agreement, and what ``min_samples`` is checked against); error and timeout rates are
over the attempted exchanges, match + mismatch + error + timeout. A group with fewer comparisons than
``min_samples`` is ``insufficient``; else one failing rule rejects it; else it is ``insufficient`` when
it has fewer labelled requests than ``min_labelled`` or a rule's figure is unavailable; else it is
promoted. A run's verdict is ``reject`` if any group is rejected, else ``insufficient`` if any group
lacks data, else ``promote``. With no rule
given, the default policy applies (:func:`.policy.effective_policy`): no rule never means promote.

Latency, like with like: production's figure is its time in the app, measured in process; the
candidate's ``duration_ms`` is a round trip from the shadow client (network, connection, queueing
included). When most of the candidate's answers carry its own time (``Server-Timing``, recorded as
``shadow.candidate.server_duration_ms``), the report gives that too (``candidate.server_p50_ms``...)
and compares it (``latency_basis`` ``"server_timing"``); else ``latency_basis`` is ``"round_trip"``.

Decision depth: ``auc_diff`` (with ground truth: ``{estimate, ci, p, method}``, DeLong's test by
default), ``drift`` (``features``: per recorded input with a ``--reference``, ``{n, psi, ks, ks_p}``;
``scores``: PSI of the candidate's scores against production's; ``max_psi`` over the inputs) and
``disagreements`` (the ``--top`` exchanges with the largest score difference).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

from .._outcomes import OUTCOMES, Outcome
from . import stats
from .aggregate import MAX_GROUPS, Aggregate, Group, ReportOptions
from .drift import score_psi
from .ground_truth import ground_truth_metrics
from .metrics import policy_metrics
from .policy import Policy, RuleResult, effective_policy

__all__ = ["EXIT_CODES", "LATENCY_BASES", "build_report", "group_report"]

EXIT_CODES = {"promote": 0, "reject": 1, "insufficient": 2}

# latency_basis -> what the candidate's compared latency is, as the text and HTML reports label it
LATENCY_BASES = {
    "server_timing": "candidate server time (Server-Timing)",
    "round_trip": "candidate round trip",
}


def _latency(res: stats.Reservoir[float]) -> dict[str, Any]:
    values = sorted(res.items)
    return {
        "p50_ms": stats.percentile(values, 50),
        "p95_ms": stats.percentile(values, 95),
        "p99_ms": stats.percentile(values, 99),
        "mean_ms": sum(values) / len(values) if values else None,
        "max_ms": values[-1] if values else None,
        "latency_n": res.seen,
        "latency_exact": res.exact,
    }


def _ratio(a: int, b: int) -> float | None:
    return a / b if b else None


def _server_latency(group: Group) -> tuple[str, dict[str, Any]]:
    """``(latency_basis, candidate server figures)``: the figures are given only when most (more than
    half) of the candidate's answers carried a server time."""
    server, answers = group.lat_candidate_server, group.lat_candidate.seen
    basis = "server_timing" if server.seen and 2 * server.seen > answers else "round_trip"
    figures = _latency(server)
    out = {f"server_{k}": (figures[k] if basis == "server_timing" else None) for k in figures}
    out["server_latency_n"] = server.seen
    out["server_latency_exact"] = server.exact
    return basis, out


def group_report(group: Group, options: ReportOptions) -> dict[str, Any]:
    o = group.outcomes
    compared = o[Outcome.MATCH] + o[Outcome.MISMATCH]
    attempted = compared + o[Outcome.ERROR] + o[Outcome.TIMEOUT]
    ci = stats.wilson(o[Outcome.MATCH], compared)
    primary = _latency(group.lat_primary)
    candidate = _latency(group.lat_candidate)
    basis, server = _server_latency(group)
    candidate.update(server)
    gt: dict[str, Any] | None = None
    if options.labels is not None:
        gp, gc, gt = ground_truth_metrics(
            group.joined, options.threshold, options.auc_ci, options.bootstrap, options.seed
        )
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
        "agreement": _ratio(o[Outcome.MATCH], compared),
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
        "error_rate": _ratio(o[Outcome.ERROR], attempted),
        "timeout_rate": _ratio(o[Outcome.TIMEOUT], attempted),
        "dropped": o[Outcome.DROPPED],
        "skipped": o[Outcome.SKIPPED],
        "reasons": dict(sorted(group.reasons.items())),
        "reasons_by_outcome": {  # outcomes in their table's order (mismatch, ..., dropped, skipped)
            outcome: dict(sorted(reasons.items()))
            for outcome, reasons in sorted(
                group.reasons_by_outcome.items(),
                key=lambda item: (OUTCOMES.index(item[0]) if item[0] in OUTCOMES else len(OUTCOMES), item[0]),
            )
        },
        "error_types": dict(sorted(group.error_types.items())),
        "first_start_ns": group.first_ns,
        "last_start_ns": group.last_ns,
        "latency_basis": basis,
        "primary": primary,
        "candidate": candidate,
        "ground_truth": gt,
        "auc_diff": gt.pop("auc_diff_test") if gt is not None else None,
        "drift": _drift(group),
        "disagreements": _disagreements(group, options.trace_url),
    }


def _drift(group: Group) -> dict[str, Any]:
    features = {name: live.result() for name, live in sorted(group.inputs.items())}
    psis = [f["psi"] for f in features.values() if f["psi"] is not None]
    return {
        "features": features,
        "max_psi": max(psis) if psis else None,
        "scores": {"n": group.scores.seen, "exact": group.scores.exact, "psi": score_psi(group.scores.items)},
    }


_TRACE_ID = re.compile(r"[0-9a-f]{32}")


def trace_link(template: str | None, trace_id: str) -> str | None:
    """The user's trace viewer URL for ``trace_id`` (``--trace-url``, validated by the CLI); ``None``
    unless the trace id is an OTLP one (32 lowercase hex digits): nothing else goes into a link."""
    if template is None or not _TRACE_ID.fullmatch(trace_id):
        return None
    return template.replace("{trace_id}", quote(trace_id, safe=""))


def _disagreements(group: Group, trace_url: str | None) -> list[dict[str, Any]]:
    return [
        {
            "correlation_id": None if cid is None else str(cid),
            "trace_id": trace_id,
            "primary": p,
            "candidate": c,
            "abs_diff": gap,
            "paths": [str(x) for x in paths] if isinstance(paths, list) else [],
            "trace_url": trace_link(trace_url, trace_id),
        }
        for gap, _seq, cid, trace_id, p, c, paths in group.disagreements()
    ]


def _judge(g: dict[str, Any], policy: Policy) -> tuple[str, list[RuleResult]]:
    results = [rule.check(policy_metrics(g)) for rule in policy.rules]
    if g["compared"] < policy.min_samples or g["compared"] == 0:
        return "insufficient", results
    if any(r.status == "FAIL" for r in results):
        return "reject", results
    # Few labels make a pass weak evidence, not a failure: a significant difference stays significant.
    gt = g["ground_truth"]
    if gt is not None and gt["n"] < policy.min_labelled:
        return "insufficient", results
    if any(r.status == "N/A" for r in results):
        return "insufficient", results
    return "promote", results


def build_report(agg: Aggregate, options: ReportOptions, policy: Policy) -> dict[str, Any]:
    """The report; ``policy`` without a rule is replaced by the default policy."""
    policy = effective_policy(policy, options.labels is not None)
    targets: list[dict[str, Any]] = []
    verdicts: list[str] = []
    for key in sorted(agg.groups):
        g = group_report(agg.groups[key], options)
        verdict, results = _judge(g, policy)
        g["verdict"] = verdict
        g["rules"] = [
            {
                "rule": r.rule.text,
                "left": r.left,
                "right": r.right,
                "status": r.status,
                "missing": list(r.missing),
                "note": r.note,
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
    if verdict == "promote" and agg.beyond_groups:  # no verdict on groups never looked at
        verdict = "insufficient"
    return {
        "verdict": verdict,
        "exit_code": EXIT_CODES[verdict],
        "spans": agg.spans,
        "malformed_lines": agg.malformed,
        "duplicate_spans": agg.duplicates,
        "max_groups": MAX_GROUPS,
        "spans_beyond_max_groups": agg.beyond_groups,
        "out_of_range_values": agg.out_of_range,
        "score_field": agg.score_field,
        "numeric_fields": agg.numeric_fields,
        "threshold": options.threshold,
        "ground_truth": options.labels is not None,
        "labels": len(options.labels) if options.labels is not None else None,
        "policy": {
            "source": policy.source,
            "description": policy.description,
            "min_samples": policy.min_samples,
            "min_labelled": policy.min_labelled,
            "require": [r.text for r in policy.rules],
        },
        "targets": targets,
    }
