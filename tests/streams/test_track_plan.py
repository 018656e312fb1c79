"""How the track stage cuts canonical messages into pipeline calls, with and without a journal.

The cut is what makes a re-run after a crash exact: a restored partition must end its calls at the
journaled offsets whatever batches Kafka delivers, and hold back what lies past a cut until the
rest of the call arrives. Real librdkafka ``Message`` objects, a real registry client and producer
(their endpoints are the session's embedded registry and broker); no Kafka traffic is needed.
"""

from __future__ import annotations

import struct
import uuid
import zlib
from pathlib import Path
from typing import Any

from confluent_kafka import Message
from confluent_kafka.schema_registry import SchemaRegistryClient

from carrierwatch.core.model import CanonicalEvent, Location, event_id
from carrierwatch.core.pipeline import Pipeline
from carrierwatch.registry.serde import CANONICAL_TOPIC, CanonicalSerde
from carrierwatch.settings import Settings
from carrierwatch.streams.app import WorkerRuntime
from carrierwatch.streams.broker import KafkaBroker
from carrierwatch.streams.kafka import OutputProducer, SavedPartition, load_checkpoints
from carrierwatch.streams.records import checkpoint_key
from carrierwatch.streams.topology import StreamConfig, Topology, ensure_topics
from carrierwatch.transformers.registry import load_registry


def delivered(partition: int, *offsets: int) -> list[Message]:
    """Messages as ``Consumer.consume`` returns them."""
    return [Message(topic="events.canonical", partition=partition, offset=offset, key=b"k",
                    value=b"v", timestamp=(1, 0)) for offset in offsets]


def offsets_of(calls: dict[int, list[list[Any]]]) -> dict[int, list[list[int]]]:
    return {p: [[m.offset() for m in call] for call in cut] for p, cut in calls.items()}


def runtime(tmp_path: Path, kafka_broker: KafkaBroker, registry_url: str) -> WorkerRuntime:
    config = StreamConfig(namespace=f"plan{uuid.uuid4().hex[:8]}", checkpoint_interval=5.0)
    registry = load_registry()
    topology = Topology(config, registry.ids())
    ensure_topics(kafka_broker.bootstrap, topology.specs())
    return WorkerRuntime(
        settings=Settings(data_dir=tmp_path), config=config,
        topology=topology, registry=registry,
        serde=CanonicalSerde(SchemaRegistryClient({"url": registry_url}), topic=CANONICAL_TOPIC),
        producer=OutputProducer(kafka_broker.bootstrap))


def test_without_a_journal_each_batch_is_one_call_and_is_journaled(
        tmp_path: Path, kafka_broker: KafkaBroker, schema_registry_url: str) -> None:
    rt = runtime(tmp_path, kafka_broker, schema_registry_url)
    rt.restore({0, 1}, {})
    calls, grown = rt.plan([*delivered(0, 0, 1, 2), *delivered(1, 0), *delivered(0, 3)])
    assert offsets_of(calls) == {0: [[0, 1, 2, 3]], 1: [[0]]}
    assert sorted(grown) == [0, 1] and rt.journal == {0: [3], 1: [0]}
    rt.offsets.update({0: 3, 1: 0})  # as run() leaves them
    # redelivered messages are skipped; a gap asks for a seek back to the first missing offset
    calls, grown = rt.plan([*delivered(0, 2, 3), *delivered(1, 4, 5)])
    assert calls == {} and grown == [] and rt.rewinds == {1: 1}
    assert rt.stats.skipped == 4
    # partitions without a checkpoint are all due for their first one at once
    assert rt.due_checkpoints() == [0, 1]


def test_a_restored_partition_repeats_the_journaled_cuts(
        tmp_path: Path, kafka_broker: KafkaBroker, schema_registry_url: str) -> None:
    rt = runtime(tmp_path, kafka_broker, schema_registry_url)
    state = Pipeline({}, shard=2).to_bytes()
    # checkpoint after offset 9; the crashed owner then made calls ending at 12, 15 and 20
    rt.restore({2}, {2: SavedPartition(9, state, [4, 9, 12, 15, 20])})
    assert rt.offsets[2] == 9 and list(rt.replay[2]) == [12, 15, 20]
    calls, grown = rt.plan(delivered(2, *range(5, 14)))  # 5..9 are in the checkpoint
    assert offsets_of(calls) == {2: [[10, 11, 12]]} and grown == []
    assert [m.offset() for m in rt.held[2]] == [13]
    rt.offsets[2] = 12
    calls, grown = rt.plan(delivered(2, 14, 15, 16))
    assert offsets_of(calls) == {2: [[13, 14, 15]]} and grown == []
    assert [m.offset() for m in rt.held[2]] == [16]
    rt.offsets[2] = 15
    # the journal's last cut reached: what follows is a new call, appended to the journal
    calls, grown = rt.plan(delivered(2, *range(17, 24)))
    assert offsets_of(calls) == {2: [[16, 17, 18, 19, 20], [21, 22, 23]]} and grown == [2]
    assert rt.journal[2] == [12, 15, 20, 23] and not rt.held[2] and not rt.replay[2]
    rt.offsets[2] = 23
    # a checkpoint keeps only the cuts after it
    rt.checkpoint([2])
    rt.producer.flush()
    assert rt.checkpointed[2] == 23 and rt.journal[2] == [] and rt.stats.checkpoints == 1
    assert rt.due_checkpoints() == []


