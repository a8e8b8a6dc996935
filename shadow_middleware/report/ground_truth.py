"""Ground truth: read the labels and measure both models on the requests that have one.

Only requests where both models answered with a score and whose correlation id has a label count,
so the two sides are always measured on the same rows.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import stats
from .aggregate import ReportError
from .spans import ErrorHandler

__all__ = ["ground_truth_metrics", "load_labels"]


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
        cl = stats.classification(d, ys)
        sides.append(
            {
                "accuracy": cl.accuracy,
                "precision": cl.precision if joined else None,
                "recall": cl.recall if joined else None,
                "f1": cl.f1 if joined else None,
                "auc": stats.auc(scores, ys) if joined else None,
                "brier": stats.brier(scores, ys),
                "confusion": {"tp": cl.tp, "fp": cl.fp, "tn": cl.tn, "fn": cl.fn},
            }
        )
    b = sum(
        1 for dp, dc, y in zip(decisions[0], decisions[1], ys, strict=True) if dp == bool(y) and dc != bool(y)
    )
    c = sum(
        1 for dp, dc, y in zip(decisions[0], decisions[1], ys, strict=True) if dp != bool(y) and dc == bool(y)
    )
    p_value, method, stat = stats.mcnemar(b, c)
    auc_p, auc_c = sides[0]["auc"], sides[1]["auc"]
    ci = stats.bootstrap_auc_diff(ps, cs, ys, bootstrap, seed) if auc_p is not None else None
    comparison = {
        "n": len(joined),
        "positives": sum(ys),
        "mcnemar": {
            "primary_only_correct": b,
            "candidate_only_correct": c,
            "method": method,
            "statistic": stat,
            "p_value": p_value if joined else None,
            # "not significantly worse" in one rule: the p-value only counts against the candidate
            "p_value_worse": (p_value if b > c else 1.0) if joined else None,
        },
        "auc_diff": auc_c - auc_p if auc_p is not None and auc_c is not None else None,
        "auc_diff_ci": list(ci) if ci is not None else None,
        "bootstrap_resamples": bootstrap,
    }
    return sides[0], sides[1], comparison
