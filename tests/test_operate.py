"""Operating without code changes: files, environment, kill switch, live tuning, framework idioms."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, request

from shadow_middleware import (
    Shadow,
    ShadowASGIMiddleware,
    ShadowConfig,
    ShadowFlask,
    ShadowStatsApp,
    ShadowTarget,
    ShadowWSGIMiddleware,
)

from .asgi_helpers import drive, http_scope, json_app, run
from .conftest import ShadowServer, Telemetry

BODY = b'{"id": "c-1"}'


def toml(server: ShadowServer, extra: str = "") -> str:
    return f"""
routes = ["POST /predict"]
max_queue = 50
{extra}
[[targets]]
name = "v2"
url = "{server.url}/shadow"
timeout = 1.5
[targets.headers]
X-Candidate-Key = "secret-k"
"""


def test_from_toml_and_from_env(shadow_server: ShadowServer, tmp_path: Path) -> None:
    path = tmp_path / "shadow.toml"
    path.write_text(toml(shadow_server))
    cfg = ShadowConfig.from_toml(path)
    assert cfg.max_queue == 50 and cfg.targets[0].timeout == 1.5
    env = {"SHADOW_CONFIG": str(path), "SHADOW_MAX_QUEUE": "7", "SHADOW_TARGET_V2_SAMPLE_RATE": "0.25"}
    over = ShadowConfig.from_env(env)
    assert over.max_queue == 7 and over.targets[0].sample_rate == 0.25 and over.targets[0].timeout == 1.5
    with pytest.raises(ValueError, match="SHADOW_MAX_QUEUE"):
        ShadowConfig.from_env({**env, "SHADOW_MAX_QUEUE": "lots"})
    with pytest.raises(ValueError, match="timout"):
        path.write_text(toml(shadow_server).replace("timeout = 1.5", "timout = 1.5"))
        ShadowConfig.from_toml(path)


def test_middleware_picks_up_shadow_config_from_the_environment(
    shadow_server: ShadowServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "shadow.toml"
    path.write_text(toml(shadow_server))
    monkeypatch.setenv("SHADOW_CONFIG", str(path))
    mw = ShadowASGIMiddleware(json_app())
    run(drive(mw, http_scope(), [BODY]))
    assert mw.shadow.flush(5)
    (got,) = shadow_server.received
    assert got.headers["x-candidate-key"] == "secret-k"
    monkeypatch.delenv("SHADOW_CONFIG")
    # Forgotten: shadowing off, the app serving (issue 17); strict, the error waits for the
    # startup (test_failsafe.py) or raises at import.
    forgotten = ShadowASGIMiddleware(json_app())
    assert forgotten.shadow is not None and "SHADOW_CONFIG" in forgotten.shadow.config_errors[0]
    strict = ShadowASGIMiddleware(json_app(), strict=True)
    assert strict.config_error is not None and "SHADOW_CONFIG" in strict.config_error
    with pytest.raises(ValueError, match="SHADOW_CONFIG"):
        ShadowWSGIMiddleware(lambda environ, start_response: [], strict=True)


def test_kill_switch_from_the_environment(
    shadow_server: ShadowServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHADOW_ENABLED", "0")
    cfg = ShadowConfig(targets=[ShadowTarget("v2", url=shadow_server.url + "/s")], enabled=True)
    mw = ShadowASGIMiddleware(json_app(), config=cfg)
    res = run(drive(mw, http_scope(), [BODY]))
    assert res.status == 200 and mw.shadow.flush(5)
    assert shadow_server.received == [] and sum(mw.shadow.stats().values()) == 0


def test_live_switches_take_effect_for_the_next_request_from_any_thread(
    shadow_server: ShadowServer, telemetry: Telemetry
) -> None:
    cfg = ShadowConfig(targets=[ShadowTarget("v2", url=shadow_server.url + "/s")])
    mw = ShadowASGIMiddleware(json_app(), config=cfg, tracer_provider=telemetry.tracer_provider)
    run(drive(mw, http_scope(), [BODY]))
    t = threading.Thread(target=mw.shadow.set_enabled, args=(False,))
    t.start()
    t.join()
    run(drive(mw, http_scope(), [BODY]))
    mw.shadow.set_enabled(True)
    mw.shadow.set_sample_rate("v2", 0.0)
    run(drive(mw, http_scope(), [BODY]))
    mw.shadow.set_sample_rate("v2", 1.0)
    run(drive(mw, http_scope(), [BODY]))
    assert mw.shadow.flush(5)
    assert len(shadow_server.received) == 2
    with pytest.raises(ValueError, match="target"):
        mw.shadow.set_sample_rate("nope", 0.5)
    with pytest.raises(ValueError, match="sample_rate"):
        mw.shadow.set_sample_rate("v2", 1.5)


@pytest.fixture
def no_shadow_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No ``SHADOW_*`` variable from the environment the tests run in."""
    for var in list(os.environ):
        if var.startswith("SHADOW_"):
            monkeypatch.delenv(var)
    return monkeypatch


