"""The TOML file and SHADOW_* environment layer (``shadow_middleware._configfile``) and its CLI.

It is reached through ``ShadowConfig.from_toml`` and ``ShadowConfig.from_env``.
Contract: the file mirrors the constructors one to one; every error is a ``ValueError``
naming its source (file or variable) and key path; the environment overrides the file;
``describe()`` writes the effective configuration back in the same layout, secrets masked.
"""

from __future__ import annotations

import inspect
import os
import re
import subprocess
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from shadow_middleware import Compare, ShadowConfig, ShadowTarget
from shadow_middleware.__main__ import main
from shadow_middleware._config import describe
from shadow_middleware._configerrors import _Where
from shadow_middleware._configfile import ConfigErrors, ConfigLoader

ROOT = Path(__file__).resolve().parent.parent

# Every option of every constructor, two targets, headers, compare fields as a mapping.
EXAMPLE = """\
# shadow.toml
routes = ["POST /predict", "POST /v1/{model}/score"]
max_body_bytes = 65_536
max_response_bytes = 262_144
max_queue = 200
drop_headers = ["authorization", "cookie", "x-session"]
sample_key = "header:x-user-id"
correlation_id = "json:/customer_id"
enabled = true
primary_timeout = 30.0
drain_timeout = 2.5
circuit_failures = 3
circuit_cooldown = 10
span_placement = "link"
record_inputs = ["/tenure_months", "/monthly_charges"]
forward_headers = ["x-session-id"]
isolation = "process"
telemetry_setup = "examples.churn.telemetry:helper_telemetry"
cpu_budget = 0.25

[compare]
ignore = []  # only for a whole-body comparison, or below a compared field
abs_tol = 0.01
rel_tol = 0.001
threshold = 0.5
record_values = false

[compare.fields]
"/churn_probability" = "/score"
"/make_offer" = "/make_offer"

[[targets]]
name = "churn-v2"
url = "http://127.0.0.1:5002/predict_shadow"
sample_rate = 0.25
timeout = 2
max_concurrency = 8

[targets.headers]
Authorization = "Bearer candidate-secret"
X-Team = "ml"

[[targets]]
name = "churn-v3"
base_url = "https://v3.internal:8443/api"
sample_rate = 0.1
timeout = 1.5
max_concurrency = 4
"""


def example_by_constructor() -> ShadowConfig:
    return ShadowConfig(
        targets=[
            ShadowTarget(
                name="churn-v2",
                url="http://127.0.0.1:5002/predict_shadow",
                sample_rate=0.25,
                timeout=2,
                max_concurrency=8,
                headers={"Authorization": "Bearer candidate-secret", "X-Team": "ml"},
            ),
            ShadowTarget(
                name="churn-v3",
                base_url="https://v3.internal:8443/api",
                sample_rate=0.1,
                timeout=1.5,
                max_concurrency=4,
            ),
        ],
        routes=["POST /predict", "POST /v1/{model}/score"],
        compare=Compare(
            fields={"/churn_probability": "/score", "/make_offer": "/make_offer"},
            ignore=[],
            abs_tol=0.01,
            rel_tol=0.001,
            threshold=0.5,
            record_values=False,
        ),
        max_body_bytes=65_536,
        max_response_bytes=262_144,
        max_queue=200,
        drop_headers=["authorization", "cookie", "x-session"],
        sample_key="header:x-user-id",
        correlation_id="json:/customer_id",
        enabled=True,
        primary_timeout=30.0,
        drain_timeout=2.5,
        circuit_failures=3,
        circuit_cooldown=10,
        span_placement="link",
        record_inputs=["/tenure_months", "/monthly_charges"],
        forward_headers=["x-session-id"],
        isolation="process",
        telemetry_setup="examples.churn.telemetry:helper_telemetry",
        cpu_budget=0.25,
    )


def keywords(cls: type) -> list[str]:
    return list(inspect.signature(cls).parameters)


def public(obj: Any, *, mask_headers: bool = False) -> dict[str, Any]:
    """The constructor-keyword attributes of a config object, nested objects expanded."""
    if isinstance(obj, ShadowConfig):
        out = {name: getattr(obj, name) for name in keywords(ShadowConfig)}
        out["targets"] = [public(t, mask_headers=mask_headers) for t in obj.targets]
        out["compare"] = public(obj.compare)
        return out
    out = {name: getattr(obj, name) for name in keywords(type(obj))}
    if isinstance(obj, ShadowTarget):
        out["headers"] = {k: "***" if mask_headers else v for k, v in obj.headers.items()}
    return out


def assert_same(got: ShadowConfig, want: ShadowConfig, *, mask_headers: bool = False) -> None:
    got_d, want_d = public(got, mask_headers=mask_headers), public(want, mask_headers=mask_headers)
    for key in want_d:
        assert got_d[key] == want_d[key], key
    assert got_d == want_d


