"""The shadow configuration both example apps use: one candidate, the churn comparison.

The defaults below are overridden by ``SHADOW_*`` environment variables (and a file named by
``SHADOW_CONFIG``), exactly as in any app using ``ShadowConfig.from_env``; the fault-matrix
tests and the benchmark tune the bounds that way. ``CANDIDATE_URL``, ``CANDIDATE_TIMEOUT`` and
``CANDIDATE_MAX_CONCURRENCY`` set the candidate; ``NO_SHADOW=1`` runs the apps without the
middleware (the baseline).
"""

from __future__ import annotations

import os
from typing import Any

from examples.churn import data
from shadow_middleware import Shadow, ShadowConfig

DEFAULT_CANDIDATE_URL = "http://127.0.0.1:5002/predict_shadow"


def enabled() -> bool:
    return os.environ.get("NO_SHADOW") != "1"


def defaults() -> dict[str, Any]:
    """The in-code defaults, in the file's layout; the file and ``SHADOW_*`` override them."""
    env = os.environ
    return {
        "targets": [
            {
                "name": "churn-v2",
                "url": env.get("CANDIDATE_URL", DEFAULT_CANDIDATE_URL),
                "timeout": float(env.get("CANDIDATE_TIMEOUT", "2.0")),
                "max_concurrency": int(env.get("CANDIDATE_MAX_CONCURRENCY", "32")),
            }
        ],
        "routes": ["POST /predict"],
        # ML-aware: probabilities are compared as decisions at the 0.5 cut-off, so only a
        # flipped offer counts as a different answer; both values are still recorded.
        "compare": {"fields": ["/churn_probability", "/make_offer"], "threshold": 0.5},
        # Ground truth arrives later keyed by customer: record the id to join it.
        "correlation_id": "json:/customer_id",
        # The model's inputs, on the spans, for drift against the training data (report
        # --reference). Opt-in: these are customer attributes; record only what your
        # telemetry backend may keep (see README, "Request inputs and personal data").
        "record_inputs": ["/" + name for name in data.FEATURES],
    }


def shadow_config() -> ShadowConfig:
    """The configuration; a mistake in the environment raises (for tools and tests)."""
    return ShadowConfig.from_env(base=defaults())


def shadow_engine(tracer_provider: Any = None, meter_provider: Any = None) -> Shadow:
    """The engine the apps use: a mistake in the environment (or the file) is logged once and
    leaves the app serving with shadowing off, unless ``SHADOW_STRICT=1``."""
    return Shadow.from_env(base=defaults(), tracer_provider=tracer_provider, meter_provider=meter_provider)
