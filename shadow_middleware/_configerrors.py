"""Configuration errors: each one names where its value came from and its key path.

:class:`ConfigErrors` lists every error of one configuration; :class:`_Where` turns a key path
into the source of its value (the file, a ``SHADOW_*`` variable, or ``base``) and collects the
errors; ``_unknown`` and ``_suggest`` add the "did you mean" of a near miss.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["ConfigErrors"]


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