def write(tmp_path: Path, text: str, name: str = "shadow.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


Load = Callable[[str], ShadowConfig]


@pytest.fixture
def load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Load:
    """Loads a TOML text with ``ShadowConfig.from_toml`` from ``shadow.toml`` in the working
    directory, so that errors name ``shadow.toml``."""
    directory = tmp_path / "load"
    directory.mkdir()
    monkeypatch.chdir(directory)

    def load(text: str) -> ShadowConfig:
        Path("shadow.toml").write_text(text, encoding="utf-8")
        return ShadowConfig.from_toml("shadow.toml")

    return load


def targets_base(*names: str) -> dict[str, Any]:
    """A ``base`` with targets of these names, as a file would configure them."""
    return {"targets": [{"name": name, "url": f"http://{name}.file/x"} for name in names]}


MINIMAL = '[[targets]]\nname = "churn-v2"\nurl = "http://127.0.0.1:5002/predict_shadow"\n'


def error_of(fn: Any, *args: Any, **kwargs: Any) -> str:
    with pytest.raises(ValueError) as info:
        fn(*args, **kwargs)
    return str(info.value)


# ---- the file mirrors the constructors --------------------------------------------------


def test_example_file_loads_like_the_constructor_call(tmp_path: Path) -> None:
    got = ShadowConfig.from_toml(write(tmp_path, EXAMPLE))
    want = example_by_constructor()
    assert_same(got, want)
    # Spot checks on what the comparison above covers, in case public() ever drifts.
    assert got.targets[0].headers == {"Authorization": "Bearer candidate-secret", "X-Team": "ml"}
    assert got.targets[1].base_url == "https://v3.internal:8443/api" and got.targets[1].url is None
    assert got.compare.fields == (("/churn_probability", "/score"), ("/make_offer", "/make_offer"))
    assert got.drop_headers == frozenset({"authorization", "cookie", "x-session"})
    assert got.circuit_cooldown == 10.0 and isinstance(got.circuit_cooldown, float)


def test_example_uses_every_keyword_of_every_constructor() -> None:
    """When a constructor gains a keyword, the example (and this layer) must follow."""
    data = tomllib.loads(EXAMPLE)
    assert set(data) == set(keywords(ShadowConfig))
    assert set(data["compare"]) == set(keywords(Compare))
    # The TLS files are paths that must exist (https only): tests/test_tls.py loads them from TOML and env.
    tls = {"ca_file", "client_cert", "client_key"}
    assert set(data["targets"][0]) | {"base_url"} | tls == set(keywords(ShadowTarget))


def test_every_keyword_has_a_known_kind() -> None:
    """Every keyword is type-checked, settable from the environment and written by describe()."""
    loader = ConfigLoader(ShadowConfig, ShadowTarget, Compare)
    for params in (loader.config_params, loader.target_params, loader.compare_params):
        assert all(p.kind != "raw" for p in params.values()), params


def test_minimal_file_gets_the_constructor_defaults(load: Load) -> None:
    assert_same(
        load(MINIMAL), ShadowConfig([ShadowTarget("churn-v2", url="http://127.0.0.1:5002/predict_shadow")])
    )


def test_compare_fields_as_a_list_of_pointers(load: Load) -> None:
    got = load(MINIMAL + '[compare]\nfields = ["/prediction", "/label"]\n')
    assert got.compare.fields == (("/prediction", "/prediction"), ("/label", "/label"))


def test_a_mapping_with_tuples_and_sets_is_accepted() -> None:
    """In-code data (``base=``) may use tuples and sets where TOML has arrays."""
    got = ShadowConfig.from_env(
        {},
        base={
            "targets": ({"name": "a", "url": "http://h/x"},),
            "routes": ("POST /a",),
            "drop_headers": frozenset({"cookie"}),
        },
    )
    assert got.routes == ("POST /a",) and got.drop_headers == frozenset({"cookie"})


# ---- unknown keys -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(
            MINIMAL.replace("[[targets]]", "max_qeue = 5\n[[targets]]"),
            "shadow.toml: max_qeue: unknown key (did you mean 'max_queue'?)",
            id="top-level",
        ),
        pytest.param(
            MINIMAL.replace("[[targets]]", "MAX_QUEUE = 5\n[[targets]]"),
            "shadow.toml: MAX_QUEUE: unknown key (did you mean 'max_queue'?)",
            id="top-level-upper-case",
        ),
        pytest.param(
            MINIMAL.replace("[[targets]]", "route = ['POST /x']\n[[targets]]"),
            "shadow.toml: route: unknown key (did you mean 'routes'?)",
            id="top-level-singular",
        ),
        pytest.param(
            MINIMAL + '[[targets]]\nname = "b"\nurl = "http://h/x"\ntimout = 2\n',
            "shadow.toml: targets[1].timout: unknown key (did you mean 'timeout'?)",
            id="second-target",
        ),
        pytest.param(
            MINIMAL + "[compare]\nabs_tolerance = 0.1\n",
            "shadow.toml: compare.abs_tolerance: unknown key (did you mean 'abs_tol'?)",
            id="compare",
        ),
        pytest.param(
            MINIMAL + "[target]\nname = 'x'\n",
            "shadow.toml: target: unknown key (did you mean 'targets'?)",
            id="singular-table",
        ),
    ],
)
def test_unknown_keys_name_the_key_path_and_a_suggestion(load: Load, text: str, message: str) -> None:
    assert error_of(load, text) == message


def test_an_unknown_key_without_a_close_match_lists_the_keys(load: Load) -> None:
    message = error_of(load, MINIMAL + "[compare]\nzzz = 1\n")
    assert message.startswith(
        "shadow.toml: compare.zzz: unknown key (expected one of: fields, ignore, abs_tol"
    )


# ---- wrong types ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(
            'max_queue = "50"\n' + MINIMAL,
            "shadow.toml: max_queue: expected an integer, got '50'",
            id="int-str",
        ),
        pytest.param(
            "max_queue = 5.0\n" + MINIMAL,
            "shadow.toml: max_queue: expected an integer, got 5.0",
            id="int-float",
        ),
        pytest.param(
            "max_queue = true\n" + MINIMAL,
            "shadow.toml: max_queue: expected an integer, got True",
            id="int-bool",
        ),
        pytest.param(
            'enabled = "yes"\n' + MINIMAL,
            "shadow.toml: enabled: expected true or false, got 'yes'",
            id="bool-str",
        ),
        pytest.param(
            'drain_timeout = "1"\n' + MINIMAL,
            "shadow.toml: drain_timeout: expected a number, got '1'",
            id="float-str",
        ),
        pytest.param(
            'routes = "POST /predict"\n' + MINIMAL,
            "shadow.toml: routes: expected a list of strings, got 'POST /predict'",
            id="list-str",
        ),
        pytest.param(
            'routes = ["POST /a", 5]\n' + MINIMAL,
            "shadow.toml: routes[1]: expected a string, got 5",
            id="list-item",
        ),
        pytest.param(
            "sample_key = 5\n" + MINIMAL, "shadow.toml: sample_key: expected a string, got 5", id="str-int"
        ),
        pytest.param(
            "correlation_id = 2024-01-01\n" + MINIMAL,
            "shadow.toml: correlation_id: expected a string, got datetime.date(2024, 1, 1)",
            id="str-date",
        ),
        pytest.param(
            '[targets]\nname = "a"\nurl = "http://h/x"\n',
            "shadow.toml: targets: expected an array of tables ([[targets]]), got a single table ([targets])",
            id="targets-table",
        ),
        pytest.param(
            'targets = ["a"]\n',
            "shadow.toml: targets[0]: expected a table, got 'a'",
            id="targets-item",
        ),
        pytest.param(
            "compare = 5\n" + MINIMAL,
            "shadow.toml: compare: expected a table ([compare]), got 5",
            id="compare",
        ),
        pytest.param(
            MINIMAL + "timeout = '2'\n",
            "shadow.toml: targets[0].timeout: expected a number, got '2'",
            id="target-timeout",
        ),
        pytest.param(
            MINIMAL + "max_concurrency = 2.5\n",
            "shadow.toml: targets[0].max_concurrency: expected an integer, got 2.5",
            id="target-int",
        ),
        pytest.param(
            MINIMAL + "headers = ['x']\n",
            "shadow.toml: targets[0].headers: expected a table of header names to values, got an array",
            id="headers-array",
        ),
        pytest.param(
            MINIMAL + "[targets.headers]\nX-Retries = 3\n",
            "shadow.toml: targets[0].headers.X-Retries: expected a string, got 3",
            id="header-value",
        ),
        pytest.param(
            MINIMAL + "[compare]\nfields = 5\n",
            "shadow.toml: compare.fields: expected a list of JSON pointers or a table {primary = candidate}, got 5",
            id="fields",
        ),
        pytest.param(
            MINIMAL + "[compare.fields]\n'/a' = 1\n",
            "shadow.toml: compare.fields./a: expected a string, got 1",
            id="fields-mapping-value",
        ),
        pytest.param(
            MINIMAL + "[compare]\nrecord_values = 1\n",
            "shadow.toml: compare.record_values: expected true or false, got 1",
            id="compare-bool",
        ),
    ],
)
def test_wrong_types_name_the_key(load: Load, text: str, message: str) -> None:
    assert error_of(load, text) == message


