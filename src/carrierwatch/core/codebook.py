"""Partner codebooks: partner code → canonical status, canonical reason, confidence.

A codebook is a YAML file that operations edit without touching Python::

    version: 3                 # bumped on every edit; carried into the metrics as codebook version
    partner: fedex
    codes:                     # exact lookups; keys are built by the partner's transformer
      PU: {status: picked_up, confidence: 1.0}
      DE/08: {status: delivery_attempted, reason: recipient_not_available, confidence: 0.9}
    patterns:                  # optional, tried in order when no code matches (text-only feeds)
      - {match: "(?i)out for delivery", status: out_for_delivery, confidence: 0.8}
                               # (matched against the first 512 characters of the text only)
    required: [PU, DL]         # codes that must be present (milestones the transformer relies on)

Loading validates everything and reports every problem with file and line: duplicate codes,
unknown canonical statuses or reasons, confidences outside [0, 1], bad regular expressions,
missing required entries.

Examples
--------
>>> book = Codebook.from_yaml('''
... version: 1
... partner: demo
... codes:
...   DL: {status: delivered, confidence: 1.0}
...   X/7: {status: exception, reason: weather, confidence: 0.9}
...   X: {status: exception, confidence: 0.6}
... ''', source="demo.yaml")
>>> book.lookup("X/7", "X")
Mapping(status='exception', reason='weather', confidence=0.9)
>>> book.lookup("X/99", "X").reason is None
True
>>> book.lookup("ZZ") is None
True
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import ConstructorError, SafeConstructor

from carrierwatch.core.errors import CodebookError
from carrierwatch.core.model import CanonicalReason, CanonicalStatus

__all__ = ["PATTERN_TEXT_LIMIT", "Codebook", "CodebookProblem", "Mapping", "load_codebook"]

PATTERN_TEXT_LIMIT = 512
"""Patterns see at most this many leading characters of a partner's text.

Patterns are written by operations, not audited for backtracking: ``^failure: .*delivery
attempt.*(...)`` is quadratic in the text (6.9 s on 34,000 characters). Cutting the text bounds
the cost of every pattern whatever it is, and bounds the memo of :meth:`Codebook.match_text`
(4,096 keys of at most this length). No carrier status sentence comes near this length."""

_STATUSES = frozenset(s.value for s in CanonicalStatus)
_REASONS = frozenset(r.value for r in CanonicalReason)


@dataclass(frozen=True, slots=True)
class Mapping:
    """What one partner code means in canonical terms."""

    status: str
    reason: str | None
    confidence: float


@dataclass(frozen=True, slots=True)
class CodebookProblem:
    """One validation problem, located in its file."""

    source: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.source}:{self.line}: {self.message}"


@dataclass(frozen=True)
class Codebook:
    """A validated, immutable codebook."""

    partner: str
    version: int
    codes: dict[str, Mapping]
    patterns: tuple[tuple[re.Pattern[str], Mapping], ...] = ()
    required: tuple[str, ...] = ()
    source: str = "<memory>"
    _cache: dict[str, Mapping | None] = field(default_factory=dict, compare=False, repr=False)

    def lookup(self, *candidates: str | None) -> Mapping | None:
        """The mapping of the first candidate key that the codebook knows.

        Transformers pass candidates from the most to the least specific key (``"X/5"`` then ``"X"``).
        """
        codes = self.codes
        for key in candidates:
            if key is not None:
                hit = codes.get(key)
                if hit is not None:
                    return hit
        return None

    def match_text(self, text: str | None) -> Mapping | None:
        """The mapping of the first pattern that matches ``text`` (for feeds that send only text).

        Only the first :data:`PATTERN_TEXT_LIMIT` characters of ``text`` are matched."""
        if not text:
            return None
        if len(text) > PATTERN_TEXT_LIMIT:
            text = text[:PATTERN_TEXT_LIMIT]
        cached = self._cache.get(text, _MISSING)
        if cached is not _MISSING:
            return cached  # type: ignore[return-value]
        result = None
        for pattern, mapping in self.patterns:
            if pattern.search(text):
                result = mapping
                break
        if len(self._cache) < 4096:
            self._cache[text] = result
        return result

    @classmethod
    def from_yaml(cls, text: str, *, source: str = "<memory>",
                  partner: str | None = None) -> Codebook:
        """Parse and validate; raise :class:`CodebookError` listing every problem."""
        book, problems = _parse(text, source, partner)
        if problems or book is None:
            raise CodebookError(source, problems)
        return book


_MISSING = object()


def load_codebook(path: Path, *, partner: str | None = None) -> Codebook:
    """Load and validate the codebook at ``path``.

    Raises :class:`CodebookError` (problems by file and line) also for a file that cannot be
    read or is not UTF-8 text.
    """
    text, unreadable = _read(path)
    if unreadable is not None:
        raise CodebookError(str(path), [unreadable])
    return Codebook.from_yaml(text, source=str(path), partner=partner)


def check_codebook(path: Path, *, partner: str | None = None) -> list[CodebookProblem]:
    """Every problem in the codebook at ``path`` (empty when it is valid)."""
    text, unreadable = _read(path)
    if unreadable is not None:
        return [unreadable]
    return _parse(text, str(path), partner)[1]


def _read(path: Path) -> tuple[str, CodebookProblem | None]:
    """The text of ``path``, or a problem saying why it cannot be read as UTF-8 text."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        return "", CodebookProblem(str(path), 1, f"cannot read: {exc.strerror or exc}")
    try:
        return data.decode("utf-8"), None
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        return "", CodebookProblem(
            str(path), line, f"not UTF-8 text ({exc.reason}, byte 0x{data[exc.start]:02x} at "
                             f"offset {exc.start}): a codebook is a YAML text file")


