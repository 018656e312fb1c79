"""``carrierwatch status`` on the simulated week: SLO figures are fetch_kpis', burn follows its
formula, and anomalies, heartbeats and codebook gaps written to the store show up."""

from __future__ import annotations

import pytest
from week_fixture import WeekStore

from carrierwatch.core.model import CanonicalEvent, event_id
from carrierwatch.outputs.status import burn_rate, partner_status
from carrierwatch.scorecards.cli import partner_infos
from carrierwatch.scorecards.kpis import fetch_kpis
from carrierwatch.settings import get_settings
from carrierwatch.transformers.registry import load_registry

pytestmark = pytest.mark.slow
AT = 1_772_798_400_000  # 2026-03-06 12:00 UTC
HOUR = 3_600_000


def test_status_reads_slos_anomalies_heartbeats_and_gaps_from_the_store(
        week_store: WeekStore) -> None:
    infos = partner_infos(load_registry(get_settings().home))
    contracts = {i.partner_id: i.contract for i in infos}
    with week_store.open() as store:
        store.insert("anomalies", [{
            "partner_id": "ups", "metric": "volume", "window_start": AT - 2 * HOUR,
            "detector": "test", "value": 0.0, "score": 0.93, "threshold": 0.5,
            "is_anomaly": True}])
        store.insert("heartbeats", [
            {"partner_id": "dhl", "heartbeat_id": f"hb{i}", "package_id": None,
             "sent_at": AT - (i + 1) * HOUR, "deadline_at": AT - i * HOUR,
             "seen_at": None if i == 0 else AT - (i + 1) * HOUR + 60_000,
             "latency_ms": None if i == 0 else 60_000.0,
             "status": "missing" if i == 0 else "seen", "updated_at": AT - i * HOUR}
            for i in range(3)])
        gap = CanonicalEvent(event_id("usps", "usps:9400X", "unknown", AT - HOUR), "usps",
                             "usps:9400X", "9400X", "unknown", 0.0, "ZZ9", AT - HOUR,
                             AT - HOUR + 1000)
        store.insert_events([gap])
        doc = {p["partner_id"]: p for p in partner_status(store, infos, AT, 6 * HOUR)}
        recent = fetch_kpis(store, AT - 6 * HOUR, AT, contracts)
        month = fetch_kpis(store, AT - 28 * 86_400_000, AT, contracts)
    for pid, figures in recent.items():
        slos = {s["kpi"]: s for s in doc[pid]["slos"]}
        long = {f.key: f for f in month[pid]}
        for figure in figures:
            s = slos[figure.key]
            assert (s["value"], s["denominator"], s["passed"]) == (
                figure.value, figure.denominator, figure.passed)
            if "burn_rate" in s:
                assert s["burn_rate"] == burn_rate(figure.value, figure.target or 0)
                expected = burn_rate(long[figure.key].value, figure.target or 0)
                assert s["budget_remaining"] == (None if expected is None else 1 - expected)
    assert doc["fedex"]["slos"][0]["denominator"] > 0  # a weekday: packages were decided
    assert doc["ups"]["anomalies"] == [{"metric": "volume", "windows": 1,
                                        "last_window": "2026-03-06T10:00:00Z",
                                        "max_score": 0.93}]
    assert doc["dhl"]["integration"]["state"] == "slow"
    assert (doc["dhl"]["integration"]["seen"], doc["dhl"]["integration"]["missing"]) == (2, 1)
    assert doc["usps"]["codebook_gaps"] == [{"code": "ZZ9", "events": 1}]
    assert doc["fedex"]["integration"] is None and doc["fedex"]["codebook_gaps"] == []