def test_the_top_level_must_be_a_table() -> None:
    # from_toml and from_env always hand the loader a table (a TOML document, a dict of
    # base): this is the loader's own guard, so it is called directly.
    loader = ConfigLoader(ShadowConfig, ShadowTarget, Compare)
    assert error_of(loader._build, ["x"], _Where("cfg")) == "cfg: expected a table of options, got an array"


# ---- constructor validation carries the key path ----------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(
            MINIMAL + "sample_rate = 1.5\n",
            "shadow.toml: targets[0].sample_rate: ShadowTarget.sample_rate: must be in [0, 1], got 1.5",
            id="target-sample-rate",
        ),
        pytest.param(
            MINIMAL + '[[targets]]\nname = "b"\nurl = "ftp://h/x"\n',
            "shadow.toml: targets[1].url: ShadowTarget.url: must be an http or https URL, got 'ftp://h/x'",
            id="second-target-url",
        ),
        pytest.param(
            MINIMAL + 'base_url = "http://h"\n',
            "shadow.toml: targets[0].url: ShadowTarget.url: give exactly one of url and base_url (target 'churn-v2')",
            id="url-and-base-url",
        ),
        pytest.param(
            MINIMAL + "[targets.headers]\n'bad name' = 'v'\n",
            "shadow.toml: targets[0].headers: ShadowTarget.headers: invalid header name 'bad name'",
            id="header-name",
        ),
        pytest.param(
            'routes = ["POST /a", "predict"]\n' + MINIMAL,
            "shadow.toml: routes[1]: ShadowConfig.routes[1]: must be 'METHOD /path', got 'predict'",
            id="route-index",
        ),
        pytest.param(
            "max_queue = -1\n" + MINIMAL,
            "shadow.toml: max_queue: ShadowConfig.max_queue: must be >= 0, got -1",
            id="max-queue",
        ),
        pytest.param(
            'sample_key = "cookie:x"\n' + MINIMAL,
            "shadow.toml: sample_key: ShadowConfig.sample_key: must start with 'header:' or 'json:', got 'cookie:x'",
            id="sample-key",
        ),
        pytest.param(
            MINIMAL + "[compare]\nabs_tol = -0.1\n",
            "shadow.toml: compare.abs_tol: Compare.abs_tol: must be >= 0.0, got -0.1",
            id="compare-abs-tol",
        ),
        pytest.param(
            MINIMAL + "[compare]\nfields = ['prediction']\n",
            "shadow.toml: compare.fields: Compare.fields: JSON pointer must be empty or start with '/', got 'prediction'",
            id="compare-pointer",
        ),
        pytest.param(
            MINIMAL + MINIMAL,
            "shadow.toml: targets: ShadowConfig.targets: duplicate target name 'churn-v2'",
            id="duplicate-target",
        ),
        pytest.param(
            "targets = []\n",
            "shadow.toml: targets: ShadowConfig.targets: needs at least one ShadowTarget",
            id="no-targets",
        ),
    ],
)
def test_constructor_errors_carry_the_key_path_and_their_own_text(
    load: Load, text: str, message: str
) -> None:
    assert error_of(load, text) == message


def test_missing_required_keys(load: Load) -> None:
    assert error_of(load, "max_queue = 5\n").startswith("shadow.toml: targets: missing; it is required")
    assert (
        error_of(load, '[[targets]]\nurl = "http://h/x"\n')
        == "shadow.toml: targets[0].name: missing; it is required"
    )


# ---- the file itself --------------------------------------------------------------------


def test_a_toml_syntax_error_names_the_file_and_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, 'routes = ["POST /predict"]\nmax_queue = 5\nenabled = yes\n')
    message = error_of(ShadowConfig.from_toml, path)
    assert message.startswith(f"{path}: line 3, column 11: invalid TOML: ")


def test_a_missing_file_is_a_value_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    assert (
        error_of(ShadowConfig.from_toml, path) == f"{path}: cannot read the file: No such file or directory"
    )


def test_a_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'sample_key = "header:\xe9"\n')
    assert error_of(ShadowConfig.from_toml, path).startswith(f"{path}: not UTF-8 text")


# ---- environment ------------------------------------------------------------------------


