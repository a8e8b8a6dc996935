"""The minimal HTTP/1.1 shadow client against a raw server that answers exactly as scripted."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable, Iterator

import pytest

from shadow_middleware._http import BadHTTPResponse, IncompleteResponse, MiniHTTPClient
from shadow_middleware._wire import ShadowURL

from .rawserver import Handler, RawServer, serving

Script = Callable[[socket.socket, bytes], bool]  # (connection, request bytes) -> keep serving?


def scripted(script: Script) -> Handler:
    """Run ``script`` on each request of a connection, until it says stop."""

    def handler(srv: RawServer, conn: socket.socket) -> None:
        while (request := srv.read_request(conn)) is not None:
            if not script(conn, request.partition(b"\r\n\r\n")[0]):
                return

    return handler


@pytest.fixture
def server() -> Iterator[Callable[[Script], RawServer]]:
    made: list[RawServer] = []
    make = serving(made)
    yield lambda script: make(scripted(script))
    for s in made:
        s.close()


def run(coro: object) -> object:
    return asyncio.run(coro)  # type: ignore[arg-type]


async def send_many(
    url: ShadowURL, n: int, cap: int = 1 << 20, timeout: float = 2.0, method: str = "POST"
) -> list[object]:
    client = MiniHTTPClient(cap)
    out: list[object] = []
    try:
        for _ in range(n):
            try:
                out.append(await client.send(method, url, [("x-a", "1")], b'{"k": 1}', timeout))
            except Exception as exc:
                out.append(exc)
    finally:
        await client.close()
    return out


def reply(payload: bytes, extra: bytes = b"") -> Script:
    def script(conn: socket.socket, head: bytes) -> bool:
        conn.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Length: "
            + str(len(payload)).encode()
            + b"\r\n"
            + extra
            + b"\r\n"
            + payload
        )
        return True

    return script


def test_keep_alive_reuses_one_connection_and_sends_a_well_formed_request(
    server: Callable[[Script], RawServer],
) -> None:
    s = server(reply(b'{"ok": true}'))
    results = run(send_many(s.url("/p?q=1"), 5))
    assert [r.status for r in results] == [200] * 5  # type: ignore[attr-defined]
    assert all(r.body == b'{"ok": true}' for r in results)  # type: ignore[attr-defined]
    assert s.connections == 1
    first = s.requests[0]
    assert first.startswith(b"POST /p?q=1 HTTP/1.1\r\n")
    assert f"Host: 127.0.0.1:{s.port}\r\n".encode() in first
    assert b"x-a: 1\r\n" in first and b"Content-Length: 8\r\n" in first
    assert first.endswith(b'\r\n\r\n{"k": 1}')


def test_chunked_response_with_trailers(server: Callable[[Script], RawServer]) -> None:
    def script(conn: socket.socket, head: bytes) -> bool:
        conn.sendall(b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4;ext=1\r\n{"a"\r\n')
        conn.sendall(b"3\r\n: 1\r\n1\r\n}\r\n0\r\nX-Trailer: t\r\n\r\n")
        return True

    s = server(script)
    results = run(send_many(s.url("/p?q=1"), 3))
    assert [r.body for r in results] == [b'{"a": 1}'] * 3  # type: ignore[attr-defined]
    assert s.connections == 1


def test_interim_1xx_is_skipped_and_http10_closes(server: Callable[[Script], RawServer]) -> None:
    def script(conn: socket.socket, head: bytes) -> bool:
        conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.0 201 Created\r\nContent-Length: 2\r\n\r\nhi")
        return False

    s = server(script)
    results = run(send_many(s.url("/p?q=1"), 2))
    assert [(r.status, r.body) for r in results] == [(201, b"hi")] * 2  # type: ignore[attr-defined]
    assert s.connections == 2  # HTTP/1.0 without keep-alive: a new connection each time


def test_read_until_close_and_cap(server: Callable[[Script], RawServer]) -> None:
    def script(conn: socket.socket, head: bytes) -> bool:
        conn.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + b"x" * 5000)
        return False

    s = server(script)
    (whole,) = run(send_many(s.url("/p?q=1"), 1))
    assert whole.body == b"x" * 5000 and not whole.truncated  # type: ignore[attr-defined]
    (capped,) = run(send_many(s.url("/p?q=1"), 1, cap=100))
    assert capped.body == b"x" * 100 and capped.truncated  # type: ignore[attr-defined]


def test_capped_body_drops_the_connection(server: Callable[[Script], RawServer]) -> None:
    s = server(reply(b"y" * 10_000))
    results = run(send_many(s.url("/p?q=1"), 3, cap=10))
    assert all(r.truncated and r.body == b"y" * 10 for r in results)  # type: ignore[attr-defined]
    assert s.connections == 3  # never reused with unread bytes on it


def test_head_and_204_have_no_body(server: Callable[[Script], RawServer]) -> None:
    def script(conn: socket.socket, head: bytes) -> bool:
        if head.startswith(b"HEAD"):
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n")
        else:
            conn.sendall(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
        return True

    s = server(script)
    (h,) = run(send_many(s.url("/p?q=1"), 1, method="HEAD"))
    (n,) = run(send_many(s.url("/p?q=1"), 1))
    assert (h.status, h.body, n.status, n.body) == (200, b"", 204, b"")  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (b"NOT HTTP\r\n\r\n", BadHTTPResponse),
        (b"HTTP/1.1 2000 OK\r\n\r\n", BadHTTPResponse),
        (b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", BadHTTPResponse),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", BadHTTPResponse),
        (b"HTTP/1.1 200 OK\r\nbroken header\r\n\r\n", BadHTTPResponse),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", BadHTTPResponse),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort", BadHTTPResponse),
        (b"HTTP/1.1 200 OK\r\nContent-", BadHTTPResponse),
    ],
)
def test_bad_framing_is_an_error_and_the_connection_is_dropped(
    server: Callable[[Script], RawServer], raw: bytes, error: type[Exception]
) -> None:
    def script(conn: socket.socket, head: bytes) -> bool:
        conn.sendall(raw)
        conn.shutdown(socket.SHUT_WR)
        return False

    s = server(script)
    results = run(send_many(s.url("/p?q=1"), 2))
    assert all(isinstance(r, (BadHTTPResponse, IncompleteResponse)) for r in results), results
    assert isinstance(results[0], error)
    assert s.connections == 2


def test_timeout_closes_the_connection_and_the_client_recovers(server: Callable[[Script], RawServer]) -> None:
    state = {"stall": True}

    def script(conn: socket.socket, head: bytes) -> bool:
        if state["stall"]:
            threading.Event().wait(1.0)
            return False
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        return True

    s = server(script)

    async def scenario() -> list[object]:
        client = MiniHTTPClient(1024)
        out: list[object] = []
        for _ in range(3):
            try:
                await client.send("POST", s.url("/p?q=1"), [], b"x", 0.2)
            except TimeoutError as exc:
                out.append(exc)
        state["stall"] = False
        for _ in range(3):
            out.append(await client.send("POST", s.url("/p?q=1"), [], b"x", 1.0))
        await client.close()
        return out

    out = run(scenario())
    assert [type(o).__name__ for o in out[:3]] == ["TimeoutError"] * 3
    assert [o.body for o in out[3:]] == [b"ok"] * 3  # type: ignore[attr-defined]


def test_connection_closed_after_an_answer_is_not_reused_and_nothing_is_resent(
    server: Callable[[Script], RawServer],
) -> None:
    def script(conn: socket.socket, head: bytes) -> bool:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        return False  # closes after each answer without saying so

    s = server(script)

    async def scenario() -> list[object]:
        client = MiniHTTPClient(1024)
        out: list[object] = []
        for _ in range(4):
            out.append(await client.send("POST", s.url("/p?q=1"), [], b"x", 2.0))
            await asyncio.sleep(0.02)  # the close reaches us before the next request
        await client.close()
        return out

    results = run(scenario())
    assert [r.body for r in results] == [b"ok"] * 4  # type: ignore[attr-defined]
    assert len(s.requests) == 4 and s.connections == 4  # each request sent and processed once


def test_header_values_cannot_smuggle_lines(server: Callable[[Script], RawServer]) -> None:
    s = server(reply(b"ok"))

    async def scenario() -> None:
        client = MiniHTTPClient(1024)
        await client.send(
            "POST", s.url("/p?q=1"), [("x-ok", "1"), ("x-evil", "a\r\nInjected: yes")], b"", 1.0
        )
        await client.close()

    run(scenario())
    assert b"Injected" not in s.requests[0] and b"x-ok: 1" in s.requests[0]
