"""A minimal HTTP/1.1 client on asyncio protocols: the default shadow client.

Why not aiohttp or httpx: measured inside the dispatcher (bench/RESULTS.md), aiohttp
costs 120-215 us of CPU per request and httpx ~3,700 us, against a budget of 150 us for
the whole shadow exchange. A shadow request needs little: one request per connection at
a time, keep-alive, Content-Length or chunked bodies, a capped read, no redirects, no
cookies, our own timeout. This does exactly that and nothing more.

Every failure closes the connection, so a pool slot can never leak: a connection goes
back to the pool only after a complete, well-framed response.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from dataclasses import dataclass
from enum import Enum

from ._wire import ShadowURL


@dataclass(slots=True)
class CandidateResponse:
    status: int
    content_encoding: str
    body: bytes  # raw (still encoded) bytes, at most the cap
    truncated: bool


_MAX_HEAD = 65536
_MAX_IDLE_PER_ORIGIN = 64


class BadHTTPResponse(Exception):
    """The candidate's answer is not valid HTTP/1.x."""


class IncompleteResponse(Exception):
    """The connection closed before the announced body arrived."""


class _Stage(Enum):
    """Where the parser is in one response."""

    HEAD = "head"
    BODY_BY_LENGTH = "body by length"
    CHUNKED = "chunked"
    UNTIL_CLOSE = "until close"
    DONE = "done"


class _Chunk(Enum):
    """Where the parser is inside chunked framing."""

    SIZE_LINE = "size line"
    DATA = "data"
    DATA_CRLF = "CRLF after data"
    TRAILERS = "trailers"