def test_env_overrides_every_kind_of_key() -> None:
    env = {
        "SHADOW_MAX_QUEUE": "50",
        "SHADOW_DRAIN_TIMEOUT": " 1.5 ",
        "SHADOW_ENABLED": "off",
        "SHADOW_ROUTES": "POST /predict, POST /score",
        "SHADOW_DROP_HEADERS": "",
        "SHADOW_SAMPLE_KEY": "json:/customer_id",
        "SHADOW_CORRELATION_ID": "",
        "SHADOW_COMPARE_FIELDS": "/a,/b",
        "SHADOW_COMPARE_ABS_TOL": "0.01",
        "SHADOW_COMPARE_THRESHOLD": "0.5",
        "SHADOW_COMPARE_RECORD_VALUES": "0",
        "SHADOW_COMPARE_IGNORE": "/a/id",
        "SHADOW_TARGET_CHURN_V2_SAMPLE_RATE": "0.1",
        "SHADOW_TARGET_CHURN_V2_TIMEOUT": "3",
        "SHADOW_TARGET_CHURN_V2_MAX_CONCURRENCY": "2",
        "SHADOW_TARGET_CHURN_V2_HEADER_X_API_TOKEN": "t0ken",
        "SHADOW_TARGET_CHURN_V3_BASE_URL": "http://v3:9000",
        "SHADOW_TARGETS": "churn-v4",
        "SHADOW_TARGET_CHURN_V4_URL": "http://v4:9000/predict",
        "SHADOW_TARGET_CHURN_V4_HEADER_AUTHORIZATION": "Bearer v4",
    }
    # On top of targets alone, the result is exactly what the environment sets.
    base = {**targets_base("churn-v2", "churn-v3"), "correlation_id": "header:x-request-id"}
    want = ShadowConfig(
        targets=[
            ShadowTarget(
                "churn-v2",
                url="http://churn-v2.file/x",
                sample_rate=0.1,
                timeout=3.0,
                max_concurrency=2,
                headers={"x-api-token": "t0ken"},
            ),
            ShadowTarget("churn-v3", base_url="http://v3:9000"),
            ShadowTarget("churn-v4", url="http://v4:9000/predict", headers={"authorization": "Bearer v4"}),
        ],
        max_queue=50,
        drain_timeout=1.5,
        enabled=False,
        routes=["POST /predict", "POST /score"],
        drop_headers=[],
        sample_key="json:/customer_id",
        correlation_id=None,
        compare=Compare(
            fields=["/a", "/b"], abs_tol=0.01, threshold=0.5, record_values=False, ignore=["/a/id"]
        ),
    )
    assert_same(ShadowConfig.from_env(env, base=base), want)
    data = tomllib.loads(EXAMPLE.replace("correlation_id", "# correlation_id"))
    got = ShadowConfig.from_env(env, base=data)
    assert got.max_queue == 50 and got.drain_timeout == 1.5 and got.enabled is False
    assert got.routes == ("POST /predict", "POST /score")
    assert got.drop_headers == frozenset()
    assert got.sample_key == "json:/customer_id" and got.correlation_id is None
    assert got.compare.fields == (("/a", "/a"), ("/b", "/b"))
    assert (got.compare.abs_tol, got.compare.threshold, got.compare.record_values) == (0.01, 0.5, False)
    assert got.compare.ignore == ("/a/id",)
    assert got.compare.rel_tol == 0.001  # from the file: compare keys are overridden one by one
    v2, v3, new = got.targets
    assert (v2.name, v2.sample_rate, v2.timeout, v2.max_concurrency) == ("churn-v2", 0.1, 3.0, 2)
    assert v2.headers == {"Authorization": "Bearer candidate-secret", "X-Team": "ml", "x-api-token": "t0ken"}
    assert v2.url == "http://127.0.0.1:5002/predict_shadow"  # untouched
    assert v3.name == "churn-v3" and v3.base_url == "http://v3:9000" and v3.sample_rate == 0.1
    # A target the file does not have, declared in SHADOW_TARGETS, is appended.
    assert (new.name, new.url, new.headers) == (
        "churn-v4",
        "http://v4:9000/predict",
        {"authorization": "Bearer v4"},
    )


def test_env_values_override_file_values_for_targets_by_name() -> None:
    data = tomllib.loads(EXAMPLE)
    env = {
        "SHADOW_TARGET_CHURN_V3_SAMPLE_RATE": "0",
        "SHADOW_TARGET_CHURN_V2_HEADER_AUTHORIZATION": "Bearer rotated",
        "SHADOW_TARGET_CHURN_V2_BASE_URL": "http://v2-canary:5002",
    }
    got = ShadowConfig.from_env(env, base=data)
    v2, v3 = got.targets
    assert v3.sample_rate == 0.0
    # Headers are matched case-insensitively: the file's spelling stays, no duplicate.
    assert v2.headers == {"Authorization": "Bearer rotated", "X-Team": "ml"}
    # A base URL from the environment replaces the file's url (and the other way round).
    assert v2.base_url == "http://v2-canary:5002" and v2.url is None


def test_env_overrides_do_not_modify_the_base() -> None:
    data = tomllib.loads(EXAMPLE)
    before = tomllib.loads(EXAMPLE)
    ShadowConfig.from_env(
        {"SHADOW_MAX_QUEUE": "1", "SHADOW_COMPARE_ABS_TOL": "1", "SHADOW_TARGET_CHURN_V2_HEADER_A": "b"},
        base=data,
    )
    assert data == before


@pytest.mark.parametrize(
    ("text", "value"),
    [(t, True) for t in ("1", "true", "TRUE", "yes", "on")]
    + [(t, False) for t in ("0", "false", "No", "off")],
)
def test_env_booleans(text: str, value: bool) -> None:
    base = {**targets_base("a"), "enabled": not value}
    got = ShadowConfig.from_env({"SHADOW_ENABLED": text}, base=base)
    assert_same(got, ShadowConfig.from_env({}, base={**base, "enabled": value}))


def test_env_compare_fields_as_a_mapping() -> None:
    base = targets_base("a")
    got = ShadowConfig.from_env(
        {"SHADOW_COMPARE_FIELDS": "/churn_probability=/score, /make_offer"}, base=base
    )
    fields = {"/churn_probability": "/score", "/make_offer": "/make_offer"}
    assert_same(got, ShadowConfig.from_env({}, base={**base, "compare": {"fields": fields}}))


