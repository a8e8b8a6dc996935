"""The churn example's synthetic data set and its two pure-Python models (examples/churn)."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import pytest

from examples.churn import data, model
from examples.churn.data import Row

FEATURE_KEYS = {
    "customer_id",
    "tenure_months",
    "monthly_charges",
    "support_calls",
    "contract",
    "has_fiber",
    "payment_electronic",
    "age",
}


def held_out() -> list[Row]:
    return data.load()[model.TRAIN_SIZE :]


def decisions(m: model.LogisticModel, rows: list[Row]) -> list[bool]:
    return [m.predict_proba(data.features_only(row)) >= 0.5 for row in rows]


def accuracy(predicted: list[bool], rows: list[Row]) -> float:
    return sum(p == (row["churned"] == 1) for p, row in zip(predicted, rows, strict=True)) / len(rows)


def payload(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = dict(data.features_only(held_out()[0]))
    doc.update(changes)
    return doc


# --- data -----------------------------------------------------------------------------------------------


def test_generation_is_deterministic_per_seed() -> None:
    assert data.generate(300, seed=7) == data.generate(300, seed=7)
    assert data.generate(300, seed=7) != data.generate(300, seed=8)
    assert data.load() == data.generate()  # the default data set: n=3000, seed=7
    assert len(data.load()) == 3000


def test_load_hands_out_copies() -> None:
    rows = data.load()
    rows[0]["age"] = -1
    rows.pop()
    assert data.load()[0]["age"] != -1
    assert len(data.load()) == 3000


def test_rows_have_plausible_features() -> None:
    rows = data.load()
    assert [row["customer_id"] for row in rows[:3]] == ["C00000", "C00001", "C00002"]
    assert len({row["customer_id"] for row in rows}) == len(rows)
    for row in rows:
        assert set(row) == FEATURE_KEYS | {"churned"}
        assert type(row["tenure_months"]) is int and 0 <= row["tenure_months"] <= 72
        assert type(row["monthly_charges"]) is float and 18 <= row["monthly_charges"] <= 120
        assert type(row["support_calls"]) is int and 0 <= row["support_calls"] <= 10
        assert row["contract"] in ("month-to-month", "one-year", "two-year")
        assert type(row["has_fiber"]) is bool and type(row["payment_electronic"]) is bool
        assert type(row["age"]) is int and 18 <= row["age"] <= 85
        assert row["churned"] in (0, 1) and type(row["churned"]) is int


def test_churn_base_rate() -> None:
    rows = data.load()
    rate = sum(int(row["churned"]) for row in rows) / len(rows)
    assert 0.25 <= rate <= 0.35, rate
    for seed in (1, 2, 3):  # not a property of one lucky seed
        other = data.generate(seed=seed)
        assert 0.25 <= sum(int(r["churned"]) for r in other) / len(other) <= 0.35


def test_features_only_drops_just_the_label() -> None:
    row = data.load()[42]
    body = data.features_only(row)
    assert set(body) == FEATURE_KEYS
    assert body == {k: v for k, v in row.items() if k != "churned"}
    assert "churned" in row  # the row itself is untouched


def test_write_labels(tmp_path: Path) -> None:
    rows = held_out()
    path = tmp_path / "labels.csv"
    data.write_labels(path, rows)
    with path.open(newline="") as f:
        lines = list(csv.reader(f))
    assert lines[0] == ["correlation_id", "label"]
    assert len(lines) == len(rows) + 1
    assert lines[1:] == [[str(r["customer_id"]), str(r["churned"])] for r in rows]
    with path.open(newline="") as f:
        assert {d["correlation_id"]: d["label"] for d in csv.DictReader(f)}["C02000"] in ("0", "1")


# --- models -----------------------------------------------------------------------------------------------


def test_models_on_held_out_traffic() -> None:
    rows = held_out()
    assert len(rows) == 1000 and rows[0]["customer_id"] == "C02000"
    v1, v2 = model.production_model(), model.candidate_model()
    d1, d2 = decisions(v1, rows), decisions(v2, rows)
    acc1, acc2 = accuracy(d1, rows), accuracy(d2, rows)
    agreement = sum(a == b for a, b in zip(d1, d2, strict=True)) / len(rows)
    assert 0.7 <= acc1 <= 0.9, acc1
    assert 0.7 <= acc2 <= 0.9, acc2
    assert acc2 >= acc1, (acc1, acc2)
    assert 0.85 <= agreement <= 0.97, agreement
    # Both models beat "nobody churns", and both actually make offers.
    majority = 1 - sum(int(r["churned"]) for r in rows) / len(rows)
    assert acc1 > majority and acc2 > majority
    assert 0.1 < sum(d1) / len(rows) < 0.5 and 0.1 < sum(d2) / len(rows) < 0.5


def test_model_identity_and_features() -> None:
    v1, v2 = model.production_model(), model.candidate_model()
    assert (v1.version, v2.version) == ("v1", "v2")
    assert v1.name and v2.name
    assert v1.features == model.FEATURES_V1 and v2.features == model.FEATURES_V2
    assert set(model.FEATURES_V1) < set(model.FEATURES_V2) == FEATURE_KEYS - {"customer_id"}
    assert model.production_model() is v1  # cached


def test_training_is_deterministic() -> None:
    rows = data.load()[:500]
    a = model.LogisticModel().train(rows, model.FEATURES_V2, epochs=200, lr=1.0, l2=1e-3)
    b = model.LogisticModel().train(rows, model.FEATURES_V2, epochs=200, lr=1.0, l2=1e-3)
    assert a.coefficients() == b.coefficients()
    assert a.predict_proba(rows[0]) == b.predict_proba(rows[0])


def test_predict_output() -> None:
    body = payload()
    for m in (model.production_model(), model.candidate_model()):
        out = model.predict(m, body)
        assert list(out) == ["customer_id", "churn_probability", "make_offer", "model_version"]
        assert out["customer_id"] == body["customer_id"]
        p = out["churn_probability"]
        assert type(p) is float and 0.0 <= p <= 1.0 and p == round(p, 4)
        assert type(out["make_offer"]) is bool
        assert out["make_offer"] == (m.predict_proba(body) >= 0.5)
        assert out["model_version"] == m.version


def test_predict_ignores_extra_keys_and_accepts_int_for_float() -> None:
    m = model.candidate_model()
    body = payload(monthly_charges=70)
    assert model.predict(m, {**body, "extra": [1, 2]}) == model.predict(m, body)
    assert model.predict(m, body) == model.predict(m, payload(monthly_charges=70.0))


@pytest.mark.parametrize("feature", sorted(FEATURE_KEYS))
def test_predict_missing_feature(feature: str) -> None:
    body = payload()
    del body[feature]
    with pytest.raises(ValueError, match=feature):
        model.predict(model.candidate_model(), body)


def test_v1_does_not_need_v2_only_features() -> None:
    body = payload()
    del body["support_calls"]
    assert model.predict(model.production_model(), body)["model_version"] == "v1"
    with pytest.raises(ValueError, match="missing feature 'support_calls'"):
        model.predict(model.candidate_model(), body)


@pytest.mark.parametrize(
    ("feature", "value", "message"),
    [
        ("tenure_months", "12", "must be a number"),
        ("monthly_charges", "70.5", "must be a number"),
        ("age", None, "must be a number"),
        ("support_calls", True, "must be a number"),
        ("monthly_charges", math.nan, "must be finite"),
        ("has_fiber", "yes", "must be a boolean"),
        ("payment_electronic", 1, "must be a boolean"),
        ("contract", "weekly", "must be one of"),
        ("contract", 2, "must be one of"),
        ("customer_id", 42, "must be a non-empty string"),
    ],
)
def test_predict_wrong_type(feature: str, value: Any, message: str) -> None:
    with pytest.raises(ValueError, match=f"{feature}.*{message}|{message}.*{feature}"):
        model.predict(model.candidate_model(), payload(**{feature: value}))


def test_predict_rejects_non_object() -> None:
    with pytest.raises(ValueError, match="JSON object"):
        model.predict(model.production_model(), [1, 2, 3])  # type: ignore[arg-type]
