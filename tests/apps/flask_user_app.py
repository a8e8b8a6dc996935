"""A Flask app factory written the way a new user writes one: a blueprint under a prefix, the
extension configured from SHADOW_CONFIG / SHADOW_* / app.config only, a stats route.
Env: SPAN_FILE (optional)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Flask, request

from shadow_middleware import ShadowFlask

api = Blueprint("api", __name__, url_prefix="/api")


@api.post("/predict")
def predict() -> dict[str, Any]:
    body = request.get_json(silent=True) or {}
    return {"prediction": 0.5, "id": body.get("id")}


@api.get("/score/<int:customer_id>")
def score(customer_id: int) -> dict[str, Any]:
    return {"prediction": customer_id % 100 / 100}


shadow_ext = ShadowFlask()


def create_app() -> Flask:
    app = Flask(__name__)
    shadow_ext.init_app(app)  # before the blueprint, as many factories do

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/internal/shadow")
    def stats() -> dict[str, Any]:
        engine = ShadowFlask.shadow(app)
        return {
            "stats": None if engine is None else engine.stats(),
            "errors": list(engine.config_errors) if engine else [],
        }

    app.register_blueprint(api)
    return app


app = create_app()
