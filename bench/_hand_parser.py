"""The hand-written response parser that ``_http.py`` used before issue 12, kept only so
that ``bench/parser.py`` can measure it against llhttp and h11. It accepts framings both
reject (the issue's list): never use it to parse anything but benchmark inputs.

Copied verbatim (the parsing methods) from ``shadow_middleware/_http.py`` as of commit
268b4b8, minus the asyncio plumbing.
"""

from __future__ import annotations

from enum import Enum

_MAX_HEAD = 65536


class BadHTTPResponse(Exception):
    pass


class CandidateResponse:
    __slots__ = ("body", "content_encoding", "status", "truncated")

    def __init__(self, status: int, content_encoding: str, body: bytes, truncated: bool) -> None:
        self.status, self.content_encoding, self.body, self.truncated = (
            status,
            content_encoding,
            body,
            truncated,
        )


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


class HandParser:
    """Parses one response: ``feed(data)``; ``result`` is set once it is complete."""

    def __init__(self, cap: int = 1 << 20, head_only: bool = False) -> None:
        self.result: CandidateResponse | None = None
        self._buf = bytearray()
        self._cap = cap
        self._head_only = head_only
        self._reset_state()

    def feed(self, data: bytes) -> None:
        self._buf += data
        self._parse(eof=False)

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

    def _finish(self) -> None:
        self._stage = _Stage.DONE
        if self._buf:  # bytes after the response: framing is off, do not reuse
            self._keep_alive = False
        self.result = CandidateResponse(self._status, self._encoding, bytes(self._body), self._truncated)

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
