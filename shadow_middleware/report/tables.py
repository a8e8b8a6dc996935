"""Reading the report's side inputs (labels, a reference sample): CSV or JSON lines."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from .spans import ErrorHandler

__all__ = ["is_json_lines", "json_objects"]


def is_json_lines(f: IO[str]) -> bool:
    """Whether the text file ``f`` holds JSON lines (it starts with ``{``) rather than CSV.
    Leaves ``f`` at its start."""
    head = f.read(4096).lstrip()
    f.seek(0)
    return head.startswith("{")


def json_objects(
    f: IO[str], path: str | Path, on_error: ErrorHandler | None, expected: str = "expected a JSON object"
) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` for each line of ``f`` that is a JSON object; other lines are
    reported to ``on_error(path, line, message)`` (``expected`` for JSON that is not an object)
    and skipped."""
    for number, line in enumerate(f, start=1):
        if not line.strip():
            continue
        try:
            doc = json.loads(line)
        except ValueError as exc:
            if on_error is not None:
                on_error(str(path), number, f"not JSON: {exc}")
            continue
        if not isinstance(doc, dict):
            if on_error is not None:
                on_error(str(path), number, expected)
            continue
        yield number, doc
