"""CPU per shadowed request of the engine alone (no web app): ``python -m bench.micro``.

Drives the same adapter API the middlewares use (begin, feed, body_complete,
response_start/body/complete, finish) at a fixed rate from one thread, against nginx
returning fixed JSON, and reports process CPU microseconds per shadowed exchange.
Variants isolate where the time goes: the HTTP client, the OpenTelemetry SDK.
``process:none`` / ``process:sdk`` run the engine with ``isolation="process"``: this process's
CPU is then the app's share alone, and the helper's is reported beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.clients import use_client
from bench.run import Sink, fixed_json_nginx
from examples.launch import free_port
from shadow_middleware import Compare, Shadow, ShadowConfig, ShadowTarget

BODY = json.dumps({"customer_id": "C02000", "tenure_months": 15, "monthly_charges": 53.19}).encode()
ANSWER = b'{"customer_id": "C02000", "churn_probability": 0.31, "make_offer": false, "model_version": "v1"}'


def cpu_split() -> tuple[float, float]:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime, r.ru_stime


def sdk(endpoint: str | None) -> tuple[Any, Any]:
    if endpoint is None:
        return None, None
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    tp = TracerProvider()
    tp.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint + "/v1/traces")))
    mp = MeterProvider(
        metric_readers=[PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=endpoint + "/v1/metrics"))]
    )
    return tp, mp


class NullClient:
    """Answers at once without I/O: what the pipeline costs without the HTTP exchange."""

    async def send(self, *args: Any) -> Any:
        from shadow_middleware._http import CandidateResponse

        return CandidateResponse(200, "", ANSWER, False)

    async def close(self) -> None:
        pass


def helper_cpu(shadow: Shadow) -> float:
    """CPU seconds of the engine's helper process (isolation="process"), 0 without one."""
    pid = getattr(shadow._pipeline, "helper_pid", lambda: None)()
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def refusal_cost(url: str, n: int, isolation: str = "thread") -> float:
    """App CPU (µs, this thread's clock) of one refused shadow: match, sampling, the budget
    check and the count (``cpu_budget``), in a tight loop: nothing else runs on the thread."""
    cfg = ShadowConfig(targets=[ShadowTarget("v2", url=url)], cpu_budget=1e-9, isolation=isolation)
    shadow = Shadow(cfg)
    headers = [("content-type", "application/json"), ("content-length", str(len(BODY))), ("user-agent", "x")]
    # Until the meter has a window of samples over the budget, a few shadows go through.
    deadline = time.monotonic() + 0.3
    while time.monotonic() < deadline:
        route = shadow.match("POST", "/predict")
        assert route is not None
        ex = shadow.begin(route, "POST", "/predict", "", headers, len(BODY))
        if ex is not None:
            ex.feed(BODY)
            ex.body_complete()
            ex.response_start(200, "")
            ex.response_body(ANSWER)
            ex.response_complete()
            ex.finish()
        time.sleep(0.001)
    shadow.flush(10)
    before = shadow.stats()["dropped"]
    admitted = 0
    t0 = time.thread_time()
    for _ in range(n):
        route = shadow.match("POST", "/predict")
        assert route is not None
        ex = shadow.begin(route, "POST", "/predict", "", headers, len(BODY))
        if ex is not None:  # the budget's smallest share (1 in 1,000) still goes through
            admitted += 1
            ex.finish()
    used = time.thread_time() - t0
    refused = shadow.stats()["dropped"] - before
    assert refused + admitted == n  # every one refused and counted, or admitted
    shadow.close()
    return used / n * 1e6


def measure(
    url: str, n: int, rate: float, endpoint: str | None, isolation: str = "thread"
) -> dict[str, float]:
    if isolation == "process":
        # The helper sets its SDK up from the environment it inherits (the same exporters).
        os.environ.pop("OTEL_SDK_DISABLED", None)
        if endpoint is None:
            os.environ["OTEL_SDK_DISABLED"] = "true"
        else:
            os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = endpoint
        tp = mp = None
    else:
        tp, mp = sdk(endpoint)
    cfg = ShadowConfig(
        targets=[ShadowTarget("v2", url=url, max_concurrency=64)],
        compare=Compare(fields=["/churn_probability", "/make_offer"], threshold=0.5),
        correlation_id="json:/customer_id",
        isolation=isolation,
        cpu_budget=0.0,  # the accepted path's cost: nothing refused
    )
    shadow = Shadow(cfg, tracer_provider=tp, meter_provider=mp)
    headers = [("content-type", "application/json"), ("content-length", str(len(BODY))), ("user-agent", "x")]

    def one() -> None:
        route = shadow.match("POST", "/predict")
        assert route is not None
        ex = shadow.begin(route, "POST", "/predict", "", headers, len(BODY))
        assert ex is not None
        ex.feed(BODY)
        ex.body_complete()
        ex.response_start(200, "")
        ex.response_body(ANSWER)
        ex.response_complete()
        ex.finish()

    for _ in range(200):  # warm up: connections, caches
        one()
    shadow.flush(10)
    h0 = helper_cpu(shadow)
    u0, s0 = cpu_split()
    start = time.perf_counter()
    for i in range(n):
        one()
        delay = start + (i + 1) / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
    u1, s1 = cpu_split()  # the app's share ends with the last request (the helper works on)
    assert shadow.flush(30)
    helper = helper_cpu(shadow) - h0
    used = (u1 - u0) + (s1 - s0)
    print(f"  user {(u1 - u0) / n * 1e6:.0f} us, system {(s1 - s0) / n * 1e6:.0f} us per request")
    if isolation == "process":
        print(f"  helper process {helper / n * 1e6:.0f} us per request")
    stats = shadow.stats()
    shadow.close()
    if tp is not None:
        tp.force_flush()
        tp.shutdown()
        mp.shutdown()
    if stats["match"] + stats["mismatch"] < n:
        print("  (not all compared:", stats, ")")
    return {"cpu_us": used / n * 1e6, "helper_us": helper / n * 1e6, "stats": stats}  # type: ignore[dict-item]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=3000)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--variants", default="aiohttp:none,aiohttp:sdk,httpx:none,httpx:sdk")
    args = parser.parse_args(argv)
    os.sched_setaffinity(0, {0})  # this process is "the app" here
    with tempfile.TemporaryDirectory() as tmp, Sink() as sink:
        os.sched_setaffinity(0, {0})
        port = free_port()
        with fixed_json_nginx(Path(tmp) / "ng", port):
            url = f"http://127.0.0.1:{port}/predict_shadow"
            for variant in args.variants.split(","):
                client, _, tel = variant.partition(":")
                if client == "refused":  # refused:thread / refused:process
                    us = refusal_cost(url, args.n * 30, tel or "thread")
                    print(f"{variant:<14} {us:7.1f} us CPU per refused shadow (cpu_budget)", flush=True)
                    continue
                isolation = "process" if client == "process" else "thread"
                if isolation == "thread":
                    use_client(client, (lambda _cap: NullClient()) if client == "null" else None)
                endpoint = f"http://127.0.0.1:{sink.port}" if tel == "sdk" else None
                r = measure(url, args.n, args.rate, endpoint, isolation)
                helper = f" (+ helper process {r['helper_us']:.1f} us)" if isolation == "process" else ""
                print(f"{variant:<14} {r['cpu_us']:7.1f} us CPU per shadowed request{helper}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
