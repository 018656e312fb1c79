"""Decision tables: the shipped tables (every row fires), the issue's examples, load errors with
file:line, overlap and gap analysis against a brute-force oracle, unary tests."""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from carrierwatch.decisions.table import (
    COLUMNS,
    DecisionTable,
    DecisionTableError,
    analyse,
    load_tables,
)
from carrierwatch.decisions.unary import UnaryTestError, parse_test

ROOT = Path(__file__).resolve().parents[2]
TABLES = {t.name: t for t in load_tables(ROOT / "decisions")}


def facts(**values: object) -> dict[str, object]:
    base: dict[str, object] = {name: None for name in COLUMNS}
    base.update(values)
    return base


#: crafted inputs; together they fire every row of every shipped table
CRAFTED = [
    facts(status="delivery_attempted", reason="recipient_not_available", value_band="high",
          attempts=1),
    facts(status="delivery_attempted", reason="access_issue", value_band="low", attempts=1),
    facts(status="delivery_attempted", reason="weather", attempts=3),
    facts(status="in_transit", attempts=0),
    facts(status="out_for_delivery", customer_priority="priority", eta_slip_minutes=180.0),
    facts(status="out_for_delivery", customer_priority="priority", eta_slip_minutes=30.0),
    facts(status="in_transit", customer_priority="priority", eta_slip_minutes=None),
    facts(status="in_transit", customer_priority="standard", eta_slip_minutes=500.0),
    facts(status="delivered", customer_priority="priority", eta_slip_minutes=500.0),
    facts(status="exception", reason="carrier_delay", exception_over_target_minutes=5.0),
    facts(status="exception", reason="lost", exception_over_target_minutes=2000.0),
    facts(status="exception", reason="lost", exception_over_target_minutes=-10.0),
    facts(status="picked_up"),
]


def test_every_row_of_every_shipped_table_fires() -> None:
    assert set(TABLES) == {"failed_attempts", "eta_slip", "open_exceptions"}
    fired = {(t.name, rule.id) for t in TABLES.values() for f in CRAFTED
             for rule in t.evaluate(f)}
    every = {(t.name, rule.id) for t in TABLES.values() for rule in t.rules}
    assert every - fired == set()


def test_the_issues_examples() -> None:
    failed = TABLES["failed_attempts"].evaluate(facts(
        status="delivery_attempted", reason="recipient_not_available", value_band="high",
        attempts=1))
    assert [(r.id, r.actions, r.priority) for r in failed] == [
        ("high_value_recipient_absent", ("escalate_manual_contact", "notify"), "high")]
    # the same attempt on a package of no declared value escalates to nobody
    assert [r.actions for r in TABLES["failed_attempts"].evaluate(facts(
        status="delivery_attempted", reason="recipient_not_available", attempts=1))] == [()]
    slip = TABLES["eta_slip"].evaluate(facts(status="out_for_delivery",
                                             customer_priority="priority",
                                             eta_slip_minutes=121.0))
    assert [(r.actions, r.priority) for r in slip] == [(("notify", "open_ticket"), "high")]
    at_threshold = TABLES["eta_slip"].evaluate(facts(status="out_for_delivery",
                                                     customer_priority="priority",
                                                     eta_slip_minutes=120.0))
    assert [r.actions for r in at_threshold] == [("notify",)]
    late = TABLES["open_exceptions"].evaluate(facts(status="exception", reason="weather",
                                                    exception_over_target_minutes=1.0))
    assert [r.actions for r in late] == [("escalate_partner",)]
    assert [r.actions for r in TABLES["open_exceptions"].evaluate(facts(
        status="exception", reason="weather", exception_over_target_minutes=0.0))] == [()]


def test_shipped_tables_are_complete_and_unique_ones_do_not_overlap() -> None:
    for table in TABLES.values():
        result = analyse(table)
        assert result.gap_cells == 0, (table.name, result.gaps[:3])
        if table.hit_policy == "unique":
            assert result.overlaps == []


def _problem_lines(text: str) -> list[tuple[int, str]]:
    with pytest.raises(DecisionTableError) as caught:
        DecisionTable.from_yaml(text, source="t.yaml")
    return [(p.line, p.message) for p in caught.value.problems]


def test_load_errors_name_file_and_line() -> None:
    text = (ROOT / "decisions" / "eta_slip.yaml").read_text()
    lines = text.splitlines()
    number = next(i for i, line in enumerate(lines, 1) if "priority_customer_slip" in line) + 1
    broken = text.replace("customer_priority: priority,", "customer_priority: vip,", 1)
    [(line, message)] = _problem_lines(broken)
    assert line == number and "unknown value 'vip'" in message
    overlap = text.replace('"(0..120]"', '">= 100"')
    [(line, message)] = _problem_lines(overlap)
    small = next(i for i, text_line in enumerate(lines, 1)
                 if "priority_customer_small_slip" in text_line)
    assert line == small and "overlaps rule 'priority_customer_slip'" in message
    problems = _problem_lines("version: 1\ntable: x\nhit_policy: any\ninputs: [status, colour]\n"
                              "rules:\n  - {id: a, when: {status: \">= 3\"}, actions: [call]}\n")
    assert [line for line, _ in problems] == [3, 4, 6, 6]
    assert "hit_policy must be one of" in problems[0][1]
    assert "unknown input column 'colour'" in problems[1][1]
    assert "compares numbers" in problems[2][1]
    assert "unknown action 'call'" in problems[3][1]


