"""Ground truth: read the labels and measure both models on the requests that have one.

Only requests where both models answered with a score and whose correlation id has a label count,
so the two sides are always measured on the same rows. The AUC difference gets DeLong's test by default
(an exact variance, O(n log n)); ``--auc-ci bootstrap`` gives the paired percentile bootstrap instead
(O(resamples x n), pure Python: minutes for a million rows).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from . import stats
from .aggregate import Joined, Labels, ReportError
from .spans import ErrorHandler
from .tables import SideFileError, csv_rows, is_json_lines, json_objects

__all__ = ["ground_truth_metrics", "load_labels"]


def _label(value: Any) -> int | None:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int | float) and value in (0, 1):
        return int(value)
    if isinstance(value, str) and value.strip().lower() in ("0", "1", "true", "false", "0.0", "1.0"):
        return 1 if value.strip().lower() in ("1", "true", "1.0") else 0
    return None


def load_labels(path: str | Path, on_error: ErrorHandler | None = None) -> Labels:
    """``correlation_id -> 0/1`` from a CSV (header ``correlation_id,label``) or JSON lines file.

    Bad rows are reported to ``on_error(path, line, message)`` and skipped. An id given twice with the
    same label counts once; an id given both labels is dropped from the labels (which one is true is
    unknowable; taking the last would decide it by file order) and counted in ``conflicting``.
    """

    def bad(line: int, msg: str) -> None:
        if on_error is not None:
            on_error(str(path), line, msg)

    labels = Labels()
    try:
        if is_json_lines(path):
            want = "expected an object with correlation_id and label"
            for number, doc in json_objects(path, on_error, want):
                if "correlation_id" not in doc or "label" not in doc:
                    bad(number, want)
                    continue
                cid = doc["correlation_id"]
                if not isinstance(cid, str | int) or isinstance(cid, bool):
                    bad(number, "correlation_id must be a string or an integer")
                    continue
                label = _label(doc["label"])
                if label is None:
                    bad(number, f"label must be 0 or 1, got {str(doc['label'])[:40]!r}")
                    continue
                labels.put(str(cid), label)
        else:
            rows = csv_rows(path)
            fields = next(rows, (0, []))[1]
            if "correlation_id" not in fields or "label" not in fields:
                raise ReportError(f"{path}: expected a CSV header with correlation_id and label")
            at_cid, at_label = fields.index("correlation_id"), fields.index("label")
            fast = {"0": 0, "1": 1}
            for number, row in rows:
                if not row:
                    continue
                cid = row[at_cid] if at_cid < len(row) else ""
                raw = row[at_label] if at_label < len(row) else None
                label = fast.get(raw) if raw is not None else None
                if label is None:
                    label = _label(raw)
                if not cid or label is None:
                    got = raw[:40] if raw else raw
                    bad(number, f"label must be 0 or 1, got {got!r}" if cid else "no correlation_id")
                    continue
                labels.put(cid, label)
    except OSError as exc:
        raise ReportError(f"{path}: {exc.strerror or exc}") from None
    except SideFileError as exc:
        raise ReportError(str(exc)) from None
    return labels


def ground_truth_metrics(
    joined: Joined, threshold: float, auc_ci: str, bootstrap: int, seed: int
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """``(primary, candidate, comparison)`` metrics on the joined rows; ``comparison["auc_diff_test"]``
    is the AUC difference ``{estimate, ci, p, method}`` (``auc_ci``: ``"delong"`` or ``"bootstrap"``)."""
    ps, cs, ys = joined.arrays()
    n = int(ys.size)
    sides: list[dict[str, Any]] = []
    decisions: list[Any] = []
    for scores in (ps, cs):
        d = scores >= threshold
        decisions.append(d)
        tp = int((d & ys).sum())
        fp = int((d & ~ys).sum())
        fn = int((~d & ys).sum())
        cl = stats.Classification(n, tp, fp, n - tp - fp - fn, fn)
        sides.append(
            {
                "accuracy": cl.accuracy,
                "precision": cl.precision if n else None,
                "recall": cl.recall if n else None,
                "f1": cl.f1 if n else None,
                "auc": stats.auc(scores, ys) if n else None,
                "brier": float(np.mean((scores - ys) ** 2)) if n else None,
                "confusion": {"tp": cl.tp, "fp": cl.fp, "tn": cl.tn, "fn": cl.fn},
            }
        )
    p_right, c_right = decisions[0] == ys, decisions[1] == ys
    b = int((p_right & ~c_right).sum())
    c = int((~p_right & c_right).sum())
    p_value, method, stat = stats.mcnemar(b, c)
    auc_p, auc_c = sides[0]["auc"], sides[1]["auc"]
    estimate = auc_c - auc_p if auc_p is not None and auc_c is not None else None
    test: dict[str, Any] | None = None
    if estimate is not None and auc_ci == "bootstrap":
        ci = stats.bootstrap_auc_diff(ps.tolist(), cs.tolist(), ys.astype(int).tolist(), bootstrap, seed)
        test = {"estimate": estimate, "ci": list(ci) if ci else None, "p": None, "method": "bootstrap"}
    elif estimate is not None:
        dl = stats.delong(ps, cs, ys)
        test = {
            "estimate": estimate,
            "ci": [dl.low, dl.high] if dl is not None else None,
            "p": dl.p if dl is not None else None,
            "se": dl.se if dl is not None else None,
            "method": "delong",
        }
    comparison = {
        "n": n,
        "positives": int(ys.sum()),
        "mcnemar": {
            "primary_only_correct": b,
            "candidate_only_correct": c,
            "method": method,
            "statistic": stat,
            "p_value": p_value if n else None,
            # "not significantly worse" in one rule: the p-value only counts against the candidate
            "p_value_worse": (p_value if b > c else 1.0) if n else None,
        },
        "auc_diff": estimate,
        "auc_diff_ci": test["ci"] if test is not None else None,
        "auc_ci_method": auc_ci,
        "bootstrap_resamples": bootstrap if auc_ci == "bootstrap" else None,
        "auc_diff_test": test,
    }
    return sides[0], sides[1], comparison
