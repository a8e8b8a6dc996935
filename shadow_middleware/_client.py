"""Shadow HTTP clients, used only from the dispatcher's own event loop.

The default is :class:`~shadow_middleware._http.MiniHTTPClient`, chosen by measurement
(bench/RESULTS.md). aiohttp and httpx stay selectable with ``SHADOW_HTTP_CLIENT`` so the
benchmark can keep comparing them; neither is a dependency of the package.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any, Protocol

from ._http import CandidateResponse, MiniHTTPClient

__all__ = ["CandidateResponse", "Client", "make_client"]


class AiohttpClient:
    """aiohttp (``SHADOW_HTTP_CLIENT=aiohttp``): no redirects, no cookies, capped reads."""

    def __init__(self, max_response_bytes: int) -> None:
        self._max = max_response_bytes
        self._session: Any = None

    async def send(
        self,
        method: str,
        url: str,
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
            url,
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
    """The alternative the benchmark measures against (``SHADOW_HTTP_CLIENT=httpx``); not the default.

    Same contract as the default client: no redirects, capped reads, the client's own timeout.
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


class Client(Protocol):
    async def send(
        self, method: str, url: str, headers: list[tuple[str, str]], body: bytes, timeout: float
    ) -> CandidateResponse: ...

    async def close(self) -> None: ...


def make_client(max_response_bytes: int) -> Client:
    """The minimal client, unless the benchmark asks for another via ``SHADOW_HTTP_CLIENT``."""
    choice = os.environ.get("SHADOW_HTTP_CLIENT", "mini")
    if choice == "httpx":
        return HttpxClient(max_response_bytes)
    if choice == "aiohttp":
        return AiohttpClient(max_response_bytes)
    return MiniHTTPClient(max_response_bytes)
