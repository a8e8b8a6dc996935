"""The ``report`` command's options and its run: read, aggregate, build, print, exit status.

Exit status 0 promote, 1 reject, 2 not enough data or a usage error (bad option, rule or file).

The report needs the ``report`` extra (numpy, msgspec): ``pip install 'shadow_middleware[report]'``
(from a checkout: ``pip install -e '.[report]'``).
Building the parser imports nothing of it, so ``check-config`` works without; :func:`run` says what to
install when it is missing.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

__all__ = ["MAX_LINE_ERRORS", "MISSING_EXTRA", "add_arguments", "run", "shown_line", "trace_url_problem"]

MAX_LINE_ERRORS = 10  # malformed lines reported one by one; the rest are counted
BOOTSTRAP_RESAMPLES = 1000  # aggregate.BOOTSTRAP_RESAMPLES (kept here: building the parser imports nothing)
TOP_DISAGREEMENTS = 20  # aggregate.TOP_DISAGREEMENTS
MISSING_EXTRA = (
    "error: the report needs numpy and msgspec (the 'report' extra): pip install "
    "'shadow_middleware[report]' (from a checkout of the source: pip install -e '.[report]'; "
    "or pip install numpy msgspec)"
)


def shown_line(text: str, width: int = 120) -> str:
    """A line of someone else's file, safe to print: control characters escaped, cut at ``width``."""
    out = "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)
    return out if len(out) <= width else out[: width - 3] + "..."


def trace_url_problem(template: str) -> str | None:
    """Why ``--trace-url`` is unusable, or ``None``: an http(s) URL with a fixed host and ``{trace_id}``
    in its path, query or fragment (never in the scheme or host: a trace id must not choose where the
    link goes)."""
    if "{trace_id}" not in template:
        return "must contain {trace_id}"
    if any(ch in template.replace("{trace_id}", "") for ch in "{}"):
        return "must have no placeholder other than {trace_id}"
    if any(ord(ch) < 0x21 or ch in '"<>\\^`|' for ch in template):
        return "no spaces, quotes or control characters"
    try:
        parts = urlsplit(template.replace("{trace_id}", "0" * 32))
        fixed = urlsplit(template)
    except ValueError:  # e.g. an unclosed IPv6 bracket
        return "must be an http:// or https:// URL with a host"
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return "must be an http:// or https:// URL with a host"
    if "{" in fixed.scheme + fixed.netloc or not fixed.hostname:
        return "must have {trace_id} after a fixed scheme://host/, in the path, query or fragment"
    return None


