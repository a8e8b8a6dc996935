"""Response comparison: decoding, JSON pointers, tolerant structural diff.

Pure functions over bytes; no I/O, no framework, no telemetry.
"""

from __future__ import annotations

import json
import math
import zlib
from dataclasses import dataclass, field
from typing import Any

from ._config import Compare

MAX_DIFF_PATHS = 20
MAX_STRING_VALUE = 256
#: gzip members decoded in one body (RFC 1952 §2.2 allows several back to back). An HTTP
#: answer is one member in practice; a few appear where a server concatenates separately
#: compressed pieces. Each member costs a Python round (a new decompressor and a copy of the
#: rest of the body): 52,428 empty members in 1 MiB cost ~0.8-1 s of CPU per answer. A body
#: with more is treated as corrupt.
MAX_GZIP_MEMBERS = 16

# Bound at import: an app or a test that patches ``json.loads`` globally must not reach the
# comparison on the background thread.
_loads = json.loads

MISSING: Any = object()  # what resolve() returns for an absent pointer
AttrValue = str | bool | int | float


def decode_body(body: bytes, encoding: str, cap: int) -> bytes:
    """Undo gzip/deflate content coding, keeping at most ``cap`` decoded bytes.

    The cap is applied while decompressing, so a gzip bomb costs at most ``cap``
    bytes of memory and the work of inflating ``cap`` bytes. Unknown codings and corrupt
    streams are returned as they came: the comparison then works on the raw bytes. A
    gzip body of more than :data:`MAX_GZIP_MEMBERS` members is corrupt too, so the CPU
    of one decode is bounded by the size of the body and ``cap``, whatever its shape.
    """
    coding = encoding.strip().lower()
    if not body or coding in ("", "identity"):
        return body
    attempts: tuple[int, ...]
    if coding in ("gzip", "x-gzip"):
        attempts = (31,)
    elif coding == "deflate":
        # RFC 9110 says zlib-wrapped; some servers send raw deflate anyway.
        attempts = (15, -15)
    else:
        return body
    for wbits in attempts:
        try:
            return _inflate(body, wbits, cap)
        except zlib.error:
            continue
    return body


def _inflate(body: bytes, wbits: int, cap: int) -> bytes:
    out: list[bytes] = []
    size = 0
    data = body
    for _ in range(MAX_GZIP_MEMBERS):
        d = zlib.decompressobj(wbits)
        chunk = d.decompress(data, cap - size)
        out.append(chunk)
        size += len(chunk)
        if size >= cap:
            return b"".join(out)  # capped: the rest is never inflated
        if not d.eof:
            raise zlib.error("truncated stream")
        data = d.unused_data
        if wbits != 31 or not data:
            return b"".join(out)
        # gzip allows several members back to back (RFC 1952 §2.2).
    raise zlib.error(f"more than {MAX_GZIP_MEMBERS} gzip members")


