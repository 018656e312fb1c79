"""Scorecards of a simulated week with incidents, for every partner, against an independent
oracle (scorecard_oracle.py); determinism; no synthetic package anywhere; the command."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from scorecard_oracle import PARTIES, ScorecardOracle, earlier_week, party, week_range
from week_fixture import SYNTHETIC_TRACKING, WEEK, WeekStore

from carrierwatch.scorecards.build import PartnerInfo, build_scorecards
from carrierwatch.scorecards.cli import partner_infos, write_card
from carrierwatch.scorecards.document import Scorecard
from carrierwatch.settings import get_settings
from carrierwatch.transformers.registry import load_registry

pytestmark = pytest.mark.slow
PARTNERS = ["aftership", "dhl", "easypost", "fedex", "ups"]


@pytest.fixture(scope="module")
def infos() -> list[PartnerInfo]:
    return partner_infos(load_registry(get_settings().home))


@pytest.fixture(scope="module")
def built(week_store: WeekStore, infos: list[PartnerInfo]
          ) -> tuple[list[Scorecard], ScorecardOracle]:
    with week_store.open() as store:
        cards = build_scorecards(store, WEEK, infos)
        events = store.fetch_events()
    oracle = ScorecardOracle(events, {i.partner_id: i.contract for i in infos},
                             {i.partner_id: i.synthetic_prefix for i in infos})
    return cards, oracle


def close(actual: Any, expected: Any, digits: int = 6) -> bool:
    if expected is None or actual is None:
        return actual is expected
    return math.isclose(actual, round(expected, digits), abs_tol=10 ** -digits)


def test_the_replayed_week_has_no_too_late_events(week_store: WeekStore) -> None:
    # the oracle applies every distinct event: that is the replay's result only without these
    assert week_store.replay_too_late == 0


def test_every_partner_with_data_gets_a_scorecard(built: tuple[list[Scorecard], Any]) -> None:
    cards, _ = built
    assert [c.partner_id for c in cards] == PARTNERS


def test_kpis_trend_change_and_rank_equal_the_oracle(
        built: tuple[list[Scorecard], ScorecardOracle]) -> None:
    cards, oracle = built
    mine = {p: oracle.kpis(p, WEEK) for p in PARTNERS}
    checked = 0
    for card in cards:
        expected = mine[card.partner_id]
        assert expected is not None
        previous = oracle.kpis(card.partner_id, earlier_week(WEEK, 1))
        for kpi in card.kpis:
            value, numerator, denominator, target, passed = expected[kpi.key]
            assert close(kpi.value, value), (card.partner_id, kpi.key, kpi.value, value)
            assert close(kpi.numerator, numerator, 4), (card.partner_id, kpi.key)
            assert kpi.denominator == denominator and kpi.target == target
            assert kpi.passed is passed, (card.partner_id, kpi.key, kpi.value, target)
            before = previous[kpi.key][0] if previous else None
            assert close(kpi.previous_value, before)
            if kpi.value is not None and before is not None:
                assert close(kpi.change, value - before, 5)
            # rank among the partners with a value (1 = best)
            values = {p: m[kpi.key][0] for p, m in mine.items()
                      if m is not None and m[kpi.key][0] is not None}
            if value is not None:
                better = sum(1 for v in values.values()
                             if (v > value if kpi.better == "higher" else v < value))
                assert kpi.rank == better + 1 and kpi.ranked_of == len(values)
            # the 8-week trend
            assert [p.week for p in kpi.trend] == [earlier_week(WEEK, n) for n in range(7, -1, -1)]
            for point in kpi.trend:
                theirs = oracle.kpis(card.partner_id, point.week)
                assert close(point.value, theirs[kpi.key][0] if theirs else None)
            checked += 1
        assert card.kpis_passed == sum(1 for e in expected.values() if e[4] is True)
        assert card.kpis_failed == sum(1 for e in expected.values() if e[4] is False)
    assert checked == 50
    # the incidents show: FedEx's exception spike misses its exception target
    fedex = next(c for c in cards if c.partner_id == "fedex")
    assert fedex.kpi("exception_rate").passed is False


def test_regions_and_the_heatmap_equal_the_oracle(
        built: tuple[list[Scorecard], ScorecardOracle]) -> None:
    cards, oracle = built
    for card in cards:
        start, end = week_range(WEEK, card.timezone)
        sums = oracle.sums(card.partner_id, start, end)
        expected = {r: s for r, s in sums.items()
                    if s["packages_decided"] + s["first_attempts"] > 0}
        assert sorted(r.region for r in card.regions) == sorted(expected)
        for row in card.regions:
            s = expected[row.region]
            assert (row.decided, row.on_time, row.first_attempts) == (
                s["packages_decided"], s["packages_on_time"], s["first_attempts"])
            assert row.failed_first_attempts == s["first_attempts"] - s["first_attempt_successes"]
        rates = [r.on_time_rate if r.on_time_rate is not None else 2 for r in card.regions]
        assert rates == sorted(rates)  # worst on-time first
        days = oracle.sums(card.partner_id, start, end, day_tz=card.timezone)
        expected_days = {k: s for k, s in days.items()
                         if s["packages_decided"] + s["first_attempts"] > 0}
        assert {(d.region, d.day) for d in card.region_days} == set(expected_days)
        for d in card.region_days:
            s = expected_days[(d.region, d.day)]
            assert d.decided == s["packages_decided"]
            assert close(d.on_time_rate, s["packages_on_time"] / s["packages_decided"]
                         if s["packages_decided"] else None)
            assert d.failed_first_attempts == s["first_attempts"] - s["first_attempt_successes"]


def test_hub_dwell_equals_the_oracle(built: tuple[list[Scorecard], ScorecardOracle]) -> None:
    cards, oracle = built
    measured = 0
    for card in cards:
        start, end = week_range(WEEK, card.timezone)
        stays = oracle.hubs(card.partner_id, start, end)
        assert {h.hub for h in card.hubs} == set(stays)
        for hub in card.hubs:
            durations = sorted(stays[hub.hub])
            assert hub.stays == len(durations)
            assert close(hub.mean_hours, sum(durations) / len(durations) / 3_600_000, 4)
            assert close(hub.p90_hours, durations[math.ceil(0.9 * len(durations)) - 1]
                         / 3_600_000, 4)
            assert close(hub.max_hours, durations[-1] / 3_600_000, 4)
            measured += hub.stays
    assert measured > 1_000


def test_failures_accountability_cost_and_credits_equal_the_oracle(
        built: tuple[list[Scorecard], ScorecardOracle]) -> None:
    cards, oracle = built
    credited_any = False
    for card in cards:
        contract = oracle.contracts[card.partner_id]
        start, end = week_range(WEEK, card.timezone)
        counts = oracle.failures(card.partner_id, start, end)
        assert {(f.kind, f.reason): f.count for f in card.failures} == dict(counts)
        for f in card.failures:
            assert f.accountable == party(f.reason, contract)
        for row in card.accountability:
            assert row.exceptions == sum(n for (k, r), n in counts.items()
                                         if k == "exception" and party(r, contract) == row.party)
            assert row.failed_attempts == sum(
                n for (k, r), n in counts.items()
                if k == "failed_attempt" and party(r, contract) == row.party)
        assert [a.party for a in card.accountability] == PARTIES
        rates = contract.rates
        assert rates is not None and card.cost is not None
        totals = oracle.totals(card.partner_id, start, end)
        assert totals is not None
        failed = sum(n for (k, _), n in counts.items() if k == "failed_attempt")
        returns = oracle.returns(card.partner_id, start, end)
        charges = (totals["deliveries"] * rates.per_delivery + failed * rates.per_reattempt
                   + returns * rates.per_return)
        cost = card.cost
        assert (cost.deliveries, cost.failed_attempts, cost.returns) == (
            totals["deliveries"], failed, returns)
        assert close(cost.charges, charges, 2)
        assert close(cost.cost_per_successful_delivery, charges / totals["deliveries"], 4)
        assert close(cost.cost_of_failed_attempts, failed * rates.per_reattempt, 2)
        carrier = sum(n for (k, r), n in counts.items()
                      if k == "failed_attempt" and party(r, contract) == "carrier")
        assert close(cost.cost_of_failed_attempts_carrier, carrier * rates.per_reattempt, 2)
        # credits: per KPI the highest triggered tier, summed, capped at 100 %
        kpis = oracle.kpis(card.partner_id, WEEK)
        assert kpis is not None and card.credits is not None
        percent = 0.0
        for kpi in {rule.kpi for rule in contract.credits}:
            value, *_, target, _passed = kpis[kpi]
            gap = 100 * ((target - value) if kpi != "exception_rate" else (value - target))
            tiers = [r.credit_percent for r in contract.credits
                     if r.kpi == kpi and gap > r.points]
            percent += max(tiers, default=0.0)
        percent = min(100.0, percent)
        assert close(card.credits.credit_percent, percent, 4)
        assert close(card.credits.amount, charges * percent / 100, 2)
        credited_any |= card.credits.amount > 0
    assert credited_any  # the incidents cost someone a credit


def test_the_package_sheet_equals_the_oracle(
        built: tuple[list[Scorecard], ScorecardOracle]) -> None:
    cards, oracle = built
    for card in cards:
        start, end = week_range(WEEK, card.timezone)
        credited = {line.kpi for line in card.credits.lines if line.applied} \
            if card.credits else set()
        expected = oracle.package_sheet(card.partner_id, start, end, credited)
        got = {p.tracking_number: p for p in card.packages}
        assert set(got) == set(expected), card.partner_id
        for number, row in expected.items():
            mine = got[number]
            for name, value in row.items():
                assert getattr(mine, name) == value, (card.partner_id, number, name)
        if card.credits is not None:
            assert card.credits.packages == sum(1 for p in card.packages if p.credit_kpis)
        numbers = [p.tracking_number for p in card.packages]
        assert len(numbers) == len(set(numbers))


def test_synthetic_packages_appear_nowhere(built: tuple[list[Scorecard], Any],
                                           tmp_path: Path) -> None:
    cards, _ = built
    for card in cards:
        for path in write_card(card, tmp_path, ("csv", "json", "html")):
            assert SYNTHETIC_TRACKING not in path.read_text(encoding="utf-8"), path
        assert "Synthopolis, US-ZZ" not in {h.hub for h in card.hubs}  # its hub stay


def test_the_same_week_twice_gives_byte_identical_csv_and_json(
        week_store: WeekStore, infos: list[PartnerInfo], tmp_path: Path) -> None:
    outputs = []
    for run in ("a", "b"):
        with week_store.open() as store:
            cards = build_scorecards(store, WEEK, infos)
        files: dict[str, bytes] = {}
        for card in cards:
            for path in write_card(card, tmp_path / run, ("csv", "json")):
                files[str(path.relative_to(tmp_path / run))] = path.read_bytes()
        outputs.append(files)
    assert len(outputs[0]) == 5 * 12
    assert outputs[0] == outputs[1]


def test_the_json_follows_the_committed_schema(built: tuple[list[Scorecard], Any]) -> None:
    import json

    from pydantic import TypeAdapter

    from carrierwatch.scorecards.document import json_schema

    committed = Path(__file__).resolve().parents[2] / "docs" / "scorecard.schema.json"
    assert json.loads(committed.read_text(encoding="utf-8")) == json_schema()
    adapter = TypeAdapter(Scorecard)
    cards, _ = built
    for card in cards:
        text = card.to_json()
        parsed = adapter.validate_json(text, strict=True)
        assert parsed.to_json() == text  # every field typed as documented, nothing extra


def test_a_week_without_data_names_the_week_that_has_data(
        week_store: WeekStore, infos: list[PartnerInfo], tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from carrierwatch.scorecards.cli import NoScorecardDataError, write_scorecards

    with week_store.open() as store, pytest.raises(NoScorecardDataError) as raised:
        # "now" is months later: the default (last complete) week holds nothing
        write_scorecards(store, infos, infos, None, ["json"], tmp_path,
                         now=datetime(2026, 12, 8, tzinfo=UTC))
    message = str(raised.value)
    assert "no data for week 2026-W49" in message
    assert "the store holds events of weeks 2026-W" in message
    assert "e.g. carrierwatch scorecard --week 2026-W1" in message
    assert not list(tmp_path.iterdir())