class ProgressBar:
    """``reading [#####.....] 45%  820 / 1820 MB  12 s`` on a terminal, at most 5 times a second."""

    def __init__(self, total: int, stream: IO[str]) -> None:
        self.total = max(total, 1)
        self.stream = stream
        self.start = self.last = time.monotonic()
        self.shown = False

    def __call__(self, done: int) -> None:
        now = time.monotonic()
        if now - self.last < 0.2 and done < self.total:
            return
        self.last = now
        frac = min(done / self.total, 1.0)
        bar = "#" * int(30 * frac) + "." * (30 - int(30 * frac))
        self.stream.write(
            f"\r  reading [{bar}] {100 * frac:3.0f}%  {done / 1e6:,.0f} / {self.total / 1e6:,.0f} MB"
            f"  {now - self.start:.0f} s"
        )
        self.stream.flush()
        self.shown = True

    def close(self) -> None:
        if self.shown:
            self.stream.write("\n")
            self.stream.flush()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "spans", metavar="SPANS", nargs="*", help="OTLP/JSON span files (plain or gzip); or --clickhouse"
    )
    parser.add_argument(
        "--clickhouse",
        metavar="URL",
        help="read the spans where the Collector's ClickHouse exporter writes them: "
        "http(s)://user@host:port/database (password from $SHADOW_CLICKHOUSE_PASSWORD); the figures "
        "are computed by the server (needs the 'clickhouse' extra)",
    )
    parser.add_argument(
        "--table",
        default="otel_traces",
        metavar="NAME",
        help="with --clickhouse: the traces table (default otel_traces)",
    )
    parser.add_argument(
        "--since",
        metavar="TIME",
        help="with --clickhouse: spans started at or after TIME (ISO 8601, e.g. 2026-12-01T00:00:00Z, "
        "or a duration ago: 30m, 24h, 7d)",
    )
    parser.add_argument(
        "--until", metavar="TIME", help="with --clickhouse: spans started before TIME (as --since)"
    )
    parser.add_argument(
        "--service", metavar="NAME", help="with --clickhouse: spans of this service.name only"
    )
    parser.add_argument(
        "--engine",
        choices=("auto", "python", "chdb"),
        default="auto",
        help="how span files are read: the light reader (python), ClickHouse's engine in-process (chdb, the "
        "'chdb' extra), or auto (default): chdb for 256 MB of plain span files or more when it is installed "
        "and no line is over 16 MiB (chdb holds a whole line: use it on files you trust)",
    )
    parser.add_argument(
        "--ca-file",
        metavar="PEM",
        help="with an https --clickhouse URL: the CA certificate(s) to verify the server",
    )
    parser.add_argument(
        "--field", metavar="NAME", help="recorded value used as the score (default: the only numeric one)"
    )
    parser.add_argument(
        "--threshold", type=float, default=0.5, metavar="T", help="decision: score >= T (default 0.5)"
    )
    parser.add_argument(
        "--ground-truth", metavar="FILE", help="labels: CSV (correlation_id,label) or JSON lines, labels 0/1"
    )
    parser.add_argument(
        "--policy",
        metavar="TOML",
        help="policy file: min_samples = N, min_labelled = N, require = [rules]",
    )
    parser.add_argument(
        "--require",
        metavar="EXPR",
        action="append",
        default=[],
        help="a rule, e.g. 'agreement >= 0.95' (repeatable); without any rule the default policy "
        "applies (see README), with rules of your own it does not -- but the default min_samples "
        "(and min_labelled) hold unless you set them",
    )
    parser.add_argument(
        "--format", choices=("text", "json"), default="text", help="output format (default text)"
    )
    parser.add_argument(
        "--html", metavar="FILE", help="also write a self-contained HTML report with SVG plots"
    )
    parser.add_argument(
        "--auc-ci",
        choices=("delong", "bootstrap"),
        default="delong",
        help="the AUC difference's 95%% interval and p-value: DeLong's test (default; exact, "
        "O(n log n)) or a paired percentile bootstrap (no p-value; O(N x n), slow)",
    )
    parser.add_argument(
        "--bootstrap",
        type=int,
        default=BOOTSTRAP_RESAMPLES,
        metavar="N",
        help=f"resamples for --auc-ci bootstrap (default {BOOTSTRAP_RESAMPLES})",
    )
    parser.add_argument(
        "--reference",
        metavar="FILE",
        help="drift: a reference sample of the inputs (CSV whose header names them, or JSON lines), "
        "compared with the recorded inputs (record_inputs): KS and PSI per input",
    )
    parser.add_argument(
        "--top",
        type=int,
        default=TOP_DISAGREEMENTS,
        metavar="N",
        help=f"list the N exchanges with the largest score difference (default {TOP_DISAGREEMENTS})",
    )
    parser.add_argument(
        "--trace-url",
        metavar="TEMPLATE",
        help="link trace ids in the HTML to your trace viewer, e.g. 'https://tempo.example/trace/{trace_id}'",
    )
    parser.add_argument(
        "--route",
        metavar="ROUTE",
        action="append",
        default=[],
        help="report this route only, e.g. 'POST /predict' (exact name; repeatable)",
    )
    parser.add_argument(
        "--target",
        metavar="NAME",
        action="append",
        default=[],
        help="report this target only (exact name; repeatable)",
    )
    parser.add_argument(
        "--no-progress", action="store_true", help="no progress bar (shown on a terminal only)"
    )