def escape_token(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def pointer(tokens: tuple[str, ...]) -> str:
    return "".join("/" + escape_token(t) for t in tokens)


def resolve(doc: Any, tokens: tuple[str, ...]) -> Any:
    """The value at ``tokens`` in ``doc``, or ``MISSING``."""
    for token in tokens:
        if isinstance(doc, dict):
            if token not in doc:
                return MISSING
            doc = doc[token]
        elif isinstance(doc, list):
            if not token.isdigit() or (len(token) > 1 and token[0] == "0"):
                return MISSING
            index = int(token)
            if index >= len(doc):
                return MISSING
            doc = doc[index]
        else:
            return MISSING
    return doc


def try_json(body: bytes) -> tuple[bool, Any]:
    if not body:
        return False, None
    try:
        return True, _loads(body)
    except (ValueError, RecursionError):
        return False, None


@dataclass(slots=True)
class Diff:
    """The result of comparing two bodies."""

    count: int = 0
    paths: list[str] = field(default_factory=list)
    # (attribute suffix, primary value, candidate value); values may be None when absent.
    values: list[tuple[str, AttrValue | None, AttrValue | None]] = field(default_factory=list)
    candidate_unparseable: bool = False
    decisions: int = 0  # numbers compared as decisions (Compare.threshold)
    flips: int = 0  # of which the decisions differ
    score_abs_diff: float | None = None  # |primary - candidate| of the first numeric field
    # Compare.fields (primary pointers) absent from both JSON bodies: nothing was compared
    # there, which is not agreement (a typo in the pointer, say).
    missing: list[str] = field(default_factory=list)

    def add(self, tokens: tuple[str, ...]) -> None:
        self.count += 1
        if len(self.paths) < MAX_DIFF_PATHS:
            self.paths.append(pointer(tokens))


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class _Differ:
    __slots__ = ("abs_tol", "diff", "ignore", "rel_tol", "threshold")

    def __init__(self, cfg: Compare, diff: Diff) -> None:
        self.abs_tol = cfg.abs_tol
        self.rel_tol = cfg.rel_tol
        self.threshold = cfg.threshold
        self.ignore = cfg.ignore_tokens
        self.diff = diff

    def numbers_equal(self, a: float, b: float) -> bool:
        if self.threshold is not None:
            self.diff.decisions += 1
            same = (a >= self.threshold) == (b >= self.threshold)
            if not same:
                self.diff.flips += 1
            return same
        if a == b:
            return True
        if a != a and b != b:  # NaN on both sides (json.loads accepts NaN) is the same answer
            return True
        if not self.abs_tol and not self.rel_tol:
            return False  # exact: also keeps 2**53 + 1 != 2**53, which floats would merge
        try:
            return math.isclose(a, b, rel_tol=self.rel_tol, abs_tol=self.abs_tol)
        except OverflowError:  # integers beyond float range
            return False

    def walk(self, a: Any, b: Any, path: tuple[str, ...], depth: int = 0) -> None:
        if self.ignore and path in self.ignore:
            return
        if a is MISSING or b is MISSING:
            if a is not b:
                self.diff.add(path)
            return
        if _is_number(a) and _is_number(b):
            if not self.numbers_equal(a, b):
                self.diff.add(path)
        elif isinstance(a, dict) and isinstance(b, dict):
            if depth > 64:
                if a != b:
                    self.diff.add(path)
                return
            for key in a:
                self.walk(a[key], b.get(key, MISSING), (*path, key), depth + 1)
            for key in b:
                if key not in a:
                    self.walk(MISSING, b[key], (*path, key), depth + 1)
        elif isinstance(a, list) and isinstance(b, list):
            if depth > 64:
                if a != b:
                    self.diff.add(path)
                return
            for i in range(max(len(a), len(b))):
                self.walk(
                    a[i] if i < len(a) else MISSING,
                    b[i] if i < len(b) else MISSING,
                    (*path, str(i)),
                    depth + 1,
                )
        elif type(a) is not type(b) or a != b:
            self.diff.add(path)


def _attr(value: Any) -> AttrValue | None:
    if isinstance(value, str):
        return value[:MAX_STRING_VALUE]
    if isinstance(value, bool | int | float):
        return value
    return None


def compare_bodies(cfg: Compare, primary: bytes, candidate: bytes) -> Diff:
    """Compare two decoded bodies under ``cfg``.

    JSON bodies are compared structurally (``fields`` or the whole document minus
    ``ignore``); when the primary's body is not JSON the bytes are compared.
    """
    diff = Diff()
    p_ok, p_doc = try_json(primary)
    if not p_ok:
        if primary != candidate:
            diff.add(())
        return diff
    c_ok, c_doc = try_json(candidate)
    if not c_ok:
        diff.candidate_unparseable = True
        diff.add(())
        return diff
    differ = _Differ(cfg, diff)
    if not cfg.field_tokens:
        differ.walk(p_doc, c_doc, ())
        return diff
    for p_tokens, c_tokens, suffix in cfg.field_tokens:
        p_val = resolve(p_doc, p_tokens)
        c_val = resolve(c_doc, c_tokens)
        if p_val is MISSING and c_val is MISSING:
            diff.missing.append(pointer(p_tokens))
        differ.walk(p_val, c_val, p_tokens)
        if diff.score_abs_diff is None and _is_number(p_val) and _is_number(c_val):
            try:
                gap = abs(float(p_val) - float(c_val))
            except OverflowError:  # integers beyond float range
                gap = math.inf
            if math.isfinite(gap):
                diff.score_abs_diff = gap
        if cfg.record_values:
            diff.values.append(
                (
                    suffix,
                    None if p_val is MISSING else _attr(p_val),
                    None if c_val is MISSING else _attr(c_val),
                )
            )
    return diff
