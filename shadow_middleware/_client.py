"""The shadow HTTP client: aiohttp, used only from the dispatcher's own event loop.

Chosen by measurement (see bench/RESULTS.md): aiohttp costs ~100 µs of CPU per
request where httpx costs ~1,000 µs, and its timeouts are its own, so no request
is ever cancelled from outside while it holds a pool slot.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp


@dataclass(slots=True)
class CandidateResponse:
    status: int
    content_encoding: str
    body: bytes  # raw (still encoded) bytes, at most the cap
    truncated: bool


class ShadowClient:
    """One pooled client per dispatcher loop. Never follows redirects, never stores cookies."""

    def __init__(self, max_response_bytes: int) -> None:
        self._max = max_response_bytes
        self._session: aiohttp.ClientSession | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                # Concurrency is bounded per target by the dispatcher, not by the pool.
                connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=60, enable_cleanup_closed=False),
                # Decompression happens in _compare with a cap (gzip bombs).
                auto_decompress=False,
                cookie_jar=aiohttp.DummyCookieJar(),
                # Send only the headers the original request had, not aiohttp's defaults.
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
                raise_for_status=False,
                trust_env=False,
            )
        return self._session

    async def send(
        self,
        method: str,
        url: str,
        headers: list[tuple[str, str]],
        body: bytes,
        timeout: float,
    ) -> CandidateResponse:
        session = self._get_session()
        client_timeout = aiohttp.ClientTimeout(total=timeout)
        async with session.request(
            method,
            url,
            headers=headers,
            data=body if body or method not in ("GET", "HEAD", "DELETE", "OPTIONS") else None,
            allow_redirects=False,
            timeout=client_timeout,
            max_redirects=0,
            auto_decompress=False,
        ) as resp:
            chunks: list[bytes] = []
            size = 0
            truncated = False
            while True:
                chunk = await resp.content.read(65536)
                if not chunk:
                    break
                size += len(chunk)
                if size > self._max:
                    # Keep the cap and stop reading: the connection is closed, not reused.
                    chunks.append(chunk[: len(chunk) - (size - self._max)])
                    truncated = True
                    resp.close()
                    break
                chunks.append(chunk)
            return CandidateResponse(
                resp.status,
                resp.headers.get("Content-Encoding", ""),
                b"".join(chunks),
                truncated,
            )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class HttpxClient:
    """The alternative the benchmark measures against (``SHADOW_HTTP_CLIENT=httpx``); not the default.

    Same contract as :class:`ShadowClient`: no redirects, capped reads, the client's own timeout.
    """

    def __init__(self, max_response_bytes: int) -> None:
        self._max = max_response_bytes
        self._client: Any = None

    async def send(
        self,
        method: str,
        url: str,
        headers: list[tuple[str, str]],
        body: bytes,
        timeout: float,
    ) -> CandidateResponse:
        import httpx  # only when chosen: not a dependency of the package

        if self._client is None:
            self._client = httpx.AsyncClient(
                follow_redirects=False,
                trust_env=False,
                limits=httpx.Limits(max_connections=None, max_keepalive_connections=256),
            )
        request = self._client.build_request(method, url, headers=headers, content=body, timeout=timeout)
        response = await self._client.send(request, stream=True)
        try:
            chunks: list[bytes] = []
            size = 0
            truncated = False
            async for chunk in response.aiter_raw():
                size += len(chunk)
                if size > self._max:
                    chunks.append(chunk[: len(chunk) - (size - self._max)])
                    truncated = True
                    break
                chunks.append(chunk)
            return CandidateResponse(
                response.status_code,
                response.headers.get("content-encoding", ""),
                b"".join(chunks),
                truncated,
            )
        finally:
            await response.aclose()

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


class Client(Protocol):
    async def send(
        self, method: str, url: str, headers: list[tuple[str, str]], body: bytes, timeout: float
    ) -> CandidateResponse: ...

    async def close(self) -> None: ...


def make_client(max_response_bytes: int) -> Client:
    """aiohttp, unless the benchmark asks for httpx via ``SHADOW_HTTP_CLIENT``."""
    if os.environ.get("SHADOW_HTTP_CLIENT", "aiohttp") == "httpx":
        return HttpxClient(max_response_bytes)
    return ShadowClient(max_response_bytes)
