"""What both framework adapters share: which engine they use, and who closes it."""

from __future__ import annotations

import os
from typing import Any

from ._config import ShadowConfig
from ._engine import Shadow

__all__ = ["Adapter"]


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
    """

    def __init__(
        self,
        app: Any,
        *,
        shadow: Shadow | None = None,
        config: ShadowConfig | None = None,
        tracer_provider: Any = None,
        meter_provider: Any = None,
    ) -> None:
        self.app = app
        self.shadow, self._owns_engine = _engine_for(shadow, config, tracer_provider, meter_provider)


def _engine_for(
    shadow: Shadow | None,
    config: ShadowConfig | None,
    tracer_provider: Any,
    meter_provider: Any,
) -> tuple[Shadow, bool]:
    """The engine a middleware uses, and whether the middleware owns it."""
    if shadow is not None and config is not None:
        raise ValueError("shadow: give exactly one of shadow= and config=, not both")
    if shadow is not None:
        if not isinstance(shadow, Shadow):
            raise ValueError(f"shadow: must be a Shadow, got {type(shadow).__name__}")
        if tracer_provider is not None or meter_provider is not None:
            raise ValueError("tracer_provider: pass providers to Shadow(...) when giving shadow=")
        return shadow, False
    if config is None:
        if not os.environ.get("SHADOW_CONFIG") and not os.environ.get("SHADOW_TARGETS"):
            raise ValueError(
                "config: give exactly one of shadow= and config=, or set SHADOW_CONFIG to a TOML file"
            )
        config = ShadowConfig.from_env()
    return Shadow(config, tracer_provider=tracer_provider, meter_provider=meter_provider), True
