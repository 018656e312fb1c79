"""Every regular expression that reads partner input runs in linear time (issue #13, "hostile
sizes and shapes").

The audit is automatic: every compiled pattern at module level in ``carrierwatch.transformers``
and ``carrierwatch.core`` and every codebook pattern is timed on adversarial strings of 50,000
characters (runs of one class, runs that almost match, repeated separators). A quadratic pattern
takes seconds on them (DHL's old city/state pattern: 12.9 s on 32,000 letters); a linear one takes
milliseconds. The budget (0.5 s per call) leaves a margin of more than 20 for a loaded machine.
"""

from __future__ import annotations

import contextlib
import importlib
import pkgutil
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import carrierwatch.core
import carrierwatch.transformers
from carrierwatch.core.codebook import PATTERN_TEXT_LIMIT
from carrierwatch.transformers import dhl
from carrierwatch.transformers._aggregators import is_midnight_utc, parse_event_time
from carrierwatch.transformers.base import PayloadError
from carrierwatch.transformers.json_mapping import _strptime, parse_place
from carrierwatch.transformers.registry import load_registry

ROOT = Path(__file__).resolve().parents[2]
N = 50_000
BUDGET_SECONDS = 0.5


def _adversarial(n: int = N) -> dict[str, str]:
    """Strings that make backtracking patterns quadratic, by name."""
    return {
        "letters": "a" * n,
        "upper letters": "A" * n,
        "letters then comma": "a" * n + ", X",
        "spaces between letters": "A" + " " * n + "B",
        "spaced words": "ab " * (n // 3),
        "letter commas": "a," * (n // 2),
        "city commas": "Ab, " * (n // 4),
        "spaces": " " * n,
        "tabs and spaces": " \t" * (n // 2),
        "digits": "1" * n,
        "dashes": "-" * n,
        "date then digits": "2026-03-02" + "0" * n,
        "midnight then zeros": "2026-03-02T00:00:00." + "0" * n,
        "identifier dots": "a." * (n // 2),
        "repeated failure sentence": "failure: " + "delivery attempt " * (n // 17),
        "repeated usps sentence": "Delivery Attempted" + " nobody x" * (n // 9),
        "non-ascii": "é" * n,
    }


def _module_patterns() -> list[tuple[str, re.Pattern[str]]]:
    found: list[tuple[str, re.Pattern[str]]] = []
    for package in (carrierwatch.transformers, carrierwatch.core):
        for info in pkgutil.iter_modules(package.__path__, f"{package.__name__}."):
            module = importlib.import_module(info.name)
            for name, value in sorted(vars(module).items()):
                if isinstance(value, re.Pattern) and isinstance(value.pattern, str):
                    found.append((f"{info.name}.{name}", value))
    return found


MODULE_PATTERNS = _module_patterns()
REGISTRY = load_registry(ROOT)
CODEBOOK_PATTERNS = [(f"codebooks/{p.spec.id}.yaml #{i}", pattern)
                     for p in REGISTRY for i, (pattern, _) in enumerate(p.codebook.patterns)]


def _timed(call: Callable[[], Any]) -> float:
    start = time.perf_counter()
    with contextlib.suppress(ValueError, PayloadError):  # rejecting is fine, taking long is not
        call()
    return time.perf_counter() - start


def test_the_audit_finds_the_patterns_that_read_partner_input() -> None:
    names = {name for name, _ in MODULE_PATTERNS}
    assert {"carrierwatch.transformers.dhl._CITY_STATE",
            "carrierwatch.transformers.dhl._SLUG",
            "carrierwatch.transformers._aggregators._DATE_ONLY"} <= names
    assert any(name.startswith("codebooks/dhl.yaml") for name, _ in CODEBOOK_PATTERNS)


@pytest.mark.parametrize(("name", "pattern"), MODULE_PATTERNS, ids=[n for n, _ in MODULE_PATTERNS])
def test_module_pattern_is_linear(name: str, pattern: re.Pattern[str]) -> None:
    slow = {}
    for label, text in _adversarial().items():
        for how in (pattern.findall, pattern.match, pattern.fullmatch, pattern.sub):
            call = ((lambda h=how, t=text: h("-", t)) if how == pattern.sub
                    else (lambda h=how, t=text: h(t)))  # type: ignore[misc]
            seconds = _timed(call)
            if seconds > BUDGET_SECONDS:
                slow[f"{how.__name__} on {label}"] = round(seconds, 2)
    assert not slow, f"{name} ({pattern.pattern!r}) is not linear: {slow}"


@pytest.mark.parametrize(("name", "pattern"), CODEBOOK_PATTERNS,
                         ids=[n for n, _ in CODEBOOK_PATTERNS])
def test_codebook_patterns_see_a_bounded_text(name: str, pattern: re.Pattern[str]) -> None:
    """Operations write codebook patterns; they are not audited for backtracking, so the text
    they are matched against is cut to PATTERN_TEXT_LIMIT characters (match_text)."""
    partner_id = name.split("/")[1].split(".")[0]
    book = REGISTRY.get(partner_id).codebook
    slow = {}
    for label, text in _adversarial().items():
        seconds = _timed(lambda t=text: book.match_text(t))  # type: ignore[misc]
        if seconds > BUDGET_SECONDS:
            slow[label] = round(seconds, 2)
    assert not slow, f"{name}: match_text is not bounded: {slow}"
    # and the cut keeps the first characters: a text that matches early still matches.
    assert book.match_text("x" * 10) == book.match_text("x" * 10 + "y" * (2 * PATTERN_TEXT_LIMIT))


FUNCTIONS: dict[str, Callable[[str], Any]] = {
    "dhl.split_locality US": lambda s: dhl.split_locality(s, "US"),
    "dhl.split_locality NL": lambda s: dhl.split_locality(s, "NL"),
    "dhl.slug": dhl.slug,
    "json_mapping.parse_place (CSV partners' locations)": parse_place,
    "is_midnight_utc": is_midnight_utc,
    "parse_event_time": lambda s: parse_event_time(s, "$.t", "America/Chicago", True),
    # json_mapping's time formats: strptime builds an anchored regex from the format
    "json_mapping strptime ISO": lambda s: _strptime(s, "%Y-%m-%d %H:%M:%S"),
    "json_mapping strptime day first": lambda s: _strptime(s, "%d/%m/%Y %I:%M %p %Z"),
}


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_regex_bearing_field_readers_are_linear(name: str) -> None:
    """The functions that run those patterns over a field, timed on the same strings (the issue's
    two findings: DHL addressLocality of 32,000 letters, Valley Express "A" + 32,000 spaces + "B")."""
    slow = {}
    for label, text in _adversarial().items():
        seconds = _timed(lambda t=text: FUNCTIONS[name](t))  # type: ignore[misc]
        if seconds > BUDGET_SECONDS:
            slow[label] = round(seconds, 2)
    assert not slow, f"{name} is not linear: {slow}"


def test_the_linear_patterns_read_what_the_old_ones_read() -> None:
    assert dhl.split_locality("CINCINNATI HUB - CINCINNATI, OH - USA", "US") == ("CINCINNATI", "OH")
    assert dhl.split_locality("Memphis, TN", "US") == ("Memphis", "TN")
    assert dhl.split_locality("St. John's, NL", "CA") == ("St. John's", "NL")
    assert dhl.split_locality("Oderweg 2, AMSTERDAM", "NL") == ("AMSTERDAM", None)
