"""The report as plain text, the default output of ``shadow-middleware report``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .._outcomes import OUTCOMES
from .build import LATENCY_BASES
from .format import clean, fmt
from .metrics import LATENCY_METRICS, QUALITY_METRICS
from .spans import MAX_VALUE

__all__ = ["fmt_p", "format_text", "latency_note", "status_matrix", "why_rows"]

TEXT_DISAGREEMENTS = 5  # the text shows the first few; JSON and HTML all --top


def fmt_p(value: float | None) -> str:
    """A p-value: 4 decimals, or scientific notation below 0.0001."""
    if value is None:
        return "n/a"
    return f"{value:.4f}" if value >= 1e-4 or value == 0 else f"{value:.1e}"


def _table(rows: Sequence[Sequence[str]]) -> list[str]:
    rows = [[clean(c) for c in row] for row in rows]  # escaped first: the widths are what is shown
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = []
    for row in rows:
        cells = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]
        out.append("  " + "  ".join(cells).rstrip())
    return out


def why_rows(g: Mapping[str, Any]) -> list[tuple[str, str, str, int]]:
    """``(outcome, "reason" | "error type", value, count)`` for a group: why exchanges did not match."""
    rows = [
        (outcome, "reason", reason, count)
        for outcome, reasons in g["reasons_by_outcome"].items()
        for reason, count in reasons.items()
    ]
    rows += [("error / timeout", "error type", etype, count) for etype, count in g["error_types"].items()]
    return rows


def status_matrix(g: Mapping[str, Any]) -> tuple[list[str], list[str], list[list[int]]]:
    """``(production statuses, candidate statuses, counts[row][column])`` of a group's status pairs;
    ``-`` for a side without a status (no answer)."""

    def order(status: Any) -> tuple[int, int]:
        return (1, 0) if status is None else (0, int(status))

    rows = sorted({e["primary"] for e in g["statuses"]}, key=order)
    cols = sorted({e["candidate"] for e in g["statuses"]}, key=order)
    counts = [[0] * len(cols) for _ in rows]
    for e in g["statuses"]:
        counts[rows.index(e["primary"])][cols.index(e["candidate"])] += e["n"]
    name = ["-" if x is None else str(x) for x in rows], ["-" if x is None else str(x) for x in cols]
    return name[0], name[1], counts


def latency_note(g: Mapping[str, Any]) -> str:
    """Which latencies the report compares, in words."""
    c = g["candidate"]
    discarded = c.get("server_latency_discarded") or 0
    if discarded:
        tail = f"; {discarded} Server-Timing value(s) longer than the measured round trip discarded"
    else:
        tail = ""
    if g["latency_basis"] == "server_timing":
        return f"latency compared: production in-process vs {LATENCY_BASES['server_timing']}" + tail
    why = (
        f"Server-Timing on {c['server_latency_n']} of {c['latency_n']} answers only"
        if c["server_latency_n"]
        else "no Server-Timing from the candidate"
    )
    return (
        f"latency: production in-process vs {LATENCY_BASES['round_trip']} (network and shadow client "
        f"included), not like for like: {why}" + tail
    )


def format_text(report: Mapping[str, Any]) -> str:
    lines: list[str] = []
    field_name = report["score_field"]
    lines.append(
        f"shadow report: {report['spans']} shadow spans, {len(report['targets'])} target/route group(s); "
        f"score field {field_name or 'n/a'}, decision threshold {report['threshold']}"
    )
    if report["malformed_lines"]:
        lines.append(f"({report['malformed_lines']} malformed line(s) skipped, see stderr)")
    if report.get("skipped_lines"):
        lines.append(f"({report['skipped_lines']} line(s) that are not OTLP skipped, see stderr)")
    join = report.get("label_join")
    if join is not None:
        lines.append(
            f"labels: {join['labels']} usable; {join['without_exchange']} with no exchange in the spans; "
            f"{join['conflicting_ids']} id(s) with conflicting labels dropped"
            f"{', ' + str(join['duplicate_rows']) + ' repeated row(s)' if join['duplicate_rows'] else ''}"
        )
    if report["duplicate_spans"]:
        lines.append(f"({report['duplicate_spans']} duplicate span(s) ignored: same traceId and spanId)")
    if report["spans_beyond_max_groups"]:
        lines.append(
            f"({report['spans_beyond_max_groups']} span(s) of target/route groups beyond the first "
            f"{report['max_groups']} not reported: no promotion without them)"
        )
    if report["out_of_range_values"]:
        n = report["out_of_range_values"]
        lines.append(f"({n} recorded number(s) not finite or beyond ±{MAX_VALUE:g} ignored)")
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
            f"  agreement {fmt(g['agreement'])}"
            + (f"  (95% CI {ci[0]:.4f} - {ci[1]:.4f})" if ci else "")
            + f"; error rate {fmt(g['error_rate'])}, timeout rate {fmt(g['timeout_rate'])}"
        )
        for note in g["notes"]:
            lines.append(f"  note: {note}")
        if g["scored"]:
            lines.append(
                f"  decision flips {g['flips']} / {g['scored']} = {fmt(g['flip_rate'])}; "
                f"|primary - candidate| {field_name}: mean {fmt(g['mean_abs_diff'])}, "
                f"max {fmt(g['max_abs_diff'])}"
            )
        for name, d in g["field_diffs"].items():
            if name != field_name:
                lines.append(
                    f"  |primary - candidate| {name}: mean {fmt(d['mean_abs'])}, max {fmt(d['max_abs'])}"
                )
        reasons = [
            f"{reason} {count} ({outcome})"
            for outcome, by_reason in g["reasons_by_outcome"].items()
            for reason, count in by_reason.items()
        ]
        if reasons:
            lines.append("  reasons: " + ", ".join(reasons))
        if g["error_types"]:
            lines.append("  error types: " + ", ".join(f"{k} {v}" for k, v in g["error_types"].items()))
        if g["statuses"]:
            prod, cand, counts = status_matrix(g)
            rows = [["status: production \\ candidate", *cand]]
            rows += [[p_status, *map(str, row)] for p_status, row in zip(prod, counts, strict=True)]
            lines.append("")
            lines.extend(_table(rows))
            if g["statuses_other"]:
                lines.append(f"  ({g['statuses_other']} more exchange(s) with other status pairs)")
        p, c = g["primary"], g["candidate"]
        rows = [["latency (ms)", "n", "p50", "p95", "p99", "max"]]
        sides = [("primary (in-process)", p, "")]
        if g["latency_basis"] == "server_timing":
            sides.append((LATENCY_BASES["server_timing"], c, "server_"))
        sides.append((LATENCY_BASES["round_trip"], c, ""))
        for label, side, prefix in sides:
            est = "" if side[prefix + "latency_exact"] else "~"
            rows.append(
                [label, str(side[prefix + "latency_n"])]
                + [est + fmt(side[prefix + k], 2) for k in (*LATENCY_METRICS, "max_ms")]
            )
        lines.append("")
        lines.extend(_table(rows))
        lines.append("  " + latency_note(g))
        gt = g["ground_truth"]
        if gt is not None:
            lines.append("")
            lines.append(
                f"  ground truth: {gt['n']} requests with both scores and a label "
                f"({gt['positives']} positive); {gt['without_label']} scored request(s) without a label"
            )
            if gt["labelled_without_scores"]:
                by = ", ".join(f"{k} {v}" for k, v in gt["labelled_without_scores_by_outcome"].items())
                lines.append(
                    f"  {gt['labelled_without_scores']} labelled exchange(s) without both scores ({by}): "
                    "not in the quality metrics"
                )
            if gt["conflicting_label_exchanges"]:
                lines.append(
                    f"  {gt['conflicting_label_exchanges']} exchange(s) whose id has conflicting labels: "
                    "not in the quality metrics"
                )
        if gt is not None and gt["n"]:  # no table of n/a for a group without a labelled request
            rows = [["metric", "production", "candidate", "diff"]]
            for k in QUALITY_METRICS:
                a, b = p.get(k), c.get(k)
                rows.append([k, fmt(a), fmt(b), fmt(b - a) if a is not None and b is not None else "n/a"])
            lines.extend(_table(rows))
            mc = gt["mcnemar"]
            lines.append(
                f"  McNemar ({mc['method']}): production-only correct {mc['primary_only_correct']}, "
                f"candidate-only correct {mc['candidate_only_correct']}, p = {fmt(mc['p_value'])}"
            )
            aci = gt["auc_diff_ci"]
            test = g["auc_diff"] or {}
            if test.get("method") == "bootstrap":
                how = f"bootstrap 95% CI ({gt['bootstrap_resamples']} paired resamples) "
                tail = ""
            else:
                how = "DeLong 95% CI "
                tail = f", p = {fmt_p(test.get('p'))}"
            lines.append(
                f"  AUC difference (candidate - production) {fmt(gt['auc_diff'])}, {how}"
                + (f"[{aci[0]:.4f}, {aci[1]:.4f}]" if aci else "n/a")
                + tail
            )
        drift = g["drift"]
        if drift["features"]:
            lines.append("")
            missing = any(f.get("reference_missing") for f in drift["features"].values())
            rows = [
                ["input drift vs reference", "n", "PSI", "KS D", "KS p"]
                + (["ref. missing"] if missing else [])
            ]
            for name, f in drift["features"].items():
                rows.append(
                    [name, str(f["n"]), fmt(f["psi"]), fmt(f["ks"]), fmt_p(f["ks_p"])]
                    + ([str(f.get("reference_missing") or 0)] if missing else [])
                )
            lines.extend(_table(rows))
        if drift["scores"]["psi"] is not None:
            lines.append(
                f"  score drift: PSI of candidate vs production scores {fmt(drift['scores']['psi'])}"
            )
        shown = g["disagreements"][:TEXT_DISAGREEMENTS]
        if shown:
            lines.append("")
            lines.append(
                f"  largest disagreements (top {len(shown)} of {len(g['disagreements'])}; all in JSON, HTML)"
            )
            rows = [["|diff|", "production", "candidate", "correlation id", "trace id"]]
            for d in shown:
                cid, trace = d["correlation_id"] or "-", d["trace_id"] or "-"
                rows.append([fmt(d["abs_diff"]), fmt(d["primary"]), fmt(d["candidate"]), cid, trace])
            lines.extend(_table(rows))
        policy = report["policy"]
        if g["rules"] or policy["min_samples"] or policy["min_labelled"]:
            lines.append("")
            lines.append(f"  policy: {policy['description']}")
            given = policy.get("settings_given", [])
            ms = policy["min_samples"]
            if ms:
                ok = "PASS" if g["compared"] >= ms else "INSUFFICIENT"
                default = "" if "min_samples" in given else " (default)"
                lines.append(f"    {ok:<5} min_samples = {ms}{default}   (compared {g['compared']})")
            ml = policy["min_labelled"]
            if ml and gt is not None and g["labels_possible"]:
                ok = "PASS" if gt["n"] >= ml else "INSUFFICIENT"
                default = "" if "min_labelled" in given else " (default)"
                lines.append(f"    {ok:<5} min_labelled = {ml}{default}   (labelled {gt['n']})")
            for r in g["rules"]:
                if r["status"] == "SKIP":
                    detail = r["note"] or "does not apply"
                elif r["status"] == "N/A":
                    detail = (
                        "unavailable: " + ", ".join(r["missing"])
                        if r["missing"]
                        else "undefined (division by 0)"
                    )
                else:
                    detail = f"{fmt(r['left'])} vs {fmt(r['right'])}"
                lines.append(f"    {r['status']:<5} {r['rule']}   ({detail})")
        why = f" ({g['verdict_reason']})" if g["verdict_reason"] else ""
        lines.append(f"  group verdict: {g['verdict']}{why}")
    lines.append("")
    if report["policy"]["source"] == "default":
        lines.append(
            f"policy: {report['policy']['description']}; rules of your own (--require, --policy) "
            "replace the default rules"
        )
    lines.append(f"verdict: {report['verdict'].upper()} (exit status {report['exit_code']})")
    # every line is one of ours: a control character in one came from the input (a route, an id...)
    return "\n".join(clean(line) for line in lines) + "\n"