def test_flask_extension_reads_app_config(
    shadow_server: ShadowServer, tmp_path: Path, no_shadow_env: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "shadow.toml"
    path.write_text(toml(shadow_server))
    app = Flask(__name__)
    app.config["SHADOW_CONFIG"] = str(path)
    app.config["SHADOW_MAX_QUEUE"] = 9

    @app.post("/predict")
    def predict() -> Any:
        return {"prediction": 0.5, "id": request.get_json()["id"]}

    ext = ShadowFlask()
    shadow = ext.init_app(app)
    assert app.extensions["shadow_middleware"] is shadow is ShadowFlask.shadow(app)
    assert shadow.config.max_queue == 9
    assert app.test_client().post("/predict", json={"id": "c-9"}).json == {"prediction": 0.5, "id": "c-9"}
    assert shadow.flush(5)
    assert json.loads(shadow_server.received[0].body) == {"id": "c-9"}
    shadow.close()


def flask_app(**config: Any) -> Flask:
    app = Flask(__name__)
    app.config.update(config)
    return app


def test_flask_extension_environment_over_app_config_over_file(
    shadow_server: ShadowServer, tmp_path: Path, no_shadow_env: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "shadow.toml"
    path.write_text(toml(shadow_server))  # max_queue = 50, v2's timeout = 1.5
    app = flask_app(SHADOW_CONFIG=str(path), SHADOW_MAX_QUEUE=9, SHADOW_DRAIN_TIMEOUT=1.0)
    no_shadow_env.setenv("SHADOW_TARGET_V2_SAMPLE_RATE", "0")
    no_shadow_env.setenv("SHADOW_MAX_QUEUE", "4")
    shadow = ShadowFlask(app).shadow(app)
    assert shadow is not None
    cfg = shadow.config
    assert cfg.targets[0].sample_rate == 0.0  # the environment: it used to be ignored
    assert cfg.max_queue == 4  # the environment wins over app.config ...
    assert cfg.drain_timeout == 1.0  # ... which wins over the file
    assert cfg.targets[0].timeout == 1.5  # the file
    shadow.close()
    # The environment's SHADOW_CONFIG names the file, as for every other key.
    other = tmp_path / "other.toml"
    other.write_text(toml(shadow_server, "max_queue = 77").replace("max_queue = 50\n", ""))
    no_shadow_env.delenv("SHADOW_MAX_QUEUE")
    no_shadow_env.setenv("SHADOW_CONFIG", str(other))
    shadow = ShadowFlask(flask_app(SHADOW_CONFIG=str(path))).init_app(flask_app(SHADOW_CONFIG=str(path)))
    assert shadow is not None and shadow.config.max_queue == 77
    shadow.close()


def test_flask_extension_refuses_unknown_shadow_names_like_from_env(
    shadow_server: ShadowServer, tmp_path: Path, no_shadow_env: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "shadow.toml"
    path.write_text(toml(shadow_server))
    no_shadow_env.setenv("SHADOW_TARGET_V2_SAMPLE_RATEE", "0")
    with pytest.raises(ValueError) as info:
        ShadowFlask(flask_app(SHADOW_CONFIG=str(path)), strict=True)  # fail fast (issue 17)
    env_error = str(info.value)
    with pytest.raises(ValueError) as same:
        ShadowConfig.from_env({"SHADOW_CONFIG": str(path), **os.environ})
    assert env_error == str(same.value)  # the same error as from_env
    assert env_error.startswith("SHADOW_TARGET_V2_SAMPLE_RATEE: unknown variable (did you mean")
    no_shadow_env.delenv("SHADOW_TARGET_V2_SAMPLE_RATEE")
    with pytest.raises(ValueError) as info:
        ShadowFlask(
            flask_app(SHADOW_CONFIG=str(path), SHADOW_MAX_QEUE=5, SHADOW_MAX_QUEUE="lots"), strict=True
        )
    assert str(info.value).splitlines() == [
        "app.config: SHADOW_MAX_QEUE: unknown variable (did you mean 'SHADOW_MAX_QUEUE'?)",
        "app.config: SHADOW_MAX_QUEUE: expected an integer, got 'lots'",
    ]
    # A bad value the constructor refuses names the app.config key it came from.
    with pytest.raises(
        ValueError, match=r"^app\.config: SHADOW_TARGET_V2_SAMPLE_RATE: targets\[0\]\.sample_rate"
    ):
        ShadowFlask(flask_app(SHADOW_CONFIG=str(path), SHADOW_TARGET_V2_SAMPLE_RATE=1.5), strict=True)


def test_flask_extension_kill_switch_reads_nothing(no_shadow_env: pytest.MonkeyPatch) -> None:
    no_shadow_env.setenv("SHADOW_ENABLED", "0")
    no_shadow_env.setenv("SHADOW_TARGET_V2_SAMPLE_RATEE", "0")  # would be an error
    app = flask_app(SHADOW_CONFIG="/nonexistent.toml")
    original = app.wsgi_app
    assert ShadowFlask().init_app(app) is None
    assert app.wsgi_app == original and ShadowFlask.shadow(app) is None


def test_stats_endpoint_is_opt_in_and_shows_counts_only(shadow_server: ShadowServer) -> None:
    engine = Shadow(
        ShadowConfig(targets=[ShadowTarget("v2", url=shadow_server.url + "/s", headers={"k": "SECRET"})])
    )
    mw = ShadowASGIMiddleware(json_app(), shadow=engine)
    run(drive(mw, http_scope(), [BODY]))
    assert engine.flush(5)
    res = run(drive(ShadowStatsApp(engine), http_scope(method="GET", path="/"), [b""]))
    assert res.status == 200
    doc = json.loads(res.body)
    assert doc["enabled"] is True
    assert doc["outcomes"]["match"] == 1 and doc["targets"]["v2"]["match"] == 1
    assert "SECRET" not in res.body.decode()
    post = run(drive(ShadowStatsApp(engine), http_scope(method="POST", path="/"), [b""]))
    assert post.status == 405
    engine.close()


def test_span_placement_link_keeps_production_traces_untouched(
    shadow_server: ShadowServer, telemetry: Telemetry
) -> None:
    cfg = ShadowConfig(targets=[ShadowTarget("v2", url=shadow_server.url + "/s")], span_placement="link")
    mw = ShadowASGIMiddleware(json_app(), config=cfg, tracer_provider=telemetry.tracer_provider)
    tracer = telemetry.tracer_provider.get_tracer("test")
    with tracer.start_as_current_span("server") as server_span:
        run(drive(mw, http_scope(), [BODY]))
    assert mw.shadow.flush(5)
    (span,) = telemetry.spans()
    request_ctx = server_span.get_span_context()
    assert span.parent is None
    assert span.context.trace_id != request_ctx.trace_id
    assert [link.context.span_id for link in span.links] == [request_ctx.span_id]
    with pytest.raises(ValueError, match="span_placement"):
        ShadowConfig(targets=[ShadowTarget("v2", url=shadow_server.url)], span_placement="sibling")
