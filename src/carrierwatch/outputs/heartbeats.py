"""Prometheus exporter of the heartbeat monitor (prometheus-client, a registry of its own or the
sink's).

=========================================================  =========  =============================
metric                                                     type       meaning
=========================================================  =========  =============================
``carrierwatch_heartbeat_state{partner,integration,state}``  gauge    1 for the current state of
                                                                      healthy, slow, silent; 0 else
``carrierwatch_heartbeat_last_success_timestamp_seconds``   gauge     when the latest heartbeat
                                                                      that arrived was stored
``carrierwatch_heartbeat_latency_seconds``                  histogram send → canonical events stored
``carrierwatch_heartbeats_total{partner,integration,status}``  counter  heartbeats decided, by status
=========================================================  =========  =============================

The first three are the shared metric contract's; all carry ``partner`` and ``integration``
(webhook, poll, drop).

Examples
--------
>>> from carrierwatch.synthetic.heartbeat import HeartbeatMonitor
>>> monitor, exporter = HeartbeatMonitor(), HeartbeatExporter()
>>> _ = monitor.announce({"heartbeat_id": "h", "partner_id": "ups", "integration": "poll",
...                       "package_id": "ups:CWSYN1", "sent_at": 0, "deadline_at": 60_000,
...                       "expected_events": 1, "status": "pending"}, now_ms=0)
>>> _ = monitor.tick(61_000)
>>> exporter.update(monitor)
>>> exporter.sample("carrierwatch_heartbeat_state", partner="ups", integration="poll",
...                 state="silent")
1.0
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from carrierwatch.synthetic.heartbeat import STATES, HeartbeatMonitor

__all__ = ["LATENCY_BUCKETS", "HeartbeatExporter"]

#: seconds: from a webhook's sub-second path to a drop's settle time and a slow worker
LATENCY_BUCKETS = (0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0, 90.0,
                   120.0, 180.0, 300.0, 600.0)


class HeartbeatExporter:
    """The heartbeat metrics; :meth:`update` copies the monitor's verdicts into them."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        labels = ("partner", "integration")
        self.state = Gauge("carrierwatch_heartbeat_state",
                           "1 for the integration's current heartbeat state, 0 for the others",
                           [*labels, "state"], registry=r)
        self.last_success = Gauge(
            "carrierwatch_heartbeat_last_success_timestamp_seconds",
            "Unix time at which the latest heartbeat that arrived was stored", labels,
            registry=r)
        self.latency = Histogram("carrierwatch_heartbeat_latency_seconds",
                                 "Heartbeat end-to-end latency: sent to canonical events stored",
                                 labels, buckets=LATENCY_BUCKETS, registry=r)
        self.decided = Counter("carrierwatch_heartbeats",
                               "Heartbeats decided, by status (seen, slow, late, missing, "
                               "rejected)", [*labels, "status"], registry=r)

    def update(self, monitor: HeartbeatMonitor) -> None:
        for partner, integration, status, latency in monitor.take_decided():
            self.decided.labels(partner, integration, status).inc()
            if latency is not None:
                self.latency.labels(partner, integration).observe(latency)
        for (partner_id, kind), known in monitor.integrations.items():
            for state in STATES:
                self.state.labels(partner_id, kind, state).set(1 if known.state == state else 0)
            if known.last_success_ms is not None:
                self.last_success.labels(partner_id, kind).set(known.last_success_ms / 1000)

    def sample(self, name: str, **labels: str) -> float | None:
        """The current value of one series (tests, doctests)."""
        return self.registry.get_sample_value(name, labels)
