"""Production churn API (model v1) with the candidate (v2) in shadow.

Run: ``python -m examples.fastapi_app`` (starts this app and the candidate).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Body, FastAPI, HTTPException
from starlette.concurrency import run_in_threadpool

from examples.churn import model
from examples.churn.shadow import enabled, shadow_engine
from examples.churn.telemetry import setup_telemetry
from shadow_middleware import ShadowASGIMiddleware

tracer_provider, meter_provider, TELEMETRY = setup_telemetry("churn-api")
production = model.production_model()
shadow = shadow_engine(tracer_provider, meter_provider)


def _shutdown() -> None:
    # Order matters: finish the in-flight shadows (their spans end), then flush the exporters.
    # uvicorn re-raises SIGTERM after a graceful shutdown, so atexit hooks never run there.
    shadow.close(shadow.config.drain_timeout)
    tracer_provider.shutdown()
    meter_provider.shutdown()


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    yield
    await run_in_threadpool(_shutdown)


app = FastAPI(title="churn prediction (production, v1)", lifespan=lifespan)


@app.post("/predict")
async def predict(payload: dict[str, Any] = Body(...)) -> dict[str, Any]:  # noqa: B008
    try:
        return model.predict(production, payload)
    except ValueError as exc:
        raise HTTPException(status_code=422, detail=str(exc)) from None


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok", "model": production.version}


if enabled():
    app.add_middleware(ShadowASGIMiddleware, shadow=shadow)
