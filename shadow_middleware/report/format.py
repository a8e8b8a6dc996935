"""The one way numbers and input strings are printed in the text and HTML reports, so both show the
same digits and no input can drive the terminal."""

from __future__ import annotations

import math
import re
from typing import Any

__all__ = ["clean", "fmt"]

# Control characters: C0 (with tab and newline: every text line is ours), DEL, C1; and the Unicode
# line separators and bidirectional overrides, which can make a line read as something else.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
# Above this magnitude a fixed-point float is a wall of digits: scientific notation instead.
_FIXED_BELOW = 1e9


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def clean(text: Any, limit: int | None = None) -> str:
    """``text`` as ``str`` with every control character escaped (``ESC`` as ``\\x1b``), so a string
    from the input (a route, a correlation id, a file's keys, an error message quoting a line) cannot
    move the cursor, clear the screen or retitle the terminal. ``limit``: at most that many characters
    (of the input), then ``...``."""
    s = str(text)
    if limit is not None and len(s) > limit:
        s = s[:limit] + "..."
    return _CONTROL.sub(_escape, s)


def fmt(value: Any, digits: int = 4) -> str:
    """``n/a`` for a missing value, a float to ``digits`` decimals (scientific notation from 1e9 on),
    anything else as ``str``."""
    if value is None:
        return "n/a"
    if isinstance(value, float):
        if math.isfinite(value) and abs(value) >= _FIXED_BELOW:
            return f"{value:.{digits}e}"
        return f"{value:.{digits}f}"
    return clean(value)
