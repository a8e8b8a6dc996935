"""An app written the way a new user writes one: FastAPI, the OpenTelemetry SDK set up as
usual (global TracerProvider + BatchSpanProcessor), and the middleware added with no
arguments, configured by SHADOW_CONFIG / SHADOW_* only. Env: USER_SPAN_FILE."""

from __future__ import annotations

import os
from typing import Any

from fastapi import FastAPI, Request
from opentelemetry import trace
from opentelemetry.exporter.otlp.json.file import FileSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from shadow_middleware import ShadowASGIMiddleware

provider = TracerProvider()
provider.add_span_processor(BatchSpanProcessor(FileSpanExporter(os.environ["USER_SPAN_FILE"])))
trace.set_tracer_provider(provider)

app = FastAPI()


@app.post("/predict")
async def predict(request: Request) -> dict[str, Any]:
    body = await request.body()
    return {"score": round(len(body) / 1000, 3)}


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


app.add_middleware(ShadowASGIMiddleware)

if os.environ.get("USER_STATS") == "1":
    # The README's stats idiom: one engine for the middleware and the endpoint.
    from shadow_middleware import Shadow, ShadowStatsApp

    shadow = Shadow.from_env()
    app.user_middleware.clear()
    app.add_middleware(ShadowASGIMiddleware, shadow=shadow)
    app.mount("/internal/shadow", ShadowStatsApp(shadow))
