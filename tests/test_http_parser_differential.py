"""Differential test of the response parser: our client (llhttp plus our own checks) and h11
parse the same bytes, and we accept exactly what h11 accepts, with the same status and
body -- except where we are deliberately stricter, listed in STRICTER with the reason.

Each input is sent by a raw server that then closes its side, so h11 is given the same
end of stream (``receive_data(b"")``).
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator

import h11
import pytest

from shadow_middleware._http import CandidateResponse, MiniHTTPClient
from shadow_middleware._wire import ShadowURL

H = b"HTTP/1.1 200 OK\r\n"
CHUNKED = H + b"Transfer-Encoding: chunked\r\n\r\n"

INPUTS: dict[str, bytes] = {
    # valid
    "content-length": H + b"Content-Length: 5\r\n\r\nhello",
    "chunked": CHUNKED + b"5\r\nhello\r\n0\r\n\r\n",
    "chunked-upper": H + b"Transfer-Encoding: Chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "chunk-extension": CHUNKED + b"5;a=b\r\nhello\r\n0\r\n\r\n",
    "chunk-size-hex": CHUNKED + b"A\r\n0123456789\r\n0\r\n\r\n",
    "trailer": CHUNKED + b"5\r\nhello\r\n0\r\nX-T: 1\r\n\r\n",
    "until-close": H + b"\r\nhello",
    "http10": b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nhello",
    "no-reason": b"HTTP/1.1 200\r\nContent-Length: 5\r\n\r\nhello",
    "gzip-content-encoding": H + b"Content-Encoding: gzip\r\nContent-Length: 3\r\n\r\n\x1f\x8b\x08",
    "interim-then-final": b"HTTP/1.1 100 Continue\r\n\r\n" + H + b"Content-Length: 5\r\n\r\nhello",
    "status-204": b"HTTP/1.1 204 No Content\r\n\r\n",
    "status-600": b"HTTP/1.1 600 X\r\nContent-Length: 5\r\n\r\nhello",
    "empty-header-value": H + b"X-Empty:\r\nContent-Length: 5\r\n\r\nhello",
    "obs-text-value": H + b"X-A: caf\xe9\r\nContent-Length: 5\r\n\r\nhello",
    "connection-close": H + b"Connection: close\r\nContent-Length: 5\r\n\r\nhello",
    # the issue's list (12, item 4)
    "chunk-size-0x": CHUNKED + b"0x5\r\nhello\r\n0\r\n\r\n",
    "chunk-size-underscore": CHUNKED + b"1_0\r\n0123456789abcdef\r\n0\r\n\r\n",
    "te-xchunked": H + b"Transfer-Encoding: xchunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "te-and-cl": H + b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "te-gzip-and-cl": H + b"Transfer-Encoding: gzip\r\nContent-Length: 5\r\n\r\nhello",
    "te-twice": H
    + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "cl-space-before-colon": H + b"Content-Length : 5\r\n\r\nhello",
    "obs-fold": H + b"X-A: a\r\n b\r\nContent-Length: 5\r\n\r\nhello",
    "obs-fold-hiding-cl": H + b"X-A: a\r\n Content-Length: 5\r\n\r\nhello",
    "version-suffix": b"HTTP/1.1x 200 OK\r\nContent-Length: 5\r\n\r\nhello",
    "switching-protocols": b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    # more invalid or ambiguous ones
    "te-gzip": H + b"Transfer-Encoding: gzip\r\n\r\nhello",
    "te-gzip-chunked": H + b"Transfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "te-identity": H + b"Transfer-Encoding: identity\r\n\r\nhello",
    "cl-plus": H + b"Content-Length: +5\r\n\r\nhello",
    "cl-huge": H + b"Content-Length: 99999999999999999999999\r\n\r\nhello",
    "cl-twice-different": H + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    "cl-twice-same": H + b"Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
    "cl-list": H + b"Content-Length: 5, 5\r\n\r\nhello",
    "short-body": H + b"Content-Length: 10\r\n\r\nhello",
    "chunk-truncated": CHUNKED + b"5\r\nhel",
    "chunk-no-last": CHUNKED + b"5\r\nhello\r\n",
    "chunk-data-without-crlf": CHUNKED + b"5\r\nhelloXX0\r\n\r\n",
    "chunk-size-space": CHUNKED + b"5 \r\nhello\r\n0\r\n\r\n",
    "chunk-size-huge": CHUNKED + b"ffffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
    "trailer-unterminated": CHUNKED + b"5\r\nhello\r\n0\r\nX-T: 1\r\n",
    "nul-in-header": H + b"X-A: a\x00b\r\nContent-Length: 5\r\n\r\nhello",
    "space-in-name": H + b"X A: b\r\nContent-Length: 5\r\n\r\nhello",
    "no-colon": H + b"broken header\r\nContent-Length: 5\r\n\r\nhello",
    "status-099": b"HTTP/1.1 099 X\r\nContent-Length: 5\r\n\r\nhello",
    "status-2000": b"HTTP/1.1 2000 OK\r\nContent-Length: 5\r\n\r\nhello",
    "http-2.0": b"HTTP/2.0 200 OK\r\nContent-Length: 5\r\n\r\nhello",
    "lf-only": b"HTTP/1.1 200 OK\nContent-Length: 5\n\nhello",
    "leading-crlf": b"\r\n" + H + b"Content-Length: 5\r\n\r\nhello",
    "not-http": b"NOT HTTP\r\n\r\n",
    "head-unterminated": H + b"Content-Length: 5\r\n",
    "nothing": b"",
}

#: Where we reject what h11 accepts, and why. Nothing else may differ.
STRICTER = {
    "te-and-cl": "RFC 9112 §6.1: a sender must not send both; llhttp rejects, h11 lets chunked win",
    "obs-fold": "llhttp rejects obs-fold (deprecated by RFC 9112 §5.2); h11 unfolds it",
    "obs-fold-hiding-cl": "as obs-fold: a folded line is never read as a header",
    "cl-twice-same": "llhttp rejects a repeated Content-Length even when equal",
    "cl-list": "llhttp rejects a Content-Length list even when the values agree",
    "chunk-size-space": "llhttp rejects whitespace after a chunk size",
    "lf-only": "llhttp requires CRLF line ends",
    "http-2.0": "we accept HTTP/1.0 and HTTP/1.1 responses only",
}


def h11_parse(data: bytes) -> tuple[int, bytes] | None:
    """(status, body) as h11 reads ``data`` followed by the end of the stream, or None."""
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method="POST", target="/p", headers=[("Host", "x"), ("Content-Length", "0")]))
    conn.send(h11.EndOfMessage())
    conn.receive_data(data)
    conn.receive_data(b"")
    status, body = 0, b""
    try:
        while True:
            event = conn.next_event()
            if isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                return status, body
            elif event is h11.NEED_DATA or isinstance(event, h11.ConnectionClosed):
                return None  # ended before the response did
    except h11.RemoteProtocolError:
        return None


@pytest.fixture(scope="module")
def server() -> Iterator[int]:
    """Answers each connection's request with the input named by the request path."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)

    def serve(conn: socket.socket) -> None:
        with conn:
            buf = b""
            while b"\r\n\r\n" not in buf:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                buf += chunk
            name = buf.split(b" ", 2)[1][1:].decode()
            conn.sendall(INPUTS[name])
            conn.shutdown(socket.SHUT_WR)
            while conn.recv(65536):
                pass

    def accept() -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    yield sock.getsockname()[1]
    sock.close()


