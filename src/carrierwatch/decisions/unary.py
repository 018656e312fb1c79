"""Unary tests of decision-table cells: a small subset of DMN's FEEL "simple unary tests".

A cell holds one test on one input column. Supported forms::

    -                       any value (also an empty cell or an omitted column)
    delivery_attempted      equal to this value (quotes optional: "delivery_attempted")
    a, b                    any of these tests (FEEL's comma list); a YAML list works too
    in [a, b]               the same, written as a membership test
    not(a, b)               none of these tests
    null                    the value is missing (no ETA, no open exception, unknown band)
    >= 30   < 5   = 3       comparisons (numeric columns)
    [30..120]  (0..60]  ]0..60[   ranges: brackets closed, parentheses or outward brackets open

A test compiles to a :class:`Test`: for enumerated and text columns a set of allowed values (or
of excluded ones), for numeric columns a union of intervals, in both cases with a flag for the
missing value. That one representation serves evaluation and the table analysis of
:mod:`carrierwatch.decisions.table` (overlaps and gaps are set intersections).

Examples
--------
>>> t = parse_test(">= 30", "number")
>>> t.matches(30), t.matches(29.5), t.matches(None)
(True, False, False)
>>> parse_test("[10..20)", "number").matches(20)
False
>>> s = parse_test("not(delivered, returned)", "text")
>>> s.matches("exception"), s.matches("delivered"), s.matches(None)
(True, False, True)
>>> parse_test("in [high, medium]", "text").matches("high")
True
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

__all__ = ["ANY", "Interval", "Test", "UnaryTestError", "parse_test"]

INF = math.inf


class UnaryTestError(ValueError):
    """A cell that is no valid unary test (the message says why)."""


@dataclass(frozen=True, slots=True, order=True)
class Interval:
    """A real interval; ``lo_closed``/``hi_closed`` say whether the ends belong to it."""

    lo: float
    hi: float
    lo_closed: bool = True
    hi_closed: bool = True

    def contains(self, x: float) -> bool:
        if x < self.lo or x > self.hi:
            return False
        if x == self.lo and not self.lo_closed:
            return False
        return not (x == self.hi and not self.hi_closed)

    def empty(self) -> bool:
        return self.lo > self.hi or (self.lo == self.hi and not (self.lo_closed and self.hi_closed))

    def intersect(self, other: Interval) -> Interval:
        if self.lo > other.lo or (self.lo == other.lo and not self.lo_closed):
            lo, lo_closed = self.lo, self.lo_closed
        else:
            lo, lo_closed = other.lo, other.lo_closed
        if self.hi < other.hi or (self.hi == other.hi and not self.hi_closed):
            hi, hi_closed = self.hi, self.hi_closed
        else:
            hi, hi_closed = other.hi, other.hi_closed
        return Interval(lo, hi, lo_closed, hi_closed)

    def __str__(self) -> str:
        if self.lo == -INF and self.hi == INF:
            return "any number"
        if self.lo == self.hi:
            return _num(self.lo)
        if self.lo == -INF:
            return f"{'<=' if self.hi_closed else '<'} {_num(self.hi)}"
        if self.hi == INF:
            return f"{'>=' if self.lo_closed else '>'} {_num(self.lo)}"
        return (f"{'[' if self.lo_closed else '('}{_num(self.lo)}..{_num(self.hi)}"
                f"{']' if self.hi_closed else ')'}")


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


@dataclass(frozen=True, slots=True)
class Test:
    """A compiled unary test.

    Text/enumerated columns: ``values`` (allowed, or excluded when ``negated``). Numeric columns:
    ``intervals`` (allowed). ``null``: whether the missing value passes. ``any``: the ``-`` test.
    """

    kind: str  # "text" or "number"
    any: bool = False
    values: frozenset[str] = frozenset()
    negated: bool = False
    intervals: tuple[Interval, ...] = ()
    null: bool = False
    source: str = "-"

    def matches(self, value: object) -> bool:
        if self.any:
            return True
        if value is None:
            return self.null
        if self.kind == "number":
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                return False
            return any(i.contains(float(value)) for i in self.intervals)
        return (str(value) in self.values) != self.negated

    def __str__(self) -> str:
        return self.source


ANY_TEXT = Test("text", any=True)
ANY_NUMBER = Test("number", any=True)
ANY = ANY_TEXT

_RANGE = re.compile(r"^([\[\(\]])\s*(\S+?)\s*\.\.\s*(\S+?)\s*([\]\)\[])$")
_COMPARE = re.compile(r"^(<=|>=|<|>|=)\s*(\S+)$")
_BARE = re.compile(r"^[A-Za-z0-9_.:/+-]+$")


def _split(text: str) -> list[str]:
    """Split a comma list at the top level (not inside brackets or quotes)."""
    parts: list[str] = []
    depth = 0
    quote = False
    current: list[str] = []
    for char in text:
        if char == '"':
            quote = not quote
        elif not quote and char in "[(":
            depth += 1
        elif not quote and char in "])" and depth > 0:
            depth -= 1
        if char == "," and depth == 0 and not quote:
            parts.append("".join(current).strip())
            current = []
        else:
            current.append(char)
    parts.append("".join(current).strip())
    if quote:
        raise UnaryTestError(f"unterminated string in {text!r}")
    return parts


def _number(text: str, cell: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise UnaryTestError(f"{text!r} is not a number (in {cell!r})") from None
    if math.isnan(value):
        raise UnaryTestError(f"NaN is not a number a test can compare with (in {cell!r})")
    return value


def _text(text: str, cell: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return text[1:-1]
    if not text or not _BARE.match(text):
        raise UnaryTestError(f"{text!r} is no value: write letters, digits and _ or quote it "
                             f"(in {cell!r})")
    return text


def parse_test(cell: object, kind: str) -> Test:
    """Compile one cell (a YAML scalar or list) for a column of ``kind`` ("text" or "number")."""
    if kind not in ("text", "number"):
        raise ValueError(f"unknown column kind {kind!r}")
    if cell is None:
        return ANY_TEXT if kind == "text" else ANY_NUMBER
    if isinstance(cell, list):
        if not cell:
            raise UnaryTestError("an empty list matches nothing: write '-' for any value")
        text = ", ".join(_quote_if_needed(item) for item in cell)
    elif isinstance(cell, bool):
        text = "true" if cell else "false"
    else:
        text = str(cell).strip()
    source = text
    if text in ("", "-"):
        return ANY_TEXT if kind == "text" else ANY_NUMBER
    negated = False
    lowered = text
    if lowered.startswith("not(") and lowered.endswith(")"):
        negated = True
        text = text[4:-1].strip()
    elif lowered.startswith("in ") or lowered.startswith("in["):
        inner = text[2:].strip()
        if not (inner.startswith("[") and inner.endswith("]")):
            raise UnaryTestError(f"write 'in [a, b]' (in {source!r})")
        text = inner[1:-1].strip()
    if not text:
        raise UnaryTestError(f"an empty test matches nothing (in {source!r})")
    values: set[str] = set()
    intervals: list[Interval] = []
    null = False
    for part in _split(text):
        if not part:
            raise UnaryTestError(f"empty entry in the list (in {source!r})")
        if part == "-":
            raise UnaryTestError(f"'-' cannot be part of a list (in {source!r})")
        if part == "null":
            null = True
            continue
        if kind == "number":
            intervals.append(_interval(part, source))
        else:
            if _COMPARE.match(part) or _RANGE.match(part):
                raise UnaryTestError(f"{part!r} compares numbers, but this column holds text "
                                     f"(in {source!r})")
            values.add(_text(part, source))
    if kind == "number":
        merged = tuple(sorted(i for i in intervals if not i.empty()))
        if negated:
            merged = _complement(merged)
            null = not null
        if not merged and not null:
            raise UnaryTestError(f"the test matches no value (in {source!r})")
        return Test("number", intervals=merged, null=null, source=source)
    if negated:
        null = not null
    return Test("text", values=frozenset(values), negated=negated, null=null, source=source)


def _quote_if_needed(item: object) -> str:
    text = str(item)
    return text if _BARE.match(text) or text == "null" else f'"{text}"'


def _interval(part: str, cell: str) -> Interval:
    match = _RANGE.match(part)
    if match:
        left, lo, hi, right = match.groups()
        interval = Interval(_number(lo, cell), _number(hi, cell), left == "[", right == "]")
        if interval.empty():
            raise UnaryTestError(f"the range {part!r} is empty (in {cell!r})")
        return interval
    match = _COMPARE.match(part)
    if match:
        op, raw = match.groups()
        x = _number(raw, cell)
        return {"<": Interval(-INF, x, False, False), "<=": Interval(-INF, x, False, True),
                ">": Interval(x, INF, False, False), ">=": Interval(x, INF, True, False),
                "=": Interval(x, x)}[op]
    x = _number(part, cell)
    return Interval(x, x)


def _complement(intervals: tuple[Interval, ...]) -> tuple[Interval, ...]:
    out: list[Interval] = []
    lo, lo_closed = -INF, False
    for interval in intervals:
        piece = Interval(lo, interval.lo, lo_closed, not interval.lo_closed)
        if not piece.empty():
            out.append(piece)
        if interval.hi > lo or (interval.hi == lo and not interval.hi_closed):
            lo, lo_closed = interval.hi, not interval.hi_closed
    tail = Interval(lo, INF, lo_closed, False)
    if not tail.empty() and lo != INF:
        out.append(tail)
    return tuple(out)
