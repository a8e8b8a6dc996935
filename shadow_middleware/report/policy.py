"""Promotion policy: a tiny, safe rule language (no ``eval``).

A rule is ``EXPR OP EXPR`` with ``OP`` one of ``>= <= > < == !=``; an expression is built from
numbers, metric names (letters, digits, ``_`` and ``.``), ``+ - * /``, unary minus and parentheses,
with the usual precedence. ``min_samples = N`` is special: a group with fewer than ``N`` comparisons
(match + mismatch) is "not enough data". A policy file is TOML::

    min_samples = 500
    require = ["agreement >= 0.95", "candidate.p99_ms <= 1.2 * primary.p99_ms"]
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .metrics import METRICS

__all__ = [
    "Policy",
    "PolicyError",
    "Rule",
    "RuleResult",
    "load_policy",
    "parse_rule",
]

_COMPARISONS: dict[str, Callable[[float, float], bool]] = {
    ">=": lambda a, b: a >= b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    "<": lambda a, b: a < b,
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
}


class PolicyError(ValueError):
    """A rule or policy file that does not parse."""


# --- tokens and syntax tree ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Tok:
    kind: str  # "num", "name", "op", "(", ")", "cmp", "=", "end"
    text: str
    pos: int


def _tokenize(text: str) -> list[_Tok]:
    toks: list[_Tok] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch.isspace():
            i += 1
        elif ch.isdigit() or (ch == "." and i + 1 < len(text) and text[i + 1].isdigit()):
            j = i
            while j < len(text) and (text[j].isdigit() or text[j] == "."):
                j += 1
            if j < len(text) and text[j] in "eE":
                k = j + 1
                if k < len(text) and text[k] in "+-":
                    k += 1
                if k < len(text) and text[k].isdigit():
                    j = k
                    while j < len(text) and text[j].isdigit():
                        j += 1
            raw = text[i:j]
            try:
                float(raw)
            except ValueError:
                raise PolicyError(f"bad number {raw!r} at position {i + 1}") from None
            toks.append(_Tok("num", raw, i))
            i = j
        elif ch.isalpha() or ch == "_":
            j = i
            while j < len(text) and (text[j].isalnum() or text[j] in "_."):
                j += 1
            toks.append(_Tok("name", text[i:j], i))
            i = j
        elif text.startswith((">=", "<=", "==", "!="), i):
            toks.append(_Tok("cmp", text[i : i + 2], i))
            i += 2
        elif ch in "<>":
            toks.append(_Tok("cmp", ch, i))
            i += 1
        elif ch == "=":
            toks.append(_Tok("=", ch, i))
            i += 1
        elif ch in "+-*/":
            toks.append(_Tok("op", ch, i))
            i += 1
        elif ch in "()":
            toks.append(_Tok(ch, ch, i))
            i += 1
        else:
            raise PolicyError(f"unexpected character {ch!r} at position {i + 1}")
    toks.append(_Tok("end", "", len(text)))
    return toks


@dataclass(frozen=True, slots=True)
class Num:
    value: float


@dataclass(frozen=True, slots=True)
class Name:
    name: str


@dataclass(frozen=True, slots=True)
class Neg:
    operand: Expr


@dataclass(frozen=True, slots=True)
class BinOp:
    op: str
    left: Expr
    right: Expr


Expr = Num | Name | Neg | BinOp


class _Parser:
    def __init__(self, text: str) -> None:
        self.toks = _tokenize(text)
        self.i = 0

    def peek(self) -> _Tok:
        return self.toks[self.i]

    def take(self) -> _Tok:
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def fail(self, tok: _Tok, expected: str) -> PolicyError:
        found = "end of rule" if tok.kind == "end" else repr(tok.text)
        return PolicyError(f"expected {expected} at position {tok.pos + 1}, found {found}")

    def _left_assoc(self, ops: str, operand: Callable[[], Expr]) -> Expr:
        """``operand (OP operand)*`` with ``OP`` one of ``ops``, grouped from the left."""
        node = operand()
        while self.peek().kind == "op" and self.peek().text in ops:
            op = self.take().text
            node = BinOp(op, node, operand())
        return node

    def expr(self) -> Expr:
        return self._left_assoc("+-", self.term)

    def term(self) -> Expr:
        return self._left_assoc("*/", self.factor)

    def factor(self) -> Expr:
        tok = self.take()
        if tok.kind == "op" and tok.text in "+-":
            operand = self.factor()
            return Neg(operand) if tok.text == "-" else operand
        if tok.kind == "num":
            return Num(float(tok.text))
        if tok.kind == "name":
            if tok.text not in METRICS:
                raise PolicyError(
                    f"unknown name {tok.text!r} at position {tok.pos + 1} (known: {', '.join(METRICS)})"
                )
            return Name(tok.text)
        if tok.kind == "(":
            node = self.expr()
            close = self.take()
            if close.kind != ")":
                raise self.fail(close, "')'")
            return node
        raise self.fail(tok, "a number, a metric name or '('")


def _names(node: Expr) -> list[str]:
    if isinstance(node, Name):
        return [node.name]
    if isinstance(node, Neg):
        return _names(node.operand)
    if isinstance(node, BinOp):
        return _names(node.left) + _names(node.right)
    return []


def evaluate(node: Expr, metrics: Mapping[str, float | None]) -> float | None:
    """Value of ``node``; ``None`` when a metric it needs is unavailable or it divides by zero."""
    if isinstance(node, Num):
        return node.value
    if isinstance(node, Name):
        value = metrics.get(node.name)
        return None if value is None or math.isnan(value) else float(value)
    if isinstance(node, Neg):
        inner = evaluate(node.operand, metrics)
        return None if inner is None else -inner
    left, right = evaluate(node.left, metrics), evaluate(node.right, metrics)
    if left is None or right is None:
        return None
    if node.op == "+":
        return left + right
    if node.op == "-":
        return left - right
    if node.op == "*":
        return left * right
    return None if right == 0 else left / right


@dataclass(frozen=True, slots=True)
class RuleResult:
    rule: Rule
    left: float | None
    right: float | None
    status: str  # "PASS" | "FAIL" | "N/A"
    missing: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Rule:
    text: str
    left: Expr
    op: str
    right: Expr

    def names(self) -> list[str]:
        return _names(self.left) + _names(self.right)

    def check(self, metrics: Mapping[str, float | None]) -> RuleResult:
        left, right = evaluate(self.left, metrics), evaluate(self.right, metrics)
        if left is None or right is None:
            missing = tuple(dict.fromkeys(n for n in self.names() if metrics.get(n) is None))
            return RuleResult(self, left, right, "N/A", missing)
        return RuleResult(self, left, right, "PASS" if _COMPARISONS[self.op](left, right) else "FAIL")


@dataclass
class Policy:
    rules: list[Rule] = field(default_factory=list)
    min_samples: int = 0

    def add(self, text: str) -> None:
        """Parse ``text`` (a rule or ``min_samples = N``) into this policy."""
        parsed = parse_rule(text)
        if isinstance(parsed, int):
            self.min_samples = parsed
        else:
            self.rules.append(parsed)


def parse_rule(text: str) -> Rule | int:
    """A :class:`Rule`, or the ``N`` of ``min_samples = N``. Raises :class:`PolicyError`."""
    try:
        parser = _Parser(text)
        toks = parser.toks
        if (
            len(toks) >= 2
            and toks[0].kind == "name"
            and toks[0].text == "min_samples"
            and toks[1].kind == "="
        ):
            if len(toks) != 4 or toks[2].kind != "num":
                raise parser.fail(toks[2] if len(toks) > 2 else toks[-1], "an integer after 'min_samples ='")
            value = float(toks[2].text)
            if value < 0 or value != int(value):
                raise PolicyError(f"min_samples must be a non-negative integer, got {toks[2].text}")
            return int(value)
        left = parser.expr()
        cmp = parser.take()
        if cmp.kind != "cmp":
            raise parser.fail(cmp, "a comparison (>= <= > < == !=) or an arithmetic operator")
        right = parser.expr()
        end = parser.take()
        if end.kind != "end":
            raise parser.fail(
                end, "end of rule" if end.kind != "cmp" else "end of rule (one comparison per rule)"
            )
        return Rule(text.strip(), left, cmp.text, right)
    except PolicyError as exc:
        raise PolicyError(f"rule {text!r}: {exc}") from None


def load_policy(path: str | Path, extra: Sequence[str] = ()) -> Policy:
    """Read a policy TOML file (``min_samples``, ``require``), then add the ``extra`` rules."""
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except OSError as exc:
        raise PolicyError(f"{path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"{path}: {exc}") from None
    policy = Policy()
    unknown = set(doc) - {"min_samples", "require"}
    if unknown:
        raise PolicyError(
            f"{path}: unknown keys {', '.join(sorted(unknown))} (expected min_samples, require)"
        )
    if "min_samples" in doc:
        value = doc["min_samples"]
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise PolicyError(f"{path}: min_samples must be a non-negative integer, got {value!r}")
        policy.min_samples = value
    require = doc.get("require", [])
    if not isinstance(require, list) or not all(isinstance(r, str) for r in require):
        raise PolicyError(f"{path}: require must be a list of strings")
    for text in require:
        try:
            policy.add(text)
        except PolicyError as exc:
            raise PolicyError(f"{path}: {exc}") from None
    for text in extra:
        policy.add(text)
    return policy
