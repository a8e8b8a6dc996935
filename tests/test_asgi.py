"""The ASGI adapter and the engine behind it, driven message by message against a real shadow server."""

from __future__ import annotations

import asyncio
import gzip
import json
import threading
import time
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.trace import SpanKind, StatusCode

from shadow_middleware import Compare, Shadow, ShadowASGIMiddleware, ShadowConfig, ShadowTarget

from .asgi_helpers import drive, http_scope, json_app, run
from .conftest import ShadowServer, Telemetry, free_port, json_reply

BODY = json.dumps({"id": "cust-1", "tenure": 3}).encode()


def make(
    app: Any,
    server: ShadowServer | None,
    telemetry: Telemetry,
    *,
    url: str | None = None,
    target: dict[str, Any] | None = None,
    **config: Any,
) -> ShadowASGIMiddleware:
    target_url = url or (server.url + "/shadow" if server else "http://127.0.0.1:9/x")
    cfg = ShadowConfig(targets=[ShadowTarget("v2", url=target_url, **(target or {}))], **config)
    return ShadowASGIMiddleware(
        app,
        config=cfg,
        tracer_provider=telemetry.tracer_provider,
        meter_provider=telemetry.meter_provider,
    )


def attrs(span: Any) -> dict[str, Any]:
    return dict(span.attributes)


def one_span(mw: ShadowASGIMiddleware, telemetry: Telemetry) -> dict[str, Any]:
    assert mw.shadow.flush(10)
    spans = telemetry.spans()
    assert len(spans) == 1, [s.attributes for s in spans]
    return attrs(spans[0])


def test_match_span_carries_the_contract_attributes(
    shadow_server: ShadowServer, telemetry: Telemetry
) -> None:
    shadow_server.reply = lambda req: json_reply({"prediction": 0.505, "decision": True})
    app = json_app({"prediction": 0.5, "decision": True})
    mw = make(
        app,
        shadow_server,
        telemetry,
        compare=Compare(fields=["/prediction"], abs_tol=0.01),
        correlation_id="json:/id",
    )
    res = run(drive(mw, http_scope(query=b"a=1"), [BODY]))
    assert res.status == 200 and json.loads(res.body) == {"prediction": 0.5, "decision": True}
    a = one_span(mw, telemetry)
    span = telemetry.spans()[0]
    assert span.kind is SpanKind.CLIENT
    assert a["shadow.target"] == "v2"
    assert a["shadow.route"] == "POST /predict"
    assert a["shadow.outcome"] == "match"
    assert a["shadow.primary.status_code"] == 200
    assert a["shadow.candidate.status_code"] == 200
    assert a["http.response.status_code"] == 200
    assert a["http.request.method"] == "POST"
    assert a["url.full"] == f"{shadow_server.url}/shadow?a=REDACTED"  # query values never recorded
    assert a["server.address"] == "127.0.0.1"
    assert a["server.port"] == shadow_server.port
    assert a["shadow.primary.duration_ms"] > 0
    assert a["shadow.candidate.duration_ms"] > 0
    assert a["shadow.diff.count"] == 0
    assert list(a["shadow.diff.paths"]) == []
    assert a["shadow.primary.body.prediction"] == 0.5
    assert a["shadow.candidate.body.prediction"] == 0.505
    assert a["shadow.correlation_id"] == "cust-1"
    assert "error.type" not in a
    # No bodies or headers beyond the contract.
    assert not any("header" in k for k in a)
    assert not any(isinstance(v, str) and "tenure" in v for v in a.values())
    assert mw.shadow.stats() == {
        "match": 1,
        "mismatch": 0,
        "error": 0,
        "timeout": 0,
        "dropped": 0,
        "skipped": 0,
    }
    assert telemetry.counter_points() == {("v2", "POST /predict", "match"): 1}
    (got,) = shadow_server.received
    assert got.body == BODY and got.method == "POST" and got.path == "/shadow?a=1"


