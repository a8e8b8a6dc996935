"""The WSGI adapter, called the way a WSGI server calls it."""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Iterator
from typing import Any

import pytest
from flask import Flask, request

from shadow_middleware import Compare, Shadow, ShadowConfig, ShadowTarget, ShadowWSGIMiddleware

from .conftest import ShadowServer, Telemetry, json_reply

BODY = json.dumps({"id": "cust-1", "tenure": 3}).encode()
PREDICTION = json.dumps({"prediction": 0.5}).encode()


def environ(
    body: bytes = BODY,
    *,
    method: str = "POST",
    path: str = "/predict",
    chunked: bool = False,
    headers: dict[str, str] | None = None,
    stream: Any = None,
) -> dict[str, Any]:
    env: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "CONTENT_TYPE": "application/json",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": stream if stream is not None else io.BytesIO(body),
        "wsgi.errors": io.StringIO(),
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    if chunked:
        env["wsgi.input_terminated"] = True
        env["HTTP_TRANSFER_ENCODING"] = "chunked"
    else:
        env["CONTENT_LENGTH"] = str(len(body))
    for k, v in (headers or {}).items():
        env["HTTP_" + k.upper().replace("-", "_")] = v
    return env


class Response:
    def __init__(self) -> None:
        self.status = ""
        self.headers: list[tuple[str, str]] = []
        self.written: list[bytes] = []

    def start_response(self, status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        self.status, self.headers = status, headers
        return self.written.append


def call(app: Any, env: dict[str, Any]) -> tuple[Response, list[bytes]]:
    resp = Response()
    result = app(env, resp.start_response)
    try:
        chunks = list(result)
    finally:
        close = getattr(result, "close", None)
        if close:
            close()
    return resp, chunks


class App:
    """A plain WSGI prediction app with switches for the awkward cases."""

    def __init__(
        self,
        *,
        read: str = "all",
        chunks: Iterable[bytes] = (PREDICTION,),
        use_write: bool = False,
        fail_in_iteration: bool = False,
        raise_exc: BaseException | None = None,
    ) -> None:
        self.read, self.chunks, self.use_write = read, list(chunks), use_write
        self.fail_in_iteration, self.raise_exc = fail_in_iteration, raise_exc
        self.bodies: list[bytes] = []
        self.closed = 0

    def __call__(self, env: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        stream = env["wsgi.input"]
        if self.read == "all":
            length = env.get("CONTENT_LENGTH")
            body = stream.read(int(length)) if length else stream.read()
        elif self.read == "small":
            parts = []
            while part := stream.read(7):
                parts.append(part)
            body = b"".join(parts)
        elif self.read == "lines":
            body = b"".join(stream)
        else:
            body = b""
        self.bodies.append(body)
        if self.raise_exc is not None:
            raise self.raise_exc
        write = start_response("200 OK", [("Content-Type", "application/json")])
        if self.use_write:
            for c in self.chunks:
                write(c)
            return self._iterate([])
        return self._iterate(self.chunks)

    def _iterate(self, chunks: list[bytes]) -> Iterable[bytes]:
        app = self

        class Body:
            def __iter__(self) -> Iterator[bytes]:
                yield from chunks
                if app.fail_in_iteration:
                    raise OSError("stream broke")

            def close(self) -> None:
                app.closed += 1

        return Body()


def make(app: Any, server: ShadowServer, telemetry: Telemetry, **config: Any) -> ShadowWSGIMiddleware:
    cfg = ShadowConfig(targets=[ShadowTarget("v2", url=server.url + "/shadow")], **config)
    return ShadowWSGIMiddleware(
        app, config=cfg, tracer_provider=telemetry.tracer_provider, meter_provider=telemetry.meter_provider
    )


def outcome(mw: ShadowWSGIMiddleware, telemetry: Telemetry) -> dict[str, Any]:
    assert mw.shadow.flush(10)
    spans = telemetry.spans()
    assert len(spans) == 1
    return dict(spans[0].attributes or {})


def test_match_and_the_app_sees_the_same_bytes(shadow_server: ShadowServer, telemetry: Telemetry) -> None:
    app = App()
    mw = make(app, shadow_server, telemetry)
    resp, chunks = call(mw, environ())
    assert resp.status == "200 OK" and chunks == [PREDICTION]
    assert app.bodies == [BODY]
    a = outcome(mw, telemetry)
    assert a["shadow.outcome"] == "match"
    assert shadow_server.received[0].body == BODY
    assert app.closed == 1


@pytest.mark.parametrize("read", ["all", "small", "lines"])
def test_chunked_input_is_copied_whole(shadow_server: ShadowServer, telemetry: Telemetry, read: str) -> None:
    body = b'{"id": "c-7",\n"x": [1, 2, 3]}\n' * 50
    app = App(read=read)
    mw = make(app, shadow_server, telemetry)
    call(mw, environ(body, chunked=True))
    assert app.bodies == [body]
    assert outcome(mw, telemetry)["shadow.outcome"] == "match"
    assert shadow_server.received[0].body == body
    assert "transfer-encoding" not in shadow_server.received[0].headers


def test_write_callable_is_captured(shadow_server: ShadowServer, telemetry: Telemetry) -> None:
    shadow_server.reply = lambda req: json_reply({"prediction": 0.5, "extra": 1})
    app = App(use_write=True, chunks=[b'{"prediction": 0.5,', b' "extra": 1}'])
    mw = make(app, shadow_server, telemetry)
    resp, chunks = call(mw, environ())
    assert resp.written == [b'{"prediction": 0.5,', b' "extra": 1}'] and chunks == []
    assert outcome(mw, telemetry)["shadow.outcome"] == "match"


def test_close_is_called_when_iteration_fails(shadow_server: ShadowServer, telemetry: Telemetry) -> None:
    app = App(fail_in_iteration=True)
    mw = make(app, shadow_server, telemetry)
    with pytest.raises(OSError, match="stream broke"):
        call(mw, environ())
    assert app.closed == 1
    a = outcome(mw, telemetry)
    assert a["shadow.outcome"] == "skipped" and a["shadow.reason"] == "primary_exception"


def test_app_exception_propagates_unchanged(shadow_server: ShadowServer, telemetry: Telemetry) -> None:
    boom = ValueError("bad features")
    mw = make(App(raise_exc=boom), shadow_server, telemetry)
    with pytest.raises(ValueError) as info:
        call(mw, environ())
    assert info.value is boom
    a = outcome(mw, telemetry)
    assert a["shadow.outcome"] == "skipped" and a["shadow.reason"] == "primary_exception"


def test_body_not_read_is_skipped(shadow_server: ShadowServer, telemetry: Telemetry) -> None:
    mw = make(App(read="none"), shadow_server, telemetry)
    call(mw, environ())
    a = outcome(mw, telemetry)
    assert a["shadow.outcome"] == "skipped" and a["shadow.reason"] == "body_not_read"


def test_client_gone_mid_body_is_skipped(shadow_server: ShadowServer, telemetry: Telemetry) -> None:
    env = environ(BODY, stream=io.BytesIO(BODY[:10]))  # content-length says more than arrives
    app = App(read="small")
    mw = make(app, shadow_server, telemetry)
    call(mw, env)
    assert app.bodies == [BODY[:10]]
    a = outcome(mw, telemetry)
    assert a["shadow.outcome"] == "skipped"
    assert a["shadow.reason"] == "client_disconnect"
    assert shadow_server.received == []


def test_stream_error_mid_body_is_a_disconnect(shadow_server: ShadowServer, telemetry: Telemetry) -> None:
    class Broken(io.BytesIO):
        def read(self, size: int | None = -1) -> bytes:
            if self.tell() >= 10:
                raise OSError("client hung up")  # what gunicorn's body reader does
            return super().read(min(size or 10, 10))

    app = App(read="small")
    mw = make(app, shadow_server, telemetry)
    with pytest.raises(OSError, match="hung up"):
        call(mw, environ(BODY, stream=Broken(BODY)))
    a = outcome(mw, telemetry)
    assert a["shadow.outcome"] == "skipped" and a["shadow.reason"] == "client_disconnect"


def test_iteration_abandoned_by_the_server_is_skipped(
    shadow_server: ShadowServer, telemetry: Telemetry
) -> None:
    app = App(chunks=[b"a", b"b"])
    mw = make(app, shadow_server, telemetry)
    resp = Response()
    result = mw(environ(), resp.start_response)
    next(iter(result))
    result.close()  # type: ignore[attr-defined]
    assert app.closed == 1
    a = outcome(mw, telemetry)
    assert a["shadow.outcome"] == "skipped" and a["shadow.reason"] == "client_disconnect"


def test_over_cap_chunked_body_reaches_the_app_whole(
    shadow_server: ShadowServer, telemetry: Telemetry
) -> None:
    body = bytes(range(256)) * 100
    app = App(read="small")
    mw = make(app, shadow_server, telemetry, max_body_bytes=1024)
    call(mw, environ(body, chunked=True))
    assert app.bodies == [body]
    a = outcome(mw, telemetry)
    assert a["shadow.outcome"] == "skipped" and a["shadow.reason"] == "body_too_large"


def test_unrouted_requests_are_untouched(shadow_server: ShadowServer, telemetry: Telemetry) -> None:
    seen: list[Any] = []

    def app(env: dict[str, Any], start_response: Any) -> list[bytes]:
        seen.append(env["wsgi.input"])
        start_response("204 No Content", [])
        return []

    mw = make(app, shadow_server, telemetry)
    env = environ(path="/health")
    original = env["wsgi.input"]
    call(mw, env)
    assert seen == [original]
    assert mw.shadow.flush(5) and telemetry.spans() == []


def test_flask_reads_through_readinto(shadow_server: ShadowServer, telemetry: Telemetry) -> None:
    flask_app = Flask(__name__)

    @flask_app.post("/predict")
    def predict() -> Any:
        features = request.get_json()
        return {"prediction": 0.5, "id": features["id"]}

    shadow_server.reply = lambda req: json_reply({"prediction": 0.52, "id": json.loads(req.body)["id"]})
    mw = make(
        flask_app.wsgi_app, shadow_server, telemetry, compare=Compare(fields=["/prediction"], abs_tol=0.05)
    )
    flask_app.wsgi_app = mw  # type: ignore[method-assign]
    res = flask_app.test_client().post("/predict", json={"id": "c-3"})
    assert res.json == {"prediction": 0.5, "id": "c-3"}
    a = outcome(mw, telemetry)
    assert a["shadow.outcome"] == "match"
    assert a["shadow.candidate.body.prediction"] == 0.52


def test_shared_engine_between_asgi_and_wsgi(shadow_server: ShadowServer, telemetry: Telemetry) -> None:
    cfg = ShadowConfig(targets=[ShadowTarget("v2", url=shadow_server.url + "/s")])
    engine = Shadow(cfg, tracer_provider=telemetry.tracer_provider)
    a = ShadowWSGIMiddleware(App(), shadow=engine)
    b = ShadowWSGIMiddleware(App(), shadow=engine)
    call(a, environ())
    call(b, environ())
    assert engine.flush(5) and engine.stats()["match"] == 2
    engine.close()
