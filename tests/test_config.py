"""Validation and behaviour of ShadowTarget, ShadowConfig and Compare.

Contract: invalid configuration raises ``ValueError`` at construction, and the message
names the field it is about (``ShadowTarget.sample_rate``, ``ShadowConfig.max_queue`` ...).
"""

from __future__ import annotations

import inspect
import math
import re
from typing import Any

import pytest

from shadow_middleware import Compare, ShadowConfig, ShadowTarget
from shadow_middleware._config import RouteTable
from shadow_middleware._wire import ShadowURL, shadow_url

URL = "http://model-v2.internal:8080/score"


def target(name: str = "v2", **kwargs: Any) -> ShadowTarget:
    if "url" not in kwargs and "base_url" not in kwargs:
        kwargs["url"] = URL
    return ShadowTarget(name, **kwargs)


def config(**kwargs: Any) -> ShadowConfig:
    kwargs.setdefault("targets", [target()])
    return ShadowConfig(**kwargs)


def raises_for(field: str) -> Any:
    return pytest.raises(ValueError, match=re.escape(field))


# ---- ShadowTarget ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        pytest.param({}, "ShadowTarget.url", id="neither-url-nor-base_url"),
        pytest.param({"url": URL, "base_url": "http://h:1/"}, "ShadowTarget.url", id="both-url-and-base_url"),
        pytest.param({"url": "ftp://h/x"}, "ShadowTarget.url", id="url-ftp-scheme"),
        pytest.param({"base_url": "ftp://h/"}, "ShadowTarget.base_url", id="base_url-ftp-scheme"),
        pytest.param({"url": "h.example/x"}, "ShadowTarget.url", id="url-no-scheme"),
        pytest.param({"url": "http:///score"}, "ShadowTarget.url", id="url-missing-host"),
        pytest.param({"url": "http://"}, "ShadowTarget.url", id="url-empty-authority"),
        pytest.param({"base_url": "https:///api"}, "ShadowTarget.base_url", id="base_url-missing-host"),
        pytest.param({"url": "http://user:pw@h/x"}, "ShadowTarget.url", id="url-credentials"),
        pytest.param({"url": "http://user@h/x"}, "ShadowTarget.url", id="url-username-only"),
        pytest.param({"base_url": "http://u:p@h/"}, "ShadowTarget.base_url", id="base_url-credentials"),
        pytest.param({"url": "http://h/x?a=1"}, "ShadowTarget.url", id="url-with-query"),
        pytest.param({"base_url": "http://h/?a=1"}, "ShadowTarget.base_url", id="base_url-with-query"),
        pytest.param({"url": "http://h/x#frag"}, "ShadowTarget.url", id="url-with-fragment"),
        pytest.param({"url": "http://h:notaport/x"}, "ShadowTarget.url", id="url-bad-port"),
        pytest.param({"url": 42}, "ShadowTarget.url", id="url-not-a-string"),
        pytest.param({"sample_rate": -0.01}, "ShadowTarget.sample_rate", id="sample_rate-negative"),
        pytest.param({"sample_rate": 1.01}, "ShadowTarget.sample_rate", id="sample_rate-above-1"),
        pytest.param({"sample_rate": math.nan}, "ShadowTarget.sample_rate", id="sample_rate-nan"),
        pytest.param({"sample_rate": math.inf}, "ShadowTarget.sample_rate", id="sample_rate-inf"),
        pytest.param({"sample_rate": True}, "ShadowTarget.sample_rate", id="sample_rate-bool-true"),
        pytest.param({"sample_rate": False}, "ShadowTarget.sample_rate", id="sample_rate-bool-false"),
        pytest.param({"sample_rate": "0.5"}, "ShadowTarget.sample_rate", id="sample_rate-string"),
        pytest.param({"timeout": 0}, "ShadowTarget.timeout", id="timeout-zero"),
        pytest.param({"timeout": 0.0}, "ShadowTarget.timeout", id="timeout-zero-float"),
        pytest.param({"timeout": -1.5}, "ShadowTarget.timeout", id="timeout-negative"),
        pytest.param({"timeout": math.nan}, "ShadowTarget.timeout", id="timeout-nan"),
        pytest.param({"max_concurrency": 0}, "ShadowTarget.max_concurrency", id="max_concurrency-zero"),
        pytest.param({"max_concurrency": -3}, "ShadowTarget.max_concurrency", id="max_concurrency-negative"),
        pytest.param({"max_concurrency": 4.0}, "ShadowTarget.max_concurrency", id="max_concurrency-float"),
        pytest.param({"max_concurrency": True}, "ShadowTarget.max_concurrency", id="max_concurrency-bool"),
        pytest.param({"headers": {"x-token": "a\r\nb"}}, "ShadowTarget.headers", id="header-value-crlf"),
        pytest.param({"headers": {"x-token": "a\nb"}}, "ShadowTarget.headers", id="header-value-lf"),
        pytest.param({"headers": {"x-token": "a\rb"}}, "ShadowTarget.headers", id="header-value-cr"),
        pytest.param({"headers": {"x-token": 5}}, "ShadowTarget.headers", id="header-value-not-str"),
        pytest.param({"headers": {"bad name": "v"}}, "ShadowTarget.headers", id="header-name-space"),
        pytest.param({"headers": {"x\r\ny": "v"}}, "ShadowTarget.headers", id="header-name-crlf"),
    ],
)
def test_shadow_target_rejects(kwargs: dict[str, Any], field: str) -> None:
    if "url" not in kwargs and "base_url" not in kwargs and field != "ShadowTarget.url":
        kwargs = {"url": URL, **kwargs}
    with raises_for(field):
        ShadowTarget("v2", **kwargs)


