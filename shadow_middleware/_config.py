"""Configuration objects: validated once, at construction, and immutable afterwards.

Every error is a ``ValueError`` whose message starts with the field it is about, so
a bad value in a config file or a constructor call points straight at its source.
``ShadowConfig`` and ``Compare`` check every field before raising: their error lists
each bad field on a line of its own (a :class:`ConfigErrors`, first error first).
Reading them from a TOML file and the environment is :mod:`._configfile`'s job;
``ShadowConfig.from_toml`` / ``ShadowConfig.from_env`` are its entry points.
"""

from __future__ import annotations

import functools
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ParamSpec, TypeVar
from urllib.parse import urlsplit

from ._configfile import ConfigErrors, ConfigLoader
from ._wire import HeaderFilter, TLSFiles, target_header_problem

__all__ = ["Compare", "ShadowConfig", "ShadowTarget"]

_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")

DEFAULT_DROP_HEADERS = ("authorization", "cookie", "proxy-authorization", "x-api-key")


#: The default CPU budget, a fraction of one core: see the README ("CPU budget") for the measurement.
DEFAULT_CPU_BUDGET = 0.10


def _fail(name: str, message: str) -> ValueError:
    return ValueError(f"{name}: {message}")


_P = ParamSpec("_P")
_V = TypeVar("_V")


class _Checks:
    """Collects a constructor's field errors, so that one call reports every bad field."""

    __slots__ = ("errors",)

    def __init__(self) -> None:
        self.errors: list[str] = []

    def __call__(self, fn: Callable[_P, _V], /, *args: _P.args, **kwargs: _P.kwargs) -> _V | None:
        """``fn(*args, **kwargs)``, or None when it raises ``ValueError`` (recorded)."""
        try:
            return fn(*args, **kwargs)
        except ValueError as exc:
            self.errors.extend(exc.errors if isinstance(exc, ConfigErrors) else (str(exc),))
            return None

    def fail(self, name: str, message: str) -> None:
        """Record an error about the field ``name``."""
        self.errors.append(f"{name}: {message}")

    def raise_any(self) -> None:
        """Raise :class:`ConfigErrors` listing the recorded errors, if there are any."""
        if self.errors:
            raise ConfigErrors(self.errors)


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
    path: str
    regex: re.Pattern[str] | None  # None: a static path, matched by equality


#: What a route's path may hold, for error messages.
_ROUTE_SYNTAX = (
    "accepted: whole-segment parameters <name>, <int:name>, <path:name>, {name}, {name:int}, {name:path}"
)
_FLASK_PARAM = re.compile(r"<(?:([^<>:]*):)?([^<>:]*)>")
_STARLETTE_PARAM = re.compile(r"\{([^{}:]*)(?::([^{}:]*))?\}")
_PARAM_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Converter -> what it matches: one non-empty segment, one segment of ASCII digits, or one or
# more segments (slashes included) whose first is not empty.
_ONE, _INT, _PATH = "[^/]+", "[0-9]+", "[^/].*"
_FLASK_CONVERTERS = {"": _ONE, "string": _ONE, "int": _INT, "path": _PATH}
_STARLETTE_CONVERTERS = {"": _ONE, "str": _ONE, "int": _INT, "path": _PATH}


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
    if "?" in path or "#" in path:
        raise _fail(name, f"a route matches the path alone, without '?' or '#': got {path!r}")
    if "*" in path:
        raise _fail(
            name,
            f"'*' is not a wildcard here, got {path!r}: for the rest of a path write "
            f"'<path:name>' or '{{name:path}}' ({_ROUTE_SYNTAX})",
        )
    segments = path[1:].split("/")
    pieces: list[str] = []
    names: list[str] = []
    for i, seg in enumerate(segments):
        if not seg and i < len(segments) - 1:
            raise _fail(name, f"empty segment ('//') in {path!r} ({_ROUTE_SYNTAX})")
        param = _route_param(name, seg)
        if param is None:
            pieces.append(re.escape(seg))
            continue
        param_name, regex = param
        if param_name in names:
            raise _fail(name, f"parameter {param_name!r} appears twice in {path!r}")
        names.append(param_name)
        pieces.append(f"(?:{regex})")
    method = method.upper()
    compiled = re.compile("/" + "/".join(pieces), re.DOTALL) if names else None
    return Route(f"{method} {path}", method, path, compiled)