@pytest.mark.parametrize(
    ("primary", "candidate", "compare", "outcome", "paths"),
    [
        (
            {"prediction": 0.5},
            {"prediction": 0.6},
            Compare(fields=["/prediction"], abs_tol=0.01),
            "mismatch",
            ["/prediction"],
        ),
        (
            {"prediction": 0.55},
            {"prediction": 0.9},
            Compare(fields=["/prediction"], threshold=0.5),
            "match",
            [],
        ),
        (
            {"prediction": 0.45},
            {"prediction": 0.9},
            Compare(fields=["/prediction"], threshold=0.5),
            "mismatch",
            ["/prediction"],
        ),
        ({"p": 1.0, "ts": 1}, {"p": 1.0, "ts": 2}, Compare(ignore=["/ts"]), "match", []),
        ({"p": 1.0, "ts": 1}, {"p": 1.0, "ts": 2}, Compare(), "mismatch", ["/ts"]),
        ({"score": 0.7}, {"out": {"score": 0.7}}, Compare(fields={"/score": "/out/score"}), "match", []),
        ({"a": [1, 2]}, {"a": [1, 2, 3]}, Compare(), "mismatch", ["/a/2"]),
        ({"p": 100.0}, {"p": 104.0}, Compare(rel_tol=0.05), "match", []),
    ],
)
def test_comparison_outcomes(
    shadow_server: ShadowServer,
    telemetry: Telemetry,
    primary: Any,
    candidate: Any,
    compare: Compare,
    outcome: str,
    paths: list[str],
) -> None:
    shadow_server.reply = lambda req: json_reply(candidate)
    mw = make(json_app(primary), shadow_server, telemetry, compare=compare)
    run(drive(mw, http_scope(), [BODY]))
    a = one_span(mw, telemetry)
    assert a["shadow.outcome"] == outcome
    assert list(a["shadow.diff.paths"]) == paths
    assert a["shadow.diff.count"] == len(paths)


def test_status_difference_is_a_mismatch(shadow_server: ShadowServer, telemetry: Telemetry) -> None:
    shadow_server.reply = lambda req: json_reply({"prediction": 0.5}, status=422)
    mw = make(json_app(), shadow_server, telemetry)
    run(drive(mw, http_scope(), [BODY]))
    a = one_span(mw, telemetry)
    assert a["shadow.outcome"] == "mismatch"
    assert a["shadow.candidate.status_code"] == 422


def test_candidate_5xx_is_an_error(shadow_server: ShadowServer, telemetry: Telemetry) -> None:
    shadow_server.reply = lambda req: json_reply({"detail": "boom"}, status=503)
    mw = make(json_app(), shadow_server, telemetry)
    res = run(drive(mw, http_scope(), [BODY]))
    assert res.status == 200
    a = one_span(mw, telemetry)
    assert a["shadow.outcome"] == "error"
    assert a["error.type"] == "503"
    assert telemetry.spans()[0].status.status_code is StatusCode.ERROR


def test_connection_refused_is_an_error_without_candidate_attributes(telemetry: Telemetry) -> None:
    port = free_port()  # nothing listens there
    mw = make(json_app(), None, telemetry, url=f"http://127.0.0.1:{port}/p")
    res = run(drive(mw, http_scope(), [BODY]))
    assert res.status == 200
    a = one_span(mw, telemetry)
    assert a["shadow.outcome"] == "error"
    assert a["error.type"] and a["error.type"] != "timeout"
    assert "shadow.candidate.status_code" not in a
    assert "shadow.candidate.duration_ms" not in a
    assert telemetry.spans()[0].status.status_code is StatusCode.ERROR


def test_slow_shadow_times_out_and_never_delays_the_response(
    shadow_server: ShadowServer, telemetry: Telemetry
) -> None:
    shadow_server.delay = 1.5
    mw = make(json_app(), shadow_server, telemetry, target={"timeout": 0.3})
    started = time.perf_counter()
    res = run(drive(mw, http_scope(), [BODY]))
    elapsed = time.perf_counter() - started
    assert res.status == 200
    assert elapsed < 0.3, elapsed  # the user never waits for the shadow
    a = one_span(mw, telemetry)
    assert a["shadow.outcome"] == "timeout"
    assert a["error.type"] == "timeout"
    assert mw.shadow.stats()["timeout"] == 1