@pytest.mark.parametrize("name", ["", "   ", "has space", "a/b", 7, None])
def test_shadow_target_rejects_bad_name(name: Any) -> None:
    with raises_for("ShadowTarget.name"):
        ShadowTarget(name, url=URL)


def test_shadow_target_defaults() -> None:
    t = ShadowTarget("v2", url=URL)
    assert t.sample_rate == 1.0
    assert t.timeout == 5.0
    assert t.max_concurrency == 32
    assert dict(t.headers) == {}
    assert t.url == URL
    assert t.base_url is None


@pytest.mark.parametrize("rate", [0, 0.0, 0.25, 1, 1.0])
def test_shadow_target_accepts_sample_rate_bounds(rate: float) -> None:
    assert ShadowTarget("v2", url=URL, sample_rate=rate).sample_rate == rate


def test_shadow_target_repr_hides_header_values() -> None:
    secret = "s3cr3t-token-value"
    other = "another-secret-0123"
    t = ShadowTarget("v2", url=URL, headers={"authorization": f"Bearer {secret}", "x-api-key": other})
    text = repr(t)
    assert secret not in text
    assert other not in text
    # The names are still useful for debugging and are shown.
    assert "authorization" in text
    assert "x-api-key" in text
    assert "v2" in text
    # Headers are still sent: the values are kept on the object.
    assert t.headers["authorization"] == f"Bearer {secret}"


@pytest.mark.parametrize(
    ("url", "path", "query", "expected"),
    [
        ("http://h:8080/score", "/predict", "a=1&b=2", "http://h:8080/score?a=1&b=2"),
        ("http://h:8080/score", "/predict", "", "http://h:8080/score"),
        ("https://h:8443/v2/score", "/other/path", "x=%20", "https://h:8443/v2/score?x=%20"),
    ],
)
def test_shadow_url_url_mode_appends_only_the_query(url: str, path: str, query: str, expected: str) -> None:
    assert on_the_wire(shadow_url(ShadowTarget("v2", url=url), path, query)) == expected


def on_the_wire(url: ShadowURL) -> str:
    """The URL a shadow request goes to (``full`` is the span's, with query values redacted)."""
    return f"{url.scheme}://{url.host}:{url.port}{url.target}"


@pytest.mark.parametrize(
    ("base_url", "path", "query", "expected"),
    [
        ("http://h:8080", "/predict", "", "http://h:8080/predict"),
        ("http://h:8080/", "/predict", "", "http://h:8080/predict"),
        ("http://h:8080/api", "/predict", "a=1", "http://h:8080/api/predict?a=1"),
        ("http://h:8080/api/", "/predict", "a=1", "http://h:8080/api/predict?a=1"),
        ("https://h:8443/api/v2/", "/items/7", "q=x%2Fy", "https://h:8443/api/v2/items/7?q=x%2Fy"),
    ],
)
def test_shadow_url_base_url_mode_appends_path_and_query(
    base_url: str, path: str, query: str, expected: str
) -> None:
    got = on_the_wire(shadow_url(ShadowTarget("v2", base_url=base_url), path, query))
    assert got == expected
    assert "//" not in got.split("://", 1)[1]


