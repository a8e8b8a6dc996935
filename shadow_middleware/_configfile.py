"""Configuration from a TOML file and ``SHADOW_*`` environment variables.

A :class:`ConfigLoader` is built from the three configuration classes (``ShadowConfig``,
``ShadowTarget`` and ``Compare``; this module does not import them). The file mirrors their
constructors one to one: top-level keys are the configuration's keywords, ``[compare]``
holds the comparison's and each ``[[targets]]`` table holds a target's. The allowed keys
are read from the constructors' signatures, so a new keyword is accepted here as soon as
it exists there.

Environment variables override the file:

* ``SHADOW_<KEY>`` for each top-level option (``SHADOW_MAX_QUEUE=50``); lists are
  comma-separated (``SHADOW_ROUTES="POST /predict,POST /score"``, an empty
  ``SHADOW_DROP_HEADERS`` forwards every header); booleans are ``1/0``, ``true/false``,
  ``yes/no``, ``on/off``; an empty value unsets an optional option (``SHADOW_SAMPLE_KEY=``).
* ``SHADOW_COMPARE_<KEY>`` for the comparison (``SHADOW_COMPARE_FIELDS="/a,/b"``, or
  ``"/prob=/score"`` for a renamed field).
* ``SHADOW_TARGET_<NAME>_<KEY>`` for a target, where ``NAME`` is its name upper-cased with
  every non-alphanumeric character turned into ``_`` (``churn-v2`` -> ``CHURN_V2``), and
  ``SHADOW_TARGET_<NAME>_HEADER_<HEADER>`` for one of its headers (``_`` -> ``-``).
* ``SHADOW_TARGETS="a,b"`` declares targets by name; one not in the file is created from
  its ``SHADOW_TARGET_<NAME>_*`` variables and needs ``_URL`` or ``_BASE_URL``.

Every error is a ``ValueError`` that names where the bad value came from (the file, or the
variable) and its key path, then the constructor's own message when it is the one that
refused the value: ``shadow.toml: targets[0].sample_rate: ShadowTarget.sample_rate: must
be in [0, 1], got 1.5``.
"""

from __future__ import annotations

import difflib
import inspect
import os
import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence, Set
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

__all__ = ["ENV_PREFIX", "FOREIGN_ENV", "ConfigLoader"]

ENV_PREFIX = "SHADOW_"
#: ``SHADOW_*`` variables that are not options of this layer: they belong to other parts
#: of the package and are left alone rather than reported as unknown.
FOREIGN_ENV = frozenset({"SHADOW_CONFIG", "SHADOW_SPAN_FILE", "SHADOW_HTTP_CLIENT"})
_CONFIG_ENV = "SHADOW_CONFIG"
_TARGETS_ENV = "SHADOW_TARGETS"
_TARGET_ENV = "SHADOW_TARGET_"
_COMPARE_ENV = "SHADOW_COMPARE_"
_HEADER = "HEADER_"
_ENV_SOURCE = "environment"
_BASE_SOURCE = "base"
_MASK = "***"

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


# --------------------------------------------------------------------------- parameters


@dataclass(frozen=True, slots=True)
class _Param:
    name: str
    kind: str  # int, float, bool, str, strs, raw, or a nested: targets, compare, headers, fields
    optional: bool  # None is a valid value
    required: bool  # no default


_KINDS = {
    "int": "int",
    "float": "float",
    "bool": "bool",
    "str": "str",
    "Sequence[str]": "strs",
    "Iterable[str]": "strs",
    "tuple[str,...]": "strs",
    "list[str]": "strs",
}


