"""Scorecard verdicts against contracts (outputs/scorecard.py)."""

from __future__ import annotations

from carrierwatch.core.partner import SlaContract
from carrierwatch.core.sketch import RELATIVE_ERROR, histogram_of
from carrierwatch.core.windows import MetricWindowRow
from carrierwatch.outputs.scorecard import PartnerScorecard, latency_verdict

MINUTE_MS = 60_000


def _card(latencies_minutes: list[float], limit_minutes: float) -> PartnerScorecard:
    row = MetricWindowRow("dhl", "*", "*", "1d", 0, 0, 0, latency_hist=histogram_of(
        [int(m * MINUTE_MS) for m in latencies_minutes]))
    return PartnerScorecard("dhl", SlaContract(event_latency_p95_max_minutes=limit_minutes), row)


def test_a_latency_p95_within_the_histogram_s_error_of_its_limit_is_not_a_breach() -> None:
    # the demo's DHL: every latency is 241 min, read back as 243 min, against a limit of 240
    card = _card([30.0] * 5 + [241.0] * 95, 240)
    assert card.latency_p95_ms is not None
    assert round(card.latency_p95_ms / MINUTE_MS) == 243
    assert card.latency_verdict == "within error"
    assert "latency" not in card.breaches
    assert card.within_error == ["latency"]


def test_a_latency_p95_clearly_over_or_under_its_limit_is_missed_or_met() -> None:
    missed = _card([260.0] * 100, 240)
    assert missed.latency_verdict == "missed"
    assert missed.breaches == ["latency"] and missed.within_error == []
    met = _card([200.0] * 100, 240)
    assert met.latency_verdict == "met"
    assert met.breaches == [] and met.within_error == []


def test_the_verdict_changes_exactly_at_the_edges_of_the_error_band() -> None:
    limit = 240.0
    # an estimate more than one relative error above the limit: the whole bucket is above it
    above = limit * (1 + RELATIVE_ERROR) ** 2 * MINUTE_MS
    below = limit / (1 + RELATIVE_ERROR) ** 2 * MINUTE_MS
    assert latency_verdict(int(above), limit) == "missed"
    assert latency_verdict(int(below), limit) == "met"
    assert latency_verdict(int(limit * MINUTE_MS), limit) == "within error"
    assert latency_verdict(None, limit) is None
