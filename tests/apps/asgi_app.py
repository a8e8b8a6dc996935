"""FastAPI app under test (uvicorn). Env: SHADOW_URL, SPAN_FILE, SHADOW_ROUTES, NO_SHADOW=1 for the baseline."""

from __future__ import annotations

import os
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from shadow_middleware import ShadowASGIMiddleware

from .spanfile import shadow_config, tracer_provider

app = FastAPI()


@app.post("/predict")
async def predict(request: Request) -> dict[str, Any]:
    body = await request.body()
    return {"prediction": round((len(body) % 100) / 100, 3), "size": len(body), "pid": os.getpid()}


@app.post("/f/{p:path}")
async def files(request: Request, p: str) -> dict[str, Any]:
    """What the app was given of the request line (issue 18: the app gets it untouched)."""
    await request.body()
    raw = request.scope.get("raw_path") or b""
    return {"prediction": 1, "p": p, "path": request.scope["path"], "raw": raw.decode("latin-1")}


@app.post("/echo")
async def echo(request: Request) -> Any:
    return {"body": (await request.body()).decode("latin-1")}


@app.post("/boom")
async def boom(request: Request) -> Any:
    await request.body()
    raise RuntimeError("the model crashed")


@app.post("/fail")
async def fail(request: Request) -> Any:
    await request.body()
    return JSONResponse({"detail": "model unavailable"}, status_code=500)


async def _parts() -> Any:
    for i in range(5):
        yield f"part-{i}\n".encode()


@app.post("/stream")
async def stream_post(request: Request) -> StreamingResponse:
    await request.body()
    return StreamingResponse(_parts(), media_type="text/plain")


@app.get("/stream")
async def stream() -> StreamingResponse:
    return StreamingResponse(_parts(), media_type="text/plain")


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


if os.environ.get("NO_SHADOW") != "1":
    app.add_middleware(ShadowASGIMiddleware, config=shadow_config(), tracer_provider=tracer_provider())
