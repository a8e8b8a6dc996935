"""The one table of the metrics a promotion rule can name, and where each sits in a group's report.

The rule parser (:mod:`.policy`) knows a name only if it is here, and :func:`policy_metrics` reads
every name here from the report, so the two cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = [
    "LABEL_METRICS",
    "LATENCY_METRICS",
    "METRICS",
    "QUALITY_METRICS",
    "SERVER_LATENCY_METRICS",
    "SIDES",
    "policy_metrics",
]

SIDES = ("primary", "candidate")
# primary: time in the app, measured in process; candidate: the round trip from the shadow client
LATENCY_METRICS = ("p50_ms", "p95_ms", "p99_ms")
# candidate only: its own time from its Server-Timing header, comparable with primary's in-process figures;
# unavailable unless most of the candidate's answers carried it
SERVER_LATENCY_METRICS = ("server_p50_ms", "server_p95_ms", "server_p99_ms")
QUALITY_METRICS = ("accuracy", "precision", "recall", "f1", "auc", "brier")  # with ground truth

# Where a value sits in a group's report: dictionary keys and list indices, outermost first.
ReportPath = tuple[str | int, ...]

# name -> (meaning, where); the side metrics follow as "primary.p50_ms", "candidate.auc", ...
_GROUP_METRICS: dict[str, tuple[str, ReportPath]] = {
    "n": ("shadow exchanges (all outcomes)", ("n",)),
    "compared": (
        "comparisons: match + mismatch, less those that are no evidence (production failed, field missing)",
        ("compared",),
    ),
    "agreement": ("match / compared (the same exclusions)", ("agreement",)),
    "agreement_low": ("Wilson 95% CI lower bound of agreement", ("agreement_ci", 0)),
    "agreement_high": ("Wilson 95% CI upper bound of agreement", ("agreement_ci", 1)),
    "flip_rate": ("share of scored pairs whose decision differs", ("flip_rate",)),
    "error_rate": ("error / (compared + error + timeout), where production did not fail", ("error_rate",)),
    "timeout_rate": (
        "timeout / (compared + error + timeout), where production did not fail",
        ("timeout_rate",),
    ),
    "dropped": ("dropped count", ("dropped",)),
    "skipped": ("skipped count", ("skipped",)),
    "mean_abs_diff": ("mean |primary - candidate| of the score field", ("mean_abs_diff",)),
    "max_abs_diff": ("max |primary - candidate| of the score field", ("max_abs_diff",)),
    "gt_n": ("requests with both scores and a label", ("ground_truth", "n")),
    "mcnemar_p": ("McNemar p-value on decisions (ground truth)", ("ground_truth", "mcnemar", "p_value")),
    "mcnemar_p_worse": (
        "mcnemar_p when production is right more often where the decisions differ, else 1",
        ("ground_truth", "mcnemar", "p_value_worse"),
    ),
    "auc_diff": ("candidate.auc - primary.auc", ("auc_diff", "estimate")),
    "auc_diff_low": (
        "95% CI lower bound of auc_diff (DeLong, or --auc-ci bootstrap)",
        ("auc_diff", "ci", 0),
    ),
    "auc_diff_high": (
        "95% CI upper bound of auc_diff (DeLong, or --auc-ci bootstrap)",
        ("auc_diff", "ci", 1),
    ),
    "auc_diff_p": ("DeLong's two-sided p-value of auc_diff", ("auc_diff", "p")),
    "drift.max_psi": ("largest PSI of a recorded input against --reference", ("drift", "max_psi")),
    "drift.score_psi": ("PSI of the candidate's scores against production's", ("drift", "scores", "psi")),
}

METRICS: dict[str, tuple[str, ReportPath]] = {
    **_GROUP_METRICS,
    **{
        f"{side}.{name}": (f"{side} {name}", (side, name))
        for side in SIDES
        for name in (*LATENCY_METRICS, *QUALITY_METRICS)
    },
    **{
        f"candidate.{name}": (f"candidate server time (Server-Timing) {name[7:]}", ("candidate", name))
        for name in SERVER_LATENCY_METRICS
    },
}


# the names that need labels (--ground-truth): a group none of whose spans carries a correlation id
# cannot have any, and is judged without the rules that name them
LABEL_METRICS: frozenset[str] = frozenset(
    name
    for name, (_meaning, path) in METRICS.items()
    if path[0] in ("ground_truth", "auc_diff") or (path[0] in SIDES and path[1] in QUALITY_METRICS)
)


def _lookup(group: Mapping[str, Any], path: ReportPath) -> float | None:
    """The value at ``path``; ``None`` when it, or anything on the way to it, is missing."""
    value: Any = group
    for step in path:
        if value is None:
            return None
        value = value[step] if isinstance(step, int) else value.get(step)
    found: float | None = value
    return found


def policy_metrics(group: Mapping[str, Any]) -> dict[str, float | None]:
    """Every name of :data:`METRICS` with its value in one group's report."""
    return {name: _lookup(group, path) for name, (_meaning, path) in METRICS.items()}
