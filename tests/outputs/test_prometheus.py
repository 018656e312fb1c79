"""The anomaly exporter: its own registry, values from the monitor, duplicate names rejected."""

from __future__ import annotations

import urllib.request

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from carrierwatch.anomaly.monitor import AnomalyMonitor, MonitorOutput, ScoredPoint
from carrierwatch.core.windows import MetricWindowRow
from carrierwatch.outputs.prometheus import AnomalyExporter

BASE = 1_772_409_600_000
W = 300_000


def test_each_exporter_has_a_fresh_registry() -> None:
    first, second = AnomalyExporter(), AnomalyExporter()
    assert first.registry is not second.registry
    first.update(MonitorOutput(points=[ScoredPoint("ups", "volume", BASE, 0.0, 0.9, True, True)]))
    assert first.sample("carrierwatch_anomaly_score", partner="ups", metric="volume") == 0.9
    assert second.sample("carrierwatch_anomaly_score", partner="ups", metric="volume") is None


def test_duplicate_registration_is_rejected() -> None:
    registry = CollectorRegistry()
    AnomalyExporter(registry)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        AnomalyExporter(registry)


def test_exporter_follows_the_monitor() -> None:
    rows = [MetricWindowRow("acme", "US", "ground", "5m", BASE + i * W, 0, 1,
                            events=900 if i == 700 else 100 + (i * 7919) % 11)
            for i in range(760)]
    monitor = AnomalyMonitor(metrics=("volume",))
    exporter = AnomalyExporter()
    active_after_spike = None
    for row in rows:  # one window at a time, as a live feed delivers them
        out = monitor.observe([row])
        exporter.update(out)
        if any(p.window_start == BASE + 700 * W for p in out.points):
            active_after_spike = exporter.sample("carrierwatch_anomaly_active", partner="acme",
                                                 metric="volume")
    labels = {"partner": "acme", "metric": "volume"}
    assert active_after_spike == 1.0
    flagged = exporter.sample("carrierwatch_anomalies_total", **labels)
    assert flagged is not None and 1.0 <= flagged <= 24.0  # the spike, while in trailing sums
    assert exporter.sample("carrierwatch_anomaly_windows_scored_total", **labels) == 756.0
    assert exporter.sample("carrierwatch_anomaly_active", **labels) == 0.0  # resolved since
    assert exporter.sample("carrierwatch_anomaly_window_start_seconds", **labels) \
        == (BASE + 755 * W) / 1000
    assert exporter.sample("carrierwatch_anomaly_value", **labels) == float(100 + 755 * 7919 % 11)
    families = {f.name: f for f in text_string_to_metric_families(exporter.exposition().decode())}
    assert {"carrierwatch_anomaly_score", "carrierwatch_anomaly_active",
            "carrierwatch_anomalies"} <= set(families)
    assert families["carrierwatch_anomalies"].type == "counter"
    assert families["carrierwatch_anomaly_score"].type == "gauge"


def test_serves_metrics_over_http_on_loopback() -> None:
    exporter = AnomalyExporter()
    exporter.update(MonitorOutput(points=[ScoredPoint("dhl", "latency_p95", BASE, 42.0, 0.7,
                                                      True, True)]))
    server = exporter.serve(0)
    try:
        port = server.server_address[1]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            body = response.read().decode()
    finally:
        server.shutdown()
        server.server_close()
    assert 'carrierwatch_anomaly_active{metric="latency_p95",partner="dhl"} 1.0' in body


def test_module_examples_run() -> None:
    import doctest

    from carrierwatch.outputs import prometheus

    failures, attempted = doctest.testmod(prometheus)
    assert failures == 0 and attempted > 0
