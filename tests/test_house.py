"""The house's rooms (issue 21): sizes a reader can hold in their head, and one request value
from ``Shadow.begin`` to the helper and back, in both isolations."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import shadow_middleware
from shadow_middleware import Shadow, ShadowConfig, ShadowTarget
from shadow_middleware._helperwire import Exchange, FrameReader
from shadow_middleware._request import Request

PACKAGE = Path(shadow_middleware.__file__).parent

#: The wings split by concern: configuration (reading sources, coercing and validating,
#: explaining) and process isolation (the engines' side, the helper's lifecycle, the messages).
SPLIT = [
    "_configfile",
    "_configenv",
    "_configbuild",
    "_configerrors",
    "_configtext",
    "_isolation",
    "_helperlink",
    "_helperwire",
    "_request",
]
MAX_CLASS_LINES = 250
MAX_FUNCTION_LINES = 60


def oversized(module: str) -> list[str]:
    tree = ast.parse((PACKAGE / f"{module}.py").read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            size = (node.end_lineno or node.lineno) - node.lineno + 1
            limit = MAX_CLASS_LINES if isinstance(node, ast.ClassDef) else MAX_FUNCTION_LINES
            if size > limit:
                found.append(f"{module}.{node.name}: {size} lines")
    return found


@pytest.mark.parametrize("module", SPLIT)
def test_every_room_of_the_split_wings_fits_in_a_head(module: str) -> None:
    assert oversized(module) == []


def test_an_exchange_crosses_the_wire_unchanged() -> None:
    request = Request("POST /predict", "POST", "/predict", "a=1", [("content-type", "application/json")])
    sent = Exchange(7, 2, request, (0, 1), (0.5,), True, b"{}", None, 200, "", b'{"p": 1}', 1.5, "tp", "")
    (message,) = FrameReader().feed(sent.encode())
    got = Exchange.decode(message)
    assert got == sent
    assert isinstance(got.request, Request) and got.request.headers == request.headers


@pytest.mark.parametrize("isolation", ["thread", "process"])
def test_one_request_value_from_begin_to_the_outcome(isolation: str) -> None:
    shadow = Shadow(
        ShadowConfig(
            [ShadowTarget("v2", url="http://127.0.0.1:9/s")],
            routes=["POST /predict"],
            isolation=isolation,
            drain_timeout=1.0,
        )
    )
    try:
        headers = [("content-type", "application/json")]
        tap = shadow.begin("POST /predict", "POST", "/predict", "a=1", headers, 2)
        assert tap is not None
        request = tap.request  # type: ignore[attr-defined]
        assert request == Request("POST /predict", "POST", "/predict", "a=1", headers)
        assert request.headers is headers  # one value, not a copy per step
        tap.finish()  # body never read: skipped, decided in the helper under process isolation
        assert shadow.flush(10.0)
        assert shadow.stats()["skipped"] == 1
    finally:
        shadow.close(5.0)