def test_env_only_configuration() -> None:
    env = {
        "SHADOW_TARGETS": "churn-v2, shadow.b",
        "SHADOW_TARGET_CHURN_V2_URL": "http://127.0.0.1:5002/predict_shadow",
        "SHADOW_TARGET_CHURN_V2_HEADER_AUTHORIZATION": "Bearer x",
        "SHADOW_TARGET_SHADOW_B_BASE_URL": "http://b:80",
        "SHADOW_TARGET_SHADOW_B_SAMPLE_RATE": "0.5",
        "SHADOW_COMPARE_FIELDS": "/prediction",
    }
    got = ShadowConfig.from_env(env)
    want = ShadowConfig(
        targets=[
            ShadowTarget(
                "churn-v2", url="http://127.0.0.1:5002/predict_shadow", headers={"authorization": "Bearer x"}
            ),
            ShadowTarget("shadow.b", base_url="http://b:80", sample_rate=0.5),
        ],
        compare=Compare(fields=["/prediction"]),
    )
    assert_same(got, want)


def test_an_env_only_target_needs_a_url() -> None:
    message = error_of(
        ShadowConfig.from_env, {"SHADOW_TARGETS": "churn-v2", "SHADOW_TARGET_CHURN_V2_TIMEOUT": "1"}
    )
    assert (
        message
        == "SHADOW_TARGETS: target 'churn-v2' needs SHADOW_TARGET_CHURN_V2_URL or SHADOW_TARGET_CHURN_V2_BASE_URL"
    )


def test_no_targets_anywhere() -> None:
    message = error_of(ShadowConfig.from_env, {"SHADOW_MAX_QUEUE": "5"})
    assert message.startswith("environment: targets: missing; it is required")
    assert "SHADOW_TARGETS" in message


@pytest.mark.parametrize(
    ("env", "message"),
    [
        pytest.param(
            {"SHADOW_MAX_QUEUE": "lots"}, "SHADOW_MAX_QUEUE: expected an integer, got 'lots'", id="int"
        ),
        pytest.param(
            {"SHADOW_MAX_QUEUE": "1.5"}, "SHADOW_MAX_QUEUE: expected an integer, got '1.5'", id="int-float"
        ),
        pytest.param(
            {"SHADOW_DRAIN_TIMEOUT": "soon"},
            "SHADOW_DRAIN_TIMEOUT: expected a number, got 'soon'",
            id="float",
        ),
        pytest.param(
            {"SHADOW_ENABLED": "maybe"},
            "SHADOW_ENABLED: expected a boolean (1/0, true/false, yes/no, on/off), got 'maybe'",
            id="bool",
        ),
        pytest.param(
            {"SHADOW_COMPARE_ABS_TOL": "x"},
            "SHADOW_COMPARE_ABS_TOL: expected a number, got 'x'",
            id="compare",
        ),
        pytest.param(
            {"SHADOW_TARGET_CHURN_V2_MAX_CONCURRENCY": "many"},
            "SHADOW_TARGET_CHURN_V2_MAX_CONCURRENCY: expected an integer, got 'many'",
            id="target",
        ),
        pytest.param(
            {"SHADOW_MAX_QEUE": "5"},
            "SHADOW_MAX_QEUE: unknown variable (did you mean 'SHADOW_MAX_QUEUE'?)",
            id="unknown",
        ),
        pytest.param(
            {"SHADOW_COMPARE_ABSTOL": "5"},
            "SHADOW_COMPARE_ABSTOL: unknown variable (did you mean 'SHADOW_COMPARE_ABS_TOL'?)",
            id="unknown-compare",
        ),
        pytest.param({"SHADOW_XYZZY": "1"}, "SHADOW_XYZZY: unknown variable", id="unknown-no-suggestion"),
        pytest.param(
            {"SHADOW_TARGET_CHURN_V2_TIMOUT": "1"},
            "SHADOW_TARGET_CHURN_V2_TIMOUT: unknown variable (did you mean 'SHADOW_TARGET_CHURN_V2_TIMEOUT'?)",
            id="unknown-target-key",
        ),
        pytest.param(
            {"SHADOW_TARGET_CHURN_V3_URL": "http://h/x"},
            "SHADOW_TARGET_CHURN_V3_URL: unknown variable: no target CHURN_V3 (did you mean "
            "'SHADOW_TARGET_CHURN_V2_URL'? New targets are declared in SHADOW_TARGETS)",
            id="unknown-target",
        ),
        pytest.param(
            {"SHADOW_TARGET_CHURN_V2_ZZZ": "1"},
            "SHADOW_TARGET_CHURN_V2_ZZZ: unknown variable (keys: URL, BASE_URL, SAMPLE_RATE, TIMEOUT, MAX_CONCURRENCY, CA_FILE, CLIENT_CERT, CLIENT_KEY, HEADER_<NAME>)",
            id="unknown-target-key-no-suggestion",
        ),
        pytest.param(
            {"SHADOW_TARGET_FOO_URL": "http://h/x"},
            "SHADOW_TARGET_FOO_URL: unknown variable: no such target (targets: 'churn-v2' (SHADOW_TARGET_CHURN_V2_*); declare new targets in SHADOW_TARGETS)",
            id="unknown-target-no-suggestion",
        ),
        pytest.param(
            {"SHADOW_TARGET_CHURN_V2_HEADER_": "x"},
            "SHADOW_TARGET_CHURN_V2_HEADER_: no header name after HEADER_",
            id="empty-header-name",
        ),
        pytest.param(
            {
                "SHADOW_TARGETS": "a,b,a",
                "SHADOW_TARGET_A_URL": "http://h/a",
                "SHADOW_TARGET_B_URL": "http://h/b",
            },
            "SHADOW_TARGETS: target 'a' is declared twice",
            id="declared-twice",
        ),
    ],
)
def test_bad_env_values_name_the_variable(env: dict[str, str], message: str) -> None:
    assert error_of(ShadowConfig.from_env, env, base=targets_base("churn-v2")) == message


def test_a_target_variable_without_targets_says_how_to_declare_them() -> None:
    message = error_of(ShadowConfig.from_env, {"SHADOW_TARGET_X_URL": "http://h/x"})
    assert (
        message
        == "SHADOW_TARGET_X_URL: unknown variable: no target is configured (declare targets in SHADOW_TARGETS)"
    )


def test_target_names_that_collide_in_the_environment_are_ambiguous() -> None:
    message = error_of(
        ShadowConfig.from_env, {"SHADOW_TARGET_A_B_URL": "http://h/x"}, base=targets_base("a-b", "a.b")
    )
    assert message == "SHADOW_TARGET_A_B_URL: ambiguous: it can address each of the targets 'a-b', 'a.b'"


