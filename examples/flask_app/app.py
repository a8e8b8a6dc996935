"""Production churn API (model v1) with the candidate (v2) in shadow.

Run: ``python -m examples.flask_app`` (starts this app under gunicorn and the candidate).
"""

from __future__ import annotations

from typing import Any

from flask import Flask, jsonify, request

from examples.churn import model
from examples.churn.shadow import enabled, shadow_engine
from examples.churn.telemetry import setup_telemetry
from shadow_middleware import ShadowWSGIMiddleware

tracer_provider, meter_provider, TELEMETRY = setup_telemetry("churn-api")
production = model.production_model()

app = Flask("churn-production")


@app.post("/predict")
def predict() -> Any:
    payload = request.get_json(silent=True)
    if not isinstance(payload, dict):
        return jsonify(detail="expected a JSON object"), 422
    try:
        return jsonify(model.predict(production, payload))
    except ValueError as exc:
        return jsonify(detail=str(exc)), 422


@app.get("/health")
def health() -> Any:
    return jsonify(status="ok", model=production.version)


if enabled():
    # A mistake in SHADOW_* or the file leaves the app serving, shadowing off (logged once).
    app.wsgi_app = ShadowWSGIMiddleware(  # type: ignore[method-assign]
        app.wsgi_app, shadow=shadow_engine(tracer_provider, meter_provider)
    )
