"""Faults with real processes: kill -9 of workers, a broker restart, a 30-second store outage.

After recovery the store must equal an uninterrupted replay of the same input: no event lost,
none double counted (``result_snapshot`` compares metric totals, outcomes, event ids, dead
letters).
"""

from __future__ import annotations

import contextlib
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from streamkit import StreamHarness, max_event_time, replay_snapshot
from test_worker import assert_same_rows

from carrierwatch.replay import iter_inputs
from carrierwatch.streams.broker import KafkaBroker, find_free_ports
from carrierwatch.streams.kafka import group_lag
from carrierwatch.synthetic.rawlog import RawRecord
from carrierwatch.synthetic.simulator import simulate

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def feed(tmp_path_factory: pytest.TempPathFactory) -> list[RawRecord]:
    out = tmp_path_factory.mktemp("simulation")
    simulate(["fedex", "ups", "easypost", "aftership", "metro_courier"], days=2, seed=5,
             out_dir=out, packages_per_day=250)
    return list(iter_inputs([out]))


def chunks(records: list[RawRecord], count: int) -> list[list[RawRecord]]:
    size = -(-len(records) // count)
    return [records[i:i + size] for i in range(0, len(records), size)]


def assert_equals_replay(harness: StreamHarness, records: list[RawRecord], tmp_path: Path) -> None:
    snapshot = harness.snapshot()
    expected = replay_snapshot(records, tmp_path / "replay", harness.registry)
    assert snapshot["canonical_events"] == expected["canonical_events"]
    assert_same_rows(snapshot["package_outcomes"], expected["package_outcomes"])
    assert_same_rows(snapshot["metric_windows"], expected["metric_windows"])
    assert snapshot == expected


def test_kill_9_of_the_worker_mid_stream_loses_and_doubles_nothing(
        stream_harness: StreamHarness, feed: list[RawRecord], tmp_path: Path) -> None:
    harness = stream_harness
    harness.start("sink", "sink")
    harness.start("worker", "worker")
    parts = chunks(feed, 4)
    kills = 0
    for number, part in enumerate(parts):
        harness.produce(part)
        if number == len(parts) - 1:
            break
        # let this incarnation get going (its track agent set up its pipelines), then crash it
        pid = harness.processes["worker"].pid
        deadline = time.monotonic() + 90
        while f"[{pid}] [INFO] partition " not in harness.log("worker"):
            harness.assert_running()
            assert time.monotonic() < deadline, "the worker never started tracking"
            time.sleep(0.2)
        time.sleep(0.5 + 0.5 * number)
        harness.kill("worker")
        kills += 1
        harness.start("worker", "worker")
    harness.finish_input(max_event_time(feed, harness.registry), timeout=150)
    log = harness.log("worker")
    assert harness.stop("sink") == 0
    assert harness.stop("worker") == 0
    assert kills == 3
    assert log.count("restored checkpoint at offset") >= 3  # restarts continued from checkpoints
    assert_equals_replay(harness, feed, tmp_path)


def test_kill_9_of_split_stage_workers_mid_stream_loses_and_doubles_nothing(
        stream_harness: StreamHarness, feed: list[RawRecord], tmp_path: Path) -> None:
    """The stages in processes of their own (``--stages``): the track-only worker is killed
    twice and the normalize-only worker once, each mid-stream, and restarted."""
    harness = stream_harness
    ready = {"track": "[INFO] partition ", "normalize": "[INFO] normalize: assigned"}
    harness.start("sink", "sink")
    for stage in ready:
        harness.start(stage, "worker", "--stages", stage)
    parts = chunks(feed, 4)
    victims = ["track", "normalize", "track"]
    for number, part in enumerate(parts):
        harness.produce(part)
        if number == len(parts) - 1:
            break
        stage = victims[number]
        pid = harness.processes[stage].pid
        deadline = time.monotonic() + 90
        while f"[{pid}] {ready[stage]}" not in harness.log(stage):
            harness.assert_running()
            assert time.monotonic() < deadline, f"the {stage} worker never started"
            time.sleep(0.2)
        time.sleep(0.5 + 0.5 * number)
        harness.kill(stage)
        harness.start(stage, "worker", "--stages", stage)
    harness.finish_input(max_event_time(feed, harness.registry), timeout=150)
    track_log = harness.log("track")
    assert harness.stop("sink") == 0
    for stage in ready:
        assert harness.stop(stage) == 0, harness.log(stage)[-3000:]
    assert track_log.count("restored checkpoint at offset") >= 2
    assert_equals_replay(harness, feed, tmp_path)


def test_broker_restart_mid_stream(stream_harness: StreamHarness, kafka_broker: KafkaBroker,
                                   feed: list[RawRecord], tmp_path: Path) -> None:
    harness = stream_harness
    harness.start("sink", "sink")
    harness.start("worker", "worker")
    first, second = chunks(feed, 2)
    harness.produce(first)
    deadline = time.monotonic() + 90
    while "[INFO] partition " not in harness.log("worker"):  # tracking has begun
        harness.assert_running()
        assert time.monotonic() < deadline, "the worker never started tracking"
        time.sleep(0.2)
    time.sleep(1.0)
    kafka_broker.restart()
    harness.produce(second)
    harness.finish_input(max_event_time(feed, harness.registry), timeout=150)
    assert harness.stop("sink") == 0
    assert harness.stop("worker") == 0
    assert_equals_replay(harness, feed, tmp_path)


def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("carrierwatch_sink_"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


def test_store_outage_of_30_seconds_is_buffered_and_retried_with_backoff(
        stream_harness: StreamHarness, feed: list[RawRecord], tmp_path: Path) -> None:
    harness = stream_harness
    fault = tmp_path / "store-down"
    harness.extra_env.update({"CARRIERWATCH_STREAM_SINK_FAULT_FILE": str(fault),
                              "CARRIERWATCH_STREAM_SINK_BACKOFF_MAX": "4"})
    port = find_free_ports(1)[0]
    fault.touch()
    harness.start("sink", "sink", "--web-port", str(port))
    harness.start("worker", "worker")
    harness.produce(feed)
    outage_started = time.monotonic()
    topology = harness.topology
    seen: list[dict[str, float]] = []
    while time.monotonic() - outage_started < 30:
        harness.assert_running()
        with contextlib.suppress(OSError):
            seen.append(scrape(port))
        time.sleep(1.0)
    during = seen[-1]
    assert during["carrierwatch_sink_write_retries_total"] >= 5
    assert during["carrierwatch_sink_backlog_rows"] > 0
    assert during["carrierwatch_sink_rows_written_total"] == 0
    assert 0 < during["carrierwatch_sink_backoff_seconds"] <= 4
    # nothing was committed while the store was down
    assert sum(group_lag(harness.bootstrap, topology.sink_group, [topology.sink]).values()) > 0
    fault.unlink()
    harness.finish_input(max_event_time(feed, harness.registry), timeout=120)
    after = scrape(port)
    assert after["carrierwatch_sink_rows_written_total"] > 0
    assert after["carrierwatch_sink_backlog_rows"] == 0
    assert after["carrierwatch_sink_backoff_seconds"] == 0
    # backoff grows exponentially, so 30 s of outage take few attempts (0.2, 0.4, ... capped at 4)
    assert after["carrierwatch_sink_write_retries_total"] <= 15
    assert harness.stop("sink") == 0
    assert harness.stop("worker") == 0
    assert_equals_replay(harness, feed, tmp_path)


def test_committed_offsets_ahead_of_the_checkpoint_are_rewound(
        stream_harness: StreamHarness, feed: list[RawRecord], tmp_path: Path) -> None:
    """A committed offset of the track group past the checkpoint (only a tool can set one: the
    worker commits an offset after the checkpoint covering it) is ignored: the next owner starts
    at the offset after its checkpoint."""
    from confluent_kafka import Consumer, TopicPartition
    from confluent_kafka.schema_registry import SchemaRegistryClient

    from carrierwatch.registry.serde import CANONICAL_TOPIC, CanonicalSerde
    from carrierwatch.streams.kafka import OutputProducer

    harness = stream_harness
    topology = harness.topology
    first, second = chunks(feed, 2)
    harness.start("sink", "sink")
    harness.start("worker", "worker")
    harness.produce(first)
    harness.wait(topology.app_id, topology.raw_topics, 120)
    harness.wait(topology.track_group, [topology.events], 120)
    assert harness.stop("worker") == 0
    # the second half normalized as the normalize agent does, then "acknowledged" unprocessed
    serde = CanonicalSerde(SchemaRegistryClient({"url": harness.registry_url}),
                           topic=CANONICAL_TOPIC)
    producer = OutputProducer(harness.bootstrap)
    for record in second:
        result = harness.registry.get(record.partner).transform(
            record.body, record.received_time, record.headers)
        assert not result.dead_letters
        for event in result.events:
            producer.produce(topology.events, serde.serialize(event), event.package_id.encode())
    producer.flush()
    consumer: Any = Consumer({"bootstrap.servers": harness.bootstrap,
                              "group.id": topology.track_group, "enable.auto.commit": False})
    try:
        ends = []
        for partition in range(3):
            _, high = consumer.get_watermark_offsets(TopicPartition(topology.events, partition),
                                                     timeout=10)
            ends.append(TopicPartition(topology.events, partition, high))
        consumer.commit(offsets=ends, asynchronous=False)
    finally:
        consumer.close()
    pid = harness.start("worker", "worker").pid
    # the group's committed offsets say "done" at once here, so completion is read from the
    # worker: every partition wrote its end-of-input flush, then the sink caught up
    harness.finish_input(max_event_time(feed, harness.registry), timeout=150)
    deadline = time.monotonic() + 150
    while harness.log("worker").count(f"[{pid}] [INFO] partition ") < 3 or \
            sum(f"[{pid}] [INFO] partition {p}: end-of-input flush written" in harness.log("worker")
                for p in range(3)) < 3:
        harness.assert_running()
        assert time.monotonic() < deadline, "the end-of-input flush never completed"
        time.sleep(0.5)
    harness.wait(topology.sink_group, [topology.sink], 60)
    log = harness.log("worker")
    assert harness.stop("sink") == 0
    assert harness.stop("worker") == 0
    assert "seeking back to offset" in log
    assert_equals_replay(harness, feed, tmp_path)


def test_kill_9_with_the_default_lateness_equals_replay(
        kafka_broker: KafkaBroker, schema_registry_url: str, feed: list[RawRecord],
        tmp_path: Path) -> None:
    """The worker killed three times mid-stream with the drivers' default 2-day lateness (the
    feed's warm-up days put events at the bound): the store still equals the replay."""
    from carrierwatch.core.pipeline import DAY_MS

    harness = StreamHarness(kafka_broker.bootstrap, schema_registry_url, tmp_path / "stream",
                            extra_env={"CARRIERWATCH_STREAM_ALLOWED_LATENESS_MS":
                                       str(2 * DAY_MS)})
    try:
        harness.start("sink", "sink")
        harness.start("worker", "worker")
        parts = chunks(feed, 4)
        for number, part in enumerate(parts):
            harness.produce(part)
            if number == len(parts) - 1:
                break
            pid = harness.processes["worker"].pid
            deadline = time.monotonic() + 90
            while f"[{pid}] [INFO] partition " not in harness.log("worker"):
                harness.assert_running()
                assert time.monotonic() < deadline, "the worker never started tracking"
                time.sleep(0.2)
            time.sleep(0.5 + 0.5 * number)
            harness.kill("worker")
            harness.start("worker", "worker")
        harness.finish_input(max_event_time(feed, harness.registry), timeout=150)
        log = harness.log("worker")
        assert harness.stop("sink") == 0
        assert harness.stop("worker") == 0
        # four incarnations each took over the three partitions (from a checkpoint, or from
        # the start when killed before its first one: the machine's load decides which)
        assert log.count("track: canonical partition ") >= 12
        snapshot = harness.snapshot()
    finally:
        harness.stop_all()
    expected = replay_snapshot(feed, tmp_path / "replay", harness.registry,
                               allowed_lateness_ms=2 * DAY_MS)
    assert snapshot["canonical_events"] == expected["canonical_events"]
    assert_same_rows(snapshot["package_outcomes"], expected["package_outcomes"])
    assert_same_rows(snapshot["metric_windows"], expected["metric_windows"])
    assert snapshot == expected
