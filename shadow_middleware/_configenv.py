"""The ``SHADOW_*`` environment variables: their names, their values as text, and how they
override the file.

:class:`EnvReader` turns a set of variables into overrides in the file's layout (and which
variable set each key path, for the errors) and applies them onto the file's data. The names:
``SHADOW_<KEY>``, ``SHADOW_COMPARE_<KEY>``, ``SHADOW_TARGET_<NAME>_<KEY>``,
``SHADOW_TARGET_<NAME>_HEADER_<HEADER>`` and ``SHADOW_TARGETS`` (see ``_configfile``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ._configbuild import Params, _Param
from ._configerrors import _suggest, _Where

__all__ = ["CONFIG_ENV", "ENV_PREFIX", "FALSE_WORDS", "FOREIGN_ENV", "STRICT_ENV", "TRUE_WORDS", "EnvReader"]

ENV_PREFIX = "SHADOW_"
#: ``SHADOW_*`` variables that are not options of this layer: they belong to other parts
#: of the package and are left alone rather than reported as unknown.
FOREIGN_ENV = frozenset({"SHADOW_CONFIG", "SHADOW_STRICT"})
#: ``SHADOW_STRICT=1``: a configuration mistake read at run time stops the start-up (CI,
#: staging) instead of leaving the app serving with shadowing off.
STRICT_ENV = "SHADOW_STRICT"
#: ``SHADOW_*`` variables people set expecting something the package does not do: an error
#: that says what to do instead (rather than a bare "unknown variable").
MISPLACED_ENV = {
    "SHADOW_SPAN_FILE": (
        "not read by shadow_middleware; the application writes spans: see the README section "
        '"Writing the span file" (OpenTelemetry\'s FileSpanExporter)'
    ),
}
#: The variable naming the TOML file (read by ``_configfile``, the sources' layering).
CONFIG_ENV = "SHADOW_CONFIG"
_TARGETS_ENV = "SHADOW_TARGETS"
_TARGET_ENV = "SHADOW_TARGET_"
_COMPARE_ENV = "SHADOW_COMPARE_"
_HEADER = "HEADER_"

TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
#: How an environment variable says "off" (also the SHADOW_ENABLED kill switch).
FALSE_WORDS = frozenset({"0", "false", "no", "off"})

# Where an override came from: a key path of the overrides _parse_env() returns -> the variable.
_Origins = dict[tuple[str, ...], str]


class EnvReader:
    """Reads ``SHADOW_*`` variables as overrides of a configuration in the file's layout.

    Parameters:
        params: what each constructor accepts; it names the variables.
    """

    def __init__(self, params: Params) -> None:
        # Environment variable name -> the parameter it sets.
        self._scalar_vars = {
            f"{ENV_PREFIX}{name.upper()}": p
            for name, p in params.config.items()
            if p.kind not in ("targets", "compare")
        }
        self._compare_vars = {f"{_COMPARE_ENV}{name.upper()}": p for name, p in params.compare.items()}
        # SHADOW_TARGET_<NAME>_<KEY> -> KEY -> parameter (the name is the table's key; headers go one by one).
        self._target_keys = {
            name.upper(): p for name, p in params.target.items() if name not in ("name", "headers")
        }

    def apply(
        self, data: Mapping[str, Any], environ: Mapping[str, str], where: _Where, prefix: str = ""
    ) -> dict[str, Any]:
        """``data`` (the file's layout) with the ``SHADOW_*`` overrides of ``environ`` applied.

        ``data`` is not modified. Options replace the file's, ``[compare]`` keys one by one,
        targets are matched by name (a ``_URL`` replaces the file's ``base_url`` and the other
        way round; headers are matched case-insensitively), and targets declared in
        ``SHADOW_TARGETS`` that the file does not have are appended. Which variable set which
        key path goes to ``where.origins``; errors go to ``where.errors`` (a bad variable is
        left out), each starting with ``prefix``.
        """
        overrides, env_origins = self._parse_env(environ, _known_targets(data), where, prefix)
        merged = dict(data)
        origins = where.origins
        for key, value in overrides.items():
            if key == "compare":
                current = merged.get("compare")
                if current is None or isinstance(current, Mapping):
                    merged["compare"] = {**(current or {}), **value}
                    for k in value:
                        origins[f"compare.{k}"] = env_origins[("compare", k)]
            elif key == "targets":
                _merge_targets(merged, value, env_origins, where, prefix)
            else:
                merged[key] = value
                origins[key] = env_origins[(key,)]
        return merged

    def _parse_env(
        self, environ: Mapping[str, str], known: Sequence[str], where: _Where, prefix: str = ""
    ) -> tuple[dict[str, Any], _Origins]:
        """The options the ``SHADOW_*`` variables of ``environ`` set, in the file's layout,
        and which variable set each (``prefix`` + its name).

        ``known`` are the names of targets already configured (in a file), which
        ``SHADOW_TARGET_<NAME>_*`` variables may address; ``SHADOW_TARGETS`` declares more.
        The overrides hold only what the environment sets, e.g. ``{"max_queue": 50,
        "compare": {"abs_tol": 0.01}, "targets": [{"name": "churn-v2", "sample_rate": 0.1}]}``;
        an empty value of an optional option is ``None`` (unset). A bad value or an unknown
        variable is recorded in ``where.errors`` (``prefix``, then a message naming the
        variable) and left out.
        """
        errors = where.errors
        overrides: dict[str, Any] = {}
        origins: _Origins = {}
        declared: list[str] = []
        if _TARGETS_ENV in environ:
            for name in (n.strip() for n in environ[_TARGETS_ENV].split(",")):
                if name and name in declared:
                    if declared.count(name) == 1:
                        errors.append(f"{prefix}{_TARGETS_ENV}: target {name!r} is declared twice")
                elif name:
                    declared.append(name)
        names = list(dict.fromkeys([*known, *declared]))
        by_env: dict[str, list[str]] = {}
        for name in names:
            by_env.setdefault(_env_name(name), []).append(name)
        targets: dict[str, dict[str, Any]] = {name: {"name": name} for name in declared}
        for name in declared:
            origins[("targets", name)] = prefix + _TARGETS_ENV

        for var in sorted(environ):
            if not var.startswith(ENV_PREFIX) or var in FOREIGN_ENV or var == _TARGETS_ENV:
                continue
            try:
                self._parse_var(var, environ[var], overrides, origins, targets, by_env, prefix)
            except ValueError as exc:
                errors.append(f"{prefix}{exc}")
                if not by_env and var.startswith(_TARGET_ENV):
                    where.reported.add("targets")  # the error says no target is configured
        if targets:
            # Known targets first, in their order, then the newly declared ones.
            order = {name: i for i, name in enumerate(names)}
            overrides["targets"] = sorted(targets.values(), key=lambda t: order[t["name"]])
        return overrides, origins

    def _parse_var(
        self,
        var: str,
        text: str,
        overrides: dict[str, Any],
        origins: _Origins,
        targets: dict[str, dict[str, Any]],
        by_env: Mapping[str, list[str]],
        prefix: str,
    ) -> None:
        """Apply the variable ``var`` to ``overrides`` (and ``targets``); raises ``ValueError``
        naming it when it is unknown or its value bad."""
        if var in self._scalar_vars:
            param = self._scalar_vars[var]
            overrides[param.name] = _parse_env_value(var, param, text)
            origins[(param.name,)] = prefix + var
        elif var in self._compare_vars:
            param = self._compare_vars[var]
            value = _parse_env_value(var, param, text)
            overrides.setdefault("compare", {})[param.name] = value
            origins[("compare", param.name)] = prefix + var
        elif var in MISPLACED_ENV:
            raise ValueError(f"{var}: {MISPLACED_ENV[var]}")
        elif var.startswith(_TARGET_ENV):
            name, key = self._split_target_var(var, by_env)
            if key.startswith(_HEADER):
                header = key[len(_HEADER) :].replace("_", "-").lower()
                if not header:
                    raise ValueError(f"{var}: no header name after {_HEADER}")
                targets.setdefault(name, {"name": name}).setdefault("headers", {})[header] = text.strip()
                origins[("targets", name, "headers", header)] = prefix + var
            else:
                param = self._target_keys[key]
                value = _parse_env_value(var, param, text)
                targets.setdefault(name, {"name": name})[param.name] = value
                origins[("targets", name, param.name)] = prefix + var
        else:
            choices = [*self._scalar_vars, *self._compare_vars, _TARGETS_ENV, *sorted(FOREIGN_ENV)]
            choices += [f"{_TARGET_ENV}{upper}_{key}" for upper in by_env for key in self._target_keys]
            match = _suggest_var(var, choices)
            hint = f" (did you mean {match!r}?)" if match else ""
            raise ValueError(f"{var}: unknown variable{hint}")

    def _split_target_var(self, var: str, by_env: Mapping[str, list[str]]) -> tuple[str, str]:
        """``SHADOW_TARGET_CHURN_V2_SAMPLE_RATE`` -> (``churn-v2``, ``SAMPLE_RATE``)."""
        keys = self._target_keys
        rest = var[len(_TARGET_ENV) :]
        found = []
        for upper, names in by_env.items():
            if rest.startswith(upper + "_"):
                key = rest[len(upper) + 1 :]
                if key in keys or key.startswith(_HEADER):
                    found.append((upper, names, key))
        if len(found) == 1 and len(found[0][1]) == 1:
            return found[0][1][0], found[0][2]
        if found:
            names = sorted(n for _, ns, _ in found for n in ns)
            raise ValueError(
                f"{var}: ambiguous: it can address each of the targets {', '.join(map(repr, names))}"
            )
        if not by_env:
            raise ValueError(
                f"{var}: unknown variable: no target is configured (declare targets in {_TARGETS_ENV})"
            )
        prefixes = [upper for upper in by_env if rest.startswith(upper + "_")]
        if prefixes:  # a known target, an unknown key
            key = rest[len(max(prefixes, key=len)) + 1 :]
            match = _suggest(key, [*keys, _HEADER + "<NAME>"])
            hint = (
                f"did you mean {var[: len(var) - len(key)] + match!r}?"
                if match
                else "keys: " + ", ".join([*keys, _HEADER + "<NAME>"])
            )
            raise ValueError(f"{var}: unknown variable ({hint})")
        # An unknown target: guess its NAME from the key at the end, and suggest a known one.
        name = next(
            (rest[: -len(k) - 1] for k in sorted(keys, key=len, reverse=True) if rest.endswith("_" + k)),
            rest.partition("_" + _HEADER)[0] if "_" + _HEADER in rest else None,
        )
        match = _suggest(name, by_env) if name else None
        if match is not None and name is not None:
            suggestion = _TARGET_ENV + match + rest[len(name) :]
            raise ValueError(
                f"{var}: unknown variable: no target {name} (did you mean {suggestion!r}? "
                f"New targets are declared in {_TARGETS_ENV})"
            )
        targets = ", ".join(f"{n!r} ({_TARGET_ENV}{upper}_*)" for upper, ns in by_env.items() for n in ns)
        raise ValueError(
            f"{var}: unknown variable: no such target (targets: {targets}; "
            f"declare new targets in {_TARGETS_ENV})"
        )


def _suggest_var(var: str, choices: Iterable[str]) -> str | None:
    """Like :func:`_suggest`, ignoring the common ``SHADOW_`` prefix (it makes everything look alike)."""
    n = len(ENV_PREFIX)
    match = _suggest(var[n:], [c[n:] for c in choices])
    return None if match is None else ENV_PREFIX + match


def _env_name(target: str) -> str:
    """The ``<NAME>`` of ``SHADOW_TARGET_<NAME>_*`` for a target name: ``churn-v2`` -> ``CHURN_V2``."""
    return re.sub(r"[^A-Za-z0-9]", "_", target).upper()


def _parse_env_value(var: str, param: _Param, text: str) -> Any:
    text = text.strip()
    if param.optional and text == "":
        return None
    kind = param.kind
    if kind == "int":
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"{var}: expected an integer, got {text!r}") from None
    if kind == "float":
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"{var}: expected a number, got {text!r}") from None
    if kind == "bool":
        if text.lower() in TRUE_WORDS:
            return True
        if text.lower() in FALSE_WORDS:
            return False
        raise ValueError(f"{var}: expected a boolean (1/0, true/false, yes/no, on/off), got {text!r}")
    if kind in ("strs", "fields"):
        items = [item.strip() for item in text.split(",") if item.strip()]
        if kind == "fields" and any("=" in item for item in items):
            pairs = [item.partition("=") for item in items]
            return {p.strip(): (c.strip() if sep else p.strip()) for p, sep, c in pairs}
        return items
    return text


def _known_targets(data: Mapping[str, Any]) -> list[str]:
    targets = data.get("targets")
    if isinstance(targets, str | bytes) or not isinstance(targets, Sequence):
        return []
    return [t["name"] for t in targets if isinstance(t, Mapping) and isinstance(t.get("name"), str)]


def _merge_targets(
    merged: dict[str, Any], overrides: list[dict[str, Any]], env_origins: _Origins, where: _Where, prefix: str
) -> None:
    current = merged.get("targets")
    if current is None:
        current = []
    elif isinstance(current, str | bytes) or not isinstance(current, Sequence):
        return  # not a list of tables: building reports the file's error
    tables = list(current)
    origins = where.origins
    for override in overrides:
        name = override["name"]
        index = next(
            (i for i, t in enumerate(tables) if isinstance(t, Mapping) and t.get("name") == name),
            None,
        )
        if index is None:
            if "url" not in override and "base_url" not in override:
                var = f"{_TARGET_ENV}{_env_name(name)}"
                where.errors.append(
                    f"{prefix}{_TARGETS_ENV}: target {name!r} needs {var}_URL or {var}_BASE_URL"
                )
                where.reported.add("targets")  # left out: "targets: missing" would repeat this
                continue
            tables.append(dict(override))
            index = len(tables) - 1
            origins[f"targets[{index}]"] = env_origins[("targets", name)]
        else:
            table = dict(tables[index])
            for key, value in override.items():
                if key == "headers":
                    headers = table.get("headers")
                    if headers is None or isinstance(headers, Mapping):
                        table["headers"] = _merge_headers(headers or {}, value)
                else:
                    table[key] = value
            # One destination replaces the other, unless the environment gives both.
            if override.get("url") is not None and "base_url" not in override:
                table.pop("base_url", None)
            if override.get("base_url") is not None and "url" not in override:
                table.pop("url", None)
            tables[index] = table
        path = f"targets[{index}]"
        for key in override:
            if key in ("name", "headers"):
                continue
            origins[f"{path}.{key}"] = env_origins[("targets", name, key)]
        for header in override.get("headers", {}):
            origins[f"{path}.headers.{header}"] = env_origins[("targets", name, "headers", header)]
    merged["targets"] = tables


def _merge_headers(current: Mapping[str, Any], overrides: Mapping[str, str]) -> dict[str, Any]:
    headers = dict(current)
    for name, value in overrides.items():
        existing = next((k for k in headers if isinstance(k, str) and k.lower() == name), None)
        headers[existing if existing is not None else name] = value
    return headers
