"""Small, dependency-free statistics for ``shadow-middleware report``.

Pure Python (stdlib only). Conventions follow the usual references so tests can check against them:

* :func:`wilson` -- Wilson score interval for a binomial proportion (no continuity correction).
* :func:`percentile` -- linear interpolation between closest ranks (numpy's default ``"linear"``).
* :func:`auc` -- ROC AUC as the Mann-Whitney U statistic, ties counted one half (sklearn's
  ``roc_auc_score``).
* :func:`mcnemar` -- exact two-sided binomial test on the discordant pairs when there are fewer than
  :data:`MCNEMAR_EXACT_BELOW` of them, else the chi-square statistic with continuity correction.
* :func:`bootstrap_auc_diff` -- paired percentile bootstrap of ``auc(candidate) - auc(primary)``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = [
    "MCNEMAR_EXACT_BELOW",
    "Classification",
    "Reservoir",
    "auc",
    "bootstrap_auc_diff",
    "brier",
    "classification",
    "mcnemar",
    "percentile",
    "roc_curve",
    "wilson",
]

Z95 = 1.959963984540054  # the 0.975 quantile of the standard normal
CI_LEVEL = 0.95  # of bootstrap_auc_diff
MCNEMAR_EXACT_BELOW = 25

T = TypeVar("T")


def wilson(successes: int, n: int) -> tuple[float, float] | None:
    """Wilson 95% score interval for ``successes / n``; ``None`` when ``n == 0``."""
    if n <= 0:
        return None
    p = successes / n
    z2 = Z95 * Z95
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = Z95 * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0..100) of already sorted values, linear interpolation."""
    n = len(sorted_values)
    if n == 0:
        return None
    pos = (n - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, n - 1)
    frac = pos - lo
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * frac


class Reservoir(Generic[T]):
    """Keep all items up to ``capacity``, then a uniform sample of that size (Algorithm R, seeded)."""

    __slots__ = ("_rng", "capacity", "items", "seen")

    def __init__(self, capacity: int, seed: int = 0) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.capacity = capacity
        self.items: list[T] = []
        self.seen = 0
        self._rng = random.Random(seed)

    def add(self, item: T) -> None:
        self.seen += 1
        if len(self.items) < self.capacity:
            self.items.append(item)
        else:
            j = self._rng.randrange(self.seen)
            if j < self.capacity:
                self.items[j] = item

    @property
    def exact(self) -> bool:
        """True when every item seen is kept."""
        return self.seen == len(self.items)


def _tie_groups(scores: Sequence[float]) -> list[list[int]]:
    """Indices grouped by equal score, in ascending score order."""
    order = sorted(range(len(scores)), key=scores.__getitem__)
    groups: list[list[int]] = []
    last: float | None = None
    for i in order:
        if groups and scores[i] == last:
            groups[-1].append(i)
        else:
            groups.append([i])
            last = scores[i]
    return groups


def _weighted_auc(
    groups: list[list[int]], labels: Sequence[int], weights: Sequence[int] | None
) -> float | None:
    neg_below = 0.0
    total = 0.0
    pos_all = 0.0
    for group in groups:
        wp = wn = 0.0
        for i in group:
            w = 1.0 if weights is None else float(weights[i])
            if labels[i]:
                wp += w
            else:
                wn += w
        total += wp * neg_below + 0.5 * wp * wn
        neg_below += wn
        pos_all += wp
    if pos_all == 0 or neg_below == 0:
        return None
    return total / (pos_all * neg_below)


def auc(scores: Sequence[float], labels: Sequence[int]) -> float | None:
    """ROC AUC (Mann-Whitney, ties 1/2); ``None`` unless both classes are present."""
    if len(scores) != len(labels):
        raise ValueError("scores and labels differ in length")
    return _weighted_auc(_tie_groups(scores), labels, None)


def roc_curve(scores: Sequence[float], labels: Sequence[int]) -> list[tuple[float, float]]:
    """ROC points ``(fpr, tpr)`` from (0, 0) to (1, 1), one per distinct threshold (descending)."""
    pos = sum(1 for y in labels if y)
    neg = len(labels) - pos
    if pos == 0 or neg == 0:
        return []
    points = [(0.0, 0.0)]
    tp = fp = 0
    for group in reversed(_tie_groups(scores)):
        for i in group:
            if labels[i]:
                tp += 1
            else:
                fp += 1
        points.append((fp / neg, tp / pos))
    return points


