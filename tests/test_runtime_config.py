"""A configuration read at run time never stops the app (issue 17, items 9, 10, 11, 13)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from shadow_middleware import (
    Shadow,
    ShadowASGIMiddleware,
    ShadowConfig,
    ShadowFlask,
    ShadowStatsApp,
    ShadowTarget,
    ShadowWSGIMiddleware,
)
from shadow_middleware.__main__ import main

from .asgi_helpers import drive, http_scope, json_app, run

BAD_TOML = '[[targets]]\nname = "v2"\nurl = "http://127.0.0.1:9/s"\ntimout = 2.0\n'


@pytest.fixture
def bad_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for var in ("SHADOW_STRICT", "SHADOW_ENABLED", "SHADOW_TARGETS"):
        monkeypatch.delenv(var, raising=False)
    path = tmp_path / "shadow.toml"
    path.write_text(BAD_TOML)
    monkeypatch.setenv("SHADOW_CONFIG", str(path))
    monkeypatch.setenv("SHADOW_MAX_QUEUE", "lots")
    return path


def errors_logged(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno == logging.ERROR and r.name == "shadow_middleware"]


def test_wsgi_serves_with_shadowing_off_and_one_error_naming_every_mistake(
    bad_env: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def app(environ: Any, start_response: Any) -> list[bytes]:
        start_response("200 OK", [])
        return [b"ok"]

    mw = ShadowWSGIMiddleware(app)
    (record,) = errors_logged(caplog)
    message = record.getMessage()
    assert "timout: unknown key" in message and "SHADOW_MAX_QUEUE: expected an integer" in message
    assert "check-config" in message and "SHADOW_STRICT=1" in message
    assert mw.shadow is not None and not mw.shadow.enabled
    assert mw.shadow.stats()["config_errors"] == 2 and mw.shadow.stats_by_target() == {}
    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/predict", "wsgi.input": None}
    assert list(mw(environ, lambda *a: None)) == [b"ok"]
    assert len(errors_logged(caplog)) == 1


@pytest.mark.parametrize("how", ["argument", "environment"])
def test_strict_restores_fail_fast(bad_env: Path, how: str, monkeypatch: pytest.MonkeyPatch) -> None:
    kwargs: dict[str, Any] = {"strict": True} if how == "argument" else {}
    if how == "environment":
        monkeypatch.setenv("SHADOW_STRICT", "1")
    with pytest.raises(ValueError, match="timout: unknown key"):
        ShadowWSGIMiddleware(lambda e, s: [], **kwargs)
    with pytest.raises(ValueError, match="timout: unknown key"):
        Shadow.from_env(**kwargs)
    flask = pytest.importorskip("flask")
    with pytest.raises(ValueError, match="timout: unknown key"):
        ShadowFlask(flask.Flask(__name__), **kwargs)
    mw = ShadowASGIMiddleware(json_app(), **kwargs)  # ASGI: fails the lifespan startup
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "lifespan.startup"}

    async def send(message: Any) -> None:
        sent.append(message)

    run(mw({"type": "lifespan"}, receive, send))
    assert sent[0]["type"] == "lifespan.startup.failed" and "timout" in sent[0]["message"]


def test_asgi_runs_the_apps_lifespan_and_serves_with_shadowing_off(
    bad_env: Path, caplog: pytest.LogCaptureFixture
) -> None:
    started: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await receive()
            started.append("app")
            await send({"type": "lifespan.startup.complete"})
            return
        await json_app()(scope, receive, send)

    mw = ShadowASGIMiddleware(app)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "lifespan.startup"}

    async def send(message: Any) -> None:
        sent.append(message)

    run(mw({"type": "lifespan"}, receive, send))
    assert started == ["app"] and sent == [{"type": "lifespan.startup.complete"}]
    assert run(drive(mw, http_scope(), [b"{}"])).status == 200
    assert len(errors_logged(caplog)) == 1
    assert mw.shadow is not None
    doc = run(drive(ShadowStatsApp(mw.shadow), http_scope("GET", "/")))
    assert b'"config_errors": ["' in doc.body and b"timout" in doc.body


def test_flask_app_config_mistake_leaves_the_app_as_it_is(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    flask = pytest.importorskip("flask")
    for var in ("SHADOW_STRICT", "SHADOW_ENABLED", "SHADOW_CONFIG", "SHADOW_TARGETS"):
        monkeypatch.delenv(var, raising=False)
    app = flask.Flask(__name__)
    wsgi_app = app.wsgi_app
    app.config.update(SHADOW_TARGETS="v2", SHADOW_TARGET_V2_URL="http://127.0.0.1:9/s", SHADOW_ENABLE=0)
    engine = ShadowFlask(app).shadow(app)
    assert engine is not None and engine.config_errors and app.wsgi_app == wsgi_app
    assert "app.config: SHADOW_ENABLE: unknown variable" in errors_logged(caplog)[0].getMessage()
    app.config["SHADOW_STRICT"] = True  # strict from app.config too
    with pytest.raises(ValueError, match="SHADOW_ENABLE"):
        ShadowFlask(app)


def test_a_config_built_wrongly_in_code_still_raises_where_it_is_built() -> None:
    with pytest.raises(ValueError, match=r"ShadowTarget\.sample_rate"):
        ShadowTarget("v2", url="http://127.0.0.1:9/s", sample_rate=2)
    with pytest.raises(ValueError, match=r"ShadowConfig\.max_queue"):
        ShadowConfig(targets=[ShadowTarget("v2", url="http://127.0.0.1:9/s")], max_queue=-1)


# ---- item 13: messages -----------------------------------------------------------------


def test_the_no_config_error_mentions_shadow_targets(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    for var in ("SHADOW_STRICT", "SHADOW_ENABLED", "SHADOW_CONFIG", "SHADOW_TARGETS"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(
        ValueError, match="SHADOW_CONFIG to a TOML file, or declare targets in SHADOW_TARGETS"
    ):
        ShadowWSGIMiddleware(lambda e, s: [], strict=True)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (
            '"http://user:pw@127.0.0.1:9"',
            "targets[0].base_url: ShadowTarget.base_url: must not carry credentials",
        ),
        ("5", "targets[0].base_url: expected a string, got 5"),
    ],
)
def test_a_bad_base_url_is_named_alone(
    value: str, expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "shadow.toml"
    path.write_text(f'[[targets]]\nname = "v2"\nbase_url = {value}\n')
    assert main(["check-config", "--no-env", str(path)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [f"error: {path}: {expected}" + err[0].split(expected, 1)[1]], err
    assert "exactly one" not in "\n".join(err)


# ---- item 10: check-config resolves telemetry_setup --------------------------------------

SETUP_TOML = """
isolation = "process"
telemetry_setup = "{spec}"