def run(args: argparse.Namespace) -> int:
    """Print the report for ``args`` (from :func:`add_arguments`); returns the exit status."""
    out, err = sys.stdout, sys.stderr
    try:
        import msgspec  # noqa: F401
        import numpy  # noqa: F401
    except ImportError:
        print(MISSING_EXTRA, file=err)
        return 2
    from .aggregate import ReportError, ReportOptions, aggregate_batches
    from .build import build_report
    from .clickhouse import ClickHouseError
    from .drift import ReferenceError, load_reference
    from .embedded import AUTO_BYTES, EmbeddedError, chdb_aggregate, lines_fit
    from .embedded import available as embedded_available
    from .format import clean
    from .ground_truth import load_labels
    from .html import render_html
    from .policy import Policy, PolicyError, load_policy
    from .spans import NotOTLPError, Skipped, read_span_batches
    from .text import format_text

    def say(message: str) -> None:
        """One line on stderr; file names, keys and quoted input escaped for the terminal."""
        print(clean(message, limit=2000), file=err)

    malformed = [0]
    skipped = Skipped()
    progress: ProgressBar | None = None

    def on_error(path: str, line: int, msg: str) -> None:
        malformed[0] += 1
        if malformed[0] <= MAX_LINE_ERRORS:
            say(f"{path}:{line}: skipped malformed line: {msg}")

    try:
        if args.bootstrap < 0:
            raise ReportError("--bootstrap must be >= 0")
        if not math.isfinite(args.threshold):
            raise ReportError("--threshold must be a finite number")
        if args.top < 0:
            raise ReportError("--top must be >= 0")
        if args.trace_url is not None and (problem := trace_url_problem(args.trace_url)):
            raise ReportError(f"--trace-url {problem}, e.g. 'https://tempo.example/trace/{{trace_id}}'")
        policy = load_policy(args.policy, args.require) if args.policy else Policy()
        if not args.policy:
            for text in args.require:
                policy.add(text)
        sources = ([f"--policy {args.policy}"] if args.policy else []) + (
            ["--require"] if args.require else []
        )
        policy.description = "from " + " and ".join(sources) if sources else policy.description
        labels = None
        if args.ground_truth:
            labels = load_labels(args.ground_truth, lambda p, n, m: say(f"{p}:{n}: skipped label row: {m}"))
        reference = None
        if args.reference:
            reference = load_reference(
                args.reference, lambda p, n, m: say(f"{p}:{n}: skipped reference row: {m}")
            )
        if args.clickhouse is not None and args.spans:
            raise ReportError("give span files or --clickhouse, not both")
        if args.clickhouse is None and not args.spans:
            raise ReportError("give span file(s), or --clickhouse URL")
        if args.clickhouse is None:
            for name in ("since", "until", "service", "ca_file"):
                if getattr(args, name) is not None:
                    raise ReportError(f"--{name.replace('_', '-')} goes with --clickhouse")
        for path in args.spans:
            if Path(path).is_dir():
                raise ReportError(f"{path}: is a directory; give the span file(s) in it")
            if not Path(path).is_file():
                raise ReportError(f"{path}: no such file")
        options = ReportOptions(
            field=args.field,
            threshold=args.threshold,
            labels=labels,
            bootstrap=args.bootstrap,
            auc_ci=args.auc_ci,
            top=args.top,
            reference=reference,
            trace_url=args.trace_url,
        )
        if args.clickhouse is not None:
            from .clickhouse import clickhouse_aggregate
            from .sql import SpanFilter

            now = time.time_ns()
            where = SpanFilter(
                _time(args.since, "--since", now), _time(args.until, "--until", now), args.service
            )
            agg = clickhouse_aggregate(args.clickhouse, args.table, where, options, ca_file=args.ca_file)
        else:
            found: Any = None
            size = sum(os.path.getsize(p) for p in args.spans)
            if args.engine == "chdb" or (
                args.engine == "auto"
                and size >= AUTO_BYTES
                and embedded_available()
                and lines_fit(args.spans)
            ):
                try:
                    found = chdb_aggregate(args.spans, options)
                except EmbeddedError as exc:
                    if args.engine == "chdb":
                        raise
                    say(f"note: {exc}; reading with the light reader instead")
                # no shadow span at all: the light reader says what the files are instead
                if found is not None and not found.spans and args.engine == "auto":
                    found = None
            if found is None:
                if not args.no_progress and err.isatty():
                    progress = ProgressBar(size, err)
                found = aggregate_batches(read_span_batches(args.spans, on_error, progress, skipped), options)
            agg = found
        _keep_groups(agg, args.target, args.route)
    except (
        ReportError,
        ReferenceError,
        PolicyError,
        NotOTLPError,
        OSError,
        ClickHouseError,
        EmbeddedError,
    ) as exc:
        if progress is not None:
            progress.close()
        say(f"error: {exc}")
        return 2
    finally:
        if progress is not None:
            progress.close()
            progress = None
        if malformed[0] > MAX_LINE_ERRORS:
            print(
                f"... and {malformed[0] - MAX_LINE_ERRORS} more malformed line(s) skipped "
                f"({malformed[0]} in all)",
                file=err,
            )
    agg.malformed = malformed[0]
    if skipped.count:
        for path, number, text in skipped.first:
            print(f"{path}:{number}: skipped line that is not OTLP: {shown_line(text)}", file=err)
        more = skipped.count - len(skipped.first)
        print(
            (f"... and {more} more; " if more else "")
            + f"{skipped.count} line(s) that are not OTLP skipped in all: keep logs out of the span "
            "file (see README 'Writing the span file')",
            file=err,
        )
    if args.field and args.field not in agg.numeric_fields:
        say(f"warning: no numeric recorded value named {args.field!r} in the spans")
    if reference is not None:
        unmatched = sorted(set(reference.features) - set(agg.inputs))
        if not agg.inputs:
            print(
                "warning: --reference given but the spans carry no recorded input "
                "(shadow.request.body.*): set ShadowConfig(record_inputs=[...])",
                file=err,
            )
        elif unmatched:
            say(f"note: reference columns never recorded live: {', '.join(unmatched)}")
    report = build_report(agg, options, policy)
    report["skipped_lines"] = skipped.count
    if args.format == "json":
        out.write(json.dumps(report, indent=2, allow_nan=False) + "\n")
    else:
        out.write(format_text(report))
    if args.html:
        try:
            Path(args.html).write_text(render_html(report, agg), encoding="utf-8")
        except OSError as exc:
            say(f"error: {args.html}: {exc.strerror or exc}")
            return 2
    code: int = report["exit_code"]
    return code


