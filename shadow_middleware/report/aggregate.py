"""Fold shadow spans into per-``(target, route)`` groups, in memory bounded whatever the input size
(but for 8 bytes a span that tell duplicates apart).

Per group it keeps counters, three latency reservoirs of :data:`LATENCY_RESERVOIR` values each --
production in-process, candidate round trip, candidate server time from ``Server-Timing`` --
(percentiles are exact up to that many spans, estimated from a seeded uniform sample beyond),
:data:`SCATTER_RESERVOIR` score pairs for the plot, :data:`SCORE_RESERVOIR` for the score PSI, at most
:data:`TIMELINE_BUCKETS` time buckets, the ``--top`` largest score disagreements (a heap), per
recorded input with a reference the counts of :mod:`.drift` (O(reference size)), and -- only with ground
truth -- one ``(primary score, candidate score, label)`` row per span whose correlation id has a label
(17 bytes each, in arrays): the labels file bounds it. These data classes are what :mod:`.build` and
:mod:`.html` read.

Hostile input cannot grow this without bound: at most :data:`MAX_GROUPS` groups are kept (the spans of
further target/route pairs are counted, not folded, and the run cannot be promoted); a group costs
about 3 KB until its reservoirs fill (their generators are created only then). One exchange is one
``(traceId, spanId)``: a span seen again (the same file given twice, an exporter's retry) is counted
as a duplicate and not folded again (:class:`SeenIds`: 8 bytes a span, 64-bit keys).
"""

from __future__ import annotations

import gc
import heapq
from array import array
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

import numpy as np

from .._outcomes import OUTCOMES, Outcome
from .drift import BATCH, LiveFeature, Reference
from .spans import MAX_VALUE, ShadowSpan
from .stats import Reservoir

__all__ = [
    "AUC_CI_METHODS",
    "BOOTSTRAP_RESAMPLES",
    "MAX_GROUPS",
    "TOP_DISAGREEMENTS",
    "Aggregate",
    "DiffStats",
    "Group",
    "Joined",
    "Labels",
    "ReportError",
    "ReportOptions",
    "SeenIds",
    "Timeline",
    "aggregate",
    "aggregate_batches",
]

LATENCY_RESERVOIR = 100_000
SCORE_RESERVOIR = 100_000
SCATTER_RESERVOIR = 2_000
TIMELINE_BUCKETS = 240
BOOTSTRAP_RESAMPLES = 1000
TOP_DISAGREEMENTS = 20
AUC_CI_METHODS = ("delong", "bootstrap")
MAX_STATUS_PAIRS = 64  # distinct (production, candidate) status pairs per group; the rest are counted
MAX_MISSING_FIELDS = 20  # distinct missing-field lists per group (shadow.missing_fields); the rest counted
FIELD_MISSING = "field_missing"  # shadow.reason: a compared field absent from both answers
# production's status from which it is taken to have failed (a client or server error): no answer of
# production's to agree with, so the exchange counts in neither agreement nor the error rates
PRIMARY_FAILED_STATUS = 400
SEED = 20240601
MAX_GROUPS = 1000  # target/route groups kept; a deployment has a handful
# distinct reasons, error types, outcomes with reasons and compared fields kept per group (ours: a
# handful each); further ones count together as OTHER_KIND (fields: are not compared)
MAX_KINDS = 100
OTHER_KIND = "(other)"
MAX_NAMES = 100_000  # attribute names whose kind is cached
# a coalesced span counts at most this many refusals (one target, route and reason in one second)
MAX_COALESCED = 10_000_000

_P_BODY = "shadow.primary.body."
_C_BODY = "shadow.candidate.body."
_INPUT = "shadow.request.body."
_PRIMARY, _CANDIDATE, _REQUEST = 1, 2, 3  # kinds of recorded-value attributes
_UNSEEN = (0, "")


class ReportError(ValueError):
    """A usage problem (bad option, ambiguous score field, unreadable file): exit status 2."""