def test_credentials_are_not_forwarded_and_the_request_is_marked(
    shadow_server: ShadowServer, telemetry: Telemetry
) -> None:
    tracer = telemetry.tracer_provider.get_tracer("test")
    mw = make(json_app(), shadow_server, telemetry, target={"headers": {"X-Candidate-Key": "k2"}})
    headers = [
        ("content-type", "application/json"),
        ("authorization", "Bearer secret"),
        ("cookie", "session=abc"),
        ("x-api-key", "key"),
        ("proxy-authorization", "Basic x"),
        ("x-request-id", "r-1"),
        ("connection", "keep-alive, x-hop"),
        ("x-hop", "hop"),
        ("te", "trailers"),
        ("host", "prod.example"),
        ("content-length", str(len(BODY))),
    ]
    with tracer.start_as_current_span("server") as server_span:
        run(drive(mw, http_scope(headers=headers), [BODY]))
    (got,) = shadow_server.wait_for(1)
    h = got.headers
    for secret in ("authorization", "cookie", "x-api-key", "proxy-authorization"):
        assert secret not in h
    for hop in ("x-hop", "te", "connection"):
        assert h.get(hop) in (None, "keep-alive"), hop
    assert h["x-request-id"] == "r-1"
    assert h["x-shadow-request"] == "v2"
    assert h["x-candidate-key"] == "k2"
    assert h["host"] == f"127.0.0.1:{shadow_server.port}"
    assert h["content-length"] == str(len(BODY))
    assert mw.shadow.flush(5)
    span = telemetry.spans()[0]
    ctx = span.get_span_context()
    assert h["traceparent"].split("-")[1] == format(ctx.trace_id, "032x")
    assert h["traceparent"].split("-")[2] == format(ctx.span_id, "016x")
    # Parent: the span current when the request arrived.
    assert span.parent is not None
    assert span.parent.span_id == server_span.get_span_context().span_id
    assert "Bearer" not in json.dumps(attrs(span), default=str)


def test_credentials_forwarded_when_opted_in(shadow_server: ShadowServer, telemetry: Telemetry) -> None:
    mw = make(json_app(), shadow_server, telemetry, drop_headers=())
    headers = [("authorization", "Bearer secret"), ("cookie", "a=b")]
    run(drive(mw, http_scope(headers=headers), [BODY]))
    (got,) = shadow_server.wait_for(1)
    assert got.headers["authorization"] == "Bearer secret"
    assert got.headers["cookie"] == "a=b"


def test_parent_extracted_from_incoming_traceparent(
    shadow_server: ShadowServer, telemetry: Telemetry
) -> None:
    mw = make(json_app(), shadow_server, telemetry)
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    headers = [("traceparent", f"00-{trace_id}-00f067aa0ba902b7-01")]
    run(drive(mw, http_scope(headers=headers), [BODY]))
    assert mw.shadow.flush(5)
    span = telemetry.spans()[0]
    assert format(span.context.trace_id, "032x") == trace_id
    assert span.parent is not None and format(span.parent.span_id, "016x") == "00f067aa0ba902b7"
    (got,) = shadow_server.wait_for(1)
    assert got.headers["traceparent"].split("-")[1] == trace_id
    assert got.headers["traceparent"].split("-")[2] != "00f067aa0ba902b7"


def test_shadow_requests_are_never_shadowed_again(shadow_server: ShadowServer, telemetry: Telemetry) -> None:
    mw = make(json_app(), shadow_server, telemetry)
    res = run(drive(mw, http_scope(headers=[("x-shadow-request", "v1")]), [BODY]))
    assert res.status == 200
    assert mw.shadow.flush(5)
    time.sleep(0.1)
    assert shadow_server.received == []
    assert sum(mw.shadow.stats().values()) == 0


def test_redirects_are_not_followed(shadow_server: ShadowServer, telemetry: Telemetry) -> None:
    shadow_server.reply = lambda req: (302, [("location", "/elsewhere")], b"")
    mw = make(json_app(), shadow_server, telemetry)
    run(drive(mw, http_scope(), [BODY]))
    a = one_span(mw, telemetry)
    assert a["shadow.outcome"] == "mismatch"
    assert a["shadow.candidate.status_code"] == 302
    time.sleep(0.1)
    assert [r.path for r in shadow_server.received] == ["/shadow"]