def test_target_names_that_are_prefixes_of_each_other() -> None:
    # "a" + BASE_URL, or "a-base" + URL? Both exist: refuse to guess.
    assert "ambiguous" in error_of(
        ShadowConfig.from_env, {"SHADOW_TARGET_A_BASE_URL": "http://h"}, base=targets_base("a", "a-base")
    )
    # But "a-b" + URL is the only reading here.
    got = ShadowConfig.from_env({"SHADOW_TARGET_A_B_URL": "http://h/x"}, base=targets_base("a", "a-b"))
    want = {"targets": [{"name": "a", "url": "http://a.file/x"}, {"name": "a-b", "url": "http://h/x"}]}
    assert_same(got, ShadowConfig.from_env({}, base=want))


def test_foreign_and_unprefixed_variables_are_left_alone() -> None:
    env = {"SHADOW_CONFIG": "", "HOME": "/", "shadow_max_queue": "x", "EXAMPLE_SPAN_FILE": "x"}
    base = targets_base("a")
    assert_same(ShadowConfig.from_env(env, base=base), ShadowConfig.from_env({}, base=base))


def test_constructor_errors_from_the_environment_name_the_variable(tmp_path: Path) -> None:
    path = write(tmp_path, EXAMPLE)
    env = {"SHADOW_CONFIG": str(path), "SHADOW_TARGET_CHURN_V2_SAMPLE_RATE": "1.5"}
    assert error_of(ShadowConfig.from_env, env) == (
        "SHADOW_TARGET_CHURN_V2_SAMPLE_RATE: targets[0].sample_rate: ShadowTarget.sample_rate: must be in [0, 1], got 1.5"
    )
    env = {"SHADOW_CONFIG": str(path), "SHADOW_ROUTES": "POST /a,predict"}
    assert error_of(ShadowConfig.from_env, env) == (
        "SHADOW_ROUTES: routes[1]: ShadowConfig.routes[1]: must be 'METHOD /path', got 'predict'"
    )
    env = {"SHADOW_CONFIG": str(path), "SHADOW_COMPARE_REL_TOL": "-1"}
    assert (
        error_of(ShadowConfig.from_env, env)
        == "SHADOW_COMPARE_REL_TOL: compare.rel_tol: Compare.rel_tol: must be >= 0.0, got -1.0"
    )
    # ... while a bad value that stays in the file is still the file's.
    env = {"SHADOW_CONFIG": str(path), "SHADOW_TARGET_CHURN_V2_SAMPLE_RATE": "0.5"}
    bad = write(tmp_path, EXAMPLE.replace("max_concurrency = 8", "max_concurrency = 0"), "bad.toml")
    env["SHADOW_CONFIG"] = str(bad)
    assert error_of(ShadowConfig.from_env, env).startswith(
        f"{bad}: targets[0].max_concurrency: ShadowTarget.max_concurrency:"
    )
    # A target declared in SHADOW_TARGETS is the environment's.
    env = {"SHADOW_TARGETS": "x y", "SHADOW_TARGET_X_Y_URL": "http://h/x"}
    assert error_of(ShadowConfig.from_env, env).startswith(
        "SHADOW_TARGETS: targets[0].name: ShadowTarget.name: must be a token"
    )


# ---- ShadowConfig.from_env --------------------------------------------------------------------


def test_shadow_config_names_the_file_and_env_overrides_it(tmp_path: Path) -> None:
    path = write(tmp_path, EXAMPLE)
    got = ShadowConfig.from_env({"SHADOW_CONFIG": str(path), "SHADOW_MAX_QUEUE": "7", "HOME": "/root"})
    want = example_by_constructor()
    assert got.max_queue == 7
    assert_same(got, ShadowConfig(**{**public_kwargs(want), "max_queue": 7}))


def public_kwargs(config: ShadowConfig) -> dict[str, Any]:
    return {name: getattr(config, name) for name in keywords(ShadowConfig)}


def test_from_env_reads_os_environ_by_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in list(os.environ):
        if var.startswith("SHADOW_"):
            monkeypatch.delenv(var)
    monkeypatch.setenv("SHADOW_CONFIG", str(write(tmp_path, EXAMPLE)))
    monkeypatch.setenv("SHADOW_ENABLED", "no")
    got = ShadowConfig.from_env()
    assert got.enabled is False and got.max_queue == 200


def test_shadow_config_pointing_nowhere(tmp_path: Path) -> None:
    path = tmp_path / "missing.toml"
    assert error_of(ShadowConfig.from_env, {"SHADOW_CONFIG": str(path)}).startswith(
        f"{path}: cannot read the file"
    )


def test_base_defaults_under_the_file_under_the_environment(tmp_path: Path) -> None:
    base = {
        "targets": [{"name": "dev", "url": "http://localhost:9/x"}],
        "routes": ["POST /score"],
        "max_queue": 10,
        "compare": {"fields": ["/score"], "threshold": 0.5},
    }
    # Environment over base.
    got = ShadowConfig.from_env({"SHADOW_MAX_QUEUE": "20", "SHADOW_TARGET_DEV_TIMEOUT": "1"}, base=base)
    assert (got.max_queue, got.routes, got.targets[0].name, got.targets[0].timeout) == (
        20,
        ("POST /score",),
        "dev",
        1.0,
    )
    assert base["max_queue"] == 10  # not modified
    # File over base: its keys replace base's, its [[targets]] replace base's, [compare] merges.
    path = write(tmp_path, MINIMAL + "[compare]\nabs_tol = 0.1\n")
    got = ShadowConfig.from_env({"SHADOW_CONFIG": str(path)}, base=base)
    assert [t.name for t in got.targets] == ["churn-v2"]
    assert got.routes == ("POST /score",) and got.max_queue == 10
    assert got.compare.fields == (("/score", "/score"),)
    assert (got.compare.threshold, got.compare.abs_tol) == (0.5, 0.1)
    # A bad value that comes from base is blamed on base.
    message = error_of(ShadowConfig.from_env, {"SHADOW_CONFIG": str(path)}, base={**base, "max_queue": -1})
    assert message == "base: max_queue: ShadowConfig.max_queue: must be >= 0, got -1"


# ---- describe ---------------------------------------------------------------------------


