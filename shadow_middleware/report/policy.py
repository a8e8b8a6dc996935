"""Promotion policy: a tiny, safe rule language (no ``eval``).

A rule is ``EXPR OP EXPR`` with ``OP`` one of ``>= <= > < == !=``; an expression is built from
numbers, metric names (letters, digits, ``_`` and ``.``), ``+ - * /``, unary minus and parentheses,
with the usual precedence. ``min_samples = N`` and ``min_labelled = N`` are settings, not rules: a
group with fewer than ``N`` comparisons (``compared``: see :mod:`.build`), or with ground truth fewer than
``N`` requests with both scores and a label, is "not enough data". A policy file is TOML::

    min_samples = 500
    require = ["agreement >= 0.95", "candidate.server_p95_ms <= 1.25 * primary.p95_ms + 1"]

No rule never means "promote": when the user gives no rule, :data:`DEFAULT_RULES` apply
(:func:`effective_policy`); the user's rules replace them all, but not the minimum sample:
:data:`DEFAULT_MIN_SAMPLES` and :data:`DEFAULT_MIN_LABELLED` hold unless the user sets them.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from .metrics import METRICS

__all__ = [
    "DEFAULT_MIN_LABELLED",
    "DEFAULT_MIN_SAMPLES",
    "DEFAULT_RULES",
    "SETTINGS",
    "DefaultRule",
    "Policy",
    "PolicyError",
    "Rule",
    "RuleResult",
    "effective_policy",
    "load_policy",
    "parse_rule",
]

SETTINGS = ("min_samples", "min_labelled")

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
    status: str  # "PASS" | "FAIL" | "N/A" | "SKIP" (a default rule that does not apply here)
    missing: tuple[str, ...] = ()
    note: str | None = None


@dataclass(frozen=True, slots=True)
class Rule:
    text: str
    left: Expr
    op: str
    right: Expr
    # default rules only: skipped (not "not enough data") when this metric is unavailable, saying why
    skip_without: str | None = None
    skip_note: str | None = None

    def names(self) -> list[str]:
        return _names(self.left) + _names(self.right)

    def check(self, metrics: Mapping[str, float | None]) -> RuleResult:
        if self.skip_without is not None and metrics.get(self.skip_without) is None:
            return RuleResult(self, None, None, "SKIP", (), self.skip_note)
        left, right = evaluate(self.left, metrics), evaluate(self.right, metrics)
        if left is None or right is None:
            missing = tuple(dict.fromkeys(n for n in self.names() if metrics.get(n) is None))
            return RuleResult(self, left, right, "N/A", missing)
        return RuleResult(self, left, right, "PASS" if _COMPARISONS[self.op](left, right) else "FAIL")


@dataclass
class Policy:
    """The rules and settings a report is judged by.

    ``given`` is true when anything came from the user (``--require``, ``--policy``); ``source``
    is ``"user"``, or ``"default"`` for the policy :func:`effective_policy` substitutes when the
    user gave no rule, and ``description`` says so in the report.
    """

    rules: list[Rule] = field(default_factory=list)
    min_samples: int = 0
    min_labelled: int = 0
    given: bool = False
    source: str = "user"
    description: str = "rules of your own"
    _set: set[str] = field(default_factory=set, repr=False)

    def set_setting(self, name: str, value: int) -> None:
        """Set ``min_samples`` or ``min_labelled``."""
        setattr(self, name, value)
        self._set.add(name)
        self.given = True

    def is_set(self, name: str) -> bool:
        return name in self._set

    def add(self, text: str) -> None:
        """Parse ``text`` (a rule, ``min_samples = N`` or ``min_labelled = N``) into this policy."""
        setting = _parse_setting(text)
        if setting is not None:
            self.set_setting(*setting)
            return
        parsed = parse_rule(text)
        assert not isinstance(parsed, int)  # min_samples is a setting: handled above
        self.rules.append(parsed)
        self.given = True


def _parse_setting(text: str) -> tuple[str, int] | None:
    """``(name, N)`` for ``NAME = N`` with ``NAME`` one of :data:`SETTINGS`; ``None`` for anything
    else (a rule). Raises :class:`PolicyError` for a malformed setting."""
    try:
        parser = _Parser(text)
        toks = parser.toks
        if len(toks) < 2 or toks[0].kind != "name" or toks[0].text not in SETTINGS or toks[1].kind != "=":
            return None
        name = toks[0].text
        if len(toks) != 4 or toks[2].kind != "num":
            raise parser.fail(toks[2] if len(toks) > 2 else toks[-1], f"an integer after '{name} ='")
        value = float(toks[2].text)
        if value < 0 or value != int(value):
            raise PolicyError(f"{name} must be a non-negative integer, got {toks[2].text}")
        return name, int(value)
    except PolicyError as exc:
        raise PolicyError(f"rule {text!r}: {exc}") from None


def parse_rule(text: str) -> Rule | int:
    """A :class:`Rule`, or the ``N`` of ``min_samples = N``. Raises :class:`PolicyError`."""
    setting = _parse_setting(text)
    if setting is not None:
        if setting[0] != "min_samples":
            raise PolicyError(f"rule {text!r}: {setting[0]} is a setting: add it to a Policy")
        return setting[1]
    try:
        parser = _Parser(text)
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
    except UnicodeDecodeError as exc:  # tomllib decodes first: not a TOMLDecodeError
        raise PolicyError(f"{path}: not UTF-8 (byte {exc.start + 1})") from None
    except RecursionError:
        raise PolicyError(f"{path}: nested too deep") from None
    policy = Policy(given=True)
    unknown = set(doc) - {*SETTINGS, "require"}
    if unknown:
        raise PolicyError(
            f"{path}: unknown keys {', '.join(sorted(unknown))} (expected {', '.join(SETTINGS)}, require)"
        )
    for name in SETTINGS:
        if name in doc:
            value = doc[name]
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise PolicyError(f"{path}: {name} must be a non-negative integer, got {value!r}")
            policy.set_setting(name, value)
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


# --- the default policy ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DefaultRule:
    """One rule of the default policy: when it applies, and why it is there (for the README)."""

    text: str
    when: str  # "always", "ground_truth" (--ground-truth given) or "no_ground_truth"
    why: str
    skip_without: str | None = None  # skipped, saying ``skip_note``, when this metric is unavailable
    skip_note: str | None = None


DEFAULT_MIN_SAMPLES = 100
DEFAULT_MIN_LABELLED = 100
_NOT_LIKE_FOR_LIKE = (
    "not judged: no Server-Timing from the candidate, and its round trip is not comparable with "
    "production's in-process time"
)
DEFAULT_RULES: tuple[DefaultRule, ...] = (
    DefaultRule(
        "error_rate <= 0.01",
        "always",
        "the candidate fails (no answer, or a 5xx where production had none) at most once in 100",
    ),
    DefaultRule("timeout_rate <= 0.01", "always", "and times out at most once in 100"),
    DefaultRule(
        "agreement >= 0.95",
        "no_ground_truth",
        "without labels, sameness is the only evidence of quality: at most 1 answer in 20 differs",
    ),
    DefaultRule(
        "agreement >= 0.8",
        "ground_truth",
        "with labels, they judge quality; agreement only stops a candidate that answers something "
        "else (an error page, another schema, a different product)",
    ),
    DefaultRule(
        "candidate.server_p95_ms <= 1.25 * primary.p95_ms + 1",
        "always",
        "like with like: the candidate's own time (Server-Timing) against production's in-process "
        "time; p95, steady at 100 samples; +1 ms so sub-millisecond noise cannot fail it. "
        "Skipped when the candidate sends no Server-Timing",
        skip_without="candidate.server_p95_ms",
        skip_note=_NOT_LIKE_FOR_LIKE,
    ),
    DefaultRule(
        "candidate.p95_ms <= 2 * primary.p95_ms + 50",
        "always",
        "the measured round trip (ours, not the candidate's word) is not far slower than production: "
        "twice production's in-process p95 plus 50 ms for the network hop and the shadow client. "
        "Applies with or without Server-Timing: a candidate cannot talk its way past it",
    ),
    DefaultRule(
        "auc_diff_high >= 0",
        "ground_truth",
        "not significantly worse at ranking: the 95% CI of candidate - production AUC reaches 0",
    ),
    DefaultRule(
        "mcnemar_p_worse >= 0.05",
        "ground_truth",
        "not significantly worse in decisions: McNemar, where production is right more often",
    ),
)
DEFAULT_DESCRIPTION = "default (no --require/--policy given)"


def effective_policy(policy: Policy, ground_truth: bool) -> Policy:
    """``policy`` when it has a rule; else the default policy for a run with or without ground truth.

    Either way ``min_samples`` and ``min_labelled`` keep their defaults (:data:`DEFAULT_MIN_SAMPLES`,
    :data:`DEFAULT_MIN_LABELLED`) unless the user set them: a rule of one's own replaces the default
    rules, never the minimum sample (three exchanges are no evidence, whatever the rule)."""
    if policy.rules:
        return replace(
            policy,
            min_samples=policy.min_samples if policy.is_set("min_samples") else DEFAULT_MIN_SAMPLES,
            min_labelled=policy.min_labelled if policy.is_set("min_labelled") else DEFAULT_MIN_LABELLED,
            _set=set(policy._set),
        )
    rules = [
        replace(parsed, skip_without=d.skip_without, skip_note=d.skip_note)
        for d in DEFAULT_RULES
        if d.when in ("always", "ground_truth" if ground_truth else "no_ground_truth")
        and not isinstance(parsed := parse_rule(d.text), int)
    ]
    given = [f"{name} = {getattr(policy, name)}" for name in SETTINGS if policy.is_set(name)]
    return Policy(
        rules,
        min_samples=policy.min_samples if policy.is_set("min_samples") else DEFAULT_MIN_SAMPLES,
        min_labelled=policy.min_labelled if policy.is_set("min_labelled") else DEFAULT_MIN_LABELLED,
        given=policy.given,
        source="default",
        description=(
            f"default rules (no rule in --require/--policy; {', '.join(given)} given)"
            if given
            else DEFAULT_DESCRIPTION
        ),
    )
