"""The stream driver end to end: real broker, worker and sink processes, chDB store.

Every test compares what the worker left in the store with an oracle computed without Kafka:
the transformers called directly (event ids, packages, dead letters) and the replay driver over
the same records (``result_snapshot``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer
from streamkit import StreamHarness, max_event_time, replay_snapshot

from carrierwatch.replay import iter_inputs
from carrierwatch.streams.records import decode_dead_letter
from carrierwatch.synthetic.rawlog import RawRecord
from carrierwatch.synthetic.simulator import simulate
from carrierwatch.transformers.registry import PartnerRegistry, load_registry

pytestmark = pytest.mark.integration

BASE_TIME = 1_772_467_200_000  # 2026-03-02T16:00Z


def sample_records(partners: list[str] | None = None) -> list[RawRecord]:
    """Every committed sample payload (good, odd and malformed), one second apart."""
    registry = load_registry()
    records: list[RawRecord] = []
    for partner in partners or registry.ids():
        folder = registry.get(partner).spec_path.parent.parent / "samples" / partner
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            records.append(RawRecord(partner, BASE_TIME + 1000 * len(records),
                                     {"content-type": "application/octet-stream"},
                                     path.read_bytes()))
    return records


def transform_oracle(records: list[RawRecord], registry: PartnerRegistry) -> dict[str, Any]:
    """What the transformers alone say the store must hold."""
    event_ids: set[str] = set()
    packages: set[str] = set()
    dead: set[tuple[str, bytes, str]] = set()
    for record in records:
        result = registry.get(record.partner).transform(record.body, record.received_time,
                                                        record.headers)
        event_ids.update(e.event_id for e in result.events)
        packages.update(e.package_id for e in result.events)
        dead.update((d.partner_id, d.raw, d.path) for d in result.dead_letters)
    return {"event_ids": event_ids, "packages": packages, "dead_letters": dead}


def assignments(harness: StreamHarness, name: str) -> list[list[int]]:
    """The canonical partitions worker ``name`` was assigned, rebalance after rebalance."""
    import re

    return [[int(p) for p in found.split(",") if p.strip()] for found in
            re.findall(r"assigned canonical partitions \[([0-9, ]*)\]", harness.log(name))]


def wait_split(harness: StreamHarness, workers: int, timeout: float = 90.0) -> None:
    """Wait until every worker owns a non-empty share of the canonical partitions."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        harness.assert_running()
        latest = [assignments(harness, f"worker{i}") for i in range(workers)]
        shares = [a[-1] for a in latest if a]
        if len(shares) == workers and all(shares) and \
                sorted(p for share in shares for p in share) == list(range(3)):
            return
        assert time.monotonic() < deadline, f"partitions not split among workers: {latest}"
        time.sleep(0.5)


def run_stream(harness: StreamHarness, records: list[RawRecord], workers: int = 1, *,
               split: bool = False) -> None:
    """Run ``records`` through ``workers`` worker processes with both stages each, or with
    ``split`` through one normalize-only and one track-only worker, and a sink."""
    if split:
        names = ["normalize0", "track0"]
        harness.start("normalize0", "worker", "--stages", "normalize")
        harness.start("track0", "worker", "--stages", "track")
    else:
        names = [f"worker{index}" for index in range(workers)]
        for name in names:
            harness.start(name, "worker")
        if workers > 1:
            wait_split(harness, workers)
    harness.start("sink", "sink")
    harness.produce(records)
    harness.finish_input(max_event_time(records, harness.registry))
    assert harness.stop("sink") == 0, harness.log("sink")[-3000:]
    for name in names:
        assert harness.stop(name) == 0, harness.log(name)[-3000:]


def stored_event_ids(harness: StreamHarness) -> tuple[set[str], int, int]:
    from carrierwatch.settings import Settings
    from carrierwatch.storage import open_store

    with open_store(Settings(data_dir=harness.sink_dir), command="pytest") as store:
        ids = {row[0] for row in store.query("SELECT event_id FROM canonical_events FINAL")}
        outcomes = store.query("SELECT count() FROM package_outcomes FINAL")[0][0]
        windows = store.query("SELECT count() FROM metric_windows FINAL")[0][0]
    return ids, int(outcomes), int(windows)