def test_routes_and_methods(shadow_server: ShadowServer, telemetry: Telemetry) -> None:
    mw = make(json_app(), shadow_server, telemetry, routes=["POST /models/{name}/predict", "* /any"])
    run(drive(mw, http_scope(path="/models/churn/predict"), [BODY]))
    run(drive(mw, http_scope(method="PUT", path="/any"), [BODY]))
    run(drive(mw, http_scope(method="GET", path="/models/churn/predict"), [b""]))  # wrong method
    run(drive(mw, http_scope(path="/models/churn/other"), [BODY]))  # not a route
    run(drive(mw, http_scope(path="/predict"), [BODY]))  # not configured here
    assert mw.shadow.flush(5)
    routes = sorted(attrs(s)["shadow.route"] for s in telemetry.spans())
    assert routes == ["* /any", "POST /models/{name}/predict"]
    assert len(shadow_server.received) == 2


def test_body_over_cap_is_skipped_and_the_app_gets_every_byte(
    shadow_server: ShadowServer, telemetry: Telemetry
) -> None:
    app = json_app()
    mw = make(app, shadow_server, telemetry, max_body_bytes=1000)
    chunks = [bytes([i % 251]) * 300 for i in range(10)]  # 3000 bytes, streamed, no content-length
    res = run(drive(mw, http_scope(), chunks))
    assert res.status == 200
    assert app.bodies == [b"".join(chunks)]
    a = one_span(mw, telemetry)
    assert a["shadow.outcome"] == "skipped"
    assert a["shadow.reason"] == "body_too_large"
    # Known up front from content-length: skipped without copying anything.
    scope = http_scope(headers=[("content-length", "3000")])
    run(drive(mw, scope, chunks))
    assert app.bodies[1] == b"".join(chunks)
    assert mw.shadow.flush(5)
    assert mw.shadow.stats()["skipped"] == 2
    assert shadow_server.received == []


def test_streamed_request_body_reaches_the_shadow_whole(
    shadow_server: ShadowServer, telemetry: Telemetry
) -> None:
    app = json_app()
    mw = make(app, shadow_server, telemetry)
    chunks = [b'{"id": "c', b'-9", "x"', b": 1}"]
    run(drive(mw, http_scope(), chunks))
    (got,) = shadow_server.wait_for(1)
    assert got.body == b"".join(chunks) == app.bodies[0]


def test_body_not_read_by_the_app_is_skipped(shadow_server: ShadowServer, telemetry: Telemetry) -> None:
    mw = make(json_app(read_body=False), shadow_server, telemetry)
    res = run(drive(mw, http_scope(), [BODY]))
    assert res.status == 200
    a = one_span(mw, telemetry)
    assert a["shadow.outcome"] == "skipped"
    assert a["shadow.reason"] == "body_not_read"


def test_app_exception_propagates_unchanged(shadow_server: ShadowServer, telemetry: Telemetry) -> None:
    boom = RuntimeError("model exploded")
    mw = make(json_app(raise_exc=boom), shadow_server, telemetry)
    with pytest.raises(RuntimeError) as info:
        run(drive(mw, http_scope(), [BODY]))
    assert info.value is boom
    a = one_span(mw, telemetry)
    assert a["shadow.outcome"] == "skipped"
    assert a["shadow.reason"] == "primary_exception"


def test_disconnect_mid_body_reaches_the_app(shadow_server: ShadowServer, telemetry: Telemetry) -> None:
    app = json_app()
    mw = make(app, shadow_server, telemetry)
    res = run(drive(mw, http_scope(), [b'{"a":', b"1}"], disconnect_after=1))
    assert res.status is None  # the app returned on disconnect
    a = one_span(mw, telemetry)
    assert a["shadow.outcome"] == "skipped"
    assert a["shadow.reason"] == "client_disconnect"
    assert shadow_server.received == []


def test_disconnect_after_body_reaches_a_watching_app(
    shadow_server: ShadowServer, telemetry: Telemetry
) -> None:
    seen: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        while (await receive()).get("more_body"):
            pass
        # Watch for the client leaving, as streaming endpoints do.
        msg = await asyncio.wait_for(receive(), 2)
        seen.append(msg["type"])

    mw = make(app, shadow_server, telemetry)
    run(drive(mw, http_scope(), [BODY], disconnect_after=1))
    assert seen == ["http.disconnect"]
    a = one_span(mw, telemetry)
    assert a["shadow.outcome"] == "skipped"
    assert a["shadow.reason"] == "client_disconnect"
    # The body was complete, so the shadow call did go out.
    assert len(shadow_server.wait_for(1)) == 1


