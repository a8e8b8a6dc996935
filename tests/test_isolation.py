"""``isolation="process"`` (issue 13): the app process only copies; a helper process it starts
does the rest, with the thread mode's contract unchanged across the boundary.

The helper records spans with ``tests.apps.spanfile:helper_telemetry`` (JSON lines in
``$SPAN_FILE``); thread mode, for comparison, with the in-memory exporter of ``conftest``.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider

from shadow_middleware import Compare, Shadow, ShadowConfig, ShadowStatsApp, ShadowTarget
from shadow_middleware import _helperlink as helperlink
from shadow_middleware import _isolation as isolation
from shadow_middleware._config import config_data, describe

from .asgi_helpers import drive, http_scope, run
from .conftest import ShadowServer, Telemetry, free_port, json_reply
from .faulty import FaultyCandidate
from .servers import ROOT, request, server

SETUP = "tests.apps.spanfile:helper_telemetry"
BODY = json.dumps({"id": "cust-1", "tenure": 3}).encode()
ANSWER = json.dumps({"prediction": 0.5, "decision": True}).encode()
HEADERS = [("content-type", "application/json"), ("authorization", "Bearer SECRET")]


@pytest.fixture
def span_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where helpers started by this test write their spans (they inherit the environment)."""
    path = tmp_path / "spans.jsonl"
    monkeypatch.setenv("SPAN_FILE", str(path))
    return path


def config(url: str, **kw: Any) -> ShadowConfig:
    target = kw.pop("target", {})
    kw.setdefault("compare", Compare(fields=["/prediction"], abs_tol=0.01))
    kw.setdefault("correlation_id", "json:/id")
    return ShadowConfig(targets=[ShadowTarget("v2", url=url, **target)], **kw)


def process(url: str, **kw: Any) -> ShadowConfig:
    return config(url, isolation="process", telemetry_setup=SETUP, **kw)