def _params(cls: type, nested: Mapping[str, str]) -> dict[str, _Param]:
    """The keywords of ``cls``'s constructor and the kind of value each takes.

    ``nested`` gives the kind of the keywords whose value is not a plain scalar or list
    of strings (``{"targets": "targets"}``).
    """
    out: dict[str, _Param] = {}
    for p in inspect.signature(cls).parameters.values():
        if p.kind not in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
            continue
        ann = p.annotation if isinstance(p.annotation, str) else getattr(p.annotation, "__name__", "")
        ann = ann.replace(" ", "")
        optional = ann.endswith("|None") or ann.startswith("None|")
        core = ann.removesuffix("|None").removeprefix("None|")
        kind = nested.get(p.name) or _KINDS.get(core, "raw")
        out[p.name] = _Param(p.name, kind, optional, p.default is p.empty)
    return out


# --------------------------------------------------------------------------- the loader


class _Config(Protocol):
    """What :meth:`ConfigLoader.describe` reads of a configuration besides its keywords."""

    @property
    def targets(self) -> Sequence[Any]: ...

    @property
    def compare(self) -> Any: ...


_C = TypeVar("_C", bound=_Config)
_T = TypeVar("_T")

# Where an override came from: a key path of the overrides _parse_env() returns -> the variable.
_Origins = dict[tuple[str, ...], str]


