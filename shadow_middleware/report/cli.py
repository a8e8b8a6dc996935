"""The ``report`` command's options and its run: read, aggregate, build, print, exit status.

Exit status 0 promote, 1 reject, 2 not enough data or a usage error (bad option, rule or file).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from .aggregate import BOOTSTRAP_RESAMPLES, ReportError, ReportOptions, aggregate
from .build import build_report
from .ground_truth import load_labels
from .html import render_html
from .policy import Policy, PolicyError, load_policy
from .spans import NotOTLPError, read_shadow_spans
from .text import format_text

__all__ = ["MAX_LINE_ERRORS", "add_arguments", "run"]

MAX_LINE_ERRORS = 10  # malformed lines reported one by one; the rest are counted


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spans", metavar="SPANS", nargs="+", help="OTLP/JSON span files (plain or gzip)")
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
        "applies (see README), with rules of your own it does not",
    )
    parser.add_argument(
        "--format", choices=("text", "json"), default="text", help="output format (default text)"
    )
    parser.add_argument(
        "--html", metavar="FILE", help="also write a self-contained HTML report with SVG plots"
    )
    parser.add_argument(
        "--bootstrap",
        type=int,
        default=BOOTSTRAP_RESAMPLES,
        metavar="N",
        help=f"bootstrap resamples for the AUC difference CI (default {BOOTSTRAP_RESAMPLES})",
    )


def run(args: argparse.Namespace) -> int:
    """Print the report for ``args`` (from :func:`add_arguments`); returns the exit status."""
    out, err = sys.stdout, sys.stderr
    malformed = [0]

    def on_error(path: str, line: int, msg: str) -> None:
        malformed[0] += 1
        if malformed[0] <= MAX_LINE_ERRORS:
            print(f"{path}:{line}: skipped malformed line: {msg}", file=err)

    try:
        if args.bootstrap < 0:
            raise ReportError("--bootstrap must be >= 0")
        if not math.isfinite(args.threshold):
            raise ReportError("--threshold must be a finite number")
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
            labels = load_labels(
                args.ground_truth, lambda p, n, m: print(f"{p}:{n}: skipped label row: {m}", file=err)
            )
        for path in args.spans:
            if not Path(path).is_file():
                raise ReportError(f"{path}: no such file")
        options = ReportOptions(
            field=args.field, threshold=args.threshold, labels=labels, bootstrap=args.bootstrap
        )
        agg = aggregate(read_shadow_spans(args.spans, on_error), options)
    except (ReportError, PolicyError, NotOTLPError, OSError) as exc:
        print(f"error: {exc}", file=err)
        return 2
    finally:
        if malformed[0] > MAX_LINE_ERRORS:
            print(
                f"... and {malformed[0] - MAX_LINE_ERRORS} more malformed line(s) skipped "
                f"({malformed[0]} in all)",
                file=err,
            )
    agg.malformed = malformed[0]
    if args.field and args.field not in agg.numeric_fields:
        print(f"warning: no numeric recorded value named {args.field!r} in the spans", file=err)
    report = build_report(agg, options, policy)
    if args.format == "json":
        out.write(json.dumps(report, indent=2, allow_nan=False) + "\n")
    else:
        out.write(format_text(report))
    if args.html:
        try:
            Path(args.html).write_text(render_html(report, agg), encoding="utf-8")
        except OSError as exc:
            print(f"error: {args.html}: {exc.strerror or exc}", file=err)
            return 2
    code: int = report["exit_code"]
    return code
