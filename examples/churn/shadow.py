"""The shadow configuration both example apps use: one candidate, the churn comparison."""

from __future__ import annotations

import os

from shadow_middleware import Compare, ShadowConfig, ShadowTarget

DEFAULT_CANDIDATE_URL = "http://127.0.0.1:5002/predict_shadow"


def shadow_config() -> ShadowConfig:
    return ShadowConfig(
        targets=[
            ShadowTarget(
                name="churn-v2",
                url=os.environ.get("CANDIDATE_URL", DEFAULT_CANDIDATE_URL),
                timeout=2.0,
            )
        ],
        routes=["POST /predict"],
        # ML-aware: probabilities are compared as decisions at the 0.5 cut-off, so only a
        # flipped offer counts as a different answer; both values are still recorded.
        compare=Compare(fields=["/churn_probability", "/make_offer"], threshold=0.5),
        # Ground truth arrives later keyed by customer: record the id to join it.
        correlation_id="json:/customer_id",
    )
