"""The candidate churn service (model v2) as a Flask app: the shadow target."""

from __future__ import annotations

import threading
from typing import Any

from flask import Flask, jsonify, request

from examples.churn import model

candidate = model.candidate_model()
app = Flask("churn-candidate")
_lock = threading.Lock()
_counts = {"received": 0, "marked": 0}


@app.post("/predict_shadow")
def predict() -> Any:
    with _lock:
        _counts["received"] += 1
        if request.headers.get("x-shadow-request"):
            _counts["marked"] += 1
    payload = request.get_json(silent=True)
    if not isinstance(payload, dict):
        return jsonify(detail="expected a JSON object"), 422
    try:
        return jsonify(model.predict(candidate, payload))
    except ValueError as exc:
        return jsonify(detail=str(exc)), 422


@app.get("/stats")
def stats() -> Any:
    with _lock:
        return jsonify(dict(_counts))


@app.get("/health")
def health() -> Any:
    return jsonify(status="ok", model=candidate.version)