def test_describe_masks_header_values_and_round_trips(load: Load) -> None:
    config = example_by_constructor()
    text = describe(config)
    assert "candidate-secret" not in text and '"***"' in text
    again = load(text)
    assert_same(again, config, mask_headers=True)
    assert again.targets[0].headers == {"Authorization": "***", "X-Team": "***"}


def test_describe_writes_every_key_including_defaults(load: Load) -> None:
    config = ShadowConfig([ShadowTarget("a", url="http://h/x")])
    text = describe(config)
    data = tomllib.loads(text)
    for name in keywords(ShadowConfig):
        if getattr(config, name) is None:
            assert f"# {name} is not set" in text
        else:
            assert name in data
    assert set(data["compare"]) == set(keywords(Compare)) - {"threshold"}  # None: a comment
    # None: a comment
    assert set(data["targets"][0]) == set(keywords(ShadowTarget)) - {
        "base_url",
        "ca_file",
        "client_cert",
        "client_key",
    }
    assert data["drop_headers"] == sorted(config.drop_headers)
    assert_same(load(text), config)


@pytest.mark.parametrize(
    "config",
    [
        pytest.param(ShadowConfig([ShadowTarget("a", url="http://h/x")]), id="defaults"),
        pytest.param(
            ShadowConfig(
                [ShadowTarget("a~b_c.d", base_url="http://[::1]:8080/api/", headers={"X-Tok!en": 'q"\\\t'})],
                routes=["* /{id}", "get /ä"],
                compare=Compare(
                    fields=["/a~1b", "/ü/😀", '/"q"'],
                    ignore=["/a~1b/", "/ü/😀/~0~1"],
                    threshold=-1e-20,
                    rel_tol=1e-9,
                ),
                drop_headers=(),
                sample_key='json:/a"b\\c',
                correlation_id="header:x-id",
                max_body_bytes=0,
                max_queue=0,
                circuit_failures=0,
                enabled=False,
                drain_timeout=0,
                primary_timeout=1e-3,
            ),
            id="awkward-values",
        ),
        pytest.param(
            ShadowConfig(
                [ShadowTarget("a", url="http://h/x")], compare=Compare(fields={"": "/wrapped", "/x": "/x"})
            ),
            id="fields-mapping",
        ),
    ],
)
def test_describe_round_trips(load: Load, config: ShadowConfig) -> None:
    again = load(describe(config))
    assert_same(again, config, mask_headers=True)


# ---- the command line -------------------------------------------------------------------


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHADOW_")}
    return {**env, **extra}


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shadow_middleware", *args],
        capture_output=True,
        text=True,
        env=env if env is not None else clean_env(),
        cwd=ROOT,
        timeout=60,
        check=False,
    )


def test_cli_check_config_prints_the_effective_configuration_masked(tmp_path: Path, load: Load) -> None:
    path = write(tmp_path, EXAMPLE)
    done = run_cli("check-config", str(path))
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert "candidate-secret" not in done.stdout
    assert 'Authorization = "***"' in done.stdout
    assert_same(
        load(done.stdout),
        example_by_constructor(),
        mask_headers=True,
    )


def test_cli_check_config_fails_with_the_field_named(tmp_path: Path) -> None:
    path = write(tmp_path, EXAMPLE.replace("sample_rate = 0.25", "sample_rate = 1.5"))
    done = run_cli("check-config", str(path))
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr == (
        f"error: {path}: targets[0].sample_rate: ShadowTarget.sample_rate: must be in [0, 1], got 1.5\n"
    )


