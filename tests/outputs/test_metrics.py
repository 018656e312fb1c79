"""The stream processes' Prometheus metrics (carrierwatch.outputs.metrics).

* The SLI counters of a replay equal what the store holds, computed independently with SQL
  (package_outcomes, metric_windows, canonical_events).
* Every exporter's exposition passes ``promtool check metrics`` (the real promtool).
* Label values are bounded: none is a package id or a tracking number.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from carrierwatch.core.model import CanonicalEvent, event_id
from carrierwatch.core.partner import SlaContract
from carrierwatch.core.pipeline import Pipeline
from carrierwatch.outputs.metrics import GAP_CODES_SHOWN, OTHER, SLOS, WorkerMetrics
from carrierwatch.replay import iter_inputs, pipeline_for, run_replay
from carrierwatch.settings import Settings
from carrierwatch.storage import open_store
from carrierwatch.synthetic.rawlog import RawRecord
from carrierwatch.synthetic.simulator import simulate
from carrierwatch.testing import require_binary
from carrierwatch.transformers.registry import PartnerRegistry, load_registry

PARTNERS = ["ups", "fedex", "metro_courier"]
NOON = 1_772_452_800_000
#: label names any carrierwatch metric may carry (docs/metrics.md, "Prometheus metrics")
ALLOWED_LABELS = {"partner", "service_level", "slo", "stage", "code", "group", "topic",
                  "metric", "outcome", "reason", "store", "le", "integration", "state",
                  "region"}


@pytest.fixture(scope="module")
def registry() -> PartnerRegistry:
    return load_registry()


@pytest.fixture(scope="module")
def feed(tmp_path_factory: pytest.TempPathFactory) -> list[RawRecord]:
    out = tmp_path_factory.mktemp("simulation")
    simulate(PARTNERS, days=2, seed=23, out_dir=out, packages_per_day=150,
             incidents=["codebook_change@metro_courier:1d+6h"])
    return list(iter_inputs([out]))


@pytest.fixture(scope="module")
def replayed(feed: list[RawRecord], registry: PartnerRegistry,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[WorkerMetrics, Any]]:
    """A replay of the feed with the worker's metrics observing the pipeline (and the normalize
    side fed with every payload), and the store it wrote."""
    metrics = WorkerMetrics({p.id: p.spec.contract for p in registry})
    for record in feed:
        result = registry.get(record.partner).transform(record.body, record.received_time,
                                                        record.headers)
        metrics.observe_payload(record.partner, result.events, result.dead_letters)
    pipeline = pipeline_for(registry)
    pipeline.observer = metrics.observe_output
    data_dir = tmp_path_factory.mktemp("store")
    with open_store(Settings(data_dir=data_dir), command="pytest metrics", migrate=True) as store:
        run_replay(feed, store, registry, pipeline=pipeline)
        yield metrics, store


def sli_by_partner(metrics: WorkerMetrics, name: str) -> dict[tuple[str, str], float]:
    totals: dict[tuple[str, str], float] = {}
    for family in metrics.registry.collect():
        for sample in family.samples:
            if sample.name == name:
                key = (sample.labels["partner"], sample.labels["slo"])
                totals[key] = totals.get(key, 0.0) + sample.value
    return totals


def test_sli_counters_equal_the_store(replayed: tuple[WorkerMetrics, Any],
                                      registry: PartnerRegistry) -> None:
    metrics, store = replayed
    total = sli_by_partner(metrics, "carrierwatch_sli_events_total")
    good = sli_by_partner(metrics, "carrierwatch_sli_good_events_total")
    corrections = sum(s.value for f in metrics.registry.collect() for s in f.samples
                      if s.name == "carrierwatch_sli_corrections_total")
    assert corrections == 0  # no decision of this feed was retracted: counters = store
    expected: dict[tuple[str, str], tuple[int, int]] = {}
    for column, slo in (("on_time", "on_time"), ("first_attempt_success", "first_attempt"),
                        ("pickup_on_time", "pickup_compliance")):
        for partner, n, ok in store.query(
                f"SELECT partner_id, count(), sum({column}) FROM package_outcomes FINAL "
                f"WHERE NOT synthetic AND {column} IS NOT NULL GROUP BY partner_id"):
            expected[(partner, slo)] = (n, ok)
    for partner, n, ok, too_late in store.query(
            "SELECT partner_id, sum(deliveries), sum(tracking_compliant), sum(too_late_events) "
            "FROM metric_windows FINAL WHERE granularity = '1d' GROUP BY partner_id"):
        expected[(partner, "tracking_compliance")] = (n, ok)
        assert too_late == 0  # so every stored canonical event was accepted once
    for partner in PARTNERS:
        limit_ms = int(registry.get(partner).spec.contract.event_latency_p95_max_minutes * 60_000)
        [(n, ok)] = store.query(
            "SELECT count(), countIf(dateDiff('ms', event_time, received_time) <= %(limit)s) "
            "FROM canonical_events FINAL WHERE partner_id = %(partner)s AND NOT synthetic",
            {"partner": partner, "limit": limit_ms})
        expected[(partner, "event_latency")] = (n, ok)
    for partner in PARTNERS:
        for slo in SLOS:
            n, ok = expected.get((partner, slo), (0, 0))
            assert (total.get((partner, slo)), good.get((partner, slo))) == (n, ok), (partner, slo)
    assert sum(n for n, _ in expected.values()) > 3000  # a feed that exercises every SLO
    assert all(expected[(p, slo)][0] > 0 for p in PARTNERS for slo in SLOS
               if slo != "pickup_compliance" or p != "metro_courier")


def test_normalize_counters(replayed: tuple[WorkerMetrics, Any], feed: list[RawRecord]) -> None:
    metrics, store = replayed
    payloads = {p: sum(1 for r in feed if r.partner == p) for p in PARTNERS}
    for partner in PARTNERS:
        assert metrics.sample("carrierwatch_raw_payloads_total", partner=partner) \
            == payloads[partner]
    [(unknown,)] = store.query("SELECT count() FROM canonical_events FINAL "
                               "WHERE partner_id = 'metro_courier' AND status = 'unknown'")
    assert unknown > 0  # the code change incident opened a codebook gap
    counted = metrics.sample("carrierwatch_codebook_unknown_codes_total",
                             partner="metro_courier")
    assert counted is not None and counted >= unknown  # webhooks resend histories
    shown = [s.labels["code"] for f in metrics.registry.collect() for s in f.samples
             if s.name == "carrierwatch_codebook_gap_info"
             and s.labels["partner"] == "metro_courier"]
    codes = {row[0] for row in store.query(
        "SELECT raw_code FROM canonical_events FINAL WHERE partner_id = 'metro_courier' "
        "AND status = 'unknown'")}
    assert 1 <= len(shown) <= GAP_CODES_SHOWN and set(shown) <= codes


def test_promtool_accepts_every_exporter(replayed: tuple[WorkerMetrics, Any]) -> None:
    promtool = require_binary("promtool", "prometheus")
    from carrierwatch.ingest.gateway import GatewayMetrics
    from carrierwatch.streams.sink import SinkMetrics, SinkMonitor

    metrics, _ = replayed
    sink = SinkMetrics()
    SinkMonitor(Path("/nonexistent/monitor.bin"), sink.registry)  # the anomaly exporter
    sink.kafka_up.set(1)
    sink.consumer_lag.labels("carrierwatch-sink", "cw.sink").set(3)
    from prometheus_client import generate_latest

    for name, text in (("worker", metrics.exposition()), ("sink", generate_latest(sink.registry)),
                       ("gateway", generate_latest(GatewayMetrics().registry))):
        checked = subprocess.run([promtool, "check", "metrics"], input=text,
                                 capture_output=True, timeout=60)
        assert checked.returncode == 0, (name, checked.stdout, checked.stderr)
        assert checked.stdout.strip() == b"" and checked.stderr.strip() == b"", name


def test_label_values_are_bounded(replayed: tuple[WorkerMetrics, Any],
                                  registry: PartnerRegistry) -> None:
    metrics, store = replayed
    ids = {row[0] for row in store.query("SELECT package_id FROM package_outcomes FINAL")}
    ids |= {row[0] for row in store.query(
        "SELECT tracking_number FROM canonical_events FINAL")}
    assert len(ids) > 500
    levels = {level for p in registry for level in p.spec.contract.transit_days} | {OTHER}
    values: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(metrics.exposition().decode()):
        for sample in family.samples:
            assert set(sample.labels) <= ALLOWED_LABELS, sample
            for label, value in sample.labels.items():
                values.setdefault(label, set()).add(value)
                assert value not in ids, (sample.name, label, value)
                assert not any(i in value for i in ids if len(i) >= 8), (sample.name, value)
    assert values["partner"] <= set(registry.ids()) | {"unknown"}
    assert values["service_level"] <= levels
    assert values["slo"] == set(SLOS)
    assert values["stage"] <= {"normalize", "track"}
    assert len(values["code"]) <= GAP_CODES_SHOWN * len(PARTNERS)


def _event(status: str, t: int, package: str = "p1", **kwargs: Any) -> CanonicalEvent:
    return CanonicalEvent(event_id("demo", package, status, t), "demo", package, "1", status,
                          1.0, "x", t, t + 60_000, **kwargs)


def test_a_retracted_decision_stays_counted_and_is_a_correction() -> None:
    """Late at the deadline, then a cancellation dated before it retracts the decision: the
    counters keep the decision (they only go up) and count the correction."""
    metrics = WorkerMetrics({"demo": SlaContract(required_milestones=())})
    pipe = Pipeline({"demo": SlaContract(required_milestones=())}, granularities=("1h",),
                    allowed_lateness_ms=3_600_000, lateness_scope="package")
    pipe.observer = metrics.observe_output
    pipe.process([_event("info_received", NOON - 7_200_000, promised_by=NOON)])
    pipe.process([_event("picked_up", NOON + 4 * 3_600_000, package="p2")])  # watermark moves
    assert pipe.outcome("p1").on_time is False  # type: ignore[union-attr]
    labels = {"partner": "demo", "service_level": "ground", "slo": "on_time"}
    assert metrics.sample("carrierwatch_sli_events_total", **labels) == 1
    assert metrics.sample("carrierwatch_sli_good_events_total", **labels) == 0
    pipe.process([_event("cancelled", NOON - 3_600_000)])
    assert pipe.outcome("p1").on_time is None  # type: ignore[union-attr]
    assert metrics.sample("carrierwatch_sli_events_total", **labels) == 1
    assert metrics.sample("carrierwatch_sli_corrections_total", **labels) == 1


def test_synthetic_packages_and_events_count_nowhere() -> None:
    metrics = WorkerMetrics({"demo": SlaContract(required_milestones=())})
    pipe = Pipeline({"demo": SlaContract(required_milestones=())}, granularities=("1h",))
    pipe.observer = metrics.observe_output
    pipe.process([_event("picked_up", NOON - 3_600_000, synthetic=True, promised_by=NOON),
                  _event("delivered", NOON - 60_000, synthetic=True, promised_by=NOON)])
    for slo in SLOS:
        assert metrics.sample("carrierwatch_sli_events_total", partner="demo",
                              service_level="ground", slo=slo) == 0
