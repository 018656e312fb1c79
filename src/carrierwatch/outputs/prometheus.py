"""Prometheus exporter of the anomaly monitor (prometheus-client, one registry per exporter).

Every exporter owns a fresh :class:`~prometheus_client.CollectorRegistry`, so two exporters (or two
tests) never share series; prometheus-client checks metric names at registration and rejects a
duplicate (``ValueError``), so registering this exporter's metrics twice in one registry fails.

=========================================  ======  ==============================================
metric                                     type    meaning
=========================================  ======  ==============================================
``carrierwatch_anomaly_score``             gauge   latest detector score of the stream (0-1)
``carrierwatch_anomaly_active``            gauge   1 while the stream's alert is firing, else 0
``carrierwatch_anomaly_value``             gauge   latest metric value the detector scored
``carrierwatch_anomaly_window_start_seconds``  gauge  start of the latest scored window (epoch s)
``carrierwatch_anomalies_total``           counter windows scored anomalous
``carrierwatch_anomaly_windows_scored_total``  counter  windows scored
=========================================  ======  ==============================================

All carry the labels ``partner`` and ``metric``. The alert rule built on them
(``carrierwatch_anomaly_active == 1``) and the runbook are the outputs' alerting concern.

Examples
--------
>>> from carrierwatch.anomaly.monitor import MonitorOutput, ScoredPoint
>>> exporter = AnomalyExporter()
>>> exporter.update(MonitorOutput(points=[
...     ScoredPoint("ups", "volume", 1_772_409_600_000, 0.0, 0.97, True, True)]))
>>> exporter.sample("carrierwatch_anomaly_active", partner="ups", metric="volume")
1.0
>>> exporter.sample("carrierwatch_anomalies_total", partner="ups", metric="volume")
1.0
"""

from __future__ import annotations

from collections.abc import Iterable
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.exposition import start_http_server

from carrierwatch.anomaly.monitor import MonitorOutput, ScoredPoint

__all__ = ["LABELS", "AnomalyExporter"]

LABELS = ("partner", "metric")


class AnomalyExporter:
    """The monitor's Prometheus metrics in a registry of their own.

    Parameters
    ----------
    registry
        Registry to register into (default: a fresh one; pass the same one twice to see the
        duplicate-name check fail).
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.score = Gauge("carrierwatch_anomaly_score",
                           "Latest anomaly score of the partner's metric stream (0-1, high = "
                           "anomalous).", LABELS, registry=self.registry)
        self.active = Gauge("carrierwatch_anomaly_active",
                            "1 while the stream's PartnerMetricAnomalous alert is firing.",
                            LABELS, registry=self.registry)
        self.value = Gauge("carrierwatch_anomaly_value",
                           "Latest metric value the detector scored.", LABELS,
                           registry=self.registry)
        self.window = Gauge("carrierwatch_anomaly_window_start_seconds",
                            "Start of the latest scored 5-minute window (epoch seconds).",
                            LABELS, registry=self.registry)
        self.anomalies = Counter("carrierwatch_anomalies",
                                 "Windows scored anomalous.", LABELS, registry=self.registry)
        self.scored = Counter("carrierwatch_anomaly_windows_scored",
                              "Windows scored.", LABELS, registry=self.registry)

    def observe(self, points: Iterable[ScoredPoint]) -> None:
        """Record scored points (in scoring order: the last one of a stream wins)."""
        for point in points:
            labels = (point.partner_id, point.metric)
            self.score.labels(*labels).set(point.score)
            self.active.labels(*labels).set(1.0 if point.active else 0.0)
            self.value.labels(*labels).set(point.value)
            self.window.labels(*labels).set(point.window_start / 1000.0)
            self.scored.labels(*labels).inc()
            if point.is_anomaly:
                self.anomalies.labels(*labels).inc()

    def update(self, output: MonitorOutput) -> None:
        """Record what one :meth:`AnomalyMonitor.observe` call produced."""
        self.observe(output.points)

    def sample(self, name: str, **labels: str) -> float | None:
        """Current value of one sample (``None`` when absent), read from the registry."""
        return self.registry.get_sample_value(name, labels)

    def exposition(self) -> bytes:
        """The text exposition format of this exporter's registry (what ``/metrics`` serves)."""
        return generate_latest(self.registry)

    def serve(self, port: int, addr: str = "127.0.0.1") -> WSGIServer:
        """Serve ``/metrics`` of this registry over HTTP in a daemon thread; returns the server
        (call ``shutdown()`` on it to stop)."""
        server, _thread = start_http_server(port, addr=addr, registry=self.registry)
        return server
