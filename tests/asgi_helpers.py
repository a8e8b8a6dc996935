"""Drive an ASGI app message by message, the way a server does."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


@dataclass
class Exchange:
    status: int | None = None
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body_messages: list[bytes] = field(default_factory=list)
    received_by_app: list[Message] = field(default_factory=list)

    @property
    def body(self) -> bytes:
        return b"".join(self.body_messages)


def http_scope(
    method: str = "POST",
    path: str = "/predict",
    headers: Sequence[tuple[str, str]] = (("content-type", "application/json"),),
    query: bytes = b"",
) -> Scope:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }


async def drive(
    app: Callable[[Scope, Receive, Send], Awaitable[None]],
    scope: Scope,
    chunks: Sequence[bytes] = (b"",),
    *,
    disconnect_after: int | None = None,
) -> Exchange:
    """Run one request. ``disconnect_after=n``: the client leaves after ``n`` body chunks."""
    result = Exchange()
    messages: list[Message] = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)
    ]
    if disconnect_after is not None:
        messages = [*messages[:disconnect_after], {"type": "http.disconnect"}]
    done = asyncio.Event()

    async def receive() -> Message:
        if messages:
            msg = messages.pop(0)
        else:
            # A real server blocks until the client goes away.
            await done.wait()
            msg = {"type": "http.disconnect"}
        result.received_by_app.append(msg)
        return msg

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            result.status = message["status"]
            result.headers = list(message.get("headers", []))
        elif message["type"] == "http.response.body":
            result.body_messages.append(message.get("body", b""))
            if not message.get("more_body", False):
                done.set()

    await app(scope, receive, send)
    return result


def json_app(
    doc: Any = None,
    *,
    status: int = 200,
    read_body: bool = True,
    chunks: Sequence[bytes] | None = None,
    raise_exc: BaseException | None = None,
) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    """A minimal ASGI prediction app."""
    payload = json.dumps({"prediction": 0.5} if doc is None else doc).encode()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        body = b""
        if read_body:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                body += message.get("body", b"")
                if not message.get("more_body", False):
                    break
        app.bodies.append(body)  # type: ignore[attr-defined]
        if raise_exc is not None:
            raise raise_exc
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        parts = list(chunks) if chunks is not None else [payload]
        for i, part in enumerate(parts):
            await send({"type": "http.response.body", "body": part, "more_body": i < len(parts) - 1})

    app.bodies = []  # type: ignore[attr-defined]
    return app


def run(coro: Awaitable[Any]) -> Any:
    return asyncio.run(coro)  # type: ignore[arg-type]