def test_samples_become_events_outcomes_and_windows(stream_harness: StreamHarness) -> None:
    """Every sample payload of every partner: events, dead letters, outcomes, windows stored.

    (The samples' event times span years, so which of them are too late for the watermark
    depends on how the partner topics interleave; equality with replay is asserted on simulated
    feeds below, whose events all fall within the allowed lateness.)
    """
    records = sample_records()
    oracle = transform_oracle(records, stream_harness.registry)
    assert len(oracle["event_ids"]) > 50 and oracle["dead_letters"]  # the samples exercise both

    run_stream(stream_harness, records)

    ids, outcomes, windows = stored_event_ids(stream_harness)
    assert ids == oracle["event_ids"]
    # samples span years: events far behind the watermark are kept but own no outcome
    assert 0 < outcomes <= len(oracle["packages"])
    assert windows > 0
    snapshot = stream_harness.snapshot()
    assert sum(row[3] for row in snapshot["dead_letters"]) == len(oracle["dead_letters"])
    stored_packages = {row[1] for row in snapshot["package_outcomes"]}
    assert stored_packages <= oracle["packages"]
    assert {row[0] for row in snapshot["canonical_events"]} == \
        {p.split(":")[0] for p in oracle["packages"]}


def read_topic(bootstrap: str, topic: str, expected: int, timeout: float = 30.0) -> list[bytes]:
    consumer: Any = Consumer({"bootstrap.servers": bootstrap, "group.id": f"read-{topic}",
                              "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topic])
    values: list[bytes] = []
    import time

    deadline = time.monotonic() + timeout
    try:
        while len(values) < expected and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                values.append(message.value())
    finally:
        consumer.close()
    return values


def test_poison_payloads_go_to_the_dlq_and_the_worker_keeps_going(
        stream_harness: StreamHarness) -> None:
    registry = stream_harness.registry
    good = [r for r in sample_records(["fedex", "ups"])
            if not registry.get(r.partner).transform(r.body, r.received_time).dead_letters]
    assert len(good) > 8
    poison_bytes = RawRecord("fedex", BASE_TIME + 500, {}, b"\xff\xfe\x00 not json at all")
    poison_shape = RawRecord("ups", BASE_TIME + 700, {}, b'{"trackResponse": 42}')
    records = [*good[:3], poison_bytes, *good[3:6], poison_shape, *good[6:]]
    oracle = transform_oracle(records, stream_harness.registry)
    good_ids = transform_oracle(good, stream_harness.registry)["event_ids"]

    run_stream(stream_harness, records)

    ids, _, _ = stored_event_ids(stream_harness)
    assert good_ids <= ids and ids == oracle["event_ids"]
    topology = stream_harness.topology
    fedex_dlq = [decode_dead_letter(v) for v in read_topic(
        stream_harness.bootstrap, topology.dlq("fedex"),
        sum(1 for d in oracle["dead_letters"] if d[0] == "fedex"))]
    ups_dlq = [decode_dead_letter(v) for v in read_topic(
        stream_harness.bootstrap, topology.dlq("ups"),
        sum(1 for d in oracle["dead_letters"] if d[0] == "ups"))]
    poisoned = [d for d in fedex_dlq if d.raw == poison_bytes.body]
    assert len(poisoned) == 1 and poisoned[0].path == "$" and "JSON" in poisoned[0].error
    shaped = [d for d in ups_dlq if d.raw == poison_shape.body]
    assert len(shaped) == 1 and "trackResponse" in shaped[0].path and shaped[0].error
    assert poisoned[0].received_time == poison_bytes.received_time
    stored = stream_harness.snapshot()["dead_letters"]
    assert any(row[0] == "fedex" and row[1] == "$" for row in stored)


def assert_same_rows(got: list[tuple[Any, ...]], expected: list[tuple[Any, ...]]) -> None:
    """Equal lists of rows; on failure the message names the first rows and fields that differ."""
    problems = [f"row {i}: field {j}: {a!r} != {b!r} (key {g[:2]})"
                for i, (g, e) in enumerate(zip(got, expected, strict=False))
                for j, (a, b) in enumerate(zip(g, e, strict=True)) if a != b]
    assert len(got) == len(expected) and not problems, \
        f"{len(got)} vs {len(expected)} rows; {len(problems)} differences: {problems[:8]}"


@pytest.fixture(scope="module")
def simulated_records(tmp_path_factory: pytest.TempPathFactory) -> list[RawRecord]:
    out = tmp_path_factory.mktemp("simulation")
    simulate(["fedex", "ups", "easypost", "metro_courier"], days=1, seed=11, out_dir=out,
             packages_per_day=120)
    return list(iter_inputs([out]))


def assert_equals_replay(harness: StreamHarness, records: list[RawRecord], tmp_path: Path) -> None:
    """The sink's store equals an in-process replay of ``records`` (``result_snapshot``)."""
    snapshot = harness.snapshot()
    expected = replay_snapshot(records, tmp_path / "replay", harness.registry)
    assert snapshot["canonical_events"] == expected["canonical_events"]
    assert_same_rows(snapshot["package_outcomes"], expected["package_outcomes"])
    assert snapshot["metric_windows"] == expected["metric_windows"]
    assert snapshot == expected


@pytest.mark.parametrize("workers", [1, 2])
def test_simulated_feed_through_kafka_equals_replay(
        stream_harness: StreamHarness, simulated_records: list[RawRecord], tmp_path: Path,
        workers: int) -> None:
    records = simulated_records
    assert len(records) > 100
    run_stream(stream_harness, records, workers=workers)
    assert_equals_replay(stream_harness, records, tmp_path)
    if workers == 2:  # both workers really tracked events (and checkpointed their partitions)
        for name in ("worker0", "worker1"):
            assert "checkpoints=0," not in stream_harness.log(name), stream_harness.log(name)


def test_stages_in_separate_processes_equal_replay(
        stream_harness: StreamHarness, simulated_records: list[RawRecord], tmp_path: Path) -> None:
    """One normalize-only worker (the Faust app with the agent) and one track-only worker (the
    track stage under mode.Worker, no Faust app) give exactly the replay's results."""
    run_stream(stream_harness, simulated_records, split=True)
    assert_equals_replay(stream_harness, simulated_records, tmp_path)
    normalize_log, track_log = stream_harness.log("normalize0"), stream_harness.log("track0")
    assert "(worker stages: normalize)" in normalize_log
    assert "track stage starting" not in normalize_log
    assert "assigned canonical partitions" not in normalize_log
    assert "track stage starting (worker stages: track)" in track_log
    assert assignments(stream_harness, "track0")[-1] == [0, 1, 2]
    assert "normalize: assigned" not in track_log and "checkpoints=0," not in track_log


@pytest.fixture(scope="module")
def feed_at_the_lateness_bound(tmp_path_factory: pytest.TempPathFactory) -> list[RawRecord]:
    """Five partners, two days after the simulator's two warm-up days: with the former shard
    watermark, hundreds of its events were too late or not depending on the interleaving
    (tests/streams/test_shard_equivalence.py measures it)."""
    out = tmp_path_factory.mktemp("simulation-bound")
    simulate(["fedex", "ups", "easypost", "aftership", "metro_courier"], days=2, seed=5,
             out_dir=out, packages_per_day=250)
    return list(iter_inputs([out]))


@pytest.mark.slow
def test_default_lateness_stream_equals_replay(
        kafka_broker: Any, schema_registry_url: str, tmp_path: Path,
        feed_at_the_lateness_bound: list[RawRecord]) -> None:
    """With the drivers' default 2-day allowed lateness (not the 30 days of the tests above),
    two workers over a feed with events at the lateness bound equal the replay."""
    from carrierwatch.core.pipeline import DAY_MS

    harness = StreamHarness(kafka_broker.bootstrap, schema_registry_url, tmp_path / "stream",
                            extra_env={"CARRIERWATCH_STREAM_ALLOWED_LATENESS_MS":
                                       str(2 * DAY_MS)})
    try:
        run_stream(harness, feed_at_the_lateness_bound, workers=2)
        snapshot = harness.snapshot()
    finally:
        harness.stop_all()
    expected = replay_snapshot(feed_at_the_lateness_bound, tmp_path / "replay", harness.registry,
                               allowed_lateness_ms=2 * DAY_MS)
    assert snapshot["canonical_events"] == expected["canonical_events"]
    assert_same_rows(snapshot["package_outcomes"], expected["package_outcomes"])
    assert_same_rows(snapshot["metric_windows"], expected["metric_windows"])
    assert snapshot == expected