class Labels(dict[str, int]):
    """``correlation_id -> 0/1``, and what reading the labels file found besides.

    ``conflicting``: ids given both labels (kept out of the mapping, so out of the quality metrics);
    ``duplicates``: rows repeating an id with the same label (harmless, counted)."""

    def __init__(self) -> None:
        super().__init__()
        self.conflicting: set[str] = set()
        self.duplicates = 0

    def put(self, cid: str, label: int) -> None:
        """Add one row: a repeat with the same label is a duplicate, with the other a conflict."""
        if cid in self.conflicting:
            self.duplicates += 1
            return
        have = self.get(cid)
        if have is None:
            self[cid] = label
        elif have == label:
            self.duplicates += 1
        else:
            del self[cid]
            self.conflicting.add(cid)
            self.duplicates += 1


@dataclass
class ReportOptions:
    field: str | None = None
    threshold: float = 0.5
    labels: Mapping[str, int] | None = None
    bootstrap: int = BOOTSTRAP_RESAMPLES
    seed: int = SEED
    auc_ci: str = "delong"  # or "bootstrap"
    top: int = TOP_DISAGREEMENTS
    reference: Reference | None = None
    trace_url: str | None = None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        f = float(value)
    except OverflowError:  # an int beyond any float
        return None
    return f if -MAX_VALUE <= f <= MAX_VALUE else None


def _bump(counts: dict[str, int], key: str, n: int = 1) -> None:
    """``counts[key] += n``; a new key beyond :data:`MAX_KINDS` counts as :data:`OTHER_KIND`."""
    if key not in counts and len(counts) >= MAX_KINDS:
        key = OTHER_KIND
    counts[key] = counts.get(key, 0) + n


class SeenIds:
    """The exchanges already folded, as 64-bit keys of ``(traceId, spanId)``: the newest in a set, the
    rest in sorted numpy runs of geometric sizes (a log-structured merge), so a million spans cost
    about 8 MB and a lookup a binary search per run, done for many spans at once. Two different
    exchanges share a key with probability about n²/2⁶⁵ (one in 3,700 runs of 100 million spans)."""

    RECENT = 4096  # a small set: 300 KB; lookups in the runs are vectorised

    def __init__(self) -> None:
        self.recent: set[int] = set()
        self.runs: list[Any] = []  # sorted int64 arrays, sizes decreasing

    def new(self, keys: list[int | None]) -> list[bool]:
        """For each key in order, whether it is seen for the first time (``None``: no id, always new)."""
        known = np.zeros(len(keys), dtype=bool)
        if self.runs:
            arr = np.array([0 if k is None else k for k in keys], dtype=np.int64)
            for run in self.runs:
                at = np.minimum(run.searchsorted(arr), run.size - 1)
                known |= run[at] == arr
        out: list[bool] = []
        recent = self.recent
        for key, old in zip(keys, known.tolist(), strict=True):
            if key is None:
                out.append(True)
            elif old or key in recent:
                out.append(False)
            else:
                recent.add(key)
                out.append(True)
        if len(recent) >= self.RECENT:
            run = np.sort(np.fromiter(recent, dtype=np.int64, count=len(recent)))
            recent.clear()
            while self.runs and self.runs[-1].size <= 2 * run.size:
                run = np.concatenate((self.runs.pop(), run))
                run.sort()  # in place: the merge peaks at twice the run, not three times
            self.runs.append(run)
        return out


@dataclass(slots=True)
class DiffStats:
    count: int = 0
    total: float = 0.0
    max: float = 0.0

    def add(self, d: float) -> None:
        self.count += 1
        self.total += d
        if d > self.max:
            self.max = d

    @property
    def mean(self) -> float | None:
        return self.total / self.count if self.count else None