def test_streaming_response_streams_and_is_compared_whole(
    shadow_server: ShadowServer, telemetry: Telemetry
) -> None:
    shadow_server.reply = lambda req: json_reply({"prediction": 0.5, "n": 2})
    parts = [b'{"prediction"', b": 0.5, ", b'"n": 2}']
    mw = make(json_app(chunks=parts), shadow_server, telemetry)
    res = run(drive(mw, http_scope(), [BODY]))
    assert res.body_messages == parts
    assert one_span(mw, telemetry)["shadow.outcome"] == "match"


def test_gzip_candidate_is_decoded(shadow_server: ShadowServer, telemetry: Telemetry) -> None:
    payload = gzip.compress(json.dumps({"prediction": 0.5}).encode())
    shadow_server.reply = lambda req: (200, [("content-encoding", "gzip")], payload)
    mw = make(json_app(), shadow_server, telemetry)
    run(drive(mw, http_scope(), [BODY]))
    assert one_span(mw, telemetry)["shadow.outcome"] == "match"


def test_gzip_bomb_is_capped(shadow_server: ShadowServer, telemetry: Telemetry) -> None:
    bomb = gzip.compress(b"[" + b"0," * 20_000_000 + b"0]", compresslevel=9)
    assert len(bomb) < 200_000
    shadow_server.reply = lambda req: (200, [("content-encoding", "gzip")], bomb)
    mw = make(json_app(), shadow_server, telemetry, max_response_bytes=64_000)
    run(drive(mw, http_scope(), [BODY]))
    a = one_span(mw, telemetry)
    # Production's JSON parses, the capped candidate's cannot: a mismatch, not an OOM.
    assert a["shadow.outcome"] == "mismatch"


def test_huge_candidate_body_is_read_only_up_to_the_cap(
    shadow_server: ShadowServer, telemetry: Telemetry
) -> None:
    shadow_server.reply = lambda req: (200, [], b"x" * 5_000_000)
    mw = make(json_app(), shadow_server, telemetry, max_response_bytes=10_000)
    run(drive(mw, http_scope(), [BODY]))
    a = one_span(mw, telemetry)
    assert a["shadow.outcome"] == "mismatch"
    assert a["shadow.candidate.truncated"] is True


def test_queue_bound_drops_and_counts(shadow_server: ShadowServer, telemetry: Telemetry) -> None:
    shadow_server.delay = 0.5
    mw = make(json_app(), shadow_server, telemetry, target={"max_concurrency": 1}, max_queue=1)

    async def burst() -> None:
        await asyncio.gather(*(drive(mw, http_scope(), [BODY]) for _ in range(6)))

    run(burst())
    assert mw.shadow.flush(10)
    stats = mw.shadow.stats()
    assert stats["dropped"] == 4, stats
    assert stats["match"] == 2, stats
    dropped = [attrs(s) for s in telemetry.spans() if attrs(s)["shadow.outcome"] == "dropped"]
    assert {a["shadow.reason"] for a in dropped} == {"queue_full"}
    assert len(shadow_server.received) == 2


def test_sample_rate_zero_is_not_eligible(shadow_server: ShadowServer, telemetry: Telemetry) -> None:
    mw = make(json_app(), shadow_server, telemetry, target={"sample_rate": 0.0})
    run(drive(mw, http_scope(), [BODY]))
    assert mw.shadow.flush(5)
    assert sum(mw.shadow.stats().values()) == 0 and telemetry.spans() == []


def test_sample_key_gives_the_same_decision_per_key(
    shadow_server: ShadowServer, telemetry: Telemetry
) -> None:
    mw = make(
        json_app(),
        shadow_server,
        telemetry,
        target={"sample_rate": 0.3},
        sample_key="header:x-customer",
    )
    customers = [f"cust-{i}" for i in range(200)]

    async def traffic() -> None:
        for _ in range(2):
            for c in customers:
                await drive(mw, http_scope(headers=[("x-customer", c)]), [BODY])

    run(traffic())
    assert mw.shadow.flush(10)
    got = [r.headers.get("x-customer") for r in shadow_server.received]
    chosen = set(got)
    # Every chosen customer was shadowed both times, the others never.
    assert sorted(got) == sorted([c for c in customers if c in chosen] * 2)
    assert 0.15 < len(chosen) / len(customers) < 0.45


