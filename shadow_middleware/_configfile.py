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

Every error names where the bad value came from (the file, or the variable) and its key
path, then the constructor's own message when it is the one that refused the value:
``shadow.toml: targets[0].sample_rate: ShadowTarget.sample_rate: must be in [0, 1], got 1.5``.
Loading does not stop at the first error: every unknown key, unknown variable and bad value
is collected, and one :class:`ConfigErrors` (a ``ValueError``) lists them, one per line.
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

__all__ = ["ENV_PREFIX", "FOREIGN_ENV", "STRICT_ENV", "ConfigErrors", "ConfigLoader"]

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
_CONFIG_ENV = "SHADOW_CONFIG"
_TARGETS_ENV = "SHADOW_TARGETS"
_TARGET_ENV = "SHADOW_TARGET_"
_COMPARE_ENV = "SHADOW_COMPARE_"
_HEADER = "HEADER_"
_ENV_SOURCE = "environment"
_BASE_SOURCE = "base"
_MASK = "***"

TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
#: How an environment variable says "off" (also the SHADOW_ENABLED kill switch).
FALSE_WORDS = frozenset({"0", "false", "no", "off"})


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

        Unknown keys, wrong types and values the constructors refuse raise one
        :class:`ConfigErrors` listing every one of them, one per line:
        ``"<path>: <key path>: <what is wrong>"``. An unreadable file or a TOML syntax error
        (with its line) is a ``ValueError`` on its own: nothing else can be checked then.
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
        modified. Bad values and unknown variables raise one :class:`ConfigErrors` listing
        each, naming the variable (or the file, or ``base``, that the bad value comes from).
        """
        return self.from_layers([("", environ)], base=base)

    def from_layers(
        self, layers: Sequence[tuple[str, Mapping[str, str]]], *, base: Mapping[str, Any] | None = None
    ) -> _C:
        """Like :meth:`from_env`, with several sets of ``SHADOW_*`` variables, each applied on
        top of the ones before it (all of them on top of the file).

        Parameters:
            layers: ``(label, variables)`` pairs, lowest precedence first. The file is the one
                the last layer with a non-empty ``SHADOW_CONFIG`` names. Errors about a layer's
                variables start with ``"<label>: "`` when the label is not empty
                (``("app.config", {...})``: ``app.config: SHADOW_MAX_QUEUE: ...``).
            base: in-code defaults, under the file (as for :meth:`from_env`).
        """
        path = None
        for _, variables in layers:
            path = variables.get(_CONFIG_ENV) or path
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
        where = _Where(source, origins)
        for label, variables in layers:
            data = self._apply_env(data, variables, where, f"{label}: " if label else "")
        return self._build(data, where)

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

    def data(self, config: _C) -> dict[str, Any]:
        """``config`` in the file's layout as plain data (str, int, float, bool, list, dict),
        every value exact, target header values included (never log it).

        ``from_env({}, base=loader.data(config))`` rebuilds an equal configuration: this is
        how ``isolation="process"`` hands the configuration to its helper process. Options
        that are not set (``None``) are left out.
        """
        out: dict[str, Any] = {}
        for name, param in self.config_params.items():
            if param.kind == "targets":
                out[name] = [
                    {
                        key: _plain(getattr(target, key))
                        for key in self.target_params
                        if getattr(target, key) is not None
                    }
                    for target in config.targets
                ]
            elif param.kind == "compare":
                compare = config.compare
                table: dict[str, Any] = {}
                for key in self.compare_params:
                    if key == "fields":
                        pairs = compare.fields
                        as_table = any(p != c for p, c in pairs)
                        table[key] = dict(pairs) if as_table else [p for p, _ in pairs]
                    elif getattr(compare, key) is not None:
                        table[key] = _plain(getattr(compare, key))
                out[name] = table
            elif getattr(config, name) is not None:
                out[name] = _plain(getattr(config, name))
        return out

    # ----------------------------------------------------------------------- mapping -> objects

    def _build(self, data: Any, where: _Where) -> _C:
        """The configuration ``data`` (the file's layout) describes; raises :class:`ConfigErrors`
        with every error found in it (and the ones already in ``where``)."""
        if not isinstance(data, Mapping):
            raise ValueError(f"{where.source}: expected a table of options, got {_show(data)}")
        kwargs, failed = self._kwargs(data, "", self.config_params, where)
        config: _C | None = None
        try:
            config = self._construct(self._config_cls, self.config_params, kwargs, failed, "", where)
        except _Reported:
            pass
        if where.errors:
            raise ConfigErrors(where.errors)
        if config is None:  # pragma: no cover - _Reported always follows a recorded error
            raise ValueError(f"{where.source}: invalid configuration")
        return config

    def _misplaced(self, key: str, message: str) -> str:
        top = difflib.get_close_matches(key.lower(), list(self.config_params), n=1, cutoff=0.6)
        top_ratio = difflib.SequenceMatcher(None, key.lower(), top[0]).ratio() if top else 0.0
        for table, params in (
            ("each [[targets]] table", self.target_params),
            ("the [compare] table", self.compare_params),
        ):
            near = difflib.get_close_matches(key.lower(), list(params), n=1, cutoff=0.6)
            if near and difflib.SequenceMatcher(None, key.lower(), near[0]).ratio() > top_ratio:
                return f"unknown key (did you mean {near[0]!r}? It belongs in {table})"
        return message

    def _kwargs(
        self, data: Mapping[Any, Any], path: str, params: Mapping[str, _Param], where: _Where
    ) -> tuple[dict[str, Any], set[str]]:
        """The constructor arguments ``data`` gives, and the names of those that are bad or
        missing. Their errors are recorded in ``where``; a bad value is left out."""
        kwargs: dict[str, Any] = {}
        failed = {name for name in params if _join(path, name) in where.reported}
        for key, value in data.items():
            key_path = _join(path, key)
            param = params.get(key) if isinstance(key, str) else None
            if param is None:
                message = _unknown(str(key), params, "key")
                if not path:  # a top-level typo may be a target's or [compare]'s key in the wrong place
                    message = self._misplaced(str(key), message)
                where.add(key_path, message)
                continue
            try:
                kwargs[key] = self._convert(value, param, key_path, where)
            except _Reported as exc:
                failed.add(key)
                if exc.stand_in is not None:
                    kwargs[key] = exc.stand_in
            except ValueError as exc:
                where.errors.append(str(exc))
                failed.add(key)
        for name, param in params.items():
            if param.required and name not in kwargs:
                if name not in failed:
                    hint = (
                        " (add a [[targets]] table, or declare targets in SHADOW_TARGETS)"
                        if name == "targets"
                        else ""
                    )
                    where.add(_join(path, name), f"missing; it is required{hint}")
                    failed.add(name)
                if param.kind == "targets":
                    kwargs[name] = []  # a stand-in, so that the other options are still checked
        return kwargs, failed

    def _construct(
        self,
        cls: type[_T],
        params: Mapping[str, _Param],
        kwargs: Mapping[str, Any],
        failed: Set[str],
        path: str,
        where: _Where,
    ) -> _T:
        """``cls(**kwargs)``, recording the errors it raises with their key paths.

        A constructor may report several fields at once (:class:`ConfigErrors`) or stop at the
        first: while each error names an optional field, that field is left out and the call
        repeated, so that every bad field is found. An error about a field in ``failed`` (its
        value was already reported and left out) is a consequence and is not recorded again.
        Returns the object, made of the good fields alone when some were bad (a stand-in for
        checking the rest; ``where`` has the errors); raises :class:`_Reported` when no object
        can be made.
        """
        if any(p.required and name not in kwargs for name, p in params.items()):
            raise _Reported()
        args = dict(kwargs)
        skip = set(failed)
        while True:
            try:
                return cls(**args)
            except ValueError as exc:
                lines = exc.errors if isinstance(exc, ConfigErrors) else (str(exc),)
                retry: list[str] = []
                final = False
                for line in lines:
                    # "ShadowTarget.sample_rate: ..." at targets[0] is about targets[0].sample_rate.
                    m = _FIELD_IN_MESSAGE.match(line)
                    field = m[2] if m is not None and m[1] == cls.__name__ else None
                    if field is not None and field in skip:
                        continue
                    if field is not None and field not in args and _mentions(line, skip):
                        # About a field never given, because of one left out: "give exactly one
                        # of url and base_url" once a bad base_url is out. Its own error says it.
                        continue
                    where.add(path if m is None or field is None else _join(path, field) + m[3], line)
                    if field is None or field not in args or params[field].required:
                        final = True
                    else:
                        retry.append(field)
                if final or not retry:
                    raise _Reported() from exc
                for field in retry:
                    args.pop(field, None)
                    skip.add(field)

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
            kwargs, failed = self._kwargs(value, path, self.compare_params, where)
            return self._construct(self._compare_cls, self.compare_params, kwargs, failed, path, where)
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
        incomplete = False
        for i, item in enumerate(value):
            item_path = f"{path}[{i}]"
            if not isinstance(item, Mapping):
                where.add(item_path, f"expected a table, got {_show(item)}")
                incomplete = True
                continue
            kwargs, failed = self._kwargs(item, item_path, self.target_params, where)
            try:
                out.append(
                    self._construct(self._target_cls, self.target_params, kwargs, failed, item_path, where)
                )
            except _Reported:
                incomplete = True
        if incomplete:
            # The targets that could be made stand in, so the other options are still checked.
            raise _Reported(out)
        return out

    # ----------------------------------------------------------------------- environment

    def _apply_env(
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


# --------------------------------------------------------------------------- errors


def _join(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)


def _parent(path: str) -> str:
    return re.sub(r"(\[\d+\]|\.[^.\[]*|^[^.\[]*)$", "", path, count=1)


class ConfigErrors(ValueError):
    """Every error found in one configuration, one per line.

    Parameters:
        errors: the messages, each naming its source and field, first found first.

    ``str()`` joins them with newlines: the first line is the first error, and a single
    error reads exactly as a plain ``ValueError`` with that message. ``errors`` keeps them.
    """

    def __init__(self, errors: Iterable[str]) -> None:
        self.errors = tuple(errors)
        super().__init__("\n".join(self.errors))

    def __reduce__(self) -> tuple[type[ConfigErrors], tuple[tuple[str, ...]]]:
        return type(self), (self.errors,)


class _Reported(Exception):
    """A value whose errors are already recorded; ``stand_in``, when not None, is what can
    be used in its place to go on checking the rest (the targets that could be made)."""

    def __init__(self, stand_in: Any = None) -> None:
        super().__init__()
        self.stand_in = stand_in


class _Where:
    """Turns a key path into an error message naming where the value came from, and collects
    the errors of one configuration.

    Parameters:
        source: what a key path comes from unless ``origins`` says otherwise (the file).
        origins: key path -> the variable (or ``base``) its value comes from.
    """

    def __init__(self, source: str, origins: Mapping[str, str] | None = None) -> None:
        self.source = source
        self.origins = dict(origins or {})
        self.errors: list[str] = []
        #: Key paths whose errors are recorded already (a consequence is not reported again).
        self.reported: set[str] = set()

    def label(self, path: str) -> str:
        while path:
            if path in self.origins:
                return self.origins[path]
            path = _parent(path)
        return self.source

    def error(self, path: str, message: str) -> ValueError:
        where = self.label(path)
        return ValueError(f"{where}: {path}: {message}" if path else f"{where}: {message}")

    def add(self, path: str, message: str) -> None:
        """Record an error about ``path``."""
        self.errors.append(str(self.error(path, message)))


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


def _mentions(line: str, fields: Iterable[str]) -> bool:
    """Whether the message ``line`` (after its ``Class.field:`` prefix) names one of ``fields``."""
    text = line.partition(":")[2]
    return any(re.search(rf"(?<![\w.]){re.escape(f)}(?!\w)", text) for f in fields)


_FIELD_IN_MESSAGE = re.compile(r"^(\w+)\.(\w+)((?:\[\d+\])*):")


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


# --------------------------------------------------------------------------- TOML writing


def _plain(value: Any) -> Any:
    """A configuration value as plain data: sets as sorted lists, tuples as lists."""
    if isinstance(value, Set):
        return sorted(value)
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


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
