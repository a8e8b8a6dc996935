"""Statistics for ``shadow-middleware report``.

Conventions follow the usual references so tests can check against them (the report needs numpy, the
``report`` extra; the two-sample Kolmogorov-Smirnov p-value is in :mod:`.kstest`):

* :func:`wilson` -- Wilson score interval for a binomial proportion (no continuity correction).
* :func:`percentile` -- linear interpolation between closest ranks (numpy's default ``"linear"``).
* :func:`auc` -- ROC AUC as the Mann-Whitney U statistic, ties counted one half (sklearn's
  ``roc_auc_score``).
* :func:`mcnemar` -- exact two-sided binomial test on the discordant pairs when there are fewer than
  :data:`MCNEMAR_EXACT_BELOW` of them, else the chi-square statistic with continuity correction.
* :func:`bootstrap_auc_diff` -- paired percentile bootstrap of ``auc(candidate) - auc(primary)``.
* :func:`delong` -- DeLong's test for the difference of two correlated AUCs, with Sun & Xu's (2014)
  O(n log n) algorithm: midranks of the pooled, positive and negative scores give each row's structural
  components; their covariance gives the variance of the difference. Normal 95% interval and two-sided
  p-value. Exact (no resampling) and fast: 1M rows in about a second.
* :func:`psi` -- the population stability index ``sum (a - e) ln(a / e)`` over bins, proportions of 0
  replaced by :data:`PSI_EPSILON`.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np

__all__ = [
    "MCNEMAR_EXACT_BELOW",
    "PSI_EPSILON",
    "Classification",
    "DeLong",
    "Reservoir",
    "auc",
    "bootstrap_auc_diff",
    "brier",
    "classification",
    "delong",
    "mcnemar",
    "midranks",
    "percentile",
    "psi",
    "roc_curve",
    "wilson",
]

Z95 = 1.959963984540054  # the 0.975 quantile of the standard normal
CI_LEVEL = 0.95  # of bootstrap_auc_diff
MCNEMAR_EXACT_BELOW = 25
# A bin that is empty on one side would make PSI infinite: its proportion counts as 0.01 % instead
# (the usual choice; an empty bin against a proportion p then adds (p - 1e-4) ln(p / 1e-4)).
PSI_EPSILON = 1e-4

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
    """Keep all items up to ``capacity``, then a uniform sample of that size (seeded).

    Li's Algorithm L: instead of a random draw per item (Algorithm R), it draws how many items to skip
    before the next replacement, so a full reservoir costs a counter increment per item. The generator
    (5 KB of state) is created when the reservoir first fills: a report keeps several reservoirs per
    target/route group, most never full."""

    __slots__ = ("_next", "_rng", "_seed", "_w", "capacity", "items", "seen")

    def __init__(self, capacity: int, seed: int = 0) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.capacity = capacity
        self.items: list[T] = []
        self.seen = 0
        self._seed = seed
        self._rng: random.Random | None = None
        self._w = 1.0
        self._next = 0  # the 1-based index of the next item that enters a full reservoir

    def _skip(self) -> None:
        rng = self._rng
        if rng is None:
            rng = self._rng = random.Random(self._seed)
        self._w *= math.exp(math.log(1.0 - rng.random()) / self.capacity)
        if self._w >= 1.0:  # underflow of the log below; practically unreachable
            self._w = 1.0 - 1e-16
        self._next = self.seen + int(math.log(1.0 - rng.random()) / math.log1p(-self._w)) + 1

    def add(self, item: T) -> None:
        self.seen += 1
        if self.seen < self._next:
            return
        if len(self.items) < self.capacity:
            self.items.append(item)
            if len(self.items) == self.capacity:
                self._skip()
            return
        assert self._rng is not None  # created by _skip when the reservoir filled
        self.items[self._rng.randrange(self.capacity)] = item
        self._skip()

    def fill(self, items: list[T], seen: int) -> None:
        """Take ``items`` as the sample of ``seen`` items another engine drew (the SQL source's
        ``groupArraySample`` of the same capacity): all of them when ``seen <= capacity``."""
        self.items = list(items)[: self.capacity]
        self.seen = seen

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


def auc(scores: Any, labels: Any) -> float | None:
    """ROC AUC (Mann-Whitney from midranks, ties 1/2); ``None`` unless both classes are present."""
    if len(scores) != len(labels):
        raise ValueError("scores and labels differ in length")
    y = np.asarray(labels, dtype=bool)
    m = int(y.sum())
    n = int(y.size - m)
    if m == 0 or n == 0:
        return None
    ranks = midranks(scores)
    return float((ranks[y].sum() - m * (m + 1) / 2.0) / (m * n))


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


def midranks(values: Any) -> Any:
    """1-based ranks of ``values``, ties sharing the mean of their ranks (scipy's ``rankdata``)."""
    x = np.asarray(values, dtype=np.float64)
    n = x.size
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    first = np.empty(n, dtype=bool)
    if n:
        first[0] = True
        first[1:] = xs[1:] != xs[:-1]
    starts = np.flatnonzero(first)
    ends = np.append(starts[1:], n)
    ranks = np.empty(n, dtype=np.float64)
    ranks[order] = np.repeat((starts + 1 + ends) / 2.0, ends - starts)
    return ranks


@dataclass(frozen=True, slots=True)
class DeLong:
    auc_primary: float
    auc_candidate: float
    estimate: float  # auc_candidate - auc_primary
    se: float
    low: float
    high: float
    p: float  # two-sided, H0: equal AUCs


def delong(primary: Any, candidate: Any, labels: Any) -> DeLong | None:
    """DeLong's test of ``auc(candidate) - auc(primary)`` on the same rows (Sun & Xu 2014).

    For each model, with ``m`` positives and ``n`` negatives and midranks ``T`` of the pooled scores,
    ``Tx`` within the positives and ``Ty`` within the negatives: ``auc = (sum T[pos] - m(m+1)/2) / mn``,
    structural components ``V10 = (T[pos] - Tx) / n`` and ``V01 = 1 - (T[neg] - Ty) / m``; the
    covariance ``S = cov(V10) / m + cov(V01) / n`` gives ``var(diff) = S11 + S22 - 2 S12``.
    ``None`` with fewer than 2 positives or 2 negatives.
    """
    y = np.asarray(labels, dtype=bool)
    m = int(y.sum())
    n = int(y.size - m)
    if m < 2 or n < 2:
        return None
    aucs: list[float] = []
    v10: list[Any] = []
    v01: list[Any] = []
    for scores in (primary, candidate):
        s = np.asarray(scores, dtype=np.float64)
        t = midranks(s)
        tx, ty = midranks(s[y]), midranks(s[~y])
        t_pos, t_neg = t[y], t[~y]
        aucs.append(float((t_pos.sum() - m * (m + 1) / 2.0) / (m * n)))
        v10.append((t_pos - tx) / n)
        v01.append(1.0 - (t_neg - ty) / m)
    s10 = np.cov(np.vstack(v10))
    s01 = np.cov(np.vstack(v01))
    cov = s10 / m + s01 / n
    var = max(float(cov[0, 0] + cov[1, 1] - 2.0 * cov[0, 1]), 0.0)
    diff = aucs[1] - aucs[0]
    se = math.sqrt(var)
    # no variance (identical rankings, or a degenerate one): p 1 for no difference, else 0
    p = math.erfc(abs(diff) / se / math.sqrt(2.0)) if se > 0 else (1.0 if diff == 0 else 0.0)
    return DeLong(aucs[0], aucs[1], diff, se, max(-1.0, diff - Z95 * se), min(1.0, diff + Z95 * se), p)


def psi(expected: Sequence[float], actual: Sequence[float]) -> float | None:
    """Population stability index of ``actual`` counts against ``expected`` counts over the same bins:
    ``sum (a - e) ln(a / e)`` of the proportions, each 0 replaced by :data:`PSI_EPSILON`. ``None`` when
    either side is empty."""
    e_total, a_total = float(sum(expected)), float(sum(actual))
    if e_total <= 0 or a_total <= 0:
        return None
    total = 0.0
    for e_count, a_count in zip(expected, actual, strict=True):
        e = max(e_count / e_total, PSI_EPSILON)
        a = max(a_count / a_total, PSI_EPSILON)
        total += (a - e) * math.log(a / e)
    return total