class ConfigLoader(Generic[_C]):
    """Reads TOML files and ``SHADOW_*`` environments into configuration objects, and back.

    Parameters:
        config_cls: the top-level class (``ShadowConfig``). Its constructor takes the
            top-level keys, and the keywords ``targets`` (a list of ``target_cls``) and
            ``compare`` (a ``compare_cls``).
        target_cls: the class of each ``[[targets]]`` table (``ShadowTarget``); its
            constructor takes ``name`` and ``headers`` (a table of strings).
        compare_cls: the class of the ``[compare]`` table (``Compare``); its constructor
            takes ``fields`` (a list of JSON pointers, or a table of them).

    The allowed keys and the type of each value are read from the constructors' signatures.
    """

    def __init__(self, config_cls: type[_C], target_cls: type, compare_cls: type) -> None:
        self._config_cls = config_cls
        self._target_cls = target_cls
        self._compare_cls = compare_cls
        self.config_params = _params(config_cls, {"targets": "targets", "compare": "compare"})
        self.target_params = _params(target_cls, {"headers": "headers"})
        self.compare_params = _params(compare_cls, {"fields": "fields"})
        # Environment variable name -> the parameter it sets.
        self._scalar_vars = {
            f"{ENV_PREFIX}{name.upper()}": p
            for name, p in self.config_params.items()
            if p.kind not in ("targets", "compare")
        }
        self._compare_vars = {f"{_COMPARE_ENV}{name.upper()}": p for name, p in self.compare_params.items()}
        # SHADOW_TARGET_<NAME>_<KEY> -> KEY -> parameter (the name is the table's key; headers go one by one).
        self._target_keys = {
            name.upper(): p for name, p in self.target_params.items() if name not in ("name", "headers")
        }

    # ----------------------------------------------------------------------- entry points

    def load_toml(self, path: str | os.PathLike[str]) -> _C:
        """Read the TOML file ``path`` into a configuration.

        Unknown keys, wrong types and values the constructors refuse raise ``ValueError``:
        ``"<path>: <key path>: <what is wrong>"``. So do an unreadable file and a TOML
        syntax error (with its line).
        """
        name = os.fspath(path)
        return self._build(_read_toml(name), _Where(name))

    def from_env(self, environ: Mapping[str, str], *, base: Mapping[str, Any] | None = None) -> _C:
        """Build a configuration from ``environ``, and the file its ``SHADOW_CONFIG`` names.

        Layers, each overriding the one before: ``base`` (in-code defaults, in the file's
        layout), the TOML file ``SHADOW_CONFIG`` names (its top-level keys replace ``base``'s,
        ``[compare]`` keys one by one, its ``[[targets]]`` replace ``base``'s), then the
        ``SHADOW_*`` variables of ``environ``. Without ``SHADOW_CONFIG`` the configuration
        comes from ``base`` and the environment alone. Neither ``environ`` nor ``base`` is
        modified. A bad value or an unknown variable raises ``ValueError`` naming the
        variable (or the file, or ``base``, that the bad value comes from).
        """
        path = environ.get(_CONFIG_ENV) or None
        data: dict[str, Any] = dict(base or {})
        origins = {key: _BASE_SOURCE for key in data}
        source = _ENV_SOURCE
        if path is not None:
            source = path
            from_file = _read_toml(path)
            for key, value in from_file.items():
                lower = data.get(key)
                if key == "compare" and isinstance(lower, Mapping) and isinstance(value, Mapping):
                    for k in lower:
                        if k not in value:
                            origins[f"compare.{k}"] = _BASE_SOURCE
                    data[key] = {**lower, **value}
                else:
                    data[key] = value
                origins.pop(key, None)
        merged, env_origins = self._apply_env(data, environ)
        return self._build(merged, _Where(source, {**origins, **env_origins}))

    def describe(self, config: _C) -> str:
        """``config`` as TOML, in the file's layout, every key included.

        Target header values are masked as ``"***"``; options that are not set (``None``)
        appear as comments. Loading the text as a file rebuilds ``config`` (but for the
        masked header values).
        """
        lines = ["# shadow_middleware: effective configuration (header values masked)"]
        for name, param in self.config_params.items():
            if param.kind not in ("targets", "compare"):
                lines.append(_toml_line(name, getattr(config, name)))
        for target in config.targets:
            lines += ["", "[[targets]]"]
            for name in self.target_params:
                if name != "headers":
                    lines.append(_toml_line(name, getattr(target, name)))
            lines += ["", "[targets.headers]"]
            lines += [f"{_toml_key(k)} = {_toml_str(_MASK)}" for k in target.headers]
        lines += ["", "[compare]"]
        compare = config.compare
        pairs = compare.fields
        as_table = any(p != c for p, c in pairs)
        for name in self.compare_params:
            if name == "fields":
                if not as_table:
                    lines.append(_toml_line(name, [p for p, _ in pairs]))
            else:
                lines.append(_toml_line(name, getattr(compare, name)))
        if as_table:
            lines += ["", "[compare.fields]  # primary pointer = candidate pointer"]
            lines += [f"{_toml_key(p)} = {_toml_str(c)}" for p, c in pairs]
        return "\n".join(lines) + "\n"

    # ----------------------------------------------------------------------- mapping -> objects

    def _build(self, data: Any, where: _Where) -> _C:
        """The configuration ``data`` (the file's layout) describes."""
        if not isinstance(data, Mapping):
            raise ValueError(f"{where.source}: expected a table of options, got {_show(data)}")
        kwargs = self._kwargs(data, "", self.config_params, where)
        return _construct(self._config_cls, kwargs, "", where)

    def _kwargs(
        self, data: Mapping[Any, Any], path: str, params: Mapping[str, _Param], where: _Where
    ) -> dict[str, Any]:
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            key_path = _join(path, key)
            param = params.get(key) if isinstance(key, str) else None
            if param is None:
                raise where.error(key_path, _unknown(str(key), params, "key"))
            kwargs[key] = self._convert(value, param, key_path, where)
        for name, param in params.items():
            if param.required and name not in kwargs:
                hint = (
                    " (add a [[targets]] table, or declare targets in SHADOW_TARGETS)"
                    if name == "targets"
                    else ""
                )
                raise where.error(_join(path, name), f"missing; it is required{hint}")
        return kwargs

    def _convert(self, value: Any, param: _Param, path: str, where: _Where) -> Any:
        """Check the type of one value (the constructors check its range)."""
        kind = param.kind
        if value is None and param.optional:
            return None
        if kind == "targets":
            return self._targets(value, path, where)
        if kind == "compare":
            if not isinstance(value, Mapping):
                raise where.error(path, f"expected a table ([compare]), got {_show(value)}")
            kwargs = self._kwargs(value, path, self.compare_params, where)
            return _construct(self._compare_cls, kwargs, path, where)
        if kind == "headers":
            return _string_table(value, path, where, "a table of header names to values")
        if kind == "fields":
            if isinstance(value, Mapping):
                return _string_table(value, path, where, "a list of JSON pointers or a table")
            return _strings(value, path, where, "a list of JSON pointers or a table {primary = candidate}")
        if kind == "strs":
            return _strings(value, path, where, "a list of strings")
        if kind == "raw":
            return value
        ok = {
            "int": isinstance(value, int) and not isinstance(value, bool),
            "float": isinstance(value, int | float) and not isinstance(value, bool),
            "bool": isinstance(value, bool),
            "str": isinstance(value, str),
        }[kind]
        if not ok:
            want = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string"}[
                kind
            ]
            raise where.error(path, f"expected {want}, got {_show(value)}")
        return value

    def _targets(self, value: Any, path: str, where: _Where) -> list[Any]:
        if isinstance(value, Mapping):
            raise where.error(
                path, "expected an array of tables ([[targets]]), got a single table ([targets])"
            )
        if isinstance(value, str | bytes) or not isinstance(value, Sequence):
            raise where.error(path, f"expected an array of tables ([[targets]]), got {_show(value)}")
        out: list[Any] = []
        for i, item in enumerate(value):
            item_path = f"{path}[{i}]"
            if not isinstance(item, Mapping):
                raise where.error(item_path, f"expected a table, got {_show(item)}")
            kwargs = self._kwargs(item, item_path, self.target_params, where)
            out.append(_construct(self._target_cls, kwargs, item_path, where))
        return out

    # ----------------------------------------------------------------------- environment

    def _apply_env(
        self, data: Mapping[str, Any], environ: Mapping[str, str]
    ) -> tuple[dict[str, Any], dict[str, str]]:
        """``data`` (the file's layout) with the ``SHADOW_*`` overrides of ``environ`` applied,
        and which key paths of the result came from which variable.

        ``data`` is not modified. Options replace the file's, ``[compare]`` keys one by one,
        targets are matched by name (a ``_URL`` replaces the file's ``base_url`` and the other
        way round; headers are matched case-insensitively), and targets declared in
        ``SHADOW_TARGETS`` that the file does not have are appended.
        """
        overrides, env_origins = self._parse_env(environ, _known_targets(data))
        merged = dict(data)
        origins: dict[str, str] = {}
        for key, value in overrides.items():
            if key == "compare":
                current = merged.get("compare")
                if current is None or isinstance(current, Mapping):
                    merged["compare"] = {**(current or {}), **value}
                    for k in value:
                        origins[f"compare.{k}"] = env_origins[("compare", k)]
            elif key == "targets":
                _merge_targets(merged, value, env_origins, origins)
            else:
                merged[key] = value
                origins[key] = env_origins[(key,)]
        return merged, origins

    def _parse_env(self, environ: Mapping[str, str], known: Sequence[str]) -> tuple[dict[str, Any], _Origins]:
        """The options the ``SHADOW_*`` variables of ``environ`` set, in the file's layout,
        and which variable set each.

        ``known`` are the names of targets already configured (in a file), which
        ``SHADOW_TARGET_<NAME>_*`` variables may address; ``SHADOW_TARGETS`` declares more.
        The overrides hold only what the environment sets, e.g. ``{"max_queue": 50,
        "compare": {"abs_tol": 0.01}, "targets": [{"name": "churn-v2", "sample_rate": 0.1}]}``;
        an empty value of an optional option is ``None`` (unset). A bad value or an unknown
        variable raises ``ValueError`` naming the variable.
        """
        overrides: dict[str, Any] = {}
        origins: _Origins = {}
        declared: list[str] = []
        if _TARGETS_ENV in environ:
            declared = [n.strip() for n in environ[_TARGETS_ENV].split(",") if n.strip()]
            for name in declared:
                if declared.count(name) > 1:
                    raise ValueError(f"{_TARGETS_ENV}: target {name!r} is declared twice")
        names = list(dict.fromkeys([*known, *declared]))
        by_env: dict[str, list[str]] = {}
        for name in names:
            by_env.setdefault(_env_name(name), []).append(name)
        targets: dict[str, dict[str, Any]] = {name: {"name": name} for name in declared}
        for name in declared:
            origins[("targets", name)] = _TARGETS_ENV

        for var in sorted(environ):
            if not var.startswith(ENV_PREFIX) or var in FOREIGN_ENV or var == _TARGETS_ENV:
                continue
            text = environ[var]
            if var in self._scalar_vars:
                param = self._scalar_vars[var]
                overrides[param.name] = _parse_env_value(var, param, text)
                origins[(param.name,)] = var
            elif var in self._compare_vars:
                param = self._compare_vars[var]
                overrides.setdefault("compare", {})[param.name] = _parse_env_value(var, param, text)
                origins[("compare", param.name)] = var
            elif var.startswith(_TARGET_ENV):
                name, key = self._split_target_var(var, by_env)
                table = targets.setdefault(name, {"name": name})
                if key.startswith(_HEADER):
                    header = key[len(_HEADER) :].replace("_", "-").lower()
                    if not header:
                        raise ValueError(f"{var}: no header name after {_HEADER}")
                    table.setdefault("headers", {})[header] = text.strip()
                    origins[("targets", name, "headers", header)] = var
                else:
                    param = self._target_keys[key]
                    table[param.name] = _parse_env_value(var, param, text)
                    origins[("targets", name, param.name)] = var
            else:
                choices = [*self._scalar_vars, *self._compare_vars, _TARGETS_ENV, *sorted(FOREIGN_ENV)]
                choices += [f"{_TARGET_ENV}{upper}_{key}" for upper in by_env for key in self._target_keys]
                match = _suggest_var(var, choices)
                hint = f" (did you mean {match!r}?)" if match else ""
                raise ValueError(f"{var}: unknown variable{hint}")
        if targets:
            # Known targets first, in their order, then the newly declared ones.
            order = {name: i for i, name in enumerate(names)}
            overrides["targets"] = sorted(targets.values(), key=lambda t: order[t["name"]])
        return overrides, origins

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