def _keep_groups(agg: Any, targets: list[str], routes: list[str]) -> None:
    """Keep the groups of ``--target`` / ``--route`` (exact names; all when none given). Raises
    ``ReportError`` naming the ones the spans have when a name is unknown."""
    from .aggregate import ReportError

    for option, wanted, index in (("--target", targets, 0), ("--route", routes, 1)):
        have = sorted({key[index] for key in agg.groups})
        unknown = [name for name in dict.fromkeys(wanted) if name not in have]
        if unknown:
            raise ReportError(
                f"{option} {', '.join(map(repr, unknown))}: not in the spans "
                f"(they have: {', '.join(map(repr, have)) or 'none'})"
            )
    agg.groups = {
        key: g
        for key, g in agg.groups.items()
        if (not targets or key[0] in targets) and (not routes or key[1] in routes)
    }


_UNITS = {"s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9, "d": 86400 * 10**9}


def _time(text: str | None, option: str, now_ns: int) -> int | None:
    """``--since``/``--until`` in ns since the epoch: ISO 8601 (no zone: UTC) or a duration ago
    (``90s``, ``30m``, ``24h``, ``7d``). Raises ``ReportError``."""
    from datetime import UTC, datetime

    from .aggregate import ReportError

    if text is None:
        return None
    t = text.strip()
    if t[-1:] in _UNITS and t[:-1].isdigit() and len(t) < 12:
        return now_ns - int(t[:-1]) * _UNITS[t[-1]]
    try:
        when = datetime.fromisoformat(t.replace("Z", "+00:00"))
    except ValueError:
        raise ReportError(
            f"{option} {text[:40]!r}: expected ISO 8601 (2026-12-01T00:00:00Z) or 30m, 24h, 7d"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    delta = when - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86400 + delta.seconds) * 10**9 + delta.microseconds * 1000
