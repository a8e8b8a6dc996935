"""How fast and in how much memory ``shadow-middleware report`` reads a week of traffic (issue 14).

``python -m bench.report_scale generate --spans 1000000`` writes, once, into ``--dir`` (default
``/tmp/shadow-report-bench``): ``spans-N.jsonl`` (OTLP JSON lines as OpenTelemetry's file exporter
writes them: 512 spans per line, a resource block per line, the attribute set the middleware records
with ``Compare(fields=["/churn_probability", "/make_offer"])``, a correlation id and six
``record_inputs``; ~1.8 KB a span), ``labels-N.csv`` (a label for every correlation id) and
``reference.csv`` (20,000 rows of the inputs, the "training sample"). Live inputs drift over the
week: ``monthly_charges`` creeps up by ~10 %, ``support_calls`` gains a few calls late in the week.

``python -m bench.report_scale run --spans 1000000`` times the report on those files, ``--format json``,
in a child process: wall time, CPU time and peak RSS (``wait4``'s ``ru_maxrss`` of that child alone),
``--repeat`` times; any further arguments go to the report (``-- --auc-ci bootstrap``).

Generating 1M spans takes ~2 minutes and 1.8 GB of disk (check ``df -h /tmp``); ``run`` reuses them.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_DIR = Path("/tmp/shadow-report-bench")
BATCH = 512  # BatchSpanProcessor's max_export_batch_size: one line per batch
WEEK_NS = 7 * 24 * 3600 * 1_000_000_000
T0 = 1_790_000_000_000_000_000

RESOURCE = (
    '{"attributes":[{"key":"telemetry.sdk.language","value":{"stringValue":"python"}},'
    '{"key":"telemetry.sdk.name","value":{"stringValue":"opentelemetry"}},'
    '{"key":"telemetry.sdk.version","value":{"stringValue":"1.45.2"}},'
    '{"key":"service.instance.id","value":{"stringValue":"93e0b2d1-8857-4ff6-be39-426bd4d5be11"}},'
    '{"key":"service.name","value":{"stringValue":"churn-api"}}]}'
)
SCOPE = '{"name":"shadow_middleware","version":"0.1.0"}'

# One span, as the OpenTelemetry SDK's OTLP JSON encoder writes it (attribute order of _telemetry).
SPAN = (
    '{{"traceId":"{trace}","spanId":"{span}","flags":256,"name":"shadow {route}","kind":3,'
    '"startTimeUnixNano":"{start}","endTimeUnixNano":"{end}","attributes":['
    '{{"key":"shadow.target","value":{{"stringValue":"churn-v2"}}}},'
    '{{"key":"shadow.route","value":{{"stringValue":"{route}"}}}},'
    '{{"key":"shadow.outcome","value":{{"stringValue":"{outcome}"}}}},'
    '{{"key":"http.request.method","value":{{"stringValue":"POST"}}}},'
    '{{"key":"url.full","value":{{"stringValue":"http://churn-v2.internal:5002/predict_shadow"}}}},'
    '{{"key":"server.address","value":{{"stringValue":"churn-v2.internal"}}}},'
    '{{"key":"server.port","value":{{"intValue":"5002"}}}},'
    '{{"key":"shadow.primary.status_code","value":{{"intValue":"200"}}}},'
    '{{"key":"shadow.primary.duration_ms","value":{{"doubleValue":{pms!r}}}}},'
    "{candidate}"
    '{{"key":"shadow.correlation_id","value":{{"stringValue":"{cid}"}}}},'
    '{{"key":"shadow.request.body.tenure_months","value":{{"intValue":"{tenure}"}}}},'
    '{{"key":"shadow.request.body.monthly_charges","value":{{"doubleValue":{charges!r}}}}},'
    '{{"key":"shadow.request.body.support_calls","value":{{"intValue":"{calls}"}}}},'
    '{{"key":"shadow.request.body.age","value":{{"intValue":"{age}"}}}},'
    '{{"key":"shadow.request.body.contract","value":{{"stringValue":"{contract}"}}}},'
    '{{"key":"shadow.request.body.has_fiber","value":{{"boolValue":{fiber}}}}}'
    '],"status":{status}}}'
)
ANSWERED = (
    '{{"key":"shadow.candidate.status_code","value":{{"intValue":"200"}}}},'
    '{{"key":"http.response.status_code","value":{{"intValue":"200"}}}},'
    '{{"key":"shadow.candidate.duration_ms","value":{{"doubleValue":{cms!r}}}}},'
    '{{"key":"shadow.candidate.server_duration_ms","value":{{"doubleValue":{sms!r}}}}},'
    '{{"key":"shadow.diff.count","value":{{"intValue":"{ndiff}"}}}},'
    '{{"key":"shadow.diff.paths","value":{{"arrayValue":{paths}}}}},'
    '{{"key":"shadow.primary.body.churn_probability","value":{{"doubleValue":{p!r}}}}},'
    '{{"key":"shadow.candidate.body.churn_probability","value":{{"doubleValue":{c!r}}}}},'
    '{{"key":"shadow.primary.body.make_offer","value":{{"boolValue":{po}}}}},'
    '{{"key":"shadow.candidate.body.make_offer","value":{{"boolValue":{co}}}}},'
)
DIFF_PATHS = '{"values":[{"stringValue":"/churn_probability"},{"stringValue":"/make_offer"}]}'  # a flip
FAILED = (
    '{{"key":"shadow.candidate.duration_ms","value":{{"doubleValue":{cms!r}}}}},'
    '{{"key":"error.type","value":{{"stringValue":"{etype}"}}}},'
)
CONTRACTS = ("month-to-month", "one-year", "two-year")


def _customer(rng: random.Random, drift: float) -> tuple[int, float, int, int, str, bool]:
    """Inputs like examples/churn/data.py's; ``drift`` in [0, 1] shifts charges and calls."""
    contract = rng.choices(CONTRACTS, weights=(0.52, 0.25, 0.23))[0]
    tenure = round(min(72.0, rng.expovariate(1.0 / {"month-to-month": 16, "one-year": 32}.get(contract, 48))))
    fiber = rng.random() < 0.45
    charges = round((55.0 if fiber else 30.0) + 8.0 * sum(rng.random() < 0.35 for _ in range(6)), 2)
    charges = round(max(18.0, charges * (1 + 0.1 * drift) + rng.gauss(0.0, 7.0)), 2)
    calls = min(10, int(rng.expovariate(1 / (1.1 + 0.6 * fiber + 1.5 * drift**4))))
    age = round(min(85.0, max(18.0, rng.gauss(46.0, 15.0))))
    return tenure, charges, calls, age, contract, fiber


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


