"""``make bench``: what shadowing costs production, measured against a no-middleware baseline.

Real server processes on 127.0.0.1, the app pinned to core 0 and everything else (load
generator, shadow servers, nginx, the OTLP receiver) to core 1. Load comes from wrk
(throughput) and hey (fixed offered rate), never from Python. Arms are interleaved
(baseline, variant, baseline, variant, ...) and medians reported; every ratio is printed
next to its goal. The benchmark reports; it does not fail on a missed goal.

Arms, for the FastAPI example under uvicorn (1 worker) and the Flask example under gunicorn:
1. middleware installed, request on a route that is not shadowed: throughput, p99;
2. every request shadowed to nginx returning fixed JSON, OpenTelemetry SDK as in production
   (batch span processor, OTLP/HTTP exporter to a local receiver): throughput and the app's
   CPU microseconds per request (process CPU time / requests) -- also with httpx as the
   shadow client, to show why aiohttp was chosen;
3. every request shadowed to a slow shadow (2 s per answer) at half the baseline's capacity:
   p50 and p99 latency;
4. a stalled shadow (accepts, never answers) at a fixed rate for 60 s: the app's RSS over
   time and the outcome counts;
5. the anchor: nginx's ``mirror`` in front of the no-middleware app, same slow shadow, same
   rate: p50 and p99.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from examples.churn import data
from examples.launch import ROOT, Process, free_port, start
from shadow_middleware.report.spans import read_shadow_spans

APP_CORE = "0"
LOAD_CORE = "1"
PIN_APP = ["taskset", "-c", APP_CORE]
PIN_LOAD = ["taskset", "-c", LOAD_CORE]
OUT = ROOT / "bench" / "out"
FRAMEWORKS = {"fastapi": "FastAPI / uvicorn (1 worker)", "flask": "Flask / gunicorn (2 gthread workers)"}


# ---- helpers ---------------------------------------------------------------------------------


def children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def tree(pid: int) -> list[int]:
    out = [pid]
    for child in children(pid):
        out.extend(tree(child))
    return out


def cpu_seconds(proc: Process) -> float:
    total = 0.0
    for pid in tree(proc.proc.pid):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def rss_mib(proc: Process) -> float:
    total = 0
    for pid in tree(proc.proc.pid):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total / 1024


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s)", text)
    if not m:
        raise ValueError(f"cannot parse latency {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def wrk(port: int, body: Path, seconds: float, conns: int = 16) -> dict[str, float]:
    script = body.with_suffix(".lua")
    cmd = [*PIN_LOAD, "wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "--latency", "-s", str(script)]
    out = subprocess.run(
        [*cmd, f"http://127.0.0.1:{port}/predict"], capture_output=True, text=True, check=True
    )
    text = out.stdout
    result = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))}  # type: ignore[union-attr]
    result["requests"] = float(re.search(r"(\d+) requests in", text).group(1))  # type: ignore[union-attr]
    for q in ("50", "99"):
        result[f"p{q}"] = _ms(re.search(rf"\s{q}%\s+([\d.]+\w+)", text).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    result["errors"] = float(errors.group(1)) if errors else 0.0
    return result


def hey(port: int, body: Path, seconds: float, rate: float, conns: int = 32) -> dict[str, float]:
    per_worker = max(rate / conns, 0.1)
    cmd = [*PIN_LOAD, "hey", "-z", f"{seconds}s", "-c", str(conns), "-q", f"{per_worker:.2f}"]
    cmd += ["-m", "POST", "-T", "application/json", "-D", str(body), f"http://127.0.0.1:{port}/predict"]
    text = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    result = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))}  # type: ignore[union-attr]
    for q in ("50", "99"):
        m = re.search(rf"{q}%+ in ([\d.]+) secs", text)
        result[f"p{q}"] = float(m.group(1)) * 1000 if m else float("nan")
    codes = {int(c): int(n) for c, n in re.findall(r"\[(\d+)\]\s+(\d+) responses", text)}
    result["ok"] = float(codes.get(200, 0))
    result["not_ok"] = float(sum(n for c, n in codes.items() if c != 200))
    result["errors"] = float(
        len(re.findall(r"^\s+\[\d+\]\s+Get|Post", text, re.M)) if "Error distribution" in text else 0
    )
    return result


class Sink:
    """A local OTLP/HTTP receiver that accepts and counts (its CPU is not the app's)."""

    def __init__(self) -> None:
        sink = self
        self.requests = 0

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length") or 0))
                sink.requests += 1
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> Sink:
        os.sched_setaffinity(0, {int(LOAD_CORE)})  # this (orchestrator) process stays off the app's core
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@dataclass
class Nginx:
    conf: str
    workdir: Path

    def __enter__(self) -> Nginx:
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "nginx.conf").write_text(self.conf)
        self.proc = subprocess.Popen(
            [*PIN_LOAD, "nginx", "-p", str(self.workdir), "-c", "nginx.conf", "-g", "daemon off;"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(0.5)
        if self.proc.poll() is not None:
            raise RuntimeError(f"nginx failed to start; see {self.workdir}/error.log")
        return self

    def __exit__(self, *exc: Any) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def _nginx_conf(workdir: Path, server: str) -> str:
    return f"""
user root;
worker_processes 1;
pid {workdir}/nginx.pid;
error_log {workdir}/error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    client_body_temp_path {workdir}/body;
    proxy_temp_path {workdir}/proxy;
    fastcgi_temp_path {workdir}/fastcgi;
    uwsgi_temp_path {workdir}/uwsgi;
    scgi_temp_path {workdir}/scgi;
    keepalive_requests 1000000;
{server}
}}
"""


def fixed_json_nginx(workdir: Path, port: int) -> Nginx:
    answer = '{"customer_id": "C00000", "churn_probability": 0.3, "make_offer": false, "model_version": "v2"}'
    server = f"""
    server {{
        listen 127.0.0.1:{port};
        location / {{ default_type application/json; return 200 '{answer}'; }}
    }}"""
    return Nginx(_nginx_conf(workdir, server), workdir)


def mirror_nginx(workdir: Path, port: int, app_port: int, shadow_port: int) -> Nginx:
    server = f"""
    upstream app {{ server 127.0.0.1:{app_port}; keepalive 64; }}
    upstream shadow {{ server 127.0.0.1:{shadow_port}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            mirror /mirror;
            mirror_request_body on;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass http://app;
        }}
        location = /mirror {{
            internal;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_read_timeout 5s;
            proxy_pass http://shadow/predict_shadow;
        }}
    }}"""
    return Nginx(_nginx_conf(workdir, server), workdir)


@contextlib.contextmanager
def app(framework: str, env: dict[str, str], logs: Path) -> Iterator[Process]:
    # A client-comparison arm runs the same example through bench.app, which swaps the client.
    module = "bench.app:app" if "BENCH_HTTP_CLIENT" in env else None
    env = {**env, "BENCH_EXAMPLE": framework} if module else env
    proc = start(framework, "production", env, logs, wrap=PIN_APP, module=module)
    try:
        proc.wait_healthy()
        yield proc
    finally:
        proc.stop()


@contextlib.contextmanager
def shadow_server(mode: str, delay: float) -> Iterator[int]:
    port = free_port()
    proc = subprocess.Popen(
        [*PIN_LOAD, sys.executable, "-m", "bench.shadows", mode, str(delay), str(port)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        time.sleep(0.5)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def settle(proc: Process, limit: float = 30.0) -> None:
    """Wait until the app is idle: shadow work left over from a run must not land on the next arm."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        before = cpu_seconds(proc)
        time.sleep(0.25)
        if cpu_seconds(proc) - before < 0.005:
            return


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


# ---- the arms ----------------------------------------------------------------------------------


@dataclass
class Plan:
    reps: int
    seconds: float
    fixed_seconds: float
    stall_seconds: float
    clients: tuple[str, ...]


def run_framework(framework: str, plan: Plan, body: Path, work: Path) -> dict[str, Any]:
    res: dict[str, Any] = {"framework": FRAMEWORKS[framework]}
    logs = work / "logs"
    with Sink() as sink:
        otel = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{sink.port}",
            "OTEL_METRIC_EXPORT_INTERVAL": "5000",
        }
        nginx_port = free_port()
        with fixed_json_nginx(work / "nginx-fixed", nginx_port):
            fixed = f"http://127.0.0.1:{nginx_port}/predict_shadow"
            arms = {
                "baseline": {**otel, "NO_SHADOW": "1"},
                "unrouted": {**otel, "CANDIDATE_URL": fixed, "SHADOW_ROUTES": "POST /not-this-route"},
            }
            for client in plan.clients:
                arms[f"shadowed-{client}"] = {**otel, "CANDIDATE_URL": fixed, "BENCH_HTTP_CLIENT": client}
            runs: dict[str, list[dict[str, float]]] = {name: [] for name in arms}
            with contextlib.ExitStack() as stack:
                procs = {name: stack.enter_context(app(framework, env, logs)) for name, env in arms.items()}
                for proc in procs.values():  # warm up every arm
                    wrk(proc.port, body, 1)
                    settle(proc)
                for _ in range(plan.reps):
                    for name, proc in procs.items():  # interleaved
                        before = cpu_seconds(proc)
                        r = wrk(proc.port, body, plan.seconds)
                        settle(proc)  # the shadow work a run queued is part of its cost
                        r["cpu_us_per_request"] = (cpu_seconds(proc) - before) / r["requests"] * 1e6
                        runs[name].append(r)
            res["throughput"] = {
                name: {
                    k: median([r[k] for r in rs])
                    for k in ("rps", "p50", "p99", "cpu_us_per_request", "errors")
                }
                for name, rs in runs.items()
            }
        base_rps = res["throughput"]["baseline"]["rps"]
        rate = round(base_rps / 2)
        res["fixed_rate"] = rate

        # Arms 3 and 5: a slow shadow (2 s), at half the baseline's capacity.
        with shadow_server("slow", 2.0) as slow_port:
            slow = f"http://127.0.0.1:{slow_port}/predict_shadow"
            lat: dict[str, list[dict[str, float]]] = {
                "baseline": [],
                "middleware-slow": [],
                "nginx-mirror-slow": [],
            }
            with contextlib.ExitStack() as stack:
                base = stack.enter_context(app(framework, {**otel, "NO_SHADOW": "1"}, logs))
                mw = stack.enter_context(app(framework, {**otel, "CANDIDATE_URL": slow}, logs))
                mirror_port = free_port()
                stack.enter_context(mirror_nginx(work / "nginx-mirror", mirror_port, base.port, slow_port))
                ports = {"baseline": base.port, "middleware-slow": mw.port, "nginx-mirror-slow": mirror_port}
                for _ in range(plan.reps):
                    for name, port in ports.items():
                        lat[name].append(hey(port, body, plan.fixed_seconds, rate))
                        time.sleep(0.5)
            res["latency"] = {
                name: {k: median([r[k] for r in rs]) for k in ("rps", "p50", "p99", "ok", "not_ok")}
                for name, rs in lat.items()
            }

        # Arm 4: a stalled shadow, at a fixed rate, RSS over time.
        with shadow_server("stall", 0.0) as stall_port:
            span_file = work / f"{framework}-stall-spans.jsonl"
            span_file.unlink(missing_ok=True)
            env = {
                **otel,
                "CANDIDATE_URL": f"http://127.0.0.1:{stall_port}/predict_shadow",
                "EXAMPLE_SPAN_FILE": str(span_file),
            }
            samples: list[tuple[float, float]] = []
            with app(framework, env, logs) as proc:
                wrk(proc.port, body, 1)
                stop = threading.Event()

                def sample() -> None:
                    t0 = time.monotonic()
                    while not stop.is_set():
                        samples.append((round(time.monotonic() - t0, 1), round(rss_mib(proc), 1)))
                        stop.wait(max(plan.stall_seconds / 30, 0.5))

                sampler = threading.Thread(target=sample, daemon=True)
                sampler.start()
                load = hey(proc.port, body, plan.stall_seconds, min(rate, 500))
                stop.set()
                sampler.join()
            outcomes = Counter(s.outcome for s in read_shadow_spans([span_file]))
            reasons = Counter(str(s.attributes.get("shadow.reason")) for s in read_shadow_spans([span_file]))
            res["stall"] = {
                "rate": min(rate, 500),
                "seconds": plan.stall_seconds,
                "rss_mib": samples,
                "outcomes": dict(outcomes),
                "drop_reasons": {k: v for k, v in reasons.items() if k != "None"},
                "primary": load,
            }
        res["otlp_requests"] = sink.requests
    return res


# ---- report ------------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def report(results: list[dict[str, Any]], body_bytes: int, max_queue: int) -> str:
    lines = []
    for res in results:
        t = res["throughput"]
        base = t["baseline"]
        lines.append(f"## {res['framework']}")
        lines.append("")
        lines.append("| arm | measure | baseline | variant | ratio / delta | goal | |")
        lines.append("|---|---|---|---|---|---|---|")
        u = t["unrouted"]
        r1 = u["rps"] / base["rps"]
        p1 = u["p99"] / base["p99"]
        lines.append(
            f"| 1 unrouted | throughput (rps) | {base['rps']:.0f} | {u['rps']:.0f} | {r1:.3f}x | >= 0.98x | {verdict(r1 >= 0.98)} |"
        )
        lines.append(
            f"| 1 unrouted | p99 (ms) | {base['p99']:.2f} | {u['p99']:.2f} | {p1:.3f}x | <= 1.05x | {verdict(p1 <= 1.05)} |"
        )
        for name in (k for k in t if k.startswith("shadowed-")):
            s = t[name]
            client = name.split("-", 1)[1]
            added = s["cpu_us_per_request"] - base["cpu_us_per_request"]
            lines.append(
                f"| 2 shadowed ({client}) | throughput (rps) | {base['rps']:.0f} | {s['rps']:.0f} | {s['rps'] / base['rps']:.3f}x | (reported) | |"
            )
            lines.append(
                f"| 2 shadowed ({client}) | app CPU per request (us) | {base['cpu_us_per_request']:.0f} | "
                f"{s['cpu_us_per_request']:.0f} | +{added:.0f} us | <= +150 us | {verdict(added <= 150)} |"
            )
        lat = res["latency"]
        b = lat["baseline"]
        for name, label in (
            ("middleware-slow", "3 slow shadow, middleware"),
            ("nginx-mirror-slow", "5 slow shadow, nginx mirror"),
        ):
            v = lat[name]
            for q in ("p50", "p99"):
                ratio = v[q] / b[q] if b[q] else float("nan")
                goal = "<= 1.05x" if name == "middleware-slow" else "(anchor)"
                ok = verdict(ratio <= 1.05) if name == "middleware-slow" else ""
                lines.append(
                    f"| {label} @ {res['fixed_rate']} rps | {q} (ms) | {b[q]:.2f} | {v[q]:.2f} | {ratio:.2f}x | {goal} | {ok} |"
                )
            if v["not_ok"]:
                lines.append(f"| {label} | non-200 responses | 0 | {v['not_ok']:.0f} | | | |")
        st = res["stall"]
        rss = [m for _, m in st["rss_mib"]]
        growth = rss[-1] - rss[0]
        half = rss[len(rss) // 2]
        limit = max_queue * body_bytes / 2**20 + 30
        lines.append(
            f"| 4 stalled shadow, {st['seconds']:.0f} s @ {st['rate']} rps | RSS (MiB) | {rss[0]:.1f} | {rss[-1]:.1f} | "
            f"+{growth:.1f} MiB (last half +{rss[-1] - half:.1f}) | <= +{limit:.1f} MiB, flat | "
            f"{verdict(growth <= limit and rss[-1] - half <= 5)} |"
        )
        primary = st["primary"]
        lines.append(
            f"| 4 stalled shadow | primary responses | | {primary['ok']:.0f} ok, {primary['not_ok']:.0f} not ok | | no error | "
            f"{verdict(primary['not_ok'] == 0)} |"
        )
        lines.append(
            f"| 4 stalled shadow | outcomes | | {st['outcomes']} | drops: {st['drop_reasons']} | counted | |"
        )
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="seconds, not minutes: checks the harness works")
    parser.add_argument("--framework", choices=sorted(FRAMEWORKS), action="append")
    parser.add_argument(
        "--clients", default="mini,aiohttp,httpx", help="shadow HTTP clients to compare in arm 2"
    )
    args = parser.parse_args(argv)
    for tool in ("wrk", "hey", "nginx", "taskset"):
        if shutil.which(tool) is None:
            print(f"bench: {tool} is missing; run bench/setup.sh (make bench does)", file=sys.stderr)
            return 2
    if args.quick:
        plan = Plan(reps=1, seconds=1, fixed_seconds=1, stall_seconds=3, clients=("mini",))
        frameworks = args.framework or ["fastapi"]
    else:
        plan = Plan(
            reps=3, seconds=4, fixed_seconds=6, stall_seconds=60, clients=tuple(args.clients.split(","))
        )
        frameworks = args.framework or list(FRAMEWORKS)
    OUT.mkdir(parents=True, exist_ok=True)
    payload = json.dumps(data.features_only(data.load()[2000])).encode()
    with tempfile.TemporaryDirectory(prefix="shadow-bench-") as tmp:
        work = Path(tmp)
        body = work / "body.json"
        body.write_bytes(payload)
        body.with_suffix(".lua").write_text(
            'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
            f"wrk.body = [[{payload.decode()}]]\n"
        )
        started = time.monotonic()
        results = [run_framework(f, plan, body, work) for f in frameworks]
        took = time.monotonic() - started
    header = (
        f"# shadow_middleware benchmark — {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n\n"
        f"machine: {platform.node()}, {os.cpu_count()} cores, {platform.processor() or platform.machine()}, "
        f"Python {platform.python_version()}; app on core {APP_CORE}, load on core {LOAD_CORE}; "
        f"{'quick' if args.quick else 'full'} run, {took:.0f} s; medians of {plan.reps} interleaved runs\n"
    )
    text = header + "\n" + report(results, len(payload), 1000)
    print(text)
    name = "quick" if args.quick else "full"
    (OUT / f"results-{name}.json").write_text(json.dumps(results, indent=2) + "\n")
    (OUT / f"results-{name}.md").write_text(text + "\n")
    # The harness must have produced every number: a NaN or a missing arm is a broken harness.
    for res in results:
        for name_, arm in res["throughput"].items():
            if not arm["rps"] > 0 or arm["errors"]:
                print(f"bench: arm {name_} produced no valid measurement", file=sys.stderr)
                return 1
        if not res["stall"]["outcomes"]:
            print("bench: the stalled-shadow arm recorded no outcome", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
