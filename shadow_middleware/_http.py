"""A minimal HTTP/1.1 client on asyncio protocols: the default shadow client.

Why not aiohttp or httpx: measured inside the dispatcher (bench/RESULTS.md), aiohttp
costs 120-215 us of CPU per request and httpx ~3,700 us, against a budget of 150 us for
the whole shadow exchange. A shadow request needs little: one request per connection at
a time, keep-alive, a capped read, no redirects, no cookies, our own timeout. This does
exactly that and nothing more.

Responses are parsed by llhttp (``httptools``, the parser behind ``uvicorn[standard]``),
strict by default, plus the few checks where it is laxer than h11 (``bench/parser.py``
measured the choice; ``tests/test_http_parser_differential.py`` pins the differences).
The wire rules (README, "Guarantees"):

* any framing error is a failed exchange (:class:`BadHTTPResponse`) and closes the
  connection; so does a ``101``, more than :data:`MAX_INTERIM` ``1xx`` responses, a
  response head over 64 KiB, or chunk framing and trailers over 64 KiB beyond the body;
* a connection goes back to the pool only after a complete, well-framed response that
  did not ask to close (HTTP/1.0 without keep-alive asks to), with no byte after it;
* a request is never sent twice: no retry once it was written, whatever happens. Instead
  an idle connection is checked before reuse (no EOF, nothing readable, not closing) and
  kept idle at most :data:`IDLE_TTL` seconds, below common servers' keep-alive (uvicorn
  5 s, gunicorn 2 s);
* the idle pool is bounded per origin and in total; TLS settings are per target (one
  ``SSLContext`` per distinct setting, built once) and part of the pool key.
"""

from __future__ import annotations

import asyncio
import select
import ssl
from collections import deque
from dataclasses import dataclass

import httptools

from ._wire import ShadowURL, TLSFiles, valid_method, valid_origin_form

__all__ = [
    "IDLE_TTL",
    "MAX_HEAD",
    "MAX_INTERIM",
    "BadHTTPResponse",
    "CandidateError",
    "CandidateResponse",
    "IncompleteResponse",
    "InvalidRequest",
    "MiniHTTPClient",
    "candidate_fault",
]


@dataclass(slots=True)
class CandidateResponse:
    status: int
    content_encoding: str
    body: bytes  # raw (still encoded) bytes, at most the cap
    truncated: bool
    server_timing: str = ""  # the Server-Timing header(s), at most MAX_SERVER_TIMING characters


#: Characters of Server-Timing kept (it is parsed for one duration, never stored whole).
MAX_SERVER_TIMING = 1024

#: Bytes of response head (status line and headers, interim 1xx heads included).
MAX_HEAD = 65536
#: Bytes of chunk-size lines, extensions and trailers allowed beyond the body's own size.
MAX_FRAMING = 65536
#: Interim (1xx) responses accepted before the final one.
MAX_INTERIM = 8
#: Seconds a connection may stay idle in the pool.
IDLE_TTL = 1.5
MAX_IDLE_PER_ORIGIN = 64
MAX_IDLE_TOTAL = 256


class CandidateError(Exception):
    """The candidate's fault: what it sent is not a usable HTTP/1.x answer."""


class BadHTTPResponse(CandidateError):
    """The candidate's answer is not valid HTTP/1.x (or breaks one of our bounds)."""


class IncompleteResponse(CandidateError):
    """The connection closed before the announced response arrived."""


class InvalidRequest(Exception):
    """Ours, not the candidate's: a request we refuse to put on the wire."""


def candidate_fault(exc: BaseException) -> bool:
    """Whether a failed exchange says something about the candidate (the circuit breaker
    counts those only): a timeout, a network or TLS error, a bad answer. Anything else
    (an :class:`InvalidRequest`, one of our bugs) is ours."""
    return isinstance(exc, CandidateError | OSError)  # TimeoutError and ssl.SSLError are OSError


class _Stop(Exception):
    """Raised in a parser callback to stop parsing: the exchange is decided."""


