"""Pure-Python logistic-regression churn models: production (v1) and candidate (v2).

Encoding: numeric features as floats, booleans as 0/1, ``contract`` one-hot with "month-to-month" as the
reference level; every encoded column is then standardized with the training mean and standard
deviation. Training is full-batch gradient descent on the mean log-loss plus an L2 penalty (the intercept
is not penalized), starting from zero, so it is deterministic; it stops early once every gradient
component is below ``tol``.
"""

from __future__ import annotations

import functools
import math
import operator
from collections.abc import Mapping, Sequence

from examples.churn import data

NUMERIC_FEATURES: tuple[str, ...] = ("tenure_months", "monthly_charges", "support_calls", "age")
BOOLEAN_FEATURES: tuple[str, ...] = ("has_fiber", "payment_electronic")
CATEGORICAL_FEATURES: dict[str, tuple[str, ...]] = {"contract": data.CONTRACTS}
ALL_FEATURES: tuple[str, ...] = (*NUMERIC_FEATURES, "contract", *BOOLEAN_FEATURES)

FEATURES_V1: tuple[str, ...] = ("tenure_months", "monthly_charges", "contract")
FEATURES_V2: tuple[str, ...] = ALL_FEATURES

DECISION_THRESHOLD = 0.5
TRAIN_SIZE = data.TRAIN_SIZE


def _sigmoid(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


def _columns(feature: str) -> list[str]:
    """Names of the encoded columns of one feature."""
    levels = CATEGORICAL_FEATURES.get(feature)
    if levels is None:
        return [feature]
    return [f"{feature}={level}" for level in levels[1:]]  # first level is the reference


def _encode(feature: str, payload: Mapping[str, object]) -> list[float]:
    """Encode one feature of a request/row, raising ``ValueError`` when it is missing or malformed."""
    if feature not in payload:
        raise ValueError(f"missing feature {feature!r}")
    value = payload[feature]
    kind = type(value).__name__
    if feature in NUMERIC_FEATURES:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"feature {feature!r} must be a number, got {kind} {value!r}")
        if not math.isfinite(value):
            raise ValueError(f"feature {feature!r} must be finite, got {value!r}")
        return [float(value)]
    if feature in BOOLEAN_FEATURES:
        if not isinstance(value, bool):
            raise ValueError(f"feature {feature!r} must be a boolean, got {kind} {value!r}")
        return [float(value)]
    levels = CATEGORICAL_FEATURES[feature]
    if not isinstance(value, str) or value not in levels:
        raise ValueError(f"feature {feature!r} must be one of {list(levels)}, got {kind} {value!r}")
    return [float(value == level) for level in levels[1:]]


