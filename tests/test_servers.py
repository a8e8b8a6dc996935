"""FastAPI under a real uvicorn process, Flask under real gunicorn (2 workers, --preload),
a real shadow server, HTTP on 127.0.0.1."""

from __future__ import annotations

import json
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from .conftest import Received, Reply, ShadowServer, json_reply
from .servers import read_spans, request, server

KINDS = ["uvicorn", "gunicorn"]


def candidate(req: Received) -> Reply:
    # The same model as production's test app: the answers agree.
    return json_reply({"prediction": round((len(req.body) % 100) / 100, 3), "size": len(req.body), "pid": 1})


def bodies(n: int) -> list[bytes]:
    return [json.dumps({"id": f"cust-{i}", "features": list(range(i))}).encode() for i in range(n)]


def responses(port: int, payloads: list[bytes]) -> list[tuple[int, str, bytes]]:
    def one(body: bytes) -> tuple[int, str, bytes]:
        status, headers, data = request(port, "POST", "/predict", body, {"content-type": "application/json"})
        doc = json.loads(data)
        doc.pop("pid")  # which worker answered differs between runs
        return status, headers.get("content-type", ""), json.dumps(doc).encode()

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(one, payloads))


@pytest.mark.parametrize("kind", KINDS)
def test_every_request_shadowed_and_responses_identical_to_no_middleware(
    kind: str, shadow_server: ShadowServer, tmp_path: Path
) -> None:
    shadow_server.reply = candidate
    span_file = tmp_path / "spans.jsonl"
    env = {"SHADOW_URL": shadow_server.url + "/predict_shadow", "SPAN_FILE": str(span_file)}
    payloads = bodies(40)
    with server(kind, {**env, "NO_SHADOW": "1"}) as (port, _):
        baseline = responses(port, payloads)
    assert shadow_server.received == []
    with server(kind, env) as (port, _):
        shadowed = responses(port, payloads)
        spans = read_spans(span_file, len(payloads))
    assert shadowed == baseline
    assert all(status == 200 for status, _, _ in shadowed)
    assert len(spans) == len(payloads)
    assert {s["attributes"]["shadow.outcome"] for s in spans} == {"match"}
    assert sorted(s["attributes"]["shadow.correlation_id"] for s in spans) == sorted(
        json.loads(p)["id"] for p in payloads
    )
    got = shadow_server.received
    assert sorted(r.body for r in got) == sorted(payloads)
    assert {r.headers["x-shadow-request"] for r in got} == {"cand"}
    # The shadow request carries its own span's traceparent.
    span_ids = {s["span_id"] for s in spans}
    assert {r.headers["traceparent"].split("-")[2] for r in got} == span_ids


@pytest.mark.parametrize("kind", KINDS)
def test_chunked_request_bodies_reach_app_and_shadow_identically(
    kind: str, shadow_server: ShadowServer, tmp_path: Path
) -> None:
    shadow_server.reply = candidate
    span_file = tmp_path / "spans.jsonl"
    env = {"SHADOW_URL": shadow_server.url + "/predict_shadow", "SPAN_FILE": str(span_file)}
    pieces = [b'{"id": "chunky", "x": "', b"a" * 5000, b'", "y": [', b"1, 2, 3", b"]}"]
    whole = b"".join(pieces)
    with server(kind, env) as (port, _):
        status, _, data = request(
            port,
            "POST",
            "/predict",
            iter(pieces),
            {"content-type": "application/json", "transfer-encoding": "chunked"},
            chunked=True,
        )
        spans = read_spans(span_file, 1)
    assert status == 200
    assert json.loads(data)["size"] == len(whole)
    (got,) = shadow_server.received
    assert got.body == whole
    assert spans[0]["attributes"]["shadow.outcome"] == "match"


@pytest.mark.parametrize("kind", KINDS)
def test_sigterm_flushes_in_flight_shadows(kind: str, shadow_server: ShadowServer, tmp_path: Path) -> None:
    shadow_server.reply = candidate
    shadow_server.delay = 0.5
    span_file = tmp_path / "spans.jsonl"
    env = {"SHADOW_URL": shadow_server.url + "/predict_shadow", "SPAN_FILE": str(span_file)}
    payloads = bodies(6)
    with server(kind, env) as (port, proc):
        responses(port, payloads)
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
        took = time.monotonic() - started
    spans = read_spans(span_file, len(payloads), timeout=1)
    assert len(spans) == len(payloads)
    assert {s["attributes"]["shadow.outcome"] for s in spans} == {"match"}
    assert took < 10


@pytest.mark.parametrize("kind", KINDS)
def test_unshadowed_streaming_route_streams(kind: str, shadow_server: ShadowServer, tmp_path: Path) -> None:
    env = {"SHADOW_URL": shadow_server.url + "/x", "SPAN_FILE": str(tmp_path / "s.jsonl")}
    with server(kind, env) as (port, _):
        status, _, data = request(port, "GET", "/stream")
    assert status == 200
    assert data == b"".join(f"part-{i}\n".encode() for i in range(5))
    assert shadow_server.received == []
