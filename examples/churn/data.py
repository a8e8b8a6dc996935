"""A deterministic synthetic customer-churn data set, standard library only.

Every customer is a flat dict of plausible features plus the label ``churned`` (0/1). The label is drawn
from a hidden logistic ground truth that uses every feature, with non-linear terms (diminishing effect of
tenure, a U-shaped age effect, a jump after several support calls, a fiber x support-calls interaction)
and per-customer noise on the log-odds, so no model trained here can be perfect and a model that sees
more features does measurably better.

The first :data:`TRAIN_SIZE` rows of :func:`load` are for training; the rest are the "live traffic" the
shadow-mode demo sends to ``/predict``.
"""

from __future__ import annotations

import csv
import functools
import math
import os
import random
from collections.abc import Iterable, Mapping

Value = str | int | float | bool
Row = dict[str, Value]

CONTRACTS: tuple[str, ...] = ("month-to-month", "one-year", "two-year")
LABEL = "churned"
DEFAULT_N = 3000
DEFAULT_SEED = 7
TRAIN_SIZE = 2000

# Contract mix and typical tenure (months) for each contract type.
_CONTRACT_WEIGHTS = (0.52, 0.25, 0.23)
_TENURE_MEAN = {"month-to-month": 16.0, "one-year": 32.0, "two-year": 48.0}

# Hidden ground truth: log-odds of churn. Tuned so that the base rate is ~30 %, a 3-feature model agrees
# with an all-feature model on roughly 90 % of decisions, and both are 70-90 % accurate.
_INTERCEPT = 0.2
_TENURE_LOG = -1.1  # x log1p(tenure / 6): the first months matter most
_CHARGES_PER_10 = 0.35  # per 10 currency units above 70
_CONTRACT_EFFECT = {"month-to-month": 0.0, "one-year": -1.4, "two-year": -2.8}
_FIBER = 0.3
_ELECTRONIC = 0.65
_SUPPORT_CALL = 0.32
_SUPPORT_JUMP = 0.8  # extra once a customer has called 4+ times
_FIBER_X_CALLS = 0.12  # fiber customers who keep calling are especially unhappy
_AGE_U = 0.0009  # x (age - 45)^2: the youngest and oldest customers churn more
_NOISE_SD = 0.4


def _clamp(x: float, lo: float, hi: float) -> float:
    return lo if x < lo else hi if x > hi else x


def _poisson(rng: random.Random, lam: float) -> int:
    """Knuth's algorithm; fine for the small rates used here."""
    limit = math.exp(-lam)
    k, p = 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


def _sigmoid(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


def _true_logit(row: Mapping[str, Value], noise: float) -> float:
    tenure = float(row["tenure_months"])
    calls = int(row["support_calls"])
    fiber = bool(row["has_fiber"])
    age = float(row["age"])
    z = _INTERCEPT
    z += _TENURE_LOG * math.log1p(tenure / 6.0)
    z += _CHARGES_PER_10 * (float(row["monthly_charges"]) - 70.0) / 10.0
    z += _CONTRACT_EFFECT[str(row["contract"])]
    z += _FIBER * fiber
    z += _ELECTRONIC * bool(row["payment_electronic"])
    z += _SUPPORT_CALL * calls + _SUPPORT_JUMP * (calls >= 4) + _FIBER_X_CALLS * fiber * calls
    z += _AGE_U * (age - 45.0) ** 2
    return z + noise


def _customer(rng: random.Random, index: int) -> Row:
    contract = rng.choices(CONTRACTS, weights=_CONTRACT_WEIGHTS)[0]
    tenure = round(_clamp(rng.expovariate(1.0 / _TENURE_MEAN[contract]), 0, 72))
    has_fiber = rng.random() < 0.45
    base = 55.0 if has_fiber else 30.0
    extras = sum(rng.random() < 0.35 for _ in range(6)) * 8.0  # streaming, security, backup ...
    charges = round(_clamp(base + extras + rng.gauss(0.0, 7.0), 18.0, 120.0), 2)
    calls = min(10, _poisson(rng, 1.1 + 0.6 * has_fiber))
    payment_electronic = rng.random() < (0.5 if contract == "month-to-month" else 0.3)
    age = round(_clamp(rng.gauss(46.0, 15.0), 18, 85))
    row: Row = {
        "customer_id": f"C{index:05d}",
        "tenure_months": tenure,
        "monthly_charges": charges,
        "support_calls": calls,
        "contract": contract,
        "has_fiber": has_fiber,
        "payment_electronic": payment_electronic,
        "age": age,
    }
    logit = _true_logit(row, rng.gauss(0.0, _NOISE_SD))
    row[LABEL] = int(rng.random() < _sigmoid(logit))
    return row


def generate(n: int = DEFAULT_N, seed: int = DEFAULT_SEED) -> list[Row]:
    """``n`` customers, ``customer_id`` "C00000" ... ; the same ``(n, seed)`` always gives the same rows."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = random.Random(seed)
    return [_customer(rng, i) for i in range(n)]


@functools.lru_cache(maxsize=1)
def _default() -> tuple[Row, ...]:
    return tuple(generate())


def load() -> list[Row]:
    """The default data set (n=3000, seed=7), generated once per process; callers get their own copies."""
    return [dict(row) for row in _default()]


def train_rows() -> list[Row]:
    """Rows ``0 .. TRAIN_SIZE-1`` of :func:`load`: what both models are trained on."""
    return load()[:TRAIN_SIZE]


def live_rows() -> list[Row]:
    """Rows ``TRAIN_SIZE ..`` of :func:`load`: held out, the live traffic of the demo."""
    return load()[TRAIN_SIZE:]


def features_only(row: Mapping[str, Value]) -> Row:
    """The row without its label: the JSON body a client sends to ``/predict``."""
    return {key: value for key, value in row.items() if key != LABEL}


FEATURES = (
    "tenure_months",
    "monthly_charges",
    "support_calls",
    "contract",
    "has_fiber",
    "payment_electronic",
    "age",
)


def write_reference(path: str | os.PathLike[str], rows: Iterable[Mapping[str, Value]]) -> None:
    """The model inputs as CSV, one column per input (named as the report's ``<p>``), booleans as
    ``true``/``false`` as JSON has them: the reference sample for ``report --reference``."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(FEATURES)
        for row in rows:
            writer.writerow([str(row[k]).lower() if isinstance(row[k], bool) else row[k] for k in FEATURES])


def write_labels(path: str | os.PathLike[str], rows: Iterable[Mapping[str, Value]]) -> None:
    """Ground truth as CSV, ``correlation_id,label`` (customer id, 0/1), to join with shadow spans."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["correlation_id", "label"])
        for row in rows:
            writer.writerow([row["customer_id"], int(row[LABEL])])