def _line(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


def _scalar(node: yaml.Node) -> Any:
    """The value of a scalar node as ``yaml.safe_load`` gives it (None for any other node);
    :class:`yaml.YAMLError` when it cannot be constructed (e.g. ``!!int abc``)."""
    if isinstance(node, yaml.ScalarNode):
        try:
            return SafeConstructor().construct_object(node)
        except (ValueError, TypeError, OverflowError) as exc:  # e.g. int("one") for !!int one
            raise ConstructorError(None, None, f"cannot read {node.value!r} as {node.tag}: {exc}",
                                   node.start_mark) from None
    return None


def _parse(text: str, source: str, expected_partner: str | None
           ) -> tuple[Codebook | None, list[CodebookProblem]]:
    problems: list[CodebookProblem] = []

    def problem(line: int, message: str) -> None:
        problems.append(CodebookProblem(source, line, message))

    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem(int(mark.line) + 1 if mark else 1, f"invalid YAML: {exc}")
        return None, problems
    if not isinstance(root, yaml.MappingNode):
        problem(1, "a codebook must be a mapping with version, partner and codes")
        return None, problems

    def validate() -> tuple[Codebook | None, list[CodebookProblem]]:
        top: dict[str, yaml.Node] = {}
        for key_node, value_node in root.value:
            key = _scalar(key_node)
            if key in top:
                problem(_line(key_node), f"duplicate top-level key {key!r}")
            elif key not in {"version", "partner", "codes", "patterns", "required", "description"}:
                problem(_line(key_node), f"unknown top-level key {key!r}")
            top[str(key)] = value_node

        version = _scalar(top["version"]) if "version" in top else None
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            problem(_line(top.get("version", root)), "version must be a positive integer")
        partner = _scalar(top["partner"]) if "partner" in top else None
        if not isinstance(partner, str) or not partner:
            problem(_line(top.get("partner", root)), "partner must be a non-empty string")
        elif expected_partner is not None and partner != expected_partner:
            problem(_line(top["partner"]), f"partner {partner!r} does not match {expected_partner!r}")

        codes: dict[str, Mapping] = {}
        declared: set[str] = set()  # codes present in the file, valid or not
        codes_node = top.get("codes")
        if not isinstance(codes_node, yaml.MappingNode):
            problem(_line(codes_node or root), "codes must be a mapping of partner code to meaning")
        else:
            for key_node, value_node in codes_node.value:
                code = _scalar(key_node)
                if code is None or isinstance(code, (dict, list)):
                    problem(_line(key_node), "a code must be a scalar")
                    continue
                code = str(code)
                mapping = _mapping(value_node, f"code {code!r}", problem)
                if code in declared:
                    problem(_line(key_node), f"duplicate code {code!r}")
                else:
                    declared.add(code)
                    if mapping is not None:
                        codes[code] = mapping

        patterns: list[tuple[re.Pattern[str], Mapping]] = []
        patterns_node = top.get("patterns")
        if patterns_node is not None:
            if not isinstance(patterns_node, yaml.SequenceNode):
                problem(_line(patterns_node), "patterns must be a list")
            else:
                seen: set[str] = set()
                for item in patterns_node.value:
                    if not isinstance(item, yaml.MappingNode):
                        problem(_line(item), "a pattern must be a mapping with match, status, confidence")
                        continue
                    fields = {str(_scalar(k)): v for k, v in item.value}
                    raw = _scalar(fields["match"]) if "match" in fields else None
                    if not isinstance(raw, str) or not raw:
                        problem(_line(item), "a pattern needs a non-empty 'match' regular expression")
                        continue
                    if raw in seen:
                        problem(_line(item), f"duplicate pattern {raw!r}")
                        continue
                    seen.add(raw)
                    try:
                        compiled = re.compile(raw)
                    except re.error as exc:
                        problem(_line(fields["match"]), f"invalid regular expression {raw!r}: {exc}")
                        continue
                    rest = yaml.MappingNode(item.tag, [(k, v) for k, v in item.value
                                                       if _scalar(k) != "match"],
                                            item.start_mark, item.end_mark)
                    mapping = _mapping(rest, f"pattern {raw!r}", problem)
                    if mapping is not None:
                        patterns.append((compiled, mapping))

        required: list[str] = []
        required_node = top.get("required")
        if required_node is not None:
            if not isinstance(required_node, yaml.SequenceNode):
                problem(_line(required_node), "required must be a list of codes")
            else:
                for item in required_node.value:
                    code = str(_scalar(item))
                    required.append(code)
                    if code not in declared:
                        problem(_line(item), f"required code {code!r} is missing from codes")

        if problems:
            return None, problems
        assert isinstance(partner, str) and isinstance(version, int)
        return Codebook(partner=partner, version=version, codes=codes, patterns=tuple(patterns),
                        required=tuple(required), source=source), problems

    try:
        return validate()
    except yaml.YAMLError as exc:  # a scalar that cannot be constructed
        mark = getattr(exc, "problem_mark", None)
        problem(int(mark.line) + 1 if mark else 1, f"invalid YAML value: {exc}")
        return None, problems


def _mapping(node: yaml.Node, what: str, problem: Any) -> Mapping | None:
    if not isinstance(node, yaml.MappingNode):
        problem(_line(node), f"{what}: expected a mapping with status, reason, confidence")
        return None
    values: dict[str, Any] = {}
    ok = True
    for key_node, value_node in node.value:
        key = _scalar(key_node)
        if key not in {"status", "reason", "confidence", "note"}:
            problem(_line(key_node), f"{what}: unknown key {key!r}")
            ok = False
            continue
        values[str(key)] = (_scalar(value_node), _line(value_node))
    status, status_line = values.get("status", (None, _line(node)))
    if status not in _STATUSES:
        problem(status_line, f"{what}: unknown canonical status {status!r} "
                             f"(one of {', '.join(sorted(_STATUSES))})")
        ok = False
    reason, reason_line = values.get("reason", (None, _line(node)))
    if reason is not None and reason not in _REASONS:
        problem(reason_line, f"{what}: unknown canonical reason {reason!r} "
                             f"(one of {', '.join(sorted(_REASONS))})")
        ok = False
    confidence, confidence_line = values.get("confidence", (None, _line(node)))
    if (not isinstance(confidence, (int, float)) or isinstance(confidence, bool)
            or not 0.0 <= float(confidence) <= 1.0):
        problem(confidence_line, f"{what}: confidence must be a number in [0, 1]")
        ok = False
    if not ok:
        return None
    return Mapping(status=str(status), reason=reason, confidence=float(confidence))


def problems_in(paths: Iterable[Path]) -> list[CodebookProblem]:
    """Every problem in every codebook file given."""
    found: list[CodebookProblem] = []
    for path in paths:
        found.extend(check_codebook(path, partner=path.stem))
    return found
