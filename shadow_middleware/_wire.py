"""What leaves the process: the one module a security reviewer reads.

Everything that decides what a shadow request looks like on the wire lives here:

* which request headers are never forwarded (:data:`NEVER_FORWARD`, the ``Connection``
  tokens a request names, and the configured ``drop_headers`` -- credentials by default);
* the marker header that tells a candidate "this is a shadow request" and stops a
  marked request from being shadowed again (:data:`MARKER`);
* where a copy goes: :func:`shadow_url` builds it from the *validated* target's parts
  (scheme, host, port, base path) plus the percent-encoded request path and query --
  nothing in a request can choose the host or the port, and no URL string is re-parsed;
* the sampling hash (:func:`sample_point`), so that a sample key gives the same decision
  in every process.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import quote

if TYPE_CHECKING:
    from ._config import ShadowTarget

__all__ = [
    "MARKER",
    "NEVER_FORWARD",
    "ShadowURL",
    "forwarded_headers",
    "outgoing_headers",
    "quote_path",
    "sample_point",
    "shadow_url",
]

#: The header every shadow request carries (its value: the target's name). A request that
#: arrives with it is never shadowed: a candidate that shadows too cannot loop.
MARKER = "x-shadow-request"

#: Never forwarded: hop-by-hop (RFC 9110 §7.6.1), the framing the client recomputes, and the
#: trace headers that are replaced by the shadow span's own.
NEVER_FORWARD = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
        "expect",
        MARKER,
        "traceparent",
        "tracestate",
    }
)


def forwarded_headers(headers: Iterable[tuple[str, str]], drop: frozenset[str]) -> list[tuple[str, str]]:
    """The request's headers that may go to a candidate.

    ``headers`` are ``(lower-case name, value)`` pairs; ``drop`` the configured
    never-forward names (credentials unless opted in). Also dropped: :data:`NEVER_FORWARD`
    and every header the request's own ``Connection`` header names as hop-by-hop.
    """
    pairs = list(headers)
    connection_tokens: set[str] = set()
    for name, value in pairs:
        if name == "connection":
            connection_tokens.update(t.strip().lower() for t in value.split(","))
    return [
        (name, value)
        for name, value in pairs
        if name not in NEVER_FORWARD and name not in drop and name not in connection_tokens
    ]


def outgoing_headers(
    forwarded: Iterable[tuple[str, str]],
    target: ShadowTarget,
    target_names: frozenset[str],
    propagation: Mapping[str, str],
) -> list[tuple[str, str]]:
    """The final header list of one shadow request.

    The target's own ``headers`` replace forwarded ones of the same (case-insensitive)
    name ``target_names``; then the marker; then the shadow span's ``traceparent``.
    """
    out = [(k, v) for k, v in forwarded if k not in target_names and k not in propagation]
    out.extend(target.headers.items())
    out.append((MARKER, target.name))
    out.extend(propagation.items())
    return out


def quote_path(path: str) -> str:
    """Percent-encode a decoded path for the wire, leaving reserved characters alone."""
    return quote(path, safe="/:@!$&'()*+,;=-._~%")


@dataclass(frozen=True, slots=True)
class ShadowURL:
    """Where one shadow request goes, as separate, already validated parts."""

    scheme: str  # "http" or "https"
    host: str  # from the target's configuration, never from a request
    port: int
    host_header: str  # the Host header value for that origin
    target: str  # the request-target: an origin-form path and query

    @property
    def full(self) -> str:
        """The URL as text, for the span's ``url.full`` (never parsed again)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}{self.target}"


def shadow_url(target: ShadowTarget, path: str, query: str) -> ShadowURL:
    """The destination of a copy of a request with ``path`` and ``query`` to ``target``.

    ``path`` is the request's percent-encoded path. With ``url=`` the target's exact
    path is used; with ``base_url=`` the request's path is appended to the base path.
    The request's query string is appended either way. Host and port always come from
    the target's validated configuration.
    """
    full = target.path if target.url is not None else target.path + path
    if query:
        full = f"{full}?{query}"
    return ShadowURL(target.scheme, target.host, target.port, host_header(target), full)


def host_header(target: ShadowTarget) -> str:
    """The ``Host`` header for ``target``: the port only when it is not the scheme's default."""
    host = f"[{target.host}]" if ":" in target.host else target.host
    default = 443 if target.scheme == "https" else 80
    return host if target.port == default else f"{host}:{target.port}"


_FNV_OFFSET = 0xCBF29CE484222325
_FNV_PRIME = 0x100000001B3
_MASK64 = 0xFFFFFFFFFFFFFFFF


def sample_point(key: str) -> float:
    """Map a key to [0, 1): 64-bit FNV-1a (GoReplay's limiter hash), then murmur3's
    64-bit finalizer so that keys differing only in their last characters (``cust-1``,
    ``cust-2``) spread over the whole range.

    Deterministic across processes and restarts (unlike ``hash()``), so the same
    customer stays in or out of the sample everywhere; raising a rate only adds keys.
    """
    h = _FNV_OFFSET
    for byte in key.encode("utf-8", "surrogatepass"):
        h = ((h ^ byte) * _FNV_PRIME) & _MASK64
    h ^= h >> 33
    h = (h * 0xFF51AFD7ED558CCD) & _MASK64
    h ^= h >> 33
    h = (h * 0xC4CEB9FE1A85EC53) & _MASK64
    h ^= h >> 33
    return h / 18446744073709551616.0
