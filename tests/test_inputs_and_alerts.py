"""Issue 14 at run time: request inputs on the spans (``record_inputs``) and the two alerting metrics
(``shadow.decision_flips``, ``shadow.score.abs_diff``)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from shadow_middleware import Compare, ShadowConfig, ShadowTarget
from shadow_middleware import _tap as tap_module

from .asgi_helpers import drive, http_scope, json_app, run
from .conftest import ShadowServer, Telemetry, json_reply
from .test_asgi import attrs, make, one_span

INPUTS = {
    "customer_id": "C00042",
    "tenure": 7,
    "monthly_charges": 71.5,
    "has_fiber": True,
    "contract": "x" * 300,
    "address": {"street": "Main St 1"},
    "history": [1, 2, 3],
    "nothing": None,
    "huge": 2**70,
    "nested": {"age": 44, "a/b": "slash"},
}
BODY = json.dumps(INPUTS).encode()
POINTERS = [
    "/tenure",
    "/monthly_charges",
    "/has_fiber",
    "/contract",
    "/address",
    "/history",
    "/nothing",
    "/huge",
    "/absent",
    "/nested/age",
    "/nested/a~1b",
]


def histogram_points(telemetry: Telemetry, name: str) -> dict[tuple[str, str], Any]:
    data = telemetry.reader.get_metrics_data()
    out: dict[tuple[str, str], Any] = {}
    if data is None:
        return out
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                if metric.name == name:
                    for point in metric.data.data_points:  # type: ignore[union-attr]
                        a = point.attributes or {}
                        assert set(a) == {"shadow.target", "shadow.route"}, a
                        out[(str(a["shadow.target"]), str(a["shadow.route"]))] = point
    return out


def test_record_inputs_puts_the_scalars_on_the_span(
    shadow_server: ShadowServer, telemetry: Telemetry, monkeypatch: pytest.MonkeyPatch
) -> None:
    parses: list[bytes] = []
    real = tap_module.try_json

    def counting(body: bytes) -> tuple[bool, Any]:
        parses.append(body)
        return real(body)

    monkeypatch.setattr(tap_module, "try_json", counting)
    mw = make(
        json_app(),
        shadow_server,
        telemetry,
        record_inputs=POINTERS,
        correlation_id="json:/customer_id",
        sample_key="json:/customer_id",
    )
    run(drive(mw, http_scope(), [BODY]))
    a = one_span(mw, telemetry)
    inputs = {k: v for k, v in a.items() if k.startswith("shadow.request.body.")}
    assert inputs == {
        "shadow.request.body.tenure": 7,
        "shadow.request.body.monthly_charges": 71.5,
        "shadow.request.body.has_fiber": True,
        "shadow.request.body.contract": "x" * 256,  # cut like a correlation id
        "shadow.request.body.nested.age": 44,
        "shadow.request.body.nested.a/b": "slash",
    }
    assert a["shadow.correlation_id"] == "C00042"
    assert len(parses) == 1, "the request body is parsed once for sample key, correlation id and inputs"


def test_inputs_are_off_by_default_and_absent_for_a_body_that_is_not_json(
    shadow_server: ShadowServer, telemetry: Telemetry
) -> None:
    mw = make(json_app(), shadow_server, telemetry)
    run(drive(mw, http_scope(), [BODY]))
    a = one_span(mw, telemetry)
    assert not any(k.startswith("shadow.request.") for k in a)
    telemetry.exporter.clear()
    mw = make(json_app(), shadow_server, telemetry, record_inputs=["/tenure"])
    run(drive(mw, http_scope(), [b"tenure=7"]))
    a = one_span(mw, telemetry)
    assert not any(k.startswith("shadow.request.") for k in a)


def test_inputs_are_on_every_exchange_span_not_on_coalesced_refusals(
    shadow_server: ShadowServer, telemetry: Telemetry
) -> None:
    shadow_server.delay = 0.3
    mw = make(
        json_app(),
        shadow_server,
        telemetry,
        target={"max_concurrency": 1},
        max_queue=1,
        record_inputs=["/tenure"],
    )

    async def burst() -> None:
        await asyncio.gather(*(drive(mw, http_scope(), [BODY]) for _ in range(4)))

    run(burst())
    assert mw.shadow.flush(10)
    spans = [attrs(s) for s in telemetry.spans()]
    assert {a["shadow.outcome"] for a in spans} == {"match", "dropped"}
    # Refusals have no span of their own (issue 19): one coalesced span per interval stands for
    # many requests, so it carries none of their inputs.
    own = [a for a in spans if "shadow.coalesced_count" not in a]
    assert own and all(a["shadow.request.body.tenure"] == 7 for a in own)
    coalesced = [a for a in spans if "shadow.coalesced_count" in a]
    assert coalesced and not any(k.startswith("shadow.request.") for a in coalesced for k in a)


def test_record_inputs_validation_names_the_field() -> None:
    target = [ShadowTarget("v2", url="http://127.0.0.1:9/x")]
    for bad, needle in (
        ("/tenure", "must be a list of strings"),
        (["tenure"], "must be empty or start with '/'"),
        ([""], "inside the body"),
        (["/a~2"], "invalid '~' escape"),
        ([3], "must be a list of strings"),
    ):
        with pytest.raises(ValueError, match=r"ShadowConfig\.record_inputs") as err:
            ShadowConfig(targets=target, record_inputs=bad)  # type: ignore[arg-type]
        assert needle in str(err.value)
    cfg = ShadowConfig(targets=target, record_inputs=["/a", "/a", "/b/c"])
    assert cfg.record_inputs == ("/a", "/b/c")
    assert ShadowConfig(targets=target).record_inputs == ()


def test_record_inputs_from_the_environment_and_toml(tmp_path: Any) -> None:
    env = {
        "SHADOW_TARGETS": "v2",
        "SHADOW_TARGET_V2_URL": "http://127.0.0.1:9/x",
        "SHADOW_RECORD_INPUTS": "/a,/b",
    }
    assert ShadowConfig.from_env(env).record_inputs == ("/a", "/b")
    toml = tmp_path / "shadow.toml"
    toml.write_text(
        'record_inputs = ["/tenure", "/monthly_charges"]\n[[targets]]\nname = "v2"\nurl = "http://127.0.0.1:9/x"\n'
    )
    assert ShadowConfig.from_toml(toml).record_inputs == ("/tenure", "/monthly_charges")
    toml.write_text('record_inputs = ["tenure"]\n[[targets]]\nname = "v2"\nurl = "http://127.0.0.1:9/x"\n')
    with pytest.raises(ValueError, match="record_inputs"):
        ShadowConfig.from_toml(toml)


@pytest.mark.parametrize(
    ("primary", "candidate", "flip", "abs_diff"),
    [
        (0.40, 0.60, True, 0.20),
        (0.40, 0.45, False, 0.05),
        (0.70, 0.30, True, 0.40),
    ],
)
def test_decision_flips_and_score_difference_metrics(
    shadow_server: ShadowServer,
    telemetry: Telemetry,
    primary: float,
    candidate: float,
    flip: bool,
    abs_diff: float,
) -> None:
    shadow_server.reply = lambda req: json_reply(
        {"label": "a", "score": candidate, "offer": candidate >= 0.5}
    )
    mw = make(
        json_app({"label": "a", "score": primary, "offer": primary >= 0.5}),
        shadow_server,
        telemetry,
        compare=Compare(fields=["/label", "/score", "/offer"], threshold=0.5),
    )
    for _ in range(3):
        run(drive(mw, http_scope(), [BODY]))
    assert mw.shadow.flush(10)
    key = ("v2", "POST /predict")
    flips = histogram_points(telemetry, "shadow.decision_flips")
    assert (flips[key].value if key in flips else 0) == (3 if flip else 0)
    (point,) = histogram_points(telemetry, "shadow.score.abs_diff").values()
    assert point.count == 3 and point.sum == pytest.approx(3 * abs_diff)
    assert point.max == pytest.approx(abs_diff)
    assert list(point.explicit_bounds) == [0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0]


def test_no_flip_counter_without_a_threshold_and_no_histogram_without_a_number(
    shadow_server: ShadowServer, telemetry: Telemetry
) -> None:
    shadow_server.reply = lambda req: json_reply({"score": 0.9, "label": "b"})
    mw = make(
        json_app({"score": 0.1, "label": "a"}),
        shadow_server,
        telemetry,
        compare=Compare(fields=["/score", "/label"]),
    )
    run(drive(mw, http_scope(), [BODY]))
    assert mw.shadow.flush(10)
    assert histogram_points(telemetry, "shadow.decision_flips") == {}
    (point,) = histogram_points(telemetry, "shadow.score.abs_diff").values()
    assert point.sum == pytest.approx(0.8)


def test_a_flip_without_a_numeric_field_is_counted_and_no_difference_is_recorded(
    shadow_server: ShadowServer, telemetry: Telemetry
) -> None:
    shadow_server.reply = lambda req: json_reply({"label": "a", "scores": [0.9]})
    mw = make(
        json_app({"label": "a", "scores": [0.1]}),
        shadow_server,
        telemetry,
        compare=Compare(fields=["/label", "/scores"], threshold=0.5),  # a number inside an array
    )
    run(drive(mw, http_scope(), [BODY]))
    assert mw.shadow.flush(10)
    assert histogram_points(telemetry, "shadow.score.abs_diff") == {}
    assert histogram_points(telemetry, "shadow.decision_flips")[("v2", "POST /predict")].value == 1