def _halve(buckets: dict[int, list[int]]) -> dict[int, list[int]]:
    """The same counts in buckets twice as wide."""
    merged: dict[int, list[int]] = {}
    for k, counts in buckets.items():
        c = merged.get(k // 2)
        if c is None:
            merged[k // 2] = list(counts)
        else:
            for i, v in enumerate(counts):
                c[i] += v
    return merged


class Timeline:
    """Counts in time buckets, ``size`` counters per bucket (agreement: matches and mismatches; drift:
    one per PSI bin); the bucket width (from 1 ms) doubles to keep at most :data:`TIMELINE_BUCKETS`."""

    def __init__(self, size: int = 2) -> None:
        self.size = size
        self.width_ns = 1_000_000
        self.buckets: dict[int, list[int]] = {}

    def add(self, start_ns: int, index: int) -> None:
        key = start_ns // self.width_ns
        counts = self.buckets.get(key)
        if counts is None:
            counts = self.buckets[key] = [0] * self.size
        counts[index] += 1
        while len(self.buckets) > TIMELINE_BUCKETS:
            self.width_ns *= 2
            self.buckets = _halve(self.buckets)

    def add_many(self, starts: Any, indices: Any) -> None:
        """:meth:`add` for arrays of start times and counter indices (numpy)."""
        if not len(starts):
            return
        keys = starts // self.width_ns
        while True:
            unique = np.unique(keys)
            if len(self.buckets.keys() | set(unique.tolist())) <= TIMELINE_BUCKETS:
                break
            self.width_ns *= 2
            self.buckets = _halve(self.buckets)
            keys = keys // 2
        pos = np.searchsorted(unique, keys)
        counts = np.bincount(pos * self.size + indices, minlength=unique.size * self.size)
        for key, row in zip(unique.tolist(), counts.reshape(unique.size, self.size).tolist(), strict=True):
            have = self.buckets.get(key)
            if have is None:
                self.buckets[key] = row
            else:
                for i, v in enumerate(row):
                    have[i] += v

    def put(self, width_ns: int, key: int, counts: list[int]) -> None:
        """Set bucket ``key`` of width ``width_ns`` to ``counts`` (counts another engine made; the SQL
        source gives a width at which at most :data:`TIMELINE_BUCKETS` buckets are needed)."""
        self.width_ns = width_ns
        self.buckets[key] = counts

    def series(self, max_buckets: int) -> tuple[int, list[tuple[int, list[int]]]]:
        """``(bucket width ns, [(bucket start ns, counts)])`` in time order, merged into coarser
        buckets (the width doubling) until they span at most ``max_buckets``."""
        width, buckets = self.width_ns, self.buckets
        # times are in [0, 2**63): the keys meet within 64 halvings; the width bound ends the loop
        # even for keys that halving cannot join (-1 // 2 == -1)
        while buckets and (max(buckets) - min(buckets)) >= max_buckets and width < 2**64:
            width *= 2
            buckets = _halve(buckets)
        return width, [(k * width, counts) for k, counts in sorted(buckets.items())]


class Joined:
    """The labelled rows of a group: primary score, candidate score, label (columns, 17 bytes a row)."""

    __slots__ = ("candidate", "labels", "primary")

    def __init__(self) -> None:
        self.primary = array("d")
        self.candidate = array("d")
        self.labels = bytearray()

    def append(self, p: float, c: float, label: int) -> None:
        self.primary.append(p)
        self.candidate.append(c)
        self.labels.append(label)

    def __len__(self) -> int:
        return len(self.labels)

    def arrays(self) -> tuple[Any, Any, Any]:
        """``(primary, candidate, labels)`` as numpy arrays (copies: a view would pin the arrays)."""
        return (
            np.array(self.primary, dtype=np.float64),
            np.array(self.candidate, dtype=np.float64),
            np.frombuffer(bytes(self.labels), dtype=np.uint8).astype(bool),
        )


# (|primary - candidate|, order seen, correlation id, trace id, primary, candidate, differing paths)
Disagreement = tuple[float, int, Any, str, float, float, Any]


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
    scores: Reservoir[tuple[float, float]] = field(
        default_factory=lambda: Reservoir(SCORE_RESERVOIR, SEED + 4)
    )
    timeline: Timeline = field(default_factory=Timeline)
    joined: Joined = field(default_factory=Joined)
    scored_with_id: int = 0
    first_ns: int | None = None
    last_ns: int | None = None
    top: list[Disagreement] = field(default_factory=list)  # a min-heap of the largest disagreements
    inputs: dict[str, LiveFeature] = field(default_factory=dict)  # drift, per input with a reference
    # (production status, candidate status) -> exchanges; None where a side has no status
    statuses: dict[tuple[int | None, int | None], int] = field(default_factory=dict)
    statuses_other: int = 0  # exchanges whose pair did not fit in MAX_STATUS_PAIRS
    # match/mismatch exchanges that are no evidence of agreement, kept out of it: production failed
    # (status >= 400), or a compared field was absent from both answers
    primary_failed: int = 0
    field_missing: int = 0  # exchanges with shadow.reason field_missing, any outcome
    missing_fields: dict[str, int] = field(default_factory=dict)  # shadow.missing_fields -> exchanges
    excluded_match: int = 0
    excluded_mismatch: int = 0
    excluded_error: int = 0  # the candidate failed where production had failed too: no evidence
    excluded_timeout: int = 0
    server_discarded: int = 0  # Server-Timing longer than the measured round trip: not believed
    with_id: int = 0  # spans with a correlation id (with ground truth only)
    labelled_unscored: dict[str, int] = field(default_factory=dict)  # labelled, no pair of scores
    label_conflicts: int = 0  # spans whose id has conflicting labels (not in the quality metrics)
    valued: int = 0  # spans recording a compared value (shadow.{primary,candidate}.body.*)

    @property
    def n(self) -> int:
        return sum(self.outcomes.values()) + self.other_outcomes

    def disagreements(self) -> list[Disagreement]:
        """The kept disagreements, largest first (ties: seen first)."""
        return sorted(self.top, key=lambda d: (-d[0], d[1]))


@dataclass
class Aggregate:
    groups: dict[tuple[str, str], Group]
    score_field: str | None
    numeric_fields: list[str]
    spans: int
    malformed: int
    inputs: list[str] = field(default_factory=list)  # recorded inputs seen (shadow.request.body.<p>)
    labels_seen: int = 0  # distinct labelled ids some span carried (with ground truth)
    duplicates: int = 0  # spans whose (traceId, spanId) was seen before: not folded again
    beyond_groups: int = 0  # spans of target/route groups beyond MAX_GROUPS: counted, not folded
    out_of_range: int = 0  # number attributes not finite or beyond ±MAX_VALUE: read as no value


def aggregate(spans: Iterable[ShadowSpan], options: ReportOptions) -> Aggregate:
    """Fold ``spans`` into per-(target, route) groups. Raises :class:`ReportError` when the score
    field is not given and more than one numeric field was recorded."""
    it = iter(spans)
    return aggregate_batches(iter(lambda: list(islice(it, 64)), []), options)


def aggregate_batches(batches: Iterable[list[ShadowSpan]], options: ReportOptions) -> Aggregate:
    """:func:`aggregate` over lists of spans (as :func:`.spans.read_span_batches` yields them).

    The cyclic garbage collector is paused meanwhile: the fold allocates millions of short-lived
    objects, none in a reference cycle, and each collection would walk every sample kept so far
    (measured: 37 % of the time at 200,000 spans). Reference counting frees everything as before."""
    paused = gc.isenabled()
    gc.disable()
    try:
        return _fold(batches, options)
    finally:
        if paused:
            gc.enable()


def _fold(batches: Iterable[list[ShadowSpan]], options: ReportOptions) -> Aggregate:
    groups: dict[tuple[str, str], Group] = {}
    score_field = options.field
    seen_numeric: dict[str, None] = {}
    seen_inputs: dict[str, None] = {}
    labels = options.labels
    conflicting = labels.conflicting if isinstance(labels, Labels) else set()
    labelled_seen: set[str] = set()  # bounded by the labels file
    threshold = options.threshold
    top = options.top
    features = options.reference.features if options.reference is not None else {}
    # attribute name -> (kind, suffix) for recorded values, None for anything else; names repeat
    kinds: dict[str, tuple[int, str] | None] = {}
    count = duplicates = beyond = out_of_range = 0
    seq = 0
    match, mismatch = Outcome.MATCH, Outcome.MISMATCH
    error, timeout = Outcome.ERROR, Outcome.TIMEOUT
    seen = SeenIds()
    hi = MAX_VALUE
    for span, new in _deduplicated(batches, seen):
        if not new:
            duplicates += 1
            continue
        count += 1
        out_of_range += span.out_of_range
        attrs = span.attributes
        key = (span.target, span.route)
        group = groups.get(key)
        if group is None:
            if len(groups) >= MAX_GROUPS:
                beyond += 1
                continue
            group = groups[key] = Group(*key)
        outcome = span.outcome
        # A coalesced span (refusals: always dropped) stands for shadow.coalesced_count exchanges;
        # any other span, one (a count on another outcome is not ours: ignored).
        weight = attrs.get("shadow.coalesced_count", 1) if outcome == Outcome.DROPPED else 1
        if type(weight) is not int or not 1 <= weight <= MAX_COALESCED:
            weight = 1
        if outcome in group.outcomes:
            group.outcomes[outcome] += weight
        else:
            group.other_outcomes += weight
        reason = attrs.get("shadow.reason")
        excluded = False
        if reason is not None:
            _bump(group.reasons, str(reason), weight)
            by = group.reasons_by_outcome
            okey = outcome if outcome in by or len(by) < MAX_KINDS else OTHER_KIND
            _bump(by.setdefault(okey, {}), str(reason), weight)
            if reason == FIELD_MISSING:
                excluded = True
                group.field_missing += 1
                fields = str(attrs.get("shadow.missing_fields", "") or "?")[:200]
                missing = group.missing_fields
                if fields in missing or len(missing) < MAX_MISSING_FIELDS:
                    missing[fields] = missing.get(fields, 0) + 1
        sp = attrs.get("shadow.primary.status_code")
        sp = sp if type(sp) is int else None
        sc = attrs.get("shadow.candidate.status_code")
        sc = sc if type(sc) is int else None
        if sp is not None or sc is not None:
            pair = (sp, sc)
            pairs = group.statuses
            if pair in pairs:
                pairs[pair] += 1
            elif len(pairs) < MAX_STATUS_PAIRS:
                pairs[pair] = 1
            else:
                group.statuses_other += 1
        if outcome in (match, mismatch):
            if sp is not None and sp >= PRIMARY_FAILED_STATUS:
                excluded = True
                group.primary_failed += 1
            if excluded:
                if outcome == match:
                    group.excluded_match += 1
                else:
                    group.excluded_mismatch += 1
        elif sp is not None and sp >= PRIMARY_FAILED_STATUS and outcome in (error, timeout):
            group.primary_failed += 1
            if outcome == error:
                group.excluded_error += 1
            else:
                group.excluded_timeout += 1
        cid = attrs.get("shadow.correlation_id")
        label = None
        if labels is not None and cid is not None:
            group.with_id += 1
            scid = str(cid)
            label = labels.get(scid)
            if label is not None:
                labelled_seen.add(scid)
            elif scid in conflicting:
                group.label_conflicts += 1
        etype = attrs.get("error.type")
        if etype is not None:
            _bump(group.error_types, str(etype))
        start_ns = span.start_ns
        if start_ns:
            if group.first_ns is None or start_ns < group.first_ns:
                group.first_ns = start_ns
            if group.last_ns is None or start_ns > group.last_ns:
                group.last_ns = start_ns
            if excluded:
                pass  # no evidence of agreement either way: not on the agreement timeline
            elif outcome == match:
                group.timeline.add(start_ns, 0)
            elif outcome == mismatch:
                group.timeline.add(start_ns, 1)
        # numbers: a float in range takes the inline test (NaN fails it too); the rest, _number
        dp = attrs.get("shadow.primary.duration_ms")
        if dp is not None and ((type(dp) is float and -hi <= dp <= hi) or (dp := _number(dp)) is not None):
            group.lat_primary.add(dp)
        dc = attrs.get("shadow.candidate.duration_ms")
        if dc is not None and ((type(dc) is float and -hi <= dc <= hi) or (dc := _number(dc)) is not None):
            group.lat_candidate.add(dc)
            ds = attrs.get("shadow.candidate.server_duration_ms")
            if ds is not None and (
                (type(ds) is float and -hi <= ds <= hi) or (ds := _number(ds)) is not None
            ):
                # the candidate's word against our clock: a server time longer than the round trip we
                # measured around it is impossible, so not believed (discarded and counted)
                if ds > dc:
                    group.server_discarded += 1
                else:
                    group.lat_candidate_server.add(ds)

        # recorded values: differences of every numeric field, the score field drives the rest;
        # recorded inputs feed drift
        for name, value in attrs.items():
            kind = kinds.get(name, _UNSEEN)
            if kind is _UNSEEN:
                if name.startswith(_P_BODY):
                    kind = (_PRIMARY, name[len(_P_BODY) :])
                elif name.startswith(_C_BODY):
                    kind = (_CANDIDATE, name[len(_C_BODY) :])
                elif name.startswith(_INPUT):
                    kind = (_REQUEST, name[len(_INPUT) :])
                else:
                    kind = None
                if len(kinds) < MAX_NAMES:  # a cache: a file of endless distinct names must not grow it
                    kinds[name] = kind
            if kind is None:
                continue
            what, fname = kind
            if what == _REQUEST:
                if fname not in seen_inputs:
                    seen_inputs[fname] = None
                live = group.inputs.get(fname)
                if live is None:
                    feature = features.get(fname)
                    if feature is None:
                        continue
                    live = group.inputs[fname] = LiveFeature(feature, Timeline(feature.bin_counts.size))
                if live.numeric and (type(value) is float or type(value) is int):  # LiveFeature.add, inline
                    live.values.append(value)
                    live.starts.append(start_ns)
                    if len(live.values) >= BATCH:
                        live.flush()
                else:
                    live.add(value, start_ns)
                continue
            group.valued += 1  # once per value; only "none at all" is read
            if what == _CANDIDATE:  # numeric fields only the candidate recorded
                if fname not in seen_numeric and _number(value) is not None:
                    seen_numeric[fname] = None
                    if score_field is None:
                        score_field = fname
                continue
            p = value if type(value) is float and -hi <= value <= hi else _number(value)
            c = attrs.get(_C_BODY + fname)
            if not (type(c) is float and -hi <= c <= hi):
                c = _number(c)
            if p is None and c is None:
                continue
            if fname not in seen_numeric:
                seen_numeric[fname] = None
                if score_field is None:
                    score_field = fname
            if p is not None and c is not None:
                stats = group.field_diffs.get(fname)
                if stats is None:
                    if len(group.field_diffs) >= MAX_KINDS:
                        continue
                    stats = group.field_diffs[fname] = DiffStats()
                stats.add(abs(p - c))
        ps = cs = None
        if score_field is not None:
            ps = attrs.get(_P_BODY + score_field)
            if not (type(ps) is float and -hi <= ps <= hi):
                ps = _number(ps)
            if ps is not None:
                cs = attrs.get(_C_BODY + score_field)
                if not (type(cs) is float and -hi <= cs <= hi):
                    cs = _number(cs)
        if ps is None or cs is None:
            if label is not None:  # a label the quality metrics cannot use: say so, by outcome
                group.labelled_unscored[outcome] = group.labelled_unscored.get(outcome, 0) + 1
            continue
        group.scored += 1
        gap = abs(ps - cs)
        group.score_diff.add(gap)
        if (ps >= threshold) != (cs >= threshold):
            group.flips += 1
        group.scatter.add((ps, cs))
        group.scores.add((ps, cs))
        if top:
            heap = group.top
            if len(heap) < top or gap > heap[0][0]:
                seq += 1  # -seq: among equal gaps the earliest stays
                entry = (gap, -seq, cid, span.trace_id, ps, cs, attrs.get("shadow.diff.paths"))
                if len(heap) < top:
                    heapq.heappush(heap, entry)
                else:
                    heapq.heapreplace(heap, entry)
        if labels is not None and cid is not None:
            group.scored_with_id += 1
            if label is not None:
                group.joined.append(ps, cs, label)

    if options.field is None and len(seen_numeric) > 1:
        raise ReportError(
            f"more than one numeric recorded value ({', '.join(seen_numeric)}); "
            "choose the score with --field NAME"
        )
    for group in groups.values():
        for live in group.inputs.values():
            live.flush()
    return Aggregate(
        groups,
        score_field,
        list(seen_numeric),
        count,
        0,
        list(seen_inputs),
        labels_seen=len(labelled_seen),
        duplicates=duplicates,
        beyond_groups=beyond,
        out_of_range=out_of_range,
    )


def _deduplicated(batches: Iterable[list[ShadowSpan]], seen: SeenIds) -> Iterable[tuple[ShadowSpan, bool]]:
    """``(span, first time seen)`` for every span, looked up a few hundred at a time (a numpy call per
    run and chunk; a chunk holds its spans, so not many)."""
    chunk: list[ShadowSpan] = []
    for batch in batches:
        chunk.extend(batch)
        if len(chunk) >= 256:
            yield from zip(chunk, seen.new(_ids(chunk)), strict=True)
            chunk = []
    if chunk:
        yield from zip(chunk, seen.new(_ids(chunk)), strict=True)


def _ids(spans: list[ShadowSpan]) -> list[int | None]:
    """64-bit keys of the exchanges (``None`` without both ids): the process's string hash."""
    return [hash((s.trace_id, s.span_id)) if s.trace_id and s.span_id else None for s in spans]
