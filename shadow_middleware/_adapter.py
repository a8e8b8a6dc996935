"""What both framework adapters share: which engine they use, and who closes it."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

from ._config import ShadowConfig
from ._engine import Shadow, kill_switch_set, runtime_engine

__all__ = ["Adapter"]

logger = logging.getLogger("shadow_middleware")


class Adapter:
    """Base of ``ShadowASGIMiddleware`` and ``ShadowWSGIMiddleware``.

    Parameters:
        app: the application to wrap.
        shadow: a :class:`Shadow` engine to use (it stays its owner's to close).
        config: a :class:`ShadowConfig`; the middleware then builds and owns its engine.
            Give exactly one of ``shadow`` and ``config``, or neither when ``SHADOW_CONFIG``
            or ``SHADOW_TARGETS`` is set (the configuration then comes from the environment).
        tracer_provider: OpenTelemetry ``TracerProvider`` for an engine built from ``config``.
        meter_provider: OpenTelemetry ``MeterProvider`` for an engine built from ``config``.
        strict: for a configuration read from the environment: a mistake fails fast (as
            with ``SHADOW_STRICT=1``) instead of leaving the app serving with shadowing off.

    ``SHADOW_ENABLED=0`` always wins: with neither ``shadow`` nor ``config`` given, the
    configuration is then not even read, and the middleware is a pure pass-through.

    A mistake in a configuration read from the environment (a ``SHADOW_*`` variable, the
    TOML file) is logged once at ERROR and leaves the app serving, shadowing off (the engine,
    ``.shadow``, is off and its ``stats()`` count the mistakes), unless strict.
    """

    #: Whether a strict configuration error waits for the server's startup (ASGI lifespan)
    #: rather than raising here. Starlette builds middleware inside its first ASGI call, where
    #: an exception would turn every request into a 500.
    _defer_config_errors = False

    def __init__(
        self,
        app: Any,
        *,
        shadow: Shadow | None = None,
        config: ShadowConfig | None = None,
        tracer_provider: Any = None,
        meter_provider: Any = None,
        strict: bool | None = None,
    ) -> None:
        self.app = app
        self.shadow: Shadow | None = None
        self._owns_engine = False
        #: The configuration error that fails the start-up (strict, deferred adapters only).
        self.config_error: str | None = None
        self._error_logged = False
        #: Run once, at the first request (the Flask extension's route check); never raises.
        self.route_check: Callable[[], object] | None = None
        if shadow is None and config is None and kill_switch_set():
            return  # the kill switch: pass everything through, read nothing
        try:
            if shadow is None and config is None:
                # Read at run time: a mistake there never stops the app, unless strict.
                self.shadow = runtime_engine(
                    _config_from_environment, strict, None, tracer_provider, meter_provider
                )
                self._owns_engine = True
            else:
                self.shadow, self._owns_engine = _engine_for(shadow, config, tracer_provider, meter_provider)
        except ValueError as exc:
            if not self._defer_config_errors:
                raise
            self.config_error = f"shadow_middleware configuration error: {exc}"

    def _log_config_error_once(self) -> None:
        if self.config_error is not None and not self._error_logged:
            self._error_logged = True
            logger.error("%s; every request passes through unshadowed", self.config_error)


def _config_from_environment() -> ShadowConfig:
    if not os.environ.get("SHADOW_CONFIG") and not os.environ.get("SHADOW_TARGETS"):
        raise ValueError(
            "config: no configuration: give shadow= or config=, or set SHADOW_CONFIG to a TOML "
            "file, or declare targets in SHADOW_TARGETS (with SHADOW_TARGET_<NAME>_URL)"
        )
    return ShadowConfig.from_env()


def _engine_for(
    shadow: Shadow | None,
    config: ShadowConfig | None,
    tracer_provider: Any,
    meter_provider: Any,
) -> tuple[Shadow, bool]:
    """The engine a middleware uses, and whether the middleware owns it (given in code: a
    mistake here raises)."""
    if shadow is not None and config is not None:
        raise ValueError("shadow: give exactly one of shadow= and config=, not both")
    if shadow is not None:
        if not isinstance(shadow, Shadow):
            raise ValueError(f"shadow: must be a Shadow, got {type(shadow).__name__}")
        if tracer_provider is not None or meter_provider is not None:
            raise ValueError("tracer_provider: pass providers to Shadow(...) when giving shadow=")
        return shadow, False
    assert config is not None
    return Shadow(config, tracer_provider=tracer_provider, meter_provider=meter_provider), True
