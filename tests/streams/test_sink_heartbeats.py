"""The heartbeat monitor inside the store writer, against a real chDB store (no Kafka): an
announcement and the heartbeat's events through :class:`SinkWriter`, the rows in the
``heartbeats`` table, a deadline passing while nothing arrives, and a restart from the table."""

from __future__ import annotations

import time
from pathlib import Path

from carrierwatch.core.partner import HeartbeatSpec
from carrierwatch.settings import Settings
from carrierwatch.sink import SinkBatch
from carrierwatch.storage import open_store
from carrierwatch.streams.heartbeats import SinkHeartbeats
from carrierwatch.streams.records import decode_sink_batch
from carrierwatch.streams.sink import SinkMetrics, SinkWriter
from carrierwatch.streams.topology import StreamConfig
from carrierwatch.synthetic.heartbeat import announcement, render_heartbeat
from carrierwatch.transformers.registry import load_registry


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_announcement_events_deadline_and_restart_through_the_sink(tmp_path: Path) -> None:
    registry = load_registry()
    partner = registry.get("metro_courier")
    spec = partner.spec.model_copy(update={"heartbeat": HeartbeatSpec(
        interval_seconds=60, deadline_seconds=20, slow_seconds=20)})
    sent = time.time_ns() // 1_000_000  # a write is timed by the wall clock
    clock = Clock(sent / 1000)
    metrics = SinkMetrics()
    beats = SinkHeartbeats(metrics.registry, clock=clock, tick_seconds=0)
    config = StreamConfig(sink_max_delay=0.01)
    first = render_heartbeat(partner, sent, 1)
    second = render_heartbeat(partner, sent + 60_000, 2)
    with open_store(Settings(data_dir=tmp_path), command="pytest", migrate=True) as store:
        writer = SinkWriter(store, config, metrics, heartbeats=beats, clock=clock)
        # the sender's announcements travel as JSON sink batches
        for payload, hid in ((first, "h1"), (second, "h2")):
            message = SinkBatch(rows={"heartbeats": [announcement(payload, hid, spec)]})
            writer.add(decode_sink_batch(message.to_json()))
        events = partner.transform(first.body, sent + 300, {}).events
        writer.add(SinkBatch(events=events))
        assert writer.try_write()
        writer.tick_heartbeats()  # the verdict joins the next write
        clock.now = (sent + 60_000 + 20_001) / 1000  # h2's deadline passed, nothing came
        writer.tick_heartbeats()
        assert writer.try_write()
        rows = {r["heartbeat_id"]: r for r in store.query_dicts(
            "SELECT * FROM heartbeats FINAL")}
        assert {h: (r["status"], r["state"], r["integration"]) for h, r in rows.items()} == {
            "h1": ("seen", "healthy", "webhook"), "h2": ("missing", "silent", "webhook")}
        assert 0 < rows["h1"]["latency_ms"] < 20_000  # sent → the write returned
        assert rows["h1"]["expected_events"] == rows["h1"]["seen_events"] == 5
        labels = {"partner": "metro_courier", "integration": "webhook"}
        assert metrics.registry.get_sample_value(
            "carrierwatch_heartbeat_state", {**labels, "state": "silent"}) == 1
        # a restarted sink rebuilds its monitor from the table: h2 arriving now is late
        again = SinkHeartbeats(clock=clock, tick_seconds=0)
        again.restore(store)
        assert again.monitor.state("metro_courier", "webhook") == "silent"
        late = SinkBatch(events=partner.transform(second.body, sent + 90_000, {}).events)
        again.stored(late, (sent + 90_000) / 1000)
        [row] = again.tick()
        assert (row["status"], row["state"], row["latency_ms"]) == ("late", "slow", 30_000.0)
