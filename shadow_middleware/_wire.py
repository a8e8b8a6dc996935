"""What leaves the process: the one module a security reviewer reads.

Everything that decides what a shadow request looks like on the wire lives here:

* which request headers are never forwarded (:data:`NEVER_FORWARD`, the ``Connection``
  tokens a request names, the configured ``drop_headers``, and every name the credential
  rule :data:`CREDENTIAL_NAME_PARTS` matches, unless it is opted in by ``forward_headers``);
* the marker header that tells a candidate "this is a shadow request" and stops a
  marked request from being shadowed again (:data:`MARKER`);
* where a copy goes: :func:`shadow_url` builds it from the *validated* target's parts
  (scheme, host, port, base path) plus the percent-encoded request path and query --
  nothing in a request can choose the host or the port, and no URL string is re-parsed;
* what a request line may hold (:func:`valid_method`, :func:`valid_origin_form`): a request
  whose method is not a token or whose target is not origin-form is never shadowed; one whose
  path could leave the target's base path (:func:`unsafe_path`) is ``skipped``;
* what a span records of the URL (:attr:`ShadowURL.full`): query values redacted;
* which headers a target's own ``headers`` may not set (:data:`TARGET_HEADERS_FORBIDDEN`,
  :func:`target_header_problem`): nothing configured can change the framing, nor send a
  header twice beside the ones we write (the marker, the trace context);
* the TLS files of a target (:class:`TLSFiles`): its CA bundle and client certificate.

And the sampling hash (:func:`sample_point`), so that a sample key gives the same decision
in every process.
"""

from __future__ import annotations

import os
import re
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import quote, unquote

