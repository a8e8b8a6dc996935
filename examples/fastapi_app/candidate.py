"""The candidate churn service (model v2): a separate HTTP service, the shadow target."""

from __future__ import annotations

import threading
import time
from typing import Any

from fastapi import Body, FastAPI, HTTPException, Request

from examples.churn import model

candidate = model.candidate_model()
app = FastAPI(title="churn prediction (candidate, v2)")
_lock = threading.Lock()
_counts = {"received": 0, "marked": 0}


@app.post("/predict_shadow")
async def predict(request: Request, payload: dict[str, Any] = Body(...)) -> dict[str, Any]:  # noqa: B008
    with _lock:
        _counts["received"] += 1
        # Shadow copies are marked: a real candidate would skip side effects for them.
        if request.headers.get("x-shadow-request"):
            _counts["marked"] += 1
    try:
        return model.predict(candidate, payload)
    except ValueError as exc:
        raise HTTPException(status_code=422, detail=str(exc)) from None


@app.get("/stats")
async def stats() -> dict[str, int]:
    with _lock:
        return dict(_counts)


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok", "model": candidate.version}


class ServerTiming:
    """Reports the service's own time in a ``Server-Timing`` header (a few lines of pure ASGI), so
    the shadow report compares it with production's in-process time, not with a network round trip."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()

        async def send_timed(message: Any) -> None:
            if message["type"] == "http.response.start":
                took = f"app;dur={(time.perf_counter() - start) * 1000:.3f}".encode()
                message = {**message, "headers": [*message.get("headers", []), (b"server-timing", took)]}
            await send(message)

        await self.app(scope, receive, send_timed)


app.add_middleware(ServerTiming)
