"""The store writer's buffering, retry and backoff against a real chDB store (no Kafka)."""

from __future__ import annotations

import doctest
from pathlib import Path

import carrierwatch.streams.records
import carrierwatch.streams.topology
from carrierwatch.core.model import CanonicalEvent, DeadLetter, event_id
from carrierwatch.settings import Settings
from carrierwatch.sink import SinkBatch
from carrierwatch.storage import open_store
from carrierwatch.streams.records import decode_sink_batch, encode_sink_batch
from carrierwatch.streams.sink import SinkMetrics, SinkWriter
from carrierwatch.streams.topology import StreamConfig


def event(n: int) -> CanonicalEvent:
    t = 1_772_452_800_000 + n * 60_000
    return CanonicalEvent(event_id("demo", f"demo:{n}", "in_transit", t), "demo", f"demo:{n}",
                          str(n), "in_transit", 1.0, "IT", t, t + 1000)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_failed_writes_keep_the_buffer_and_back_off_exponentially(tmp_path: Path) -> None:
    config = StreamConfig(sink_max_rows=10, sink_max_delay=1.0, sink_backoff_initial=0.5,
                          sink_backoff_max=3.0)
    metrics = SinkMetrics()
    down = [True]
    clock = Clock()
    with open_store(Settings(data_dir=tmp_path), command="pytest", migrate=True) as store:
        writer = SinkWriter(store, config, metrics, fault=lambda: down[0], clock=clock)
        writer.add(SinkBatch(events=[event(1), event(2)]))
        assert not writer.due()  # neither full nor old
        clock.now += 1.0
        assert writer.due()
        backoffs = []
        for _ in range(5):
            assert writer.due()
            assert writer.try_write() is False
            backoffs.append(writer.backoff)
            assert not writer.due()  # waiting out the backoff
            clock.now += writer.backoff
        assert backoffs == [0.5, 1.0, 2.0, 3.0, 3.0]
        assert metrics.retries._value.get() == 5
        assert metrics.buffered_rows._value.get() == 2
        assert store.query("SELECT count() FROM canonical_events")[0][0] == 0
        writer.add(SinkBatch(dead_letters=[DeadLetter("demo", 5, "bad", "$.x", b"\x00")]))
        down[0] = False
        assert writer.try_write() is True
        assert metrics.buffered_rows._value.get() == 0
        assert metrics.rows_written._value.get() == 3
        assert writer.backoff == 0.0
        assert {e.event_id for e in store.fetch_events()} == {event(1).event_id,
                                                              event(2).event_id}
        assert store.fetch_dead_letters()[0].raw == b"\x00"
        # at-least-once: the same batch again changes nothing
        writer.add(SinkBatch(events=[event(1)]))
        assert writer.try_write()
        assert store.query("SELECT count() FROM canonical_events FINAL")[0][0] == 2


def test_sink_batches_with_histograms_cross_processes_intact() -> None:
    from carrierwatch.core.pipeline import Pipeline

    pipeline = Pipeline({}, granularities=("1h",))
    batch = SinkBatch()
    batch.add_output(pipeline.process([event(n) for n in range(5)]))
    batch.add_output(pipeline.flush())
    decoded = decode_sink_batch(encode_sink_batch(batch))
    assert decoded.events == batch.events
    assert decoded.rows == batch.rows
    assert any(row["latency_hist"] for row in decoded.rows["metric_windows"])


def test_doctests() -> None:
    for module in (carrierwatch.streams.records, carrierwatch.streams.topology):
        failed, attempted = doctest.testmod(module)
        assert attempted > 0 and failed == 0


def test_typed_sink_batches_cross_processes_intact_and_are_written_column_wise(
        tmp_path: Path) -> None:
    """What the track stage sends: typed outcome and window rows (no dict, no datetime per
    row); the sink writes them like the replay driver, and batches of the previous format
    (dict rows only, magic ``CWSB\\x02``) are still read."""
    import pickle

    from carrierwatch.core.pipeline import Pipeline

    pipeline = Pipeline({}, granularities=("1h",))
    typed = SinkBatch()
    typed.add_output(pipeline.process([event(n) for n in range(5)]), typed=True)
    typed.add_output(pipeline.process([event(n) for n in range(5, 8)]), typed=True)
    typed.add_output(pipeline.flush(), typed=True)
    typed.dead_letters.append(DeadLetter("demo", 5, "bad", "$.x", b"\x00"))
    data = encode_sink_batch(typed)
    decoded = decode_sink_batch(data)
    assert (decoded.events, decoded.dead_letters, decoded.outcomes, decoded.windows,
            decoded.rows) == (typed.events, typed.dead_letters, typed.outcomes, typed.windows, {})
    assert any(row.latency_hist for row in decoded.windows)
    dicts = SinkBatch(events=typed.events, rows={
        "package_outcomes": [o.to_row() for o in typed.outcomes],
        "metric_windows": [w.to_row() for w in typed.windows]})
    assert len(data) < len(b"CWSB\x02" + pickle.dumps((dicts.events, [], dicts.rows), 5))
    old = decode_sink_batch(b"CWSB\x02" + pickle.dumps((dicts.events, [], dicts.rows), 5))
    assert old.rows == dicts.rows and old.events == typed.events

    query = ("SELECT package_id, status, events, on_time FROM package_outcomes FINAL "
             "ORDER BY package_id")
    windows = "SELECT window_start, events, packages_on_time FROM metric_windows FINAL ORDER BY 1"
    results = []
    for name, batch in (("typed", decoded), ("dicts", old)):
        with open_store(Settings(data_dir=tmp_path / name), command="pytest",
                        migrate=True) as store:
            writer = SinkWriter(store, StreamConfig(), SinkMetrics())
            writer.add(batch)
            assert writer.try_write()
            results.append((store.query(query), store.query(windows)))
    assert results[0] == results[1] and len(results[0][0]) == 8