def generate(n: int, out: Path, seed: int = 14) -> None:
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    spans_path, labels_path = out / f"spans-{n}.jsonl", out / f"labels-{n}.csv"
    t_start = time.monotonic()
    with open(spans_path, "w") as spans, open(labels_path, "w") as labels:
        labels.write("correlation_id,label\n")
        for first in range(0, n, BATCH):
            parts = []
            label_rows = []
            for i in range(first, min(n, first + BATCH)):
                drift = i / n
                tenure, charges, calls, age, contract, fiber = _customer(rng, drift)
                y = int(rng.random() < 0.3)
                signal = 1.6 * y - 0.8
                p = round(_sigmoid(signal + rng.gauss(-0.6, 1.2)), 4)
                c = round(_sigmoid(1.25 * signal + rng.gauss(-0.6, 1.1)), 4)
                start = T0 + i * WEEK_NS // n + rng.randrange(1000)
                pms = round(rng.lognormvariate(0.0, 0.8), 6)
                roll = rng.random()
                if roll < 0.002:
                    outcome = "timeout"
                    candidate = FAILED.format(cms=2000.0 + rng.random(), etype="timeout")
                    status = '{"code":2}'
                elif roll < 0.004:
                    outcome = "error"
                    candidate = FAILED.format(cms=round(rng.uniform(1, 5), 6), etype="503")
                    status = '{"code":2}'
                else:
                    po, co = p >= 0.5, c >= 0.5
                    outcome = "match" if po == co else "mismatch"
                    candidate = ANSWERED.format(
                        cms=round(2.0 + rng.lognormvariate(0.5, 0.6), 6),
                        sms=round(rng.lognormvariate(-1.5, 0.5), 3),
                        ndiff=0 if po == co else 2,
                        paths="{}" if po == co else DIFF_PATHS,
                        p=p,
                        c=c,
                        po="true" if po else "false",
                        co="true" if co else "false",
                    )
                    status = "{}"
                cid = f"C{i:08d}"
                parts.append(
                    SPAN.format(
                        trace=f"{rng.getrandbits(128):032x}",
                        span=f"{rng.getrandbits(64):016x}",
                        route="POST /predict",
                        start=start,
                        end=start + 5_000_000,
                        outcome=outcome,
                        pms=pms,
                        candidate=candidate,
                        cid=cid,
                        tenure=tenure,
                        charges=charges,
                        calls=calls,
                        age=age,
                        contract=contract,
                        fiber="true" if fiber else "false",
                        status=status,
                    )
                )
                label_rows.append(f"{cid},{y}\n")
            spans.write(
                '{"resourceSpans":[{"resource":'
                + RESOURCE
                + ',"scopeSpans":[{"scope":'
                + SCOPE
                + ',"spans":['
                + ",".join(parts)
                + "]}]}]}\n"
            )
            labels.writelines(label_rows)
            if first % (BATCH * 200) == 0:
                print(f"\r  {first}/{n} spans", end="", file=sys.stderr, flush=True)
    ref = random.Random(seed + 1)
    with open(out / "reference.csv", "w") as f:
        f.write("tenure_months,monthly_charges,support_calls,age,contract,has_fiber\n")
        for _ in range(20_000):
            tenure, charges, calls, age, contract, fiber = _customer(ref, 0.0)
            f.write(f"{tenure},{charges},{calls},{age},{contract},{str(fiber).lower()}\n")
    size = spans_path.stat().st_size
    print(
        f"\r{spans_path}: {n} spans, {size / 1e9:.2f} GB ({size / n:.0f} B/span) "
        f"in {time.monotonic() - t_start:.0f} s; {labels_path}; {out / 'reference.csv'}",
        file=sys.stderr,
    )


