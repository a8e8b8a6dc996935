"""Fold shadow spans into per-``(target, route)`` groups, in memory bounded whatever the input size.

Per group it keeps counters, three latency reservoirs of :data:`LATENCY_RESERVOIR` values each --
production in-process, candidate round trip, candidate server time from ``Server-Timing`` --
(percentiles are exact up to that many spans, estimated from a seeded uniform sample beyond),
:data:`SCATTER_RESERVOIR` score pairs for the plot, at most :data:`TIMELINE_BUCKETS` time buckets,
and -- only with ground truth -- one ``(correlation_id, primary score, candidate score, label)``
tuple per span whose correlation id has a label (about 150 bytes each): the labels file bounds it.
These data classes are what :mod:`.build` and :mod:`.html` read.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .._outcomes import OUTCOMES, Outcome
from .spans import ShadowSpan
from .stats import Reservoir

__all__ = [
    "BOOTSTRAP_RESAMPLES",
    "Aggregate",
    "DiffStats",
    "Group",
    "ReportError",
    "ReportOptions",
    "Timeline",
    "aggregate",
]

LATENCY_RESERVOIR = 100_000
SCATTER_RESERVOIR = 2_000
TIMELINE_BUCKETS = 240
BOOTSTRAP_RESAMPLES = 1000
SEED = 20240601

_P_BODY = "shadow.primary.body."
_C_BODY = "shadow.candidate.body."


class ReportError(ValueError):
    """A usage problem (bad option, ambiguous score field, unreadable file): exit status 2."""


@dataclass
class ReportOptions:
    field: str | None = None
    threshold: float = 0.5
    labels: Mapping[str, int] | None = None
    bootstrap: int = BOOTSTRAP_RESAMPLES
    seed: int = SEED


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    f = float(value)
    return f if math.isfinite(f) else None


@dataclass(slots=True)
class DiffStats:
    count: int = 0
    total: float = 0.0
    max: float = 0.0

    def add(self, d: float) -> None:
        self.count += 1
        self.total += d
        self.max = max(self.max, d)

    @property
    def mean(self) -> float | None:
        return self.total / self.count if self.count else None


def _halve(buckets: dict[int, list[int]]) -> dict[int, list[int]]:
    """The same counts in buckets twice as wide."""
    merged: dict[int, list[int]] = {}
    for k, (m, mm) in buckets.items():
        c = merged.setdefault(k // 2, [0, 0])
        c[0] += m
        c[1] += mm
    return merged


class Timeline:
    """Match / mismatch counts in time buckets; the bucket width (from 1 ms) doubles to keep at most
    :data:`TIMELINE_BUCKETS`."""

    def __init__(self) -> None:
        self.width_ns = 1_000_000
        self.buckets: dict[int, list[int]] = {}

    def add(self, start_ns: int, matched: bool) -> None:
        key = start_ns // self.width_ns
        counts = self.buckets.get(key)
        if counts is None:
            counts = self.buckets[key] = [0, 0]
        counts[0 if matched else 1] += 1
        while len(self.buckets) > TIMELINE_BUCKETS:
            self.width_ns *= 2
            self.buckets = _halve(self.buckets)

    def series(self, max_buckets: int) -> tuple[int, list[tuple[int, int, int]]]:
        """``(bucket width ns, [(bucket start ns, matches, mismatches)])`` in time order, merged
        into coarser buckets (the width doubling) until there are at most ``max_buckets``."""
        width, buckets = self.width_ns, self.buckets
        while buckets and (max(buckets) - min(buckets)) >= max_buckets:
            width *= 2
            buckets = _halve(buckets)
        return width, [(k * width, m, mm) for k, (m, mm) in sorted(buckets.items())]


@dataclass
class Group:
    target: str
    route: str
    outcomes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    other_outcomes: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    reasons_by_outcome: dict[str, dict[str, int]] = field(default_factory=dict)
    error_types: dict[str, int] = field(default_factory=dict)
    lat_primary: Reservoir[float] = field(default_factory=lambda: Reservoir(LATENCY_RESERVOIR, SEED))
    lat_candidate: Reservoir[float] = field(default_factory=lambda: Reservoir(LATENCY_RESERVOIR, SEED + 1))
    # the candidate's own time, from its Server-Timing header (shadow.candidate.server_duration_ms)
    lat_candidate_server: Reservoir[float] = field(
        default_factory=lambda: Reservoir(LATENCY_RESERVOIR, SEED + 3)
    )
    scored: int = 0
    flips: int = 0
    score_diff: DiffStats = field(default_factory=DiffStats)
    field_diffs: dict[str, DiffStats] = field(default_factory=dict)
    scatter: Reservoir[tuple[float, float]] = field(
        default_factory=lambda: Reservoir(SCATTER_RESERVOIR, SEED + 2)
    )
    timeline: Timeline = field(default_factory=Timeline)
    joined: list[tuple[str, float, float, int]] = field(default_factory=list)
    scored_with_id: int = 0
    first_ns: int | None = None
    last_ns: int | None = None

    @property
    def n(self) -> int:
        return sum(self.outcomes.values()) + self.other_outcomes


@dataclass
class Aggregate:
    groups: dict[tuple[str, str], Group]
    score_field: str | None
    numeric_fields: list[str]
    spans: int
    malformed: int


def aggregate(spans: Iterable[ShadowSpan], options: ReportOptions) -> Aggregate:
    """Fold ``spans`` into per-(target, route) groups. Raises :class:`ReportError` when the score
    field is not given and more than one numeric field was recorded."""
    groups: dict[tuple[str, str], Group] = {}
    score_field = options.field
    seen_numeric: dict[str, None] = {}
    labels = options.labels
    threshold = options.threshold
    count = 0
    for span in spans:
        count += 1
        attrs = span.attributes
        key = (span.target, span.route)
        group = groups.get(key)
        if group is None:
            group = groups[key] = Group(*key)
        outcome = span.outcome
        if outcome in group.outcomes:
            group.outcomes[outcome] += 1
        else:
            group.other_outcomes += 1
        reason = attrs.get("shadow.reason")
        if reason is not None:
            group.reasons[str(reason)] = group.reasons.get(str(reason), 0) + 1
            by_outcome = group.reasons_by_outcome.setdefault(outcome, {})
            by_outcome[str(reason)] = by_outcome.get(str(reason), 0) + 1
        etype = attrs.get("error.type")
        if etype is not None:
            group.error_types[str(etype)] = group.error_types.get(str(etype), 0) + 1
        if span.start_ns:
            group.first_ns = span.start_ns if group.first_ns is None else min(group.first_ns, span.start_ns)
            group.last_ns = span.start_ns if group.last_ns is None else max(group.last_ns, span.start_ns)
            if outcome in (Outcome.MATCH, Outcome.MISMATCH):
                group.timeline.add(span.start_ns, outcome == Outcome.MATCH)
        dp = _number(attrs.get("shadow.primary.duration_ms"))
        if dp is not None:
            group.lat_primary.add(dp)
        dc = _number(attrs.get("shadow.candidate.duration_ms"))
        if dc is not None:
            group.lat_candidate.add(dc)
            ds = _number(attrs.get("shadow.candidate.server_duration_ms"))
            if ds is not None:
                group.lat_candidate_server.add(ds)

        # recorded values: differences of every numeric field; the score field drives the rest
        for name, value in attrs.items():
            if not name.startswith(_P_BODY):
                continue
            p = _number(value)
            fname = name[len(_P_BODY) :]
            c = _number(attrs.get(_C_BODY + fname))
            if p is None and c is None:
                continue
            if fname not in seen_numeric:
                seen_numeric[fname] = None
                if score_field is None:
                    score_field = fname
            if p is not None and c is not None:
                stats = group.field_diffs.get(fname)
                if stats is None:
                    stats = group.field_diffs[fname] = DiffStats()
                stats.add(abs(p - c))
        for name, value in attrs.items():  # numeric fields only the candidate recorded
            if name.startswith(_C_BODY) and _number(value) is not None:
                fname = name[len(_C_BODY) :]
                if fname not in seen_numeric:
                    seen_numeric[fname] = None
                    if score_field is None:
                        score_field = fname
        if score_field is None:
            continue
        ps = _number(attrs.get(_P_BODY + score_field))
        cs = _number(attrs.get(_C_BODY + score_field))
        if ps is None or cs is None:
            continue
        group.scored += 1
        group.score_diff.add(abs(ps - cs))
        if (ps >= threshold) != (cs >= threshold):
            group.flips += 1
        group.scatter.add((ps, cs))
        if labels is not None:
            cid = attrs.get("shadow.correlation_id")
            if cid is not None:
                group.scored_with_id += 1
                label = labels.get(str(cid))
                if label is not None:
                    group.joined.append((str(cid), ps, cs, label))

    if options.field is None and len(seen_numeric) > 1:
        raise ReportError(
            f"more than one numeric recorded value ({', '.join(seen_numeric)}); "
            "choose the score with --field NAME"
        )
    return Aggregate(groups, score_field, list(seen_numeric), count, 0)
