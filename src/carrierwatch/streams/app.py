"""The Faust worker: thin agents over the pure core (``carrierwatch worker``).

Two agents run in every worker process of the consumer group :attr:`Topology.app_id`:

``normalize`` (``raw.<partner>`` → ``events.canonical`` + ``dlq.<partner>``)
    takes up to ``normalize_batch`` raw payloads, runs each partner's transformer
    (:meth:`Partner.transform`, which never raises), produces every canonical event in the
    Confluent wire format keyed by package id, every dead letter as JSON to ``dlq.<partner>``, and
    one :class:`~carrierwatch.sink.SinkBatch` with the dead letters to ``cw.sink`` (so they reach
    ClickHouse too). The raw messages are acknowledged (and later committed) only after the
    producer flushed: at-least-once.

``track`` (``events.canonical`` → ``cw.sink`` + ``cw.checkpoints``)
    keeps one core :class:`~carrierwatch.core.pipeline.Pipeline` per assigned partition
    (``shard`` = partition). For each batch: decode, ``process`` per partition, produce the
    output rows as one SinkBatch per partition, flush, then write each touched partition's
    checkpoint — the pipeline (``to_bytes``, compressed) and the offset of the last message it
    has seen — to the compacted ``cw.checkpoints`` topic and flush again. Only then are the
    batch's messages acknowledged.

    On (re)assignment a partition's pipeline is restored from its latest checkpoint when its first
    message arrives: messages up to the checkpoint offset that Kafka delivers again are skipped;
    if Kafka resumes *after* the offset following the checkpoint (the committed offset ran ahead:
    Faust's ``take_events`` acknowledges a batch while unwinding from a shutdown mid-batch), the
    agent seeks back to it and drops messages until it comes again. Re-processing is harmless: the
    core drops events it has seen (event id), and the store keeps one row per key (latest
    version). A checkpoint per batch keeps row versions monotonic: a re-run from the checkpoint
    starts with the same first-touch order, so it never writes a lower version for newer content.
    Revoked partitions drop their pipeline, so a partition that comes back restores what its other
    owner checkpointed in between. Crashes inside an agent exit the process at once
    (:func:`_fail_stop`) so that nothing unfinished is acknowledged.

    A flush marker (:func:`carrierwatch.streams.kafka.send_flush`) on a partition advances that
    pipeline's watermark to the marker's value and flushes it, as the replay driver does at the
    end of its input.

The agents are supervised by :class:`mode.supervisors.CrashingSupervisor`: an infrastructure
error (a message Kafka refuses for good) stops the worker, whose unacknowledged input is then
processed again by the next owner, instead of leaving a gap.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import faust
from faust.types import TP
from mode.supervisors import CrashingSupervisor

from carrierwatch.core.model import CanonicalEvent, DeadLetter
from carrierwatch.core.pipeline import Pipeline
from carrierwatch.registry.serde import CanonicalSerde
from carrierwatch.replay import pipeline_for
from carrierwatch.settings import Settings
from carrierwatch.sink import SinkBatch
from carrierwatch.streams.kafka import OutputProducer, load_checkpoints, log_start_offset
from carrierwatch.streams.records import (
    CONTROL_FLUSH,
    control_kind,
    encode_checkpoint,
    encode_dead_letter,
    encode_sink_batch,
    flush_watermark,
    headers_to_dict,
    received_time_of,
)
from carrierwatch.streams.topology import StreamConfig, Topology
from carrierwatch.transformers.registry import PartnerRegistry

__all__ = ["WorkerRuntime", "WorkerStats", "create_app"]

log = logging.getLogger(__name__)

#: The partner id of dead letters for undecodable messages on ``events.canonical``.
CANONICAL_DEAD_LETTER_PARTNER = "events.canonical"


@dataclass
class WorkerStats:
    """Counters of one worker process (logged at shutdown)."""

    payloads: int = 0
    events_out: int = 0
    dead_letters: int = 0
    events_in: int = 0
    skipped: int = 0
    checkpoints: int = 0
    checkpoint_bytes: int = 0
    flushes: int = 0


@dataclass
class WorkerRuntime:
    """What the agents share: configuration, partners, codecs, the producer, the pipelines."""

    settings: Settings
    config: StreamConfig
    topology: Topology
    registry: PartnerRegistry
    serde: CanonicalSerde
    producer: OutputProducer
    pipelines: dict[int, Pipeline] = field(default_factory=dict)
    #: offset of the last canonical message each pipeline contains (-1: none)
    offsets: dict[int, int] = field(default_factory=dict)
    #: partition -> offset to seek back to (a gap after the checkpoint was seen)
    rewinds: dict[int, int] = field(default_factory=dict)
    stats: WorkerStats = field(default_factory=WorkerStats)
    #: partitions whose pipeline a flush marker flushed in the current batch
    flushed: list[int] = field(default_factory=list)

    # -- normalize ------------------------------------------------------------------------------

    def normalize(self, events: Sequence[Any]) -> None:
        """Transform a batch of raw Faust events and queue the output messages."""
        topology = self.topology
        produce = self.producer.produce
        serialize = self.serde.serialize
        events_topic = topology.events
        dead: list[DeadLetter] = []
        for event in events:
            message = event.message
            partner = self.registry.get(topology.partner_of_raw(message.topic))
            headers = message.headers
            received = received_time_of(headers, message.timestamp)
            raw = event.value if isinstance(event.value, bytes) else b""
            result = partner.transform(raw, received, headers_to_dict(headers))
            for canonical in result.events:
                produce(events_topic, serialize(canonical), canonical.package_id.encode())
            for letter in result.dead_letters:
                produce(topology.dlq(partner.id),
                        encode_dead_letter(letter, topic=message.topic,
                                           partition=message.partition, offset=message.offset))
            dead.extend(result.dead_letters)
            self.stats.events_out += len(result.events)
        self.stats.payloads += len(events)
        if dead:
            self.stats.dead_letters += len(dead)
            produce(topology.sink, encode_sink_batch(SinkBatch(dead_letters=dead)), b"dlq")

    # -- track ----------------------------------------------------------------------------------

    def missing_partitions(self, events: Sequence[Any]) -> set[int]:
        """Partitions of the batch without a pipeline in this process."""
        pipelines = self.pipelines
        return {e.message.partition for e in events if e.message.partition not in pipelines}

    def restore(self, partitions: set[int], checkpoints: dict[int, tuple[int, bytes]]) -> None:
        """Create the pipelines of ``partitions``, from their checkpoints when there are some."""
        for partition in partitions:
            found = checkpoints.get(partition)
            if found is None:
                self.pipelines[partition] = pipeline_for(
                    self.registry, shard=partition,
                    allowed_lateness_ms=self.config.allowed_lateness_ms)
                self.offsets[partition] = -1
                log.info("partition %d: no checkpoint, new pipeline", partition)
            else:
                offset, state = found
                self.pipelines[partition] = Pipeline.from_bytes(state)
                self.offsets[partition] = offset
                log.info("partition %d: restored checkpoint at offset %d (%d bytes)",
                         partition, offset, len(state))

    def drop(self, partitions: set[int]) -> None:
        """Forget the pipelines of revoked partitions."""
        for partition in partitions:
            self.pipelines.pop(partition, None)
            self.offsets.pop(partition, None)
            self.rewinds.pop(partition, None)

    def track(self, events: Sequence[Any]) -> list[int]:
        """Run a batch of canonical Faust events through the pipelines; queue the sink batches.

        Each partition's messages are applied in offset order from the one after its pipeline's
        offset: earlier ones are skipped (already in the state); a later one means a gap (Kafka
        delivered from a committed offset past the checkpoint), recorded in :attr:`rewinds` —
        the agent seeks back and the partition's messages are dropped until the one expected
        comes again. Offsets of ``events.canonical`` are contiguous (no transactional producer
        writes it; transaction markers would look like gaps). Returns the partitions whose
        pipeline changed.
        """
        offsets = self.offsets
        rewinds = self.rewinds
        by_partition: dict[int, list[Any]] = {}
        for event in events:
            message = event.message
            partition = message.partition
            offset = message.offset
            expected = offsets[partition] + 1 if partition not in by_partition \
                else by_partition[partition][-1].message.offset + 1
            if offset < expected:
                self.stats.skipped += 1
                continue
            if offset > expected:
                rewinds.setdefault(partition, expected)
                self.stats.skipped += 1
                continue
            rewinds.pop(partition, None)
            by_partition.setdefault(partition, []).append(event)
        deserialize = self.serde.deserialize
        for partition, items in by_partition.items():
            pipeline = self.pipelines[partition]
            batch = SinkBatch()
            pending: list[CanonicalEvent] = []
            for event in items:
                message = event.message
                kind = control_kind(message.headers)
                if kind is not None:
                    if pending:
                        batch.add_output(pipeline.process(pending))
                        pending = []
                    if kind == CONTROL_FLUSH:
                        self._flush(pipeline, batch, flush_watermark(event.value))
                    continue
                try:
                    pending.append(deserialize(event.value))
                except Exception as exc:  # foreign bytes on the topic: a dead letter, not a crash
                    raw = event.value if isinstance(event.value, bytes) else b""
                    batch.dead_letters.append(DeadLetter(
                        CANONICAL_DEAD_LETTER_PARTNER, received_time_of(None, message.timestamp),
                        f"undecodable canonical message at {message.topic}[{partition}]"
                        f"@{message.offset}: {type(exc).__name__}: {exc}", "$", raw))
            if pending:
                batch.add_output(pipeline.process(pending))
            self.stats.events_in += len(items)
            offsets[partition] = items[-1].message.offset
            if len(batch):
                self.producer.produce(self.topology.sink, encode_sink_batch(batch), str(partition).encode())
        return sorted(by_partition)

    def _flush(self, pipeline: Pipeline, batch: SinkBatch, watermark: int | None) -> None:
        if watermark is not None:
            batch.add_output(pipeline.advance_watermark(watermark))
        batch.add_output(pipeline.flush())
        self.stats.flushes += 1
        self.flushed.append(pipeline.shard)

    def checkpoint(self, partitions: Sequence[int]) -> None:
        """Queue the checkpoint of each partition (call after the batch's output was flushed)."""
        for partition in partitions:
            data = encode_checkpoint(self.offsets[partition],
                                     self.pipelines[partition].to_bytes())
            self.producer.produce(self.topology.checkpoints, data, str(partition).encode())
            self.stats.checkpoints += 1
            self.stats.checkpoint_bytes += len(data)


def _fail_stop(agent: str) -> None:
    """Exit at once, without acknowledging the batch (Faust's ``take_events`` would acknowledge
    it while unwinding, and the worker would then commit offsets of unfinished work)."""
    log.critical("%s agent failed; exiting without committing", agent, exc_info=True)
    logging.shutdown()
    os._exit(70)


def create_app(runtime: WorkerRuntime, *, web_port: int | None = None) -> faust.App:
    """The Faust app of a worker process, with its two agents wired to ``runtime``."""
    config = runtime.config
    topology = runtime.topology
    # rocksdb:// runs on rocksdict when python-rocksdb is absent (faust.stores.rocksdb)
    store = config.store
    datadir = runtime.settings.data_dir / "faust"
    datadir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        topology.app_id,
        broker=f"kafka://{runtime.settings.kafka_bootstrap}",
        store=store,
        topic_allow_declare=False,
        topic_disable_leader=True,
        value_serializer="raw",
        key_serializer="raw",
        broker_commit_interval=config.commit_interval,
        broker_session_timeout=config.session_timeout,
        # re-read metadata often: after a broker restart the first join may see no topics and
        # get an empty assignment; the next metadata refresh that shows them rebalances
        consumer_metadata_max_age_ms=5000,
        broker_heartbeat_interval=min(3.0, config.session_timeout / 3),
        consumer_auto_offset_reset="earliest",
        broker_max_poll_records=max(config.track_batch, config.normalize_batch),
        stream_buffer_maxsize=max(config.track_batch, config.normalize_batch) * 2,
        web_enabled=web_port is not None,
        web_port=web_port or 6066,
        web_bind="127.0.0.1",
        web_host="127.0.0.1",
        datadir=str(datadir),
        producer_max_request_size=16 * 1024 * 1024,
    )
    raw_topic = app.topic(*topology.raw_topics, value_serializer="raw", key_serializer="raw")
    events_topic = app.topic(topology.events, value_serializer="raw", key_serializer="raw")
    producer = runtime.producer

    @app.agent(raw_topic, supervisor_strategy=CrashingSupervisor)
    async def normalize(stream: Any) -> None:
        async for events in stream.take_events(config.normalize_batch, within=config.batch_within):
            try:
                runtime.normalize(events)
                await producer.flush_async()
            except Exception:
                _fail_stop("normalize")

    @app.agent(events_topic, supervisor_strategy=CrashingSupervisor)
    async def track(stream: Any) -> None:
        loop = app.loop
        bootstrap = runtime.settings.kafka_bootstrap
        sought: dict[int, int] = {}
        async for events in stream.take_events(config.track_batch, within=config.track_within):
            try:
                missing = runtime.missing_partitions(events)
                if missing:
                    checkpoints = await loop.run_in_executor(
                        None, load_checkpoints, bootstrap, topology.checkpoints)
                    runtime.restore(missing, checkpoints)
                    for partition in missing:
                        sought.pop(partition, None)
                runtime.flushed.clear()
                touched = runtime.track(events)
                for partition, offset in list(runtime.rewinds.items()):
                    if sought.get(partition) == offset:
                        continue  # the seek is in flight; stale messages are being dropped
                    low = await loop.run_in_executor(
                        None, log_start_offset, bootstrap, topology.events, partition)
                    if offset < low:  # the missing messages are gone (retention): go on from low
                        log.warning("partition %d: offsets %d..%d are gone from the log",
                                    partition, offset, low - 1)
                        runtime.offsets[partition] = low - 1
                        offset = low
                    log.info("partition %d: seeking back to offset %d (after the checkpoint)",
                             partition, offset)
                    sought[partition] = offset
                    runtime.rewinds[partition] = offset
                    await app.consumer.seek(TP(topology.events, partition), offset)
                await producer.flush_async()  # the rows are in cw.sink ...
                runtime.checkpoint(touched)
                await producer.flush_async()  # ... before the state that produced them is saved
                for partition in runtime.flushed:
                    log.info("partition %d: end-of-input flush written", partition)
            except Exception:
                _fail_stop("track")

    async def on_revoked(sender: Any, revoked: set[Any], **kwargs: Any) -> None:
        lost = {tp.partition for tp in revoked if tp.topic == topology.events}
        if lost:
            log.info("revoked canonical partitions %s", sorted(lost))
            runtime.drop(lost)

    async def on_assigned(sender: Any, assigned: set[Any], **kwargs: Any) -> None:
        owned = sorted(tp.partition for tp in assigned if tp.topic == topology.events)
        log.info("assigned canonical partitions %s at %.3f", owned, time.time())

    cast(Any, app.on_partitions_revoked).connect(on_revoked)
    cast(Any, app.on_partitions_assigned).connect(on_assigned)

    return app