# ---- Compare --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        pytest.param({"abs_tol": -0.1}, "Compare.abs_tol", id="abs_tol-negative"),
        pytest.param({"abs_tol": math.nan}, "Compare.abs_tol", id="abs_tol-nan"),
        pytest.param({"abs_tol": "0.1"}, "Compare.abs_tol", id="abs_tol-string"),
        pytest.param({"rel_tol": math.nan}, "Compare.rel_tol", id="rel_tol-nan"),
        pytest.param({"rel_tol": -1e-9}, "Compare.rel_tol", id="rel_tol-negative"),
        pytest.param({"rel_tol": math.inf}, "Compare.rel_tol", id="rel_tol-inf"),
        pytest.param({"threshold": "0.5"}, "Compare.threshold", id="threshold-string"),
        pytest.param({"threshold": math.nan}, "Compare.threshold", id="threshold-nan"),
        pytest.param({"threshold": True}, "Compare.threshold", id="threshold-bool"),
        pytest.param({"record_values": 1}, "Compare.record_values", id="record_values-int"),
        pytest.param({"record_values": "yes"}, "Compare.record_values", id="record_values-string"),
        pytest.param({"record_values": None}, "Compare.record_values", id="record_values-none"),
        pytest.param({"fields": "/score"}, "Compare.fields", id="fields-plain-string"),
        pytest.param({"fields": ["score"]}, "Compare.fields", id="fields-pointer-no-slash"),
        pytest.param({"fields": ["/a~2"]}, "Compare.fields", id="fields-bad-escape"),
        pytest.param({"fields": ["/a~"]}, "Compare.fields", id="fields-trailing-tilde"),
        pytest.param({"fields": [3]}, "Compare.fields", id="fields-non-string-item"),
        pytest.param({"fields": {"/a": "b"}}, "Compare.fields", id="fields-mapping-bad-candidate"),
        pytest.param({"fields": {"a": "/b"}}, "Compare.fields", id="fields-mapping-bad-primary"),
        pytest.param({"ignore": ["abc"]}, "Compare.ignore", id="ignore-no-slash"),
        pytest.param({"ignore": ["/a~2"]}, "Compare.ignore", id="ignore-bad-escape"),
        pytest.param({"ignore": "/id"}, "Compare.ignore", id="ignore-plain-string"),
    ],
)
def test_compare_rejects(kwargs: dict[str, Any], field: str) -> None:
    with raises_for(field):
        Compare(**kwargs)


def test_compare_defaults() -> None:
    c = Compare()
    assert c.fields == ()
    assert c.ignore == ()
    assert c.abs_tol == 0.0
    assert c.rel_tol == 0.0
    assert c.threshold is None
    assert c.record_values is True


def test_compare_fields_list_and_mapping() -> None:
    assert Compare(fields=["/a", "/b/c"]).fields == (("/a", "/a"), ("/b/c", "/b/c"))
    assert Compare(fields={"/score": "/out/score"}).fields == (("/score", "/out/score"),)


@pytest.mark.parametrize("threshold", [0, 0.5, -2, 10])
def test_compare_accepts_numeric_threshold(threshold: float) -> None:
    assert Compare(threshold=threshold).threshold == threshold