def _route_param(name: str, seg: str) -> tuple[str, str] | None:
    """``(parameter name, regex)`` of a parameter segment, None for a literal one."""
    if seg[:1] in ("<", "{"):
        flask = seg[0] == "<"
        m = (_FLASK_PARAM if flask else _STARLETTE_PARAM).fullmatch(seg)
        if m is None:
            raise _fail(name, f"malformed parameter {seg!r} ({_ROUTE_SYNTAX})")
        converter, param = (m[1] or "", m[2]) if flask else (m[2] or "", m[1])
        if not _PARAM_NAME.fullmatch(param):
            raise _fail(name, f"invalid parameter name {param!r} in {seg!r} ({_ROUTE_SYNTAX})")
        converters = _FLASK_CONVERTERS if flask else _STARLETTE_CONVERTERS
        if converter not in converters:
            raise _fail(name, f"unsupported converter {converter!r} in {seg!r} ({_ROUTE_SYNTAX})")
        return param, converters[converter]
    if any(c in seg for c in "<>{}"):
        raise _fail(name, f"a parameter must be a whole segment, got {seg!r} ({_ROUTE_SYNTAX})")
    if seg.startswith(":"):
        raise _fail(
            name, f"{seg!r} is not a parameter: write '<{seg[1:]}>' or '{{{seg[1:]}}}' ({_ROUTE_SYNTAX})"
        )
    return None