[[targets]]
name = "v2"
url = "http://127.0.0.1:9/s"
"""


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("tests.apps.spanfile:helper_telemetry", None),
        ("tests.apps.spanfiel:helper_telemetry", "cannot import 'tests.apps.spanfiel'"),
        ("tests.apps.spanfile:helper_telemetri", "has no attribute 'helper_telemetri'"),
        ("tests.apps.spanfile:ABS_DIFF", "has no attribute"),
        ("shadow_middleware._telemetry:ABS_DIFF_BUCKETS", "is not callable"),
    ],
)
def test_check_config_resolves_telemetry_setup(
    spec: str, expected: str | None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "shadow.toml"
    path.write_text(SETUP_TOML.format(spec=spec))
    code = main(["check-config", "--no-env", str(path)])
    err = capsys.readouterr().err
    if expected is None:
        assert code == 0, err
    else:
        assert code == 2
        assert err.startswith("error: ShadowConfig.telemetry_setup: ") and expected in err, err


# ---- item 11: routes the app does not have ------------------------------------------------


def route_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and "matches no route of the app" in r.getMessage()
    ]


def test_flask_warns_about_routes_the_app_lacks_naming_the_closest(caplog: pytest.LogCaptureFixture) -> None:
    flask = pytest.importorskip("flask")
    app = flask.Flask(__name__)
    bp = flask.Blueprint("api", __name__, url_prefix="/api")
    bp.add_url_rule("/predict", "predict", lambda: {"p": 1}, methods=["POST"])
    bp.add_url_rule("/items/<int:item>/score", "score", lambda item: {"p": item}, methods=["GET"])
    cfg = ShadowConfig(
        targets=[ShadowTarget("v2", url="http://127.0.0.1:9/s")],
        routes=["POST /predict", "POST /api/predict", "GET /api/items/{id}/score", "POST /api/predict/"],
    )
    ext = ShadowFlask(config=cfg)
    ext.init_app(app)  # before the blueprint, as an app factory may do
    app.register_blueprint(bp)
    assert route_warnings(caplog) == []  # judged at the first request, when the map is complete
    with app.test_client() as client:
        client.get("/nothing")
        client.get("/nothing")
    warnings = route_warnings(caplog)
    assert len(warnings) == 2, warnings
    assert "'POST /predict'" in warnings[0] and "closest route it has is 'POST /api/predict'" in warnings[0]
    assert "'POST /api/predict/'" in warnings[1] and "'POST /api/predict'" in warnings[1]
    Shadow.close(ext.shadow(app))  # type: ignore[arg-type]


def test_asgi_warns_at_startup_about_routes_a_starlette_app_lacks(caplog: pytest.LogCaptureFixture) -> None:
    fastapi = pytest.importorskip("fastapi")
    from starlette.routing import Mount, Route

    async def ok(request: Any) -> Any:
        from starlette.responses import JSONResponse

        return JSONResponse({"p": 1})

    app = fastapi.FastAPI()
    router = fastapi.APIRouter(prefix="/v1")
    router.add_api_route("/predict", lambda: {"p": 1}, methods=["POST"])
    app.include_router(router)
    app.router.routes.append(Mount("/models", routes=[Route("/{name}/predict", ok, methods=["POST"])]))
    cfg = ShadowConfig(
        targets=[ShadowTarget("v2", url="http://127.0.0.1:9/s")],
        routes=["POST /v1/predict", "POST /models/<name>/predict", "POST /predict", "GET /v1/predict"],
    )
    shadow = Shadow(cfg)
    app.add_middleware(ShadowASGIMiddleware, shadow=shadow)
    messages = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[str] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    async def send(message: Any) -> None:
        sent.append(message["type"])

    run(app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, receive, send))
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    warnings = route_warnings(caplog)
    assert len(warnings) == 2, warnings
    assert "'POST /predict'" in warnings[0] and "closest route it has is 'POST /v1/predict'" in warnings[0]
    assert "'GET /v1/predict'" in warnings[1]
    shadow.close()


def test_the_route_check_never_raises_into_the_app(caplog: pytest.LogCaptureFixture) -> None:
    class Weird:
        @property
        def routes(self) -> list[Any]:
            raise RuntimeError("no")

    cfg = ShadowConfig(targets=[ShadowTarget("v2", url="http://127.0.0.1:9/s")])
    shadow = Shadow(cfg)
    mw = ShadowASGIMiddleware(Weird(), shadow=shadow)  # type: ignore[arg-type]
    sent: list[Any] = []

    async def receive() -> dict[str, Any]:
        return {"type": "lifespan.startup"}

    async def send(message: Any) -> None:
        sent.append(message)

    with pytest.raises(TypeError):  # the app itself is not callable: its own error, unchanged
        run(mw({"type": "lifespan"}, receive, send))
    assert route_warnings(caplog) == []
    shadow.close()


def test_errors_shown_by_the_stats_endpoint_never_echo_url_credentials(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    for var in ("SHADOW_STRICT", "SHADOW_ENABLED", "SHADOW_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("SHADOW_TARGETS", "v2")
    monkeypatch.setenv("SHADOW_TARGET_V2_URL", "ftp://user:s3cret@candidate/predict")
    shadow = Shadow.from_env()
    doc = run(drive(ShadowStatsApp(shadow), http_scope("GET", "/")))
    assert b"must be an http or https URL" in doc.body and b"s3cret" not in doc.body
    assert "s3cret" not in caplog.text
