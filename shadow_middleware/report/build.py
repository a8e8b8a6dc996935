"""The report (the ``--format json`` document) and the verdict the promotion policy gives it.

Definitions: ``n`` counts every shadow span of a group; ``compared`` = match + mismatch (the denominator
of agreement, and what ``min_samples`` is checked against) *less the exchanges that are no evidence of
agreement*: those where production itself failed (status >= 400: a 503 of production's, a 422 for a bad
request -- nothing of production's to agree with; ``production_failed``, and the status table shows
them) and those where a compared field was absent from both answers (``shadow.reason``
``field_missing``). Error and timeout rates are over the attempted exchanges, compared + error +
timeout, where an error or timeout of the candidate's on a request production failed too is no evidence
against it either: those count in ``production_failed``, not in the rates. A group with fewer
comparisons than ``min_samples`` is ``insufficient``; else one failing rule rejects it; else it is
``insufficient`` when a compared field was missing (a typo in ``compare.fields`` must never read as
agreement), when it has fewer labelled requests than ``min_labelled`` or a rule's figure is unavailable;
else it is promoted. A run's verdict is ``reject`` if any group is rejected, else ``insufficient`` if
any group lacks data, else ``promote``. With no rule given, the default policy applies
(:func:`.policy.effective_policy`): no rule never means promote.

With ground truth, a group none of whose spans carries a correlation id (an id in the path, a batch
route) can have no label: it is judged by the rules that need none -- the default policy without
ground truth, or the user's rules less those naming a label metric (``SKIP``) -- and says so.

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
from .aggregate import MAX_GROUPS, Aggregate, Group, Labels, ReportOptions
from .drift import score_psi
from .ground_truth import ground_truth_metrics
from .metrics import LABEL_METRICS, policy_metrics
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


def _statuses(group: Group) -> list[dict[str, Any]]:
    """The (production, candidate) status pairs, most frequent first."""
    return [
        {"primary": p, "candidate": c, "n": n}
        for (p, c), n in sorted(group.statuses.items(), key=lambda kv: (-kv[1], str(kv[0])))
    ]


def _missing_fields(group: Group) -> list[str]:
    """The compared fields (JSON pointers) the runtime found absent from both answers."""
    found: dict[str, None] = {}
    for listed in group.missing_fields:
        for pointer in listed.split(","):
            if pointer.strip():
                found[pointer.strip()] = None
    return list(found)


def _notes(group: Group, g: dict[str, Any]) -> list[str]:
    """What a reader must know to read the group's figures right, in words."""
    notes = []
    if group.field_missing:
        fields = ", ".join(g["missing_fields"]) or "(not named)"
        notes.append(
            f"compared field(s) {fields} absent from both answers in {group.field_missing} exchange(s): "
            "no evidence of agreement, kept out of it, and no promotion while fields are missing -- "
            "check compare.fields for a typo"
        )
    o = group.outcomes
    if o[Outcome.MATCH] and not o[Outcome.MISMATCH] and not group.valued and not group.field_missing:
        # spans of a runtime before field_missing: a typo in compare.fields read as "match" everywhere
        notes.append(
            "every comparison matched, and no compared value is recorded on any span: if compare.fields "
            "names fields, none of them may exist in the answers -- check it for a typo"
        )
    if group.primary_failed:
        notes.append(
            f"production itself failed (status >= 400) in {group.primary_failed} exchange(s): kept out "
            "of agreement and the error rates (see the status table)"
        )
    if group.server_discarded:
        notes.append(
            f"{group.server_discarded} Server-Timing value(s) longer than the measured round trip: "
            "not believed, discarded"
        )
    if g["ground_truth"] is not None and not g["labels_possible"]:
        notes.append(
            "no span of this group carries a correlation id, so no label can join: judged by the "
            "rules that need no labels"
        )
    return notes