def test_checkpoints_are_time_based_idle_and_commits_follow_them(
        tmp_path: Path, kafka_broker: KafkaBroker, schema_registry_url: str) -> None:
    rt = runtime(tmp_path, kafka_broker, schema_registry_url)
    state = Pipeline({}, shard=0).to_bytes()
    rt.restore({0, 1}, {0: SavedPartition(4, state, []), 1: SavedPartition(9, state, [])})
    assert rt.commit_positions([0, 1]) == {0: 5, 1: 10}  # the offsets after the checkpoints
    rt.offsets.update({0: 7, 1: 12})  # both ran past their checkpoints
    now = rt.checkpoint_times[0]
    assert rt.changed() == [0, 1]
    assert rt.due_checkpoints(now + 0.5) == []
    assert rt.due_checkpoints(now + 0.5, idle=True) == []  # checkpoints younger than a second
    assert rt.due_checkpoints(now + 1.5, idle=True) == [0, 1]  # idle: every changed partition
    assert rt.due_checkpoints(now + 5.5) == [0]  # busy: one late partition per batch
    rt.checkpoint([0])
    rt.producer.flush()
    # the commit never runs ahead of a checkpoint: partition 1 still commits its old one
    assert rt.commit_positions([0, 1]) == {0: 8, 1: 10}


def _events(batch: int, packages: int = 40) -> list[CanonicalEvent]:
    """Batch ``batch`` of a small feed: each package moves one status on per batch."""
    noon = 1_772_452_800_000
    statuses = ("info_received", "picked_up", "in_transit", "out_for_delivery", "delivered")
    out = []
    for number in range(packages):
        package = f"pkg-{(number + batch * 7) % (packages * 3)}"
        status = statuses[batch % len(statuses)]
        t = noon + batch * 600_000 + number * 1_000
        out.append(CanonicalEvent(event_id("demo", package, status, t), "demo", package, package,
                                  status, 1.0, status[:3], t, t + 30_000,
                                  location=Location(region="US-TN"),
                                  promised_by=noon + 86_400_000))
    return out


def test_incremental_checkpoints_restore_exactly_through_kafka(
        tmp_path: Path, kafka_broker: KafkaBroker, schema_registry_url: str) -> None:
    """A full checkpoint, deltas, a new full checkpoint when the deltas outgrow it (the old
    deltas tombstoned), more deltas: a new owner restores the chain from cw.checkpoints and
    continues with the same rows and versions as the pipeline that wrote it."""
    rt = runtime(tmp_path, kafka_broker, schema_registry_url)
    rt.config.checkpoint_compact_ratio = 0.5
    rt.restore({0}, {})
    pipeline = rt.pipelines[0]
    for batch in range(12):
        pipeline.process(_events(batch))
        rt.offsets[0] = batch
        rt.checkpoint([0])
        rt.track_output.flush()
    assert rt.stats.checkpoints == 12 and 2 <= rt.stats.full_checkpoints < 12
    chain = rt.chains[0]
    assert chain.deltas and chain.base_seq > 1 and chain.next_seq == 13
    saved = load_checkpoints(kafka_broker.bootstrap, rt.topology.checkpoints)[0]
    assert saved.offset == 11 and saved.base_seq == chain.base_seq
    assert len(saved.deltas) == len(chain.deltas) and saved.next_seq == 13
    assert saved.stale == []  # the deltas of the first chains got their tombstones

    owner = runtime(tmp_path, kafka_broker, schema_registry_url)
    owner.topology = rt.topology
    owner.restore({0}, {0: saved})
    restored = owner.pipelines[0]
    assert owner.offsets[0] == 11 and owner.chains[0].next_seq == 13
    for batch in range(12, 16):
        assert restored.process(_events(batch)) == pipeline.process(_events(batch))
    assert restored.flush() == pipeline.flush()


def test_a_format_1_checkpoint_is_still_restored(
        tmp_path: Path, kafka_broker: KafkaBroker, schema_registry_url: str) -> None:
    """Checkpoints of the previous format (a full pickle without sequence numbers) restore
    as full checkpoint 0; the next record continues the chain with number 1."""
    rt = runtime(tmp_path, kafka_broker, schema_registry_url)
    rt.restore({1}, {})
    pipeline = rt.pipelines[1]
    for batch in range(6):
        pipeline.process(_events(batch))
    legacy = struct.pack(">4sBq", b"CWCP", 1, 41) + zlib.compress(pipeline.to_bytes(), 1)
    rt.track_output.produce(rt.topology.checkpoints, legacy, checkpoint_key(1))
    rt.track_output.flush()
    saved = load_checkpoints(kafka_broker.bootstrap, rt.topology.checkpoints)[1]
    assert (saved.offset, saved.base_seq, saved.next_seq, saved.deltas) == (41, 0, 1, [])
    owner = runtime(tmp_path, kafka_broker, schema_registry_url)
    owner.topology = rt.topology
    owner.restore({1}, {1: saved})
    assert owner.pipelines[1].process(_events(6)) == pipeline.process(_events(6))
    owner.offsets[1] = 42
    owner.checkpoint([1])  # a delta on top of the old full checkpoint
    owner.track_output.flush()
    again = load_checkpoints(kafka_broker.bootstrap, rt.topology.checkpoints)[1]
    assert (again.offset, again.base_seq, len(again.deltas), again.next_seq) == (42, 0, 1, 2)
