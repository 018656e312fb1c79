from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import example, given, settings
from hypothesis import strategies as st

from carrierwatch.core.codebook import Codebook, Mapping, check_codebook
from carrierwatch.core.errors import CodebookError
from carrierwatch.core.model import CanonicalReason, CanonicalStatus

GOOD = """\
version: 2
partner: demo
codes:
  DL: {status: delivered, confidence: 1.0}
  DE/08: {status: delivery_attempted, reason: recipient_not_available, confidence: 0.9}
  DE: {status: delivery_attempted, confidence: 0.7}
patterns:
  - {match: "(?i)out for delivery", status: out_for_delivery, confidence: 0.8}
required: [DL]
"""


def test_lookup_most_specific_first() -> None:
    book = Codebook.from_yaml(GOOD, source="demo.yaml")
    assert book.version == 2
    assert book.lookup("DE/08", "DE") == Mapping("delivery_attempted", "recipient_not_available",
                                                 0.9)
    assert book.lookup("DE/99", "DE") == Mapping("delivery_attempted", None, 0.7)
    assert book.lookup(None, "DL") == Mapping("delivered", None, 1.0)
    assert book.lookup("XX") is None
    assert book.match_text("Package is Out For Delivery today") == Mapping(
        "out_for_delivery", None, 0.8)
    assert book.match_text("Arrived at facility") is None


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        (GOOD.replace("DE: {status", "DL: {status"), 6, "duplicate code 'DL'"),
        (GOOD.replace("status: delivered", "status: deliverd"), 4, "unknown canonical status"),
        (GOOD.replace("reason: recipient_not_available", "reason: nobody_home"), 5,
         "unknown canonical reason 'nobody_home'"),
        (GOOD.replace("confidence: 0.9", "confidence: 1.5"), 5, "confidence must be"),
        (GOOD.replace("required: [DL]", "required: [DL, PU]"), 9, "required code 'PU'"),
        (GOOD.replace('"(?i)out for delivery"', '"(unclosed"'), 8, "invalid regular expression"),
        (GOOD.replace("version: 2", "version: two"), 1, "version must be"),
        (GOOD + "colour: blue\n", 10, "unknown top-level key 'colour'"),
        (GOOD.replace("DL: {status: delivered, confidence: 1.0}",
                      "DL: {status: delivered, confidence: 1.0, color: red}"), 4,
         "unknown key 'color'"),
        ("codes: [a, b\n", 2, "invalid YAML"),
    ],
)
def test_problems_name_file_and_line(text: str, line: int, fragment: str) -> None:
    with pytest.raises(CodebookError) as info:
        Codebook.from_yaml(text, source="codebooks/demo.yaml")
    rendered = [str(p) for p in info.value.problems]
    assert any(r.startswith(f"codebooks/demo.yaml:{line}:") and fragment in r for r in rendered), \
        rendered


def test_partner_name_must_match_file(tmp_path: Path) -> None:
    path = tmp_path / "other.yaml"
    path.write_text(GOOD)
    problems = check_codebook(path, partner="other")
    assert [p.line for p in problems] == [2]
    assert "does not match" in problems[0].message


def test_every_problem_is_reported_at_once() -> None:
    text = GOOD.replace("status: delivered", "status: nope").replace("confidence: 0.9",
                                                                     "confidence: -1")
    with pytest.raises(CodebookError) as info:
        Codebook.from_yaml(text, source="x.yaml")
    assert len(info.value.problems) == 2


STATUSES = [s.value for s in CanonicalStatus]
REASONS = [r.value for r in CanonicalReason]
codes = st.text(alphabet=st.characters(whitelist_categories=("Lu", "Nd"),
                                       whitelist_characters="_/-"), min_size=1, max_size=12)
entries = st.dictionaries(
    codes,
    st.tuples(st.sampled_from(STATUSES), st.none() | st.sampled_from(REASONS),
              st.floats(0, 1, allow_nan=False)),
    min_size=1, max_size=20,
)


@settings(max_examples=80, deadline=None)
@given(entries=entries, version=st.integers(1, 10_000))
def test_round_trip_through_yaml(entries: dict[str, tuple[str, str | None, float]],
                                 version: int) -> None:
    doc = {"version": version, "partner": "demo",
           "codes": {code: {"status": s, "reason": r, "confidence": c}
                     for code, (s, r, c) in entries.items()}}
    book = Codebook.from_yaml(yaml.safe_dump(doc), source="gen.yaml")
    assert book.version == version
    assert set(book.codes) == set(entries)
    for code, (status, reason, confidence) in entries.items():
        assert book.lookup(code) == Mapping(status, reason, confidence)


@settings(max_examples=150, deadline=None)
@given(text=st.text(max_size=300))
@example(text="?")  # an empty key: re-serialising its node gave YAML that does not parse
@example(text="version: !!int one")  # a scalar that cannot be constructed
def test_arbitrary_text_never_crashes_the_loader(text: str) -> None:
    try:
        Codebook.from_yaml(text, source="fuzz.yaml")
    except CodebookError as exc:
        assert exc.problems
        assert all(p.source == "fuzz.yaml" and p.line >= 1 for p in exc.problems)


def test_a_value_that_cannot_be_constructed_is_a_problem_with_its_line() -> None:
    text = "version: 1\npartner: acme\ncodes:\n  X1: {status: !!int delivered, confidence: 1}\n"
    with pytest.raises(CodebookError) as info:
        Codebook.from_yaml(text, source="bad.yaml")
    [problem] = info.value.problems
    assert problem.line == 4 and problem.message.startswith("invalid YAML value")
