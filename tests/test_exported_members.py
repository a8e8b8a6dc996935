"""Pins the public API: names, and the constructor keywords the contract promises."""

from __future__ import annotations

import inspect

import shadow_middleware


def test_exported_members() -> None:
    # Subpackages (``report``, once something imported it) are not names of the API.
    exported = {
        name
        for name in dir(shadow_middleware)
        if not name.startswith("_") and not inspect.ismodule(getattr(shadow_middleware, name))
    }
    assert set(shadow_middleware.__all__) - {"__version__"} == exported
    assert sorted(shadow_middleware.__all__) == sorted(
        [
            "Compare",
            "Shadow",
            "ShadowASGIMiddleware",
            "ShadowConfig",
            "ShadowFlask",
            "ShadowStatsApp",
            "ShadowTarget",
            "ShadowWSGIMiddleware",
            "__version__",
        ]
    )
    for name in exported:
        assert getattr(shadow_middleware, name).__module__ == "shadow_middleware"


def defaults(obj: object) -> dict[str, object]:
    sig = inspect.signature(obj)  # type: ignore[arg-type]
    return {
        name: (p.default if p.default is not inspect.Parameter.empty else "<required>")
        for name, p in sig.parameters.items()
        if name != "self"
    }


def test_contract_signatures() -> None:
    assert defaults(shadow_middleware.ShadowTarget) == {
        "name": "<required>",
        "url": None,
        "base_url": None,
        "sample_rate": 1.0,
        "timeout": 5.0,
        "max_concurrency": 32,
        "headers": None,
        "ca_file": None,
        "client_cert": None,
        "client_key": None,
    }
    config = defaults(shadow_middleware.ShadowConfig)
    assert list(config)[:15] == [
        "targets",
        "routes",
        "compare",
        "max_body_bytes",
        "max_response_bytes",
        "max_queue",
        "drop_headers",
        "sample_key",
        "correlation_id",
        "enabled",
        "primary_timeout",
        "drain_timeout",
        "circuit_failures",
        "circuit_cooldown",
        "span_placement",
    ]
    assert config["routes"] == ("POST /predict",)
    assert config["max_body_bytes"] == config["max_response_bytes"] == 1_048_576
    assert config["max_queue"] == 1000
    assert config["drop_headers"] == ("authorization", "cookie", "proxy-authorization", "x-api-key")
    assert config["sample_key"] is None and config["correlation_id"] is None and config["enabled"] is True
    # Issue 13: the helper process is opt-in; thread mode stays the default.
    assert list(config)[-3:] == ["isolation", "telemetry_setup", "cpu_budget"]
    assert config["isolation"] == "thread" and config["telemetry_setup"] is None
    # Issue 19: a CPU budget for shadow work in the app process, a tenth of a core by default.
    assert config["cpu_budget"] == 0.10
    # opt-in request inputs on the spans (issue 14): a keyword, wherever it sits after span_placement
    assert config["record_inputs"] == ()
    assert defaults(shadow_middleware.Compare) == {
        "fields": (),
        "ignore": (),
        "abs_tol": 0.0,
        "rel_tol": 0.0,
        "threshold": None,
        "record_values": True,
    }
    assert defaults(shadow_middleware.Shadow) == {
        "config": "<required>",
        "tracer_provider": None,
        "meter_provider": None,
    }
    for middleware in (shadow_middleware.ShadowASGIMiddleware, shadow_middleware.ShadowWSGIMiddleware):
        assert defaults(middleware) == {
            "app": "<required>",
            "shadow": None,
            "config": None,
            "tracer_provider": None,
            "meter_provider": None,
            "strict": None,  # issue 17: None = SHADOW_STRICT decides
        }
    for method, params in {"flush": {"timeout": 5.0}, "close": {"timeout": 5.0}, "stats": {}}.items():
        assert defaults(getattr(shadow_middleware.Shadow, method)) == params
