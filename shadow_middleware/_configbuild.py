"""Coercing and validating values: a mapping in the file's layout -> the configuration objects.

What each constructor accepts is read from its signature (:func:`_params`); :class:`Builder`
checks the type of every value, calls the constructors and records every error they raise at
its key path, going on past the first so that one :class:`ConfigErrors` lists them all.
"""

from __future__ import annotations

import difflib
import inspect
import re
from collections.abc import Iterable, Mapping, Sequence, Set
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from ._configerrors import ConfigErrors, _join, _Reported, _show, _unknown, _Where

__all__ = ["Builder", "Params"]


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


@dataclass(frozen=True, slots=True)
class Params:
    """The keywords of the three constructors, each with the kind of value it takes."""

    config: dict[str, _Param]
    target: dict[str, _Param]
    compare: dict[str, _Param]

    @classmethod
    def of(cls, config_cls: type, target_cls: type, compare_cls: type) -> Params:
        """Read from the constructors of ``ShadowConfig``, ``ShadowTarget`` and ``Compare``."""
        return cls(
            _params(config_cls, {"targets": "targets", "compare": "compare"}),
            _params(target_cls, {"headers": "headers"}),
            _params(compare_cls, {"fields": "fields"}),
        )


class _Config(Protocol):
    """What ``describe`` and ``data`` read of a configuration besides its keywords."""

    @property
    def targets(self) -> Sequence[Any]: ...

    @property
    def compare(self) -> Any: ...


_C = TypeVar("_C", bound=_Config)
_T = TypeVar("_T")


class Builder(Generic[_C]):
    """Builds the configuration a mapping (the file's layout) describes, or raises one
    :class:`ConfigErrors` with every error in it.

    Parameters:
        params: what each constructor accepts (:meth:`Params.of` the three classes).
        config_cls, target_cls, compare_cls: ``ShadowConfig``, ``ShadowTarget``, ``Compare``.
    """

    def __init__(self, params: Params, config_cls: type[_C], target_cls: type, compare_cls: type) -> None:
        self._config_cls = config_cls
        self._target_cls = target_cls
        self._compare_cls = compare_cls
        self.config_params = params.config
        self.target_params = params.target
        self.compare_params = params.compare

    def build(self, data: Any, where: _Where) -> _C:
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