def spans(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def alive(pid: int) -> bool:
    """Running (a zombie left for a reaper is not running)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.05)
    return False


def exchange(
    shadow: Shadow,
    kind: str = "ok",
    body: bytes = BODY,
    headers: list[tuple[str, str]] | None = None,
    query: str = "",
) -> None:
    """One request through the adapter interface, the way the middlewares drive it."""
    route = shadow.match("POST", "/predict")
    assert route is not None
    length = len(body) if kind != "chunked" else None
    tap = shadow.begin(route, "POST", "/predict", query, headers or HEADERS, length)
    if tap is None:
        return
    if kind == "not_read":
        tap.finish()
        return
    tap.feed(body)
    tap.body_complete()
    if kind == "raises":
        tap.finish(isolation.Reason.PRIMARY_EXCEPTION)
        return
    tap.response_start(500 if kind == "primary_500" else 200, "")
    tap.response_body(ANSWER)
    tap.response_complete()
    tap.finish()


@pytest.fixture
def engines() -> Iterator[list[Shadow]]:
    """Engines closed at the end of the test, whatever happens (no helper outlives a test)."""
    made: list[Shadow] = []
    yield made
    for engine in made:
        engine.close(2.0)


# ---- configuration ---------------------------------------------------------------------------


def test_options_are_validated_naming_the_field() -> None:
    url = "http://127.0.0.1:9/x"
    with pytest.raises(ValueError, match=r"^ShadowConfig\.isolation: must be 'thread' or 'process'"):
        config(url, isolation="processes")
    with pytest.raises(
        ValueError, match=r"^ShadowConfig\.telemetry_setup: must be 'package.module:function'"
    ):
        config(url, isolation="process", telemetry_setup="not a spec")
    with pytest.raises(
        ValueError, match=r"^ShadowConfig\.telemetry_setup: only used with isolation='process'"
    ):
        config(url, telemetry_setup=SETUP)
    assert config(url).isolation == "thread" and config(url).telemetry_setup is None
    # Both come from the environment and TOML like every other option (keys from the signature).
    cfg = ShadowConfig.from_env(
        {
            "SHADOW_TARGETS": "v2",
            "SHADOW_TARGET_V2_URL": url,
            "SHADOW_ISOLATION": "process",
            "SHADOW_TELEMETRY_SETUP": SETUP,
        }
    )
    assert (cfg.isolation, cfg.telemetry_setup) == ("process", SETUP)
    text = describe(cfg)
    assert 'isolation = "process"' in text and f'telemetry_setup = "{SETUP}"' in text
    with pytest.raises(ValueError, match="SHADOW_ISOLATION"):
        ShadowConfig.from_env(
            {"SHADOW_TARGETS": "v2", "SHADOW_TARGET_V2_URL": url, "SHADOW_ISOLATION": "fork"}
        )


def test_the_helper_gets_the_exact_configuration() -> None:
    # describe() masks header values; the helper needs them exactly.
    cfg = ShadowConfig(
        targets=[
            ShadowTarget("a", url="http://127.0.0.1:9/x", headers={"x-key": "s3cret=\"'"}, timeout=0.3),
            ShadowTarget("b", base_url="http://127.0.0.1:9/base", sample_rate=0.125, max_concurrency=3),
        ],
        routes=["POST /a/<int:n>", "* /b"],
        compare=Compare(fields={"/p": "/q"}, ignore=["/p/t"], threshold=0.5, rel_tol=1e-9),
        drop_headers=["x-b", "cookie"],
        sample_key="json:/k",
        correlation_id="header:x-id",
        isolation="process",
        telemetry_setup=SETUP,
        span_placement="link",
    )
    data = config_data(cfg)
    assert ShadowConfig.from_env({}, base=data) == cfg
    assert data["targets"][0]["headers"] == {"x-key": "s3cret=\"'"}
    assert "***" in describe(cfg) and "s3cret" not in describe(cfg)


def test_providers_built_in_the_app_need_telemetry_setup(telemetry: Telemetry) -> None:
    cfg = config("http://127.0.0.1:9/x", isolation="process")
    with pytest.raises(ValueError, match=r"^tracer_provider: with isolation='process'"):
        Shadow(cfg, tracer_provider=telemetry.tracer_provider)
    with pytest.raises(ValueError, match=r"^meter_provider: with isolation='process'"):
        Shadow(cfg, meter_provider=telemetry.meter_provider)
    Shadow(process("http://127.0.0.1:9/x"), tracer_provider=telemetry.tracer_provider).close()


# ---- the same spans as thread mode ------------------------------------------------------------

# Measured durations differ between two runs; every other attribute must be identical.
VOLATILE = {"shadow.primary.duration_ms", "shadow.candidate.duration_ms"}


def comparable(attrs: dict[str, Any]) -> dict[str, Any]:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in attrs.items() if k not in VOLATILE}


CASES = {
    "match": ("ok", {"prediction": 0.505}, 200, {}),
    "mismatch": ("ok", {"prediction": 0.9}, 200, {}),
    "candidate 5xx": ("ok", {"detail": "down"}, 503, {}),
    "primary 5xx": ("primary_500", {"prediction": 0.5}, 200, {}),
    "dead candidate": ("ok", None, 0, {}),
    "body over the cap": ("ok", {"prediction": 0.5}, 200, {"max_body_bytes": 10}),
    "primary raised": ("raises", {"prediction": 0.5}, 200, {}),
    "body never read": ("not_read", {"prediction": 0.5}, 200, {}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_shadowed_request_gives_the_same_span_as_thread_mode(
    case: str, shadow_server: ShadowServer, telemetry: Telemetry, span_file: Path, engines: list[Shadow]
) -> None:
    kind, reply, status, extra = CASES[case]
    if reply is not None:
        shadow_server.reply = lambda req: json_reply(reply, status)
    url = shadow_server.url + "/shadow" if reply is not None else f"http://127.0.0.1:{free_port()}/x"
    results = {}
    for mode in ("thread", "process"):
        if mode == "thread":
            shadow = Shadow(config(url, **extra), tracer_provider=telemetry.tracer_provider)
        else:
            shadow = Shadow(process(url, **extra))
        engines.append(shadow)
        exchange(shadow, kind, query="a=1")
        assert shadow.flush(10)
        results[mode] = shadow.stats()
        shadow.close(5)
    thread_spans = [dict(s.attributes or {}) for s in telemetry.spans()]
    process_spans = [s["attributes"] for s in spans(span_file) if s["name"].startswith("shadow ")]
    assert len(thread_spans) == len(process_spans) == 1
    assert comparable(process_spans[0]) == comparable(thread_spans[0])
    assert set(process_spans[0]) == set(thread_spans[0])
    assert results["process"] == results["thread"]
    assert sum(results["process"].values()) == 1


def test_the_span_is_parented_to_the_request_trace(
    shadow_server: ShadowServer, span_file: Path, engines: list[Shadow]
) -> None:
    app_tracer = TracerProvider().get_tracer("app")  # the app's own SDK, in the app process
    shadow = Shadow(process(shadow_server.url))
    engines.append(shadow)
    with app_tracer.start_as_current_span("POST /predict") as request_span:
        exchange(shadow)
    # No OpenTelemetry context in the app: the incoming traceparent header is the parent.
    incoming = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    exchange(shadow, headers=[*HEADERS, ("traceparent", incoming)])
    assert shadow.flush(10)
    ctx = request_span.get_span_context()
    parents = {
        (s["trace_id"], s["parent_span_id"]) for s in spans(span_file) if s["name"].startswith("shadow ")
    }
    # (The two exchanges run concurrently in the helper: their spans may end in either order.)
    assert parents == {
        (f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}"),
        ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"),
    }
    # The candidate got the shadow span's own traceparent, the marker, and no credential.
    received = shadow_server.wait_for(2)
    assert {r.headers["traceparent"].split("-")[1] for r in received} == {
        f"{ctx.trace_id:032x}",
        "0af7651916cd43dd8448eb211c80319c",
    }
    assert all(r.headers["x-shadow-request"] == "v2" and "authorization" not in r.headers for r in received)


def test_through_the_asgi_middleware(shadow_server: ShadowServer, span_file: Path) -> None:
    from shadow_middleware import ShadowASGIMiddleware

    from .asgi_helpers import json_app

    mw = ShadowASGIMiddleware(json_app({"prediction": 0.5}), config=process(shadow_server.url))
    try:
        res = run(drive(mw, http_scope(), [BODY[:5], BODY[5:]]))
        assert res.status == 200
        assert mw.shadow is not None and mw.shadow.flush(10)
        assert mw.shadow.stats()["match"] == 1
        assert shadow_server.received[0].body == BODY
    finally:
        assert mw.shadow is not None
        mw.shadow.close(5)
    assert [s["attributes"]["shadow.correlation_id"] for s in spans(span_file)] == ["cust-1"]


# ---- the API across the boundary ------------------------------------------------------------


def test_stats_flush_close_and_the_stats_endpoint(
    shadow_server: ShadowServer, span_file: Path, engines: list[Shadow]
) -> None:
    shadow = Shadow(process(shadow_server.url, drain_timeout=3.0))
    engines.append(shadow)
    assert shadow.flush(1)  # nothing sent yet: no helper, nothing to wait for
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: exchange(shadow, body=json.dumps({"id": f"c{i}"}).encode()), range(40)))
    assert shadow.flush(10)
    # flush() returned after the helper's report: the counts are exact now.
    assert shadow.stats()["match"] == 40
    assert shadow.stats_by_target() == {"v2": dict(shadow.stats())}
    assert len(spans(span_file)) == 40
    body = run(drive(ShadowStatsApp(shadow), http_scope("GET", "/")))
    assert json.loads(body.body)["outcomes"]["match"] == 40
    # set_sample_rate / set_enabled stay in the app: nothing reaches the helper.
    shadow.set_sample_rate("v2", 0.0)
    exchange(shadow)
    shadow.set_sample_rate("v2", 1.0)
    shadow.set_enabled(False)
    assert shadow.match("POST", "/predict") is None
    shadow.set_enabled(True)
    pid = shadow._pipeline.helper_pid()  # type: ignore[union-attr]
    assert pid is not None and alive(pid)
    shadow_server.delay = 1.0  # in flight at close: drained within drain_timeout
    for i in range(3):
        exchange(shadow, body=json.dumps({"id": f"late{i}"}).encode())
    started = time.monotonic()
    shadow.close(3.0)
    assert time.monotonic() - started < 3.0 + 3.0
    assert wait_gone(pid, 5)
    assert shadow.stats()["match"] == 43
    assert sum(shadow.stats().values()) == 43
    assert shadow.match("POST", "/predict") is None  # closed: requests pass through
    assert len(spans(span_file)) == 43


def test_close_cancels_and_counts_what_is_still_running(
    shadow_server: ShadowServer, span_file: Path, engines: list[Shadow]
) -> None:
    shadow_server.delay = 5.0
    shadow = Shadow(process(shadow_server.url, target={"timeout": 10.0}))
    engines.append(shadow)
    for _ in range(4):
        exchange(shadow)
    shadow_server.wait_for(4)
    started = time.monotonic()
    shadow.close(0.5)
    assert time.monotonic() - started < 4.0
    assert shadow.stats()["dropped"] == 4
    assert {s["attributes"]["shadow.reason"] for s in spans(span_file)} == {"shutdown"}


def test_deferred_sampling_by_a_body_value_matches_thread_mode(
    shadow_server: ShadowServer, telemetry: Telemetry, span_file: Path, engines: list[Shadow]
) -> None:
    bodies = [json.dumps({"id": f"cust-{i}"}).encode() for i in range(60)]
    counts = {}
    for mode in ("thread", "process"):
        extra: dict[str, Any] = {"sample_key": "json:/id", "target": {"sample_rate": 0.5}}
        if mode == "thread":
            shadow = Shadow(config(shadow_server.url, **extra), tracer_provider=telemetry.tracer_provider)
        else:
            shadow = Shadow(process(shadow_server.url, **extra))
        engines.append(shadow)
        for body in bodies:
            exchange(shadow, body=body)
        assert shadow.flush(10)
        counts[mode] = shadow.stats()["match"]
    thread_ids = sorted(str(s.attributes["shadow.correlation_id"]) for s in telemetry.spans())  # type: ignore[index]
    process_ids = sorted(s["attributes"]["shadow.correlation_id"] for s in spans(span_file))
    assert thread_ids == process_ids and 10 < counts["process"] == counts["thread"] < 50


# ---- bounds ---------------------------------------------------------------------------------------


def test_a_full_socket_drops_and_counts_queue_full(
    shadow_server: ShadowServer, span_file: Path, engines: list[Shadow], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(helperlink, "SEND_BUFFER", 4096)  # the kernel's minimum, about
    shadow = Shadow(process(shadow_server.url, max_body_bytes=1 << 20))
    engines.append(shadow)
    exchange(shadow)
    assert shadow.flush(10)
    pid = shadow._pipeline.helper_pid()  # type: ignore[union-attr]
    assert pid is not None
    big = json.dumps({"id": "big", "pad": "x" * 200_000}).encode()
    os.kill(pid, signal.SIGSTOP)  # the helper reads nothing: the socket fills
    try:
        timings = []
        for _ in range(20):
            started = time.perf_counter()
            exchange(shadow, body=big)
            timings.append(time.perf_counter() - started)
        stats = shadow.stats()
    finally:
        os.kill(pid, signal.SIGCONT)
    # The app never blocked on the helper; what did not fit was dropped and counted at once.
    assert max(timings) < 0.1, timings
    assert stats["dropped"] >= 15, stats
    assert shadow.flush(20)
    final = shadow.stats()
    assert sum(final.values()) == 21, final
    assert final["dropped"] == stats["dropped"]
    # Drops decided in the app have no span of their own (the helper never saw them), but
    # their share of a coalesced one, carrying the count (the span file stays exact).
    recorded = spans(span_file)
    own = [s for s in recorded if "shadow.coalesced_count" not in s["attributes"]]
    coalesced = [s["attributes"] for s in recorded if "shadow.coalesced_count" in s["attributes"]]
    assert len(own) == 21 - final["dropped"]
    assert sum(a["shadow.coalesced_count"] for a in coalesced) == final["dropped"]
    assert {(a["shadow.outcome"], a["shadow.reason"]) for a in coalesced} == {("dropped", "queue_full")}


def test_app_side_drops_reach_the_helpers_metric(
    shadow_server: ShadowServer, tmp_path: Path, engines: list[Shadow], monkeypatch: pytest.MonkeyPatch
) -> None:
    metrics = tmp_path / "metrics.jsonl"
    monkeypatch.setenv("METRIC_FILE", str(metrics))
    monkeypatch.setattr(helperlink, "SEND_BUFFER", 4096)
    shadow = Shadow(process(shadow_server.url))
    engines.append(shadow)
    exchange(shadow)
    assert shadow.flush(10)
    pid = shadow._pipeline.helper_pid()  # type: ignore[union-attr]
    assert pid is not None
    big = json.dumps({"id": "big", "pad": "x" * 200_000}).encode()
    os.kill(pid, signal.SIGSTOP)
    try:
        for _ in range(10):
            exchange(shadow, body=big)
    finally:
        os.kill(pid, signal.SIGCONT)
    dropped = shadow.stats()["dropped"]
    assert dropped > 0
    shadow.close(5)
    from .apps.spanfile import metric_sums

    sums = metric_sums(metrics)
    assert sums[("v2", "POST /predict", "dropped")] == dropped
    assert sum(sums.values()) == 11


# ---- lifecycle -----------------------------------------------------------------------------------


def test_helper_killed_under_load_is_counted_and_replaced(
    shadow_server: ShadowServer, span_file: Path, engines: list[Shadow], caplog: pytest.LogCaptureFixture
) -> None:
    shadow_server.delay = 0.3  # so that some exchanges are in flight when it dies
    shadow = Shadow(process(shadow_server.url))
    engines.append(shadow)
    exchange(shadow)
    assert shadow.flush(10)
    first = shadow._pipeline.helper_pid()  # type: ignore[union-attr]
    assert first is not None
    stop = threading.Event()
    sent = 0
    slowest = 0.0

    def load() -> None:
        nonlocal sent, slowest
        while not stop.is_set():
            started = time.perf_counter()
            exchange(shadow, body=json.dumps({"id": f"r{sent}"}).encode())
            slowest = max(slowest, time.perf_counter() - started)
            sent += 1
            time.sleep(0.005)

    caplog.set_level(logging.WARNING, logger="shadow_middleware")
    worker = threading.Thread(target=load)
    worker.start()
    try:
        time.sleep(0.5)
        os.kill(first, signal.SIGKILL)
        deadline = time.monotonic() + 10
        second = None
        while time.monotonic() < deadline:
            second = shadow._pipeline.helper_pid()  # type: ignore[union-attr]
            if second not in (None, first):
                break
            time.sleep(0.02)
        time.sleep(0.5)  # and it serves
    finally:
        stop.set()
        worker.join()
    assert second not in (None, first) and alive(second)  # type: ignore[arg-type]
    assert shadow.flush(15)
    stats = shadow.stats()
    # Production never waited; every request ended in one counted outcome.
    assert slowest < 0.1, slowest
    assert sum(stats.values()) == sent + 1, stats
    assert stats["dropped"] > 0 and stats["match"] > 0, stats
    assert "helper_restart" in caplog.text and "exited with -9" in caplog.text
    # Every exchange counted as finished has its span. A lost one has none, but for those the
    # killed helper finished in its last report interval (<= 50 ms): recorded, never reported.
    recorded = Counter(s["attributes"]["shadow.outcome"] for s in spans(span_file))
    assert recorded["match"] >= stats["match"]
    assert sum(recorded.values()) <= stats["match"] + stats["dropped"]


def test_a_crash_looping_helper_backs_off(
    shadow_server: ShadowServer, engines: list[Shadow], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="shadow_middleware")
    cfg = config(
        shadow_server.url, isolation="process", telemetry_setup="tests.apps.spanfile:no_such_function"
    )
    shadow = Shadow(cfg)
    engines.append(shadow)
    started = time.monotonic()
    while time.monotonic() - started < 2.0:
        exchange(shadow)
        time.sleep(0.002)
    client = shadow._pipeline
    assert isinstance(client, isolation.HelperClient)
    # 0.25 s, then 0.5, 1, 2 ...: a handful of attempts in 2 s, not hundreds.
    assert 1 <= client.helpers_started <= 4, client.helpers_started
    assert "no_such_function" in caplog.text
    stats = shadow.stats()
    assert stats["dropped"] == sum(stats.values()) > 0
    assert shadow_server.received == []


PARENT = """
import sys, time
from shadow_middleware import Shadow, ShadowConfig, ShadowTarget
url, setup = sys.argv[1], sys.argv[2]
shadow = Shadow(ShadowConfig([ShadowTarget("v2", url=url, timeout=30)], isolation="process", telemetry_setup=setup, drain_timeout=1.0))
for _ in range(3):
    tap = shadow.begin("POST /predict", "POST", "/predict", "", [], 2)
    tap.feed(b"{}"); tap.body_complete(); tap.response_start(200, ""); tap.response_body(b"{}"); tap.response_complete(); tap.finish()
while shadow._pipeline.helper_pid() is None:
    time.sleep(0.01)
print(shadow._pipeline.helper_pid(), flush=True)
time.sleep(60)
"""


def test_parent_killed_with_sigkill_leaves_no_helper(shadow_server: ShadowServer, span_file: Path) -> None:
    shadow_server.delay = 10.0  # the helper has work in flight when its parent dies
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, shadow_server.url, SETUP],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
    )
    try:
        assert parent.stdout is not None
        helper = int(parent.stdout.readline())
        assert alive(helper)
        shadow_server.wait_for(3)
        parent.kill()
        parent.wait()
        # EOF and PR_SET_PDEATHSIG: it drains within drain_timeout (1 s) and exits.
        assert wait_gone(helper, 5), f"helper {helper} outlived its parent"
    finally:
        parent.kill()
        parent.wait()
        if parent.stdout is not None:
            parent.stdout.close()
    # What it had in flight was cancelled and recorded before it exited.
    assert Counter(s["attributes"].get("shadow.reason") for s in spans(span_file)) == {"shutdown": 3}


def test_a_forked_child_starts_its_own_helper(
    shadow_server: ShadowServer, span_file: Path, engines: list[Shadow]
) -> None:
    shadow = Shadow(process(shadow_server.url))
    engines.append(shadow)
    exchange(shadow)
    assert shadow.flush(10)
    parent_helper = shadow._pipeline.helper_pid()  # type: ignore[union-attr]
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its own helper, the parent's untouched
        code = 1
        try:
            exchange(shadow)
            ok = shadow.flush(10)
            child_helper = shadow._pipeline.helper_pid()  # type: ignore[union-attr]
            os.write(write, json.dumps([ok, child_helper, shadow.stats()["match"]]).encode())
            shadow.close(5)
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    with os.fdopen(read) as f:
        ok, child_helper, matches = json.loads(f.read())
    assert status == 0 and ok and matches == 1
    assert child_helper not in (None, parent_helper)
    exchange(shadow)
    assert shadow.flush(10) and shadow.stats()["match"] == 2
    assert shadow._pipeline.helper_pid() == parent_helper  # type: ignore[union-attr]
    assert len(spans(span_file)) == 3


def test_gunicorn_preload_recycled_workers(tmp_path: Path) -> None:
    with FaultyCandidate("ok") as cand:
        env = {
            "SHADOW_URL": cand.url,
            "SPAN_FILE": str(tmp_path / "spans.jsonl"),
            "SHADOW_ISOLATION": "process",
        }
        extra = ("--max-requests", "10", "--max-requests-jitter", "3")
        with server("gunicorn", env, *extra, workers=3) as (port, proc):
            bodies = [json.dumps({"id": f"r{i}", "x": "y" * i}).encode() for i in range(120)]
            headers = {"content-type": "application/json"}
            seen: dict[int, set[int]] = {}  # worker -> the helpers seen under it
            in_master: set[str] = set()
            stop = threading.Event()

            def watch() -> None:
                while not stop.is_set():
                    for worker in _children(proc.pid):
                        in_master.add(_cmdline(worker))
                        for child in _children(worker):
                            if "shadow_middleware._helper" in _cmdline(child):
                                seen.setdefault(worker, set()).add(child)
                    time.sleep(0.01)

            watcher = threading.Thread(target=watch)
            watcher.start()
            try:
                with ThreadPoolExecutor(6) as pool:
                    answers = list(pool.map(lambda b: request(port, "POST", "/predict", b, headers), bodies))
            finally:
                stop.set()
                watcher.join()
            time.sleep(0.5)
        spans_ = spans(tmp_path / "spans.jsonl")
    assert all(a[0] == 200 for a in answers)
    pids = {json.loads(a[2])["pid"] for a in answers}
    assert len(pids) >= 6, pids  # workers were recycled many times
    # The master started no helper (its children are workers); each worker at most one.
    assert not any("shadow_middleware._helper" in c for c in in_master), in_master
    assert len(seen) >= 3 and all(len(h) == 1 for h in seen.values()), seen
    helpers = {h for hs in seen.values() for h in hs}
    assert all(wait_gone(h, 5) for h in helpers)  # each left with its worker
    shadow = [s for s in spans_ if s["name"].startswith("shadow ")]
    assert len(shadow) == 120  # every worker's helper drained before its worker exited
    assert sorted(s["attributes"]["shadow.correlation_id"] for s in shadow) == sorted(
        f"r{i}" for i in range(120)
    )
    assert {s["pid"] for s in shadow} == pids  # shadows from every worker
    assert cand.received == 120


def _children(pid: int) -> list[int]:
    """Every thread's children (a helper is the child of the thread that spawned it)."""
    out = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    for tid in tasks:
        try:
            out += [int(p) for p in Path(f"/proc/{pid}/task/{tid}/children").read_text().split()]
        except OSError:
            pass
    return out


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def test_without_telemetry_setup_the_helper_reads_the_otel_variables(
    shadow_server: ShadowServer, engines: list[Shadow], monkeypatch: pytest.MonkeyPatch
) -> None:
    from .otlp_receiver import OtlpReceiver

    with OtlpReceiver() as receiver:
        # As opentelemetry-instrument reads them: the endpoint implies the OTLP/HTTP exporters.
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
        monkeypatch.setenv("OTEL_SERVICE_NAME", "churn-api")
        monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
        shadow = Shadow(config(shadow_server.url, isolation="process"))
        engines.append(shadow)
        exchange(shadow)
        assert shadow.flush(10)
        (span,) = receiver.wait_for_spans(lambda s: s["name"] == "shadow POST /predict")
        assert span["resource"]["service.name"] == "churn-api"
        assert span["attributes"]["shadow.outcome"] == "match"
        assert span["attributes"]["shadow.correlation_id"] == "cust-1"
        shadow.close(5)
        assert {"shadow.requests", "shadow.candidate.duration"} <= receiver.metric_names()


# ---- processes bounded (issue 19) ---------------------------------------------------------------


def _helpers_of(pid: int) -> list[int]:
    return [c for c in _children(pid) if "shadow_middleware._helper" in _cmdline(c) and alive(c)]


def test_engines_of_one_process_share_one_helper(shadow_server: ShadowServer, span_file: Path) -> None:
    # A test suite builds an app (an engine) per test and rarely closes it: one helper per
    # process, as the thread mode has one background thread, not one per engine.
    made = [Shadow(process(shadow_server.url)) for _ in range(20)]
    try:
        for shadow in made:
            exchange(shadow)
        assert all(shadow.flush(10) for shadow in made)
        assert len(_helpers_of(os.getpid())) == 1
        assert [shadow.stats()["match"] for shadow in made] == [1] * 20
        assert len(spans(span_file)) == 20
        pid = made[0]._pipeline.helper_pid()  # type: ignore[union-attr]
        assert pid is not None
        made[0].close(5)  # one engine closed: the others still shadow through the same helper
        exchange(made[1])
        assert made[1].flush(10) and made[1].stats()["match"] == 2
        assert made[1]._pipeline.helper_pid() == pid  # type: ignore[union-attr]
    finally:
        shadow = made[0]
        del made[:], shadow  # collected without close(): the helper ends with the last of them
    import gc

    gc.collect()
    assert wait_gone(pid, 15), "the helper outlived every engine of its process"


class _RacyEnviron(dict[str, str]):
    """os.environ as another thread changes it: a key listed, then gone before it is read."""

    GONE = "SHADOW_TEST_GONE"

    def __iter__(self) -> Iterator[str]:
        yield self.GONE
        yield from super().__iter__()

    def keys(self) -> Any:
        return list(self)

    def __getitem__(self, key: str) -> str:
        if key == self.GONE:
            raise KeyError(key)
        return super().__getitem__(key)


def test_a_changing_environment_never_breaks_the_helper_start(
    shadow_server: ShadowServer, span_file: Path, engines: list[Shadow], monkeypatch: pytest.MonkeyPatch
) -> None:
    import gc
    import warnings

    monkeypatch.setattr(os, "environ", _RacyEnviron(os.environ))
    stop = threading.Event()

    def setter() -> None:  # and a real concurrent setter, as a test suite's fixtures are
        while not stop.is_set():
            os.environ["SHADOW_TEST_FLIP"] = "1"
            os.environ.pop("SHADOW_TEST_FLIP", None)

    thread = threading.Thread(target=setter)
    thread.start()
    try:
        shadow = Shadow(process(shadow_server.url))
        engines.append(shadow)
        exchange(shadow)
        assert shadow.flush(10)
    finally:
        stop.set()
        thread.join()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gc.collect()
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]
    assert shadow.internal_errors == 0
    assert shadow.stats()["match"] == 1