class _Connection(asyncio.Protocol):
    """One keep-alive connection; parses one response at a time."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.waiter: asyncio.Future[CandidateResponse] | None = None
        self.received_any = False
        self._buf = bytearray()
        self._cap = 0
        self._head_only = False
        self._reset_state()

    def _reset_state(self) -> None:
        self._stage = _Stage.HEAD
        self._status = 0
        self._encoding = ""
        self._keep_alive = True
        self._remaining = 0  # body bytes still expected (length) / in the current chunk
        self._chunk = _Chunk.SIZE_LINE
        self._body = bytearray()
        self._truncated = False

    # ---- asyncio.Protocol ----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.waiter is None or self.waiter.done():
            # Bytes nobody asked for (a broken server): this connection is unusable.
            self.abort()
            return
        self.received_any = True
        self._buf += data
        try:
            self._parse(eof=False)
        except (BadHTTPResponse, ValueError) as exc:
            self._fail(exc if isinstance(exc, BadHTTPResponse) else BadHTTPResponse(str(exc)))

    def eof_received(self) -> bool:
        self._keep_alive = False
        if self.waiter is not None and not self.waiter.done():
            if not self.received_any:
                # Closed before answering: typically an idle keep-alive connection the
                # server dropped as we reused it. Nothing was processed: retryable.
                self._fail(ConnectionResetError("connection closed without a response"))
                return False
            try:
                self._parse(eof=True)
            except (BadHTTPResponse, ValueError) as exc:
                self._fail(exc if isinstance(exc, BadHTTPResponse) else BadHTTPResponse(str(exc)))
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            if self.received_any:
                self.waiter.set_exception(IncompleteResponse("connection closed mid-response"))
            else:
                self.waiter.set_exception(exc or ConnectionResetError("connection closed without a response"))

    # ---- request / response --------------------------------------------------------

    def start(self, request: bytes, cap: int, head_only: bool) -> asyncio.Future[CandidateResponse]:
        assert self.transport is not None
        self._reset_state()
        self._buf.clear()
        self._cap = cap
        self._head_only = head_only
        self.received_any = False
        self.waiter = self.loop.create_future()
        self.transport.write(request)
        return self.waiter

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    @property
    def reusable(self) -> bool:
        return self._stage is _Stage.DONE and self._keep_alive and not self._truncated and not self.closed

    def _fail(self, exc: Exception) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc)
        self.abort()

    def _finish(self) -> None:
        self._stage = _Stage.DONE
        if self._buf:  # bytes after the response: framing is off, do not reuse
            self._keep_alive = False
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(
                CandidateResponse(self._status, self._encoding, bytes(self._body), self._truncated)
            )

    def _keep(self, data: bytes | bytearray) -> None:
        room = self._cap - len(self._body)
        if len(data) > room:
            self._body += data[:room]
            self._truncated = True
        else:
            self._body += data

    def _parse(self, eof: bool) -> None:
        while True:
            if self._stage is _Stage.HEAD:
                end = self._buf.find(b"\r\n\r\n")
                if end < 0:
                    if len(self._buf) > _MAX_HEAD:
                        raise BadHTTPResponse("response head too large")
                    if eof:
                        raise BadHTTPResponse("connection closed in the response head")
                    return
                head = bytes(self._buf[:end])
                del self._buf[: end + 4]
                if not self._head(head):
                    continue  # a 1xx interim response: the real one follows
            if self._stage is _Stage.BODY_BY_LENGTH:
                take = min(self._remaining, len(self._buf))
                if take:
                    self._keep(self._buf[:take])
                    del self._buf[:take]
                    self._remaining -= take
                if self._remaining == 0:
                    self._finish()
                elif self._truncated:
                    self._keep_alive = False
                    self._finish()  # capped: stop reading, the connection is dropped
                elif eof:
                    raise BadHTTPResponse("connection closed before the announced body arrived")
                return
            if self._stage is _Stage.CHUNKED:
                if not self._chunked(eof):
                    return
                continue
            if self._stage is _Stage.UNTIL_CLOSE:
                if self._buf:
                    self._keep(self._buf)
                    self._buf.clear()
                if eof or self._truncated:
                    self._keep_alive = False
                    self._finish()
                return
            return

    def _head(self, head: bytes) -> bool:
        """Parse a response head; False for an interim 1xx response."""
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ", 2)
        if (
            len(parts) < 2
            or not parts[0].startswith(b"HTTP/1.")
            or len(parts[1]) != 3
            or not parts[1].isdigit()
        ):
            raise BadHTTPResponse("invalid status line")
        status = int(parts[1])
        if 100 <= status < 200 and status != 101:
            return False
        self._status = status
        if parts[0] == b"HTTP/1.0":
            self._keep_alive = False
        length: int | None = None
        chunked = False
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep:
                raise BadHTTPResponse("invalid header line")
            key = name.strip().lower()
            val = value.strip()
            if key == b"content-length":
                if not val.isdigit():
                    raise BadHTTPResponse("invalid content-length")
                if length is not None and length != int(val):
                    raise BadHTTPResponse("conflicting content-length")
                length = int(val)
            elif key == b"transfer-encoding":
                chunked = val.lower().endswith(b"chunked")
            elif key == b"connection":
                tokens = {t.strip() for t in val.lower().split(b",")}
                if b"close" in tokens:
                    self._keep_alive = False
                elif b"keep-alive" in tokens and parts[0] == b"HTTP/1.0":
                    self._keep_alive = True
            elif key == b"content-encoding":
                self._encoding = val.decode("latin-1")
        if self._head_only or status in (204, 304) or status == 101:
            self._finish()
        elif chunked:
            self._stage, self._chunk = _Stage.CHUNKED, _Chunk.SIZE_LINE
        elif length is not None:
            self._stage, self._remaining = _Stage.BODY_BY_LENGTH, length
        else:
            self._stage = _Stage.UNTIL_CLOSE
        return True

    def _chunked(self, eof: bool) -> bool:
        """Advance through chunked framing; False when more bytes are needed."""
        while True:
            if self._chunk is _Chunk.SIZE_LINE:
                end = self._buf.find(b"\r\n")
                if end < 0:
                    if len(self._buf) > 4096 or eof:
                        raise BadHTTPResponse("invalid chunk size line")
                    return False
                size_text = bytes(self._buf[:end]).split(b";", 1)[0].strip()
                del self._buf[: end + 2]
                try:
                    size = int(size_text, 16)
                except ValueError:
                    raise BadHTTPResponse("invalid chunk size") from None
                if size < 0:
                    raise BadHTTPResponse("invalid chunk size")
                if size == 0:
                    self._chunk = _Chunk.TRAILERS
                else:
                    self._remaining, self._chunk = size, _Chunk.DATA
            elif self._chunk is _Chunk.DATA:
                take = min(self._remaining, len(self._buf))
                if take:
                    self._keep(self._buf[:take])
                    del self._buf[:take]
                    self._remaining -= take
                if self._truncated:
                    self._keep_alive = False
                    self._finish()
                    return False
                if self._remaining:
                    if eof:
                        raise BadHTTPResponse("connection closed inside a chunk")
                    return False
                self._chunk = _Chunk.DATA_CRLF
            elif self._chunk is _Chunk.DATA_CRLF:
                if len(self._buf) < 2:
                    if eof:
                        raise BadHTTPResponse("connection closed inside a chunk")
                    return False
                if self._buf[:2] != b"\r\n":
                    raise BadHTTPResponse("missing CRLF after a chunk")
                del self._buf[:2]
                self._chunk = _Chunk.SIZE_LINE
            else:  # trailers, up to an empty line
                end = self._buf.find(b"\r\n")
                if end < 0:
                    if eof:
                        raise BadHTTPResponse("connection closed in the trailers")
                    return False
                line = self._buf[:end]
                del self._buf[: end + 2]
                if not line:
                    self._finish()
                    return False


class MiniHTTPClient:
    """Pooled keep-alive HTTP/1.1 client for one event loop."""

    def __init__(self, max_response_bytes: int) -> None:
        self._max = max_response_bytes
        self._idle: dict[tuple[str, str, int], deque[_Connection]] = {}
        self._all: set[_Connection] = set()
        self._ssl: ssl.SSLContext | None = None

    async def _connect(self, scheme: str, host: str, port: int) -> _Connection:
        loop = asyncio.get_running_loop()
        ctx: ssl.SSLContext | None = None
        if scheme == "https":
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            ctx = self._ssl
        _, conn = await loop.create_connection(
            lambda: _Connection(loop), host, port, ssl=ctx, server_hostname=host if ctx else None
        )
        self._all.add(conn)
        return conn

    async def send(
        self,
        method: str,
        url: ShadowURL,
        headers: list[tuple[str, str]],
        body: bytes,
        timeout: float,
    ) -> CandidateResponse:
        scheme, host, port = url.scheme, url.host, url.port
        lines = [f"{method} {url.target} HTTP/1.1\r\nHost: {url.host_header}\r\n"]
        for name, value in headers:
            if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
                continue  # never let a header value smuggle a line
            lines.append(f"{name}: {value}\r\n")
        if body or method not in ("GET", "HEAD", "DELETE", "OPTIONS"):
            lines.append(f"Content-Length: {len(body)}\r\n")
        lines.append("\r\n")
        request = "".join(lines).encode("latin-1", "replace") + body
        key = (scheme, host, port)
        head_only = method == "HEAD"
        async with asyncio.timeout(timeout):
            idle = self._idle.get(key)
            while idle:
                conn = idle.pop()
                if conn.closed or conn.transport is None or conn.transport.is_closing():
                    self._all.discard(conn)
                    continue
                try:
                    return await self._exchange(conn, key, request, head_only)
                except (ConnectionError, IncompleteResponse):
                    if conn.received_any:
                        raise
                    # The server closed the idle connection as we reused it: nothing was
                    # processed, so one fresh attempt is safe.
                    break
            conn = await self._connect(scheme, host, port)
            return await self._exchange(conn, key, request, head_only)

    async def _exchange(
        self, conn: _Connection, key: tuple[str, str, int], request: bytes, head_only: bool
    ) -> CandidateResponse:
        try:
            response = await conn.start(request, self._max, head_only)
        except BaseException:
            conn.abort()  # timeout, cancellation, bad HTTP: this connection is never reused
            self._all.discard(conn)
            raise
        if conn.reusable:
            idle = self._idle.setdefault(key, deque())
            if len(idle) < _MAX_IDLE_PER_ORIGIN:
                idle.append(conn)
                return response
        conn.abort()
        self._all.discard(conn)
        return response

    async def close(self) -> None:
        for conn in list(self._all):
            conn.abort()
        self._all.clear()
        self._idle.clear()
        # abort() closes the socket in a callback: let it run before the loop stops.
        await asyncio.sleep(0)
        await asyncio.sleep(0)