def ours(port: int, name: str) -> tuple[int, bytes] | None:
    async def one() -> CandidateResponse | Exception:
        client = MiniHTTPClient(1 << 20)
        try:
            return await client.send(
                "POST", ShadowURL("http", "127.0.0.1", port, "x", f"/{name}"), [], b"", 2.0
            )
        except Exception as exc:
            return exc
        finally:
            await client.close()

    result = asyncio.run(one())
    if isinstance(result, CandidateResponse):
        return result.status, result.body
    assert not isinstance(result, TimeoutError), f"{name}: timed out instead of deciding"
    return None


@pytest.mark.parametrize("name", list(INPUTS))
def test_we_accept_exactly_what_h11_accepts(server: int, name: str) -> None:
    theirs = h11_parse(INPUTS[name])
    mine = ours(server, name)
    if name in STRICTER:
        assert theirs is not None and mine is None, (name, STRICTER[name], theirs, mine)
    else:
        assert mine == theirs, (name, mine, theirs)


def test_the_issue_inputs_are_all_rejected(server: int) -> None:
    issue = [
        "chunk-size-0x",
        "chunk-size-underscore",
        "te-xchunked",
        "te-and-cl",
        "te-gzip-and-cl",
        "te-twice",
        "cl-space-before-colon",
        "obs-fold-hiding-cl",
        "version-suffix",
        "switching-protocols",
    ]
    assert [n for n in issue if ours(server, n) is not None] == []
