"""Reading the report's side inputs (labels, a reference sample): CSV or JSON lines.

They are hostile input too: lines are read at most :data:`.spans.MAX_LINE_BYTES` at a time and
decoded strictly. A line too long, bytes that are not UTF-8, a CSV field over the csv module's limit or
JSON nested deeper than the parser's stack raise :class:`SideFileError`: ``path:line: what``, one line.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .spans import TOO_LONG, ErrorHandler, capped_lines

__all__ = ["SideFileError", "csv_rows", "is_json_lines", "json_objects", "text_lines"]

_BOM = b"\xef\xbb\xbf"


class SideFileError(ValueError):
    """A labels or reference file that cannot be read; the message is ``path:line: what is wrong``."""


def is_json_lines(path: str | Path) -> bool:
    """Whether the file holds JSON lines (it starts with ``{``) rather than CSV."""
    with open(path, "rb") as f:
        head = f.read(4096)
    return head.removeprefix(_BOM).lstrip().startswith(b"{")


def text_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """``(line number, line)`` of a UTF-8 file (a BOM skipped, the line ending kept); raises
    :class:`SideFileError` for a line over the cap or bytes that are not UTF-8."""
    with open(path, "rb") as f:
        for number, raw in enumerate(capped_lines(f), start=1):
            if raw is None:
                raise SideFileError(f"{path}:{number}: {TOO_LONG}")
            if number == 1:
                raw = raw.removeprefix(_BOM)
            try:
                yield number, raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                where = f"byte {exc.start + 1} of the line"
                raise SideFileError(f"{path}:{number}: not UTF-8 ({where})") from None


def csv_rows(path: str | Path) -> Iterator[tuple[int, list[str]]]:
    """``(line number, row)`` of a CSV file (the header first); raises :class:`SideFileError` for what
    :func:`text_lines` refuses and for what the csv module refuses (a field over its size limit)."""
    reader = csv.reader(line for _, line in text_lines(path))
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise SideFileError(f"{path}:{reader.line_num}: CSV: {exc}") from None
        yield reader.line_num, row


def json_objects(
    path: str | Path, on_error: ErrorHandler | None, expected: str = "expected a JSON object"
) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` for each line of the file that is a JSON object; other lines are
    reported to ``on_error(path, line, message)`` (``expected`` for JSON that is not an object)
    and skipped. JSON nested too deep to parse raises :class:`SideFileError`."""
    for number, line in text_lines(path):
        if not line.strip():
            continue
        try:
            doc = json.loads(line)
        except RecursionError:
            raise SideFileError(f"{path}:{number}: JSON nested too deep") from None
        except ValueError as exc:
            if on_error is not None:
                on_error(str(path), number, f"not JSON: {exc}")
            continue
        if not isinstance(doc, dict):
            if on_error is not None:
                on_error(str(path), number, expected)
            continue
        yield number, doc
