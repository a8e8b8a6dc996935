"""The fault matrix: the FastAPI example under uvicorn and the Flask example under gunicorn, real
processes, against candidates that misbehave on purpose. Every case asserts both properties:

* no impact: every production response is identical (status, content type, body) to what the same
  app returns without the middleware, and its latency stays in the baseline's range;
* nothing lost: every eligible request ends in exactly one counted outcome (one span each).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from examples.churn import data
from examples.launch import Process, free_port, start
from shadow_middleware.report.spans import read_shadow_spans

from .faulty import FaultyCandidate
from .servers import request
from .servers import server as app_server

EXAMPLES = ["fastapi", "flask"]
ROWS = [data.features_only(r) for r in data.load()[2000:2100]]
PAYLOADS = [json.dumps(r).encode() for r in ROWS]
JSON = {"content-type": "application/json"}
# isolation="process" (issue 13) runs the cases that matter most a second time: slow shadow,
# dead candidate, SIGTERM, burst, credentials (and test_isolation.py has --preload recycling).
ISOLATIONS = pytest.mark.parametrize("isolation", ["thread", "process"])
PROCESS_ENV = {
    "SHADOW_ISOLATION": "process",
    "SHADOW_TELEMETRY_SETUP": "examples.churn.telemetry:helper_telemetry",
}
# Production must never wait for a shadow: the candidates below take seconds, production
# answers in milliseconds. This bound is far from both.
MAX_PRIMARY_SECONDS = 0.75


@dataclass
class Answer:
    status: int
    content_type: str
    body: bytes
    seconds: float


def post(port: int, body: bytes, headers: dict[str, str] | None = None) -> Answer:
    started = time.perf_counter()
    status, hdrs, data_ = request(port, "POST", "/predict", body, {**JSON, **(headers or {})})
    return Answer(status, hdrs.get("content-type", ""), data_, time.perf_counter() - started)


def post_all(port: int, payloads: list[bytes], concurrency: int = 8, **kw: Any) -> list[Answer]:
    with ThreadPoolExecutor(concurrency) as pool:
        return list(pool.map(lambda b: post(port, b, **kw), payloads))


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def descendants(pid: int) -> list[int]:
    """``pid`` and everything below it, children of every thread (a helper process is the
    child of the thread that spawned it)."""
    out = [pid]
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tasks:
        try:
            kids = Path(f"/proc/{pid}/task/{tid}/children").read_text().split()
        except OSError:
            continue
        for kid in kids:
            out += descendants(int(kid))
    return out


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def thread_names(pid: int) -> list[str]:
    names = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            names.append(Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip())
        except OSError:
            pass
    return names


@dataclass
class Deployment:
    example: str
    process: Process
    span_file: Path
    spans_cache: list[dict[str, Any]] | None = field(default=None)

    @property
    def port(self) -> int:
        return self.process.port

    @property
    def app_pids(self) -> list[int]:
        """The processes that run the app: uvicorn's one, or gunicorn's workers."""
        pid = self.process.proc.pid
        return children(pid) if self.example == "flask" else [pid]

    def rss(self) -> int:
        """The app processes' and their helpers' (isolation="process")."""
        return sum(rss_bytes(p) for a in self.app_pids for p in descendants(a))

    def cpu(self) -> float:
        return sum(cpu_seconds(p) for a in self.app_pids for p in descendants(a))

    def stop(self) -> int:
        return self.process.stop()

    def spans(self) -> list[dict[str, Any]]:
        """Shadow spans (attributes), read after the deployment stopped and flushed."""
        if self.spans_cache is None:
            found = read_shadow_spans([self.span_file]) if self.span_file.exists() else iter(())
            self.spans_cache = [s.attributes for s in found]
        return self.spans_cache

    def outcomes(self) -> Counter[str]:
        """Outcomes by exchange: a coalesced span (refusals, issue 19) counts as its count."""
        counts: Counter[str] = Counter()
        for s in self.spans():
            counts[str(s["shadow.outcome"])] += weight(s)
        return counts


def weight(span: dict[str, Any]) -> int:
    """How many exchanges a span stands for: ``shadow.coalesced_count``, else 1."""
    count = span.get("shadow.coalesced_count", 1)
    return count if type(count) is int and count > 0 else 1


@contextmanager
def deployment(example: str, tmp_path: Path, isolation: str = "thread", **env: str) -> Iterator[Deployment]:
    span_file = tmp_path / f"{example}-{time.monotonic_ns()}.jsonl"
    full = {"EXAMPLE_SPAN_FILE": str(span_file), "OTEL_BSP_SCHEDULE_DELAY": "200", **env}
    if isolation == "process":
        full.update(PROCESS_ENV)
    proc = start(example, "production", full, tmp_path / "logs")
    dep = Deployment(example, proc, span_file)
    try:
        proc.wait_healthy()
        yield dep
    finally:
        code = proc.stop()
        assert code in (0, -signal.SIGTERM), f"{example} exited with {code}; see {proc.log}"


@pytest.fixture(scope="module", params=EXAMPLES)
def baseline(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """What each example answers without the middleware, and how fast."""
    example = request.param
    tmp = tmp_path_factory.mktemp(f"baseline-{example}")
    with deployment(example, tmp, NO_SHADOW="1") as dep:
        post_all(dep.port, PAYLOADS[:20])  # warm up
        answers = post_all(dep.port, PAYLOADS)
        threads_master = threads(dep.process.proc.pid)
    latencies = sorted(a.seconds for a in answers)
    return {
        "example": example,
        "answers": {p: (a.status, a.content_type, a.body) for p, a in zip(PAYLOADS, answers, strict=True)},
        "p50": latencies[len(latencies) // 2],
        "threads_master": threads_master,
    }


def assert_no_impact(baseline: dict[str, Any], payloads: list[bytes], answers: list[Answer]) -> None:
    for payload, answer in zip(payloads, answers, strict=True):
        assert (answer.status, answer.content_type, answer.body) == baseline["answers"][payload]
    slowest = max(a.seconds for a in answers)
    assert slowest < MAX_PRIMARY_SECONDS, f"a production response took {slowest:.3f}s"
    median = sorted(a.seconds for a in answers)[len(answers) // 2]
    assert median < max(5 * baseline["p50"], baseline["p50"] + 0.05), (median, baseline["p50"])


def assert_nothing_lost(dep: Deployment, eligible: int) -> Counter[str]:
    outcomes = dep.outcomes()
    assert sum(outcomes.values()) == eligible, outcomes
    assert sum(weight(s) for s in dep.spans()) == eligible
    return outcomes


# ---- 1. slow shadow, then recovery ----------------------------------------------------------


@ISOLATIONS
def test_slow_shadow_times_out_and_recovers(baseline: dict[str, Any], tmp_path: Path, isolation: str) -> None:
    with FaultyCandidate("slow", delay=1.0) as cand:
        env = {"CANDIDATE_URL": cand.url, "CANDIDATE_TIMEOUT": "0.3", "CANDIDATE_MAX_CONCURRENCY": "8"}
        with deployment(baseline["example"], tmp_path, isolation, SHADOW_CIRCUIT_FAILURES="0", **env) as dep:
            slow = post_all(dep.port, PAYLOADS[:40])
            deadline = time.monotonic() + 10
            while cand.received < 40 and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.5)  # the last timeouts fire
            cand.mode = "ok"
            healthy = post_all(dep.port, PAYLOADS[40:80])
        assert_no_impact(baseline, PAYLOADS[:40], slow)
        assert_no_impact(baseline, PAYLOADS[40:80], healthy)
        outcomes = assert_nothing_lost(dep, 80)
        assert outcomes["timeout"] == 40, outcomes
        # After the timeouts the client still works: every later shadow got an answer.
        assert outcomes["match"] + outcomes["mismatch"] == 40, outcomes


# ---- 2. dead candidate, blackhole, circuit breaker ---------------------------------------------


@ISOLATIONS
def test_dead_candidate_is_paused_by_the_circuit_breaker(
    baseline: dict[str, Any], tmp_path: Path, isolation: str
) -> None:
    env = {"CANDIDATE_URL": f"http://127.0.0.1:{free_port()}/predict_shadow", "CANDIDATE_TIMEOUT": "0.5"}
    warmup = 8
    with deployment(
        baseline["example"],
        tmp_path,
        isolation,
        SHADOW_CIRCUIT_FAILURES="3",
        SHADOW_CIRCUIT_COOLDOWN="30",
        **env,
    ) as dep:
        answers = [post(dep.port, p) for p in PAYLOADS[:warmup]]
        if isolation == "process":
            # A helper takes ~0.2 s to start; what its worker sent meanwhile waits in the socket
            # and reaches the breaker at once, like a concurrent burst would in thread mode.
            time.sleep(1.5)
        answers += [post(dep.port, p) for p in PAYLOADS[warmup:30]]
    assert_no_impact(baseline, PAYLOADS[:30], answers)
    outcomes = assert_nothing_lost(dep, 30)
    # gunicorn: each worker has its own breaker, each trips after 3 failures.
    workers = 1 if baseline["example"] == "fastapi" else 2
    # Failures land a millisecond after the request; a request or two may slip in before. In
    # process mode each worker's helper sees what its worker sent while it started (~0.2 s) at
    # once, before any failure: a burst per worker, and a worker whose first request came after
    # the warm-up starts its helper then.
    burst = warmup * workers if isolation == "process" else 0
    assert 3 <= outcomes["error"] <= 5 * workers + burst, outcomes
    assert outcomes["dropped"] == 30 - outcomes["error"]
    reasons: Counter[str] = Counter()
    for s in dep.spans():
        if s["shadow.outcome"] == "dropped":
            reasons[str(s.get("shadow.reason"))] += weight(s)
    assert set(reasons) == {"circuit_open"}


def test_blackhole_times_out_then_is_paused_and_probed(baseline: dict[str, Any], tmp_path: Path) -> None:
    with FaultyCandidate("blackhole") as cand:
        env = {"CANDIDATE_URL": cand.url, "CANDIDATE_TIMEOUT": "0.3"}
        with deployment(
            baseline["example"], tmp_path, SHADOW_CIRCUIT_FAILURES="3", SHADOW_CIRCUIT_COOLDOWN="1", **env
        ) as dep:
            answers = [post(dep.port, p) for p in PAYLOADS[:5]]
            time.sleep(0.6)  # their timeouts fire: the breaker opens
            first = cand.received
            answers += [post(dep.port, p) for p in PAYLOADS[5:20]]
            time.sleep(0.6)
            paused = cand.received - first
            time.sleep(1.0)  # the cooldown is over: the next request probes
            answers += [post(dep.port, p) for p in PAYLOADS[20:30]]
            time.sleep(0.6)
            probes = cand.received - first - paused
    assert_no_impact(baseline, PAYLOADS[:30], answers)
    outcomes = assert_nothing_lost(dep, 30)
    attempted = first + paused + probes
    assert outcomes["timeout"] == attempted, (outcomes, first, paused, probes)
    assert outcomes["dropped"] == 30 - attempted
    if baseline["example"] == "fastapi":  # one process, one breaker: exact
        assert (first, paused, probes) == (5, 0, 1)
    else:  # two workers, two breakers, requests spread at random between them
        assert outcomes["dropped"] >= 10, outcomes


# ---- 3. garbage from the candidate --------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("invalid_http", "error"),
        ("truncated", "error"),
        ("reset", "error"),
        ("error500", "error"),
        ("invalid_json", "mismatch"),
        ("huge", "mismatch"),
        ("gzip_bomb", "mismatch"),
        ("trickle", "timeout"),
    ],
)
def test_garbage_from_the_candidate(
    baseline: dict[str, Any], tmp_path: Path, mode: str, expected: str
) -> None:
    with FaultyCandidate(mode) as cand:
        env = {"CANDIDATE_URL": cand.url, "CANDIDATE_TIMEOUT": "1.0", "SHADOW_CIRCUIT_FAILURES": "0"}
        with deployment(baseline["example"], tmp_path, **env) as dep:
            post_all(dep.port, PAYLOADS[:4])
            time.sleep(1.2)
            before = dep.rss()
            answers = post_all(dep.port, PAYLOADS[:16], concurrency=4)
            time.sleep(1.5)  # let the shadows finish
            growth = dep.rss() - before
    assert_no_impact(baseline, PAYLOADS[:16], answers)
    outcomes = assert_nothing_lost(dep, 20)
    assert outcomes == Counter({expected: 20}), outcomes
    # Reads are capped (1 MiB default, decompression included): 50 MB answers cost little.
    assert growth < 40 * 2**20, f"RSS grew by {growth / 2**20:.1f} MiB"
    if mode in ("huge", "gzip_bomb"):
        assert all(s.get("shadow.candidate.truncated") or mode == "gzip_bomb" for s in dep.spans())


# ---- 4. request bodies over the cap, chunked bodies -------------------------------------------


def test_body_over_the_cap_reaches_the_app_and_is_skipped(baseline: dict[str, Any], tmp_path: Path) -> None:
    big = dict(ROWS[0], padding="x" * 3_000_000)
    payload = json.dumps(big).encode()
    with FaultyCandidate("ok") as cand:
        env = {"CANDIDATE_URL": cand.url, "SHADOW_MAX_BODY_BYTES": "65536"}
        with deployment(baseline["example"], tmp_path, NO_SHADOW="1") as base:
            expected = post(base.port, payload)
            expected_chunked = request(
                base.port,
                "POST",
                "/predict",
                iter([payload[:1000], payload[1000:]]),
                {**JSON, "transfer-encoding": "chunked"},
                chunked=True,
            )
        with deployment(baseline["example"], tmp_path, **env) as dep:
            got = post(dep.port, payload)
            got_chunked = request(
                dep.port,
                "POST",
                "/predict",
                iter([payload[:1000], payload[1000:]]),
                {**JSON, "transfer-encoding": "chunked"},
                chunked=True,
            )
        assert cand.received == 0
    assert (got.status, got.content_type, got.body) == (expected.status, expected.content_type, expected.body)
    assert got.status == 200
    assert (got_chunked[0], got_chunked[2]) == (expected_chunked[0], expected_chunked[2])
    assert_nothing_lost(dep, 2)
    assert {s["shadow.reason"] for s in dep.spans()} == {"body_too_large"}


def test_chunked_bodies_reach_app_and_candidate_identically(baseline: dict[str, Any], tmp_path: Path) -> None:
    payload = PAYLOADS[5]
    pieces = [payload[i : i + 7] for i in range(0, len(payload), 7)]
    with (
        FaultyCandidate("ok") as cand,
        deployment(baseline["example"], tmp_path, CANDIDATE_URL=cand.url) as dep,
    ):
        status, headers, body = request(
            dep.port, "POST", "/predict", iter(pieces), {**JSON, "transfer-encoding": "chunked"}, chunked=True
        )
    assert (status, headers.get("content-type"), body) == baseline["answers"][payload]
    assert cand.received == 1
    assert cand.headers[0]["content-length"] == str(len(payload))
    assert_nothing_lost(dep, 1)


# ---- 5. clients that leave ----------------------------------------------------------------------


def _raw(port: int, data_: bytes, read: bool) -> None:
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(data_)
        if read:
            s.settimeout(5)
            s.recv(65536)


def test_clients_leaving_mid_body_and_after_it(baseline: dict[str, Any], tmp_path: Path) -> None:
    payload = PAYLOADS[7]
    head = (
        f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n\r\n"
    ).encode()
    with FaultyCandidate("ok") as cand:
        with deployment(baseline["example"], tmp_path, CANDIDATE_URL=cand.url) as dep:
            post_all(dep.port, PAYLOADS[:40], concurrency=16)  # every pool thread started
            for _ in range(5):
                _raw(dep.port, head + payload[:20], read=False)  # leaves mid-body
            for _ in range(5):
                _raw(dep.port, head + payload, read=False)  # leaves right after the body
            time.sleep(1.0)
            idle_start = dep.cpu()
            time.sleep(1.0)
            idle = dep.cpu() - idle_start
            answers = post_all(dep.port, PAYLOADS[:10])
            threads_after = [threads(p) for p in dep.app_pids]
            post_all(dep.port, PAYLOADS[10:20])
            if baseline["example"] == "fastapi":
                # Nothing piles up. (gunicorn's gthread pool grows lazily per worker, so its
                # thread count is not a signal there; the CPU and span checks are.)
                assert [threads(p) for p in dep.app_pids] == threads_after
        shadowed_ok = cand.received  # after the graceful stop: every shadow is done
    assert idle < 0.2, f"{idle:.2f}s of CPU while idle: a busy loop"
    assert_no_impact(baseline, PAYLOADS[:10], answers)
    spans = dep.spans()
    assert len(spans) == 70, Counter(str(s.get("shadow.reason", s["shadow.outcome"])) for s in spans)
    # Left mid-body: skipped, and the candidate never heard of them.
    mid = [
        s
        for s in spans
        if s.get("shadow.reason") == "client_disconnect" and "shadow.candidate.status_code" not in s
    ]
    assert len(mid) == 5, Counter(str(s.get("shadow.reason", s["shadow.outcome"])) for s in spans)
    # Every other request had a complete body, so its shadow went out and was answered.
    assert shadowed_ok == 65 == sum(1 for s in spans if "shadow.candidate.status_code" in s)


# ---- 6. fork: --preload, several workers, recycled often ----------------------------------------


def test_gunicorn_preload_recycled_workers(tmp_path: Path) -> None:
    with FaultyCandidate("ok") as cand:
        env = {"SHADOW_URL": cand.url, "SPAN_FILE": str(tmp_path / "spans.jsonl")}
        extra = ("--max-requests", "10", "--max-requests-jitter", "3")
        with app_server("gunicorn", env, *extra, workers=3) as (port, proc):
            bodies = [json.dumps({"id": f"r{i}", "x": "y" * i}).encode() for i in range(120)]
            with ThreadPoolExecutor(6) as pool:
                answers = list(pool.map(lambda b: request(port, "POST", "/predict", b, JSON), bodies))
            master_threads = thread_names(proc.pid)
            worker_threads = [thread_names(p) for p in children(proc.pid)]
            time.sleep(0.5)
        spans = [json.loads(line) for line in (tmp_path / "spans.jsonl").read_text().splitlines()]
    assert all(a[0] == 200 for a in answers)
    pids = {json.loads(a[2])["pid"] for a in answers}
    assert len(pids) >= 6, pids  # workers were recycled many times
    # The engine started nothing in the master; its workers each run one dispatcher.
    assert "shadow-dispatch" not in master_threads, master_threads
    assert any(names.count("shadow-dispatch") == 1 for names in worker_threads), worker_threads
    shadow = [s for s in spans if s["name"].startswith("shadow ")]
    assert len(shadow) == 120  # every worker flushed its shadows before exiting
    assert sorted(s["attributes"]["shadow.correlation_id"] for s in shadow) == sorted(
        f"r{i}" for i in range(120)
    )
    assert {s["pid"] for s in shadow} == pids  # shadows from every worker
    assert cand.received == 120


# ---- 7. graceful shutdown under load -----------------------------------------------------------


@ISOLATIONS
def test_sigterm_under_load_drains_then_cancels_and_counts(
    baseline: dict[str, Any], tmp_path: Path, isolation: str
) -> None:
    with FaultyCandidate("slow", delay=8.0) as cand:
        env = {"CANDIDATE_URL": cand.url, "CANDIDATE_TIMEOUT": "20", "SHADOW_DRAIN_TIMEOUT": "1"}
        with deployment(baseline["example"], tmp_path, isolation, **env) as dep:
            answers = post_all(dep.port, PAYLOADS[:12], concurrency=4)
            started = time.monotonic()
            dep.process.proc.send_signal(signal.SIGTERM)
            dep.process.proc.wait(timeout=30)
            took = time.monotonic() - started
    assert_no_impact(baseline, PAYLOADS[:12], answers)
    # The drain deadline (1 s) is far shorter than the candidate (8 s) and gunicorn's 15 s grace.
    assert took < 5, took
    outcomes = assert_nothing_lost(dep, 12)
    assert outcomes == Counter({"dropped": 12}), outcomes
    assert {s["shadow.reason"] for s in dep.spans()} == {"shutdown"}


# ---- 8. a burst of 10x the queue -----------------------------------------------------------------


@ISOLATIONS
def test_burst_of_ten_times_the_queue(baseline: dict[str, Any], tmp_path: Path, isolation: str) -> None:
    with FaultyCandidate("slow", delay=1.0) as cand:
        env = {
            "CANDIDATE_URL": cand.url,
            "CANDIDATE_TIMEOUT": "3",
            "CANDIDATE_MAX_CONCURRENCY": "2",
            "SHADOW_MAX_QUEUE": "10",
            "SHADOW_DRAIN_TIMEOUT": "15",  # let the accepted ones finish at shutdown
        }
        with deployment(baseline["example"], tmp_path, isolation, **env) as dep:
            post_all(dep.port, PAYLOADS[:2])
            time.sleep(2.5)
            before = dep.rss()
            answers = post_all(dep.port, PAYLOADS, concurrency=16)
            growth = dep.rss() - before
    assert_no_impact(baseline, PAYLOADS, answers)
    outcomes = assert_nothing_lost(dep, 102)
    workers = 1 if baseline["example"] == "fastapi" else 2
    assert outcomes["dropped"] >= 100 - workers * (10 + 2) * 3, outcomes
    assert {s["shadow.reason"] for s in dep.spans() if s["shadow.outcome"] == "dropped"} == {"queue_full"}
    assert growth < 30 * 2**20, f"RSS grew by {growth / 2**20:.1f} MiB"


# ---- 9. the app raises, fails, streams -----------------------------------------------------------


@pytest.mark.parametrize("kind", ["uvicorn", "gunicorn"])
def test_app_raising_failing_and_streaming_is_unchanged(kind: str, tmp_path: Path) -> None:
    routes = "POST /boom,POST /fail,POST /stream"
    results: dict[str, list[tuple[int, str, bytes]]] = {}
    with FaultyCandidate("ok") as cand:
        for arm in ("baseline", "shadow"):
            env = {
                "SHADOW_URL": cand.url,
                "SPAN_FILE": str(tmp_path / f"{arm}.jsonl"),
                "SHADOW_ROUTES": routes,
            }
            if arm == "baseline":
                env["NO_SHADOW"] = "1"
            with app_server(kind, env) as (port, _):
                out = []
                for path in ("/boom", "/fail", "/stream"):
                    status, headers, body = request(port, "POST", path, PAYLOADS[0], JSON)
                    out.append((status, headers.get("content-type", ""), body))
                results[arm] = out
            time.sleep(0.2)
        assert cand.received == 3
    assert results["shadow"] == results["baseline"]
    assert [r[0] for r in results["shadow"]] == [500, 500, 200]
    spans = [json.loads(x) for x in (tmp_path / "shadow.jsonl").read_text().splitlines()]
    by_route = {
        s["attributes"]["shadow.route"]: s["attributes"] for s in spans if s["name"].startswith("shadow ")
    }
    assert len(by_route) == 3
    # /fail: production answered 500, the candidate 200 -> a mismatch (not the candidate's error).
    assert by_route["POST /fail"]["shadow.outcome"] == "mismatch"
    assert by_route["POST /fail"]["shadow.primary.status_code"] == 500
    # /stream: compared whole after streaming; the candidate answered JSON -> mismatch.
    assert by_route["POST /stream"]["shadow.outcome"] == "mismatch"
    # /boom: uvicorn's app lets the exception escape the middleware (skipped); Flask turns it
    # into a 500 inside the app, which the middleware sees as a response.
    boom = by_route["POST /boom"]
    if kind == "uvicorn":
        assert (boom["shadow.outcome"], boom["shadow.reason"]) == ("skipped", "primary_exception")
    else:
        assert boom["shadow.outcome"] == "mismatch" and boom["shadow.primary.status_code"] == 500


# ---- 10. security ------------------------------------------------------------------------------


SECRETS = {
    "authorization": "Bearer SECRET-auth",
    "cookie": "session=SECRET-cookie",
    "x-api-key": "SECRET-key",
    "proxy-authorization": "Basic SECRET-proxy",
}


@ISOLATIONS
def test_credentials_are_not_forwarded_unless_opted_in(
    baseline: dict[str, Any], tmp_path: Path, isolation: str
) -> None:
    with FaultyCandidate("ok") as cand:
        with deployment(baseline["example"], tmp_path, isolation, CANDIDATE_URL=cand.url) as dep:
            answers = [post(dep.port, p, SECRETS | {"x-trace-me": "SECRET-custom"}) for p in PAYLOADS[:5]]
        assert cand.received == 5
        for headers in cand.headers:
            assert not set(SECRETS) & set(headers), headers
            assert headers["x-shadow-request"] == "churn-v2"
            assert headers["host"] == f"127.0.0.1:{cand.port}"
            assert "traceparent" in headers
        forwarded_before = len(cand.headers)
        with deployment(
            baseline["example"], tmp_path, isolation, CANDIDATE_URL=cand.url, SHADOW_DROP_HEADERS=""
        ) as dep2:
            post(dep2.port, PAYLOADS[0], SECRETS)
        assert cand.headers[forwarded_before]["authorization"] == SECRETS["authorization"]
    assert_no_impact(baseline, PAYLOADS[:5], answers)
    # Span attributes carry no header value and no body: only the correlation id and the inputs
    # the example opted in to record (record_inputs, shadow.request.body.*).
    text = dep.span_file.read_text()
    assert "SECRET" not in text
    opted_in = ("shadow.correlation_id", "shadow.request.body.")
    assert ROWS[0]["contract"] not in json.dumps(
        [{k: v for k, v in s.items() if not k.startswith(opted_in)} for s in dep.spans()]
    )
    assert any(k.startswith("shadow.request.body.") for s in dep.spans() for k in s)  # the opt-in works


def test_no_request_can_choose_the_target_and_redirects_are_not_followed(
    baseline: dict[str, Any], tmp_path: Path
) -> None:
    with FaultyCandidate("ok") as cand, FaultyCandidate("ok") as other:
        with deployment(baseline["example"], tmp_path, CANDIDATE_URL=cand.url) as dep:
            tricks = [
                {"host": f"127.0.0.1:{other.port}"},
                {"x-forwarded-host": f"127.0.0.1:{other.port}"},
                {"x-original-url": other.url},
                {"forwarded": f"host=127.0.0.1:{other.port}"},
            ]
            for extra in tricks:
                post(dep.port, PAYLOADS[0], extra)
            # Absolute-form request target naming another server.
            raw = (
                f"POST http://127.0.0.1:{other.port}/predict HTTP/1.1\r\nHost: 127.0.0.1:{other.port}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(PAYLOADS[0])}\r\n"
                "Connection: close\r\n\r\n"
            ).encode() + PAYLOADS[0]
            _raw(dep.port, raw, read=True)
        assert other.received == 0
        # uvicorn hands the absolute form to the app as the path (a 404, not a route, not
        # shadowed); gunicorn reduces it to /predict, which is shadowed -- to the configured target.
        assert cand.received in (len(tricks), len(tricks) + 1)
    assert_nothing_lost(dep, cand.received)
    assert {s["url.full"] for s in dep.spans()} == {cand.url}


def test_redirects_from_the_candidate_are_not_followed(tmp_path: Path) -> None:
    # The same as tests/test_asgi.py::test_redirects_are_not_followed, through a real server process
    # and a candidate that redirects to another server.
    with FaultyCandidate("ok") as elsewhere:
        import http.server
        import threading

        class Redirect(http.server.BaseHTTPRequestHandler):
            count = 0

            def do_POST(self) -> None:
                Redirect.count += 1
                self.rfile.read(int(self.headers.get("content-length", 0)))
                self.send_response(307)
                self.send_header("location", elsewhere.url)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
        thread = threading.Thread(target=httpd.serve_forever, daemon=True)
        thread.start()
        try:
            url = f"http://127.0.0.1:{httpd.server_address[1]}/predict_shadow"
            with deployment("fastapi", tmp_path, CANDIDATE_URL=url) as dep:
                for p in PAYLOADS[:3]:
                    assert post(dep.port, p).status == 200
        finally:
            httpd.shutdown()
            httpd.server_close()
        assert Redirect.count == 3 and elsewhere.received == 0
    outcomes = assert_nothing_lost(dep, 3)
    assert outcomes == Counter({"mismatch": 3})
    assert {s["shadow.candidate.status_code"] for s in dep.spans()} == {307}
