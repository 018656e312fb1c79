"""The burn-rate math: the SRE workbook's table as the oracle, its invariants as properties."""

from __future__ import annotations

import doctest

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy.stats import binom

from carrierwatch.alerting import burnrate
from carrierwatch.alerting.burnrate import (
    Threshold,
    burn_rate_windows,
    duration_seconds,
    false_alarm_probability,
    format_duration,
)

#: Google SRE workbook, "Alerting on SLOs", table 5-8 (30-day SLO window)
WORKBOOK_30D = [("page", "1h", "5m", 14.4), ("page", "6h", "30m", 6.0),
                ("ticket", "1d", "2h", 3.0), ("ticket", "3d", "6h", 1.0)]


def test_doctests() -> None:
    assert doctest.testmod(burnrate).failed == 0


def test_a_30_day_window_gives_the_workbook_table() -> None:
    got = [(w.severity, w.long, w.short, w.burn_rate) for w in burn_rate_windows(30)]
    assert [g[:3] for g in got] == [w[:3] for w in WORKBOOK_30D]
    assert [g[3] for g in got] == pytest.approx([w[3] for w in WORKBOOK_30D])


def test_the_workbook_error_ratios_for_a_99_9_percent_slo() -> None:
    # the workbook's example: 99.9 % over 30 days pages at 1.44 % errors in both 1 h and 5 min
    ratios = [w.threshold(0.999).error_ratio for w in burn_rate_windows(30)]
    assert ratios == pytest.approx([0.0144, 0.006, 0.003, 0.001])


def test_ups_28_day_window() -> None:
    assert [w.burn_rate for w in burn_rate_windows(28)] == pytest.approx(
        [13.44, 5.6, 2.8, 0.9333333])
    page = burn_rate_windows(28)[0]
    assert page.threshold(0.96) == Threshold(pytest.approx(0.5376), ">")  # type: ignore[arg-type]
    # UPS first-attempt (92 %): 13.44 x 8 % > 1, clamped to "every event bad"
    assert page.threshold(0.92) == Threshold(1.0, ">=")


@given(days=st.integers(min_value=4, max_value=400))
def test_every_row_spends_its_budget_fraction_whatever_the_window(days: int) -> None:
    for window, row in zip(burn_rate_windows(days), burnrate.WORKBOOK_ROWS, strict=True):
        spent = window.burn_rate * duration_seconds(window.long) / (days * 86400)
        assert spent == pytest.approx(row.budget_fraction)
        assert duration_seconds(window.long) == 12 * duration_seconds(window.short)
    rates = [w.burn_rate for w in burn_rate_windows(days)]
    assert rates == sorted(rates, reverse=True)  # faster windows need a faster burn


@given(days=st.integers(min_value=4, max_value=400),
       target=st.floats(min_value=0.5, max_value=0.99999))
def test_thresholds_are_ratios_and_stricter_targets_give_lower_ones(days: int,
                                                                   target: float) -> None:
    for window in burn_rate_windows(days):
        threshold = window.threshold(target)
        assert 0 < threshold.error_ratio <= 1
        if threshold.comparison == ">":
            assert threshold.error_ratio == pytest.approx(window.burn_rate * (1 - target))
        else:
            assert window.burn_rate * (1 - target) >= 1
        stricter = window.threshold(target + (1 - target) / 2)
        assert stricter.error_ratio <= threshold.error_ratio


def test_windows_and_targets_out_of_range_are_refused() -> None:
    with pytest.raises(ValueError, match="longer than the alert window 3d"):
        burn_rate_windows(3)
    with pytest.raises(ValueError, match="positive"):
        burn_rate_windows(0)
    for target in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match="between 0 and 1"):
            burn_rate_windows(28)[0].threshold(target)


@given(st.integers(min_value=1, max_value=10**7))
def test_durations_round_trip(seconds: int) -> None:
    assert duration_seconds(format_duration(seconds)) == seconds


@given(events=st.integers(min_value=1, max_value=300),
       target=st.floats(min_value=0.8, max_value=0.999),
       ratio=st.floats(min_value=0.001, max_value=1.0), inclusive=st.booleans())
def test_false_alarm_probability_is_scipys_binomial_tail(events: int, target: float,
                                                         ratio: float, inclusive: bool) -> None:
    threshold = Threshold(ratio, ">=" if inclusive else ">")
    # oracle: count k bad outcomes that cross the threshold by direct comparison, sum the pmf
    expected = sum(binom.pmf(k, events, 1 - target) for k in range(events + 1)
                   if (k / events >= ratio if inclusive else k / events > ratio))
    assert false_alarm_probability(events, target, threshold) == pytest.approx(
        expected, rel=1e-6, abs=1e-12)


def test_the_minimum_of_20_events_makes_a_chance_page_negligible() -> None:
    # a partner exactly on its 96 % target: with 2 events an hour, "both late" happens 1 hour
    # in 625, about once a month per SLO; with 20 it needs 11 late of 20: never in practice
    page = burn_rate_windows(28)[0].threshold(0.96)
    assert false_alarm_probability(2, 0.96, page) == pytest.approx(0.0016)
    assert false_alarm_probability(20, 0.96, page) < 1e-10
