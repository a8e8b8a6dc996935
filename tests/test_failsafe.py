"""Fail-safe in the first hour (issue 11): a new user's mistakes never hurt production.

The configuration mistakes run against a real uvicorn process serving an app written the
way a user writes one (tests/apps/user_app.py); the transparency cases run in process.
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
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

import anyio
import pytest

from shadow_middleware import Shadow, ShadowASGIMiddleware, ShadowConfig, ShadowTarget, ShadowWSGIMiddleware

from .asgi_helpers import drive, http_scope, json_app, run
from .conftest import ShadowServer, Telemetry, json_reply
from .servers import BIN, ROOT, free_port, request, wait_listening

GOOD_TOML = """
routes = ["POST /predict"]
drain_timeout = 10.0

[[targets]]
name = "v2"
url = "{url}"
"""


def uvicorn(env: dict[str, str], *extra: str) -> tuple[int, subprocess.Popen[bytes], Path]:
    port = free_port()
    log = Path(os.environ.get("TMPDIR", "/tmp")) / f"user-app-{port}.log"
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SHADOW_")}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                str(BIN / "uvicorn"),
                "tests.apps.user_app:app",
                "--port",
                str(port),
                "--log-level",
                "info",
                *extra,
            ],
            cwd=ROOT,
            env={**clean, "PYTHONPATH": str(ROOT), **env},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return port, proc, log


def stop(proc: subprocess.Popen[bytes]) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


@pytest.fixture
def spans(tmp_path: Path) -> Path:
    return tmp_path / "spans.jsonl"


def shadow_spans(path: Path) -> list[dict[str, Any]]:
    out = []
    for line in path.read_text().splitlines() if path.exists() else []:
        for rs in json.loads(line)["resourceSpans"]:
            for ss in rs["scopeSpans"]:
                out += [s for s in ss["spans"] if s["name"].startswith("shadow ")]
    return out


# ---- 1. a configuration mistake never reaches a request ---------------------------------


MISTAKES = [
    ("typo_in_file", "timout: unknown key (did you mean 'timeout'?)"),
    ("config_forgotten", "set SHADOW_CONFIG to a TOML file, or declare targets in SHADOW_TARGETS"),
    ("typo_in_target_variable", "SHADOW_TARGET_V2_SAMPLE_RATEE: unknown variable"),
    ("kill_switch_typo", "SHADOW_ENABLE: unknown variable (did you mean 'SHADOW_ENABLED'?)"),
    ("not_toml", "line 1, column 6: invalid TOML"),
]


def mistaken_env(case: str, tmp_path: Path, spans: Path, server: ShadowServer) -> dict[str, str]:
    env = {"USER_SPAN_FILE": str(spans)}
    toml = tmp_path / "shadow.toml"
    toml.write_text(GOOD_TOML.format(url=server.url + "/s"))
    if case == "typo_in_file":
        toml.write_text(GOOD_TOML.format(url=server.url + "/s") + "timout = 2.0\n")
        env["SHADOW_CONFIG"] = str(toml)
    elif case == "typo_in_target_variable":
        env["SHADOW_CONFIG"] = str(toml)
        env["SHADOW_TARGET_V2_SAMPLE_RATEE"] = "0.5"
    elif case == "kill_switch_typo":  # typed mid-incident: it must not stop a restart
        env["SHADOW_CONFIG"] = str(toml)
        env["SHADOW_ENABLE"] = "0"
    elif case == "not_toml":
        toml.write_text("this is not TOML at all [")
        env["SHADOW_CONFIG"] = str(toml)
    return env


@pytest.mark.parametrize(("case", "expected"), MISTAKES)
def test_a_configuration_mistake_leaves_the_app_serving_with_shadowing_off(
    case: str, expected: str, tmp_path: Path, spans: Path, shadow_server: ShadowServer
) -> None:
    env = mistaken_env(case, tmp_path, spans, shadow_server)
    port, proc, log = uvicorn(env, "--workers", "2")
    try:
        wait_listening(port, proc)
        for _ in range(12):
            status, _, body = request(port, "POST", "/predict", b"x" * 100)
            assert (status, json.loads(body)) == (200, {"score": 0.1})
            assert request(port, "GET", "/health")[0] == 200
    finally:
        stop(proc)
    output = log.read_text()
    assert "Application startup failed" not in output and "Traceback" not in output, output
    # One ERROR per worker process, naming the mistake and what to do.
    assert output.count("shadow_middleware configuration error") == 2, output
    assert output.count(expected) == 2, output
    assert "shadowing is OFF" in output and "check-config" in output and "SHADOW_STRICT=1" in output
    assert shadow_server.received == []


@pytest.mark.parametrize(("case", "expected"), MISTAKES[:3])
def test_strict_mode_fails_the_startup_loudly(
    case: str, expected: str, tmp_path: Path, spans: Path, shadow_server: ShadowServer
) -> None:
    env = {**mistaken_env(case, tmp_path, spans, shadow_server), "SHADOW_STRICT": "1"}
    _, proc, log = uvicorn(env)
    try:
        code = proc.wait(timeout=30)
    finally:
        stop(proc)
    output = log.read_text()
    assert code != 0, output
    assert expected in output, output
    assert "lifespan' protocol appears unsupported" not in output


def test_the_stats_endpoint_shows_the_configuration_mistake(
    tmp_path: Path, spans: Path, shadow_server: ShadowServer
) -> None:
    env = {**mistaken_env("typo_in_file", tmp_path, spans, shadow_server), "USER_STATS": "1"}
    port, proc, log = uvicorn(env)
    try:
        wait_listening(port, proc)
        assert request(port, "POST", "/predict", b"x")[0] == 200
        status, _, body = request(port, "GET", "/internal/shadow/")
    finally:
        stop(proc)
    doc = json.loads(body)
    assert status == 200 and doc["enabled"] is False, doc
    assert len(doc["config_errors"]) == 1 and "timout: unknown key" in doc["config_errors"][0], doc
    assert doc["outcomes"]["config_errors"] == 1
    assert log.read_text().count("shadow_middleware configuration error") == 1


def test_uvicorn_warns_once_per_worker_about_a_route_the_app_lacks(
    tmp_path: Path, spans: Path, shadow_server: ShadowServer
) -> None:
    toml = tmp_path / "shadow.toml"
    toml.write_text(
        GOOD_TOML.format(url=shadow_server.url + "/s").replace(
            'routes = ["POST /predict"]', 'routes = ["POST /predict", "POST /predict/", "GET /healthz"]'
        )
    )
    port, proc, log = uvicorn({"USER_SPAN_FILE": str(spans), "SHADOW_CONFIG": str(toml)}, "--workers", "2")
    try:
        wait_listening(port, proc)
        assert request(port, "POST", "/predict", b"x")[0] == 200
    finally:
        stop(proc)
    output = log.read_text()
    assert output.count("matches no route of the app") == 4, output  # two routes, two workers
    assert output.count("the route 'POST /predict/' matches no route") == 2
    assert output.count("'GET /healthz' matches no route of the app (the app's routes), so it is never") == 2
    assert "closest route it has is 'GET /health'" in output
    assert "the route 'POST /predict' matches" not in output


def gunicorn_flask(env: dict[str, str], *extra: str) -> tuple[int, subprocess.Popen[bytes], Path]:
    port = free_port()
    log = Path(os.environ.get("TMPDIR", "/tmp")) / f"flask-user-app-{port}.log"
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SHADOW_")}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                str(BIN / "gunicorn"),
                "tests.apps.flask_user_app:app",
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                "2",
                *extra,
            ],
            cwd=ROOT,
            env={**clean, "PYTHONPATH": str(ROOT), **env},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return port, proc, log


@pytest.mark.parametrize("preload", [True, False], ids=["preload", "no-preload"])
def test_gunicorn_serves_a_flask_app_with_a_configuration_mistake(
    preload: bool, tmp_path: Path, spans: Path, shadow_server: ShadowServer
) -> None:
    env = mistaken_env("typo_in_file", tmp_path, spans, shadow_server)
    port, proc, log = gunicorn_flask(env, *(["--preload"] if preload else []))
    try:
        wait_listening(port, proc)
        for _ in range(6):
            assert (
                request(port, "POST", "/api/predict", b'{"id": 1}', {"content-type": "application/json"})[0]
                == 200
            )
        status, _, body = request(port, "GET", "/internal/shadow")
    finally:
        stop(proc)
    output = log.read_text()
    assert "Worker failed to boot" not in output and "Traceback" not in output, output
    # Once per process that read the configuration: the master with --preload (its forks
    # inherit the engine), else each worker.
    assert output.count("shadow_middleware configuration error") == (1 if preload else 2), output
    doc = json.loads(body)
    assert status == 200 and doc["stats"]["config_errors"] == 1, doc
    assert "timout: unknown key" in doc["errors"][0]
    assert shadow_server.received == []


def test_gunicorn_strict_mode_fails_the_boot(
    tmp_path: Path, spans: Path, shadow_server: ShadowServer
) -> None:
    env = {**mistaken_env("typo_in_file", tmp_path, spans, shadow_server), "SHADOW_STRICT": "1"}
    _, proc, log = gunicorn_flask(env, "--preload")
    try:
        code = proc.wait(timeout=30)
    finally:
        stop(proc)
    assert code != 0 and "timout: unknown key" in log.read_text()


def test_without_lifespan_a_configuration_mistake_passes_every_request_through(
    tmp_path: Path, spans: Path, shadow_server: ShadowServer
) -> None:
    toml = tmp_path / "shadow.toml"
    toml.write_text(GOOD_TOML.format(url=shadow_server.url + "/s") + "timout = 2.0\n")
    port, proc, log = uvicorn({"USER_SPAN_FILE": str(spans), "SHADOW_CONFIG": str(toml)}, "--lifespan", "off")
    try:
        wait_listening(port, proc)
        assert request(port, "GET", "/health")[0] == 200
        for _ in range(3):
            status, _, body = request(port, "POST", "/predict", b"x" * 100)
            assert (status, json.loads(body)) == (200, {"score": 0.1})
    finally:
        stop(proc)
    output = log.read_text()
    assert output.count("shadow_middleware configuration error") == 1, output
    assert "timout" in output  # logged at ERROR (Python's last-resort handler shows no level)
    assert shadow_server.received == []


def test_the_kill_switch_wins_and_the_configuration_is_not_read(
    tmp_path: Path, spans: Path, shadow_server: ShadowServer
) -> None:
    toml = tmp_path / "shadow.toml"
    toml.write_text("this is not TOML at all [")
    port, proc, log = uvicorn(
        {"USER_SPAN_FILE": str(spans), "SHADOW_CONFIG": str(toml), "SHADOW_ENABLED": "0"}
    )
    try:
        wait_listening(port, proc)
        assert request(port, "POST", "/predict", b"x" * 100)[0] == 200
    finally:
        assert stop(proc) in (0, -signal.SIGTERM)  # uvicorn re-raises SIGTERM
    assert "error" not in log.read_text().lower()
    assert shadow_server.received == []


def test_asgi_defers_construction_errors_to_the_startup_and_wsgi_raises_them() -> None:
    cfg = ShadowConfig(targets=[ShadowTarget("v2", url="http://127.0.0.1:9/x")])
    mw = ShadowASGIMiddleware(json_app(), shadow=Shadow(cfg), config=cfg)
    assert mw.config_error is not None and "shadow: give exactly one" in mw.config_error
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "lifespan.startup"}

    async def send(message: Any) -> None:
        sent.append(message)

    run(mw({"type": "lifespan"}, receive, send))
    assert sent == [{"type": "lifespan.startup.failed", "message": mw.config_error}]
    res = run(drive(mw, http_scope(), [b'{"a": 1}']))  # and requests pass through untouched
    assert res.status == 200
    with pytest.raises(ValueError, match="shadow: give exactly one"):
        ShadowWSGIMiddleware(lambda e, s: [], shadow=Shadow(cfg), config=cfg)  # import time: loud


# ---- 3. a graceful stop flushes every shadow result ------------------------------------


def test_a_graceful_uvicorn_stop_flushes_every_span_with_the_sdk_set_up_as_usual(
    tmp_path: Path, spans: Path, shadow_server: ShadowServer
) -> None:
    toml = tmp_path / "shadow.toml"
    toml.write_text(GOOD_TOML.format(url=shadow_server.url + "/s"))
    env = {
        "USER_SPAN_FILE": str(spans),
        "SHADOW_CONFIG": str(toml),
        # The batch processor would export only after 60 s: everything hinges on the flush.
        "OTEL_BSP_SCHEDULE_DELAY": "60000",
    }
    port, proc, _ = uvicorn(env, "--workers", "2")
    try:
        wait_listening(port, proc)
        for i in range(40):
            assert request(port, "POST", "/predict", b"y" * i)[0] == 200
    finally:
        stop(proc)
    assert len(shadow_spans(spans)) == 40


# ---- 8. a dead candidate is visible in the log ---------------------------------------


def test_the_circuit_opening_and_closing_is_logged_once_each(
    shadow_server: ShadowServer, telemetry: Telemetry, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = ShadowConfig(
        targets=[ShadowTarget("churn-v2", url=shadow_server.url + "/s")],
        circuit_failures=3,
        circuit_cooldown=0.2,
    )
    shadow = Shadow(cfg, tracer_provider=telemetry.tracer_provider, meter_provider=telemetry.meter_provider)
    mw = ShadowASGIMiddleware(json_app(), shadow=shadow)
    caplog.set_level(logging.WARNING, logger="shadow_middleware")
    shadow_server.reply = lambda req: json_reply({"detail": "down"}, status=503)
    for _ in range(20):
        run(drive(mw, http_scope(), [b"{}"]))
        shadow.flush(5)
    shadow_server.reply = lambda req: json_reply({"prediction": 0.5})
    time.sleep(0.5)
    for _ in range(3):
        run(drive(mw, http_scope(), [b"{}"]))
        shadow.flush(5)
    messages = [r.getMessage() for r in caplog.records if r.name == "shadow_middleware"]
    opened = [m for m in messages if "circuit open" in m]
    closed = [m for m in messages if "circuit closed" in m]
    assert len(opened) == 1 and len(closed) == 1, messages
    assert "'churn-v2'" in opened[0] and "HTTP 503" in opened[0]
    assert shadow.stats()["dropped"] > 0
    shadow.close()


# ---- 9. a candidate answering HTML ---------------------------------------------------


def test_a_candidate_answering_html_is_a_mismatch_with_a_reason(
    shadow_server: ShadowServer, telemetry: Telemetry
) -> None:
    shadow_server.reply = lambda req: (
        200,
        [("content-type", "text/html")],
        b"<html><body>Internal error</body></html>",
    )
    cfg = ShadowConfig(targets=[ShadowTarget("v2", url=shadow_server.url + "/s")])
    mw = ShadowASGIMiddleware(
        json_app(),
        config=cfg,
        tracer_provider=telemetry.tracer_provider,
        meter_provider=telemetry.meter_provider,
    )
    run(drive(mw, http_scope(), [b"{}"]))
    assert mw.shadow is not None and mw.shadow.flush(5)
    (span,) = telemetry.spans()
    assert span.attributes["shadow.outcome"] == "mismatch"
    assert span.attributes["shadow.reason"] == "candidate_not_json"


# ---- 12. transparency beyond the happy path ----------------------------------------------


def engine(server: ShadowServer, telemetry: Telemetry, **config: Any) -> Shadow:
    cfg = ShadowConfig(targets=[ShadowTarget("v2", url=server.url + "/s")], **config)
    return Shadow(cfg, tracer_provider=telemetry.tracer_provider, meter_provider=telemetry.meter_provider)


def test_header_generators_reach_the_app_and_the_server_intact(
    shadow_server: ShadowServer, telemetry: Telemetry
) -> None:
    seen: list[list[tuple[bytes, bytes]]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(list(scope["headers"]))
        await receive()
        headers = (pair for pair in [(b"content-type", b"application/json"), (b"x-model", b"v1")])
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b'{"p": 1}'})

    mw = ShadowASGIMiddleware(app, shadow=engine(shadow_server, telemetry))
    scope = http_scope(headers=[("content-type", "application/json"), ("x-request", "abc")])
    scope["headers"] = (pair for pair in scope["headers"])
    res = run(drive(mw, scope, [b"{}"]))
    assert seen == [[(b"content-type", b"application/json"), (b"x-request", b"abc")]]
    assert [(k.lower(), v) for k, v in res.headers] == [
        (b"content-type", b"application/json"),
        (b"x-model", b"v1"),
    ]
    assert mw.shadow is not None and mw.shadow.flush(5)
    assert shadow_server.received[0].headers["x-request"] == "abc"


def test_a_get_whose_body_the_app_never_reads_is_shadowed(
    shadow_server: ShadowServer, telemetry: Telemetry
) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:  # never calls receive()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": b'{"prediction": 0.5}'})

    mw = ShadowASGIMiddleware(app, shadow=engine(shadow_server, telemetry, routes=["GET /predict"]))
    res = run(drive(mw, http_scope(method="GET", headers=[], query=b"customer_id=7"), [b""]))
    assert res.status == 200
    assert mw.shadow is not None and mw.shadow.flush(5)
    (span,) = telemetry.spans()
    assert span.attributes["shadow.outcome"] == "match", dict(span.attributes)
    assert shadow_server.received[0].path == "/s?customer_id=7"


def test_wsgi_keeps_the_framing_of_a_one_item_result(
    shadow_server: ShadowServer, telemetry: Telemetry
) -> None:
    def app(environ: Any, start_response: Any) -> list[bytes]:
        environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        start_response("200 OK", [("Content-Type", "application/json")])  # no Content-Length
        return [b'{"prediction": 0.5}']

    class Quiet(WSGIRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

    def headers_served(wsgi: Any) -> dict[str, str]:
        with make_server("127.0.0.1", 0, wsgi, handler_class=Quiet) as httpd:
            thread = threading.Thread(target=httpd.handle_request)
            thread.start()
            status, headers, body = request(httpd.server_port, "POST", "/predict", b"{}")
            thread.join(5)
        assert (status, body) == (200, b'{"prediction": 0.5}')
        return headers

    plain = headers_served(app)
    mw = ShadowWSGIMiddleware(app, shadow=engine(shadow_server, telemetry))
    shadowed = headers_served(mw)
    assert plain.get("content-length") == "19"  # wsgiref adds it for a one-item list
    assert shadowed.get("content-length") == plain.get("content-length")
    assert mw.shadow is not None and mw.shadow.flush(5)
    assert mw.shadow.stats()["match"] == 1


def test_lifespan_shutdown_works_under_trio(shadow_server: ShadowServer, telemetry: Telemetry) -> None:
    pytest.importorskip("trio")
    cfg = ShadowConfig(targets=[ShadowTarget("v2", url=shadow_server.url + "/s")])
    mw = ShadowASGIMiddleware(
        json_app(),
        config=cfg,
        tracer_provider=telemetry.tracer_provider,
        meter_provider=telemetry.meter_provider,
    )
    sent: list[str] = []

    async def lifespan() -> None:
        messages = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]

        async def app(scope: Any, receive: Any, send: Any) -> None:
            while True:
                msg = await receive()
                done = msg["type"] == "lifespan.shutdown"
                await send({"type": msg["type"] + ".complete"})
                if done:
                    return

        async def receive() -> dict[str, Any]:
            return messages.pop(0)

        async def send(message: Any) -> None:
            sent.append(message["type"])

        await drive(mw, http_scope(), [b"{}"])
        mw.app = app
        await mw({"type": "lifespan"}, receive, send)

    anyio.run(lifespan, backend="trio")
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert mw.shadow is not None and not mw.shadow.enabled  # closed, after flushing
    assert mw.shadow.stats()["match"] == 1


def test_background_threads_do_not_grow_with_engines(
    shadow_server: ShadowServer, telemetry: Telemetry
) -> None:
    engines = [engine(shadow_server, telemetry) for _ in range(30)]
    for shadow in engines:
        run(drive(ShadowASGIMiddleware(json_app(), shadow=shadow), http_scope(), [b"{}"]))
    for shadow in engines:
        assert shadow.flush(5)
    names = [t.name for t in threading.enumerate()]
    assert names.count("shadow-dispatcher") == 1, names
    for shadow in engines:
        shadow.close()
    assert sum(s.stats()["match"] for s in engines) == 30


def test_a_global_json_loads_patch_does_not_reach_the_comparison(
    shadow_server: ShadowServer, telemetry: Telemetry, monkeypatch: pytest.MonkeyPatch
) -> None:
    shadow = engine(shadow_server, telemetry)
    mw = ShadowASGIMiddleware(json_app(), shadow=shadow)

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a test double, not for the middleware")

    monkeypatch.setattr(json, "loads", broken)
    run(drive(mw, http_scope(), [b"{}"]))
    assert shadow.flush(5)
    monkeypatch.undo()
    assert shadow.stats()["match"] == 1 and shadow.internal_errors == 0


EXIT_SCRIPT = """
import time
from shadow_middleware import Shadow, ShadowConfig, ShadowTarget
engines = [
    Shadow(ShadowConfig(targets=[ShadowTarget("v2", url="{url}")], drain_timeout=2.0))
    for _ in range(3)
]
for shadow in engines:
    route = shadow.match("POST", "/predict")
    tap = shadow.begin(route, "POST", "/predict", "", [("content-length", "2")], 2)
    tap.feed(b"{{}}")
    tap.body_complete()  # the response is never read to the end nor closed
