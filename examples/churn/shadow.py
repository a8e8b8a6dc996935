"""The shadow configuration both example apps use: one candidate, the churn comparison.

A few bounds can be tuned from the environment (the fault-matrix tests do that):
``CANDIDATE_URL``, ``CANDIDATE_TIMEOUT``, ``CANDIDATE_MAX_CONCURRENCY`` and
``SHADOW_<OPTION>`` for ``max_queue``, ``max_body_bytes``, ``max_response_bytes``,
``drain_timeout``, ``circuit_failures``, ``circuit_cooldown``, ``drop_headers`` and
``routes`` (comma separated). ``NO_SHADOW=1`` runs the apps without the middleware (the baseline).
"""

from __future__ import annotations

import os
from typing import Any

from shadow_middleware import Compare, ShadowConfig, ShadowTarget

DEFAULT_CANDIDATE_URL = "http://127.0.0.1:5002/predict_shadow"
_INTS = ("max_queue", "max_body_bytes", "max_response_bytes", "circuit_failures")
_FLOATS = ("drain_timeout", "circuit_cooldown")


def enabled() -> bool:
    return os.environ.get("NO_SHADOW") != "1"


def shadow_config() -> ShadowConfig:
    env = os.environ
    extra: dict[str, Any] = {}
    for name in _INTS:
        if f"SHADOW_{name.upper()}" in env:
            extra[name] = int(env[f"SHADOW_{name.upper()}"])
    for name in _FLOATS:
        if f"SHADOW_{name.upper()}" in env:
            extra[name] = float(env[f"SHADOW_{name.upper()}"])
    if "SHADOW_DROP_HEADERS" in env:
        extra["drop_headers"] = [h for h in env["SHADOW_DROP_HEADERS"].split(",") if h]
    return ShadowConfig(
        targets=[
            ShadowTarget(
                name="churn-v2",
                url=env.get("CANDIDATE_URL", DEFAULT_CANDIDATE_URL),
                timeout=float(env.get("CANDIDATE_TIMEOUT", "2.0")),
                max_concurrency=int(env.get("CANDIDATE_MAX_CONCURRENCY", "32")),
            )
        ],
        routes=[r for r in env.get("SHADOW_ROUTES", "POST /predict").split(",") if r],
        # ML-aware: probabilities are compared as decisions at the 0.5 cut-off, so only a
        # flipped offer counts as a different answer; both values are still recorded.
        compare=Compare(fields=["/churn_probability", "/make_offer"], threshold=0.5),
        # Ground truth arrives later keyed by customer: record the id to join it.
        correlation_id="json:/customer_id",
        **extra,
    )
