"""The Faust worker: thin stages over the pure core (``carrierwatch worker``).

A worker process runs two stages, by default both (``--stages`` /
``CARRIERWATCH_STREAM_STAGES``: ``normalize,track``, ``normalize`` or ``track``). Both stages in
one process share one interpreter (one GIL); running them as separate processes puts each on a
core of its own, with the same topics, groups and results. A ``normalize`` worker is the Faust
app with the agent (:func:`create_app` with ``track=False``); a ``track`` worker runs the
:class:`~carrierwatch.streams.track.TrackStage` alone under :class:`mode.Worker` (Faust's own
service runner: the same logging, signals and graceful stop; :func:`track_service`): it consumes
no Faust topic, so it needs no Faust app, which would only join the normalize group with nothing
to take and cause rebalances there.

``normalize`` (``raw.<partner>`` → ``events.canonical`` + ``dlq.<partner>``), a Faust agent
    in the consumer group :attr:`Topology.app_id`: takes up to ``normalize_batch`` raw payloads,
    runs each partner's transformer (:meth:`Partner.transform`, which never raises), produces
    every canonical event in the Confluent wire format keyed by package id, every dead letter as
    JSON to ``dlq.<partner>``, and one :class:`~carrierwatch.sink.SinkBatch` with the dead letters
    to ``cw.sink`` (so they reach ClickHouse too). The raw messages are acknowledged (and later
    committed) only after the producer flushed: at-least-once.

``track`` (``events.canonical`` → ``cw.sink`` + ``cw.checkpoints``), a librdkafka consumer in
    a thread of the worker process (:class:`~carrierwatch.streams.track.TrackStage`, consumer
    group :attr:`Topology.track_group`), started and stopped with the Faust app as a service:
    keeps one core :class:`~carrierwatch.core.pipeline.Pipeline` per assigned partition
    (``shard`` = partition). A batch (``consume(track_batch)``) makes one pipeline call per
    touched partition (a flush marker splits it): decode, ``process``, one
    :class:`~carrierwatch.sink.SinkBatch` per partition to ``cw.sink``, flush.

    **Checkpoints, positions and exact re-runs.** Checkpoints are incremental: a partition's
    chain is a full checkpoint (``Pipeline.to_bytes``) followed by deltas
    (``Pipeline.take_changes``: the packages, windows and deadlines changed since the previous
    record), each flushed with the offset it covers; a full checkpoint replaces the chain once
    the deltas after it would outgrow ``checkpoint_compact_ratio`` × its size, and the old
    deltas get tombstones (see :mod:`carrierwatch.streams.records`). A checkpoint costs time
    in proportion to what changed (a full one: to the packages in flight), so it is done every
    ``checkpoint_interval``
    seconds (5 by default; one partition per batch at most, at once for a partition without any
    checkpoint and after an end-of-input flush, when the input pauses, on revocation and at a
    clean stop), not after every batch
    (``checkpoint_interval`` = 0 does that). The durable progress of a partition is its
    checkpoint (the pipeline and the offset of the last message in it) plus its *call journal*:
    before a call's output is produced, the offset at which the call ends is appended to the
    partition's journal on ``cw.checkpoints`` (key ``"<p>/calls"``) and flushed. A new owner
    (after kill -9, a rebalance or a stop) restores the latest checkpoint, is *assigned at the
    offset after it* (an exact position: nothing fetched earlier can slip in) and repeats the
    journaled calls with exactly the same cuts (messages past a journaled cut wait in
    :attr:`WorkerRuntime.held` until it is reached). Same state + same calls → same rows with the
    same versions (the core numbers versions by call sequence), so the rows the crashed owner
    already wrote are rewritten identically and no stale row can ever carry a higher version
    than the final one. Without the journal a re-run with other batch cuts could compute
    different intermediate rows (the core decides deadlines at the watermark of the end of the
    previous call) under lower versions than rows already in the store.

    The group's committed offset of a partition is the one after its latest *flushed*
    checkpoint, committed after it: it never runs ahead of the durable state, and a new owner
    does not depend on it (a committed offset past the checkpoint, which only a tool can set, is
    logged and ignored). Re-processing is harmless: the core drops events it has seen (event
    id), and the store keeps one row per key (latest version). Crashes inside a stage exit the
    process at once (:func:`_fail_stop`) so that nothing unfinished is acknowledged,
    checkpointed or committed.

    A flush marker (:func:`carrierwatch.streams.kafka.send_flush`) on a partition advances that
    pipeline's watermark to the marker's value and flushes it, as the replay driver does at the
    end of its input.

The normalize agent is supervised by :class:`mode.supervisors.CrashingSupervisor`: an
infrastructure error (a message Kafka refuses for good) stops the worker, whose unacknowledged
input is then processed again by the next owner, instead of leaving a gap.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import faust
from confluent_kafka import Message
from mode import Service
from mode.supervisors import CrashingSupervisor

from carrierwatch.core.model import CanonicalEvent, DeadLetter
from carrierwatch.core.pipeline import Pipeline, arrival_order
from carrierwatch.registry.serde import CanonicalSerde
from carrierwatch.replay import pipeline_for
from carrierwatch.settings import Settings
from carrierwatch.sink import SinkBatch
from carrierwatch.streams.kafka import OutputProducer, SavedPartition
from carrierwatch.streams.records import (
    CONTROL_FLUSH,
    HeaderList,
    checkpoint_key,
    control_kind,
    delta_key,
    encode_checkpoint,
    encode_dead_letter,
    encode_journal,
    encode_sink_batch,
    flush_watermark,
    headers_to_dict,
    journal_key,
    received_time_of,
    source_file_of,
)
from carrierwatch.streams.topology import StreamConfig, Topology
from carrierwatch.transformers.registry import PartnerRegistry

if TYPE_CHECKING:
    from carrierwatch.outputs.metrics import WorkerMetrics
    from carrierwatch.streams.track import TrackStage

__all__ = ["IDLE_CHECKPOINT_AGE", "CheckpointChain", "TrackService", "WorkerRuntime",
           "WorkerStats", "create_app", "track_service"]

log = logging.getLogger(__name__)

#: The partner id of dead letters for undecodable messages on ``events.canonical``.
CANONICAL_DEAD_LETTER_PARTNER = "events.canonical"

#: Seconds: an idle partition (the last poll returned nothing) is checkpointed once its
#: checkpoint is this old (or ``checkpoint_interval``, if shorter).
IDLE_CHECKPOINT_AGE = 1.0


@dataclass
class WorkerStats:
    """Counters of one worker process (logged at shutdown)."""

    payloads: int = 0
    events_out: int = 0
    dead_letters: int = 0
    events_in: int = 0
    skipped: int = 0
    checkpoints: int = 0
    full_checkpoints: int = 0
    checkpoint_bytes: int = 0
    checkpoint_seconds: float = 0.0
    flushes: int = 0


@dataclass
class CheckpointChain:
    """A partition's checkpoint chain on ``cw.checkpoints``: a full checkpoint and its deltas."""

    #: sequence number of the full checkpoint (-1: none yet, the next checkpoint is full)
    base_seq: int = -1
    #: the number of the next record
    next_seq: int = 1
    #: bytes of the full state and of the deltas written after it (uncompressed)
    base_bytes: int = 0
    delta_bytes: int = 0
    #: delta numbers to tombstone with the next full checkpoint
    deltas: list[int] = field(default_factory=list)


