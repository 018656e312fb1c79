"""SinkBatch crosses processes as JSON without losing anything a store row holds."""

from __future__ import annotations

from datetime import UTC, datetime

from carrierwatch.core.model import CanonicalEvent, DeadLetter, Location
from carrierwatch.sink import SinkBatch


def test_json_round_trip_is_lossless() -> None:
    event = CanonicalEvent("e1", "ups", "ups:1Z", "1Z", "delivered", 1.0, "D", 1_772_712_000_123,
                           1_772_712_060_000, location=Location(country="US", region="US-TN"))
    batch = SinkBatch(
        events=[event],
        dead_letters=[DeadLetter("ups", 1_772_712_000_000, "bad", "$.x", b"\xff\x00raw")],
        rows={"metric_windows": [{
            "window_start": datetime(2026, 3, 2, 12, 5, tzinfo=UTC),
            "latency_hist": {0: 3, 17: 2}, "events_by_status": {"delivered": 4},
            "lateness_sum_sq_s2": 2**70, "events": 5}]})
    back = SinkBatch.from_json(batch.to_json())
    assert back.events == [event]
    assert back.dead_letters == batch.dead_letters
    assert back.rows == batch.rows
