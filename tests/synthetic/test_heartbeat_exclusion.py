"""Synthetic packages count in no partner SLA metric, outcome or scorecard, but do feed the
``heartbeat_latency`` anomaly stream.

The same simulated day of four partners (a webhook, a poller, a batch drop and the courier) is
replayed twice into chDB — alone, and with a heartbeat of each partner every 20 minutes mixed
in, in each partner's own format and marked only by its tracking prefix (as a dropped file is)
— and the stored results are compared. If the heartbeats counted anywhere (on-time, first
attempt, pickup, tracking compliance, latency histograms, volumes, exceptions), a window or an
outcome would differ.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from carrierwatch.anomaly.monitor import AnomalyMonitor, monitor_options_for
from carrierwatch.core.timeutil import to_ms
from carrierwatch.outputs.scorecard import scorecards
from carrierwatch.replay import pipeline_for, run_replay
from carrierwatch.settings import Settings
from carrierwatch.storage import open_store
from carrierwatch.synthetic.heartbeat import render_heartbeat
from carrierwatch.synthetic.rawlog import RawRecord, iter_rawlog, rawlog_name
from carrierwatch.synthetic.simulator import simulate
from carrierwatch.transformers.registry import PartnerRegistry

pytestmark = pytest.mark.slow

PARTNERS = ["fedex", "ups", "valley_express", "metro_courier"]
START = "2026-03-02"
HEARTBEATS_PER_DAY = 72  # every 20 minutes


def _replay(records: list[RawRecord], data_dir: Path, registry: PartnerRegistry
            ) -> tuple[dict[str, Any], AnomalyMonitor]:
    monitor = AnomalyMonitor(**monitor_options_for(p.spec for p in registry))
    with open_store(Settings(data_dir=data_dir), command="pytest", migrate=True) as store:
        run_replay(records, store, registry, pipeline=pipeline_for(registry),
                   monitor=monitor)
        windows: dict[tuple[Any, ...], dict[str, Any]] = {}
        for row in store.query_dicts("SELECT * FROM metric_windows FINAL"):
            key = (row["partner_id"], row["region"], row["service_level"],
                   row["granularity"], row["window_start"])
            values = {k: v for k, v in row.items()
                      if k not in ("partner_id", "region", "service_level", "granularity",
                                   "window_start", "version", "shard", "synthetic_events",
                                   "updated_at", "written_at")}
            if any(values.values()):  # a window holding only heartbeats says nothing else
                windows[key] = values
            if row["synthetic_events"]:
                windows.setdefault(("synthetic", *key), {})["n"] = row["synthetic_events"]
        outcomes = store.query_dicts(
            "SELECT * EXCEPT (version, shard) FROM package_outcomes FINAL "
            "ORDER BY partner_id, package_id")
        contracts = {p.id: p.spec.contract for p in registry}
        # what a scorecard shows (its totals row also carries the synthetic event count)
        cards = [(c.partner_id, c.on_time, c.first_attempt, c.exception_rate,
                  c.pickup_compliance, c.latency_p95_ms, c.breaches, c.total.events, c.days)
                 for c in scorecards(store, contracts)]
        synthetic_events = store.query(
            "SELECT partner_id, count() FROM canonical_events FINAL WHERE synthetic "
            "GROUP BY partner_id ORDER BY partner_id")
    return {"windows": windows, "outcomes": outcomes, "cards": cards,
            "synthetic_events": dict(synthetic_events)}, monitor


def test_heartbeats_count_in_no_sla_metric_outcome_or_scorecard_but_feed_heartbeat_latency(
        tmp_path: Path, registry: PartnerRegistry) -> None:
    simulate(PARTNERS, 1, 11, (), tmp_path / "sim", 120, START, warmup_days=1)
    base = sorted((record for partner in PARTNERS
                   for record in iter_rawlog(tmp_path / "sim" / rawlog_name(partner))),
                  key=lambda r: r.received_time)
    day = to_ms(datetime.fromisoformat(START + "T00:00:00+00:00"))
    beats: list[RawRecord] = []
    for partner_id in PARTNERS:
        partner = registry.get(partner_id)
        for n in range(HEARTBEATS_PER_DAY):
            payload = render_heartbeat(partner, day + n * 1_200_000 + 7_000, n)
            headers = {"content-type": payload.content_type}
            beats.append(RawRecord(partner_id, payload.sent_at_ms + 2_000, headers,
                                   payload.body))
    mixed = sorted(base + beats, key=lambda r: r.received_time)

    alone, monitor_alone = _replay(base, tmp_path / "alone", registry)
    with_beats, monitor_mixed = _replay(mixed, tmp_path / "mixed", registry)

    # the heartbeats change no SLA window (every counter, sum and histogram but
    # synthetic_events)
    real = {k: v for k, v in with_beats["windows"].items() if k[0] != "synthetic"}
    assert real == alone["windows"]
    assert len(real) > 100
    # yet they are there: five synthetic events each, counted as synthetic only
    assert alone["synthetic_events"] == {}
    assert with_beats["synthetic_events"] == {p: 5 * HEARTBEATS_PER_DAY for p in PARTNERS}
    synthetic_windows = {k: v for k, v in with_beats["windows"].items() if k[0] == "synthetic"}
    assert sum(v["n"] for k, v in synthetic_windows.items() if k[4] == "1d") == \
        5 * HEARTBEATS_PER_DAY * len(PARTNERS)
    # their outcome rows are flagged synthetic; every other outcome is the same
    outcomes = with_beats["outcomes"]
    synthetic = [o for o in outcomes if o["synthetic"]]
    assert len(synthetic) == HEARTBEATS_PER_DAY * len(PARTNERS)
    assert all(o["status"] == "delivered" for o in synthetic)
    assert [o for o in outcomes if not o["synthetic"]] == alone["outcomes"]
    # the scorecards are the same
    assert with_beats["cards"] == alone["cards"]
    assert alone["cards"]
    # the heartbeat_latency stream got them (and only them): received - event time
    assert monitor_alone.stats["heartbeats"] == 0
    assert monitor_mixed.stats["heartbeats"] == 5 * HEARTBEATS_PER_DAY * len(PARTNERS)
    for key in ("arrivals", "late_arrivals"):
        if key in monitor_alone.stats:
            assert monitor_mixed.stats[key] == monitor_alone.stats[key], key
