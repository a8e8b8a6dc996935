"""``make demo``: shadow mode end to end, with real server processes on 127.0.0.1.

1. starts the candidate service (churn model v2) and the production app (v1, with the
   shadow middleware) as real servers;
2. replays held-out customers from the churn data set as live traffic;
3. stops production gracefully, which flushes every shadow result;
4. reads the spans back from the OTLP/JSON file (the telemetry, not in-process
   counters) and prints a side-by-side summary, checked against what the candidate
   says it received.

Exit status: 0 when everything worked and the numbers agree, 1 otherwise.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from examples.churn import data
from examples.launch import ROOT, Process, start
from shadow_middleware.report.policy import DEFAULT_MIN_LABELLED
from shadow_middleware.report.spans import ShadowSpan, read_shadow_spans

OUTCOMES = ("match", "mismatch", "error", "timeout", "dropped", "skipped")
SERVERS = {"fastapi": "FastAPI under uvicorn", "flask": "Flask under gunicorn (2 workers, --preload)"}


SERVER_TIME = "shadow.candidate.server_duration_ms"  # the candidate's own time, from Server-Timing


def report_rules(requests: int, server_timing: bool = True) -> list[str]:
    """The promotion rules of the demo's verdict. Fair: a candidate identical to production passes
    them, whatever the machine's load. Latency is compared like with like, the candidate's own time
    (its Server-Timing header) against production's time in the app -- never the candidate's round
    trip, which adds the network hop and the shadow client; without Server-Timing, no latency rule.
    p95 with room for sub-millisecond noise, the default policy's rule: on a busy 2-core machine a
    p99 of either side is a handful of stalls, and a 1.2x p99 rule rejected a faster candidate."""
    rules = [f"min_samples = {min(200, requests)}", "agreement >= 0.8", "candidate.auc >= primary.auc"]
    if requests < DEFAULT_MIN_LABELLED:  # a short run: the default minimum of labels would not be met
        rules.append(f"min_labelled = {requests}")
    if server_timing:
        rules.append("candidate.server_p95_ms <= 1.25 * primary.p95_ms + 1")
    return rules


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


class Progress:
    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.done, self.enabled = total, 0, enabled
        self.lock = threading.Lock()

    def tick(self) -> None:
        with self.lock:
            self.done += 1
            if not self.enabled:
                return
            if not sys.stderr.isatty():  # a log, not a terminal: a line per quarter
                if self.done * 4 // self.total != (self.done - 1) * 4 // self.total:
                    sys.stderr.write(f"  sent {self.done}/{self.total}\n")
                return
            if self.done % 10 == 0 or self.done == self.total:
                filled = int(30 * self.done / self.total)
                bar = "#" * filled + "." * (30 - filled)
                sys.stderr.write(f"\r  sending [{bar}] {self.done}/{self.total}")
                if self.done == self.total:
                    sys.stderr.write("\n")
                sys.stderr.flush()


def send_traffic(
    port: int, payloads: list[dict[str, Any]], concurrency: int, progress: Progress
) -> Counter[int]:
    local = threading.local()
    statuses: Counter[int] = Counter()
    lock = threading.Lock()

    def one(payload: dict[str, Any]) -> None:
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        body = json.dumps(payload).encode()
        try:
            conn.request("POST", "/predict", body=body, headers={"content-type": "application/json"})
            resp = conn.getresponse()
            resp.read()
            status = resp.status
        except OSError:
            local.conn = None
            status = 0
        with lock:
            statuses[status] += 1
        progress.tick()

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, payloads))
    return statuses


def get_json(port: int, path: str) -> Any:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        return json.loads(conn.getresponse().read())
    finally:
        conn.close()


def summarize(spans: list[ShadowSpan], labels: dict[str, int]) -> list[dict[str, Any]]:
    groups: dict[tuple[str, str], list[ShadowSpan]] = {}
    for span in spans:
        groups.setdefault((span.target, span.route), []).append(span)
    out = []
    for (target, route), group in sorted(groups.items()):
        # A refusal (queue full, circuit open, over the CPU budget) has no span of its own: one
        # coalesced span per target, reason and second stands for shadow.coalesced_count of them.
        outcomes: Counter[str] = Counter()
        refused: Counter[str] = Counter()
        for s in group:
            n = s.attributes.get("shadow.coalesced_count", 1) if s.outcome == "dropped" else 1
            n = n if isinstance(n, int) and n >= 1 else 1
            outcomes[s.outcome] += n
            if s.outcome == "dropped":
                refused[str(s.attributes.get("shadow.reason", "?"))] += n
        pairs = [
            (
                s.attributes["shadow.primary.body.make_offer"],
                s.attributes["shadow.candidate.body.make_offer"],
                s,
            )
            for s in group
            if "shadow.primary.body.make_offer" in s.attributes
            and "shadow.candidate.body.make_offer" in s.attributes
        ]
        flips = sum(1 for p, c, _ in pairs if p != c)
        labelled = [
            (p, c, labels[str(s.attributes["shadow.correlation_id"])])
            for p, c, s in pairs
            if str(s.attributes.get("shadow.correlation_id")) in labels
        ]
        primary_ms = [
            float(s.attributes["shadow.primary.duration_ms"])
            for s in group
            if "shadow.primary.duration_ms" in s.attributes
        ]
        candidate_ms = [
            float(s.attributes["shadow.candidate.duration_ms"])
            for s in group
            if "shadow.candidate.duration_ms" in s.attributes
        ]
        out.append(
            {
                "target": target,
                "route": route,
                "requests": sum(outcomes.values()),
                "outcomes": {o: outcomes.get(o, 0) for o in OUTCOMES},
                "dropped_reasons": dict(refused),
                "compared": len(pairs),
                "decision_flip_rate": flips / len(pairs) if pairs else None,
                "candidate_responses": sum(
                    1 for s in group if "shadow.candidate.status_code" in s.attributes
                ),
                "latency_ms": {
                    "primary": {f"p{q}": percentile(primary_ms, q / 100) for q in (50, 95, 99)},
                    "candidate": {f"p{q}": percentile(candidate_ms, q / 100) for q in (50, 95, 99)},
                },
                "labelled": len(labelled),
                "accuracy": {
                    "primary": sum(1 for p, _, y in labelled if bool(p) == bool(y)) / len(labelled)
                    if labelled
                    else None,
                    "candidate": sum(1 for _, c, y in labelled if bool(c) == bool(y)) / len(labelled)
                    if labelled
                    else None,
                },
            }
        )
    return out


def render(summary: list[dict[str, Any]], example: str, sent: int, seconds: float, concurrency: int) -> str:
    lines = [f"shadow_middleware demo — {SERVERS[example]}", ""]
    lines.append(f"  sent {sent} prediction requests ({concurrency} concurrent) in {seconds:.1f} s")
    for s in summary:
        o = s["outcomes"]
        lines += [
            "",
            f"  target {s['target']}   route {s['route']}",
            f"    shadowed requests   {s['requests']}",
            "    outcomes            " + "  ".join(f"{k} {o[k]}" for k in OUTCOMES),
        ]
        if s["dropped_reasons"]:
            why = ", ".join(f"{n} {reason}" for reason, n in sorted(s["dropped_reasons"].items()))
            lines.append(f"    dropped because     {why}  (cpu_budget: shadow work kept to its CPU budget)")
        if o["match"] + o["mismatch"]:
            agreement = o["match"] / (o["match"] + o["mismatch"])
            lines.append(f"    agreement           {100 * agreement:.1f} %  (match / (match + mismatch))")
        if s["decision_flip_rate"] is not None:
            flips = 100 * s["decision_flip_rate"]
            lines.append(f"    decision flips      {flips:.1f} %  (of {s['compared']} compared)")
        lat = s["latency_ms"]
        lines.append("                        production   candidate")
        for q in ("p50", "p95", "p99"):
            lines.append(
                f"    latency {q:<4} (ms)   {lat['primary'][q]:>10.2f}   {lat['candidate'][q]:>9.2f}"
            )
        acc = s["accuracy"]
        if acc["primary"] is not None:
            lines.append(
                f"    accuracy            {acc['primary']:>10.3f}   {acc['candidate']:>9.3f}"
                f"   (n={s['labelled']} with known labels)"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--example", choices=sorted(SERVERS), default="fastapi")
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--out", type=Path, default=ROOT / "demo-out", help="where spans, labels and logs go")
    parser.add_argument("--json", type=Path, help="also write the summary as JSON here")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if args.requests < 1:
        parser.error("--requests must be >= 1")

    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    span_file = out / "shadow-spans.jsonl"
    span_file.unlink(missing_ok=True)
    labels_file = out / "labels.csv"
    reference_file = out / "reference.csv"

    rows = data.load()
    live = rows[2000:]  # held out from training: the "live traffic"
    data.write_labels(labels_file, live)
    data.write_reference(reference_file, rows[: data.TRAIN_SIZE])  # drift: against the training rows
    payloads = [data.features_only(live[i % len(live)]) for i in range(args.requests)]
    labels = {str(r["customer_id"]): int(r["churned"]) for r in live}

    failures: list[str] = []
    started: list[Process] = []
    print(f"starting the candidate (v2) and production (v1) {SERVERS[args.example]} on 127.0.0.1 ...")
    try:
        candidate = start(args.example, "candidate", {}, out / "logs")
        started.append(candidate)
        candidate.wait_healthy()
        env = {
            "CANDIDATE_URL": f"http://127.0.0.1:{candidate.port}/predict_shadow",
            "EXAMPLE_SPAN_FILE": str(span_file),
        }
        production = start(args.example, "production", env, out / "logs")
        started.append(production)
        production.wait_healthy()

        t0 = time.monotonic()
        statuses = send_traffic(
            production.port, payloads, args.concurrency, Progress(len(payloads), not args.no_progress)
        )
        seconds = time.monotonic() - t0
        if set(statuses) != {200}:
            failures.append(f"production answered {dict(statuses)} (expected only 200)")

        # A graceful stop flushes every shadow result and the span exporter.
        code = production.stop()
        # uvicorn re-raises SIGTERM after its graceful shutdown: -15 is a clean exit there.
        if code not in (0, -signal.SIGTERM):
            failures.append(f"production exited with {code}; see {production.log}")
        received = get_json(candidate.port, "/stats")
    except (OSError, RuntimeError) as exc:
        failures.append(str(exc))
        received, seconds = {}, 0.0
    finally:
        for proc in started:
            proc.stop()

    bad_lines: list[str] = []
    spans = list(
        read_shadow_spans([span_file], lambda p, n, m: bad_lines.append(f"{p}:{n}: {m}"))
        if span_file.exists()
        else []
    )
    summary = summarize(spans, labels)
    if not failures:
        print()
        print(render(summary, args.example, len(payloads), seconds, args.concurrency))
        print()

    # The telemetry must account for every request, and agree with the candidate.
    total = sum(s["requests"] for s in summary)
    if bad_lines:
        failures.append(f"{len(bad_lines)} malformed lines in {span_file}: {bad_lines[:3]}")
    if total != len(payloads):
        failures.append(f"{total} shadow outcomes in the spans for {len(payloads)} requests")
    responded = sum(s["candidate_responses"] for s in summary)
    lost = sum(s["outcomes"]["timeout"] + s["outcomes"]["error"] for s in summary)
    if received and not responded <= received.get("received", -1) <= responded + lost:
        failures.append(
            f"candidate received {received.get('received')} requests, spans show {responded} responses"
        )
    if received and received.get("marked") != received.get("received"):
        failures.append("some shadow requests arrived without the x-shadow-request marker")

    if args.json:
        args.json.write_text(
            json.dumps({"summary": summary, "candidate": received, "failures": failures}, indent=2) + "\n"
        )
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    print("telemetry:")
    shown = span_file.relative_to(ROOT) if span_file.is_relative_to(ROOT) else span_file
    print(f"  spans (OTLP/JSON, the Collector file exporter's format): {shown}")
    if endpoint:
        print(f"  spans and metrics also exported over OTLP/HTTP to {endpoint}")
    else:
        print("  set OTEL_EXPORTER_OTLP_ENDPOINT to also send spans and metrics to a collector")
    print(
        f"  candidate counted {received.get('received', '?')} shadow requests; the spans agree"
        if not failures
        else ""
    )
    if not failures and span_file.exists():
        # The verdict, from the same telemetry plus the labels that "arrived later".
        html = out / "report.html"
        with_server_time = sum(1 for s in spans if SERVER_TIME in s.attributes)
        rules = report_rules(len(payloads), server_timing=2 * with_server_time > len(spans))
        cmd = [
            sys.executable,
            "-m",
            "shadow_middleware",
            "report",
            str(span_file),
            "--ground-truth",
            str(labels_file),
            "--reference",
            str(reference_file),
            "--html",
            str(html),
        ]
        for rule in rules:
            cmd += ["--require", rule]
        print()
        print(
            "$ shadow-middleware report "
            + " ".join(repr(a) if " " in a else a for a in cmd[4:]).replace(str(ROOT) + "/", "")
        )
        sys.stdout.flush()
        verdict = subprocess.run(cmd, cwd=ROOT, check=False)
        if verdict.returncode not in (0, 1):
            failures.append(f"the report command exited with {verdict.returncode}")
    if failures:
        print("DEMO FAILED:", file=sys.stderr)
        for f in failures:
            print(f"  - {f}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
