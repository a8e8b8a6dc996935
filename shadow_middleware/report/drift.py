"""Input drift: live request inputs (``shadow.request.body.<p>``, recorded with ``record_inputs``)
against a reference sample (``--reference FILE``, e.g. a sample of the training data).

Per input, live traffic of a target and route against the reference:

* **numeric** inputs (every reference value a number): the two-sample Kolmogorov-Smirnov statistic and
  its p-value (:mod:`.kstest`, as ``scipy.stats.ks_2samp``), and the population stability index over
  10 bins cut at the reference's deciles (``numpy.quantile``, linear; duplicate cut points merged, so a
  discrete input may get fewer bins; a value equal to a cut point goes to the bin above it).
* **categorical** inputs (strings, booleans): PSI over the reference's categories (at most
  :data:`MAX_CATEGORIES`, the most frequent; the rest, and live values the reference never had, count
  as one bin ``(other)``). No KS: it needs an order.

Missing values: in a column whose other values are all numbers, ``NA``, ``N/A``, ``nan``, ``null``,
``None``, ``?`` and empty cells (any case; JSON ``null`` and NaN too) are missing values -- counted
(``reference_missing``) and left out -- not a reason to read the column as categorical (which would
make KS impossible and PSI meaningless). In a column of strings they stay categories (``NA`` may be a
country).

PSI smooths empty bins: a proportion of 0 counts as :data:`.stats.PSI_EPSILON` (0.01 %).

**Memory, and why KS needs no sample.** The live side keeps counts, not values: for each of the
reference's ``k`` distinct values, how many live values equal it and how many fall strictly between it
and the previous one. Between two reference values the reference's CDF is flat and the live one only
rises, so the largest gap is at an end of the interval, and both ends are known from those counts: the
statistic is *exact* for any number of live values, in memory O(k) per input and group (``k`` is at
most the reference's size, 8 bytes x 2 each). Live values are buffered :data:`BATCH` at a time and
counted with numpy. The p-value uses the full counts ``n`` (live) and ``m`` (reference).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import stats
from .kstest import ks_2samp_pvalue
from .spans import MAX_VALUE, ErrorHandler
from .tables import SideFileError, csv_rows, is_json_lines, json_objects

__all__ = ["BATCH", "MAX_CATEGORIES", "Feature", "LiveFeature", "Reference", "load_reference"]

BATCH = 8192
MAX_CATEGORIES = 50
DECILES = tuple(q / 10 for q in range(1, 10))
OTHER = "(other)"
# A drift-over-time bucket with fewer live values gets no PSI: with 10 bins and n values, PSI's noise
# floor is about (bins - 1) / n (its null expectation), 0.09 at 100.
MIN_BUCKET = 100


FORMATS = (
    "expected a CSV whose header names the inputs, or JSON lines: one flat object per line "
    "-- not one JSON document or array"
)
MISSING = frozenset({"", "na", "n/a", "nan", "null", "none", "?"})


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float):
        return math.isnan(value)
    return isinstance(value, str) and value.strip().lower() in MISSING


class ReferenceError(ValueError):
    """The reference file cannot be used."""


def _category(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@dataclass
class Feature:
    """One input of the reference: its distribution, ready to be compared with."""

    name: str
    numeric: bool
    n: int
    values: Any = None  # numeric: sorted distinct reference values (float64)
    counts: Any = None  # numeric: how often each occurs
    edges: Any = None  # numeric: PSI cut points (distinct deciles)
    categories: dict[str, int] = field(default_factory=dict)  # categorical: name -> bin
    bin_counts: Any = None  # the reference's count per PSI bin
    labels: list[str] = field(default_factory=list)  # per PSI bin, for the HTML
    missing: int = 0  # numeric: reference values that were missing (NA, null, empty...) or not finite

    @classmethod
    def from_values(cls, name: str, raw: list[Any]) -> Feature | None:
        """The feature of a reference column, or ``None`` when it has no value at all."""
        present = [value for value in raw if not _is_missing(value)]
        numbers: list[float] = []
        numeric = bool(present)
        for value in present:
            if isinstance(value, bool):
                numeric = False
                break
            try:
                numbers.append(float(value) if isinstance(value, int | float) else float(str(value)))
            except OverflowError:  # an int beyond any float: out of range, dropped below
                numbers.append(math.inf)
            except ValueError:
                numeric = False
                break
        if numeric:
            arr = np.asarray(numbers, dtype=np.float64)
            arr = arr[np.abs(arr) <= MAX_VALUE]  # as the live values: NaN, infinities and absurd ones out
        if numeric and arr.size:
            values, counts = np.unique(arr, return_counts=True)
            edges = np.unique(np.quantile(arr, DECILES))
            bins = np.bincount(np.searchsorted(edges, arr, side="right"), minlength=edges.size + 1)
            labels = [f"< {edges[0]:g}"] + [f"{a:g} - {b:g}" for a, b in itertools.pairwise(edges)]
            labels.append(f">= {edges[-1]:g}")
            missing = len(raw) - int(arr.size)
            return cls(
                name,
                True,
                int(arr.size),
                values,
                counts,
                edges,
                bin_counts=bins,
                labels=labels,
                missing=missing,
            )
        raw = [value for value in raw if value is not None and value != ""]  # absent: not a category
        if not raw:
            return None
        seen: dict[str, int] = {}
        for value in raw:
            key = _category(value)
            seen[key] = seen.get(key, 0) + 1
        top = sorted(seen.items(), key=lambda kv: (-kv[1], kv[0]))[:MAX_CATEGORIES]
        categories = {key: i for i, (key, _) in enumerate(top)}
        bins = np.zeros(len(categories) + 1, dtype=np.int64)
        for key, count in seen.items():
            bins[categories.get(key, len(categories))] += count
        return cls(
            name,
            False,
            len(raw),
            categories=categories,
            bin_counts=bins,
            labels=[*categories, OTHER],
        )


@dataclass
class Reference:
    path: str
    rows: int
    features: dict[str, Feature]


def load_reference(path: str | Path, on_error: ErrorHandler | None = None) -> Reference:
    """A reference sample: a CSV whose header names the inputs (``tenure_months``, ``nested.age``:
    the ``<p>`` of ``shadow.request.body.<p>``), or JSON lines of flat objects with those keys. Empty
    CSV cells and JSON nulls are missing values. Raises :class:`ReferenceError`."""
    columns: dict[str, list[Any]] = {}
    rows = 0
    try:
        with open(path, "rb") as head:
            if head.read(4096).removeprefix(b"\xef\xbb\xbf").lstrip().startswith(b"["):
                raise ReferenceError(f"{path}: looks like one JSON array; {FORMATS}")
        if is_json_lines(path):
            for _, doc in json_objects(path, on_error):
                rows += 1
                for key, value in doc.items():
                    if not isinstance(value, dict | list):
                        columns.setdefault(str(key), []).append(value)
        else:
            reader = csv_rows(path)
            header = next(reader, (0, []))[1]
            if not header:
                raise ReferenceError(f"{path}: empty reference file")
            lists = [columns.setdefault(name.strip(), []) for name in header]
            for _, row in reader:
                if not row:
                    continue
                rows += 1
                for cell, values in zip(row, lists, strict=False):
                    values.append(cell)  # an empty cell too: a missing value, counted
    except OSError as exc:
        raise ReferenceError(f"{path}: {exc.strerror or exc}") from None
    except SideFileError as exc:
        raise ReferenceError(str(exc)) from None
    if not rows:
        raise ReferenceError(f"{path}: no rows ({FORMATS})")
    features = {
        name: feature
        for name, values in columns.items()
        if values and (feature := Feature.from_values(name, values)) is not None
    }
    return Reference(str(path), rows, features)


class LiveFeature:
    """One input's live values for one group, as counts (see the module's docstring)."""

    __slots__ = ("below", "bins", "equal", "feature", "n", "numeric", "other", "starts", "timeline", "values")

    def __init__(self, feature: Feature, timeline: Any) -> None:
        self.feature = feature
        self.numeric = feature.numeric
        self.n = 0
        self.other = 0  # values of the wrong kind (a string for a numeric input): not counted
        self.bins = np.zeros(feature.bin_counts.size, dtype=np.int64)
        if feature.numeric:
            k = feature.values.size
            self.below = np.zeros(k + 1, dtype=np.int64)
            self.equal = np.zeros(k, dtype=np.int64)
        self.timeline = timeline  # aggregate.Timeline with one counter per PSI bin
        self.values: list[Any] = []  # buffered, counted BATCH at a time
        self.starts: list[int] = []

    def add(self, value: Any, start_ns: int) -> None:
        if self.feature.numeric:
            kind = type(value)
            if kind is not float and kind is not int:  # a bool is not an int here; NaN: at flush
                self.other += 1
                return
        else:
            index = self.feature.categories.get(_category(value))
            value = len(self.feature.categories) if index is None else index
        self.values.append(value)
        self.starts.append(start_ns)
        if len(self.values) >= BATCH:
            self.flush()

    def flush(self) -> None:
        if not self.values:
            return
        starts = np.asarray(self.starts, dtype=np.int64)
        feature = self.feature
        if feature.numeric:
            v = np.asarray(self.values, dtype=np.float64)
            finite = np.isfinite(v)
            if not finite.all():
                self.other += int((~finite).sum())
                self.values = v[finite].tolist()
                v, starts = v[finite], starts[finite]
            k = feature.values.size
            i = np.searchsorted(feature.values, v, side="left")
            eq = (i < k) & (feature.values[np.minimum(i, k - 1)] == v)
            self.equal += np.bincount(i[eq], minlength=k)
            self.below += np.bincount(i[~eq], minlength=k + 1)
            b = np.searchsorted(feature.edges, v, side="right")
        else:
            b = np.asarray(self.values, dtype=np.int64)
        self.bins += np.bincount(b, minlength=self.bins.size)
        self.timeline.add_many(starts, b)
        self.n += len(self.values)
        self.values, self.starts = [], []

    def ks(self) -> float | None:
        """sup |F_reference - F_live| (exact, from the counts)."""
        f = self.feature
        if not f.numeric or not self.n:
            return None
        m, n = float(f.n), float(self.n)
        ref_at = np.cumsum(f.counts) / m
        ref_before = np.concatenate(([0.0], ref_at[:-1]))
        below = np.cumsum(self.below[:-1])
        eq = np.cumsum(self.equal)
        live_at = (below + eq) / n
        live_before = (below + np.concatenate(([0], eq[:-1]))) / n
        return float(max(np.abs(ref_at - live_at).max(), np.abs(ref_before - live_before).max()))

    def result(self) -> dict[str, Any]:
        self.flush()
        d = self.ks()
        return {
            "n": self.n,
            "psi": stats.psi(self.feature.bin_counts.tolist(), self.bins.tolist()) if self.n else None,
            "ks": d,
            "ks_p": ks_2samp_pvalue(d, self.n, self.feature.n) if d is not None else None,
            "kind": "numeric" if self.feature.numeric else "categorical",
            "reference_n": self.feature.n,
            "reference_missing": self.feature.missing,
            "wrong_kind": self.other,
        }

    def psi_over_time(self, max_buckets: int) -> tuple[int, list[tuple[int, int, float | None]]]:
        """``(bucket width ns, [(bucket start ns, values, psi)])``; psi ``None`` below :data:`MIN_BUCKET`."""
        self.flush()
        width, series = self.timeline.series(max_buckets)
        ref = self.feature.bin_counts.tolist()
        return width, [
            (start, sum(counts), stats.psi(ref, counts) if sum(counts) >= MIN_BUCKET else None)
            for start, counts in series
        ]


def score_psi(pairs: list[tuple[float, float]]) -> float | None:
    """PSI of the candidate's scores against production's, bins cut at production's deciles."""
    if not pairs:
        return None
    p = np.fromiter((a for a, _ in pairs), dtype=np.float64, count=len(pairs))
    c = np.fromiter((b for _, b in pairs), dtype=np.float64, count=len(pairs))
    edges = np.unique(np.quantile(p, DECILES))
    size = edges.size + 1
    expected = np.bincount(np.searchsorted(edges, p, side="right"), minlength=size)
    actual = np.bincount(np.searchsorted(edges, c, side="right"), minlength=size)
    return stats.psi(expected.tolist(), actual.tolist())
