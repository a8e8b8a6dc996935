"""WSGI adapter: tees ``wsgi.input`` and the response iterable, nothing else."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import Any

from ._adapter import Adapter
from ._engine import Shadow
from ._outcomes import Reason
from ._tap import RequestTap
from ._wire import quote_path

__all__ = ["ShadowWSGIMiddleware"]

ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]
StartResponse = Callable[..., Callable[[bytes], object]]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class ShadowWSGIMiddleware(Adapter):
    """Copies requests on configured routes to shadow targets; the app's responses are untouched.

    Parameters:
        app: the WSGI application to wrap (for Flask: ``app.wsgi_app``).
        shadow: a :class:`Shadow` engine to use (it stays its owner's to close).
        config: a :class:`ShadowConfig`; the middleware then builds and owns its engine.
            Give exactly one of ``shadow`` and ``config``.
        tracer_provider: OpenTelemetry ``TracerProvider`` for an engine built from ``config``.
        meter_provider: OpenTelemetry ``MeterProvider`` for an engine built from ``config``.
        strict: a mistake in a configuration read from the environment raises here (as with
            ``SHADOW_STRICT=1``); by default it is logged once at ERROR and every request
            passes through unshadowed.

    ``wsgi.input`` is wrapped, not read ahead: the copy is taken as the app reads,
    and the shadow calls start when the app has read the last byte. Chunked input
    (``wsgi.input_terminated``) is supported; a request with neither ``CONTENT_LENGTH`` nor
    ``Transfer-Encoding`` has no body (RFC 9112 §6.3), so a GET handler that never reads is
    shadowed under every server (gunicorn sets ``wsgi.input_terminated`` on every request).
    The response iterable's ``close()`` is always called.
    """

    app: WSGIApp

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if self.route_check is not None:
            check, self.route_check = self.route_check, None
            check()
        shadow = self.shadow
        if shadow is None:  # the kill switch: pass through
            return self.app(environ, start_response)
        method = environ.get("REQUEST_METHOD", "GET")
        path_info = environ.get("PATH_INFO", "")
        if not path_info.isascii():
            # PEP 3333: PATH_INFO is the raw bytes decoded as latin-1; routes are text.
            path_info = path_info.encode("latin-1", "replace").decode("utf-8", "replace")
        route = shadow.match(method, path_info)
        if route is None:
            return self.app(environ, start_response)
        tap, length = _begin(shadow, route, environ)
        if tap is None:
            return self.app(environ, start_response)
        return _run(self.app, tap, length, environ, start_response)


def _begin(shadow: Shadow, route: str, environ: dict[str, Any]) -> tuple[RequestTap | None, int | None]:
    try:
        headers = []
        for key, value in environ.items():
            if key.startswith("HTTP_"):
                headers.append((key[5:].replace("_", "-").lower(), value))
        content_type = environ.get("CONTENT_TYPE")
        if content_type:
            headers.append(("content-type", content_type))
        raw_length = environ.get("CONTENT_LENGTH")
        length = int(raw_length) if raw_length and raw_length.isascii() and raw_length.isdigit() else None
        if length is not None:
            headers.append(("content-length", raw_length))
        raw = (environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")).encode("latin-1", "replace")
        path = quote_path(raw.decode("utf-8", "replace"))
        tap = shadow.begin(
            route,
            environ.get("REQUEST_METHOD", "GET"),
            path,
            environ.get("QUERY_STRING", ""),
            headers,
            length,
        )
        return tap, length
    except Exception as exc:  # malformed environ: pass the request through untouched
        shadow.internal_error(exc)
        return None, None


def _run(
    app: WSGIApp,
    tap: RequestTap,
    length: int | None,
    environ: dict[str, Any],
    start_response: StartResponse,
) -> Iterable[bytes]:
    stream = environ.get("wsgi.input")
    if stream is None or length == 0 or (length is None and not _unsized_body(environ)):
        # No body to read (PEP 3333: without CONTENT_LENGTH the app must not read).
        tap.body_complete()
    else:
        environ["wsgi.input"] = _TeeInput(stream, tap, length)

    def start_response_tee(
        status: str, headers: list[tuple[str, str]], exc_info: ExcInfo | None = None
    ) -> Any:
        encoding = ""
        for name, value in headers:
            if name.lower() == "content-encoding":
                encoding = value
        tap.response_start(_status_code(status), encoding)
        write = start_response(status, headers, exc_info) if exc_info else start_response(status, headers)

        def write_tee(data: bytes) -> object:
            tap.response_body(data)
            return write(data)

        return write_tee

    try:
        iterable = app(environ, start_response_tee)
    except BaseException:
        tap.finish(Reason.PRIMARY_EXCEPTION)
        raise
    # A server may look at len() of a one-item result to add Content-Length (wsgiref,
    # waitress): keep len() exactly when the app's result has one, so framing never changes.
    if hasattr(iterable, "__len__"):
        return _SizedTeeIterable(iterable, tap)
    return _TeeIterable(iterable, tap)


def _unsized_body(environ: dict[str, Any]) -> bool:
    """Whether a request without ``CONTENT_LENGTH`` has a body to read to its end.

    Only when the server ends the input for the app (``wsgi.input_terminated``) and, over
    HTTP/1.x, the request says it has one: with neither Content-Length nor Transfer-Encoding
    an HTTP/1.1 request has no body (RFC 9112 §6.3), although gunicorn sets
    ``wsgi.input_terminated`` on every request (a GET would otherwise wait for a body that
    never comes and end ``skipped``, ``body_not_read``). HTTP/2 and later frame a body
    without either header, so there ``wsgi.input_terminated`` alone decides.
    """
    if not environ.get("wsgi.input_terminated"):
        return False
    protocol = str(environ.get("SERVER_PROTOCOL", "HTTP/1.1")).upper()
    if protocol.startswith("HTTP/1.") or protocol == "HTTP/1" or protocol == "HTTP/0.9":
        return bool(environ.get("HTTP_TRANSFER_ENCODING"))
    return True


def _status_code(status: str) -> int:
    head = status[:3]
    return int(head) if head.isdigit() else 0


class _TeeInput:
    """``wsgi.input`` as the app sees it: the same bytes, copied (capped) on the way."""

    __slots__ = ("_done", "_length", "_seen", "_stream", "_tap")

    def __init__(self, stream: Any, tap: RequestTap, length: int | None) -> None:
        self._stream = stream
        self._tap = tap
        self._length = length  # None: chunked, read until EOF
        self._seen = 0
        self._done = False

    def _took(self, data: bytes | memoryview, asked: int | None, to_eof: bool = False) -> None:
        # ``to_eof``: the call reads until end of input (read() / read(-1)), so the
        # body is complete after it even though no empty read will follow.
        if self._done:
            return
        tap = self._tap
        if data:
            tap.feed(data)
            self._seen += len(data)
            if (self._length is not None and self._seen >= self._length) or (to_eof and self._length is None):
                self._done = True
                tap.body_complete()
        elif asked is None or asked != 0:
            # EOF. With a known length this is a client that went away mid-body: the
            # exchange stays incomplete and ends as skipped.
            self._done = True
            if self._length is None:
                tap.body_complete()
            else:
                tap.disconnected()

    def _gone(self) -> None:
        # The server's stream raised (gunicorn: the client hung up mid-body).
        if not self._done:
            self._done = True
            self._tap.disconnected()

    def read(self, size: int | None = -1) -> bytes:
        try:
            data: bytes = self._stream.read() if size is None else self._stream.read(size)
        except Exception:
            self._gone()
            raise
        self._took(data, size, size is None or size < 0)
        return data

    def read1(self, size: int = -1) -> bytes:
        data: bytes = self._stream.read1(size) if hasattr(self._stream, "read1") else self._stream.read(size)
        self._took(data, size)
        return data

    def readinto(self, buffer: bytearray | memoryview) -> int:
        # werkzeug's LimitedStream prefers readinto when the stream has it.
        if hasattr(self._stream, "readinto"):
            try:
                count: int = self._stream.readinto(buffer) or 0
            except Exception:
                self._gone()
                raise
            self._took(memoryview(buffer)[:count], len(buffer))
            return count
        data: bytes = self._stream.read(len(buffer))
        buffer[: len(data)] = data
        self._took(data, len(buffer))
        return len(data)

    def readline(self, size: int | None = -1) -> bytes:
        data: bytes = self._stream.readline() if size is None else self._stream.readline(size)
        self._took(data, size)
        return data

    def readlines(self, hint: int = -1) -> list[bytes]:
        lines: list[bytes] = self._stream.readlines(hint)
        for line in lines:
            self._took(line, -1)
        if hint is None or hint <= 0:
            self._took(b"", -1, True)
        return lines

    def __iter__(self) -> Iterator[bytes]:
        while True:
            line = self.readline()
            if not line:
                return
            yield line

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class _TeeIterable:
    """The app's response iterable, copied (capped) as the server sends it."""

    __slots__ = ("_done", "_failed", "_iterable", "_iterator", "_tap")

    def __init__(self, iterable: Iterable[bytes], tap: RequestTap) -> None:
        self._iterable = iterable
        self._tap = tap
        self._iterator: Iterator[bytes] | None = None
        self._failed = False
        self._done = False

    def __iter__(self) -> _TeeIterable:
        try:
            self._iterator = iter(self._iterable)
        except BaseException:
            self._failed = True
            raise
        return self

    def __next__(self) -> bytes:
        if self._iterator is None:
            self._iterator = iter(self._iterable)
        try:
            chunk = next(self._iterator)
        except StopIteration:
            self._done = True
            self._tap.response_complete()
            raise
        except BaseException:
            self._failed = True
            raise
        self._tap.response_body(chunk)
        return chunk

    def close(self) -> None:
        try:
            close = getattr(self._iterable, "close", None)
            if close is not None:
                close()
        finally:
            if self._failed:
                self._tap.finish(Reason.PRIMARY_EXCEPTION)
            elif not self._done:
                self._tap.finish(Reason.CLIENT_DISCONNECT)
            else:
                self._tap.finish()


class _SizedTeeIterable(_TeeIterable):
    """A :class:`_TeeIterable` over a result that has ``len()``, which it passes on."""

    __slots__ = ()

    def __len__(self) -> int:
        return len(self._iterable)  # type: ignore[arg-type]
