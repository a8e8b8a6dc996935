"""Pure ASGI adapter: tees the request and response bytes, nothing else."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from ._adapter import Adapter
from ._engine import Shadow
from ._outcomes import Reason
from ._routecheck import starlette_routes, warn_unknown_routes
from ._tap import RequestTap
from ._wire import quote_path

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

__all__ = ["ShadowASGIMiddleware"]

logger = logging.getLogger("shadow_middleware")


class ShadowASGIMiddleware(Adapter):
    """Copies requests on configured routes to shadow targets; the app's responses are untouched.

    Parameters:
        app: the ASGI application to wrap.
        shadow: a :class:`Shadow` engine to use (it stays its owner's to close).
        config: a :class:`ShadowConfig`; the middleware then builds and owns its engine
            and closes it on lifespan shutdown. Give exactly one of ``shadow`` and ``config``.
        tracer_provider: OpenTelemetry ``TracerProvider`` for an engine built from ``config``.
        meter_provider: OpenTelemetry ``MeterProvider`` for an engine built from ``config``.
        strict: a mistake in a configuration read from the environment fails the lifespan
            startup (as with ``SHADOW_STRICT=1``); by default it is logged once at ERROR and
            the app serves with shadowing off.

    At lifespan startup, a configured route that matches none of a Starlette / FastAPI app's
    routes (mounts included) gets one WARNING naming the closest route the app has.

    The request body is never read ahead: the copy is taken as the app reads it,
    and the shadow calls start when the app has read the last byte.
    """

    app: ASGIApp

    _defer_config_errors = True

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                await self._lifespan(scope, receive, send)
            else:
                await self.app(scope, receive, send)
            return
        shadow = self.shadow
        if shadow is None:  # the kill switch, or a configuration error: pass through
            self._log_config_error_once()
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        route = shadow.match(method, scope["path"])
        if route is None:
            await self.app(scope, receive, send)
            return
        tap = _begin(shadow, route, scope)
        if tap is None:
            await self.app(scope, receive, send)
            return
        await _Responder(self.app, tap, receive, send).run(scope)

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.config_error is not None:
            # Strict (SHADOW_STRICT=1, strict=True) or a mistake in code: fail the deploy
            # loudly, before any traffic: the server prints the message and exits non-zero.
            # (Raising instead would make uvicorn decide the app does not support lifespan,
            # then answer every request with a 500.)
            message = await receive()
            if message.get("type") == "lifespan.startup":
                logger.error("%s", self.config_error)
                self._error_logged = True
                await send({"type": "lifespan.startup.failed", "message": self.config_error})
            return
        if self.shadow is None:
            await self.app(scope, receive, send)
            return
        if not self.shadow.config_errors:
            # The app's routes are all there by its startup: warn about configured ones it lacks.
            warn_unknown_routes(
                self.shadow.config.compiled_routes, starlette_routes(self.app), "the app's routes"
            )
        await self.app(scope, receive, _LifespanShutdown(self.shadow, self._owns_engine, send))


def _begin(shadow: Shadow, route: str, scope: Scope) -> RequestTap | None:
    try:
        raw_headers = scope["headers"]
        if not isinstance(raw_headers, list | tuple):
            # "An iterable of pairs": a generator is legal, and reading it here would hand the
            # app an empty one. Keep the same pairs, as a list, for both of us.
            raw_headers = scope["headers"] = list(raw_headers)
        # Servers send lower-case names, but ASGI does not promise it: never trust the case.
        headers = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in raw_headers]
        raw_path = scope.get("raw_path")
        path = raw_path.decode("latin-1") if raw_path else quote_path(scope["path"])
        content_length: int | None = None
        chunked = False
        for name, value in headers:
            if name == "content-length":
                content_length = int(value) if value.isascii() and value.isdigit() else None
            elif name == "transfer-encoding":
                chunked = True
        tap = shadow.begin(
            route,
            scope["method"],
            path,
            scope.get("query_string", b"").decode("latin-1"),
            headers,
            content_length,
        )
        if tap is not None and (
            content_length == 0
            or (content_length is None and not chunked and scope["method"] in _BODYLESS_METHODS)
        ):
            # A request without a body is complete on arrival: an app that never calls
            # receive() (a GET handler) must not leave it unshadowed.
            tap.body_complete()
        return tap
    except Exception as exc:  # malformed scope: pass the request through untouched
        shadow.internal_error(exc)
        return None


class _Responder:
    """Per-request state: the tap and the two tee channels."""

    __slots__ = ("app", "failure", "receive", "response_done", "send", "tap")

    def __init__(self, app: ASGIApp, tap: RequestTap, receive: Receive, send: Send) -> None:
        self.app = app
        self.tap = tap
        self.receive = receive
        self.send = send
        self.failure: Reason | None = None
        self.response_done = False

    async def run(self, scope: Scope) -> None:
        try:
            await self.app(scope, self.receive_tee, self.send_tee)
        except BaseException:
            if self.failure is None and not self.response_done:
                self.failure = Reason.PRIMARY_EXCEPTION
            raise
        finally:
            self.tap.finish(self.failure)

    async def receive_tee(self) -> Message:
        message = await self.receive()
        # Every message is returned as received; once the body is complete we only
        # watch for a disconnect, so the app's own disconnect watchers work as before.
        kind = message.get("type")
        if kind == "http.request":
            tap = self.tap
            if not tap.body_done:
                tap.feed(message.get("body", b""))
                if not message.get("more_body", False):
                    tap.body_complete()
        elif kind == "http.disconnect" and not self.response_done:
            self.failure = Reason.CLIENT_DISCONNECT
        return message

    async def send_tee(self, message: Message) -> None:
        kind = message.get("type")
        if kind == "http.response.body":
            self.tap.response_body(message.get("body", b""))
            await self.send(message)
            if not message.get("more_body", False):
                self.response_done = True
                self.tap.response_complete()
            return
        if kind == "http.response.start":
            encoding = ""
            headers = message.get("headers", ())
            if not isinstance(headers, list | tuple):
                headers = message["headers"] = list(headers)  # a generator: see _begin
            for name, value in headers:
                if name.lower() == b"content-encoding":
                    encoding = value.decode("latin-1")
            self.tap.response_start(message.get("status", 0), encoding)
        await self.send(message)


class _LifespanShutdown:
    """Wraps lifespan ``send``: before shutdown completes, finish the shadow work and flush
    telemetry (uvicorn re-raises SIGTERM afterwards, so no atexit hook would run). An owned
    engine is closed; a shared one is only flushed (its owner closes it)."""

    __slots__ = ("owned", "send", "shadow")

    def __init__(self, shadow: Shadow, owned: bool, send: Send) -> None:
        self.shadow = shadow
        self.owned = owned
        self.send = send

    async def __call__(self, message: Message) -> None:
        if message.get("type") in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
            import anyio.to_thread  # any anyio backend: asyncio or trio

            shadow = self.shadow
            try:
                work = shadow.close if self.owned else shadow.flush
                await anyio.to_thread.run_sync(work, shadow.config.drain_timeout)
            except Exception as exc:
                shadow.internal_error(exc)
        await self.send(message)


# Methods whose requests normally carry no body: without Content-Length or
# Transfer-Encoding they have none (RFC 9112 §6.3).
_BODYLESS_METHODS = frozenset({"GET", "HEAD", "DELETE", "OPTIONS"})
