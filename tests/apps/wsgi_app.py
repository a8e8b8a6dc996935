"""Flask app under test (gunicorn). Env: SHADOW_URL, SPAN_FILE, SHADOW_ROUTES, NO_SHADOW=1 for the baseline."""

from __future__ import annotations

import os
from typing import Any

from flask import Flask, Response, request

from shadow_middleware import ShadowWSGIMiddleware

from .spanfile import shadow_config, tracer_provider

app = Flask(__name__)


@app.post("/predict")
def predict() -> dict[str, Any]:
    body = request.get_data()
    return {"prediction": round((len(body) % 100) / 100, 3), "size": len(body), "pid": os.getpid()}


@app.post("/f/<path:p>")
def files(p: str) -> dict[str, Any]:
    """What the app was given of the request line (issue 18: the app gets it untouched)."""
    request.get_data()
    return {
        "prediction": 1,
        "p": p,
        "path": request.environ["PATH_INFO"],
        "raw": request.environ.get("RAW_URI", ""),
    }


@app.post("/boom")
def boom() -> Any:
    request.get_data()
    raise RuntimeError("the model crashed")


@app.post("/fail")
def fail() -> Any:
    request.get_data()
    return {"detail": "model unavailable"}, 500


@app.route("/stream", methods=["GET", "POST"])
def stream() -> Response:
    request.get_data()
    return Response((f"part-{i}\n" for i in range(5)), mimetype="text/plain")


@app.get("/score")
def score() -> dict[str, Any]:
    # A GET prediction route: the body is never read (there is none).
    return {"prediction": round(int(request.args.get("customer_id", "0")) % 100 / 100, 3)}


@app.get("/health")
def health() -> dict[str, str]:
    return {"status": "ok"}


if os.environ.get("NO_SHADOW") != "1":
    app.wsgi_app = ShadowWSGIMiddleware(  # type: ignore[method-assign]
        app.wsgi_app, config=shadow_config(), tracer_provider=tracer_provider()
    )