def _unix_sockets() -> set[str]:
    """This process's open sockets (their inodes)."""
    found = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            link = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:"):
            found.add(link)
    return found


def test_a_helper_that_cannot_be_spawned_leaves_no_socket_open(
    shadow_server: ShadowServer, engines: list[Shadow], monkeypatch: pytest.MonkeyPatch
) -> None:
    import gc
    import warnings

    def broken(*args: Any, **kw: Any) -> Any:
        raise RuntimeError("spawn failed")  # not an OSError: our bug, or the platform's

    monkeypatch.setattr(isolation.subprocess, "Popen", broken)
    before = _unix_sockets()
    shadow = Shadow(process(shadow_server.url))
    engines.append(shadow)
    exchange(shadow)
    deadline = time.monotonic() + 5
    while shadow.stats()["dropped"] == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert shadow.stats()["dropped"] == 1  # counted, once
    assert _unix_sockets() == before  # both ends of the socketpair closed, at once
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gc.collect()
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]


@pytest.mark.parametrize("mode", ["thread", "process"])
def test_a_response_never_closed_ends_in_primary_timeout(
    mode: str, shadow_server: ShadowServer, telemetry: Telemetry, span_file: Path, engines: list[Shadow]
) -> None:
    extra: dict[str, Any] = {"primary_timeout": 0.3, "target": {"timeout": 0.5}}
    if mode == "thread":
        shadow = Shadow(config(shadow_server.url, **extra), tracer_provider=telemetry.tracer_provider)
    else:
        shadow = Shadow(process(shadow_server.url, **extra))
    engines.append(shadow)
    route = shadow.match("POST", "/predict")
    assert route is not None
    tap = shadow.begin(route, "POST", "/predict", "", HEADERS, len(BODY))
    assert tap is not None
    tap.feed(BODY)
    tap.body_complete()
    tap.response_start(200, "")
    tap.response_body(ANSWER)  # ... and the response is never closed: no finish() either
    deadline = time.monotonic() + 10
    while sum(shadow.stats().values()) == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert shadow.stats()["skipped"] == sum(shadow.stats().values()) == 1
    assert shadow.flush(10)
    if mode == "thread":
        reasons = [s.attributes["shadow.reason"] for s in telemetry.spans()]  # type: ignore[index]
    else:
        reasons = [s["attributes"]["shadow.reason"] for s in spans(span_file)]
    assert reasons == ["primary_timeout"]