def test_cli_applies_the_environment_unless_told_not_to(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, EXAMPLE)
    for var in list(os.environ):
        if var.startswith("SHADOW_"):
            monkeypatch.delenv(var)
    monkeypatch.setenv("SHADOW_MAX_QUEUE", "3")
    monkeypatch.setenv("SHADOW_CONFIG", "elsewhere.toml")  # the PATH argument wins; not an override
    assert main(["check-config", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# environment overrides applied: SHADOW_MAX_QUEUE\n")
    assert tomllib.loads(out)["max_queue"] == 3
    assert main(["check-config", "--no-env", str(path)]) == 0
    assert tomllib.loads(capsys.readouterr().out)["max_queue"] == 200
    monkeypatch.setenv("SHADOW_MAX_QUEUE", "lots")
    assert main(["check-config", str(path)]) == 2
    assert capsys.readouterr().err == "error: SHADOW_MAX_QUEUE: expected an integer, got 'lots'\n"


def test_cli_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert main(["no-such-command"]) == 2
    assert main(["check-config", "--help"]) == 0
    assert "check-config" in capsys.readouterr().out


def test_cli_a_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "timeout = \n")
    done = run_cli("check-config", str(path))
    assert done.returncode == 2
    assert re.match(rf"error: {re.escape(str(path))}: line 4, column \d+: invalid TOML: ", done.stderr)


# ---- every error in one run ------------------------------------------------------------

THREE_TYPOS = """\
max_qeue = 5
routes = ["POST /predict/:id", "POST /ok"]
sample_key = "cookie:uid"

[compare]
abs_tolerance = 0.1
rel_tol = -1

[[targets]]
name = "a"
url = "http://h/x"
timout = 2
sample_rate = 1.5
max_concurrency = 0

[[targets]]
name = "b"
url = "ftp://h/x"

[[targets]]
url = "http://h/y"
"""

THREE_TYPOS_ERRORS = [
    "shadow.toml: max_qeue: unknown key (did you mean 'max_queue'?)",
    "shadow.toml: compare.abs_tolerance: unknown key (did you mean 'abs_tol'?)",
    "shadow.toml: compare.rel_tol: Compare.rel_tol: must be >= 0.0, got -1",
    "shadow.toml: targets[0].timout: unknown key (did you mean 'timeout'?)",
    "shadow.toml: targets[0].sample_rate: ShadowTarget.sample_rate: must be in [0, 1], got 1.5",
    "shadow.toml: targets[0].max_concurrency: ShadowTarget.max_concurrency: must be >= 1, got 0",
    "shadow.toml: targets[1].url: ShadowTarget.url: must be an http or https URL, got 'ftp://h/x'",
    "shadow.toml: targets[2].name: missing; it is required",
    "shadow.toml: routes[0]: ShadowConfig.routes[0]: ':id' is not a parameter: write '<id>' or '{id}' "
    "(accepted: whole-segment parameters <name>, <int:name>, <path:name>, {name}, {name:int}, {name:path})",
    "shadow.toml: sample_key: ShadowConfig.sample_key: must start with 'header:' or 'json:', got 'cookie:uid'",
]


def test_every_unknown_key_and_bad_value_is_reported_at_once(load: Load) -> None:
    with pytest.raises(ConfigErrors) as info:
        load(THREE_TYPOS)
    assert list(info.value.errors) == THREE_TYPOS_ERRORS
    # One ValueError; its first line is the first error, the others follow one per line.
    assert isinstance(info.value, ValueError)
    assert str(info.value).splitlines() == THREE_TYPOS_ERRORS


def test_a_single_error_reads_exactly_as_before(load: Load) -> None:
    with pytest.raises(ConfigErrors) as info:
        load(MINIMAL + "timout = 2\n")
    assert str(info.value) == "shadow.toml: targets[0].timout: unknown key (did you mean 'timeout'?)"
    assert info.value.errors == (str(info.value),)


def test_a_consequence_is_not_reported_twice(load: Load) -> None:
    # The only target is bad: "needs at least one target" would repeat it.
    assert error_of(load, 'targets = ["a"]\nmax_queue = -1\n').splitlines() == [
        "shadow.toml: targets[0]: expected a table, got 'a'",
        "shadow.toml: max_queue: ShadowConfig.max_queue: must be >= 0, got -1",
    ]
    # A bad url is not followed by "give exactly one of url and base_url".
    assert error_of(load, MINIMAL.replace("http://", "ftp://")).splitlines() == [
        "shadow.toml: targets[0].url: ShadowTarget.url: must be an http or https URL, "
        "got 'ftp://127.0.0.1:5002/predict_shadow'",
    ]
    # A target whose bad value can be left out is still checked with the others.
    assert error_of(load, MINIMAL + MINIMAL + "sample_rate = 1.5\n").splitlines() == [
        "shadow.toml: targets[1].sample_rate: ShadowTarget.sample_rate: must be in [0, 1], got 1.5",
        "shadow.toml: targets: ShadowConfig.targets: duplicate target name 'churn-v2'",
    ]


def test_every_bad_variable_is_reported_with_the_file_errors(tmp_path: Path) -> None:
    path = write(tmp_path, "max_queue = 5\n" + MINIMAL + "timout = 1\n")
    env = {
        "SHADOW_CONFIG": str(path),
        "SHADOW_MAX_QEUE": "5",
        "SHADOW_DRAIN_TIMEOUT": "soon",
        "SHADOW_TARGET_CHURN_V2_SAMPLE_RATE": "2",
        "SHADOW_TARGET_CHURN_V3_URL": "http://h/x",
        "SHADOW_HTTP_CLIENT": "aiohttp",
    }
    lines = error_of(ShadowConfig.from_env, env).splitlines()
    assert lines[1].startswith("SHADOW_HTTP_CLIENT: unknown variable")  # no longer read by anything
    assert lines[:1] + lines[2:] == [
        "SHADOW_DRAIN_TIMEOUT: expected a number, got 'soon'",
        "SHADOW_MAX_QEUE: unknown variable (did you mean 'SHADOW_MAX_QUEUE'?)",
        "SHADOW_TARGET_CHURN_V3_URL: unknown variable: no target CHURN_V3 (did you mean "
        "'SHADOW_TARGET_CHURN_V2_URL'? New targets are declared in SHADOW_TARGETS)",
        f"{path}: targets[0].timout: unknown key (did you mean 'timeout'?)",
        "SHADOW_TARGET_CHURN_V2_SAMPLE_RATE: targets[0].sample_rate: ShadowTarget.sample_rate: "
        "must be in [0, 1], got 2.0",
    ]


def test_config_errors_survive_pickling() -> None:
    import pickle

    err = ConfigErrors(["a: one", "b: two"])
    again = pickle.loads(pickle.dumps(err))
    assert isinstance(again, ConfigErrors) and again.errors == err.errors and str(again) == str(err)


def test_shadow_http_client_is_an_unknown_variable_now() -> None:
    assert error_of(ShadowConfig.from_env, {"SHADOW_HTTP_CLIENT": "aiohttp"}).startswith(
        "SHADOW_HTTP_CLIENT: unknown variable"
    )


def test_shadow_span_file_says_the_application_writes_spans() -> None:
    assert error_of(ShadowConfig.from_env, {"SHADOW_SPAN_FILE": "spans.jsonl"}, base=targets_base("a")) == (
        "SHADOW_SPAN_FILE: not read by shadow_middleware; the application writes spans: see the README "
        'section "Writing the span file" (OpenTelemetry\'s FileSpanExporter)'
    )


def test_cli_check_config_prints_every_error_one_per_line(tmp_path: Path) -> None:
    path = write(tmp_path, THREE_TYPOS)
    done = run_cli("check-config", str(path), env=clean_env(SHADOW_MAX_QEUE="1"))
    assert done.returncode == 2
    assert done.stdout == ""
    want = ["SHADOW_MAX_QEUE: unknown variable (did you mean 'SHADOW_MAX_QUEUE'?)"]
    want += [line.replace("shadow.toml", str(path), 1) for line in THREE_TYPOS_ERRORS]
    assert done.stderr.splitlines() == [f"error: {line}" for line in want]


def test_cli_help_describes_the_command_without_python_names(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", "--help"]) == 0
    out = capsys.readouterr().out
    assert "from_env" not in out and "ShadowConfig" not in out and "config_from" not in out
    assert "one per line" in out and "SHADOW_CONFIG=PATH" in out


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            "timout = 2.0",
            "timout: unknown key (did you mean 'timeout'? It belongs in each [[targets]] table)",
        ),
        ("abs_tol = 0.1", "abs_tol: unknown key (did you mean 'abs_tol'? It belongs in the [compare] table)"),
        ("max_queu = 5", "max_queu: unknown key (did you mean 'max_queue'?)"),
    ],
)
def test_a_top_level_key_that_belongs_in_a_table_says_where(
    line: str, expected: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("shadow.toml").write_text(f'{line}\n\n[[targets]]\nname = "v2"\nurl = "http://127.0.0.1:9/x"\n')
    with pytest.raises(ValueError) as info:
        ShadowConfig.from_toml("shadow.toml")
    assert str(info.value) == f"shadow.toml: {expected}"
