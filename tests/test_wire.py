"""The wire rules (issue 12), against raw-socket servers that answer exactly as crafted.

Each adversarial answer asserts the outcome (or the client's exception) and that the next
exchange gets a fresh connection: the server counts the connections it accepted.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import shadow_middleware._http as http
import shadow_middleware._pipeline as pipeline
from shadow_middleware import Shadow, ShadowConfig, ShadowTarget
from shadow_middleware._config import RouteTable, _route
from shadow_middleware._http import BadHTTPResponse, CandidateResponse, InvalidRequest, MiniHTTPClient
from shadow_middleware._wire import (
    MARKER,
    HeaderFilter,
    ShadowURL,
    forwarded_headers,
    outgoing_headers,
    shadow_url,
    unsafe_path,
)

from .rawserver import Handler, serving
from .rawserver import RawServer as Raw

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


@pytest.fixture
def serve() -> Iterator[Callable[[Handler], Raw]]:
    made: list[Raw] = []
    yield serving(made)
    for s in made:
        s.close()


def answers(*replies: bytes, then: bytes = OK) -> Callable[[Raw, socket.socket], None]:
    """Answer the n-th request received (over all connections) with ``replies[n]``, later
    ones with ``then``; keep every connection open until the client closes it."""
    count = [0]
    lock = threading.Lock()

    def handler(srv: Raw, conn: socket.socket) -> None:
        while srv.read_request(conn) is not None:
            with lock:
                n = count[0]
                count[0] += 1
            conn.sendall(replies[n] if n < len(replies) else then)

    return handler


async def exchanges(url: ShadowURL, n: int, method: str = "POST", **kw: Any) -> list[Any]:
    client = MiniHTTPClient(kw.pop("cap", 1 << 20))
    out: list[Any] = []
    try:
        for _ in range(n):
            try:
                out.append(
                    await client.send(method, url, [("x-a", "1")], b'{"k": 1}', kw.get("timeout", 2.0))
                )
            except Exception as exc:
                out.append(exc)
    finally:
        await client.close()
    return out


def run(coro: Any) -> Any:
    return asyncio.run(coro)


CHUNKED = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"

# Item 4: framings llhttp or our own checks reject, as soon as they are seen.
BAD = {
    "chunk-size-0x": CHUNKED + b"0x5\r\nhello\r\n0\r\n\r\n",
    "chunk-size-underscore": CHUNKED + b"1_0\r\n0123456789abcdef\r\n0\r\n\r\n",
    "te-xchunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: xchunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "te-and-cl": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "te-gzip-and-cl": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nContent-Length: 5\r\n\r\nhello",
    "te-twice": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5\r\nhello\r\n0\r\n\r\n",
    "cl-space-before-colon": b"HTTP/1.1 200 OK\r\nContent-Length : 5\r\n\r\nhello",
    "obs-fold": b"HTTP/1.1 200 OK\r\nX-A: a\r\n Content-Length: 5\r\n\r\nhello",
    "version-suffix": b"HTTP/1.1x 200 OK\r\nContent-Length: 5\r\n\r\nhello",
    "http-2.0": b"HTTP/2.0 200 OK\r\nContent-Length: 5\r\n\r\nhello",
    "switching-protocols": b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    "status-099": b"HTTP/1.1 099 X\r\nContent-Length: 5\r\n\r\nhello",
    "leading-crlf": b"\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
    "nul-in-header": b"HTTP/1.1 200 OK\r\nX-A: a\x00b\r\nContent-Length: 5\r\n\r\nhello",
    "chunk-data-without-crlf": CHUNKED + b"5\r\nhelloXX0\r\n\r\n",
    "nine-interim": b"HTTP/1.1 100 Continue\r\n\r\n" * 9 + OK,
}


@pytest.mark.parametrize("raw", list(BAD.values()), ids=list(BAD))
def test_bad_framing_is_an_error_and_the_next_exchange_gets_a_fresh_connection(
    serve: Callable[..., Raw], raw: bytes
) -> None:
    s = serve(answers(raw))
    first, second = run(exchanges(s.url(), 2))
    assert isinstance(first, BadHTTPResponse), first
    assert isinstance(second, CandidateResponse) and second.body == b"ok"
    assert s.connections == 2


def test_eight_interim_responses_are_fine_and_the_connection_is_kept(serve: Callable[..., Raw]) -> None:
    s = serve(answers(b"HTTP/1.1 100 Continue\r\n\r\n" * 8 + OK))
    results = run(exchanges(s.url(), 2))
    assert [r.body for r in results] == [b"ok", b"ok"]
    assert s.connections == 1


@pytest.mark.parametrize(
    ("raw", "pooled"),
    [
        pytest.param(OK, True, id="keep-alive"),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok", False, id="close"
        ),
        pytest.param(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", False, id="http10"),
        pytest.param(
            b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok",
            True,
            id="http10-keep-alive",
        ),
        pytest.param(OK + b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nXX", False, id="second-response"),
        pytest.param(OK + b"garbage", False, id="bytes-after-response"),
        pytest.param(CHUNKED + b"2\r\nok\r\n0\r\nX-T: 1\r\n\r\n", True, id="chunked-trailer"),
    ],
)
def test_only_a_clean_response_that_did_not_ask_to_close_is_pooled(
    serve: Callable[..., Raw], raw: bytes, pooled: bool
) -> None:
    s = serve(answers(raw, raw))
    results = run(exchanges(s.url(), 2))
    assert [(r.status, r.body) for r in results] == [(200, b"ok")] * 2
    assert s.connections == (1 if pooled else 2)


def test_head_response_is_not_read_as_a_body_and_not_pooled(serve: Callable[..., Raw]) -> None:
    s = serve(answers(b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n"))
    head, post = run(exchanges(s.url(), 2, method="HEAD"))
    assert (head.status, head.body) == (200, b"")
    assert isinstance(post, CandidateResponse) and s.connections == 2


# ---- item 2: the head and the trailers are bounded; parsing is linear --------------


def endless(prefix: bytes, filler: bytes) -> Callable[[Raw, socket.socket], None]:
    def handler(srv: Raw, conn: socket.socket) -> None:
        if srv.read_request(conn) is None:
            return
        conn.sendall(prefix)
        sent = len(prefix)
        block = filler * (65536 // len(filler))
        try:
            while sent < 64 << 20:
                conn.sendall(block)
                sent += len(block)
        finally:
            srv.sent = sent

    return handler


@pytest.mark.parametrize(
    ("prefix", "filler"),
    [
        pytest.param(CHUNKED + b"5\r\nhello\r\n0\r\n", b"X", id="trailer-without-crlf"),
        pytest.param(CHUNKED + b"5\r\nhello\r\n0\r\n", b"X-T: 1\r\n", id="endless-trailer-lines"),
        pytest.param(CHUNKED + b"5;", b"e", id="endless-chunk-extension"),
        pytest.param(b"HTTP/1.1 200 OK\r\nX-Long: ", b"a", id="head-without-crlf"),
        pytest.param(b"HTTP/1.1 200 OK\r\n", b"X-H: 1\r\n", id="endless-head-lines"),
    ],
)
def test_endless_framing_ends_as_an_error_within_bounded_bytes_and_cpu(
    serve: Callable[..., Raw], prefix: bytes, filler: bytes
) -> None:
    s = serve(endless(prefix, filler))

    async def one() -> tuple[Any, float, float]:
        cpu, wall = time.thread_time(), time.perf_counter()
        (result,) = await exchanges(s.url(), 1, cap=1024, timeout=5.0)
        return result, time.thread_time() - cpu, time.perf_counter() - wall

    result, cpu, wall = run(one())
    assert isinstance(result, BadHTTPResponse), result  # not a timeout: the bound ended it
    assert wall < 2.0 and cpu < 0.5, (wall, cpu)
    deadline = time.monotonic() + 2.0
    while s.sent is None and time.monotonic() < deadline:
        time.sleep(0.01)
    # The server wrote at most what the client read (< 1 MiB) plus the socket buffers.
    assert s.sent is not None and s.sent < 16 << 20


def test_a_stream_of_small_chunks_is_not_mistaken_for_endless_framing(serve: Callable[..., Raw]) -> None:
    body = b"".join(b"1\r\n" + bytes([65 + i % 26]) + b"\r\n" for i in range(20_000)) + b"0\r\n\r\n"
    s = serve(answers(CHUNKED + body))
    (result,) = run(exchanges(s.url(), 1))
    assert len(result.body) == 20_000 and not result.truncated


# ---- item 3: never resend; check idle connections before reuse ---------------------


def test_request_on_a_connection_closed_after_reading_it_is_not_resent(serve: Callable[..., Raw]) -> None:
    seen = [0]

    def handler(srv: Raw, conn: socket.socket) -> None:
        while srv.read_request(conn) is not None:
            seen[0] += 1
            if seen[0] == 2:
                return  # read the second request whole, then close without answering
            conn.sendall(OK)

    s = serve(handler)
    first, second, third = run(exchanges(s.url(), 3))
    assert isinstance(first, CandidateResponse)
    assert isinstance(second, ConnectionError), second  # an error, not a replay
    assert isinstance(third, CandidateResponse)
    assert len(s.requests) == 3  # exactly one copy of the second request
    assert s.connections == 2


def test_engine_outcome_is_error_and_the_copy_arrives_once(serve: Callable[..., Raw]) -> None:
    seen = [0]

    def handler(srv: Raw, conn: socket.socket) -> None:
        while srv.read_request(conn) is not None:
            seen[0] += 1
            if seen[0] == 2:
                return
            conn.sendall(b'HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n{"ok": true}')

    s = serve(handler)
    shadow = engine(f"http://127.0.0.1:{s.port}")
    try:
        drive(shadow, 2)
        assert shadow.stats()["match"] == 1 and shadow.stats()["error"] == 1
    finally:
        shadow.close()
    assert len(s.requests) == 2


def test_idle_connection_closed_by_the_server_is_not_reused(serve: Callable[..., Raw]) -> None:
    def handler(srv: Raw, conn: socket.socket) -> None:
        if srv.read_request(conn) is not None:
            conn.sendall(OK)  # keep-alive announced, then closed anyway
            conn.shutdown(socket.SHUT_RDWR)
            srv.closed_by_peer.set()

    s = serve(handler)

    async def scenario() -> list[Any]:
        client = MiniHTTPClient(1024)
        out = []
        for _ in range(3):
            out.append(await client.send("POST", s.url(), [], b"x", 2.0))
            # Block the loop: the EOF is in the socket, not yet seen by eof_received.
            assert s.closed_by_peer.wait(2.0)
            s.closed_by_peer.clear()
            time.sleep(0.01)
        await client.close()
        return out

    assert [r.body for r in run(scenario())] == [b"ok"] * 3
    assert s.connections == 3 and len(s.requests) == 3


def test_idle_connections_expire(serve: Callable[..., Raw], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http, "IDLE_TTL", 0.1)
    s = serve(answers())

    async def scenario() -> None:
        client = MiniHTTPClient(1024)
        await client.send("POST", s.url(), [], b"x", 2.0)
        await asyncio.sleep(0.3)  # the sweeper closes it after IDLE_TTL
        assert s.closed_by_peer.is_set()
        await client.send("POST", s.url(), [], b"x", 2.0)
        await client.close()

    run(scenario())
    assert s.connections == 2
    assert http.IDLE_TTL < 2.0  # default: below gunicorn's 2 s and uvicorn's 5 s keep-alive


def test_default_idle_ttl_is_below_common_server_keep_alive() -> None:
    assert 0 < http.IDLE_TTL <= 1.5


# ---- item 7: bounds --------------------------------------------------------------


def test_idle_pool_is_bounded_per_origin_and_in_total(
    serve: Callable[..., Raw], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(http, "MAX_IDLE_PER_ORIGIN", 2)
    monkeypatch.setattr(http, "MAX_IDLE_TOTAL", 3)
    a, b = serve(answers()), serve(answers())

    async def scenario() -> tuple[int, int, int]:
        client = MiniHTTPClient(1024)
        await asyncio.gather(*(client.send("POST", a.url(), [], b"x", 2.0) for _ in range(5)))
        after_a = client._idle_count
        await asyncio.gather(*(client.send("POST", b.url(), [], b"x", 2.0) for _ in range(5)))
        after_b = client._idle_count
        per_origin = max(len(d) for d in client._idle.values())
        await client.close()
        return after_a, after_b, per_origin

    after_a, after_b, per_origin = run(scenario())
    assert (after_a, after_b, per_origin) == (2, 3, 2)
    assert a.connections == 5 and b.connections == 5


class _RefusingClient:
    """A client that refuses every request as ours (what an invalid request line gets)."""

    def __init__(self, cap: int) -> None:
        pass

    async def send(self, *args: Any) -> CandidateResponse:
        raise InvalidRequest("refused by us")

    async def close(self) -> None:
        pass


def test_circuit_breaker_ignores_our_own_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pipeline, "default_client", _RefusingClient)
    shadow = engine("http://127.0.0.1:9", circuit_failures=1)
    try:
        drive(shadow, 3)
        stats = shadow.stats()
    finally:
        shadow.close()
    assert stats["error"] == 3 and stats["dropped"] == 0  # never opened


def test_circuit_breaker_counts_the_candidates_failures() -> None:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there: connection refused
    shadow = engine(f"http://127.0.0.1:{port}", circuit_failures=1)
    try:
        drive(shadow, 3)
        stats = shadow.stats()
    finally:
        shadow.close()
    assert stats["error"] == 1 and stats["dropped"] == 2  # opened after the first failure


# ---- items 1 and 6: nothing in a request steers the copy; request lines are valid -----


def engine(base_url: str, **kw: Any) -> Shadow:
    cfg = ShadowConfig(
        targets=[ShadowTarget("v2", base_url=base_url, timeout=2.0)],
        routes=["POST /{model}/predict", "POST /predict", "* /any"],
        **kw,
    )
    return Shadow(cfg)


def drive(shadow: Shadow, n: int, method: str = "POST", path: str = "/predict", query: str = "") -> int:
    """Run ``n`` requests through the adapter API one after the other; how many were shadowed."""
    body = b'{"a": 1}'
    shadowed = 0
    for _ in range(n):
        route = shadow.match(method, path) or "POST /predict"
        tap = shadow.begin(route, method, path, query, [("content-type", "application/json")], len(body))
        if tap is None:
            continue
        shadowed += 1
        tap.feed(body)
        tap.body_complete()
        tap.response_start(200, "")
        tap.response_body(b'{"ok": true}')
        tap.response_complete()
        tap.finish()
        assert shadow.flush(5)
    return shadowed


def test_a_path_without_a_leading_slash_never_matches_a_route() -> None:
    table = RouteTable([_route(0, "POST /{model}/predict"), _route(1, "POST /predict")])
    assert table.match("POST", "/81/predict") == "POST /{model}/predict"
    assert table.match("POST", "81/predict") is None
    assert table.match("POST", "xpredict") is None
    shadow = engine("http://127.0.0.1:80")
    try:
        assert shadow.match("POST", "81/predict") is None
    finally:
        shadow.close()


@pytest.mark.parametrize(
    ("method", "path", "query"),
    [
        pytest.param("POST", "81/predict", "", id="no-leading-slash"),
        pytest.param("POST", "", "", id="empty-path"),
        pytest.param("POST /x HTTP/1.1\r\nX-Injected: yes\r\nX:", "/predict", "", id="method-injection"),
        pytest.param("PO ST", "/predict", "", id="method-space"),
        pytest.param("", "/predict", "", id="method-empty"),
        pytest.param("POST", "/predict HTTP/1.1\r\nX-Injected: yes", "", id="path-injection"),
        pytest.param("POST", "/predict", "a=1\r\nX: y", id="query-crlf"),
        pytest.param("POST", "/pre\x00dict", "", id="path-nul"),
        pytest.param("POST", "/pre dict", "", id="path-space"),
        pytest.param("POST", "/pré\u20acdict", "", id="path-not-latin1"),
    ],
)
def test_invalid_request_lines_are_never_shadowed_and_not_counted(
    serve: Callable[..., Raw], method: str, path: str, query: str
) -> None:
    s = serve(answers())
    shadow = engine(f"http://127.0.0.1:{s.port}")
    try:
        assert drive(shadow, 1, method=method, path=path, query=query) == 0
        assert sum(shadow.stats().values()) == 0  # refused before any target: not eligible
        assert drive(shadow, 1) == 1  # a valid one still is
    finally:
        shadow.close()
    assert len(s.requests) == 1 and b"Injected" not in s.requests[0]


def test_the_client_refuses_an_invalid_request_line_itself(serve: Callable[..., Raw]) -> None:
    s = serve(answers())
    bad_method = "POST /x HTTP/1.1\r\nX-Injected: yes\r\nX:"
    (r1,) = run(exchanges(s.url(), 1, method=bad_method))
    (r2,) = run(exchanges(s.url("81/predict"), 1))
    assert isinstance(r1, InvalidRequest) and isinstance(r2, InvalidRequest)
    assert s.connections == 0


def test_shadow_url_takes_host_and_port_from_the_target_only() -> None:
    t = ShadowTarget("v2", base_url="http://127.0.0.1:80")
    url = shadow_url(t, "/81/predict", "")
    assert (url.host, url.port, url.target) == ("127.0.0.1", 80, "/81/predict")
    # Even a path that was never validated cannot move the port: nothing is re-parsed.
    assert shadow_url(t, "81/predict", "").port == 80


# ---- item 5: target headers ------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {"Host": "evil"},
        {"Content-Length": "0"},
        {"Transfer-Encoding": "chunked"},
        {"connection": "close"},
        {"Keep-Alive": "timeout=5"},
        {"TE": "trailers"},
        {"Trailer": "x"},
        {"Upgrade": "h2c"},
        {"Proxy-Authorization": "Basic x"},
        {"proxy-anything": "x"},
        {"x-shadow-request": "other"},
        {"bad name": "v"},
        {"x(y)": "v"},
        {"": "v"},
        {"x-token": "a\r\nb"},
        {"x-token": "a\x00b"},
        {"x-token": "a\x7fb"},
        {"x-token": "caf\u00e9 \u20ac"},
        {"x-token": 5},
        # issue 18 item 12: the trace context is the shadow span's own, written by us
        {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
        {"TraceState": "v=1"},
        {"baggage": "k=v"},
    ],
)
def test_target_headers_refuse_framing_names_bad_tokens_and_bad_values(headers: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"^ShadowTarget\.headers: "):
        ShadowTarget("v2", url="http://h/x", headers=headers)


def test_target_headers_accept_latin1_values_and_tabs() -> None:
    t = ShadowTarget(
        "v2", url="http://h/x", headers={"X-Token": "caf\u00e9\tok", "Authorization": "Bearer x"}
    )
    assert t.headers["X-Token"] == "caf\u00e9\tok"


def test_target_header_value_reaches_the_wire_as_latin1(serve: Callable[..., Raw]) -> None:
    s = serve(answers())

    async def one() -> None:
        client = MiniHTTPClient(1024)
        await client.send("POST", s.url(), [("x-token", "caf\u00e9")], b"", 2.0)
        await client.close()

    run(one())
    assert b"x-token: caf\xe9\r\n" in s.requests[0]


# ---- issue 18, items 9-12: what leaves the process ------------------------------------


def test_trace_context_target_headers_are_refused_with_a_clear_message() -> None:
    with pytest.raises(ValueError, match="propagates its own trace context"):
        ShadowTarget("v2", url="http://h/x", headers={"traceparent": "00-1-2-01"})


def test_a_name_the_propagation_writes_is_sent_once() -> None:
    # A propagator other than W3C's (B3, say) writes names a target may set: the
    # propagation's value is the one sent, once.
    target = ShadowTarget("v2", url="http://h/x", headers={"B3": "mine", "X-Team": "ml"})
    propagation = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "b3": "ours"}
    out = outgoing_headers([("b3", "client"), ("x-a", "1")], target, frozenset({"b3", "x-team"}), propagation)
    names = [k.lower() for k, _ in out]
    assert sorted(names) == sorted(["x-a", "b3", "x-team", MARKER, "traceparent"])
    assert dict((k.lower(), v) for k, v in out)["b3"] == "ours"


@pytest.mark.parametrize(
    ("query", "recorded"),
    [
        ("access_token=SECRET-QUERY&api_key=SECRET-QKEY", "access_token=REDACTED&api_key=REDACTED"),
        ("a=1", "a=REDACTED"),
        ("a=&b==x", "a=REDACTED&b=REDACTED"),
        ("SECRET-BARE&k=v", "REDACTED&k=REDACTED"),
        ("a=1&&b=2", "a=REDACTED&&b=REDACTED"),
        ("", None),
    ],
)
def test_url_full_keeps_query_keys_and_redacts_every_value(query: str, recorded: str | None) -> None:
    url = shadow_url(ShadowTarget("v2", base_url="http://127.0.0.1:8080/base"), "/predict", query)
    # What goes on the wire is the request's query as it came ...
    assert url.target == ("/base/predict" + (f"?{query}" if query else ""))
    # ... what a span records never holds a value.
    want = "http://127.0.0.1:8080/base/predict" + (f"?{recorded}" if recorded is not None else "")
    assert url.full == want
    assert "SECRET" not in url.full


def test_spans_never_record_a_query_value(serve: Callable[..., Raw]) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    s = serve(answers())
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    shadow = Shadow(
        ShadowConfig(targets=[ShadowTarget("v2", base_url=f"http://127.0.0.1:{s.port}")]),
        tracer_provider=provider,
    )
    try:
        assert drive(shadow, 1, query="access_token=SECRET-QUERY&api_key=SECRET-QKEY") == 1
    finally:
        shadow.close()
    (span,) = exporter.get_finished_spans()
    attrs = dict(span.attributes or {})
    assert attrs["url.full"] == f"http://127.0.0.1:{s.port}/predict?access_token=REDACTED&api_key=REDACTED"
    assert "SECRET" not in repr(attrs)
    assert b"?access_token=SECRET-QUERY&api_key=SECRET-QKEY " in s.requests[0]  # sent as it came


@pytest.mark.parametrize(
    "name",
    [
        "authorization",
        "cookie",
        "proxy-authorization",
        "x-api-key",
        "x-auth-token",
        "x-amz-security-token",
        "x-csrf-token",
        "x-csrftoken",
        "x-xsrf-token",
        "x-session-id",
        "x-signature",
        "x-hub-signature-256",
        "set-cookie",
        "x-goog-api-key",
        "ocp-apim-subscription-key",
        "x-client-secret",
        "x-password",
        "x-amz-credential",
        "dpop",
        "x-jwt-assertion",
        "x-forwarded-authorization",
    ],
)
def test_credential_like_names_are_withheld_by_default_and_forwardable_one_by_one(name: str) -> None:
    pairs = [(name, "SECRET"), ("content-type", "application/json"), ("x-request-id", "r-1")]
    default = ShadowConfig(targets=[ShadowTarget("v2", url="http://h/x")])
    assert forwarded_headers(pairs, default.header_filter) == pairs[1:]
    opted = ShadowConfig(targets=[ShadowTarget("v2", url="http://h/x")], forward_headers=[name.upper()])
    assert forwarded_headers(pairs, opted.header_filter) == pairs
    assert opted.forward_headers == frozenset({name})


def test_ordinary_headers_still_go() -> None:
    pairs = [
        (n, "v")
        for n in ("content-type", "accept", "x-request-id", "user-agent", "x-model-version", "x-team")
    ]
    default = ShadowConfig(targets=[ShadowTarget("v2", url="http://h/x")])
    assert forwarded_headers(pairs, default.header_filter) == pairs


def test_drop_headers_still_win_and_empty_still_forwards_everything() -> None:
    target = [ShadowTarget("v2", url="http://h/x")]
    custom = ShadowConfig(targets=target, drop_headers=["x-tenant"], forward_headers=["x-session-id"])
    pairs = [("x-tenant", "t"), ("x-session-id", "s"), ("authorization", "a"), ("x-a", "1")]
    # drop_headers names are withheld; the rule still applies beside them; the opt-in forwards.
    assert forwarded_headers(pairs, custom.header_filter) == [("x-session-id", "s"), ("x-a", "1")]
    # drop_headers=() is the old opt-in to forwarding credentials: kept (the rule is off too);
    # what is never forwarded (hop-by-hop, the marker, trace context) still is not.
    everything = ShadowConfig(targets=target, drop_headers=())
    assert forwarded_headers([*pairs, ("te", "x"), (MARKER, "y")], everything.header_filter) == pairs
    assert HeaderFilter.of(frozenset(), frozenset()).rule is False


def test_forward_headers_is_a_list_of_names() -> None:
    with pytest.raises(ValueError, match=r"^ShadowConfig\.forward_headers: must be a list of strings"):
        ShadowConfig(targets=[ShadowTarget("v2", url="http://h/x")], forward_headers="x-session-id")


@pytest.mark.parametrize(
    ("path", "query"),
    [
        ("/f/a/..%2f..%2fx", ""),  # the review's two
        ("/u/%2e%2e", ""),
        ("/u/%2E%2E/x", ""),
        ("/u/.", ""),
        ("/u/../x", ""),
        ("/u/..", ""),
        ("/u/%2e", ""),
        ("/u/.%2e/x", ""),
        ("/u/..;/x", ""),
        ("/u/..;jsessionid=1/x", ""),
        ("/u/%252e%252e/x", ""),  # decoded twice by some servers
        ("/u/%25252e%25252e/x", ""),
        ("/u/..%5c..%5cx", ""),  # backslash as a separator
        ("/u/a\\..\\x", ""),
        ("/u/a\\b", ""),  # a raw backslash is not a URI character
        ("/u/a#frag", ""),  # a fragment never belongs in a request-target
        ("/u/a", "x=1#frag"),
        ("/u/a/%252525252e", ""),  # still encoded after every round looked through
    ],
)
def test_unsafe_paths(path: str, query: str) -> None:
    assert unsafe_path(path, query)


@pytest.mark.parametrize(
    ("path", "query"),
    [
        ("/predict", ""),
        ("/predict", "a=1&b=..&c=%2e%2e"),  # the query is not a path
        ("/m/v1.2/predict", ""),
        ("/m/.well-known", ""),
        ("/m/...", ""),
        ("/m/..a", ""),
        ("/m/a..", ""),
        ("/m/a%2Fb", ""),  # an encoded slash alone stays below the base
        ("/m/%23", ""),  # an encoded "#" is data
        ("/m/%2541", ""),
        ("/m/caf%C3%A9", ""),
        ("/m/%zz", ""),
        ("/", ""),
    ],
)
def test_safe_paths(path: str, query: str) -> None:
    assert not unsafe_path(path, query)


def test_an_unsafe_path_is_counted_skipped_and_never_sent(serve: Callable[..., Raw]) -> None:
    s = serve(answers())
    shadow = engine(f"http://127.0.0.1:{s.port}/base")
    try:
        for path in ("/any/..%2f..%2fx", "/any/%2e%2e", "/any/a#frag"):
            assert drive(shadow, 1, path=path) == 0
        assert drive(shadow, 1, path="/any", query="x=1#frag") == 0
        stats = shadow.stats()
        assert stats["skipped"] == 4 and sum(stats.values()) == 4
        assert drive(shadow, 1, path="/any") == 1  # a safe one still is
    finally:
        shadow.close()
    assert len(s.requests) == 1 and s.requests[0].startswith(b"POST /base/any HTTP/1.1\r\n")


def test_forward_headers_from_the_environment_and_toml(tmp_path: Any) -> None:
    env = {
        "SHADOW_TARGETS": "v2",
        "SHADOW_TARGET_V2_URL": "http://h/x",
        "SHADOW_FORWARD_HEADERS": "X-Session-Id,x-csrf-token",
    }
    assert ShadowConfig.from_env(env).forward_headers == frozenset({"x-session-id", "x-csrf-token"})
    toml = tmp_path / "shadow.toml"
    toml.write_text('forward_headers = ["X-Auth-Token"]\n[[targets]]\nname = "v2"\nurl = "http://h/x"\n')
    config = ShadowConfig.from_toml(toml)
    assert config.forward_headers == frozenset({"x-auth-token"})
    assert forwarded_headers([("x-auth-token", "t")], config.header_filter) == [("x-auth-token", "t")]