# ---- ShadowConfig ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        pytest.param({"targets": []}, "ShadowConfig.targets", id="targets-empty"),
        pytest.param({"targets": ()}, "ShadowConfig.targets", id="targets-empty-tuple"),
        pytest.param({"targets": target()}, "ShadowConfig.targets", id="targets-single-not-list"),
        pytest.param({"targets": "v2"}, "ShadowConfig.targets", id="targets-string"),
        pytest.param({"targets": 3}, "ShadowConfig.targets", id="targets-int"),
        pytest.param({"targets": None}, "ShadowConfig.targets", id="targets-none"),
        pytest.param({"targets": [target(), "v3"]}, "ShadowConfig.targets", id="targets-item-not-target"),
        pytest.param(
            {"targets": [target("v2"), target("v2", url="http://other:1/x")]},
            "ShadowConfig.targets",
            id="targets-duplicate-name",
        ),
        pytest.param({"routes": 3}, "ShadowConfig.routes", id="routes-int"),
        pytest.param({"routes": "POST /predict"}, "ShadowConfig.routes", id="routes-plain-string"),
        pytest.param({"routes": [3]}, "ShadowConfig.routes", id="routes-item-int"),
        pytest.param({"compare": {"fields": ["/a"]}}, "ShadowConfig.compare", id="compare-dict"),
        pytest.param({"compare": "whole"}, "ShadowConfig.compare", id="compare-string"),
        pytest.param({"max_body_bytes": -1}, "ShadowConfig.max_body_bytes", id="max_body_bytes-negative"),
        pytest.param({"max_body_bytes": 1.5}, "ShadowConfig.max_body_bytes", id="max_body_bytes-float"),
        pytest.param(
            {"max_response_bytes": 0}, "ShadowConfig.max_response_bytes", id="max_response_bytes-zero"
        ),
        pytest.param(
            {"max_response_bytes": -5}, "ShadowConfig.max_response_bytes", id="max_response_bytes-negative"
        ),
        pytest.param({"max_queue": -1}, "ShadowConfig.max_queue", id="max_queue-negative"),
        pytest.param({"max_queue": True}, "ShadowConfig.max_queue", id="max_queue-bool"),
        pytest.param({"drop_headers": "authorization"}, "ShadowConfig.drop_headers", id="drop_headers-str"),
        pytest.param({"drop_headers": ["cookie", 1]}, "ShadowConfig.drop_headers", id="drop_headers-item"),
        pytest.param({"drop_headers": 5}, "ShadowConfig.drop_headers", id="drop_headers-int"),
        pytest.param({"sample_key": "x-user-id"}, "ShadowConfig.sample_key", id="sample_key-no-kind"),
        pytest.param({"sample_key": "cookie:uid"}, "ShadowConfig.sample_key", id="sample_key-unknown-kind"),
        pytest.param({"sample_key": "header:"}, "ShadowConfig.sample_key", id="sample_key-empty-header"),
        pytest.param({"sample_key": "header:x y"}, "ShadowConfig.sample_key", id="sample_key-bad-header"),
        pytest.param({"sample_key": "json:abc"}, "ShadowConfig.sample_key", id="sample_key-bad-pointer"),
        pytest.param({"sample_key": "json:/a~2"}, "ShadowConfig.sample_key", id="sample_key-bad-escape"),
        pytest.param({"sample_key": 7}, "ShadowConfig.sample_key", id="sample_key-int"),
        pytest.param({"correlation_id": "x-request-id"}, "ShadowConfig.correlation_id", id="corr-no-kind"),
        pytest.param({"correlation_id": "query:id"}, "ShadowConfig.correlation_id", id="corr-unknown-kind"),
        pytest.param({"correlation_id": "json:abc"}, "ShadowConfig.correlation_id", id="corr-bad-pointer"),
        pytest.param({"correlation_id": "json:/a~2"}, "ShadowConfig.correlation_id", id="corr-bad-escape"),
        pytest.param({"correlation_id": "header:"}, "ShadowConfig.correlation_id", id="corr-empty-header"),
        pytest.param({"enabled": 1}, "ShadowConfig.enabled", id="enabled-int"),
        pytest.param({"enabled": "false"}, "ShadowConfig.enabled", id="enabled-string"),
        pytest.param({"enabled": None}, "ShadowConfig.enabled", id="enabled-none"),
        pytest.param({"primary_timeout": 0}, "ShadowConfig.primary_timeout", id="primary_timeout-zero"),
        pytest.param({"drain_timeout": -1}, "ShadowConfig.drain_timeout", id="drain_timeout-negative"),
    ],
)
def test_shadow_config_rejects(kwargs: dict[str, Any], field: str) -> None:
    with raises_for(field):
        config(**kwargs)


@pytest.mark.parametrize(
    "route",
    [
        pytest.param("POST", id="method-only"),
        pytest.param("POST predict", id="path-without-slash"),
        pytest.param("GET /a/{b", id="unclosed-param"),
        pytest.param("GET /a/x{b}", id="param-not-whole-segment"),
        pytest.param("POST /predict extra", id="three-parts"),
        pytest.param("PO ST /predict", id="space-in-method"),
        pytest.param("G(ET /predict", id="non-token-method"),
    ],
)
def test_shadow_config_rejects_malformed_route_strings(route: str) -> None:
    # Always a ValueError naming the route ...
    with pytest.raises(ValueError, match=r"routes"):
        config(routes=["POST /ok", route])


@pytest.mark.parametrize(
    "route",
    [
        pytest.param("POST", id="method-only"),
        pytest.param("POST predict", id="path-without-slash"),
        pytest.param("GET /a/{b", id="unclosed-param"),
    ],
)
def test_shadow_config_malformed_route_message_names_shadowconfig_routes(route: str) -> None:
    # ... but the contract is that the message names the field as "ShadowConfig.routes".
    with raises_for("ShadowConfig.routes"):
        config(routes=[route])