__all__ = [
    "CREDENTIAL_NAME_PARTS",
    "MARKER",
    "NEVER_FORWARD",
    "REDACTED",
    "TARGET_HEADERS_FORBIDDEN",
    "Destination",
    "HeaderFilter",
    "ShadowURL",
    "TLSFiles",
    "credential_name",
    "forwarded_headers",
    "outgoing_headers",
    "quote_path",
    "sample_point",
    "shadow_url",
    "target_header_problem",
    "unsafe_path",
    "valid_method",
    "valid_origin_form",
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


#: Names a target's configured ``headers`` may not set (``Proxy-*`` too): hop-by-hop and
#: framing headers the client computes itself (sent beside the computed framing they would
#: be a request-smuggling surface), the marker, and the trace context the shadow span
#: propagates (W3C ``traceparent`` / ``tracestate`` / ``baggage``, OpenTelemetry's default
#: propagators): each would otherwise be sent twice.
TARGET_HEADERS_FORBIDDEN = frozenset(
    {
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "te",
        "trailer",
        "upgrade",
        "expect",
        MARKER,
        "traceparent",
        "tracestate",
        "baggage",
    }
)

#: The credential rule: a request header whose (lower-case) name contains one of these is
#: never forwarded to a candidate unless ``forward_headers`` names it. Tokens, keys, secrets,
#: sessions, CSRF tokens, signatures, passwords: ``Authorization``, ``Cookie``,
#: ``X-Auth-Token``, ``X-Amz-Security-Token``, ``X-CSRF-Token``, ``X-XSRF-Token``,
#: ``X-Session-Id``, ``X-Hub-Signature-256``, ``X-Api-Key``, ``Ocp-Apim-Subscription-Key``,
#: ``DPoP``, ``X-JWT-Assertion``... Broad on purpose: a header wrongly withheld costs a
#: candidate an input (visible, fixed by one opt-in); one wrongly forwarded leaks a secret.
CREDENTIAL_NAME_PARTS = (
    "auth",
    "cookie",
    "credential",
    "csrf",
    "xsrf",
    "dpop",
    "jwt",
    "key",
    "passw",
    "secret",
    "session",
    "signature",
    "token",
)
_CREDENTIAL = re.compile("|".join(re.escape(p) for p in CREDENTIAL_NAME_PARTS))

#: What a span records instead of a query value (OpenTelemetry's ``url.full`` convention).
REDACTED = "REDACTED"

# RFC 9110 §5.6.2: token = 1*tchar
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# A field value: Latin-1 without control characters (HTAB allowed), RFC 9110 §5.5.
_FIELD_VALUE = re.compile(r"[\t\x20-\x7e\x80-\xff]*")
# origin-form (RFC 9112 §3.2.1) as it reaches us: "/" then no space, no control
# character, nothing outside Latin-1 (raw bytes are decoded as Latin-1 by the servers).
_PATH = re.compile(r"/[\x21-\x7e\x80-\xff]*")
_QUERY = re.compile(r"[\x21-\x7e\x80-\xff]*")


def valid_method(method: str) -> bool:
    """A method is an RFC 9110 token."""
    return _TOKEN.fullmatch(method) is not None


def valid_origin_form(path: str, query: str = "") -> bool:
    """``path`` (and ``query``) form a valid origin-form request-target: the path starts
    with ``/``; neither holds a space, a control character or anything outside Latin-1."""
    return _PATH.fullmatch(path) is not None and (not query or _QUERY.fullmatch(query) is not None)


def unsafe_path(path: str, query: str = "") -> bool:
    """Whether a request's path could take a copy outside the target's base path, or
    mean something else to the candidate than to the app: it is then not shadowed
    (``skipped``, ``unsafe_path``).

    Unsafe: a ``#`` in the path or the query (a fragment never belongs in a request-target),
    a raw ``\\``, and a dot segment (``.`` or ``..``, also before a ``;`` parameter as
    ``..;``) once the path is percent-decoded -- repeatedly, for servers that decode twice
    -- with ``/`` and ``\\`` both taken as separators: ``/a/%2e%2e``, ``/a/..%2f..%2fx``,
    ``/a/%252e%252e/x``. Encoded slashes without dots only add segments below the base.
    """
    if "#" in path or "#" in query or "\\" in path:
        return True
    if "." not in path and "%" not in path:
        return False  # the common case: nothing to decode, no dot
    decoded = path
    for _ in range(_DECODE_ROUNDS):
        for segment in decoded.replace("\\", "/").split("/"):
            if segment.partition(";")[0] in (".", ".."):
                return True
        again = unquote(decoded, errors="replace")
        if again == decoded:
            return False
        decoded = again
    return True  # still encoded after that many rounds: no honest path is


# Percent-decoding rounds looked through by unsafe_path (``%25`` nests one more).
_DECODE_ROUNDS = 4


def credential_name(name: str) -> bool:
    """Whether the credential rule (:data:`CREDENTIAL_NAME_PARTS`) matches a lower-case
    header name."""
    return _CREDENTIAL.search(name) is not None


@dataclass(frozen=True, slots=True)
class HeaderFilter:
    """Which request headers are withheld from a candidate as credentials.

    ``drop``: names withheld (``drop_headers``); ``forward``: names forwarded although
    ``drop`` or the rule withholds them (``forward_headers``: the opt-in wins); ``rule``:
    whether the credential rule applies at all (off only with an empty ``drop_headers``,
    the old opt-in to forwarding every header). :data:`NEVER_FORWARD` is not a credential matter and is
    dropped whatever this says.
    """

    drop: frozenset[str]
    forward: frozenset[str] = frozenset()
    rule: bool = True

    @classmethod
    def of(cls, drop_headers: frozenset[str], forward_headers: frozenset[str]) -> HeaderFilter:
        """The filter of a configuration's ``drop_headers`` and ``forward_headers``."""
        return cls(drop_headers, forward_headers, bool(drop_headers))

    def withheld(self, name: str) -> bool:
        """Whether the lower-case header ``name`` is a credential not to forward."""
        if name in self.forward:
            return False
        if name in self.drop:
            return True
        if not self.rule:
            return False
        hit = _credential_seen.get(name)
        if hit is None:
            # The same few names arrive on every request: remember the answer (bounded, as
            # names are the client's to choose).
            if len(_credential_seen) >= _CREDENTIAL_SEEN_MAX:
                _credential_seen.clear()
            hit = _credential_seen[name] = _CREDENTIAL.search(name) is not None
        return hit


_CREDENTIAL_SEEN_MAX = 4096
_credential_seen: dict[str, bool] = {}


def target_header_problem(name: object, value: object) -> str | None:
    """Why a target's configured header may not be sent, or None when it may."""
    if not isinstance(name, str) or _TOKEN.fullmatch(name) is None:
        return f"invalid header name {name!r}"  # not an RFC 9110 token
    lower = name.lower()
    if lower in ("traceparent", "tracestate", "baggage"):
        return f"header {name!r} may not be set: the shadow span propagates its own trace context"
    if lower in TARGET_HEADERS_FORBIDDEN or lower.startswith("proxy-"):
        return f"header {name!r} may not be set: the client computes framing and hop-by-hop headers"
    if not isinstance(value, str):
        return f"value of header {name!r} must be a string"
    if _FIELD_VALUE.fullmatch(value) is None:
        return f"value of header {name!r} has CR, LF, NUL, another control character or non-Latin-1 text"
    return None


@dataclass(frozen=True, slots=True)
class TLSFiles:
    """A target's TLS files: a CA bundle (instead of the system's) and a client
    certificate with its key (mutual TLS). Paths; loaded by :meth:`context`."""

    ca_file: str | None = None
    client_cert: str | None = None
    client_key: str | None = None

    def context(self) -> ssl.SSLContext:
        """A verifying client ``SSLContext`` with these files loaded. ``ValueError`` naming
        the field (``ca_file``, ``client_cert``, ``client_key``) when one cannot be used."""
        for field in ("ca_file", "client_cert", "client_key"):
            path = getattr(self, field)
            if path is not None and (not isinstance(path, str) or not os.path.isfile(path)):
                raise ValueError(f"{field}: not a readable file: {path!r}")
        if self.client_key is not None and self.client_cert is None:
            raise ValueError("client_key: given without client_cert")
        try:
            ctx = ssl.create_default_context(cafile=self.ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"ca_file: cannot load CA certificates from {self.ca_file!r}: {exc}") from None
        if self.client_cert is not None:
            try:
                ctx.load_cert_chain(self.client_cert, self.client_key)
            except (OSError, ssl.SSLError) as exc:
                field = "client_cert"
                if self.client_key is not None:
                    try:  # the certificate alone loads: the key is what is wrong
                        ssl.create_default_context(cafile=self.client_cert)
                        field = "client_key"
                    except (OSError, ssl.SSLError):
                        pass
                raise ValueError(f"{field}: cannot load the client certificate and key: {exc}") from None
        return ctx


def forwarded_headers(headers: Iterable[tuple[str, str]], credentials: HeaderFilter) -> list[tuple[str, str]]:
    """The request's headers that may go to a candidate.

    ``headers`` are ``(lower-case name, value)`` pairs; ``credentials`` says which are
    credentials withheld (unless opted in). Also dropped: :data:`NEVER_FORWARD` and every
    header the request's own ``Connection`` header names as hop-by-hop.
    """
    pairs = list(headers)
    connection_tokens: set[str] = set()
    for name, value in pairs:
        if name == "connection":
            connection_tokens.update(t.strip().lower() for t in value.split(","))
    withheld = credentials.withheld
    return [
        (name, value)
        for name, value in pairs
        if name not in NEVER_FORWARD and name not in connection_tokens and not withheld(name)
    ]


class Destination(Protocol):
    """The validated parts of a target this module reads (``_config.ShadowTarget`` has them).

    A protocol, not an import: this module depends on nothing above it in the package, so a
    reviewer reads it alone, and ``_config`` may import from it without a circle.
    """

    @property
    def name(self) -> str: ...
    @property
    def url(self) -> str | None: ...
    @property
    def headers(self) -> Mapping[str, str]: ...
    @property
    def scheme(self) -> str: ...
    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def path(self) -> str: ...
    @property
    def tls(self) -> TLSFiles | None: ...


def outgoing_headers(
    forwarded: Iterable[tuple[str, str]],
    target: Destination,
    target_names: frozenset[str],
    propagation: Mapping[str, str],
) -> list[tuple[str, str]]:
    """The final header list of one shadow request.

    The target's own ``headers`` replace forwarded ones of the same (case-insensitive)
    name ``target_names``; then the marker; then the shadow span's ``traceparent``. A name
    the propagation writes is written once: by the propagation (a propagator other than
    W3C's may write names a target's headers were allowed to set).
    """
    out = [(k, v) for k, v in forwarded if k not in target_names and k not in propagation]
    out.extend((k, v) for k, v in target.headers.items() if k.lower() not in propagation)
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
    tls: TLSFiles | None = None  # the target's TLS files (https); None: the system's defaults

    @property
    def full(self) -> str:
        """The URL as text, for the span's ``url.full`` (never parsed again), every query
        value replaced by :data:`REDACTED`: a query carries tokens and keys as often as a
        header does (``?access_token=...``). Keys are kept; a part without ``=`` is
        replaced whole."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        path, mark, query = self.target.partition("?")
        if mark:
            path = f"{path}?{redact_query(query)}"
        return f"{self.scheme}://{host}:{self.port}{path}"


def redact_query(query: str) -> str:
    """``query`` with every value replaced by :data:`REDACTED` (``a=1&b`` ->
    ``a=REDACTED&REDACTED``); empty parts stay empty."""
    parts = []
    for part in query.split("&"):
        key, eq, _ = part.partition("=")
        parts.append(f"{key}={REDACTED}" if eq else (REDACTED if part else ""))
    return "&".join(parts)


def shadow_url(target: Destination, path: str, query: str) -> ShadowURL:
    """The destination of a copy of a request with ``path`` and ``query`` to ``target``.

    ``path`` is the request's percent-encoded path. With ``url=`` the target's exact
    path is used; with ``base_url=`` the request's path is appended to the base path.
    The request's query string is appended either way. Host and port always come from
    the target's validated configuration.
    """
    full = target.path if target.url is not None else target.path + path
    if query:
        full = f"{full}?{query}"
    return ShadowURL(target.scheme, target.host, target.port, host_header(target), full, target.tls)


def host_header(target: Destination) -> str:
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