# --------------------------------------------------------------------------- errors


def _join(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)


def _parent(path: str) -> str:
    return re.sub(r"(\[\d+\]|\.[^.\[]*|^[^.\[]*)$", "", path, count=1)


class _Where:
    """Turns a key path into an error message naming where the value came from."""

    def __init__(self, source: str, origins: Mapping[str, str] | None = None) -> None:
        self.source = source
        self.origins = dict(origins or {})

    def label(self, path: str) -> str:
        while path:
            if path in self.origins:
                return self.origins[path]
            path = _parent(path)
        return self.source

    def error(self, path: str, message: str) -> ValueError:
        where = self.label(path)
        return ValueError(f"{where}: {path}: {message}" if path else f"{where}: {message}")


def _suggest(word: str, choices: Iterable[str]) -> str | None:
    """The closest of ``choices`` to ``word`` (case-insensitively), if any is close."""
    by_lower = {c.lower(): c for c in choices}
    match = difflib.get_close_matches(word.lower(), list(by_lower), n=1, cutoff=0.6)
    return by_lower[match[0]] if match else None


def _suggest_var(var: str, choices: Iterable[str]) -> str | None:
    """Like :func:`_suggest`, ignoring the common ``SHADOW_`` prefix (it makes everything look alike)."""
    n = len(ENV_PREFIX)
    match = _suggest(var[n:], [c[n:] for c in choices])
    return None if match is None else ENV_PREFIX + match


