"""Explaining a configuration: as the TOML file that would make it (``describe``, header
values masked), and as exact plain data (``data``, for the helper process)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Set
from typing import Any

from ._configbuild import Params, _Config

__all__ = ["data", "describe"]

_MASK = "***"


def describe(params: Params, config: _Config) -> str:
    """``config`` as TOML, in the file's layout, every key included.

    Target header values are masked as ``"***"``; options that are not set (``None``)
    appear as comments. Loading the text as a file rebuilds ``config`` (but for the
    masked header values).
    """
    lines = ["# shadow_middleware: effective configuration (header values masked)"]
    for name, param in params.config.items():
        if param.kind not in ("targets", "compare"):
            lines.append(_toml_line(name, getattr(config, name)))
    for target in config.targets:
        lines += ["", "[[targets]]"]
        for name in params.target:
            if name != "headers":
                lines.append(_toml_line(name, getattr(target, name)))
        lines += ["", "[targets.headers]"]
        lines += [f"{_toml_key(k)} = {_toml_str(_MASK)}" for k in target.headers]
    lines += ["", "[compare]"]
    compare = config.compare
    pairs = compare.fields
    as_table = any(p != c for p, c in pairs)
    for name in params.compare:
        if name == "fields":
            if not as_table:
                lines.append(_toml_line(name, [p for p, _ in pairs]))
        else:
            lines.append(_toml_line(name, getattr(compare, name)))
    if as_table:
        lines += ["", "[compare.fields]  # primary pointer = candidate pointer"]
        lines += [f"{_toml_key(p)} = {_toml_str(c)}" for p, c in pairs]
    return "\n".join(lines) + "\n"


def data(params: Params, config: _Config) -> dict[str, Any]:
    """``config`` in the file's layout as plain data (str, int, float, bool, list, dict),
    every value exact, target header values included (never log it).

    ``loader.from_env({}, base=data(params, config))`` rebuilds an equal configuration: this is
    how ``isolation="process"`` hands the configuration to its helper process. Options
    that are not set (``None``) are left out.
    """
    out: dict[str, Any] = {}
    for name, param in params.config.items():
        if param.kind == "targets":
            out[name] = [
                {
                    key: _plain(getattr(target, key))
                    for key in params.target
                    if getattr(target, key) is not None
                }
                for target in config.targets
            ]
        elif param.kind == "compare":
            compare = config.compare
            table: dict[str, Any] = {}
            for key in params.compare:
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
