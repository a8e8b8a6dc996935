"""The shadow HTTP clients the benchmark compares with the package's own.

The package's client is :class:`~shadow_middleware._http.MiniHTTPClient`, chosen by
measurement (bench/RESULTS.md). aiohttp and httpx live here, not in the package: neither is
its dependency. :func:`use_client` swaps the client the dispatcher builds (a benchmark-only
hook: the runtime reads no environment variable for it).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import shadow_middleware._pipeline as pipeline
from shadow_middleware._http import CandidateResponse, MiniHTTPClient
from shadow_middleware._wire import ShadowURL

__all__ = ["CLIENTS", "use_client"]


class AiohttpClient:
    """aiohttp : no redirects, no cookies, capped reads."""

    def __init__(self, max_response_bytes: int) -> None:
        self._max = max_response_bytes
        self._session: Any = None

    async def send(
        self,
        method: str,
        url: ShadowURL,
        headers: list[tuple[str, str]],
        body: bytes,
        timeout: float,
    ) -> CandidateResponse:
        import aiohttp  # only when chosen

        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=60),
                auto_decompress=False,
                cookie_jar=aiohttp.DummyCookieJar(),
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
                trust_env=False,
            )
        async with self._session.request(
            method,
            url.full,
            headers=headers,
            data=body if body or method not in ("GET", "HEAD", "DELETE", "OPTIONS") else None,
            allow_redirects=False,
            timeout=aiohttp.ClientTimeout(total=timeout),
            auto_decompress=False,
        ) as resp:
            data, truncated = await _read_capped(resp.content.iter_any(), self._max)
            if truncated:
                resp.close()  # unread bytes: never reuse the connection
            return CandidateResponse(resp.status, resp.headers.get("Content-Encoding", ""), data, truncated)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class HttpxClient:
    """The alternative the benchmark measures against ; not the default.

    Same contract as the default client: no redirects, capped reads, the client's own timeout.
    """

    def __init__(self, max_response_bytes: int) -> None:
        self._max = max_response_bytes
        self._client: Any = None

    async def send(
        self,
        method: str,
        url: ShadowURL,
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
        request = self._client.build_request(method, url.full, headers=headers, content=body, timeout=timeout)
        response = await self._client.send(request, stream=True)
        try:
            data, truncated = await _read_capped(response.aiter_raw(), self._max)
            return CandidateResponse(
                response.status_code, response.headers.get("content-encoding", ""), data, truncated
            )
        finally:
            await response.aclose()

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


async def _read_capped(chunks: AsyncIterator[bytes], cap: int) -> tuple[bytes, bool]:
    """At most ``cap`` bytes of a streamed body, and whether there was more."""
    kept: list[bytes] = []
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > cap:
            kept.append(chunk[: len(chunk) - (size - cap)])
            return b"".join(kept), True
        kept.append(chunk)
    return b"".join(kept), False


CLIENTS: dict[str, Callable[[int], Any]] = {
    "mini": MiniHTTPClient,
    "aiohttp": AiohttpClient,
    "httpx": HttpxClient,
}


def use_client(name: str, factory: Callable[[int], Any] | None = None) -> None:
    """Make every engine started from now on in this process use client ``name``."""
    pipeline.default_client = factory or CLIENTS[name]
