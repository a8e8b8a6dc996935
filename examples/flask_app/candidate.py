"""The candidate churn service (model v2) as a Flask app: the shadow target."""

from __future__ import annotations

import threading
import time
from typing import Any

from flask import Flask, Response, g, jsonify, request

from examples.churn import model

candidate = model.candidate_model()
app = Flask("churn-candidate")
_lock = threading.Lock()
_counts = {"received": 0, "marked": 0}


# The service's own time in a Server-Timing header, so the shadow report compares it with
# production's in-process time rather than with a network round trip.
@app.before_request
def _start_timer() -> None:
    g.started = time.perf_counter()


@app.after_request
def _server_timing(response: Response) -> Response:
    response.headers["Server-Timing"] = f"app;dur={(time.perf_counter() - g.started) * 1000:.3f}"
    return response


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