TWO_ENGINES = """
import sys
from shadow_middleware import Shadow, ShadowConfig, ShadowTarget
url = sys.argv[1]
for round in range(2):  # two engines open at once, then two more after the helper exited
    engines = [Shadow(ShadowConfig([ShadowTarget("v2", url=url)], isolation="process")) for _ in range(2)]
    for shadow in engines:
        tap = shadow.begin("POST /predict", "POST", "/predict", "", [], 2)
        tap.feed(b"{}"); tap.body_complete(); tap.response_start(200, ""); tap.response_body(b"{}")
        tap.response_complete(); tap.finish()
        assert shadow.flush(10)
    for shadow in engines:
        shadow.close(5)
"""


def test_the_helper_warns_about_missing_telemetry_once_per_app_process(shadow_server: ShadowServer) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run(
        [sys.executable, "-c", TWO_ENGINES, shadow_server.url],
        cwd=ROOT,
        env={**env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("exports no shadow span") == 1, done.stderr
    assert len(shadow_server.received) == 4


PINNED = """
import os, sys, time
from shadow_middleware import Shadow, ShadowConfig, ShadowTarget
os.sched_setaffinity(0, {int(sys.argv[3])})  # the app pinned to one core, before any thread starts
url, setup = sys.argv[1], sys.argv[2]
shadow = Shadow(ShadowConfig([ShadowTarget("v2", url=url)], isolation="process", telemetry_setup=setup))
tap = shadow.begin("POST /predict", "POST", "/predict", "", [], 2)
tap.feed(b"{}"); tap.body_complete(); tap.response_start(200, ""); tap.response_body(b"{}"); tap.response_complete(); tap.finish()
assert shadow.flush(10)
print(shadow._pipeline.helper_pid(), flush=True)
sys.stdin.readline()
shadow.close(5)
"""


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="SCHED_IDLE is Linux's")
def test_the_helper_never_competes_with_the_app(shadow_server: ShadowServer, span_file: Path) -> None:
    core = sorted(os.sched_getaffinity(0))[0]
    parent = subprocess.Popen(
        [sys.executable, "-c", PINNED, shadow_server.url, SETUP, str(core)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert parent.stdout is not None and parent.stdin is not None
        helper = int(parent.stdout.readline())
        # Runs only when a core would otherwise idle: it never preempts the app.
        assert os.sched_getscheduler(helper) == os.SCHED_IDLE
        # The app is pinned to one core: the helper does not share it when there are others.
        others = set(range(os.cpu_count() or 1)) - {core}
        if others:
            assert core not in os.sched_getaffinity(helper)
        parent.stdin.write(b"\n")
        parent.stdin.flush()
        assert parent.wait(20) == 0
    finally:
        parent.kill()
        parent.wait()
        for pipe in (parent.stdin, parent.stdout):
            if pipe is not None:
                pipe.close()
    assert len(spans(span_file)) == 1