def test_shadow_config_defaults() -> None:
    t = target()
    cfg = ShadowConfig(targets=[t])
    assert cfg.targets == (t,)
    assert cfg.routes == ("POST /predict",)
    assert cfg.max_body_bytes == 1_048_576
    assert cfg.max_response_bytes == 1_048_576
    assert cfg.max_queue == 1000
    assert cfg.drop_headers == frozenset({"authorization", "cookie", "proxy-authorization", "x-api-key"})
    assert isinstance(cfg.drop_headers, frozenset)
    assert cfg.enabled is True
    assert cfg.sample_key is None
    assert cfg.correlation_id is None
    assert isinstance(cfg.compare, Compare)
    assert cfg.compare.fields == ()


@pytest.mark.parametrize("targets", [[target()], (target(),), (t for t in [target()])])
def test_shadow_config_accepts_any_sequence_of_targets(targets: Any) -> None:
    assert [t.name for t in config(targets=targets).targets] == ["v2"]


def test_shadow_config_accepts_several_distinct_targets() -> None:
    a, b = target("v2"), target("v3", url="http://other:9000/x")
    assert config(targets=[a, b]).targets == (a, b)


@pytest.mark.parametrize(("max_queue", "max_body"), [(0, 0), (1, 1), (10_000, 50_000_000)])
def test_shadow_config_accepts_integer_bounds(max_queue: int, max_body: int) -> None:
    cfg = config(max_queue=max_queue, max_body_bytes=max_body, max_response_bytes=1)
    assert (cfg.max_queue, cfg.max_body_bytes, cfg.max_response_bytes) == (max_queue, max_body, 1)


def test_drop_headers_are_lowercased() -> None:
    given = ["Authorization", "X-Internal-Token", "COOKIE"]
    cfg = config(drop_headers=given)
    assert cfg.drop_headers == frozenset(h.lower() for h in given)
    assert isinstance(cfg.drop_headers, frozenset)


def test_drop_headers_may_be_empty() -> None:
    assert config(drop_headers=[]).drop_headers == frozenset()


@pytest.mark.parametrize(
    ("spec", "kind", "name"),
    [
        ("header:X-User-Id", "header", "x-user-id"),
        ("json:/user/id", "json", "/user/id"),
        ("json:/a~1b/c~0d", "json", "/a~1b/c~0d"),
    ],
)
def test_sample_key_and_correlation_id_sources(spec: str, kind: str, name: str) -> None:
    cfg = config(sample_key=spec, correlation_id=spec)
    for source in (cfg.sample_source, cfg.correlation_source):
        assert source is not None
        assert source.kind == kind
        assert source.name == name
    assert cfg.sample_key == spec
    assert cfg.correlation_id == spec


def test_json_source_tokens_are_unescaped() -> None:
    cfg = config(sample_key="json:/a~1b/c~0d/0")
    assert cfg.sample_source is not None
    assert cfg.sample_source.tokens == ("a/b", "c~d", "0")


def test_enabled_false_is_accepted() -> None:
    assert config(enabled=False).enabled is False


def test_config_is_immutable() -> None:
    cfg = config()
    with pytest.raises(AttributeError):
        cfg.max_queue = 5  # type: ignore[misc]
    t = target()
    with pytest.raises(AttributeError):
        t.sample_rate = 0.5  # type: ignore[misc]


# ---- route matching -------------------------------------------------------------------


def table(*routes: str) -> RouteTable:
    return RouteTable(config(routes=list(routes)).compiled_routes)


def test_default_route_matches_post_predict_only() -> None:
    t = RouteTable(config().compiled_routes)
    assert t.match("POST", "/predict") == "POST /predict"
    assert t.match("GET", "/predict") is None
    assert t.match("POST", "/predict/x") is None
    assert t.match("POST", "/predic") is None


@pytest.mark.parametrize(
    ("path", "matches"),
    [
        ("/models/churn/predict", True),
        ("/models/a-b.c~d/predict", True),
        ("/models//predict", False),  # empty segment
        ("/models/predict", False),  # missing segment
        ("/models/a/b/predict", False),  # two segments
        ("/models/churn/predict/", False),
        ("/models/churn/score", False),
    ],
)
def test_param_matches_exactly_one_non_empty_segment(path: str, matches: bool) -> None:
    pattern = "POST /models/{model}/predict"
    assert table(pattern).match("POST", path) == (pattern if matches else None)


def test_param_can_be_last_segment() -> None:
    pattern = "GET /items/{id}"
    t = table(pattern)
    assert t.match("GET", "/items/42") == pattern
    assert t.match("GET", "/items/") is None
    assert t.match("GET", "/items") is None
    assert t.match("GET", "/items/42/x") is None


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
def test_star_method_matches_any_method(method: str) -> None:
    t = table("* /predict", "* /users/{id}")
    assert t.match(method, "/predict") == "* /predict"
    assert t.match(method, "/users/9") == "* /users/{id}"
    assert t.match(method, "/other") is None


