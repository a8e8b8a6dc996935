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
   CPU microseconds per request (process CPU time / requests), with ``isolation="thread"``
   and ``isolation="process"`` side by side; for the latter also the whole process tree's
   (app + helper processes). ``--clients mini,aiohttp,httpx`` adds the client comparison;
2b. the same at a fixed rate (a quarter of the baseline's capacity), where the helper keeps up
   even on the app's core, so that both modes do the same shadow work: the CPU comparison;
3. every request shadowed to a slow shadow (2 s per answer) at half the baseline's capacity:
   p50 and p99 latency, both isolations; 3s. the same with a stalled shadow (never answers);
   arm 2 runs thread mode with the default ``cpu_budget`` (0.10) and without it (``unbudgeted``),
   arm 2b without it (the cost of a shadowed request, every request shadowed);
4. a stalled shadow (accepts, never answers) at a fixed rate for 60 s: RSS over time (app and
   helper apart) and the outcome counts, both isolations;
5. the anchor: nginx's ``mirror`` in front of the no-middleware app, same slow shadow, same
   rate: p50 and p99.
Then arms 2b (CPU at a fixed rate) and 3 again with the app unpinned (``--no-unpinned`` skips
them): pinning the app to a core pins the helper it starts too, and a user's app is usually not
pinned.
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
#: The environment that runs an example with isolation="process" (its helper sets up the same
#: OpenTelemetry SDK as the app: BatchSpanProcessor + OTLP/HTTP to the local receiver).
PROCESS = {
    "SHADOW_ISOLATION": "process",
    "SHADOW_TELEMETRY_SETUP": "examples.churn.telemetry:helper_telemetry",
}
HELPER = "shadow_middleware._helper"


# ---- helpers ---------------------------------------------------------------------------------


def children(pid: int) -> list[int]:
    """The children of every thread of ``pid`` (a helper process is the child of the thread
    that spawned it, not of the main thread)."""
    out: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tasks:
        with contextlib.suppress(OSError):
            out += [int(p) for p in Path(f"/proc/{pid}/task/{tid}/children").read_text().split()]
    return out


def tree(pid: int) -> list[int]:
    out = [pid]
    for child in children(pid):
        out.extend(tree(child))
    return out


def is_helper(pid: int) -> bool:
    try:
        return HELPER in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False


def _cpu(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CPU:
    """Process CPU seconds of an app's process tree, the helper processes apart. A helper that
    exited (a recycled worker's) is remembered with its last reading."""

    def __init__(self, proc: Process) -> None:
        self.proc = proc
        self.helpers: dict[int, float] = {}

    def read(self) -> tuple[float, float]:
        """(app processes, helper processes)."""
        app = 0.0
        for pid in tree(self.proc.proc.pid):
            if is_helper(pid):
                self.helpers[pid] = _cpu(pid) or self.helpers.get(pid, 0.0)
            else:
                app += _cpu(pid)
        return app, sum(self.helpers.values())


_cpus: dict[int, CPU] = {}


def cpu_split(proc: Process) -> tuple[float, float]:
    return _cpus.setdefault(proc.proc.pid, CPU(proc)).read()


def cpu_seconds(proc: Process) -> float:
    return sum(cpu_split(proc))


def rss_split(proc: Process) -> tuple[float, float]:
    """RSS in MiB: (app processes, helper processes)."""
    app = helper = 0
    for pid in tree(proc.proc.pid):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    if is_helper(pid):
                        helper += int(line.split()[1])
                    else:
                        app += int(line.split()[1])
    return app / 1024, helper / 1024


def rss_mib(proc: Process) -> float:
    return sum(rss_split(proc))


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
    """The candidate of arm 2; ``access.log`` in ``workdir`` counts the shadow calls received."""
    answer = '{"customer_id": "C00000", "churn_probability": 0.3, "make_offer": false, "model_version": "v2"}'
    server = f"""
    server {{
        listen 127.0.0.1:{port};
        access_log {workdir}/access.log;
        location / {{ default_type application/json; return 200 '{answer}'; }}
    }}"""
    return Nginx(_nginx_conf(workdir, server), workdir)


def lines(path: Path) -> int:
    try:
        with path.open("rb") as f:
            return sum(1 for _ in f)
    except OSError:
        return 0


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
def app(framework: str, env: dict[str, str], logs: Path, pinned: bool = True) -> Iterator[Process]:
    # A client-comparison arm runs the same example through bench.app, which swaps the client.
    module = "bench.app:app" if "BENCH_HTTP_CLIENT" in env else None
    env = {**env, "BENCH_EXAMPLE": framework} if module else env
    proc = start(framework, "production", env, logs, wrap=PIN_APP if pinned else None, module=module)
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
    unpinned: bool = True


THROUGHPUT_KEYS = ("rps", "p50", "p99", "cpu_us_per_request", "app_cpu_us_per_request", "errors", "shadowed")


def throughput(
    framework: str,
    arms: dict[str, dict[str, str]],
    plan: Plan,
    body: Path,
    logs: Path,
    pinned: bool,
    candidate_log: Path,
    rate: float | None = None,
) -> dict[str, dict[str, float]]:
    """wrk at full load (or hey at ``rate``) on every arm, interleaved; CPU per request of the
    app processes and of the whole tree (app + helpers), the shadow work a run queued included;
    ``shadowed``: the share of requests whose copy reached the candidate (``candidate_log``)."""
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in arms}

    def load(proc: Process, seconds: float) -> dict[str, float]:
        if rate is None:
            return wrk(proc.port, body, seconds)
        r = hey(proc.port, body, seconds, rate)
        r["requests"] = r["ok"] + r["not_ok"]
        r["errors"] = r["not_ok"]
        return r

    with contextlib.ExitStack() as stack:
        procs = {name: stack.enter_context(app(framework, env, logs, pinned)) for name, env in arms.items()}
        for proc in procs.values():  # warm up every arm (and start its helper)
            load(proc, 1)
            settle(proc)
        for _ in range(plan.reps):
            for name, proc in procs.items():  # interleaved
                app0, helper0 = cpu_split(proc)
                seen = lines(candidate_log)
                r = load(proc, plan.seconds if rate is None else plan.fixed_seconds)
                settle(proc)  # the shadow work a run queued is part of its cost
                app1, helper1 = cpu_split(proc)
                r["app_cpu_us_per_request"] = (app1 - app0) / r["requests"] * 1e6
                r["cpu_us_per_request"] = (app1 - app0 + helper1 - helper0) / r["requests"] * 1e6
                r["shadowed"] = (lines(candidate_log) - seen) / r["requests"]
                runs[name].append(r)
    return {name: {k: median([r[k] for r in rs]) for k in THROUGHPUT_KEYS} for name, rs in runs.items()}


def latency(
    framework: str,
    arms: dict[str, dict[str, str]],
    plan: Plan,
    body: Path,
    logs: Path,
    rate: float,
    pinned: bool,
    extra: dict[str, int] | None = None,
) -> dict[str, dict[str, float]]:
    """hey at a fixed offered rate on every arm (and the ports of ``extra``), interleaved."""
    lat: dict[str, list[dict[str, float]]] = {name: [] for name in [*arms, *(extra or {})]}
    with contextlib.ExitStack() as stack:
        ports = {
            name: stack.enter_context(app(framework, env, logs, pinned)).port for name, env in arms.items()
        }
        ports.update(extra or {})
        for port in ports.values():  # warm up every arm (and start its helper)
            hey(port, body, 1, rate)
        time.sleep(1.0)
        for _ in range(plan.reps):
            for name, port in ports.items():
                lat[name].append(hey(port, body, plan.fixed_seconds, rate))
                time.sleep(0.5)
    return {
        name: {k: median([r[k] for r in rs]) for k in ("rps", "p50", "p99", "ok", "not_ok")}
        for name, rs in lat.items()
    }


def stall(
    framework: str, env: dict[str, str], plan: Plan, body: Path, work: Path, rate: int, tag: str
) -> dict[str, Any]:
    """A stalled shadow at a fixed rate for ``plan.stall_seconds``: RSS (app, helper) over time."""
    span_file = work / f"{framework}-stall-{tag}-spans.jsonl"
    span_file.unlink(missing_ok=True)
    env = {**env, "EXAMPLE_SPAN_FILE": str(span_file)}
    samples: list[tuple[float, float, float]] = []
    with app(framework, env, work / "logs") as proc:
        wrk(proc.port, body, 1)
        settle(proc)  # the helper is up and warm: growth from here on is what the stall costs
        stop = threading.Event()

        def sample() -> None:
            t0 = time.monotonic()
            while not stop.is_set():
                app_rss, helper_rss = rss_split(proc)
                samples.append((round(time.monotonic() - t0, 1), round(app_rss, 1), round(helper_rss, 1)))
                stop.wait(max(plan.stall_seconds / 30, 0.5))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        load = hey(proc.port, body, plan.stall_seconds, rate)
        stop.set()
        sampler.join()
    spans = list(read_shadow_spans([span_file]))
    outcomes: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    for s in spans:  # a coalesced span (refusals) stands for shadow.coalesced_count exchanges
        weight = s.attributes.get("shadow.coalesced_count", 1)
        weight = weight if type(weight) is int and weight > 0 else 1
        outcomes[s.outcome] += weight
        reasons[str(s.attributes.get("shadow.reason"))] += weight
    return {
        "rate": rate,
        "seconds": plan.stall_seconds,
        "rss_mib": [(t, a + h) for t, a, h in samples],
        "rss_app_helper_mib": samples,
        "outcomes": dict(outcomes),
        "spans": len(spans),
        "drop_reasons": {k: v for k, v in reasons.items() if k != "None"},
        "primary": load,
    }


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
            # Issue 19: the default cpu_budget (0.10 of a core) is in force in the arms above;
            # this one shows what thread mode takes without it.
            arms["shadowed-unbudgeted"] = {**otel, "CANDIDATE_URL": fixed, "SHADOW_CPU_BUDGET": "0"}
            arms["shadowed-process"] = {**otel, **PROCESS, "CANDIDATE_URL": fixed}
            access = work / "nginx-fixed" / "access.log"
            res["throughput"] = throughput(framework, arms, plan, body, logs, True, access)
            # 2b: CPU at a rate the helper keeps up with on the app's core: same shadow work in both.
            res["cpu_rate"] = round(res["throughput"]["baseline"]["rps"] / 4)
            # No budget here: the cost of a shadowed request, every request shadowed in both modes.
            cpu_arms = {k: arms[k] for k in ("baseline", "shadowed-mini", "shadowed-process")}
            cpu_arms = {k: {**v, "SHADOW_CPU_BUDGET": "0"} for k, v in cpu_arms.items()}
            res["cpu_fixed"] = throughput(
                framework, cpu_arms, plan, body, logs, True, access, res["cpu_rate"]
            )
            if plan.unpinned:
                res["cpu_fixed_unpinned"] = throughput(
                    framework, cpu_arms, plan, body, logs, False, access, res["cpu_rate"]
                )
        base_rps = res["throughput"]["baseline"]["rps"]
        rate = round(base_rps / 2)
        res["fixed_rate"] = rate

        # Arms 3 and 5: a slow shadow (2 s), and a stalled one (arm 3s: accepts, never answers), at
        # half the baseline's capacity.
        with shadow_server("slow", 2.0) as slow_port, shadow_server("stall", 0.0) as stalled_port:
            slow = f"http://127.0.0.1:{slow_port}/predict_shadow"
            stalled = f"http://127.0.0.1:{stalled_port}/predict_shadow"
            slow_arms = {
                "baseline": {**otel, "NO_SHADOW": "1"},
                "middleware-slow": {**otel, "CANDIDATE_URL": slow},
                "middleware-slow-process": {**otel, **PROCESS, "CANDIDATE_URL": slow},
                "middleware-stall": {**otel, "CANDIDATE_URL": stalled},
                "middleware-stall-process": {**otel, **PROCESS, "CANDIDATE_URL": stalled},
            }
            with contextlib.ExitStack() as stack:
                base = stack.enter_context(app(framework, slow_arms["baseline"], logs))
                mirror_port = free_port()
                stack.enter_context(mirror_nginx(work / "nginx-mirror", mirror_port, base.port, slow_port))
                res["latency"] = latency(
                    framework,
                    {k: v for k, v in slow_arms.items() if k != "baseline"},
                    plan,
                    body,
                    logs,
                    rate,
                    pinned=True,
                    extra={"baseline": base.port, "nginx-mirror-slow": mirror_port},
                )
            if plan.unpinned:
                unpinned_rate = rate  # the pinned baseline's half capacity: the same offered load
                res["fixed_rate_unpinned"] = unpinned_rate
                res["latency_unpinned"] = latency(
                    framework, slow_arms, plan, body, logs, unpinned_rate, pinned=False
                )

        # Arm 4: a stalled shadow, at a fixed rate, RSS over time.
        with shadow_server("stall", 0.0) as stall_port:
            env = {**otel, "CANDIDATE_URL": f"http://127.0.0.1:{stall_port}/predict_shadow"}
            res["stall"] = stall(framework, env, plan, body, work, min(rate, 500), "thread")
            res["stall_process"] = stall(
                framework, {**env, **PROCESS}, plan, body, work, min(rate, 500), "process"
            )
        res["otlp_requests"] = sink.requests
    return res


# ---- report ------------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def _stall_rows(st: dict[str, Any], label: str, limit: float) -> list[str]:
    rss = [m for _, m in st["rss_mib"]]
    growth = rss[-1] - rss[0]
    half = rss[len(rss) // 2]
    lines = [
        f"| 4 stalled shadow, {label}, {st['seconds']:.0f} s @ {st['rate']} rps | RSS (MiB) | {rss[0]:.1f} | {rss[-1]:.1f} | "
        f"+{growth:.1f} MiB (last half +{rss[-1] - half:.1f}) | <= +{limit:.1f} MiB, flat | "
        f"{verdict(growth <= limit and rss[-1] - half <= 5)} |"
    ]
    split = st.get("rss_app_helper_mib")
    if split and any(h for _, _, h in split):
        first, last = split[0], split[-1]
        lines.append(
            f"| 4 stalled shadow, {label} | RSS app / helper (MiB) | {first[1]:.1f} / {first[2]:.1f} | "
            f"{last[1]:.1f} / {last[2]:.1f} | app +{last[1] - first[1]:.1f}, helper +{last[2] - first[2]:.1f} | (split) | |"
        )
    primary = st["primary"]
    lines.append(
        f"| 4 stalled shadow, {label} | primary responses | | {primary['ok']:.0f} ok, {primary['not_ok']:.0f} not ok | | no error | "
        f"{verdict(primary['not_ok'] == 0)} |"
    )
    lines.append(
        f"| 4 stalled shadow, {label} | outcomes | | {st['outcomes']} | drops: {st['drop_reasons']} | counted | |"
    )
    return lines


def _cpu_rows(t: dict[str, dict[str, float]], suffix: str, arm: str = "2") -> list[str]:
    """Arm 2: CPU per shadowed request, thread and process isolation side by side."""
    lines = []
    base = t["baseline"]
    for name in (k for k in t if k.startswith("shadowed-")):
        s = t[name]
        client = name.split("-", 1)[1]
        label = (
            f"{arm} shadowed ({client}){suffix}"
            if client != "process"
            else f"{arm} shadowed, isolation=process{suffix}"
        )
        lines.append(
            f"| {label} | throughput (rps) | {base['rps']:.0f} | {s['rps']:.0f} | {s['rps'] / base['rps']:.3f}x | (reported) | |"
        )
        lines.append(
            f"| {label} | requests whose copy reached the candidate | | {s['shadowed']:.1%} | | (reported) | |"
        )
        app_added = s["app_cpu_us_per_request"] - base["app_cpu_us_per_request"]
        share = app_added / base["app_cpu_us_per_request"] if base["app_cpu_us_per_request"] else float("nan")
        if arm == "2b":  # issue 19: added app CPU as a share of the baseline request's own
            limit = 0.10 if client == "process" else 0.30
            goal, ok = f"<= +{limit:.0%}", verdict(share <= limit)
        else:
            goal, ok = "(2b judges)", ""
        lines.append(
            f"| {label} | app process CPU per request (us) | {base['app_cpu_us_per_request']:.0f} | "
            f"{s['app_cpu_us_per_request']:.0f} | +{app_added:.0f} us (+{share:.0%}) | {goal} | {ok} |"
        )
        if arm == "2" and client == "mini":
            # Issue 19: shadowing takes no more than its budget (the default 0.10 of a core).
            ratio = s["rps"] / base["rps"]
            lines.append(
                f"| {label} | throughput with cpu_budget 0.10 | {base['rps']:.0f} | {s['rps']:.0f} | "
                f"{ratio:.3f}x | >= 0.85x | {verdict(ratio >= 0.85)} |"
            )
        if client == "process" and "shadowed-mini" in t:
            thread = t["shadowed-mini"]["cpu_us_per_request"] - base["cpu_us_per_request"]
            tree = s["cpu_us_per_request"] - base["cpu_us_per_request"]
            ratio = tree / thread if thread > 0 else float("nan")
            # Judged at a fixed rate (2b), where both modes shadow every request; at full load a
            # starved helper sheds work the thread mode does, and the ratio flatters it.
            goal, ok = ("<= 1.30x", verdict(ratio <= 1.30)) if arm == "2b" else ("(2b judges)", "")
            lines.append(
                f"| {label} | process tree CPU added (app + helper, us) | thread mode +{thread:.0f} | +{tree:.0f} | "
                f"{ratio:.2f}x | {goal} | {ok} |"
            )
    return lines


def _latency_rows(lat: dict[str, dict[str, float]], rate: int, suffix: str) -> list[str]:
    lines = []
    b = lat["baseline"]
    for name, label in (
        ("middleware-slow", "3 slow shadow, middleware (thread)"),
        ("middleware-slow-process", "3 slow shadow, middleware (process)"),
        ("middleware-stall", "3s stalled shadow, middleware (thread)"),
        ("middleware-stall-process", "3s stalled shadow, middleware (process)"),
        ("nginx-mirror-slow", "5 slow shadow, nginx mirror"),
    ):
        if name not in lat:
            continue
        v = lat[name]
        for q in ("p50", "p99"):
            ratio = v[q] / b[q] if b[q] else float("nan")
            anchor = name.startswith("nginx")
            goal = "(anchor)" if anchor else "<= 1.10x"
            ok = "" if anchor else verdict(ratio <= 1.10)
            lines.append(
                f"| {label}{suffix} @ {rate} rps | {q} (ms) | {b[q]:.2f} | {v[q]:.2f} | {ratio:.2f}x | {goal} | {ok} |"
            )
        if v["not_ok"]:
            lines.append(f"| {label}{suffix} | non-200 responses | 0 | {v['not_ok']:.0f} | | | |")
    return lines


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
        lines += _cpu_rows(t, "")
        if "cpu_fixed" in res:
            lines += _cpu_rows(res["cpu_fixed"], f" @ {res['cpu_rate']} rps", "2b")
        lines += _latency_rows(res["latency"], res["fixed_rate"], "")
        limit = max_queue * body_bytes / 2**20 + 30
        lines += _stall_rows(res["stall"], "thread", limit)
        if "stall_process" in res:
            lines += _stall_rows(res["stall_process"], "process", limit)
        if "cpu_fixed_unpinned" in res:
            lines += _cpu_rows(res["cpu_fixed_unpinned"], f", unpinned @ {res['cpu_rate']} rps", "2b")
            lines += _latency_rows(res["latency_unpinned"], res["fixed_rate_unpinned"], ", unpinned")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="seconds, not minutes: checks the harness works")
    parser.add_argument("--framework", choices=sorted(FRAMEWORKS), action="append")
    parser.add_argument(
        "--clients",
        default="mini",
        help="shadow HTTP clients to compare in arm 2 (mini,aiohttp,httpx: the comparison in RESULTS.md)",
    )
    parser.add_argument("--no-unpinned", action="store_true", help="skip arms 2 and 3 with the app unpinned")
    parser.add_argument("--unpinned", action="store_true", help="with --quick: run them too")
    args = parser.parse_args(argv)
    for tool in ("wrk", "hey", "nginx", "taskset"):
        if shutil.which(tool) is None:
            print(f"bench: {tool} is missing; run bench/setup.sh (make bench does)", file=sys.stderr)
            return 2
    if args.quick:
        plan = Plan(
            reps=1, seconds=1, fixed_seconds=1, stall_seconds=3, clients=("mini",), unpinned=args.unpinned
        )
        frameworks = args.framework or ["fastapi"]
    else:
        plan = Plan(
            reps=3,
            seconds=4,
            fixed_seconds=6,
            stall_seconds=60,
            clients=tuple(args.clients.split(",")),
            unpinned=not args.no_unpinned,
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
        f"Python {platform.python_version()}; app (and, pinned, its helper processes) on core {APP_CORE}, "
        f"load on core {LOAD_CORE}; unpinned arms: app and helpers on any core; "
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
        for key in ("stall", "stall_process"):
            if key in res and not res[key]["outcomes"]:
                print(f"bench: the stalled-shadow arm ({key}) recorded no outcome", file=sys.stderr)
                return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