class LogisticModel:
    """Binary logistic regression on a chosen subset of the churn features."""

    def __init__(self, name: str = "churn-logistic", version: str = "v0") -> None:
        self.name = name
        self.version = version
        self.features: tuple[str, ...] = ()
        self.columns: tuple[str, ...] = ()
        self.epochs_run = 0
        self._means: list[float] = []
        self._scales: list[float] = []
        self._weights: list[float] = []
        self._bias = 0.0

    def __repr__(self) -> str:
        state = f"{len(self.columns)} columns" if self.trained else "untrained"
        return f"LogisticModel(name={self.name!r}, version={self.version!r}, {state})"

    @property
    def trained(self) -> bool:
        return bool(self.columns)

    def coefficients(self) -> dict[str, float]:
        """Weights per standardized column, plus ``"(intercept)"``."""
        return {"(intercept)": self._bias, **dict(zip(self.columns, self._weights, strict=True))}

    def _raw(self, payload: Mapping[str, object]) -> list[float]:
        if not isinstance(payload, Mapping):
            raise ValueError(f"expected a JSON object of features, got {type(payload).__name__}")
        out: list[float] = []
        for feature in self.features:
            out.extend(_encode(feature, payload))
        return out

    def train(
        self,
        rows: Sequence[Mapping[str, object]],
        features: Sequence[str],
        *,
        epochs: int = 1000,
        lr: float = 1.0,
        l2: float = 1e-3,
        tol: float = 1e-5,
    ) -> LogisticModel:
        """Fit on ``rows`` (which carry the ``churned`` label); returns ``self``."""
        features = tuple(features)
        unknown = [f for f in features if f not in ALL_FEATURES]
        if not features or unknown or len(set(features)) != len(features):
            raise ValueError(
                f"features must be distinct names from {list(ALL_FEATURES)}, got {list(features)}"
            )
        if not rows:
            raise ValueError("cannot train on zero rows")
        if epochs < 1 or lr <= 0 or l2 < 0:
            raise ValueError(f"need epochs >= 1, lr > 0, l2 >= 0; got {epochs}, {lr}, {l2}")
        self.features = features
        self.columns = tuple(c for f in features for c in _columns(f))

        labels: list[float] = []
        encoded: list[list[float]] = []
        for i, row in enumerate(rows):
            label = row.get(data.LABEL)
            if isinstance(label, bool) or not isinstance(label, int) or label not in (0, 1):
                raise ValueError(f"row {i}: label {data.LABEL!r} must be the int 0 or 1, got {label!r}")
            labels.append(float(label))
            encoded.append(self._raw(row))

        n, d = len(encoded), len(self.columns)
        raw_cols = [[x[j] for x in encoded] for j in range(d)]
        self._means = [math.fsum(col) / n for col in raw_cols]
        self._scales = []
        for col, mean in zip(raw_cols, self._means, strict=True):
            sd = math.sqrt(math.fsum((v - mean) ** 2 for v in col) / n)
            self._scales.append(sd if sd > 1e-12 else 1.0)
        # Column-major standardized design: every inner loop below runs in C (map/sum over operator.*).
        cols = [
            [(v - mean) / scale for v in col]
            for col, mean, scale in zip(raw_cols, self._means, self._scales, strict=True)
        ]
        rows_std = [list(r) for r in zip(*cols, strict=True)]

        weights = [0.0] * d
        bias = 0.0
        mul, sub = operator.mul, operator.sub
        self.epochs_run = 0
        for _ in range(epochs):
            self.epochs_run += 1
            probs = [_sigmoid(bias + sum(map(mul, weights, x))) for x in rows_std]
            resid = list(map(sub, probs, labels))
            grad_b = sum(resid) / n
            grads = [sum(map(mul, col, resid)) / n + l2 * w for col, w in zip(cols, weights, strict=True)]
            bias -= lr * grad_b
            weights = [w - lr * g for w, g in zip(weights, grads, strict=True)]
            if max(abs(grad_b), *map(abs, grads)) < tol:
                break
        self._weights, self._bias = weights, bias
        return self

    def predict_proba(self, row_or_features: Mapping[str, object]) -> float:
        """P(churn) for a data-set row or a request body; extra keys are ignored."""
        if not self.trained:
            raise RuntimeError(f"{self!r} has not been trained")
        z = self._bias
        for x, mean, scale, w in zip(
            self._raw(row_or_features), self._means, self._scales, self._weights, strict=True
        ):
            z += w * (x - mean) / scale
        return _sigmoid(z)


@functools.lru_cache(maxsize=1)
def production_model() -> LogisticModel:
    """v1, in production: tenure, charges and contract, trained on the first 2000 rows of ``data.load()``."""
    return LogisticModel("churn-logistic", "v1").train(data.train_rows(), FEATURES_V1)


@functools.lru_cache(maxsize=1)
def candidate_model() -> LogisticModel:
    """v2, the candidate in shadow: every feature, same training rows as v1."""
    return LogisticModel("churn-logistic", "v2").train(data.train_rows(), FEATURES_V2)


def predict(model: LogisticModel, payload: Mapping[str, object]) -> dict[str, str | float | bool]:
    """The ``/predict`` response for one request body; ``ValueError`` (HTTP 422) when it is malformed."""
    if not isinstance(payload, Mapping):
        raise ValueError(f"expected a JSON object, got {type(payload).__name__}")
    customer_id = payload.get("customer_id")
    if not isinstance(customer_id, str) or not customer_id:
        raise ValueError(f"'customer_id' must be a non-empty string, got {customer_id!r}")
    p = model.predict_proba(payload)
    return {
        "customer_id": customer_id,
        "churn_probability": round(p, 4),
        "make_offer": p >= DECISION_THRESHOLD,
        "model_version": model.version,
    }