@pytest.mark.parametrize("spec", ["post /predict", "Post /predict", "POST /predict"])
def test_route_methods_are_normalised_to_upper_case(spec: str) -> None:
    cfg = config(routes=[spec])
    path = spec.split()[1]
    assert cfg.routes == (f"POST {path}",)
    assert [r.method for r in cfg.compiled_routes] == ["POST"]
    assert RouteTable(cfg.compiled_routes).match("POST", path) == f"POST {path}"


def test_method_must_match_for_non_star_routes() -> None:
    t = table("POST /predict", "PUT /items/{id}")
    assert t.match("GET", "/predict") is None
    assert t.match("POST", "/items/1") is None
    assert t.match("PUT", "/items/1") == "PUT /items/{id}"


def test_first_matching_route_wins() -> None:
    t = table("POST /a/{x}", "POST /a/{y}", "* /a/{z}")
    assert t.match("POST", "/a/1") == "POST /a/{x}"
    assert t.match("GET", "/a/1") == "* /a/{z}"


def test_static_and_dynamic_routes_coexist() -> None:
    t = table("GET /users/me", "GET /users/{id}", "POST /users/me")
    assert t.match("GET", "/users/me") == "GET /users/me"
    assert t.match("POST", "/users/me") == "POST /users/me"
    assert t.match("GET", "/users/7") == "GET /users/{id}"
    assert t.match("DELETE", "/users/me") is None


def test_static_route_with_wrong_method_falls_back_to_dynamic() -> None:
    t = table("POST /users/me", "GET /users/{id}")
    assert t.match("GET", "/users/me") == "GET /users/{id}"


# ---- route syntax: Flask's and Starlette's parameters -----------------------------------


@pytest.mark.parametrize(
    "pattern",
    [
        "POST /v1/models/<model_name>/predict",
        "POST /v1/models/<string:model_name>/predict",
        "POST /v1/models/{model_name}/predict",
        "POST /v1/models/{model_name:str}/predict",
    ],
)
def test_a_plain_parameter_matches_one_non_empty_segment_in_either_syntax(pattern: str) -> None:
    t = table(pattern)
    assert t.match("POST", "/v1/models/churn-v2/predict") == pattern
    assert t.match("POST", "/v1/models/a:b.c/predict") == pattern
    assert t.match("POST", "/v1/models//predict") is None
    assert t.match("POST", "/v1/models/a/b/predict") is None
    assert t.match("POST", "/v1/models/predict") is None
    assert t.match("GET", "/v1/models/churn-v2/predict") is None


@pytest.mark.parametrize("pattern", ["GET /items/<int:item_id>", "GET /items/{item_id:int}"])
@pytest.mark.parametrize(
    ("path", "matches"),
    [
        ("/items/42", True),
        ("/items/007", True),
        ("/items/4a", False),
        ("/items/-1", False),
        ("/items/1.5", False),
        ("/items/", False),
        ("/items/4/", False),
        ("/items/\u0664\u0662", False),  # Arabic-Indic digits: not ASCII
        ("/items/\u00b2", False),  # superscript two: str.isdigit() says yes
    ],
)
def test_an_int_parameter_matches_one_segment_of_ascii_digits(pattern: str, path: str, matches: bool) -> None:
    assert table(pattern).match("GET", path) == (pattern if matches else None)


@pytest.mark.parametrize("pattern", ["GET /files/<path:name>", "GET /files/{name:path}"])
@pytest.mark.parametrize(
    ("path", "matches"),
    [
        ("/files/a", True),
        ("/files/a/b/c.txt", True),
        ("/files/a/", True),  # the slash is part of the parameter, as in Flask and Starlette
        ("/files/", False),  # one or more segments: never empty
        ("/files", False),
        ("/files//a", False),  # the first segment is not empty
        ("/other/a", False),
    ],
)
def test_a_path_parameter_matches_one_or_more_segments(pattern: str, path: str, matches: bool) -> None:
    assert table(pattern).match("GET", path) == (pattern if matches else None)


def test_a_path_parameter_may_sit_anywhere() -> None:
    t = table("POST /repos/<path:repo>/issues/<int:number>", "GET /{prefix:path}/health")
    assert (
        t.match("POST", "/repos/org/team/project/issues/12") == "POST /repos/<path:repo>/issues/<int:number>"
    )
    assert t.match("POST", "/repos/org/issues/12") == "POST /repos/<path:repo>/issues/<int:number>"
    assert t.match("POST", "/repos/issues/12") is None
    assert t.match("POST", "/repos/org/issues/x") is None
    assert t.match("GET", "/a/b/health") == "GET /{prefix:path}/health"
    assert t.match("GET", "/health") is None


