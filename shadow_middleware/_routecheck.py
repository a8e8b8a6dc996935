"""Warn about configured routes the application does not have.

A route in ``ShadowConfig.routes`` that matches none of the app's own routes is never
shadowed, silently (a blueprint's ``url_prefix`` forgotten, a trailing slash). The Flask
extension and the ASGI adapter hand the app's routes here, as ``(methods, path)`` pairs in
the framework's spelling (``<int:id>``, ``{id:int}``); every configured route that matches
none of them gets one WARNING naming the closest route the app has. Nothing here may raise
into the app: a check that fails is no check.
"""

from __future__ import annotations

import difflib
import logging
import re
from collections.abc import Iterable, Sequence
from typing import Any

from ._config import Route

__all__ = ["AppRoute", "starlette_routes", "unknown_routes", "warn_unknown_routes"]

logger = logging.getLogger("shadow_middleware")

#: ``(methods, path)``: the upper-case methods the app's route answers (None: any), and its path
#: pattern in the framework's spelling; a path ending in ``/*`` is a mount whose routes are unknown.
AppRoute = tuple[frozenset[str] | None, str]

_PARAM = re.compile(r"<[^<>]*>|\{[^{}]*\}")
_PATHLIKE = re.compile(r"^(?:<path:[^<>]*>|\{[^{}:]*:path\})$")
# Methods a framework adds to every route by itself: not worth suggesting.
_IMPLIED = frozenset({"HEAD", "OPTIONS"})


def _app_regex(path: str) -> re.Pattern[str]:
    """A regular expression for the paths an app route receives (any converter: one segment;
    a ``path`` converter: the rest; a mount: anything below it)."""
    mount = path.endswith("/*")
    if mount:
        path = path[:-2]
    pieces = []
    last = 0
    for m in _PARAM.finditer(path):
        pieces.append(re.escape(path[last : m.start()]))
        pieces.append(".+" if _PATHLIKE.match(m[0]) else "[^/]+")
        last = m.end()
    pieces.append(re.escape(path[last:]))
    return re.compile("".join(pieces) + ("(?:/.*)?" if mount else ""), re.DOTALL)


def _sample(path: str) -> str:
    """A concrete path a pattern receives: each parameter as ``1`` (digits satisfy the string,
    int and path converters of both frameworks)."""
    return _PARAM.sub("1", path.removesuffix("/*"))


def _matches(route: Route, methods: frozenset[str] | None, path: str) -> bool:
    if route.method != "*" and methods is not None and route.method not in methods:
        return False
    if _app_regex(path).fullmatch(_sample(route.path)) is not None:
        return True
    # The other way round: a configured pattern broader than the app's route still reaches it.
    sample = _sample(path)
    return route.regex.fullmatch(sample) is not None if route.regex is not None else route.path == sample


def unknown_routes(routes: Iterable[Route], app_routes: Sequence[AppRoute]) -> list[tuple[str, str | None]]:
    """``(configured pattern, closest app route)`` for each configured route that matches no
    app route (``"POST /api/predict"``, or None when the app has none)."""
    names = sorted(
        {
            f"{method} {path.removesuffix('/*')}"
            for methods, path in app_routes
            for method in (sorted(methods - _IMPLIED) or sorted(methods) if methods else ["*"])
        }
    )
    out = []
    for route in routes:
        if any(_matches(route, methods, path) for methods, path in app_routes):
            continue
        close = difflib.get_close_matches(route.pattern, names, n=1, cutoff=0.0)
        out.append((route.pattern, close[0] if close else None))
    return out


def warn_unknown_routes(routes: Iterable[Route], app_routes: Sequence[AppRoute], where: str) -> int:
    """Log one WARNING per configured route that matches none of ``app_routes`` (found in
    ``where``: ``app.url_map``, ``the app's routes``); returns how many. Never raises; no
    app routes at all is no check."""
    try:
        if not app_routes:
            return 0
        missing = unknown_routes(routes, app_routes)
        for pattern, closest in missing:
            hint = f"the closest route it has is {closest!r}" if closest else "it has no route"
            logger.warning(
                "shadow_middleware: the route %r matches no route of the app (%s), so it is never "
                "shadowed; %s. Check ShadowConfig.routes (a blueprint's or router's prefix, a "
                "trailing slash)",
                pattern,
                where,
                hint,
            )
        return len(missing)
    except Exception:  # a check must never hurt the app
        logger.debug("shadow_middleware: route check failed", exc_info=True)
        return 0


def starlette_routes(app: Any, depth: int = 0) -> list[AppRoute]:
    """The routes of a Starlette / FastAPI app, mounts included, found below ``app`` (the
    app itself, its router, or a middleware wrapping them: followed through ``.app``).
    Empty when there is no such app. Never raises."""
    try:
        for _ in range(32):  # a middleware stack is shallow; never loop on a cycle
            routes = getattr(app, "routes", None)
            if isinstance(routes, list | tuple):
                return _walk(routes, "", depth)
            app = getattr(app, "app", None)
            if app is None:
                return []
    except Exception:
        logger.debug("shadow_middleware: could not read the app's routes", exc_info=True)
    return []


def _walk(routes: Iterable[Any], prefix: str, depth: int) -> list[AppRoute]:
    out: list[AppRoute] = []
    if depth > 16:
        return out
    for route in routes:
        included = getattr(route, "original_router", None)
        if included is not None:
            # FastAPI >= 0.16x keeps an included router whole: its own routes (which carry the
            # router's prefix) under the include_router(prefix=...) one.
            extra = getattr(getattr(route, "include_context", None), "prefix", "") or ""
            out += _walk(getattr(included, "routes", ()), prefix + str(extra).rstrip("/"), depth + 1)
            continue
        path = getattr(route, "path", None)
        if not isinstance(path, str):
            continue  # a Host, or something we do not know: left out
        kind = type(route).__name__
        if kind == "WebSocketRoute":
            continue
        if kind == "Mount" or (hasattr(route, "routes") and not hasattr(route, "methods")):
            children = getattr(route, "routes", None)
            if children:
                out += _walk(children, prefix + path.rstrip("/"), depth + 1)
            else:  # a mounted app whose routes are unknown (static files, a sub-app)
                out.append((None, prefix + path.rstrip("/") + "/*"))
            continue
        methods = getattr(route, "methods", None)
        out.append((frozenset(m.upper() for m in methods) if methods else None, prefix + path))
    return out