def measure(n: int, out: Path, extra: list[str]) -> dict[str, float]:
    cmd = [
        sys.executable,
        "-m",
        "shadow_middleware",
        "report",
        str(out / f"spans-{n}.jsonl"),
        "--ground-truth",
        str(out / f"labels-{n}.csv"),
        "--format",
        "json",
        *extra,
    ]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    stdout = proc.stdout.read()
    stderr = proc.stderr.read()
    _pid, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode not in (0, 1, 2) or not stdout:
        raise SystemExit(f"report failed ({proc.returncode}): {stderr.decode()[-2000:]}")
    report = json.loads(stdout)
    assert report["spans"] == n, report["spans"]
    return {
        "wall_s": wall,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "peak_rss_mib": usage.ru_maxrss / 1024,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", choices=("generate", "run"))
    parser.add_argument("--spans", type=int, default=200_000)
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    parser.add_argument("--repeat", type=int, default=1)
    args, extra = parser.parse_known_args(argv)  # the rest goes to the report
    args.extra = [a for a in extra if a != "--"]
    if args.command == "generate":
        generate(args.spans, args.dir)
        return 0
    if not (args.dir / f"spans-{args.spans}.jsonl").exists():
        generate(args.spans, args.dir)
    for _ in range(args.repeat):
        m = measure(args.spans, args.dir, args.extra)
        print(
            f"report of {args.spans} spans with ground truth {' '.join(args.extra)}: "
            f"wall {m['wall_s']:.1f} s, CPU {m['cpu_s']:.1f} s, peak RSS {m['peak_rss_mib']:.0f} MiB",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
