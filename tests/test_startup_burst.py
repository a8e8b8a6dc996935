"""``isolation="process"``: the helper's start-up burst does not open the circuit (issue 17,
item 13). What the app sends while its helper starts reaches the candidate at once; a few
slow answers among it opened the breaker ("failed 5 times in a row") and dropped what came
next, for a candidate that is up."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from shadow_middleware import Compare, Shadow, ShadowASGIMiddleware, ShadowConfig, ShadowTarget

from .asgi_helpers import drive, http_scope, json_app, run
from .conftest import ShadowServer, json_reply


@pytest.fixture
def span_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "spans.jsonl"
    monkeypatch.setenv("SPAN_FILE", str(path))
    return path


def engine(url: str, *, failures: int = 3) -> Shadow:
    cfg = ShadowConfig(
        targets=[ShadowTarget("v2", url=url, timeout=0.3)],
        compare=Compare(fields=["/prediction"]),
        isolation="process",
        telemetry_setup="tests.apps.spanfile:helper_telemetry",
        circuit_failures=failures,
        circuit_cooldown=30.0,
    )
    return Shadow(cfg)


def test_slow_answers_in_the_start_up_burst_do_not_open_the_circuit(
    shadow_server: ShadowServer, span_file: Path
) -> None:
    def reply(req: Any) -> Any:
        if json.loads(req.body).get("slow"):
            time.sleep(0.6)  # over the target's timeout
        return json_reply({"prediction": 0.5})

    shadow_server.reply = reply
    shadow = engine(shadow_server.url + "/s")
    mw = ShadowASGIMiddleware(json_app(), shadow=shadow)
    try:
        # Sent before the helper is up (it takes ~0.2 s to start): they wait in the socket.
        for _ in range(6):
            run(drive(mw, http_scope(), [b'{"slow": true}']))
        assert shadow.flush(15)
        for _ in range(6):
            run(drive(mw, http_scope(), [b'{"slow": false}']))
        assert shadow.flush(15)
        stats = shadow.stats()
    finally:
        shadow.close()
    assert stats["timeout"] == 6, stats
    assert stats["match"] == 6 and stats["dropped"] == 0, stats


def test_a_dead_candidate_is_still_paused_after_the_start_up(span_file: Path) -> None:
    from .conftest import free_port

    shadow = engine(f"http://127.0.0.1:{free_port()}/s")
    mw = ShadowASGIMiddleware(json_app(), shadow=shadow)
    try:
        for _ in range(4):
            run(drive(mw, http_scope(), [b"{}"]))
        assert shadow.flush(15)
        for _ in range(10):
            run(drive(mw, http_scope(), [b"{}"]))
            assert shadow.flush(15)
        stats = shadow.stats()
    finally:
        shadow.close()
    assert stats["error"] + stats["dropped"] == 14, stats
    assert stats["dropped"] >= 7, stats  # refused connections count: paused after 3 failures
