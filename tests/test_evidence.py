"""No agreement without evidence (issue 17, runtime side): a compared field neither answer has
is not a match, and a status-only difference says so."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from shadow_middleware import Compare, Shadow, ShadowASGIMiddleware, ShadowConfig, ShadowTarget

from .asgi_helpers import drive, http_scope, json_app, run
from .conftest import ShadowServer, Telemetry, json_reply


def shadowed(
    server: ShadowServer,
    telemetry: Telemetry,
    primary: Any,
    *,
    primary_status: int = 200,
    requests: int = 1,
    **config: Any,
) -> list[dict[str, Any]]:
    cfg = ShadowConfig(targets=[ShadowTarget("v2", url=server.url + "/s")], **config)
    shadow = Shadow(cfg, tracer_provider=telemetry.tracer_provider, meter_provider=telemetry.meter_provider)
    mw = ShadowASGIMiddleware(json_app(primary, status=primary_status), shadow=shadow)
    for _ in range(requests):
        assert run(drive(mw, http_scope(), [b"{}"])).status == primary_status
    assert shadow.flush(5)
    shadow.close()
    return [dict(s.attributes or {}) for s in telemetry.spans()]


def test_a_compared_field_absent_from_both_answers_is_not_a_match(
    shadow_server: ShadowServer, telemetry: Telemetry, caplog: pytest.LogCaptureFixture
) -> None:
    # The case: a typo in compare.fields, a candidate that moves the score by +0.3.
    shadow_server.reply = lambda req: json_reply({"churn_probability": 0.9})
    caplog.set_level(logging.WARNING, logger="shadow_middleware")
    spans = shadowed(
        shadow_server,
        telemetry,
        {"churn_probability": 0.6},
        requests=5,
        compare=Compare(fields=["/churn_probabilty"]),
    )
    assert len(spans) == 5
    for attrs in spans:
        assert attrs["shadow.outcome"] == "skipped", attrs
        assert attrs["shadow.reason"] == "field_missing"
        assert attrs["shadow.missing_fields"] == "/churn_probabilty"
    warnings = [r for r in caplog.records if "/churn_probabilty" in r.getMessage()]
    assert len(warnings) == 1, [r.getMessage() for r in caplog.records]  # once per engine and pointer
    assert warnings[0].levelno == logging.WARNING
    assert "compare.fields" in warnings[0].getMessage()


def test_a_missing_field_next_to_a_differing_one_stays_a_mismatch_and_names_the_missing_one(
    shadow_server: ShadowServer, telemetry: Telemetry
) -> None:
    shadow_server.reply = lambda req: json_reply({"score": 0.9})
    (attrs,) = shadowed(
        shadow_server, telemetry, {"score": 0.6}, compare=Compare(fields=["/score", "/lable", "/x~1y"])
    )
    assert attrs["shadow.outcome"] == "mismatch"
    assert attrs["shadow.reason"] == "field_missing"
    assert attrs["shadow.missing_fields"] == "/lable,/x~1y"
    assert attrs["shadow.diff.paths"] == ("/score",)


def test_fields_present_on_both_sides_match_as_before(
    shadow_server: ShadowServer, telemetry: Telemetry
) -> None:
    shadow_server.reply = lambda req: json_reply({"score": 0.6, "model": "v2"})
    (attrs,) = shadowed(
        shadow_server, telemetry, {"score": 0.6, "model": "v1"}, compare=Compare(fields=["/score"])
    )
    assert attrs["shadow.outcome"] == "match"
    assert "shadow.reason" not in attrs and "shadow.missing_fields" not in attrs


def test_an_error_answer_without_the_field_on_both_sides_is_not_field_missing(
    shadow_server: ShadowServer, telemetry: Telemetry
) -> None:
    # Production's own 422 carries no score; neither does the candidate's: the same answer.
    shadow_server.reply = lambda req: json_reply({"detail": "bad input"}, status=422)
    (attrs,) = shadowed(
        shadow_server,
        telemetry,
        {"detail": "bad input"},
        primary_status=422,
        compare=Compare(fields=["/score"]),
    )
    assert attrs["shadow.outcome"] == "match"
    assert "shadow.missing_fields" not in attrs


@pytest.mark.parametrize(
    ("primary_status", "candidate_status"), [(200, 404), (503, 200), (422, 200), (200, 201)]
)
def test_a_status_only_difference_has_its_reason(
    shadow_server: ShadowServer, telemetry: Telemetry, primary_status: int, candidate_status: int
) -> None:
    shadow_server.reply = lambda req: json_reply({"score": 0.5}, status=candidate_status)
    (attrs,) = shadowed(shadow_server, telemetry, {"score": 0.5}, primary_status=primary_status)
    assert attrs["shadow.outcome"] == "mismatch"
    assert attrs["shadow.reason"] == "status_mismatch"
    assert attrs["shadow.primary.status_code"] == primary_status
    assert attrs["shadow.candidate.status_code"] == candidate_status


def test_a_body_difference_under_different_statuses_is_a_plain_mismatch(
    shadow_server: ShadowServer, telemetry: Telemetry
) -> None:
    shadow_server.reply = lambda req: json_reply({"detail": "Not Found"}, status=404)
    (attrs,) = shadowed(shadow_server, telemetry, {"score": 0.5})
    assert attrs["shadow.outcome"] == "mismatch"
    assert "shadow.reason" not in attrs  # the bodies differ too: the diff paths say what
    assert attrs["shadow.primary.status_code"] == 200
    assert attrs["shadow.candidate.status_code"] == 404