def test_gap_analysis_matches_a_brute_force_oracle() -> None:
    text = (ROOT / "decisions" / "failed_attempts.yaml").read_text()
    table = DecisionTable.from_yaml(text.split("  - id: otherwise")[0], source="t.yaml")
    result = analyse(table)
    # oracle: every combination of sample values, on the table's evaluation
    statuses = [*(COLUMNS["status"].domain or ()), None]
    reasons = [*(COLUMNS["reason"].domain or ()), None]
    bands = ["low", "medium", "high", None]
    attempts = [0, 2, 2.5, 3, 4, None]
    uncovered = [(s, r, b, a) for s, r, b, a in itertools.product(statuses, reasons, bands,
                                                                  attempts)
                 if not table.evaluate({"status": s, "reason": r, "value_band": b,
                                        "attempts": a})]
    assert uncovered and result.gap_cells > 0
    # each uncovered sample lies in one reported gap, and no covered sample does
    def in_gap(values: tuple[object, ...]) -> bool:
        for gap in result.gaps:
            tests = [parse_test(gap[c], COLUMNS[c].kind) for c in table.inputs]
            if all(t.matches(v) for t, v in zip(tests, values, strict=True)):
                return True
        return False
    assert all(in_gap(v) for v in uncovered)
    covered = [(s, "address_issue", b, a) for s in ["delivery_attempted"] for b in bands
               for a in attempts]
    assert not any(in_gap(v) for v in covered)


@given(st.integers(-1000, 1000), st.integers(-1000, 1000), st.sampled_from(
    [">=", ">", "<=", "<", "="]))
def test_comparisons_agree_with_python(threshold: int, value: int, op: str) -> None:
    expected = {">=": value >= threshold, ">": value > threshold, "<=": value <= threshold,
                "<": value < threshold, "=": value == threshold}[op]
    assert parse_test(f"{op} {threshold}", "number").matches(value) is expected
    assert parse_test(f"not({op} {threshold})", "number").matches(value) is (not expected)


@given(st.integers(-50, 50), st.integers(-50, 50), st.integers(-60, 60), st.booleans(),
       st.booleans())
def test_ranges_agree_with_python(lo: int, hi: int, value: int, lo_closed: bool,
                                  hi_closed: bool) -> None:
    if lo > hi or (lo == hi and not (lo_closed and hi_closed)):
        with pytest.raises(UnaryTestError):
            parse_test(f"{'[' if lo_closed else '('}{lo}..{hi}{']' if hi_closed else ')'}",
                       "number")
        return
    test = parse_test(f"{'[' if lo_closed else '('}{lo}..{hi}{']' if hi_closed else ')'}",
                      "number")
    expected = (lo < value or (lo_closed and lo == value)) and \
        (value < hi or (hi_closed and value == hi))
    assert test.matches(value) is expected


@pytest.mark.parametrize("cell", ["", "in [a", "not()", "a,,b", ">= x", "[5..1]", "- , a"])
def test_bad_cells_are_errors(cell: str) -> None:
    kind = "number" if cell in (">= x", "[5..1]") else "text"
    if cell == "":
        assert parse_test(cell, kind).any
        return
    with pytest.raises(UnaryTestError):
        parse_test(cell, kind)


def _check(folder: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARRIERWATCH_")}
    env["PYTHONPATH"] = str(ROOT / "src")
    return subprocess.run([sys.executable, "-m", "carrierwatch", "decisions", "check", "--dir",
                           str(folder)], env=env, capture_output=True, text=True, timeout=120,
                          check=False)


def test_check_command_reports_problems_by_line_and_gaps(tmp_path: Path) -> None:
    good = _check(ROOT / "decisions")
    assert good.returncode == 0, good.stderr
    assert "3 tables checked, 0 problems, 0 with gaps" in good.stdout
    shutil.copytree(ROOT / "decisions", tmp_path / "d")
    path = tmp_path / "d" / "failed_attempts.yaml"
    text = path.read_text()
    path.write_text(text.split("  - id: otherwise")[0])
    broken = tmp_path / "d" / "open_exceptions.yaml"
    lines = broken.read_text().splitlines()
    number = next(i for i, line in enumerate(lines, 1) if "[escalate_partner]" in line)
    broken.write_text(broken.read_text().replace("[escalate_partner]", "[page_someone]"))
    done = _check(tmp_path / "d")
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert f"{broken}:{number}: rule 'past_resolution_target': unknown action 'page_someone'" \
        in done.stderr
    assert f"{path}:1: table 'failed_attempts': " in done.stderr
    assert "status: -; reason: recipient_not_available" in done.stderr
    assert "3 tables checked, 1 problems, 1 with gaps" in done.stdout