class _Connection(asyncio.Protocol):
    """One keep-alive connection; parses one response at a time (llhttp callbacks)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.fd = -1
        self.closed = False  # lost, aborted, or the peer closed its side
        self.idle_since = 0.0
        self.waiter: asyncio.Future[CandidateResponse] | None = None
        self._parser: httptools.HttpResponseParser | None = None
        self._reset(0, False)

    def _reset(self, cap: int, head_only: bool) -> None:
        self._cap = cap
        self._head_only = head_only
        self._fed = 0  # bytes received for this exchange
        self._body_seen = 0  # of which body bytes
        self._seen_mark = -1  # body bytes at the last framing check that saw the body grow
        self._framing_mark = 0  # non-body bytes then
        self._body = bytearray()
        self._status = 0
        self._encoding = ""
        self._server_timing = ""
        self._te = 0
        self._chunked = False
        self._has_length = False
        self._interim = 0
        self._in_interim = False
        self._headers_done = False
        self._until_close = False
        self._keep_alive = False
        self._truncated = False
        self._done = False
        self._extra = False  # bytes after the complete response
        self._error: BadHTTPResponse | None = None

    # ---- asyncio.Protocol ----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        self.fd = sock.fileno() if sock is not None else -1

    def data_received(self, data: bytes) -> None:
        waiter = self.waiter
        if waiter is None or waiter.done() or self._parser is None:
            self.abort()  # bytes nobody asked for: this connection is unusable
            return
        if self._fed == 0 and data[:1] != b"H":
            # llhttp skips empty lines before a status line; h11 does not, nor do we.
            self._fail(BadHTTPResponse("the response does not start with a status line"))
            return
        if not self._headers_done and self._fed + len(data) > MAX_HEAD:
            # Feed no more than the head may take: the head bound is exact.
            room = MAX_HEAD - self._fed
            self._feed(data[:room])
            if self._error is None and not self._done and not self._headers_done:
                self._error = BadHTTPResponse(f"response head larger than {MAX_HEAD} bytes")
            data = data[room:]
            if self._done and data:
                self._extra = True
            elif self._error is None and not self._done and data:
                self._feed(data)
        else:
            self._feed(data)
        if self._error is not None:
            self._fail(self._error)
        elif self._done:
            self._finish()
        elif self._headers_done:
            # Chunk-size lines, extensions and trailers: at most MAX_FRAMING bytes in a row
            # without a body byte (an endless trailer ends here, not in the timeout).
            framing = self._fed - self._body_seen
            if self._body_seen != self._seen_mark:
                self._seen_mark, self._framing_mark = self._body_seen, framing
            elif framing - self._framing_mark > MAX_FRAMING:
                self._fail(BadHTTPResponse(f"more than {MAX_FRAMING} bytes of chunk framing or trailers"))

    def _feed(self, data: bytes) -> None:
        assert self._parser is not None
        self._fed += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if not self._done:
                self._error = self._error or BadHTTPResponse("unexpected protocol upgrade")
        except httptools.HttpParserError as exc:
            if self._done:
                self._extra = True  # garbage after a complete response: answer kept, connection not
            elif self._error is None and not isinstance(exc.__context__, _Stop):
                self._error = BadHTTPResponse(f"invalid HTTP response: {exc}")

    def eof_received(self) -> bool:
        self.closed = True
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            if self._headers_done and self._until_close:
                self._done = True  # a body delimited by the close: complete
                self._finish()
            elif self._fed == 0:
                self._fail(ConnectionResetError("connection closed without a response"))
            else:
                self._fail(BadHTTPResponse("connection closed before the response was complete"))
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._parser = None
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            if self._fed:
                waiter.set_exception(IncompleteResponse("connection closed mid-response"))
            else:
                waiter.set_exception(exc or ConnectionResetError("connection closed without a response"))

    # ---- llhttp callbacks ----------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._done:
            self._extra = True  # a second response to one request
            raise _Stop
        self._te = 0
        self._chunked = self._has_length = False
        self._encoding = ""

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._headers_done:
            return  # a trailer: bounded by MAX_FRAMING, otherwise ignored
        key = name.lower()
        if key == b"transfer-encoding":
            self._te += 1
            if self._te > 1 or value.strip(b" \t").lower() != b"chunked":
                self._error = BadHTTPResponse("Transfer-Encoding other than a single 'chunked'")
                raise _Stop
            self._chunked = True
        elif key == b"content-length":
            self._has_length = True
        elif key == b"content-encoding":
            self._encoding = value.decode("latin-1")
        elif key == b"server-timing" and len(self._server_timing) < MAX_SERVER_TIMING:
            joined = (
                f"{self._server_timing}, {value.decode('latin-1')}"
                if self._server_timing
                else value.decode("latin-1")
            )
            self._server_timing = joined[:MAX_SERVER_TIMING]

    def on_headers_complete(self) -> None:
        parser = self._parser
        assert parser is not None
        status = parser.get_status_code()
        if parser.get_http_version() not in ("1.1", "1.0"):
            self._error = BadHTTPResponse(f"unsupported HTTP version {parser.get_http_version()}")
            raise _Stop
        if status < 200:
            if status == 101:
                self._error = BadHTTPResponse("101 Switching Protocols: no upgrade was asked for")
            elif status < 100:
                self._error = BadHTTPResponse(f"invalid status {status}")
            else:
                self._interim += 1
                if self._interim <= MAX_INTERIM:
                    self._in_interim = True
                    return
                self._error = BadHTTPResponse(f"more than {MAX_INTERIM} interim (1xx) responses")
            raise _Stop
        self._status = status
        self._headers_done = True
        self._keep_alive = parser.should_keep_alive()
        self._until_close = not self._chunked and not self._has_length and status not in (204, 304)
        if self._head_only:
            # llhttp cannot be told the request was HEAD: stop here, never reuse the connection.
            self._done, self._keep_alive = True, False
            raise _Stop

    def on_body(self, data: bytes) -> None:
        self._body_seen += len(data)
        room = self._cap - len(self._body)
        if len(data) > room:
            self._body += data[:room]
            self._truncated = self._done = True
            self._keep_alive = False  # unread bytes: never reuse the connection
            raise _Stop
        self._body += data

    def on_message_complete(self) -> None:
        if self._in_interim:
            self._in_interim = False  # an interim response: the final one follows
        else:
            self._done = True

    # ---- request / response --------------------------------------------------------

    def start(self, request: bytes, cap: int, head_only: bool) -> asyncio.Future[CandidateResponse]:
        assert self.transport is not None
        self._reset(cap, head_only)
        self._parser = httptools.HttpResponseParser(self)
        self.waiter = self.loop.create_future()
        self.transport.write(request)
        return self.waiter

    def abort(self) -> None:
        self.closed = True
        self._parser = None
        if self.transport is not None:
            self.transport.abort()

    def idle_usable(self, now: float) -> bool:
        """May this idle connection carry a new request? Not when the peer closed it or
        sent anything (``eof_received`` / ``connection_lost`` fired, or bytes or an EOF
        wait in the socket that the loop has not read yet), nor after :data:`IDLE_TTL`."""
        if self.closed or self.transport is None or self.transport.is_closing():
            return False
        if now - self.idle_since >= IDLE_TTL:
            return False
        try:
            readable, _, _ = select.select([self.fd], [], [], 0)
        except (OSError, ValueError):
            return False
        return not readable

    @property
    def reusable(self) -> bool:
        return self._done and self._keep_alive and not self._truncated and not self._extra and not self.closed

    def _fail(self, exc: Exception) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc)
        self.abort()

    def _finish(self) -> None:
        self._parser = None  # also breaks the parser <-> callbacks reference cycle
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(
                CandidateResponse(
                    self._status, self._encoding, bytes(self._body), self._truncated, self._server_timing
                )
            )


_Key = tuple[str, str, int, TLSFiles | None]


def build_request(method: str, url: ShadowURL, headers: list[tuple[str, str]], body: bytes) -> bytes:
    """The bytes of one request; :class:`InvalidRequest` when the request line would not be
    valid (a method that is not a token, a target that is not origin-form)."""
    if not valid_method(method):
        raise InvalidRequest(f"invalid method {method[:40]!r}")
    if not valid_origin_form(url.target):
        raise InvalidRequest(f"invalid request target {url.target[:80]!r}")
    lines = [f"{method} {url.target} HTTP/1.1\r\nHost: {url.host_header}\r\n"]
    for name, value in headers:
        if "\r" in value or "\n" in value or "\0" in value or "\r" in name or "\n" in name or ":" in name:
            continue  # never let a header smuggle a line
        lines.append(f"{name}: {value}\r\n")
    if body or method not in ("GET", "HEAD", "DELETE", "OPTIONS"):
        lines.append(f"Content-Length: {len(body)}\r\n")
    lines.append("\r\n")
    try:
        return "".join(lines).encode("latin-1") + body
    except UnicodeEncodeError:
        raise InvalidRequest("a header is not Latin-1") from None


class MiniHTTPClient:
    """Pooled keep-alive HTTP/1.1 client for one event loop."""

    def __init__(self, max_response_bytes: int) -> None:
        self._max = max_response_bytes
        self._idle: dict[_Key, deque[_Connection]] = {}
        self._idle_count = 0
        self._all: set[_Connection] = set()
        self._contexts: dict[TLSFiles | None, ssl.SSLContext] = {}
        self._sweeper: asyncio.TimerHandle | None = None

    def _context(self, tls: TLSFiles | None) -> ssl.SSLContext:
        ctx = self._contexts.get(tls)
        if ctx is None:
            ctx = self._contexts[tls] = tls.context() if tls is not None else ssl.create_default_context()
        return ctx

    async def _connect(self, url: ShadowURL) -> _Connection:
        loop = asyncio.get_running_loop()
        ctx = self._context(url.tls) if url.scheme == "https" else None
        _, conn = await loop.create_connection(
            lambda: _Connection(loop), url.host, url.port, ssl=ctx, server_hostname=url.host if ctx else None
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
        request = build_request(method, url, headers, body)
        key: _Key = (url.scheme, url.host, url.port, url.tls)
        async with asyncio.timeout(timeout):
            conn = self._checkout(key)
            if conn is None:
                conn = await self._connect(url)
            # Sent once, never again: whatever happens from here is this exchange's outcome.
            try:
                response = await conn.start(request, self._max, method == "HEAD")
            except BaseException:
                self._drop(conn)  # timeout, cancellation, bad HTTP: never reused
                raise
        self._checkin(conn, key)
        return response

    def _checkout(self, key: _Key) -> _Connection | None:
        idle = self._idle.get(key)
        if not idle:
            return None
        now = asyncio.get_running_loop().time()
        found: _Connection | None = None
        while idle:
            conn = idle.pop()  # the most recently used first
            self._idle_count -= 1
            if conn.idle_usable(now):
                found = conn
                break
            self._drop(conn, graceful=True)
        if not idle:
            del self._idle[key]
        return found

    def _checkin(self, conn: _Connection, key: _Key) -> None:
        if conn.reusable and self._idle_count < MAX_IDLE_TOTAL:
            idle = self._idle.setdefault(key, deque())
            if len(idle) < MAX_IDLE_PER_ORIGIN:
                loop = asyncio.get_running_loop()
                conn.idle_since = loop.time()
                idle.append(conn)
                self._idle_count += 1
                if self._sweeper is None:
                    self._sweeper = loop.call_later(IDLE_TTL, self._sweep)
                return
        self._drop(conn)

    def _sweep(self) -> None:
        """Close connections idle for :data:`IDLE_TTL` (oldest first in each deque)."""
        self._sweeper = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        for key in list(self._idle):
            idle = self._idle[key]
            while idle and (idle[0].closed or now - idle[0].idle_since >= IDLE_TTL):
                self._drop(idle.popleft(), graceful=True)
                self._idle_count -= 1
            if not idle:
                del self._idle[key]
        if self._idle_count:
            self._sweeper = loop.call_later(IDLE_TTL / 2, self._sweep)

    def _drop(self, conn: _Connection, graceful: bool = False) -> None:
        self._all.discard(conn)
        if graceful and not conn.closed and conn.transport is not None:
            conn.closed = True
            conn.transport.close()
        else:
            conn.abort()

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for conn in list(self._all):
            conn.abort()
        self._all.clear()
        self._idle.clear()
        self._idle_count = 0
        # abort() closes the socket in a callback: let it run before the loop stops.
        await asyncio.sleep(0)
        await asyncio.sleep(0)