@dataclass
class WorkerRuntime:
    """What the agents share: configuration, partners, codecs, the producer, the pipelines."""

    settings: Settings
    config: StreamConfig
    topology: Topology
    registry: PartnerRegistry
    serde: CanonicalSerde
    producer: OutputProducer
    #: the track stage's own producer (None: :attr:`producer`)
    track_producer: OutputProducer | None = None
    pipelines: dict[int, Pipeline] = field(default_factory=dict)
    #: offset of the last canonical message each pipeline contains (-1: none)
    offsets: dict[int, int] = field(default_factory=dict)
    #: partition -> offset to seek back to (a gap after the expected offset was seen)
    rewinds: dict[int, int] = field(default_factory=dict)
    stats: WorkerStats = field(default_factory=WorkerStats)
    #: partitions whose pipeline a flush marker flushed in the current batch
    flushed: list[int] = field(default_factory=list)
    #: offset of each partition's latest checkpoint, and when (monotonic) it was taken
    checkpointed: dict[int, int] = field(default_factory=dict)
    checkpoint_times: dict[int, float] = field(default_factory=dict)
    #: each partition's checkpoint chain
    chains: dict[int, CheckpointChain] = field(default_factory=dict)
    #: journaled call boundaries a restored partition still has to repeat
    replay: dict[int, deque[int]] = field(default_factory=dict)
    #: call boundaries since each partition's checkpoint (the content of its journal)
    journal: dict[int, list[int]] = field(default_factory=dict)
    #: messages past a partition's offset waiting for the end of a journaled call
    held: dict[int, list[Any]] = field(default_factory=dict)
    #: partitions that made a call since they were restored (the first one is logged)
    started: set[int] = field(default_factory=set)
    #: the process's Prometheus metrics (None: none)
    metrics: WorkerMetrics | None = None
    #: end offset of the last journaled call a restored partition repeats: the outcomes of
    #: the calls up to it were counted by the previous owner, so they are not counted again
    repeat_until: dict[int, int] = field(default_factory=dict)

    #: the decision tables' hook (carrierwatch.decisions.stream.StreamEscalations), or None
    escalations: Any = None

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
            for canonical in arrival_order(result.events):
                produce(events_topic, serialize(canonical), canonical.package_id.encode())
            source_file = source_file_of(headers) if result.dead_letters else None
            lines = _file_lines(partner.spec, raw, [d.path for d in result.dead_letters]) \
                if source_file is not None else [None] * len(result.dead_letters)
            for letter, line in zip(result.dead_letters, lines, strict=True):
                produce(topology.dlq(partner.id),
                        encode_dead_letter(letter, topic=message.topic,
                                           partition=message.partition, offset=message.offset,
                                           file=source_file, line=line))
            dead.extend(result.dead_letters)
            self.stats.events_out += len(result.events)
            if self.metrics is not None:
                self.metrics.observe_payload(partner.id, result.events, result.dead_letters)
        self.stats.payloads += len(events)
        if dead:
            self.stats.dead_letters += len(dead)
            produce(topology.sink, encode_sink_batch(SinkBatch(dead_letters=dead)), b"dlq")

    # -- track ----------------------------------------------------------------------------------

    @property
    def track_output(self) -> OutputProducer:
        """The producer of the track stage (its own, so its flushes wait for nothing else)."""
        return self.track_producer if self.track_producer is not None else self.producer

    def restore(self, partitions: set[int], saved: dict[int, SavedPartition]) -> None:
        """Create the pipelines of ``partitions`` from their checkpoints (new ones when there are
        none) and load the call journals written after those checkpoints."""
        now = time.monotonic()
        for partition in partitions:
            found = saved.get(partition) or SavedPartition()
            calls = found.calls_after_checkpoint()
            chain = CheckpointChain(next_seq=found.next_seq, deltas=list(found.stale))
            if found.state is None:
                self.pipelines[partition] = pipeline_for(
                    self.registry, shard=partition,
                    allowed_lateness_ms=self.config.allowed_lateness_ms)
                log.info("track: canonical partition %d has no checkpoint: new pipeline; "
                         "%d journaled calls to repeat", partition, len(calls))
            else:
                pipeline = Pipeline.from_bytes(found.state)
                for delta in found.deltas:
                    pipeline.apply_changes(delta)
                pipeline.clear_changes()  # the next delta builds on the state restored
                self.pipelines[partition] = pipeline
                chain.base_seq = found.base_seq
                chain.base_bytes = len(found.state)
                chain.delta_bytes = sum(map(len, found.deltas))
                chain.deltas.extend(range(found.base_seq + 1,
                                          found.base_seq + 1 + len(found.deltas)))
                log.info("track: canonical partition %d restored checkpoint at offset %d "
                         "(%d bytes and %d deltas, %d bytes); %d journaled calls to repeat",
                         partition, found.offset, len(found.state), len(found.deltas),
                         chain.delta_bytes, len(calls))
            self.chains[partition] = chain
            self.offsets[partition] = found.offset
            self.checkpointed[partition] = found.offset if found.state is not None else -1
            self.checkpoint_times[partition] = now
            self.started.discard(partition)
            self.replay[partition] = deque(calls)
            self.repeat_until[partition] = max(calls, default=-1)
            self.journal[partition] = list(calls)
            self.held[partition] = []

    def drop(self, partitions: set[int]) -> None:
        """Forget the pipelines of revoked partitions."""
        for partition in partitions:
            for table in (self.pipelines, self.offsets, self.rewinds, self.checkpointed,
                          self.checkpoint_times, self.chains, self.replay, self.journal,
                          self.held):
                table.pop(partition, None)
            self.started.discard(partition)

    def plan(self, messages: Sequence[Message]) -> tuple[dict[int, list[list[Message]]], list[int]]:
        """Cut a batch of canonical messages (librdkafka's) into pipeline calls, per partition.

        Each partition's messages are taken in offset order from the one after its pipeline's
        offset (and after the messages :attr:`held` back): earlier ones are skipped (already in
        the state); a later one means a gap, recorded in :attr:`rewinds` — the track stage seeks
        back and the partition's messages are dropped until the one expected comes again. (The
        stage positions each assigned partition at its checkpoint, so a gap only follows
        messages gone from the log.) Offsets of ``events.canonical`` are contiguous (no
        transactional producer writes it; transaction markers would look like gaps).

        While a partition repeats the calls of its journal (after a restore), its calls end
        exactly at the journaled offsets, and messages past the last one reached wait in
        :attr:`held` for the rest of the call. Otherwise the batch's messages form one call,
        whose last offset is appended to the partition's journal. Returns the calls per
        partition and the partitions whose journal grew (write it before the calls' output).
        """
        offsets = self.offsets
        rewinds = self.rewinds
        held = self.held
        by_partition: dict[int, list[Message]] = {}
        last: dict[int, int] = {}
        for message in messages:
            partition = cast(int, message.partition())
            offset = cast(int, message.offset())
            previous = last.get(partition)
            if previous is None:
                if partition not in offsets:
                    self.stats.skipped += 1  # not (or no longer) ours
                    continue
                waiting = held[partition]
                previous = cast(int, waiting[-1].offset()) if waiting else offsets[partition]
            expected = previous + 1
            if offset < expected:
                self.stats.skipped += 1
                continue
            if offset > expected:
                rewinds.setdefault(partition, expected)
                self.stats.skipped += 1
                continue
            rewinds.pop(partition, None)
            last[partition] = offset
            taken = by_partition.get(partition)
            if taken is None:
                by_partition[partition] = [message]
            else:
                taken.append(message)
        calls: dict[int, list[list[Message]]] = {}
        grown: list[int] = []
        for partition, items in by_partition.items():
            if held[partition]:
                items = held[partition] + items
            replay = self.replay[partition]
            while replay and replay[0] <= offsets[partition]:
                replay.popleft()  # messages gone from the log (retention) were skipped
            cut: list[list[Message]] = []
            start = 0
            if replay:
                for index, message in enumerate(items):
                    if message.offset() == replay[0]:
                        cut.append(items[start:index + 1])
                        start = index + 1
                        replay.popleft()
                        if not replay:
                            break
            rest = items[start:]
            held[partition] = []
            if rest:
                if replay:
                    held[partition] = rest
                else:
                    cut.append(rest)
                    self.journal[partition].append(cast(int, rest[-1].offset()))
                    grown.append(partition)
            if cut:
                calls[partition] = cut
        return calls, grown

    def write_journal(self, partitions: Sequence[int]) -> None:
        """Queue the call journal of each partition (flush it before the calls' output)."""
        for partition in partitions:
            self.track_output.produce(self.topology.checkpoints,
                                      encode_journal(self.journal[partition]),
                                      journal_key(partition))

    def run(self, calls: dict[int, list[list[Message]]]) -> list[int]:
        """Run the planned calls through the pipelines; queue one sink batch per partition.

        Within a call, a flush marker ends the ``process`` call before it (the cut is a function
        of the offsets, so a re-run repeats it). Returns the partitions whose pipeline changed.
        """
        deserialize = self.serde.deserialize
        for partition, cut in calls.items():
            pipeline = self.pipelines[partition]
            batch = SinkBatch()
            if partition not in self.started:
                self.started.add(partition)
                log.info("partition %d: tracking from offset %d", partition,
                         cast(int, cut[0][0].offset()))
            for items in cut:
                pipeline.observer = None if self.metrics is None or cast(int, items[-1].offset()) \
                    <= self.repeat_until.get(partition, -1) else self.metrics.observe_output
                pending: list[CanonicalEvent] = []
                for message in items:
                    headers = message.headers()
                    kind = control_kind(cast(HeaderList, headers)) if headers else None
                    if kind is not None:
                        if pending:
                            batch.add_output(pipeline.process(pending), typed=True)
                            pending = []
                        if kind == CONTROL_FLUSH:
                            self._flush(pipeline, batch, flush_watermark(message.value()))
                        continue
                    value = message.value()
                    try:
                        pending.append(deserialize(value))  # type: ignore[arg-type]
                    except Exception as exc:  # foreign bytes on the topic: a dead letter
                        if self.metrics is not None:
                            self.metrics.dead_letter(CANONICAL_DEAD_LETTER_PARTNER, "track")
                        batch.dead_letters.append(DeadLetter(
                            CANONICAL_DEAD_LETTER_PARTNER,
                            received_time_of(None, message.timestamp()[1] / 1000),
                            f"undecodable canonical message at {message.topic()}[{partition}]"
                            f"@{message.offset()}: {type(exc).__name__}: {exc}", "$",
                            value if isinstance(value, bytes) else b""))
                if pending:
                    batch.add_output(pipeline.process(pending), typed=True)
                self.stats.events_in += len(items)
                self.offsets[partition] = cast(int, items[-1].offset())
            if self.escalations is not None:
                self.escalations.observe(pipeline, batch)
            if len(batch):
                self.track_output.produce(self.topology.sink, encode_sink_batch(batch),
                                          str(partition).encode())
        return sorted(calls)

    def track(self, messages: Sequence[Message]) -> list[int]:
        """:meth:`plan`, then :meth:`run` (the journal is queued, not flushed, in between:
        for tests and tools that flush once)."""
        calls, grown = self.plan(messages)
        self.write_journal(grown)
        return self.run(calls)

    def _flush(self, pipeline: Pipeline, batch: SinkBatch, watermark: int | None) -> None:
        if watermark is not None:
            batch.add_output(pipeline.advance_watermark(watermark), typed=True)
        batch.add_output(pipeline.flush(), typed=True)
        self.stats.flushes += 1
        self.flushed.append(pipeline.shard)

    def changed(self) -> list[int]:
        """Partitions whose pipeline holds messages its checkpoint does not."""
        return sorted(p for p in self.pipelines if self.offsets[p] > self.checkpointed[p])

    def due_checkpoints(self, now: float | None = None, *, idle: bool = False) -> list[int]:
        """Partitions to checkpoint after this batch.

        Every changed partition when ``checkpoint_interval`` is 0, and every changed partition
        that has no checkpoint yet (its state is small). When the stage is ``idle``
        (its last poll returned nothing), every changed partition whose checkpoint is
        :data:`IDLE_CHECKPOINT_AGE` old: the pickling costs no throughput then, and the committed
        offsets catch up with the input. Otherwise every partition a flush marker flushed, and
        the one whose checkpoint is oldest once it is ``checkpoint_interval`` old (one per batch,
        so the pickling of large states is spread over batches).
        """
        now = time.monotonic() if now is None else now
        changed = self.changed()
        interval = self.config.checkpoint_interval
        if interval <= 0:
            return changed
        times = self.checkpoint_times
        if idle:
            age = min(interval, IDLE_CHECKPOINT_AGE)
            return [p for p in changed if p in self.flushed or self.checkpointed[p] < 0
                    or now - times[p] >= age]
        due = [p for p in changed if p in self.flushed or self.checkpointed[p] < 0]
        late = [p for p in changed if p not in due and now - times[p] >= interval]
        if late:
            due.append(min(late, key=lambda p: times[p]))
        return due

    def checkpoint(self, partitions: Sequence[int]) -> None:
        """Queue the checkpoint of each partition (call after the output of its calls was
        flushed: the state must never be ahead of the rows in ``cw.sink``). Commit
        :meth:`commit_positions` only after these are flushed too."""
        started = time.perf_counter()
        now = time.monotonic()
        for partition in partitions:
            offset = self.offsets[partition]
            data = self._write_checkpoint(partition, offset)
            self.checkpointed[partition] = offset
            self.checkpoint_times[partition] = now
            self.journal[partition] = [b for b in self.journal[partition] if b > offset]
            self.stats.checkpoints += 1
            self.stats.checkpoint_bytes += len(data)
        self.stats.checkpoint_seconds += time.perf_counter() - started

    def _write_checkpoint(self, partition: int, offset: int) -> bytes:
        """Queue a delta of ``partition`` when its chain has room for it, else a full checkpoint
        and tombstones for the deltas it replaces; returns the record."""
        pipeline = self.pipelines[partition]
        chain = self.chains[partition]
        produce = self.track_output.produce
        topic = self.topology.checkpoints
        seq = chain.next_seq
        chain.next_seq += 1
        ratio = self.config.checkpoint_compact_ratio
        if chain.base_seq >= 0 and ratio > 0:
            delta = pipeline.take_changes()
            if chain.delta_bytes + len(delta) <= ratio * chain.base_bytes:
                data = encode_checkpoint(offset, delta, seq=seq, base=chain.base_seq)
                produce(topic, data, delta_key(partition, seq))
                chain.delta_bytes += len(delta)
                chain.deltas.append(seq)
                return data
        state = pipeline.to_bytes()
        pipeline.clear_changes()
        data = encode_checkpoint(offset, state, seq=seq)
        produce(topic, data, checkpoint_key(partition))
        for old in chain.deltas:  # after the full checkpoint, in the same partition
            produce(topic, None, delta_key(partition, old))
        chain.base_seq, chain.base_bytes, chain.delta_bytes = seq, len(state), 0
        chain.deltas = []
        self.stats.full_checkpoints += 1
        return data

    def commit_positions(self, partitions: Sequence[int]) -> dict[int, int]:
        """The offsets to commit for ``partitions``: the one after each checkpoint (never more:
        the committed offset of ``events.canonical`` never runs ahead of the durable state)."""
        return {p: self.checkpointed[p] + 1 for p in partitions if self.checkpointed[p] >= 0}