def test_json_sample_key_is_read_from_the_body(shadow_server: ShadowServer, telemetry: Telemetry) -> None:
    mw = make(json_app(), shadow_server, telemetry, target={"sample_rate": 0.5}, sample_key="json:/id")

    async def traffic() -> None:
        for i in range(100):
            body = json.dumps({"id": f"c{i % 20}"}).encode()
            await drive(mw, http_scope(), [body])

    run(traffic())
    assert mw.shadow.flush(10)
    per_key: dict[str, int] = {}
    for r in shadow_server.received:
        key = json.loads(r.body)["id"]
        per_key[key] = per_key.get(key, 0) + 1
    assert per_key and all(n == 5 for n in per_key.values()), per_key
    assert 3 <= len(per_key) <= 17


def test_non_http_scopes_pass_through_untouched(telemetry: Telemetry) -> None:
    seen: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append((scope["type"], receive, send))

    mw = make(app, None, telemetry)

    async def receive() -> dict[str, Any]:
        return {"type": "websocket.connect"}

    async def send(message: Any) -> None:
        pass

    run(mw({"type": "websocket", "path": "/predict"}, receive, send))
    assert seen == [("websocket", receive, send)]


def test_lifespan_shutdown_closes_an_owned_engine(shadow_server: ShadowServer, telemetry: Telemetry) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        else:
            await json_app()(scope, receive, send)

    mw = make(app, shadow_server, telemetry)
    sent: list[str] = []

    async def lifespan() -> None:
        messages = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]

        async def receive() -> dict[str, Any]:
            await asyncio.sleep(0)
            return messages.pop(0)

        async def send(message: Any) -> None:
            sent.append(message["type"])

        await drive(mw, http_scope(), [BODY])
        await mw({"type": "lifespan"}, receive, send)

    run(lifespan())
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert mw.shadow.stats()["match"] == 1  # flushed before shutdown completed
    run(drive(mw, http_scope(), [BODY]))  # closed: passes through unshadowed
    assert len(shadow_server.received) == 1


def test_shared_engine_is_not_closed_by_lifespan_and_close_is_idempotent(
    shadow_server: ShadowServer, telemetry: Telemetry
) -> None:
    cfg = ShadowConfig(targets=[ShadowTarget("v2", url=shadow_server.url + "/s")])
    engine = Shadow(cfg, tracer_provider=telemetry.tracer_provider, meter_provider=telemetry.meter_provider)
    first = ShadowASGIMiddleware(json_app(), shadow=engine)
    second = ShadowASGIMiddleware(json_app(), shadow=engine)
    assert first.shadow is second.shadow is engine
    run(drive(first, http_scope(), [BODY]))
    run(drive(second, http_scope(), [BODY]))
    assert engine.flush(5)
    assert engine.stats()["match"] == 2
    engine.close()
    engine.close()
    res = run(drive(first, http_scope(), [BODY]))
    assert res.status == 200
    assert len(shadow_server.received) == 2