time.sleep(0.5)
print("exiting", flush=True)
"""


def test_exit_waits_at_most_drain_timeout_in_total(shadow_server: ShadowServer) -> None:
    code = EXIT_SCRIPT.format(url=shadow_server.url + "/s")
    with subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    ) as proc:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"exiting\n"
        start = time.monotonic()
        assert proc.wait(timeout=30) == 0
    # One drain_timeout (2 s) for the three engines together, not one each (6 s).
    assert time.monotonic() - start < 4.0


@pytest.fixture(autouse=True)
def _no_shadow_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in list(os.environ):
        if name.startswith("SHADOW_"):
            monkeypatch.delenv(name)
    yield


# ---- 7. like-for-like latency: the candidate's own time -----------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("", None),
        ("total;dur=12.5", 12.5),
        ("db;dur=2, app;dur=3.5", 3.5),
        ("db;dur=2, app;dur=3.5, total;dur=7", 7.0),
        ('cache;desc="hit";dur=0.25', 0.25),
        ("miss, db;dur=abc, edge;dur=4", 4.0),
        ("app;dur=-1, app;dur=nan", None),
        ("app", None),
    ],
)
def test_server_timing_gives_total_else_app_else_the_first_duration(
    header: str, expected: float | None
) -> None:
    from shadow_middleware._judge import server_duration_ms

    assert server_duration_ms(header) == expected


def test_the_candidates_server_timing_is_recorded(shadow_server: ShadowServer, telemetry: Telemetry) -> None:
    def reply(req: Any) -> Any:
        status, headers, body = json_reply({"prediction": 0.5})
        return status, [*headers, ("Server-Timing", "db;dur=1.5, app;dur=2.25")], body

    shadow_server.reply = reply
    mw = ShadowASGIMiddleware(json_app(), shadow=engine(shadow_server, telemetry))
    run(drive(mw, http_scope(), [b"{}"]))
    assert mw.shadow is not None and mw.shadow.flush(5)
    (span,) = telemetry.spans()
    assert span.attributes["shadow.candidate.server_duration_ms"] == 2.25