def _unknown(word: str, choices: Iterable[str], what: str) -> str:
    choices = list(choices)
    match = _suggest(word, choices)
    if match is not None:
        return f"unknown {what} (did you mean {match!r}?)"
    return f"unknown {what} (expected one of: {', '.join(choices)})"


def _show(value: Any) -> str:
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, list | tuple):
        return "an array"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


# --------------------------------------------------------------------------- values -> constructor arguments


def _strings(value: Any, path: str, where: _Where, want: str) -> list[str]:
    if isinstance(value, str | bytes) or not isinstance(value, Sequence | Set):
        raise where.error(path, f"expected {want}, got {_show(value)}")
    items = sorted(value) if isinstance(value, Set) else list(value)
    for i, item in enumerate(items):
        if not isinstance(item, str):
            raise where.error(f"{path}[{i}]", f"expected a string, got {_show(item)}")
    return items


def _string_table(value: Any, path: str, where: _Where, want: str) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise where.error(path, f"expected {want}, got {_show(value)}")
    for key, item in value.items():
        if not isinstance(key, str) or not isinstance(item, str):
            raise where.error(_join(path, key), f"expected a string, got {_show(item)}")
    return dict(value)


_FIELD_IN_MESSAGE = re.compile(r"^(\w+)\.(\w+)((?:\[\d+\])*):")