def brier(scores: Sequence[float], labels: Sequence[int]) -> float | None:
    """Mean squared difference between the score and the 0/1 label."""
    if not scores:
        return None
    return sum((s - y) ** 2 for s, y in zip(scores, labels, strict=True)) / len(scores)


@dataclass(frozen=True, slots=True)
class Classification:
    n: int
    tp: int
    fp: int
    tn: int
    fn: int

    @property
    def accuracy(self) -> float | None:
        return (self.tp + self.tn) / self.n if self.n else None

    @property
    def precision(self) -> float:
        """``tp / (tp + fp)``; 0 when nothing is predicted positive (sklearn's ``zero_division=0``)."""
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        """``tp / (tp + fn)``; 0 when there are no positives (sklearn's ``zero_division=0``)."""
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @property
    def f1(self) -> float:
        denom = 2 * self.tp + self.fp + self.fn
        return 2 * self.tp / denom if denom else 0.0


def classification(decisions: Sequence[bool], labels: Sequence[int]) -> Classification:
    tp = fp = tn = fn = 0
    for d, y in zip(decisions, labels, strict=True):
        if d and y:
            tp += 1
        elif d:
            fp += 1
        elif y:
            fn += 1
        else:
            tn += 1
    return Classification(len(decisions), tp, fp, tn, fn)


def _binom_two_sided_half(k: int, n: int) -> float:
    """Two-sided exact binomial p-value for ``k`` of ``n`` at p = 1/2."""
    if n == 0:
        return 1.0
    m = min(k, n - k)
    tail = sum(math.comb(n, i) for i in range(m + 1)) / 2.0**n
    return min(1.0, 2.0 * tail)


def mcnemar(b: int, c: int) -> tuple[float, str, float | None]:
    """McNemar's test on discordant counts ``b`` and ``c``: ``(p_value, method, statistic)``.

    ``method`` is ``"exact"`` (binomial, fewer than :data:`MCNEMAR_EXACT_BELOW` discordant pairs; no
    statistic) or ``"chi2"`` (``(|b - c| - 1)^2 / (b + c)``, one degree of freedom).
    """
    n = b + c
    if n < MCNEMAR_EXACT_BELOW:
        return _binom_two_sided_half(b, n), "exact", None
    stat = (max(abs(b - c) - 1, 0)) ** 2 / n
    return math.erfc(math.sqrt(stat / 2.0)), "chi2", stat  # chi-square(1) survival function


def bootstrap_auc_diff(
    primary: Sequence[float],
    candidate: Sequence[float],
    labels: Sequence[int],
    resamples: int = 1000,
    seed: int = 0,
) -> tuple[float, float] | None:
    """Percentile bootstrap 95% CI of ``auc(candidate) - auc(primary)``, resampling rows (paired).

    Resamples with a single class are discarded. ``None`` when the AUCs are undefined or fewer than
    half of the resamples are usable. Cost: O(resamples * n).
    """
    n = len(labels)
    if n == 0 or resamples < 1:
        return None
    gp, gc = _tie_groups(primary), _tie_groups(candidate)
    if _weighted_auc(gp, labels, None) is None:
        return None
    rng = random.Random(seed)
    diffs: list[float] = []
    for _ in range(resamples):
        weights = [0] * n
        for _j in range(n):
            weights[rng.randrange(n)] += 1
        a_p = _weighted_auc(gp, labels, weights)
        a_c = _weighted_auc(gc, labels, weights)
        if a_p is not None and a_c is not None:
            diffs.append(a_c - a_p)
    if len(diffs) < resamples / 2:
        return None
    diffs.sort()
    alpha = (1.0 - CI_LEVEL) / 2.0
    low = percentile(diffs, 100 * alpha)
    high = percentile(diffs, 100 * (1 - alpha))
    assert low is not None and high is not None
    return low, high
