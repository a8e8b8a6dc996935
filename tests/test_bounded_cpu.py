"""CPU bounded (issue 19): refusals cost next to nothing (coalesced spans), a CPU budget for
shadow work in the app process, the helper never competes with the app."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from shadow_middleware import Shadow, ShadowConfig, ShadowTarget
from shadow_middleware.report.aggregate import ReportOptions, aggregate
from shadow_middleware.report.spans import read_shadow_spans

from .conftest import ShadowServer, Telemetry
from .test_report import span as otlp_span
from .test_report import write_spans

BODY = json.dumps({"id": "cust-1"}).encode()
ANSWER = json.dumps({"prediction": 0.5}).encode()
COALESCED = "shadow.coalesced_count"


def exchange(shadow: Shadow, body: bytes = BODY) -> None:
    route = shadow.match("POST", "/predict")
    assert route is not None
    tap = shadow.begin(route, "POST", "/predict", "", [("content-type", "application/json")], len(body))
    if tap is None:
        return
    tap.feed(body)
    tap.body_complete()
    tap.response_start(200, "")
    tap.response_body(ANSWER)
    tap.response_complete()
    tap.finish()


def attrs_of(telemetry: Telemetry) -> list[dict[str, Any]]:
    return [dict(s.attributes or {}) for s in telemetry.spans()]


def test_refusals_record_coalesced_spans_with_exact_counts(
    shadow_server: ShadowServer, telemetry: Telemetry, tmp_path: Path
) -> None:
    shadow_server.delay = 1.0  # one call in flight, no queue: every other request is refused
    cfg = ShadowConfig(
        targets=[ShadowTarget("v2", url=shadow_server.url, max_concurrency=1, timeout=5.0)], max_queue=0
    )
    shadow = Shadow(cfg, tracer_provider=telemetry.tracer_provider, meter_provider=telemetry.meter_provider)
    try:
        for _ in range(40):
            exchange(shadow)
        assert shadow.flush(10)
        stats = shadow.stats()
        assert stats["dropped"] == 39 and stats["match"] == 1
        spans = attrs_of(telemetry)
        dropped = [a for a in spans if a["shadow.outcome"] == "dropped"]
        # No span per refusal: one per (target, route, reason) and interval, carrying the count.
        assert 1 <= len(dropped) <= 2, len(dropped)
        assert all(a["shadow.reason"] == "queue_full" for a in dropped)
        assert sum(a[COALESCED] for a in dropped) == 39
        assert all(COALESCED not in a for a in spans if a["shadow.outcome"] != "dropped")
        # The metric stays exact, per outcome.
        points = telemetry.counter_points()
        assert points[("v2", "POST /predict", "dropped")] == 39
        # ... and so does the report, which counts a coalesced span as its count.
        lines = [
            otlp_span(
                i, a["shadow.outcome"], target="v2", **{k: v for k, v in a.items() if k != "shadow.outcome"}
            )
            for i, a in enumerate(spans)
        ]
        agg = aggregate(read_shadow_spans([write_spans(tmp_path / "s.jsonl", lines)]), ReportOptions())
        (group,) = agg.groups.values()
        assert group.outcomes["dropped"] == 39 and group.outcomes["match"] == 1
        assert group.reasons["queue_full"] == 39
    finally:
        shadow.close(5)


def test_a_burst_of_refusals_keeps_the_span_count_flat(
    shadow_server: ShadowServer, telemetry: Telemetry
) -> None:
    shadow_server.delay = 2.0
    cfg = ShadowConfig(
        targets=[ShadowTarget("v2", url=shadow_server.url, max_concurrency=1, timeout=5.0)], max_queue=0
    )
    shadow = Shadow(cfg, tracer_provider=telemetry.tracer_provider, meter_provider=telemetry.meter_provider)
    try:
        started = time.perf_counter()
        for _ in range(2000):
            exchange(shadow)
        elapsed = time.perf_counter() - started
        assert shadow.flush(10)
        dropped = [a for a in attrs_of(telemetry) if a["shadow.outcome"] == "dropped"]
        assert sum(a[COALESCED] for a in dropped) == shadow.stats()["dropped"] == 1999
        assert len(dropped) <= 2 + int(elapsed)  # one per second at most
    finally:
        shadow.close(5)


def _drive(shadow: Shadow, seconds: float) -> int:
    sent = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        exchange(shadow, json.dumps({"id": f"r{sent}"}).encode())
        sent += 1
        time.sleep(0.002)
    return sent


@pytest.mark.parametrize("mode", ["thread", "process"])
def test_over_the_cpu_budget_new_shadows_are_refused_and_resume_under_it(
    mode: str,
    shadow_server: ShadowServer,
    telemetry: Telemetry,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    span_file = tmp_path / "spans.jsonl"
    monkeypatch.setenv("SPAN_FILE", str(span_file))
    cfg = ShadowConfig(
        targets=[ShadowTarget("v2", url=shadow_server.url)],
        cpu_budget=0.0005,  # a twentieth of a percent of a core: every shadow is over it
        isolation=mode,
        telemetry_setup="tests.apps.spanfile:helper_telemetry" if mode == "process" else None,
    )
    if mode == "thread":
        shadow = Shadow(
            cfg, tracer_provider=telemetry.tracer_provider, meter_provider=telemetry.meter_provider
        )
    else:
        shadow = Shadow(cfg)
    try:
        assert shadow.cpu_budget == 0.0005
        sent = _drive(shadow, 1.5)
        assert shadow.flush(10)
        stats = shadow.stats()
        assert sum(stats.values()) == sent  # exact: every request one outcome
        assert stats["dropped"] > sent // 2, stats  # (the meter is per process: maybe all of them)
        # Live: a budget raised lets every new shadow through again.
        shadow.set_cpu_budget(64.0)
        more = _drive(shadow, 0.5)
        assert shadow.flush(10)
        after = shadow.stats()
        assert after["dropped"] == stats["dropped"] and after["match"] == stats["match"] + more, after
        if mode == "thread":
            spans = attrs_of(telemetry)
        else:
            spans = [json.loads(line)["attributes"] for line in span_file.read_text().splitlines()]
        refused = [a for a in spans if a.get("shadow.reason") == "cpu_budget"]
        assert {a["shadow.outcome"] for a in refused} == {"dropped"}
        assert sum(a[COALESCED] for a in refused) == stats["dropped"]
        with pytest.raises(ValueError, match="cpu_budget"):
            shadow.set_cpu_budget(-0.1)
    finally:
        shadow.close(5)


def test_the_request_counter_reaches_the_sdk_once_per_interval_not_per_exchange(
    shadow_server: ShadowServer, telemetry: Telemetry
) -> None:
    shadow = Shadow(
        ShadowConfig(targets=[ShadowTarget("v2", url=shadow_server.url)], cpu_budget=0.0),
        tracer_provider=telemetry.tracer_provider,
        meter_provider=telemetry.meter_provider,
    )
    counter = shadow._telemetry._requests
    calls: list[int] = []

    class Counting:
        def add(self, amount: int, attributes: Any = None) -> None:
            calls.append(amount)
            counter.add(amount, attributes)

    shadow._telemetry._requests = Counting()  # type: ignore[assignment]
    try:
        for i in range(40):
            exchange(shadow, json.dumps({"id": f"r{i}"}).encode())
        assert shadow.flush(10)
        assert shadow.stats()["match"] == 40
        # One SDK measurement per (target, route, outcome) and interval: ~25 µs each saved.
        assert sum(calls) == 40 and len(calls) <= 3, calls
        assert telemetry.counter_points()[("v2", "POST /predict", "match")] == 40
    finally:
        shadow.close(5)


def test_a_full_queue_refuses_before_the_copy(shadow_server: ShadowServer, telemetry: Telemetry) -> None:
    shadow_server.delay = 1.0
    cfg = ShadowConfig(
        targets=[ShadowTarget("v2", url=shadow_server.url, max_concurrency=1, timeout=5.0)],
        max_queue=0,
        cpu_budget=0.0,
    )
    shadow = Shadow(cfg, tracer_provider=telemetry.tracer_provider, meter_provider=telemetry.meter_provider)
    try:
        exchange(shadow)  # takes the one slot for a second
        route = shadow.match("POST", "/predict")
        assert route is not None
        # Refused in begin(): no tap, nothing copied — and counted, with its reason.
        assert shadow.begin(route, "POST", "/predict", "", [], len(BODY)) is None
        assert shadow.stats()["dropped"] == 1
        assert shadow.flush(10)
        dropped = [a for a in attrs_of(telemetry) if a["shadow.outcome"] == "dropped"]
        assert [(a["shadow.reason"], a[COALESCED]) for a in dropped] == [("queue_full", 1)]
    finally:
        shadow.close(5)
