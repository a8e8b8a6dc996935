"""A GET prediction route is shadowed under every WSGI server (issue 17, item 8).

gunicorn sets ``wsgi.input_terminated`` on every request; a request with neither
Content-Length nor Transfer-Encoding was then taken for a chunked body that never came, and
every GET ended ``skipped`` (``body_not_read``). RFC 9112 §6.3: such a request has no body.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from shadow_middleware import Compare, Shadow, ShadowConfig, ShadowTarget, ShadowWSGIMiddleware

from .conftest import ShadowServer, Telemetry, json_reply
from .servers import BIN, ROOT, free_port, read_spans, request, server, wait_listening


@contextmanager
def wsgi_server(kind: str, env: dict[str, str]) -> Iterator[int]:
    if kind == "gunicorn":
        with server("gunicorn", env) as (port, _):
            yield port
        return
    port = free_port()
    if kind == "waitress":
        pytest.importorskip("waitress")
        cmd = [str(BIN / "waitress-serve"), f"--listen=127.0.0.1:{port}", "tests.apps.wsgi_app:app"]
    else:
        cmd = [str(BIN / "python"), "-m", "tests.apps.wsgi_serve", kind, str(port)]
    log = tempfile.NamedTemporaryFile(prefix=f"{kind}-", suffix=".log", delete=False)  # noqa: SIM115
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        try:
            wait_listening(port, proc)
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}; log:\n{Path(log.name).read_text()}") from None
        yield port
    finally:
        log.close()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("isolation", ["thread", "process"])
@pytest.mark.parametrize("kind", ["gunicorn", "waitress", "wsgiref", "werkzeug"])
def test_a_get_prediction_route_is_shadowed_under_every_wsgi_server(
    kind: str, isolation: str, tmp_path: Path, shadow_server: ShadowServer
) -> None:
    shadow_server.reply = lambda req: json_reply({"prediction": 0.07})
    spans = tmp_path / "spans.jsonl"
    env = {
        "SHADOW_URL": shadow_server.url + "/s",
        "SPAN_FILE": str(spans),
        "SHADOW_ROUTES": "GET /score,POST /predict",
    }
    if isolation == "process":
        env["SHADOW_ISOLATION"] = "process"
    with wsgi_server(kind, env) as port:
        for _ in range(4):
            status, _, body = request(port, "GET", "/score?customer_id=7")
            assert (status, body.strip()) == (200, b'{"prediction":0.07}')
        # A POST with a body still is copied whole.
        assert request(port, "POST", "/predict", b'{"id": "a"}')[0] == 200
        found = read_spans(spans, 5)
    outcomes = sorted(
        (s["attributes"]["http.request.method"], s["attributes"]["shadow.outcome"]) for s in found
    )
    assert outcomes == [("GET", "match")] * 4 + [("POST", "mismatch")], found
    received = sorted(r.path for r in shadow_server.received)
    assert received == ["/s"] + ["/s?customer_id=7"] * 4


def _environ(**extra: Any) -> dict[str, Any]:
    return {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/score",
        "QUERY_STRING": "customer_id=7",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.input": io.BytesIO(b""),
        **extra,
    }


def _app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    if environ["REQUEST_METHOD"] == "POST":  # a GET handler never reads (Flask's request.args)
        environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [b'{"prediction": 0.07}']


@pytest.mark.parametrize(
    ("extra", "outcome"),
    [
        ({"wsgi.input_terminated": True}, "match"),  # gunicorn's GET: no body
        ({}, "match"),  # wsgiref's GET
        ({"CONTENT_LENGTH": "", "wsgi.input_terminated": True}, "match"),
        # HTTP/2 frames a body without either header: only the input's end can say it is
        # complete, and this app never reads it.
        ({"wsgi.input_terminated": True, "SERVER_PROTOCOL": "HTTP/2"}, "skipped"),
    ],
)
def test_a_request_without_length_or_transfer_encoding_has_no_body(
    extra: dict[str, Any], outcome: str, shadow_server: ShadowServer, telemetry: Telemetry
) -> None:
    shadow_server.reply = lambda req: json_reply({"prediction": 0.07})
    cfg = ShadowConfig(
        targets=[ShadowTarget("v2", url=shadow_server.url + "/s")],
        routes=["GET /score"],
        compare=Compare(fields=["/prediction"]),
    )
    shadow = Shadow(cfg, tracer_provider=telemetry.tracer_provider, meter_provider=telemetry.meter_provider)
    mw = ShadowWSGIMiddleware(_app, shadow=shadow)
    result = mw(_environ(**extra), lambda status, headers, exc_info=None: lambda data: None)
    assert b"".join(result) == b'{"prediction": 0.07}'
    result.close()  # type: ignore[attr-defined]
    assert shadow.flush(5)
    (span,) = telemetry.spans()
    assert (span.attributes or {})["shadow.outcome"] == outcome, dict(span.attributes or {})
    shadow.close()


def test_a_chunked_request_is_still_read_to_its_end(
    shadow_server: ShadowServer, telemetry: Telemetry
) -> None:
    cfg = ShadowConfig(targets=[ShadowTarget("v2", url=shadow_server.url + "/s")], routes=["POST /predict"])
    shadow = Shadow(cfg, tracer_provider=telemetry.tracer_provider, meter_provider=telemetry.meter_provider)
    mw = ShadowWSGIMiddleware(_app, shadow=shadow)
    environ = _environ(
        REQUEST_METHOD="POST",
        PATH_INFO="/predict",
        HTTP_TRANSFER_ENCODING="chunked",
        **{"wsgi.input_terminated": True, "wsgi.input": io.BytesIO(b'{"x": 1}')},
    )
    result = mw(environ, lambda status, headers, exc_info=None: lambda data: None)
    b"".join(result)
    result.close()  # type: ignore[attr-defined]
    assert shadow.flush(5)
    assert shadow_server.received[0].body == b'{"x": 1}'
    shadow.close()
