"""The one way numbers are printed in the text and HTML reports, so both show the same digits."""

from __future__ import annotations

from typing import Any

__all__ = ["fmt"]


def fmt(value: Any, digits: int = 4) -> str:
    """``n/a`` for a missing value, a float to ``digits`` decimals, anything else as ``str``."""
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)