def test_literal_segments_are_matched_literally() -> None:
    # Regex metacharacters and colons inside literal segments (TF Serving's ``:predict``).
    t = table("POST /v1/models/churn:predict", "POST /a+b/{x}", "POST /v1.0/{m}/score")
    assert t.match("POST", "/v1/models/churn:predict") == "POST /v1/models/churn:predict"
    assert t.match("POST", "/a+b/1") == "POST /a+b/{x}"
    assert t.match("POST", "/aab/1") is None
    assert t.match("POST", "/v1.0/m/score") == "POST /v1.0/{m}/score"
    assert t.match("POST", "/v1x0/m/score") is None


def test_a_trailing_slash_is_matched_exactly() -> None:
    t = table("POST /predict", "POST /score/", "POST /items/<int:i>/")
    assert t.match("POST", "/predict") == "POST /predict"
    assert t.match("POST", "/predict/") is None
    assert t.match("POST", "/score/") == "POST /score/"
    assert t.match("POST", "/score") is None
    assert t.match("POST", "/items/1/") == "POST /items/<int:i>/"
    assert t.match("POST", "/items/1") is None
    assert table("GET /").match("GET", "/") == "GET /"


@pytest.mark.parametrize(
    ("route", "fragment"),
    [
        pytest.param(
            "POST /v1/models/:model/predict", "':model' is not a parameter: write '<model>'", id="colon"
        ),
        pytest.param("GET /static/*", "'*' is not a wildcard here", id="star"),
        pytest.param("GET /static/*.js", "'*' is not a wildcard here", id="star-in-segment"),
        pytest.param("GET /x/<float:x>", "unsupported converter 'float'", id="flask-float"),
        pytest.param("GET /x/<uuid:x>", "unsupported converter 'uuid'", id="flask-uuid"),
        pytest.param("GET /x/<str:x>", "unsupported converter 'str'", id="starlette-name-in-flask"),
        pytest.param("GET /x/{x:float}", "unsupported converter 'float'", id="starlette-float"),
        pytest.param("GET /x/{x:string}", "unsupported converter 'string'", id="flask-name-in-starlette"),
        pytest.param("GET /x/<int(signed=True):x>", "unsupported converter", id="converter-arguments"),
        pytest.param("GET /x/{x", "malformed parameter '{x'", id="unclosed-brace"),
        pytest.param("GET /x/x}", "whole segment", id="unopened-brace"),
        pytest.param("GET /x/<x", "malformed parameter '<x'", id="unclosed-angle"),
        pytest.param("GET /x/{a:int:b}", "malformed parameter", id="two-colons"),
        pytest.param("GET /x/{}", "invalid parameter name ''", id="empty-name"),
        pytest.param("GET /x/<1a>", "invalid parameter name '1a'", id="bad-name"),
        pytest.param("GET /x/id-{id}", "whole segment", id="partial-segment"),
        pytest.param("GET /x//y", "empty segment ('//')", id="empty-segment"),
        pytest.param("GET //", "empty segment ('//')", id="double-slash-root"),
        pytest.param("GET /x/<a>/<int:a>", "parameter 'a' appears twice", id="duplicate-name"),
        pytest.param("GET /x?y=1", "without '?' or '#'", id="query"),
    ],
)
def test_unsupported_route_syntax_is_refused_with_the_field_and_a_hint(route: str, fragment: str) -> None:
    with pytest.raises(ValueError) as info:
        config(routes=["POST /ok", route])
    message = str(info.value)
    assert message.startswith("ShadowConfig.routes[1]: ")
    assert fragment in message
    if "appears twice" not in fragment and "'?'" not in fragment:
        assert "<int:name>" in message and "{name:path}" in message  # what is accepted


def test_every_bad_route_is_reported() -> None:
    with pytest.raises(ValueError) as info:
        config(routes=["POST /a/:x", "POST /ok", "GET /b/*"])
    lines = str(info.value).splitlines()
    assert [line.split(":")[0] for line in lines] == ["ShadowConfig.routes[0]", "ShadowConfig.routes[2]"]


@pytest.mark.parametrize("path", ["predict", "xpredict", "", "models/a/predict", "xmodels/a/predict", "*"])
def test_a_request_path_without_a_leading_slash_never_matches(path: str) -> None:
    # The matcher once dropped the first character unchecked: "xmodels/a/predict" matched.
    assert table("POST /predict", "POST /models/{m}/predict").match("POST", path) is None
    assert table("* /{anything:path}").match("POST", path) is None


