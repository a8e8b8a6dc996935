"""FastAPI app under test (uvicorn). Env: SHADOW_URL, SPAN_FILE, NO_SHADOW=1 for the baseline."""

from __future__ import annotations

import os
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse

from shadow_middleware import ShadowASGIMiddleware

from .spanfile import shadow_config, tracer_provider

app = FastAPI()


@app.post("/predict")
async def predict(request: Request) -> dict[str, Any]:
    body = await request.body()
    return {"prediction": round((len(body) % 100) / 100, 3), "size": len(body), "pid": 0}


@app.post("/echo")
async def echo(request: Request) -> Any:
    return {"body": (await request.body()).decode("latin-1")}


@app.get("/stream")
async def stream() -> StreamingResponse:
    async def parts() -> Any:
        for i in range(5):
            yield f"part-{i}\n".encode()

    return StreamingResponse(parts(), media_type="text/plain")


if os.environ.get("NO_SHADOW") != "1":
    app.add_middleware(ShadowASGIMiddleware, config=shadow_config(), tracer_provider=tracer_provider())