def group_report(group: Group, options: ReportOptions) -> dict[str, Any]:
    o = group.outcomes
    agreed = o[Outcome.MATCH] - group.excluded_match
    compared = agreed + o[Outcome.MISMATCH] - group.excluded_mismatch
    errors = o[Outcome.ERROR] - group.excluded_error
    timeouts = o[Outcome.TIMEOUT] - group.excluded_timeout
    attempted = compared + errors + timeouts
    ci = stats.wilson(agreed, compared)
    primary = _latency(group.lat_primary)
    candidate = _latency(group.lat_candidate)
    basis, server = _server_latency(group)
    candidate.update(server)
    candidate["server_latency_discarded"] = group.server_discarded
    gt: dict[str, Any] | None = None
    if options.labels is not None:
        gp, gc, gt = ground_truth_metrics(
            group.joined, options.threshold, options.auc_ci, options.bootstrap, options.seed
        )
        gt["scored"] = group.scored
        gt["scored_with_id"] = group.scored_with_id
        gt["without_label"] = group.scored_with_id - len(group.joined)
        gt["labelled_without_scores"] = sum(group.labelled_unscored.values())
        gt["labelled_without_scores_by_outcome"] = dict(sorted(group.labelled_unscored.items()))
        gt["conflicting_label_exchanges"] = group.label_conflicts
        primary.update(gp)
        candidate.update(gc)
    g = {
        "target": group.target,
        "route": group.route,
        "n": group.n,
        "compared": compared,
        "outcomes": dict(o),
        "other_outcomes": group.other_outcomes,
        "agreement": _ratio(agreed, compared),
        "production_failed": group.primary_failed,
        "field_missing": group.field_missing,
        "missing_fields": _missing_fields(group),
        "statuses": _statuses(group),
        "statuses_other": group.statuses_other,
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
        "error_rate": _ratio(errors, attempted),
        "timeout_rate": _ratio(timeouts, attempted),
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
        "labels_possible": group.with_id > 0,
    }
    g["notes"] = _notes(group, g)
    return g


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


_NO_LABELS = "needs labels: no span of this group carries a correlation id"


def _judge(g: dict[str, Any], policy: Policy) -> tuple[str, str | None, list[RuleResult]]:
    """``(verdict, why it is not promote, rule results)``."""
    metrics = policy_metrics(g)
    labels = g["ground_truth"] is not None and g["labels_possible"]
    results = [
        RuleResult(rule, None, None, "SKIP", (), _NO_LABELS)
        if not labels and g["ground_truth"] is not None and LABEL_METRICS.intersection(rule.names())
        else rule.check(metrics)
        for rule in policy.rules
    ]
    missing = (
        f"compared field(s) missing from both answers: {', '.join(g['missing_fields']) or '(not named)'}"
        if g["field_missing"]
        else None
    )
    if g["compared"] < policy.min_samples or g["compared"] == 0:
        why = f"{g['compared']} comparison(s), fewer than min_samples = {policy.min_samples}"
        why = why if g["compared"] else "no comparison"
        return "insufficient", f"{missing}; {why}" if missing else why, results
    failed = [r.rule.text for r in results if r.status == "FAIL"]
    if failed:
        return "reject", "failed: " + "; ".join(failed), results
    if missing:
        return "insufficient", missing, results
    # Few labels make a pass weak evidence, not a failure: a significant difference stays significant.
    gt = g["ground_truth"]
    if labels and gt["n"] < policy.min_labelled:
        return "insufficient", f"{gt['n']} labelled, fewer than min_labelled = {policy.min_labelled}", results
    unavailable = [r.rule.text for r in results if r.status == "N/A"]
    if unavailable:
        return "insufficient", "figure unavailable: " + "; ".join(unavailable), results
    return "promote", None, results


def build_report(agg: Aggregate, options: ReportOptions, policy: Policy) -> dict[str, Any]:
    """The report; ``policy`` without a rule is replaced by the default policy."""
    given = policy
    policy = effective_policy(given, options.labels is not None)
    # a group that can have no label is judged as a run without ground truth would judge it
    unlabelled = effective_policy(given, False) if policy.source == "default" else policy
    targets: list[dict[str, Any]] = []
    verdicts: list[str] = []
    for key in sorted(agg.groups):
        g = group_report(agg.groups[key], options)
        judged_by = policy if g["labels_possible"] or options.labels is None else unlabelled
        verdict, why, results = _judge(g, judged_by)
        g["verdict"] = verdict
        g["verdict_reason"] = why
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
        "label_join": _label_join(agg, options),
        "policy": {
            "source": policy.source,
            "description": policy.description,
            "min_samples": policy.min_samples,
            "min_labelled": policy.min_labelled,
            # the settings the user gave; the others are the defaults
            "settings_given": [name for name in ("min_samples", "min_labelled") if given.is_set(name)],
            "require": [r.text for r in policy.rules],
        },
        "targets": targets,
    }


def _label_join(agg: Aggregate, options: ReportOptions) -> dict[str, Any] | None:
    """What of the labels file joined, and what could not (with ground truth)."""
    labels = options.labels
    if labels is None:
        return None
    conflicting = labels.conflicting if isinstance(labels, Labels) else set()
    return {
        "labels": len(labels),
        "without_exchange": len(labels) - agg.labels_seen,
        "conflicting_ids": len(conflicting),
        "duplicate_rows": labels.duplicates if isinstance(labels, Labels) else 0,
    }