_ROW_PATH = re.compile(r"row\[(\d+)\]")


def _file_lines(spec: Any, raw: bytes, paths: Sequence[str]) -> list[int | None]:
    """The line of a dropped CSV file each dead letter's ``row[n]`` path is on (None for the
    whole file's ``$`` and for other formats)."""
    if spec.transformer != "csv_mapping":
        return [None] * len(paths)
    from carrierwatch.transformers.csv_mapping import data_row_lines

    rows = data_row_lines(raw, spec)
    out: list[int | None] = []
    for path in paths:
        match = _ROW_PATH.match(path)
        number = int(match.group(1)) if match else 0
        out.append(rows[number - 1] if 0 < number <= len(rows) else None)
    return out


def _fail_stop(agent: str) -> None:
    """Exit at once, without acknowledging the batch (Faust's ``take_events`` would acknowledge
    it while unwinding, and the worker would then commit offsets of unfinished work; the track
    stage must not checkpoint or commit a partial batch either)."""
    log.critical("%s agent failed; exiting without committing", agent, exc_info=True)
    logging.shutdown()
    os._exit(70)


class TrackService(Service):
    """Runs a track stage's librdkafka consumer thread for as long as the service runs (started
    with the worker's Faust app, or alone under :class:`mode.Worker`)."""

    def __init__(self, stage: TrackStage, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.stage = stage

    async def on_start(self) -> None:
        log.info("track stage starting (worker stages: %s)", self.stage.runtime.config.stages)
        self.stage.start()

    async def on_stop(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.stage.stop)


def _track_stage(runtime: WorkerRuntime) -> TrackStage:
    from carrierwatch.streams.track import TrackStage

    return TrackStage(runtime, on_failure=lambda: _fail_stop("track"))


def track_service(runtime: WorkerRuntime) -> TrackService:
    """The track stage as a service of its own: a track-only worker, run by :class:`mode.Worker`."""
    return TrackService(_track_stage(runtime))


def create_app(runtime: WorkerRuntime, *, web_port: int | None = None,
               track: bool = True) -> faust.App:
    """The Faust app of a worker process: the ``normalize`` agent, and with ``track`` the track
    stage (:class:`~carrierwatch.streams.track.TrackStage`) as a service started and stopped
    with it (without: a normalize-only worker)."""
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
        broker_max_poll_records=config.normalize_batch,
        stream_buffer_maxsize=config.normalize_batch * 2,
        web_enabled=web_port is not None,
        web_port=web_port or 6066,
        web_bind="127.0.0.1",
        web_host="127.0.0.1",
        datadir=str(datadir),
        producer_max_request_size=16 * 1024 * 1024,
    )
    raw_topic = app.topic(*topology.raw_topics, value_serializer="raw", key_serializer="raw")
    producer = runtime.producer

    @app.agent(raw_topic, supervisor_strategy=CrashingSupervisor)
    async def normalize(stream: Any) -> None:
        async for events in stream.take_events(config.normalize_batch, within=config.batch_within):
            try:
                runtime.normalize(events)
                await producer.flush_async()
            except Exception:
                _fail_stop("normalize")

    raw_topics = set(topology.raw_topics)

    def assigned(sender: Any, *args: Any, signal: Any = None, **kwargs: Any) -> None:
        """Log the raw partitions of each assignment (``args[0]``: the set of TPs)."""
        tps: set[Any] = args[0] if args else set()
        raw = sorted(f"{tp.topic}[{tp.partition}]" for tp in tps if tp.topic in raw_topics)
        log.info("normalize: assigned %d raw partitions at %.3f (worker stages: %s): %s",
                 len(raw), time.time(), config.stages, ", ".join(raw))

    # (mode's handler type does not admit a plain function under mypy; Faust calls it as
    # receiver(app, assigned, signal=...))
    cast(Any, app.on_partitions_assigned).connect(assigned)

    if track:
        stage = _track_stage(runtime)

        @app.service
        class Track(TrackService):
            """The track stage, started and stopped with the app."""

            def __init__(self, **kwargs: Any) -> None:
                super().__init__(stage, **kwargs)

    return app