def _construct(cls: type[_T], kwargs: dict[str, Any], path: str, where: _Where) -> _T:
    try:
        return cls(**kwargs)
    except ValueError as exc:
        message = str(exc)
        # "ShadowTarget.sample_rate: ..." at targets[0] is about targets[0].sample_rate.
        m = _FIELD_IN_MESSAGE.match(message)
        if m and m[1] == cls.__name__:
            path = _join(path, m[2]) + m[3]
        raise where.error(path, message) from exc


# --------------------------------------------------------------------------- TOML file


def _read_toml(name: str) -> dict[str, Any]:
    try:
        with open(name, "rb") as f:
            raw = f.read()
    except OSError as exc:
        raise ValueError(f"{name}: cannot read the file: {exc.strerror or exc}") from exc
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{name}: not UTF-8 text (byte {exc.start}: {exc.reason})") from exc
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        m = re.search(r"\s*\(at line (\d+), column (\d+)\)$", message)
        if m:
            message = f"line {m[1]}, column {m[2]}: invalid TOML: {message[: m.start()]}"
        else:
            message = f"invalid TOML: {message}"
        raise ValueError(f"{name}: {message}") from exc


# --------------------------------------------------------------------------- environment


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
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
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
    merged: dict[str, Any], overrides: list[dict[str, Any]], env_origins: _Origins, origins: dict[str, str]
) -> None:
    current = merged.get("targets")
    if current is None:
        current = []
    elif isinstance(current, str | bytes) or not isinstance(current, Sequence):
        return  # not a list of tables: building reports the file's error
    tables = list(current)
    for override in overrides:
        name = override["name"]
        index = next(
            (i for i, t in enumerate(tables) if isinstance(t, Mapping) and t.get("name") == name),
            None,
        )
        if index is None:
            if "url" not in override and "base_url" not in override:
                var = f"{_TARGET_ENV}{_env_name(name)}"
                raise ValueError(f"{_TARGETS_ENV}: target {name!r} needs {var}_URL or {var}_BASE_URL")
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


# --------------------------------------------------------------------------- TOML writing


def _toml_line(key: str, value: Any) -> str:
    if value is None:
        return f"# {key} is not set"
    return f"{_toml_key(key)} = {_toml_value(value)}"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value:_}" if abs(value) >= 10_000 else str(value)
    if isinstance(value, float):
        return repr(value)  # finite (the constructors refuse nan and inf); always has . or e
    if isinstance(value, str):
        return _toml_str(value)
    if isinstance(value, Set):
        return _toml_value(sorted(value))
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {value!r} as TOML")


_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def _toml_str(text: str) -> str:
    out = []
    for ch in text:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else _toml_str(key)
