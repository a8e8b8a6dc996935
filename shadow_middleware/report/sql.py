"""The report's aggregate, computed by ClickHouse's engine over the Collector exporter's ``otel_traces``.

One aggregate, two sources: :func:`.aggregate.aggregate_batches` folds spans read from a file, this
module asks SQL for the same per-``(target, route)`` figures and fills the same :class:`.aggregate.Group`
objects with them; everything after (statistics, policy, text, JSON, HTML) is shared. What comes back
is bounded by the number of groups, never by the number of spans:

* counts (outcomes, reasons, error types, status pairs, missing fields, exclusions) by ``GROUP BY``;
* the latency and score reservoirs by ``groupArraySample`` of the file fold's sizes
  (:data:`.aggregate.LATENCY_RESERVOIR`...): up to that many spans per group both sources hold every
  value, so every percentile is exact; beyond, both hold a uniform sample (different ones);
* the ``--top`` disagreements by ``ORDER BY ... LIMIT n BY`` group;
* the agreement timeline as counts per time bucket, at a bucket width the file fold's
  :class:`.aggregate.Timeline` reaches too (the width doubles from 1 ms, so both give the same series);
* ground truth: the labels travel to the server as external data and are joined there; the rows back
  are ``(primary score, candidate score, label)`` of labelled spans (bounded by the labels file);
* drift: the reference's distinct values travel as external data; each live value is placed among them
  on the server (an ``ASOF JOIN``), so the KS statistic and PSI are exact, as with files.

The exporter keeps no attribute types (every ``SpanAttributes`` value is a string: ints in decimal,
doubles in their shortest form, bools ``true``/``false``, arrays as JSON): a value counts as a number
when it reads as a finite number within ±:data:`.spans.MAX_VALUE`, as a status code when it reads as an
integer. So a number recorded as a *string* attribute (``"0.7"``) is a number here and not in a file,
and a double that is a whole number reads as an integer (``1.0`` is ``"1"``): a categorical input's
category ``1.0`` from a file is ``1`` here. And the exporter's map keeps no attribute order: recorded
values first seen on the same span are listed (``numeric_fields``, ``inputs``) by name, not in the span's
order. The report's figures are the same otherwise.

Every value in the SQL is a server-side parameter (``{name:Type}``); the only names formatted into it
are the database and table, validated as identifiers (:func:`identifier`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .._outcomes import OUTCOMES, Outcome
from .aggregate import (
    FIELD_MISSING,
    LATENCY_RESERVOIR,
    MAX_GROUPS,
    MAX_KINDS,
    MAX_MISSING_FIELDS,
    MAX_STATUS_PAIRS,
    OTHER_KIND,
    PRIMARY_FAILED_STATUS,
    SCATTER_RESERVOIR,
    SCORE_RESERVOIR,
    SEED,
    TIMELINE_BUCKETS,
    Aggregate,
    DiffStats,
    Group,
    Labels,
    ReportError,
    ReportOptions,
    Timeline,
)
from .drift import LiveFeature
from .spans import MAX_VALUE

__all__ = ["COLUMNS", "ExternalTable", "Runner", "SpanFilter", "identifier", "sql_aggregate"]

# the otel_traces columns the report reads (the exporter's names and types)
COLUMNS = ("Timestamp", "TraceId", "SpanId", "ServiceName", "SpanAttributes")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
# a coalesced span counts at most this many refusals (aggregate.MAX_COALESCED where the file fold has it)
MAX_COALESCED = 10_000_000
MAX_FIELDS = 1000  # distinct recorded-value names read back (a hostile table cannot grow the answer)
_P = "shadow.primary.body."
_C = "shadow.candidate.body."
_I = "shadow.request.body."


@dataclass
class ExternalTable:
    """A table sent along with one query (ClickHouse's "external data"): ``structure`` as in
    ``"cid String, label UInt8"``; ``rows`` of values in that order."""

    name: str
    structure: str
    rows: list[tuple[Any, ...]]


# (sql, parameters, external tables) -> rows; raises whatever its client raises
Runner = Callable[[str, dict[str, Any], list[ExternalTable]], Sequence[Sequence[Any]]]


@dataclass
class SpanFilter:
    """Which spans of the table: start time in ``[since_ns, until_ns)``, the service's name."""

    since_ns: int | None = None
    until_ns: int | None = None
    service: str | None = None


def identifier(name: str, what: str) -> str:
    """``name`` when it is a plain identifier (letters, digits, underscore), quoted with backticks;
    raises :class:`ReportError` otherwise: names cannot be parameters, so nothing else gets in."""
    if not _IDENT.fullmatch(name):
        raise ReportError(f"{what} {name[:60]!r} is not a plain name (letters, digits, underscore)")
    return f"`{name}`"


def _num(expr: str) -> str:
    """A number the way the file reader takes one: finite and within ±MAX_VALUE, else NULL."""
    return f"if(abs(toFloat64OrNull({expr})) <= {MAX_VALUE:.0e}, toFloat64OrNull({expr}), NULL)"


def _opt(key: str) -> str:
    """The attribute's value, NULL when the span lacks it (a Map gives '' for a missing key)."""
    return f"if(mapContains(a, '{key}'), a['{key}'], NULL)"


class _Query:
    """The spans of the source as a relation ``s``: one row per exchange, typed columns."""

    def __init__(self, table: str, where: SpanFilter, options: ReportOptions) -> None:
        self.table = table
        self.params: dict[str, Any] = {}
        cond = [
            "mapContains(SpanAttributes, 'shadow.target')",
            "mapContains(SpanAttributes, 'shadow.outcome')",
        ]
        if where.since_ns is not None:
            cond.append("Timestamp >= fromUnixTimestamp64Nano({since:Int64})")
            self.params["since"] = where.since_ns
        if where.until_ns is not None:
            cond.append("Timestamp < fromUnixTimestamp64Nano({until:Int64})")
            self.params["until"] = where.until_ns
        if where.service is not None:
            cond.append("ServiceName = {service:String}")
            self.params["service"] = where.service
        self.where = " AND ".join(cond)
        self.options = options
        self.groups: list[tuple[str, str]] = []
        self.dedupe = True  # off when the table holds no (TraceId, SpanId) twice: a scan's hash table less

    def raw(self) -> str:
        return f"SELECT TraceId, SpanId, Timestamp, SpanAttributes FROM {self.table} WHERE {self.where}"

    def spans(self, extra: str = "") -> str:
        """One row per (TraceId, SpanId) (a span without both ids is always its own), kept groups only
        once they are known (``gi``: the group's 1-based index)."""
        kept = "gi > 0" if self.groups else "1"
        return f"""(
          SELECT *, {_opt("shadow.reason")} AS reason,
            toInt64OrNull(a['shadow.primary.status_code']) AS sp,
            toInt64OrNull(a['shadow.candidate.status_code']) AS sc,
            {_opt("shadow.correlation_id")} AS cid,
            oc IN ('match', 'mismatch')
              AND (ifNull(reason = '{FIELD_MISSING}', 0)
                   OR ifNull(sp >= {PRIMARY_FAILED_STATUS}, 0)) AS excluded,
            toInt64OrNull(a['shadow.coalesced_count']) AS coalesced,
            toInt64(ifNull(if(oc = 'dropped' AND coalesced BETWEEN 1 AND {MAX_COALESCED}, coalesced, 1), 1))
              AS w
            {extra}
          FROM (
            SELECT TraceId AS tid, toUnixTimestamp64Nano(Timestamp) AS ts, SpanAttributes AS a,
              a['shadow.target'] AS tgt, a['shadow.route'] AS rt, a['shadow.outcome'] AS oc,
              {"indexOf(arrayZip({gt:Array(String)}, {gr:Array(String)}), (tgt, rt))" if self.groups else "1"}
                AS gi
            FROM {self.table}
            WHERE {self.where}
            {self._dedupe()}
          )
          WHERE {kept}
        ) AS s"""

    def _dedupe(self) -> str:
        if not self.dedupe:
            return ""
        return "LIMIT 1 BY TraceId, SpanId, if(TraceId != '' AND SpanId != '', 0, rowNumberInAllBlocks())"

    def scored(self, field: str | None) -> str:
        """Columns ``ps``, ``cs`` (the score field's numbers) and ``scored``."""
        if field is None:
            return ", NULL AS ps, NULL AS cs, 0 AS scored"
        self.params["pkey"] = _P + field
        self.params["ckey"] = _C + field
        return (
            f", {_num('a[{pkey:String}]')} AS ps, if(ps IS NULL, NULL, {_num('a[{ckey:String}]')}) AS cs,"
            " ps IS NOT NULL AND cs IS NOT NULL AS scored"
        )


def sql_aggregate(run: Runner, table: str, where: SpanFilter, options: ReportOptions) -> Aggregate:
    """The :class:`.aggregate.Aggregate` of the shadow spans in ``table`` (``database.table``, already
    validated), queried through ``run``. Raises :class:`ReportError` as the file fold does (more than
    one numeric recorded value and no ``--field``).

    Six scans of the table (three more with ground truth, two with a reference); spans are
    deduplicated on the server only when the table holds a repeated ``(TraceId, SpanId)``."""
    f = _Fold(run, _Query(table, where, options), options)
    agg = _groups(f)
    if not agg.groups:
        return agg
    seen_inputs = _recorded(f)
    if options.field is None and len(agg.numeric_fields) > 1:
        raise ReportError(
            f"more than one numeric recorded value ({', '.join(agg.numeric_fields)}); "
            "choose the score with --field NAME"
        )
    score_field = options.field if options.field is not None else next(iter(agg.numeric_fields), None)
    agg.score_field = score_field
    s = f.q.spans(f.q.scored(score_field))
    _kinds(f, s, _main(f, s, score_field))
    _timeline(f, s)
    if options.labels is not None:
        _ground_truth(f.rows, s, f.gl, agg, options.labels)
    if options.reference is not None and options.reference.features:
        _drift(f.rows, f.q, s, f.gl, options, seen_inputs)
    return agg


class _Fold:
    """What the scans share: the query and its parameters, the kept groups (``gi`` is the 1-based
    index into ``gl``), their timeline widths, the aggregate being filled."""

    def __init__(self, run: Runner, q: _Query, options: ReportOptions) -> None:
        self.run, self.q, self.p, self.options = run, q, q.params, options
        self.gl: list[Group] = []
        self.widths: list[int] = []
        self.agg = Aggregate({}, options.field, [], 0, 0)

    def rows(self, sql: str, tables: list[ExternalTable] | None = None) -> Sequence[Sequence[Any]]:
        """Run ``sql`` with the parameters it names."""
        used = {k: v for k, v in self.p.items() if "{" + k + ":" in sql}
        return self.run(sql, used, tables or [])


def _groups(f: _Fold) -> Aggregate:
    """The exchanges counted (duplicates apart), and the groups kept: in the order their first span
    started (the file fold: file order), at most MAX_GROUPS; their bucket widths."""
    raw_count, without_ids, distinct = f.rows(
        f"SELECT count(), countIf(TraceId = '' OR SpanId = ''), "
        f"uniqExactIf((TraceId, SpanId), TraceId != '' AND SpanId != '') FROM ({f.q.raw()})"
    )[0]
    count = int(without_ids) + int(distinct)
    f.q.dedupe = count < int(raw_count)
    # the groups, in the order their first span started (the file fold: file order), at most MAX_GROUPS
    kept = f.rows(
        f"SELECT tgt, rt, count(), minIf(ts, ts != 0), maxIf(ts, ts != 0), countIf(ts != 0) "
        f"FROM {f.q.spans()} GROUP BY tgt, rt ORDER BY min(ts), tgt, rt LIMIT {MAX_GROUPS}"
    )
    f.q.groups = [(str(r[0]), str(r[1])) for r in kept]
    f.p["gt"] = [g[0] for g in f.q.groups]
    f.p["gr"] = [g[1] for g in f.q.groups]
    groups: dict[tuple[str, str], Group] = {}
    for t, r, _n, first, last, timed in kept:
        group = groups[(str(t), str(r))] = Group(str(t), str(r))
        if timed:
            group.first_ns, group.last_ns = int(first), int(last)
        f.widths.append(_width(group.first_ns or 0, group.last_ns or 0))
    f.p["gw"] = f.widths
    beyond = count - sum(int(r[2]) for r in kept)
    f.agg = Aggregate(
        groups, f.options.field, [], count, 0, duplicates=int(raw_count) - count, beyond_groups=beyond
    )
    f.gl = list(groups.values())
    return f.agg


def _recorded(f: _Fold) -> dict[tuple[int, str], tuple[int, int, int, int, int, int]]:
    """Recorded values, one scan: per group and attribute, when first seen, how many numbers, and for
    production's fields the differences from the candidate's. Returns what drift needs of each input:
    ``(group index, input) -> (values, numbers, first and last start of a number, of any value)``."""
    candidate = f"a[concat('{_C}', substring(k, {len(_P) + 1}))]"  # the candidate's value of k's field
    recorded = f.rows(
        f"""SELECT gi, k, min(ts), countIf(n IS NOT NULL), countIf(d IS NOT NULL), sumIf(d, d IS NOT NULL),
          maxIf(d, d IS NOT NULL), count(), minIf(ts, n IS NOT NULL), maxIf(ts, n IS NOT NULL), max(ts)
        FROM (
          SELECT gi, ts, k, {_num("v")} AS n,
            if(startsWith(k, '{_P}'), abs(n - {_num(candidate)}), NULL) AS d
          FROM (SELECT gi, ts, a, mapFilter((k, v) -> startsWith(k, '{_P}') OR startsWith(k, '{_C}')
                                                      OR startsWith(k, '{_I}'), a) AS m FROM {f.q.spans()})
          ARRAY JOIN mapKeys(m) AS k, mapValues(m) AS v
        ) GROUP BY gi, k ORDER BY min(ts), k LIMIT {3 * MAX_FIELDS} BY gi"""
    )
    numeric: dict[str, int] = {}  # field -> when first seen (any group)
    inputs: dict[str, int] = {}
    # (group index, input) -> (values, numbers, first and last start of a number, of any value)
    seen_inputs: dict[tuple[int, str], tuple[int, int, int, int, int, int]] = {}
    for gi, k, first, numbers, diffs, total, top, values, nfirst, nlast, last in recorded:
        key, first = str(k), int(first)
        if key.startswith(_I):
            name = key[len(_I) :]
            inputs[name] = min(first, inputs.get(name, first))
            seen_inputs[(int(gi), name)] = (
                int(values),
                int(numbers),
                int(nfirst),
                int(nlast),
                first,
                int(last),
            )
            continue
        name = key[len(_P) :] if key.startswith(_P) else key[len(_C) :]
        if numbers:
            numeric[name] = min(first, numeric.get(name, first))
        g = f.gl[int(gi) - 1]
        if diffs and len(g.field_diffs) < MAX_KINDS:
            g.field_diffs[name] = DiffStats(int(diffs), float(total), float(top))
    f.agg.numeric_fields = sorted(numeric, key=lambda name: (numeric[name], name))
    f.agg.inputs = sorted(inputs, key=lambda name: (inputs[name], name))
    return seen_inputs


def _main(f: _Fold, s: str, score_field: str | None) -> dict[int, tuple[int, int, int]]:
    """Per group, one scan: counts, reservoirs, score differences, the largest disagreements. Returns
    per group the spans with a reason, an error type, a status (for what the kinds scan caps)."""
    for i, o in enumerate(OUTCOMES):
        f.p[f"o{i}"] = o
    f.p["threshold"] = f.options.threshold
    # a coalesced refusal span (dropped) stands for shadow.coalesced_count exchanges: w
    outcome_counts = ", ".join(f"sumIf(w, oc = {{o{i}:String}})" for i in range(len(OUTCOMES)))
    dp, dc, ds = (
        _num(f"a['shadow.{k}_ms']")
        for k in ("primary.duration", "candidate.duration", "candidate.server_duration")
    )
    pair = "(assumeNotNull(ps), assumeNotNull(cs))"
    # (-gap, -start): the largest first, among equal ones the first seen (the file fold's heap keeps those)
    top = (
        f"groupArraySortedIf({int(f.options.top)})((-abs(ps - cs), ts, tid, cid, assumeNotNull(ps), "
        "assumeNotNull(cs), a['shadow.diff.paths']), scored)"
        if f.options.top and score_field is not None
        else "[]"
    )
    main = f.rows(
        f"""SELECT gi, sum(w), {outcome_counts},
          countIf(reason = '{FIELD_MISSING}'),
          countIf(sp >= {PRIMARY_FAILED_STATUS} AND oc IN ('match', 'mismatch', 'error', 'timeout')),
          countIf(excluded AND oc = 'match'), countIf(excluded AND oc = 'mismatch'),
          countIf(sp >= {PRIMARY_FAILED_STATUS} AND oc = 'error'),
          countIf(sp >= {PRIMARY_FAILED_STATUS} AND oc = 'timeout'),
          countIf(dc IS NOT NULL AND ds > dc),
          sum(arrayCount(k -> startsWith(k, '{_P}') OR startsWith(k, '{_C}'), mapKeys(a))),
          countIf(cid IS NOT NULL),
          countIf(scored), countIf(scored AND (ps >= {{threshold:Float64}}) != (cs >= {{threshold:Float64}})),
          sumIf(abs(ps - cs), scored), maxIf(abs(ps - cs), scored), countIf(scored AND cid IS NOT NULL),
          sum(arrayCount(v -> toFloat64OrNull(v) IS NOT NULL
                              AND NOT abs(toFloat64OrNull(v)) <= {MAX_VALUE:.0e}
                         OR startsWith(v, 'json: unsupported value'), mapValues(a))),
          sumIf(w, reason IS NOT NULL), countIf(mapContains(a, 'error.type')),
          countIf(sp IS NOT NULL OR sc IS NOT NULL),
          countIf(dp IS NOT NULL), groupArraySampleIf({LATENCY_RESERVOIR}, {SEED})(dp, dp IS NOT NULL),
          countIf(dc IS NOT NULL), groupArraySampleIf({LATENCY_RESERVOIR}, {SEED + 1})(dc, dc IS NOT NULL),
          countIf(dc IS NOT NULL AND ds <= dc),
          groupArraySampleIf({LATENCY_RESERVOIR}, {SEED + 3})(ds, dc IS NOT NULL AND ds <= dc),
          groupArraySampleIf({SCATTER_RESERVOIR}, {SEED + 2})({pair}, scored),
          groupArraySampleIf({SCORE_RESERVOIR}, {SEED + 4})({pair}, scored),
          {top}
        FROM (SELECT *, {dp} AS dp, {dc} AS dc, {ds} AS ds FROM {s}) GROUP BY gi"""
    )
    nout = len(OUTCOMES)
    totals: dict[int, tuple[int, int, int]] = {}
    for row in main:
        g = f.gl[int(row[0]) - 1]
        total = int(row[1])
        for i, o in enumerate(OUTCOMES):
            g.outcomes[o] = int(row[2 + i])
        g.other_outcomes = total - sum(g.outcomes.values())
        (
            g.field_missing,
            g.primary_failed,
            g.excluded_match,
            g.excluded_mismatch,
            g.excluded_error,
            g.excluded_timeout,
            g.server_discarded,
            g.valued,
            with_id,
            g.scored,
            g.flips,
        ) = (int(x) for x in row[2 + nout : 13 + nout])
        diff_sum, diff_max, scored_with_id, out_of_range = row[13 + nout : 17 + nout]
        g.score_diff = DiffStats(
            g.scored, float(diff_sum or 0.0), float(diff_max or 0.0) if g.scored else 0.0
        )
        if f.options.labels is not None:
            g.with_id, g.scored_with_id = with_id, int(scored_with_id)
        f.agg.out_of_range += int(out_of_range)
        k = 17 + nout
        totals[int(row[0])] = (int(row[k]), int(row[k + 1]), int(row[k + 2]))
        k += 3
        g.lat_primary.fill(row[k + 1], int(row[k]))
        g.lat_candidate.fill(row[k + 3], int(row[k + 2]))
        g.lat_candidate_server.fill(row[k + 5], int(row[k + 4]))
        g.scatter.fill([tuple(x) for x in row[k + 6]], g.scored)
        g.scores.fill([tuple(x) for x in row[k + 7]], g.scored)
        for neg_gap, ts, tid, cid, ps, cs, paths in row[k + 8]:
            g.top.append((-float(neg_gap), -int(ts), cid, str(tid), float(ps), float(cs), _json_list(paths)))

    return totals


def _kinds(f: _Fold, s: str, totals: dict[int, tuple[int, int, int]]) -> None:
    # kinds, one scan: reasons by outcome, error types, status pairs, missing fields -- first seen
    # first, capped as the file fold caps them (what a hostile table has beyond, counted as "(other)")
    kinds = f.rows(
        f"""SELECT gi, x.1 AS kind, x.2 AS k1, x.3 AS k2, sum(x.4) FROM (
          SELECT gi, ts, arrayJoin(arrayFilter(t -> t.1 != 0, [
            (if(reason IS NULL, 0, 1), oc, ifNull(reason, ''), w),
            (if(mapContains(a, 'error.type'), 2, 0), a['error.type'], '', 1),
            (if(sp IS NULL AND sc IS NULL, 0, 3), ifNull(toString(sp), ''), ifNull(toString(sc), ''), 1),
            (if(reason = '{FIELD_MISSING}', 4, 0),
             if(a['shadow.missing_fields'] = '', '?', substringUTF8(a['shadow.missing_fields'], 1, 200)),
             '', 1)
          ])) AS x FROM {s}
        ) GROUP BY gi, kind, k1, k2 ORDER BY min(ts), kind, k1, k2
        LIMIT {MAX_KINDS * MAX_KINDS + MAX_KINDS + MAX_STATUS_PAIRS + MAX_MISSING_FIELDS} BY gi"""
    )
    for gi, kind, k1, k2, n in kinds:
        g = f.gl[int(gi) - 1]
        n = int(n)
        if kind == 1:
            _bump(g.reasons, str(k2), n)
            by = g.reasons_by_outcome
            okey = str(k1) if k1 in by or len(by) < MAX_KINDS else OTHER_KIND
            _bump(by.setdefault(okey, {}), str(k2), n)
        elif kind == 2:
            _bump(g.error_types, str(k1), n)
        elif kind == 3:
            if len(g.statuses) < MAX_STATUS_PAIRS:
                g.statuses[(int(k1) if k1 else None, int(k2) if k2 else None)] = n
        elif len(g.missing_fields) < MAX_MISSING_FIELDS:
            g.missing_fields[str(k1)] = n
    for gi, (reasons, etypes, statuses) in totals.items():
        g = f.gl[gi - 1]
        if (more := reasons - sum(g.reasons.values())) > 0:
            g.reasons[OTHER_KIND] = g.reasons.get(OTHER_KIND, 0) + more
        if (more := etypes - sum(g.error_types.values())) > 0:
            g.error_types[OTHER_KIND] = g.error_types.get(OTHER_KIND, 0) + more
        g.statuses_other = statuses - sum(g.statuses.values())


def _timeline(f: _Fold, s: str) -> None:
    # the agreement timeline: counts per bucket, at the group's width
    for gi, bucket, m, mm in f.rows(
        f"""SELECT gi, intDiv(ts, {{gw:Array(UInt64)}}[gi]) AS b,
          countIf(oc = 'match'), countIf(oc = 'mismatch')
        FROM {s} WHERE ts != 0 AND NOT excluded AND oc IN ('match', 'mismatch') GROUP BY gi, b"""
    ):
        f.gl[int(gi) - 1].timeline.put(f.widths[int(gi) - 1], int(bucket), [int(m), int(mm)])


def _ground_truth(
    rows: Callable[[str, list[ExternalTable] | None], Sequence[Sequence[Any]]],
    s: str,
    gl: list[Group],
    agg: Aggregate,
    labels: Any,
) -> None:
    """The labels joined on the server: per group the conflicts and the labelled spans without scores
    (by outcome), the (primary, candidate, label) rows, and how many labelled ids some span carried."""
    conflicting = labels.conflicting if isinstance(labels, Labels) else set()
    table = ExternalTable(
        "shadow_labels",
        "cid String, label UInt8",
        [(cid, label) for cid, label in labels.items()] + [(cid, 2) for cid in conflicting],
    )
    joined = f"(SELECT * FROM {s} ANY INNER JOIN shadow_labels AS l ON s.cid = l.cid)"
    for gi, oc, scored, label, n in rows(
        f"SELECT gi, oc, scored, label = 2, count() FROM {joined} GROUP BY gi, oc, scored, label = 2",
        [table],
    ):
        g = gl[int(gi) - 1]
        if label:
            g.label_conflicts += int(n)
        elif not scored:
            g.labelled_unscored[str(oc)] = g.labelled_unscored.get(str(oc), 0) + int(n)
    for gi, ps, cs, label in rows(
        f"SELECT gi, ps, cs, label FROM {joined} WHERE scored AND label < 2 ORDER BY ts, tid", [table]
    ):
        gl[int(gi) - 1].joined.append(float(ps), float(cs), int(label))
    agg.labels_seen = int(rows(f"SELECT uniqExact(cid) FROM {joined} WHERE label < 2", [table])[0][0])


def _drift(
    rows: Callable[[str, list[ExternalTable] | None], Sequence[Sequence[Any]]],
    q: _Query,
    s: str,
    gl: list[Group],
    options: ReportOptions,
    seen: dict[tuple[int, str], tuple[int, int, int, int, int, int]],
) -> None:
    """Per group and recorded input with a reference: :class:`.drift.LiveFeature`'s counts, computed
    on the server (each live value placed among the reference's distinct values by an ASOF JOIN)."""
    assert options.reference is not None
    features = options.reference.features
    names = sorted(features)
    numeric = [n for n in names if features[n].numeric]
    p = q.params
    p["fnames"] = [_I + n for n in names]
    p["fnum"] = [_I + n for n in numeric]
    p["edges"] = [[float(x) for x in features[n].edges] if features[n].numeric else [] for n in names]
    p["cats"] = [list(features[n].categories) if not features[n].numeric else [] for n in names]
    ref = ExternalTable(
        "shadow_reference",
        "k String, x Float64, i UInt32",
        [(_I + n, float(x), j + 1) for n in numeric for j, x in enumerate(features[n].values.tolist())],
    )
    live = f"""(SELECT gi, ts, k, raw, indexOf({{fnames:Array(String)}}, k) AS fi,
        has({{fnum:Array(String)}}, k) AS numeric, {_num("raw")} AS v,
        NOT numeric OR v IS NOT NULL AS valid,
        toUInt32(if(numeric, arrayCount(e -> e <= v, {{edges:Array(Array(Float64))}}[fi]),
           if(indexOf({{cats:Array(Array(String))}}[fi], raw) = 0, length({{cats:Array(Array(String))}}[fi]),
              indexOf({{cats:Array(Array(String))}}[fi], raw) - 1))) AS bin
      FROM (SELECT gi, ts, mapFilter((k, v) -> has({{fnames:Array(String)}}, k), a) AS m FROM {s})
      ARRAY JOIN mapKeys(m) AS k, mapValues(m) AS raw)"""
    lives: dict[tuple[int, str], LiveFeature] = {}
    fwidths: dict[tuple[int, str], int] = {}
    for (gi, name), (values, numbers, nfirst, nlast, first, last) in seen.items():
        feature = features.get(name)
        if feature is None:
            continue
        lf = LiveFeature(feature, Timeline(feature.bin_counts.size))
        if feature.numeric:  # values that are no number (a string, NaN, out of range): the wrong kind
            lf.n, lf.other = numbers, values - numbers
            first, last = nfirst, nlast
        else:
            lf.n = values
        gl[gi - 1].inputs[name] = lf
        lives[(gi, name)] = lf
        fwidths[(gi, name)] = _width(first, last) if lf.n else 1_000_000
    if not lives:
        return
    keys = list(fwidths)
    p["wk"] = [f"{gi}/{_I}{name}" for gi, name in keys]
    p["wv"] = [fwidths[key] for key in keys]
    width = "{wv:Array(UInt64)}[indexOf({wk:Array(String)}, concat(toString(gi), '/', k))]"
    for gi, k, bin_, bucket, n in rows(
        f"SELECT gi, k, bin, intDiv(ts, {width}) AS b, count() FROM {live} "
        "WHERE valid GROUP BY gi, k, bin, b",
        None,
    ):
        key = (int(gi), str(k)[len(_I) :])
        found = lives.get(key)  # None: an input beyond the MAX_FIELDS a hostile table's group has
        if found is None:
            continue
        found.bins[int(bin_)] += int(n)
        have = found.timeline.buckets.get(int(bucket))
        row = have if have is not None else [0] * found.timeline.size
        row[int(bin_)] += int(n)
        found.timeline.put(fwidths[key], int(bucket), row)
    if numeric:
        # i: the 1-based position of the first reference value >= v (0: above them all); eq: v is it
        for gi, k, i, eq, n in rows(
            f"""SELECT gi, k, r.i, r.x = v, count() FROM (SELECT * FROM {live} WHERE numeric AND valid) AS l
            ASOF LEFT JOIN shadow_reference AS r ON l.k = r.k AND l.v <= r.x GROUP BY gi, k, r.i, r.x = v""",
            [ref],
        ):
            found = lives.get((int(gi), str(k)[len(_I) :]))
            if found is None:
                continue
            at = int(i) - 1 if int(i) else found.feature.values.size
            if eq and int(i):
                found.equal[at] += int(n)
            else:
                found.below[at] += int(n)


def _width(first: int, last: int) -> int:
    """The bucket width (1 ms doubled) at which ``[first, last]`` spans fewer than
    :data:`.aggregate.TIMELINE_BUCKETS` buckets: never wider than the file fold's timeline after
    :meth:`.aggregate.Timeline.series` (widths are powers of two, so both reach the same buckets)."""
    width = 1_000_000
    while last // width - first // width >= TIMELINE_BUCKETS:
        width *= 2
    return width


def _bump(counts: dict[str, int], key: str, n: int) -> None:
    """``counts[key] += n``; a new key beyond :data:`.aggregate.MAX_KINDS` counts as ``(other)``."""
    if key not in counts and len(counts) >= MAX_KINDS:
        key = OTHER_KIND
    counts[key] = counts.get(key, 0) + n


def _int(value: Any) -> int | None:
    return None if value is None else int(value)


def _json_list(text: Any) -> Any:
    """An array attribute, which the exporter stores as JSON text; anything else: no list."""
    if not isinstance(text, str) or not text.startswith("["):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, list) else None


_ = Outcome  # the outcome names in the SQL are Outcome's values