def test_route_patterns_keep_their_spelling() -> None:
    cfg = config(routes=["post /v1/<name>/predict", "GET /{id:int}"])
    assert cfg.routes == ("POST /v1/<name>/predict", "GET /{id:int}")


# ---- repr: the constructor's parameters only ------------------------------------------


def test_reprs_show_the_constructor_parameters_only() -> None:
    cfg = config(
        routes=["POST /m/{m}/predict"],
        sample_key="header:x-user",
        correlation_id="json:/id",
        compare=Compare(fields=["/a"]),
        targets=[target(headers={"authorization": "Bearer s3cr3t"})],
    )
    text = repr(cfg)
    for internal in (
        "compiled_routes",
        "sample_source",
        "correlation_source",
        "field_tokens",
        "ignore_tokens",
    ):
        assert internal not in text
    assert "Route(" not in text and "Source(" not in text
    assert "s3cr3t" not in text  # targets keep their masked repr
    assert text.startswith("ShadowConfig(targets=(ShadowTarget(")
    for name in inspect.signature(ShadowConfig).parameters:
        assert f" {name}=" in text or text.startswith(f"ShadowConfig({name}="), name
    compare_text = repr(Compare(fields=["/a"], ignore=["/a/id"]))
    assert compare_text == (
        "Compare(fields=(('/a', '/a'),), ignore=('/a/id',), abs_tol=0.0, rel_tol=0.0, threshold=None, "
        "record_values=True)"
    )


# ---- Compare.ignore next to fields ----------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "ignore"),
    [
        (["/prediction"], ["/request_id"]),
        (["/prediction"], ["/prediction"]),  # the whole field: contradictory
        (["/result/score"], ["/result"]),  # above a field: never reached
        ({"/score": "/out/score"}, ["/out/score/ts"]),  # candidate pointers do not count
        (["/a", "/b"], ["/a/x", "/c"]),
    ],
)
def test_compare_refuses_ignore_pointers_that_could_never_apply(fields: Any, ignore: list[str]) -> None:
    with pytest.raises(
        ValueError, match=r"^Compare\.ignore: '.*' only applies to a whole-body comparison"
    ) as info:
        Compare(fields=fields, ignore=ignore)
    assert str(info.value).endswith("remove it or remove fields")


def test_compare_accepts_ignore_for_a_whole_body_or_below_a_field() -> None:
    assert Compare(ignore=["/request_id"]).ignore == ("/request_id",)
    assert Compare(fields=["/result"], ignore=["/result/ts"]).ignore_tokens == frozenset({("result", "ts")})
    assert Compare(fields={"/score": "/out/score"}, ignore=["/score/ts"]).ignore == ("/score/ts",)
    assert Compare(fields=["/a"], ignore=[]).ignore == ()


# ---- every bad field in one error -----------------------------------------------------


def test_shadow_config_reports_every_bad_field_first_one_first() -> None:
    with pytest.raises(ValueError) as info:
        config(max_queue=-1, routes=["POST /x/:id"], sample_key="cookie:x", enabled="yes", span_placement="x")
    assert str(info.value).splitlines() == [
        "ShadowConfig.routes[0]: ':id' is not a parameter: write '<id>' or '{id}' (accepted: whole-segment "
        "parameters <name>, <int:name>, <path:name>, {name}, {name:int}, {name:path})",
        "ShadowConfig.enabled: must be a bool, got 'yes'",
        "ShadowConfig.max_queue: must be >= 0, got -1",
        "ShadowConfig.span_placement: must be 'child' or 'link', got 'x'",
        "ShadowConfig.sample_key: must start with 'header:' or 'json:', got 'cookie:x'",
    ]
    # One bad field: exactly the message it always had.
    with pytest.raises(ValueError) as info:
        config(max_queue=-1)
    assert str(info.value) == "ShadowConfig.max_queue: must be >= 0, got -1"


def test_compare_reports_every_bad_field() -> None:
    with pytest.raises(ValueError) as info:
        Compare(fields=["score"], ignore=["x"], abs_tol=-1, rel_tol=math.nan, record_values=1)  # type: ignore[arg-type]
    assert [line.split(":")[0] for line in str(info.value).splitlines()] == [
        "Compare.fields",
        "Compare.ignore",
        "Compare.record_values",
        "Compare.abs_tol",
        "Compare.rel_tol",
    ]