@dataclass(frozen=True, slots=True, init=False)
class Compare:
    """How a candidate's response is compared with the primary's.

    Parameters:
        fields: RFC 6901 JSON pointers compared on both bodies, or a mapping
            ``{primary_pointer: candidate_pointer}`` when the schemas differ. Empty
            compares the whole JSON body, minus ``ignore``.
        ignore: pointers left out of the comparison (ids, timestamps): anywhere in a
            whole-body comparison; with ``fields``, only below a compared field (primary
            pointer), so one elsewhere, which could never apply, is refused.
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
    # Parsed forms, derived from the public fields above (left out of repr and ==).
    field_tokens: tuple[tuple[tuple[str, ...], tuple[str, ...], str], ...] = field(repr=False, compare=False)
    ignore_tokens: frozenset[tuple[str, ...]] = field(repr=False, compare=False)

    def __init__(
        self,
        fields: Sequence[str] | Mapping[str, str] = (),
        ignore: Sequence[str] = (),
        abs_tol: float = 0.0,
        rel_tol: float = 0.0,
        threshold: float | None = None,
        record_values: bool = True,
    ) -> None:
        check = _Checks()
        parsed_fields = check(_compare_fields, fields)
        ignore_items = check(_strings, "Compare.ignore", ignore)
        ignore_tokens: tuple[tuple[str, ...], ...] = ()
        if ignore_items is not None:
            ignore_tokens = tuple(
                t for p in ignore_items if (t := check(parse_pointer, "Compare.ignore", p)) is not None
            )
        if (
            parsed_fields is not None
            and parsed_fields[1]
            and ignore_items
            and len(ignore_tokens) == len(ignore_items)
        ):
            # With fields, an ignore pointer only applies below a compared (primary) pointer.
            for pointer, tokens in zip(ignore_items, ignore_tokens, strict=True):
                if not any(len(tokens) > len(p) and tokens[: len(p)] == p for p, _, _ in parsed_fields[1]):
                    check.fail(
                        "Compare.ignore",
                        f"{pointer!r} only applies to a whole-body comparison or below one of "
                        "fields; remove it or remove fields",
                    )
        if threshold is not None:
            threshold = check(_number, "Compare.threshold", threshold, minimum=-math.inf)
        if not isinstance(record_values, bool):
            check.fail("Compare.record_values", f"must be a bool, got {record_values!r}")
        abs_tol_value = check(_number, "Compare.abs_tol", abs_tol, minimum=0.0)
        rel_tol_value = check(_number, "Compare.rel_tol", rel_tol, minimum=0.0)
        check.raise_any()
        pairs, field_tokens = parsed_fields or ((), ())
        set_ = object.__setattr__
        set_(self, "fields", pairs)
        set_(self, "ignore", ignore_items)
        set_(self, "abs_tol", abs_tol_value)
        set_(self, "rel_tol", rel_tol_value)
        set_(self, "threshold", threshold)
        set_(self, "record_values", record_values)
        set_(self, "field_tokens", field_tokens)
        set_(self, "ignore_tokens", frozenset(ignore_tokens))


def _compare_fields(
    fields: Any,
) -> tuple[tuple[tuple[str, str], ...], tuple[tuple[tuple[str, ...], tuple[str, ...], str], ...]]:
    """``Compare.fields`` as ``(primary, candidate)`` pointer pairs, and their parsed forms."""
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
    return pairs, tuple(parsed)


_TLS_FIELDS = ("ca_file", "client_cert", "client_key")
_USERINFO = re.compile(r"//[^/?#]*@")


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
            credentials, for example). They are sent but never recorded. Names must be
            RFC 9110 tokens and not framing or hop-by-hop headers (``Host``,
            ``Content-Length``, ``Transfer-Encoding``, ``Connection``, ``Proxy-*``, ...);
            values Latin-1 without control characters.
        ca_file: a PEM bundle of the CA certificates that verify this target's server
            certificate (an internal CA), instead of the system's (https only).
        client_cert: a PEM client certificate presented to this target (mutual TLS); it
            may hold the key too.
        client_key: the client certificate's PEM private key, when not in ``client_cert``.
    """

    name: str
    url: str | None
    base_url: str | None
    sample_rate: float
    timeout: float
    max_concurrency: int
    headers: Mapping[str, str]
    ca_file: str | None
    client_cert: str | None
    client_key: str | None
    # Parsed: scheme, host, port, the path prefix / exact path, the TLS files (or None).
    scheme: str
    host: str
    port: int
    path: str
    tls: TLSFiles | None

    def __init__(
        self,
        name: str,
        url: str | None = None,
        base_url: str | None = None,
        sample_rate: float = 1.0,
        timeout: float = 5.0,
        max_concurrency: int = 32,
        headers: Mapping[str, str] | None = None,
        ca_file: str | None = None,
        client_cert: str | None = None,
        client_key: str | None = None,
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
        # Errors are logged and shown by the stats endpoint: never echo credentials.
        shown = _USERINFO.sub("//***@", raw)
        try:
            parts = urlsplit(raw)
            port = parts.port
        except ValueError as exc:
            raise _fail(which, f"invalid URL {shown!r}: {exc}") from None
        if parts.scheme not in ("http", "https"):
            raise _fail(which, f"must be an http or https URL, got {shown!r}")
        if not parts.hostname:
            raise _fail(which, f"has no host: {shown!r}")
        if parts.username or parts.password:
            raise _fail(which, "must not carry credentials; use ShadowTarget.headers")
        if parts.fragment:
            raise _fail(which, f"must not have a fragment: {shown!r}")
        if url is not None and parts.query:
            raise _fail(which, "must not have a query string; the incoming one is appended")
        if base_url is not None and parts.query:
            raise _fail(which, "must not have a query string")
        hdrs = dict(headers or {})
        for key, value in hdrs.items():
            problem = target_header_problem(key, value)
            if problem is not None:
                raise _fail("ShadowTarget.headers", problem)
        tls: TLSFiles | None = None
        if ca_file is not None or client_cert is not None or client_key is not None:
            if parts.scheme != "https":
                field = "ca_file" if ca_file is not None else "client_cert" if client_cert else "client_key"
                raise _fail(f"ShadowTarget.{field}", f"TLS files need an https URL, got {shown!r}")
            tls = TLSFiles(ca_file, client_cert, client_key)
            try:
                tls.context()  # the files exist and load; the client builds its own once
            except ValueError as exc:
                raise ValueError(f"ShadowTarget.{exc}") from None  # "ShadowTarget.ca_file: ..."
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
        set_(self, "ca_file", ca_file)
        set_(self, "client_cert", client_cert)
        set_(self, "client_key", client_key)
        set_(self, "tls", tls)
        set_(self, "scheme", parts.scheme)
        set_(self, "host", parts.hostname)
        set_(self, "port", port or (443 if parts.scheme == "https" else 80))
        path = parts.path or "/"
        if base_url is not None:
            path = path.rstrip("/")
        set_(self, "path", path)

    def __repr__(self) -> str:
        # Header values may be secrets: never show them.
        where = f"url={self.url!r}" if self.url is not None else f"base_url={self.base_url!r}"
        return (
            f"ShadowTarget(name={self.name!r}, {where}, sample_rate={self.sample_rate}, "
            f"timeout={self.timeout}, max_concurrency={self.max_concurrency}, "
            f"headers={{{', '.join(repr(k) + ': ***' for k in self.headers)}}}"
            + "".join(f", {k}={getattr(self, k)!r}" for k in _TLS_FIELDS if getattr(self, k) is not None)
            + ")"
        )


@dataclass(frozen=True, slots=True, init=False)
class ShadowConfig:
    """Everything the shadow engine needs; validated once, immutable afterwards.

    Parameters:
        targets: one or more :class:`ShadowTarget` with unique names.
        routes: ``"METHOD /path"`` patterns that are shadowed, matched exactly (a trailing
            ``/`` included); the method may be ``*``. A path segment may be a parameter in
            Flask's or Starlette's spelling: ``<name>`` / ``{name}`` (one non-empty segment),
            ``<int:name>`` / ``{name:int}`` (ASCII digits), ``<path:name>`` /
            ``{name:path}`` (one or more segments, anywhere in the path). Anything else
            (``:name``, ``*``, other converters, ``//``) is refused.
        compare: a :class:`Compare` describing what "the same answer" means.
        max_body_bytes: a request body larger than this is not shadowed (``skipped``);
            the app still receives every byte.
        max_response_bytes: at most this many bytes of each response (primary and
            candidate, after decompression) are kept for comparison.
        max_queue: shadow jobs that may wait for a free concurrency slot; beyond it
            new jobs are ``dropped``.
        drop_headers: header names (case-insensitive) never forwarded to a shadow. Beside
            them, every name the credential rule matches (a name containing ``auth``,
            ``cookie``, ``credential``, ``csrf``, ``xsrf``, ``dpop``, ``jwt``, ``key``,
            ``passw``, ``secret``, ``session``, ``signature`` or ``token``) is withheld too.
            Empty: every header is forwarded, the rule is off (the opt-in of old).
        forward_headers: header names (case-insensitive) forwarded although the credential
            rule or ``drop_headers`` withholds them (``["x-session-id"]``): the opt-in, one
            name at a time; it wins over both.
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
        record_inputs: RFC 6901 JSON pointers into the request body whose scalar values
            (strings cut to 256 characters, numbers, booleans; objects and arrays are
            skipped) are recorded on every span of the request as
            ``shadow.request.body.<p>``, for drift in the report. Off (empty) by default:
            only record features you may keep in your telemetry backend.
        isolation: ``"thread"`` (default): comparison and telemetry run on a background
            thread of the app's process, and shadow spans go wherever the app's own
            OpenTelemetry setup sends them. ``"process"``: the app process only copies the
            exchange and hands it over a private socket to a helper process it starts
            (one per app process), which calls the candidates, compares and records the
            spans and metrics; the app's CPU and GIL pay for the copy alone. POSIX only.
        telemetry_setup: ``"package.module:function"``, with ``isolation="process"`` only:
            called once in the helper process, before any span, to configure OpenTelemetry
            there (install the global providers, or return a ``(tracer_provider,
            meter_provider)`` pair). Without it the helper configures the SDK from the
            standard ``OTEL_*`` environment variables.
        cpu_budget: the CPU shadow work may take in the app process, as a fraction of one
            core (the background thread's own CPU clock plus an estimate of the request
            path's share, over the last second); over it, new shadows are ``dropped``
            (``cpu_budget``) at admission until it is under again. ``0`` disables it.
            Live-tunable: :meth:`Shadow.set_cpu_budget`.
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
    record_inputs: tuple[str, ...]
    forward_headers: frozenset[str]
    isolation: str
    telemetry_setup: str | None
    cpu_budget: float
    # Parsed forms, derived from the public fields above (left out of repr and ==).
    compiled_routes: tuple[Route, ...] = field(repr=False, compare=False)
    sample_source: Source | None = field(repr=False, compare=False)
    correlation_source: Source | None = field(repr=False, compare=False)
    # record_inputs as (pointer tokens, attribute suffix) pairs
    input_tokens: tuple[tuple[tuple[str, ...], str], ...] = field(repr=False, compare=False)
    # drop_headers, forward_headers and the credential rule, as one filter
    header_filter: HeaderFilter = field(repr=False, compare=False)

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
        record_inputs: Sequence[str] = (),
        forward_headers: Iterable[str] = (),
        isolation: str = "thread",
        telemetry_setup: str | None = None,
        cpu_budget: float = DEFAULT_CPU_BUDGET,
    ) -> None:
        check = _Checks()
        target_tuple = check(_target_tuple, targets)
        route_specs = check(_strings, "ShadowConfig.routes", routes) or ()
        compiled = tuple(r for i, spec in enumerate(route_specs) if (r := check(_route, i, spec)) is not None)
        if compare is None:
            compare = Compare()
        if not isinstance(compare, Compare):
            check.fail("ShadowConfig.compare", f"must be a Compare, got {compare!r}")
        drop = frozenset(h.lower() for h in check(_strings, "ShadowConfig.drop_headers", drop_headers) or ())
        forward = frozenset(
            h.lower() for h in check(_strings, "ShadowConfig.forward_headers", forward_headers) or ()
        )
        if not isinstance(enabled, bool):
            check.fail("ShadowConfig.enabled", f"must be a bool, got {enabled!r}")
        values = {
            "max_body_bytes": check(_integer, "ShadowConfig.max_body_bytes", max_body_bytes, minimum=0),
            "max_response_bytes": check(
                _integer, "ShadowConfig.max_response_bytes", max_response_bytes, minimum=1
            ),
            "max_queue": check(_integer, "ShadowConfig.max_queue", max_queue, minimum=0),
            "primary_timeout": check(
                _number, "ShadowConfig.primary_timeout", primary_timeout, minimum=0.0, inclusive=False
            ),
            "drain_timeout": check(_number, "ShadowConfig.drain_timeout", drain_timeout, minimum=0.0),
            "circuit_failures": check(_integer, "ShadowConfig.circuit_failures", circuit_failures, minimum=0),
            "circuit_cooldown": check(
                _number, "ShadowConfig.circuit_cooldown", circuit_cooldown, minimum=0.0, inclusive=False
            ),
            "cpu_budget": check(_cpu_budget, cpu_budget),
        }
        if span_placement not in ("child", "link"):
            check.fail("ShadowConfig.span_placement", f"must be 'child' or 'link', got {span_placement!r}")
        sample_source = check(_source, "ShadowConfig.sample_key", sample_key)
        correlation_source = check(_source, "ShadowConfig.correlation_id", correlation_id)
        inputs = check(_record_inputs, record_inputs) or ((), ())
        check(_isolation, isolation, telemetry_setup)
        check.raise_any()
        set_ = object.__setattr__
        set_(self, "targets", target_tuple)
        set_(self, "routes", tuple(r.pattern for r in compiled))
        set_(self, "compare", compare)
        set_(self, "drop_headers", drop)
        set_(self, "forward_headers", forward)
        set_(self, "header_filter", HeaderFilter.of(drop, forward))
        set_(self, "sample_key", sample_key)
        set_(self, "correlation_id", correlation_id)
        set_(self, "enabled", enabled)
        for name, value in values.items():
            set_(self, name, value)
        set_(self, "span_placement", span_placement)
        set_(self, "compiled_routes", compiled)
        set_(self, "sample_source", sample_source)
        set_(self, "correlation_source", correlation_source)
        set_(self, "record_inputs", inputs[0])
        set_(self, "input_tokens", inputs[1])
        set_(self, "isolation", isolation)
        set_(self, "telemetry_setup", telemetry_setup)

    @classmethod
    def from_toml(cls, path: str | os.PathLike[str]) -> ShadowConfig:
        """Load a TOML file whose keys mirror the constructor keywords one to one.

        Parameters:
            path: the TOML file. Top-level keys are ``ShadowConfig``'s, ``[compare]``
                holds ``Compare``'s and each ``[[targets]]`` table a ``ShadowTarget``'s
                (with ``[targets.headers]``).

        Unknown keys and bad values raise one ``ValueError`` that lists every one of them,
        one per line, each naming the file and the key (the first line is the first error).
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

        See the README's "Configuration" section for the variable names. Unknown variables
        and bad values raise one ``ValueError`` that lists every one of them, one per line,
        each naming the variable, the file or ``base`` it comes from.
        """
        return _loader().from_env(os.environ if environ is None else environ, base=base)


def _cpu_budget(value: Any) -> float:
    budget = _number("ShadowConfig.cpu_budget", value, minimum=0.0)
    if budget > 64.0:
        raise _fail("ShadowConfig.cpu_budget", f"must be a fraction of one core in [0, 64], got {value!r}")
    return budget


def _record_inputs(
    pointers: Any,
) -> tuple[tuple[str, ...], tuple[tuple[tuple[str, ...], str], ...]]:
    """``ShadowConfig.record_inputs``: the pointers, and their parsed forms with the attribute
    suffix (the pointer without its leading ``/``, ``/`` -> ``.``, as for ``Compare.fields``)."""
    name = "ShadowConfig.record_inputs"
    items = tuple(dict.fromkeys(_strings(name, pointers)))
    parsed = []
    for pointer in items:
        tokens = parse_pointer(name, pointer)
        if not tokens:
            raise _fail(name, "a pointer must name a value inside the body, got ''")
        parsed.append((tokens, ".".join(tokens)))
    return items, tuple(parsed)


_SETUP = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$", re.ASCII)


def _isolation(isolation: Any, telemetry_setup: Any) -> None:
    """``ShadowConfig.isolation`` and ``ShadowConfig.telemetry_setup``, checked together."""
    errors = []
    if isolation not in ("thread", "process"):
        errors.append(f"ShadowConfig.isolation: must be 'thread' or 'process', got {isolation!r}")
    elif isolation == "process" and os.name != "posix":
        errors.append("ShadowConfig.isolation: 'process' needs a POSIX system (Linux, macOS)")
    if telemetry_setup is not None:
        if not isinstance(telemetry_setup, str) or not _SETUP.match(telemetry_setup):
            errors.append(
                f"ShadowConfig.telemetry_setup: must be 'package.module:function', got {telemetry_setup!r}"
            )
        elif isolation == "thread":
            errors.append(
                "ShadowConfig.telemetry_setup: only used with isolation='process' (the helper "
                "process calls it); with isolation='thread' spans go through the app's own "
                "OpenTelemetry setup"
            )
    if errors:
        raise ConfigErrors(errors)


def _target_tuple(targets: Any) -> tuple[ShadowTarget, ...]:
    """``ShadowConfig.targets``: one or more ``ShadowTarget`` with unique names."""
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
    return target_tuple


@functools.cache
def _loader() -> ConfigLoader[ShadowConfig]:
    """The file and environment reader for these classes (built on first use: it reads
    their constructors' signatures)."""
    return ConfigLoader(ShadowConfig, ShadowTarget, Compare)


def describe(config: ShadowConfig) -> str:
    """``config`` as TOML in the file's layout, every key included, header values masked
    (for ``python -m shadow_middleware check-config``)."""
    return _loader().describe(config)


def config_data(config: ShadowConfig) -> dict[str, Any]:
    """``config``'s constructor arguments as plain data, exact (header values included):
    ``ShadowConfig.from_env({}, base=config_data(config)) == config``."""
    return _loader().data(config)


class RouteTable:
    """Matches ``(method, path)`` against the configured routes.

    A static path is one dict lookup; a path with parameters is a regular expression
    compiled with the configuration, tried in the order of the routes. A static route wins
    over one with parameters; among either kind, the first listed wins.
    """

    __slots__ = ("_dynamic", "_static")

    def __init__(self, routes: Iterable[Route]) -> None:
        self._static: dict[str, list[Route]] = {}
        self._dynamic: list[tuple[str, Callable[[str], object], str]] = []
        for route in routes:
            if route.regex is None:
                self._static.setdefault(route.path, []).append(route)
            else:
                self._dynamic.append((route.method, route.regex.fullmatch, route.pattern))

    def match(self, method: str, path: str) -> str | None:
        """The pattern of the route matching, or None (always for a path that does not start
        with ``/``: the request target of a lenient server, never a route)."""
        if not path.startswith("/"):
            return None
        candidates = self._static.get(path)
        if candidates:
            for route in candidates:
                if route.method == method or route.method == "*":
                    return route.pattern
        for route_method, fullmatch, pattern in self._dynamic:
            if (route_method == method or route_method == "*") and fullmatch(path) is not None:
                return pattern
        return None
