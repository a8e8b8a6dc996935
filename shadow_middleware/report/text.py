"""The report as plain text, the default output of ``shadow-middleware report``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .._outcomes import OUTCOMES
from .format import fmt
from .metrics import LATENCY_METRICS, QUALITY_METRICS

__all__ = ["format_text"]


def _table(rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = []
    for row in rows:
        cells = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]
        out.append("  " + "  ".join(cells).rstrip())
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
            f"  agreement {fmt(g['agreement'])}"
            + (f"  (95% CI {ci[0]:.4f} - {ci[1]:.4f})" if ci else "")
            + f"; error rate {fmt(g['error_rate'])}, timeout rate {fmt(g['timeout_rate'])}"
        )
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
                + [est + fmt(side[k], 2) for k in (*LATENCY_METRICS, "max_ms")]
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
            lines.append(
                f"  AUC difference (candidate - production) {fmt(gt['auc_diff'])}, "
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
                    detail = f"{fmt(r['left'])} vs {fmt(r['right'])}"
                lines.append(f"    {r['status']:<5} {r['rule']}   ({detail})")
        lines.append(f"  group verdict: {g['verdict']}")
    lines.append("")
    lines.append(f"verdict: {report['verdict'].upper()} (exit status {report['exit_code']})")
    return "\n".join(lines) + "\n"
