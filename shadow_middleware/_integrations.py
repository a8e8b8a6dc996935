"""Framework idioms: a Flask extension and an opt-in stats endpoint for ASGI apps.

Neither imports its framework: the Flask extension only wraps ``app.wsgi_app`` and reads
``app.config``; the stats endpoint is a plain ASGI app any Starlette/FastAPI app can mount.
"""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any

from ._config import ShadowConfig, _loader
from ._configfile import ENV_PREFIX, STRICT_ENV
from ._engine import Shadow, kill_switch_set, runtime_engine, strict_mode
from ._routecheck import unknown_routes, warn_unknown_routes
from ._wsgi import ShadowWSGIMiddleware

__all__ = ["ShadowFlask", "ShadowStatsApp"]

EXTENSION_KEY = "shadow_middleware"


class ShadowFlask:
    """Flask extension: ``ShadowFlask(app)`` or ``ext = ShadowFlask(); ext.init_app(app)``.

    Parameters:
        app: a Flask app to set up now (optional: use :meth:`init_app` later, per app).
        config: a :class:`ShadowConfig`, used as is. When omitted, the configuration is read
            as :meth:`ShadowConfig.from_env` reads it, with ``app.config`` as one more layer.
            Each layer overrides the one before, key by key:

            1. the TOML file ``SHADOW_CONFIG`` names (the process environment's when set,
               else ``app.config``'s; there it may also be a ``ShadowConfig``, used as is);
            2. ``app.config``'s ``SHADOW_*`` keys, with the environment variables' names
               and meaning (values may be Python values: ``9``, ``False``, a list);
            3. the process environment's ``SHADOW_*`` variables.

            An unknown ``SHADOW_*`` key or variable, or a bad value, is an error naming it,
            as in ``from_env`` (for ``app.config`` keys the message starts ``app.config:``).
        tracer_provider: OpenTelemetry ``TracerProvider`` (else the global one).
        meter_provider: OpenTelemetry ``MeterProvider`` (else the global one).
        strict: a mistake in the configuration read at :meth:`init_app` raises there (as
            with ``SHADOW_STRICT=1``). By default it is logged once at ERROR and the app is
            left as it is, shadowing off; the stored engine is then off and counts the
            mistakes in its ``stats()``.

    The engine is stored in ``app.extensions["shadow_middleware"]``. ``SHADOW_ENABLED=0``
    in the process environment always wins: without ``config``, nothing is read, the app
    is left as it is, and the stored engine is ``None``.

    A configured route that matches no rule of ``app.url_map`` (it would never be shadowed)
    gets one WARNING naming the closest rule: checked at :meth:`init_app`, and warned about
    at the first request (when blueprints registered after ``init_app`` are in the map).
    """

    def __init__(
        self,
        app: Any = None,
        *,
        config: ShadowConfig | None = None,
        tracer_provider: Any = None,
        meter_provider: Any = None,
        strict: bool | None = None,
    ) -> None:
        self._config = config
        self._tracer_provider = tracer_provider
        self._meter_provider = meter_provider
        self._strict = strict
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Any) -> Shadow | None:
        """Wrap ``app.wsgi_app`` in the middleware; returns the engine (None: kill switch)."""
        if self._config is None and kill_switch_set():
            app.extensions[EXTENSION_KEY] = None
            return None
        if self._config is not None:
            shadow = Shadow(
                self._config, tracer_provider=self._tracer_provider, meter_provider=self._meter_provider
            )
        else:
            shadow = runtime_engine(
                lambda: config_from_flask(app.config),
                _flask_strict(self._strict, app.config),
                None,
                self._tracer_provider,
                self._meter_provider,
            )
        app.extensions[EXTENSION_KEY] = shadow
        if shadow.config_errors:
            return shadow  # off: the app is left as it is
        middleware = ShadowWSGIMiddleware(app.wsgi_app, shadow=shadow)
        routes = shadow.config.compiled_routes
        try:
            incomplete = bool(unknown_routes(routes, _flask_rules(app)))
        except Exception:  # a check must never hurt the app
            incomplete = False
        if incomplete:
            # An app factory may register its blueprints after init_app: judge on the url_map
            # the first request sees, complete by then.
            middleware.route_check = lambda: warn_unknown_routes(routes, _flask_rules(app), "app.url_map")
        app.wsgi_app = middleware
        return shadow

    @staticmethod
    def shadow(app: Any) -> Shadow | None:
        """The engine ``init_app`` installed on ``app`` (None: the kill switch was set)."""
        engine: Shadow | None = app.extensions[EXTENSION_KEY]
        return engine


def _flask_strict(strict: bool | None, values: Mapping[str, Any]) -> bool | None:
    """``strict``, else ``SHADOW_STRICT`` from the environment, else from ``app.config``."""
    if strict is not None or os.environ.get(STRICT_ENV, "").strip():
        return strict
    given = values.get(STRICT_ENV)
    return None if given is None else strict_mode(None, {STRICT_ENV: _as_env(given)})


def _flask_rules(app: Any) -> list[tuple[frozenset[str] | None, str]]:
    """``(methods, rule)`` of each rule of a Flask app's ``url_map`` (never raises)."""
    try:
        return [
            (frozenset(rule.methods) if rule.methods else None, str(rule.rule))
            for rule in app.url_map.iter_rules()
        ]
    except Exception:  # not a Flask app as we know it: no check
        return []


#: How errors about ``app.config`` keys start.
APP_CONFIG_LABEL = "app.config"


def config_from_flask(values: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> ShadowConfig:
    """The configuration ``values`` (a Flask ``app.config``) and ``environ`` describe.

    Parameters:
        values: ``SHADOW_CONFIG`` (a ``ShadowConfig``, returned as is, or a TOML path) and
            ``SHADOW_*`` keys named and meant as the environment variables; other keys are
            not read.
        environ: the process environment (``os.environ`` when None); its ``SHADOW_*``
            variables override ``values``, which override the file.
    """
    given = values.get("SHADOW_CONFIG")
    if isinstance(given, ShadowConfig):
        return given
    from_app = {
        key: _as_env(value)
        for key, value in values.items()
        if isinstance(key, str)
        and key.startswith(ENV_PREFIX)
        and not (key == "SHADOW_CONFIG" and value is None)
    }
    layers = [(APP_CONFIG_LABEL, from_app), ("", os.environ if environ is None else environ)]
    return _loader().from_layers(layers)


def _as_env(value: Any) -> str:
    """An ``app.config`` value as the text of the environment variable of the same name."""
    if value is None:
        return ""  # unsets an optional option, as an empty variable does
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, os.PathLike):
        return os.fspath(value)  # type: ignore[no-any-return]
    if isinstance(value, Mapping):  # SHADOW_COMPARE_FIELDS = {primary: candidate}
        return ",".join(f"{k}={v}" for k, v in value.items())
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

    ``GET`` answers ``{"enabled": ..., "outcomes": {...}, "targets": {name: {...}},
    "internal_errors": n, "config_errors": [...]}``; ``config_errors`` lists the mistakes
    that left shadowing off (see :meth:`Shadow.from_env`).
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
            # Why shadowing is off, when a configuration mistake left it off (else empty).
            "config_errors": list(self.shadow.config_errors),
        }
        await _respond(send, 200, body, scope["method"] == "HEAD")


async def _respond(send: Send, status: int, doc: Any, head: bool) -> None:
    payload = json.dumps(doc).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else payload})
