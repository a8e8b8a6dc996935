"""Framework idioms: a Flask extension and an opt-in stats endpoint for ASGI apps.

Neither imports its framework: the Flask extension only wraps ``app.wsgi_app`` and reads
``app.config``; the stats endpoint is a plain ASGI app any Starlette/FastAPI app can mount.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any

from ._config import ShadowConfig
from ._engine import Shadow
from ._wsgi import ShadowWSGIMiddleware

__all__ = ["ShadowFlask", "ShadowStatsApp"]

EXTENSION_KEY = "shadow_middleware"


class ShadowFlask:
    """Flask extension: ``ShadowFlask(app)`` or ``ext = ShadowFlask(); ext.init_app(app)``.

    Parameters:
        app: a Flask app to set up now (optional: use :meth:`init_app` later, per app).
        config: a :class:`ShadowConfig`; when omitted, ``app.config`` is read:
            ``SHADOW_CONFIG`` (a ``ShadowConfig`` or the path of a TOML file) and any
            ``SHADOW_*`` keys, with the same names and meaning as the environment variables.
        tracer_provider: OpenTelemetry ``TracerProvider`` (else the global one).
        meter_provider: OpenTelemetry ``MeterProvider`` (else the global one).

    The engine is stored in ``app.extensions["shadow_middleware"]``.
    """

    def __init__(
        self,
        app: Any = None,
        *,
        config: ShadowConfig | None = None,
        tracer_provider: Any = None,
        meter_provider: Any = None,
    ) -> None:
        self._config = config
        self._tracer_provider = tracer_provider
        self._meter_provider = meter_provider
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Any) -> Shadow:
        config = self._config if self._config is not None else config_from_flask(app.config)
        shadow = Shadow(config, tracer_provider=self._tracer_provider, meter_provider=self._meter_provider)
        app.wsgi_app = ShadowWSGIMiddleware(app.wsgi_app, shadow=shadow)
        app.extensions[EXTENSION_KEY] = shadow
        return shadow

    @staticmethod
    def shadow(app: Any) -> Shadow:
        """The engine ``init_app`` installed on ``app``."""
        engine: Shadow = app.extensions[EXTENSION_KEY]
        return engine


def config_from_flask(values: Mapping[str, Any]) -> ShadowConfig:
    given = values.get("SHADOW_CONFIG")
    if isinstance(given, ShadowConfig):
        return given
    env: dict[str, str] = {}
    for key, value in values.items():
        if key.startswith("SHADOW_") and key != "SHADOW_CONFIG":
            env[key] = _as_env(value)
    if given is not None:
        env["SHADOW_CONFIG"] = str(given)
        if not env.keys() - {"SHADOW_CONFIG"}:
            return ShadowConfig.from_toml(str(given))
    return ShadowConfig.from_env(env)


def _as_env(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, list | tuple | set | frozenset):
        return ",".join(str(v) for v in value)
    return str(value)


Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class ShadowStatsApp:
    """An opt-in ASGI endpoint with the engine's counters, for internal dashboards and probes.

    Mount it where only operators reach it, e.g. with FastAPI / Starlette::

        app.mount("/internal/shadow", ShadowStatsApp(shadow))

    ``GET`` answers ``{"enabled": ..., "outcomes": {...}, "targets": {name: {...}}}``.
    It exposes counts only: no request data, no configuration secrets.
    """

    def __init__(self, shadow: Shadow) -> None:
        if not isinstance(shadow, Shadow):
            raise ValueError(f"shadow: must be a Shadow, got {type(shadow).__name__}")
        self.shadow = shadow

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if scope["method"] not in ("GET", "HEAD"):
            await _respond(send, 405, {"detail": "method not allowed"}, scope["method"] == "HEAD")
            return
        body = {
            "enabled": self.shadow.enabled,
            "outcomes": self.shadow.stats(),
            "targets": self.shadow.stats_by_target(),
            "internal_errors": self.shadow.internal_errors,
        }
        await _respond(send, 200, body, scope["method"] == "HEAD")


async def _respond(send: Send, status: int, doc: Any, head: bool) -> None:
    payload = json.dumps(doc).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else payload})
