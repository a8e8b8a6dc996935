"""Configuration objects: validated once, at construction, and immutable afterwards.

Every error is a ``ValueError`` whose message starts with the field it is about, so
a bad value in a config file or a constructor call points straight at its source.
Reading them from a TOML file and the environment is :mod:`._configfile`'s job;
``ShadowConfig.from_toml`` / ``ShadowConfig.from_env`` are its entry points.
"""

from __future__ import annotations

import functools
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from ._configfile import ConfigLoader

__all__ = ["Compare", "ShadowConfig", "ShadowTarget"]

_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_PARAM = re.compile(r"^\{[A-Za-z_][A-Za-z0-9_]*\}$")

DEFAULT_DROP_HEADERS = ("authorization", "cookie", "proxy-authorization", "x-api-key")


def _fail(name: str, message: str) -> ValueError:
    return ValueError(f"{name}: {message}")


def _number(name: str, value: Any, *, minimum: float, inclusive: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _fail(name, f"must be a number, got {value!r}")
    if math.isnan(value) or math.isinf(value):
        raise _fail(name, f"must be finite, got {value!r}")
    if value < minimum or (not inclusive and value == minimum):
        op = ">=" if inclusive else ">"
        raise _fail(name, f"must be {op} {minimum}, got {value!r}")
    return float(value)


def _integer(name: str, value: Any, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(name, f"must be an integer, got {value!r}")
    if value < minimum:
        raise _fail(name, f"must be >= {minimum}, got {value!r}")
    return value


def _strings(name: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise _fail(name, f"must be a list of strings, got {value!r}")
    items = tuple(value)
    for item in items:
        if not isinstance(item, str):
            raise _fail(name, f"must be a list of strings, got item {item!r}")
    return items


def parse_pointer(name: str, pointer: Any) -> tuple[str, ...]:
    """Split an RFC 6901 JSON pointer into unescaped reference tokens."""
    if not isinstance(pointer, str):
        raise _fail(name, f"JSON pointer must be a string, got {pointer!r}")
    if pointer == "":
        return ()
    if not pointer.startswith("/"):
        raise _fail(name, f"JSON pointer must be empty or start with '/', got {pointer!r}")
    if re.search(r"~[^01]|~$", pointer):
        raise _fail(name, f"JSON pointer has an invalid '~' escape: {pointer!r}")
    return tuple(t.replace("~1", "/").replace("~0", "~") for t in pointer[1:].split("/"))


@dataclass(frozen=True, slots=True)
class Source:
    """Where a per-request value (sample key, correlation id) is read from."""

    kind: str  # "header" or "json"
    name: str  # lower-cased header name, or the pointer text
    tokens: tuple[str, ...] = ()


def _source(name: str, spec: Any) -> Source | None:
    if spec is None:
        return None
    if not isinstance(spec, str) or ":" not in spec:
        raise _fail(name, f"must be 'header:<name>' or 'json:<JSON pointer>', got {spec!r}")
    kind, _, rest = spec.partition(":")
    if kind == "header":
        if not _TOKEN.match(rest):
            raise _fail(name, f"invalid header name {rest!r}")
        return Source("header", rest.lower())
    if kind == "json":
        return Source("json", rest, parse_pointer(name, rest))
    raise _fail(name, f"must start with 'header:' or 'json:', got {spec!r}")


@dataclass(frozen=True, slots=True)
class Route:
    """A compiled ``"METHOD /path"`` pattern."""

    pattern: str
    method: str  # upper case, or "*"
    segments: tuple[str | None, ...]  # None matches any one segment


def _route(index: int, spec: Any) -> Route:
    name = f"ShadowConfig.routes[{index}]"
    if not isinstance(spec, str):
        raise _fail(name, f"must be a string like 'POST /predict', got {spec!r}")
    parts = spec.split()
    if len(parts) != 2:
        raise _fail(name, f"must be 'METHOD /path', got {spec!r}")
    method, path = parts
    if method != "*" and not _TOKEN.match(method):
        raise _fail(name, f"invalid method {method!r}")
    if not path.startswith("/"):
        raise _fail(name, f"path must start with '/', got {path!r}")
    segments: list[str | None] = []
    for seg in path[1:].split("/"):
        if _PARAM.match(seg):
            segments.append(None)
        elif "{" in seg or "}" in seg:
            raise _fail(name, f"a parameter must be a whole segment like '{{name}}', got {seg!r}")
        else:
            segments.append(seg)
    method = method.upper()
    return Route(f"{method} {path}", method, tuple(segments))


@dataclass(frozen=True, slots=True, init=False)
class Compare:
    """How a candidate's response is compared with the primary's.

    Parameters:
        fields: RFC 6901 JSON pointers compared on both bodies, or a mapping
            ``{primary_pointer: candidate_pointer}`` when the schemas differ. Empty
            compares the whole JSON body, minus ``ignore``.
        ignore: pointers left out of a whole-body comparison (ids, timestamps).
        abs_tol: absolute tolerance for numbers (``math.isclose``).
        rel_tol: relative tolerance for numbers (``math.isclose``).
        threshold: when set, numbers are compared as decisions ``value >= threshold``,
            so only decision flips count as differences.
        record_values: record the compared scalar ``fields`` on the span as
            ``shadow.primary.body.<p>`` / ``shadow.candidate.body.<p>``.
    """

    fields: tuple[tuple[str, str], ...]
    ignore: tuple[str, ...]
    abs_tol: float
    rel_tol: float
    threshold: float | None
    record_values: bool
    # Parsed forms, derived from the public fields above.
    field_tokens: tuple[tuple[tuple[str, ...], tuple[str, ...], str], ...]
    ignore_tokens: frozenset[tuple[str, ...]]

    def __init__(
        self,
        fields: Sequence[str] | Mapping[str, str] = (),
        ignore: Sequence[str] = (),
        abs_tol: float = 0.0,
        rel_tol: float = 0.0,
        threshold: float | None = None,
        record_values: bool = True,
    ) -> None:
        if isinstance(fields, Mapping):
            pairs = tuple(fields.items())
        else:
            pairs = tuple((p, p) for p in _strings("Compare.fields", fields))
        parsed = []
        for primary, candidate in pairs:
            p_tokens = parse_pointer("Compare.fields", primary)
            c_tokens = parse_pointer("Compare.fields", candidate)
            # The attribute suffix comes from the primary pointer so that both sides of
            # a renamed field land under the same name for dashboards and reports.
            suffix = ".".join(p_tokens) if p_tokens else "body"
            parsed.append((p_tokens, c_tokens, suffix))
        ignore_items = _strings("Compare.ignore", ignore)
        ignore_tokens = frozenset(parse_pointer("Compare.ignore", p) for p in ignore_items)
        if threshold is not None:
            threshold = _number("Compare.threshold", threshold, minimum=-math.inf)
        if not isinstance(record_values, bool):
            raise _fail("Compare.record_values", f"must be a bool, got {record_values!r}")
        set_ = object.__setattr__
        set_(self, "fields", pairs)
        set_(self, "ignore", ignore_items)
        set_(self, "abs_tol", _number("Compare.abs_tol", abs_tol, minimum=0.0))
        set_(self, "rel_tol", _number("Compare.rel_tol", rel_tol, minimum=0.0))
        set_(self, "threshold", threshold)
        set_(self, "record_values", record_values)
        set_(self, "field_tokens", tuple(parsed))
        set_(self, "ignore_tokens", ignore_tokens)


@dataclass(frozen=True, slots=True, init=False)
class ShadowTarget:
    """One candidate endpoint that receives a copy of the traffic.

    Parameters:
        name: a short, unique name; it appears on spans, metrics and in the
            ``x-shadow-request`` header the candidate receives.
        url: the exact URL shadow requests go to; the incoming query string is appended.
        base_url: alternatively, a base URL to which the incoming path and query are
            appended. Give exactly one of ``url`` and ``base_url``; http or https only.
        sample_rate: the fraction of eligible requests copied to this target, in [0, 1].
        timeout: seconds (> 0) bounding the whole shadow exchange: connect, send, read.
        max_concurrency: in-flight shadow requests to this target (>= 1); more wait in
            the shared queue.
        headers: extra headers added to every shadow request (the candidate's own
            credentials, for example). They are sent but never recorded.
    """

    name: str
    url: str | None
    base_url: str | None
    sample_rate: float
    timeout: float
    max_concurrency: int
    headers: Mapping[str, str]
    # Parsed: scheme, host, port, and the path prefix / exact path.
    scheme: str
    host: str
    port: int
    path: str

    def __init__(
        self,
        name: str,
        url: str | None = None,
        base_url: str | None = None,
        sample_rate: float = 1.0,
        timeout: float = 5.0,
        max_concurrency: int = 32,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        if not isinstance(name, str) or not name.strip():
            raise _fail("ShadowTarget.name", f"must be a non-empty string, got {name!r}")
        if not _TOKEN.match(name):
            raise _fail("ShadowTarget.name", f"must be a token (letters, digits, -._~), got {name!r}")
        if (url is None) == (base_url is None):
            raise _fail("ShadowTarget.url", f"give exactly one of url and base_url (target {name!r})")
        which = "ShadowTarget.url" if url is not None else "ShadowTarget.base_url"
        raw = url if url is not None else base_url
        if not isinstance(raw, str):
            raise _fail(which, f"must be a string, got {raw!r}")
        try:
            parts = urlsplit(raw)
            port = parts.port
        except ValueError as exc:
            raise _fail(which, f"invalid URL {raw!r}: {exc}") from None
        if parts.scheme not in ("http", "https"):
            raise _fail(which, f"must be an http or https URL, got {raw!r}")
        if not parts.hostname:
            raise _fail(which, f"has no host: {raw!r}")
        if parts.username or parts.password:
            raise _fail(which, "must not carry credentials; use ShadowTarget.headers")
        if parts.fragment:
            raise _fail(which, f"must not have a fragment: {raw!r}")
        if url is not None and parts.query:
            raise _fail(which, "must not have a query string; the incoming one is appended")
        if base_url is not None and parts.query:
            raise _fail(which, "must not have a query string")
        hdrs = dict(headers or {})
        for key, value in hdrs.items():
            if not isinstance(key, str) or not _TOKEN.match(key):
                raise _fail("ShadowTarget.headers", f"invalid header name {key!r}")
            if not isinstance(value, str) or "\r" in value or "\n" in value:
                raise _fail("ShadowTarget.headers", f"invalid value for header {key!r}")
        set_ = object.__setattr__
        set_(self, "name", name)
        set_(self, "url", url)
        set_(self, "base_url", base_url)
        rate = _number("ShadowTarget.sample_rate", sample_rate, minimum=0.0)
        if rate > 1.0:
            raise _fail("ShadowTarget.sample_rate", f"must be in [0, 1], got {sample_rate!r}")
        set_(self, "sample_rate", rate)
        set_(self, "timeout", _number("ShadowTarget.timeout", timeout, minimum=0.0, inclusive=False))
        set_(self, "max_concurrency", _integer("ShadowTarget.max_concurrency", max_concurrency, minimum=1))
        set_(self, "headers", hdrs)
        set_(self, "scheme", parts.scheme)
        set_(self, "host", parts.hostname)
        set_(self, "port", port or (443 if parts.scheme == "https" else 80))
        path = parts.path or "/"
        if base_url is not None:
            path = path.rstrip("/")
        set_(self, "path", path)

    def origin(self) -> str:
        """``scheme://host[:port]`` of this target."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"

    def url_for(self, path: str, query: str) -> str:
        """The shadow URL for an incoming request's (already encoded) path and query."""
        full = self.path if self.url is not None else self.path + path
        if query:
            full = f"{full}?{query}"
        return self.origin() + full

    def __repr__(self) -> str:
        # Header values may be secrets: never show them.
        where = f"url={self.url!r}" if self.url is not None else f"base_url={self.base_url!r}"
        return (
            f"ShadowTarget(name={self.name!r}, {where}, sample_rate={self.sample_rate}, "
            f"timeout={self.timeout}, max_concurrency={self.max_concurrency}, "
            f"headers={{{', '.join(repr(k) + ': ***' for k in self.headers)}}})"
        )


@dataclass(frozen=True, slots=True, init=False)
class ShadowConfig:
    """Everything the shadow engine needs; validated once, immutable afterwards.

    Parameters:
        targets: one or more :class:`ShadowTarget` with unique names.
        routes: ``"METHOD /path"`` patterns that are shadowed; a path segment may be
            ``{name}`` and the method may be ``*``.
        compare: a :class:`Compare` describing what "the same answer" means.
        max_body_bytes: a request body larger than this is not shadowed (``skipped``);
            the app still receives every byte.
        max_response_bytes: at most this many bytes of each response (primary and
            candidate, after decompression) are kept for comparison.
        max_queue: shadow jobs that may wait for a free concurrency slot; beyond it
            new jobs are ``dropped``.
        drop_headers: header names (case-insensitive) never forwarded to a shadow.
        sample_key: ``"header:<name>"`` or ``"json:<pointer>"``: requests with the
            same key value always get the same sampling decision.
        correlation_id: ``"header:<name>"`` or ``"json:<pointer>"`` (in the request
            body): recorded as ``shadow.correlation_id`` to join ground truth later.
        enabled: ``False`` makes the middleware a pure pass-through.
        primary_timeout: seconds a finished shadow call waits for the primary
            response to complete before it gives up (``skipped``).
        drain_timeout: seconds :meth:`Shadow.close` waits for in-flight shadows at
            shutdown before cancelling them (counted as ``dropped``).
        circuit_failures: after this many consecutive failures (no answer, timeout or
            5xx) a target is paused: its jobs are ``dropped`` (``circuit_open``) without
            being attempted. ``0`` disables the breaker.
        circuit_cooldown: seconds a paused target rests before one probe request is let
            through; a failed probe doubles the pause (at most 60 s), a success closes it.
        span_placement: ``"child"`` (default): the shadow span is a child of the primary
            request's span. ``"link"``: it starts its own trace with a span link to the
            request, leaving the primary's traces untouched.
    """

    targets: tuple[ShadowTarget, ...]
    routes: tuple[str, ...]
    compare: Compare
    max_body_bytes: int
    max_response_bytes: int
    max_queue: int
    drop_headers: frozenset[str]
    sample_key: str | None
    correlation_id: str | None
    enabled: bool
    primary_timeout: float
    drain_timeout: float
    circuit_failures: int
    circuit_cooldown: float
    span_placement: str
    compiled_routes: tuple[Route, ...]
    sample_source: Source | None
    correlation_source: Source | None

    def __init__(
        self,
        targets: Sequence[ShadowTarget],
        routes: Sequence[str] = ("POST /predict",),
        compare: Compare | None = None,
        max_body_bytes: int = 1_048_576,
        max_response_bytes: int = 1_048_576,
        max_queue: int = 1000,
        drop_headers: Iterable[str] = DEFAULT_DROP_HEADERS,
        sample_key: str | None = None,
        correlation_id: str | None = None,
        enabled: bool = True,
        primary_timeout: float = 60.0,
        drain_timeout: float = 5.0,
        circuit_failures: int = 5,
        circuit_cooldown: float = 5.0,
        span_placement: str = "child",
    ) -> None:
        if isinstance(targets, ShadowTarget | str | bytes) or not isinstance(targets, Iterable):
            raise _fail("ShadowConfig.targets", "must be a list of ShadowTarget")
        target_tuple = tuple(targets)
        if not target_tuple:
            raise _fail("ShadowConfig.targets", "needs at least one ShadowTarget")
        seen: set[str] = set()
        for t in target_tuple:
            if not isinstance(t, ShadowTarget):
                raise _fail("ShadowConfig.targets", f"items must be ShadowTarget, got {t!r}")
            if t.name in seen:
                raise _fail("ShadowConfig.targets", f"duplicate target name {t.name!r}")
            seen.add(t.name)
        route_specs = _strings("ShadowConfig.routes", routes)
        compiled = tuple(_route(i, r) for i, r in enumerate(route_specs))
        if compare is None:
            compare = Compare()
        if not isinstance(compare, Compare):
            raise _fail("ShadowConfig.compare", f"must be a Compare, got {compare!r}")
        drop = _strings("ShadowConfig.drop_headers", drop_headers)
        if not isinstance(enabled, bool):
            raise _fail("ShadowConfig.enabled", f"must be a bool, got {enabled!r}")
        set_ = object.__setattr__
        set_(self, "targets", target_tuple)
        set_(self, "routes", tuple(r.pattern for r in compiled))
        set_(self, "compare", compare)
        set_(self, "max_body_bytes", _integer("ShadowConfig.max_body_bytes", max_body_bytes, minimum=0))
        set_(
            self,
            "max_response_bytes",
            _integer("ShadowConfig.max_response_bytes", max_response_bytes, minimum=1),
        )
        set_(self, "max_queue", _integer("ShadowConfig.max_queue", max_queue, minimum=0))
        set_(self, "drop_headers", frozenset(h.lower() for h in drop))
        set_(self, "sample_key", sample_key)
        set_(self, "correlation_id", correlation_id)
        set_(self, "enabled", enabled)
        set_(
            self,
            "primary_timeout",
            _number("ShadowConfig.primary_timeout", primary_timeout, minimum=0.0, inclusive=False),
        )
        set_(
            self,
            "drain_timeout",
            _number("ShadowConfig.drain_timeout", drain_timeout, minimum=0.0),
        )
        set_(
            self,
            "circuit_failures",
            _integer("ShadowConfig.circuit_failures", circuit_failures, minimum=0),
        )
        set_(
            self,
            "circuit_cooldown",
            _number("ShadowConfig.circuit_cooldown", circuit_cooldown, minimum=0.0, inclusive=False),
        )
        if span_placement not in ("child", "link"):
            raise _fail("ShadowConfig.span_placement", f"must be 'child' or 'link', got {span_placement!r}")
        set_(self, "span_placement", span_placement)
        set_(self, "compiled_routes", compiled)
        set_(self, "sample_source", _source("ShadowConfig.sample_key", sample_key))
        set_(self, "correlation_source", _source("ShadowConfig.correlation_id", correlation_id))

    @classmethod
    def from_toml(cls, path: str | os.PathLike[str]) -> ShadowConfig:
        """Load a TOML file whose keys mirror the constructor keywords one to one.

        Parameters:
            path: the TOML file. Top-level keys are ``ShadowConfig``'s, ``[compare]``
                holds ``Compare``'s and each ``[[targets]]`` table a ``ShadowTarget``'s
                (with ``[targets.headers]``).

        Unknown keys and bad values raise ``ValueError`` naming the file and the key.
        """
        return _loader().load_toml(path)

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, *, base: Mapping[str, Any] | None = None
    ) -> ShadowConfig:
        """Build from ``SHADOW_*`` environment variables, on top of the file named by
        ``SHADOW_CONFIG`` when set (environment values win), on top of ``base``.

        Parameters:
            environ: the environment variables (``os.environ`` when ``None``).
            base: in-code defaults in the file's layout (``{"routes": [...], "targets":
                [{"name": ..., "url": ...}]}``); the file's top-level keys replace these,
                its ``[compare]`` keys one by one.

        See the README's "Configuration" section for the variable names. Bad values raise
        ``ValueError`` naming the variable, the file or ``base`` they come from.
        """
        return _loader().from_env(os.environ if environ is None else environ, base=base)


@functools.cache
def _loader() -> ConfigLoader[ShadowConfig]:
    """The file and environment reader for these classes (built on first use: it reads
    their constructors' signatures)."""
    return ConfigLoader(ShadowConfig, ShadowTarget, Compare)


def describe(config: ShadowConfig) -> str:
    """``config`` as TOML in the file's layout, every key included, header values masked
    (for ``python -m shadow_middleware check-config``)."""
    return _loader().describe(config)


class RouteTable:
    """Matches ``(method, path)`` against the configured routes; static paths by dict."""

    __slots__ = ("_dynamic", "_static")

    def __init__(self, routes: Iterable[Route]) -> None:
        self._static: dict[str, list[Route]] = {}
        self._dynamic: list[Route] = []
        for route in routes:
            if None in route.segments:
                self._dynamic.append(route)
            else:
                key = "/" + "/".join(s for s in route.segments if s is not None)
                self._static.setdefault(key, []).append(route)

    def match(self, method: str, path: str) -> str | None:
        """The pattern of the first route matching, or None."""
        candidates = self._static.get(path)
        if candidates:
            for route in candidates:
                if route.method == method or route.method == "*":
                    return route.pattern
        if self._dynamic:
            segments = path[1:].split("/")
            for route in self._dynamic:
                if route.method != method and route.method != "*":
                    continue
                if len(route.segments) != len(segments):
                    continue
                if _segments_match(route.segments, segments):
                    return route.pattern
        return None


def _segments_match(pattern: tuple[str | None, ...], segments: list[str]) -> bool:
    for want, got in zip(pattern, segments, strict=True):
        if want is None:
            if not got:  # a parameter matches one non-empty segment
                return False
        elif want != got:
            return False
    return True