def test_flush_is_callable_from_other_threads(shadow_server: ShadowServer, telemetry: Telemetry) -> None:
    shadow_server.delay = 0.2
    mw = make(json_app(), shadow_server, telemetry)
    run(drive(mw, http_scope(), [BODY]))
    results: list[bool] = []
    threads = [threading.Thread(target=lambda: results.append(mw.shadow.flush(5))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [True, True, True]
    assert mw.shadow.stats()["match"] == 1


def test_flush_times_out_with_false(shadow_server: ShadowServer, telemetry: Telemetry) -> None:
    shadow_server.delay = 1.0
    mw = make(json_app(), shadow_server, telemetry)
    run(drive(mw, http_scope(), [BODY]))
    assert mw.shadow.flush(0.1) is False
    assert mw.shadow.flush(5) is True


def test_middleware_needs_exactly_one_of_shadow_and_config(
    telemetry: Telemetry, monkeypatch: pytest.MonkeyPatch
) -> None:
    # ASGI: the error waits for the server's startup (see test_failsafe.py), never a request.
    monkeypatch.delenv("SHADOW_CONFIG", raising=False)
    monkeypatch.delenv("SHADOW_TARGETS", raising=False)
    cfg = ShadowConfig(targets=[ShadowTarget("v2", url="http://127.0.0.1:9/x")])
    both = ShadowASGIMiddleware(json_app(), shadow=Shadow(cfg), config=cfg)
    assert (
        both.shadow is None
        and both.config_error is not None
        and "shadow: give exactly one" in both.config_error
    )
    neither = ShadowASGIMiddleware(json_app(), strict=True)
    assert neither.shadow is None and neither.config_error is not None
    assert "config: no configuration" in neither.config_error
    off = ShadowASGIMiddleware(json_app())  # not strict: shadowing off, the app serving (issue 17)
    assert off.shadow is not None and not off.shadow.enabled and off.config_error is None
    assert "config: no configuration" in off.shadow.config_errors[0]


def test_disabled_config_is_a_pure_pass_through(shadow_server: ShadowServer, telemetry: Telemetry) -> None:
    app = json_app()
    mw = make(app, shadow_server, telemetry, enabled=False)
    res = run(drive(mw, http_scope(), [BODY]))
    assert res.status == 200 and app.bodies == [BODY]
    assert mw.shadow.flush(5)
    assert shadow_server.received == [] and telemetry.spans() == []


def test_internal_errors_are_contained(
    shadow_server: ShadowServer, telemetry: Telemetry, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shadow_middleware._judge as engine_mod

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("bug in our comparison")

    monkeypatch.setattr(engine_mod, "compare_bodies", broken)
    mw = make(json_app(), shadow_server, telemetry)
    res = run(drive(mw, http_scope(), [BODY]))
    assert res.status == 200 and json.loads(res.body) == {"prediction": 0.5}
    a = one_span(mw, telemetry)
    assert a["shadow.outcome"] == "skipped" and a["shadow.reason"] == "internal_error"
    assert mw.shadow.internal_errors == 1


def test_no_current_span_leaks_into_the_app(shadow_server: ShadowServer, telemetry: Telemetry) -> None:
    seen: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(trace.get_current_span())
        await json_app()(scope, receive, send)

    mw = make(app, shadow_server, telemetry)
    run(drive(mw, http_scope(), [BODY]))
    assert seen == [trace.INVALID_SPAN]


def test_circuit_breaker_pauses_a_failing_target_and_probes_it_again(
    shadow_server: ShadowServer, telemetry: Telemetry
) -> None:
    shadow_server.reply = lambda req: json_reply({"detail": "down"}, status=503)
    mw = make(json_app(), shadow_server, telemetry, circuit_failures=3, circuit_cooldown=0.3)

    def one() -> None:
        run(drive(mw, http_scope(), [BODY]))
        assert mw.shadow.flush(5)

    for _ in range(8):
        one()
    stats = mw.shadow.stats()
    assert stats["error"] == 3 and stats["dropped"] == 5, stats
    assert len(shadow_server.received) == 3  # paused: not attempted
    reasons = {
        attrs(s).get("shadow.reason") for s in telemetry.spans() if attrs(s)["shadow.outcome"] == "dropped"
    }
    assert reasons == {"circuit_open"}
    time.sleep(0.35)
    one()  # the probe: still failing, so the pause doubles
    assert len(shadow_server.received) == 4
    one()
    assert len(shadow_server.received) == 4
    shadow_server.reply = lambda req: json_reply({"prediction": 0.5})
    time.sleep(0.65)
    for _ in range(5):
        one()  # probe succeeds, the circuit closes, everything flows again
    assert len(shadow_server.received) == 9
    assert mw.shadow.stats()["match"] == 5


def test_skipped_and_dropped_spans_are_recorded_off_the_request_thread(
    shadow_server: ShadowServer, telemetry: Telemetry
) -> None:
    from opentelemetry.sdk.trace import SpanProcessor

    ended_on: list[str] = []

    class ThreadRecorder(SpanProcessor):
        def on_end(self, span: Any) -> None:
            ended_on.append(threading.current_thread().name)

    telemetry.tracer_provider.add_span_processor(ThreadRecorder())
    mw = make(json_app(read_body=False), shadow_server, telemetry)
    run(drive(mw, http_scope(), [BODY]))  # skipped: body_not_read
    run(drive(mw, http_scope(headers=[("content-length", "99999999")]), [BODY]))  # skipped: too large
    assert mw.shadow.flush(5)
    assert [attrs(s)["shadow.reason"] for s in telemetry.spans()] == ["body_not_read", "body_too_large"]
    # An exporter that blocks (SimpleSpanProcessor + network) must never block the user's request.
    assert ended_on == ["shadow-dispatcher", "shadow-dispatcher"]
