"""The track stage of a worker: ``events.canonical`` on a librdkafka consumer, in a thread.

The stage runs :meth:`WorkerRuntime.plan`, :meth:`~WorkerRuntime.run` and the checkpoints of
:class:`~carrierwatch.streams.app.WorkerRuntime` over batches from ``Consumer.consume(n)``
(about 3× cheaper per message than a Faust stream) in the consumer group
:attr:`Topology.track_group` (librdkafka and Faust cannot share a group; the worker's Faust app
keeps the group :attr:`Topology.app_id` for the raw topics).

**Positions and commits.** The durable progress of a partition is its checkpoint plus its call
journal on ``cw.checkpoints``. On assignment the stage restores the checkpoint and *assigns the
partition at the offset after it* (``assign()`` with explicit offsets is exact: no message fetched
before it can slip in, unlike a seek under Faust), whatever the group's committed offset says. It
commits an offset only after the checkpoint that covers it was flushed, so the committed offset
of ``events.canonical`` never runs ahead of the durable state: it is there for lag monitoring
and :func:`~carrierwatch.streams.kafka.wait_caught_up`, and a committed offset past the
checkpoint (set by a tool) is logged and ignored.

**When checkpoints are taken** (:meth:`WorkerRuntime.due_checkpoints`): every
``checkpoint_interval`` seconds per partition (one partition per batch), at once for a partition
a flush marker flushed, for every changed partition when a poll returns nothing (idle, at most
once a second), when partitions are revoked (a rebalance hands over fresh checkpoints) and at a
clean stop. Between checkpoints the call journal makes a re-run after kill -9 exact.

A failure inside the stage calls ``on_failure`` (the worker exits at once with status 70, see
``carrierwatch.streams.app._fail_stop``) without checkpointing or committing anything of the
unfinished batch.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

from carrierwatch.core.errors import CarrierwatchError
from carrierwatch.streams.kafka import SavedPartition, load_checkpoints

if TYPE_CHECKING:
    from carrierwatch.streams.app import WorkerRuntime

__all__ = ["TrackStage"]

log = logging.getLogger("carrierwatch.streams.app")


class TrackStage:
    """The track stage's consumer loop, in a thread of the worker process.

    Parameters
    ----------
    runtime
        The worker's shared state (pipelines, journal, producer, configuration).
    on_failure
        Called from the stage's thread when the loop raises; the worker's exits the process.
    """

    def __init__(self, runtime: WorkerRuntime, *, on_failure: Callable[[], None]) -> None:
        self.runtime = runtime
        self.topic = runtime.topology.events
        self._on_failure = on_failure
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failed = False
        #: partition -> the offset a seek is in flight to
        self._sought: dict[int, int] = {}

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the consumer thread."""
        self._thread = threading.Thread(target=self._main, name="carrierwatch-track",
                                        daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 120.0) -> None:
        """Ask the loop to end (it checkpoints, commits and leaves the group) and wait for it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _main(self) -> None:
        try:
            self.run()
        except BaseException:
            self._failed = True
            self._on_failure()
            raise

    def consumer(self) -> Any:
        """The librdkafka consumer of the track group (not yet subscribed)."""
        from carrierwatch.streams.kafka import _quiet_logger

        runtime = self.runtime
        config = runtime.config
        return Consumer({
            "bootstrap.servers": runtime.settings.kafka_bootstrap,
            "group.id": runtime.topology.track_group,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": int(config.session_timeout * 1000),
            "heartbeat.interval.ms": int(min(3.0, config.session_timeout / 3) * 1000),
            # a restore or a checkpoint of a large state may hold the loop for a while
            "max.poll.interval.ms": 600_000,
            # see the topics again soon after a broker restart
            "topic.metadata.refresh.interval.ms": 5000,
            "on_commit": _on_commit,
            "logger": _quiet_logger(),
        })

    def run(self) -> None:
        """Consume, track and checkpoint until :meth:`stop`; then checkpoint what changed,
        commit and close the consumer (leaving the group)."""
        config = self.runtime.config
        consumer = self.consumer()
        consumer.subscribe([self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke,
                           on_lost=self._on_lost)
        while not self._stop.is_set():
            batch = consumer.consume(config.track_batch, config.track_within)
            messages: list[Message] = []
            for message in batch:
                error = message.error()
                if error is None:
                    messages.append(message)
                elif error.fatal():
                    raise KafkaException(error)
                else:
                    log.warning("track: consumer error: %s", error)
            self.step(consumer, messages)
        self._checkpoint_and_commit(consumer, self.runtime.changed(), synchronous=True)
        consumer.close()

    # -- one batch ------------------------------------------------------------------------------

    def step(self, consumer: Any, messages: Sequence[Message]) -> None:
        """Track one batch: journal, calls, rows flushed, then the checkpoints that are due."""
        runtime = self.runtime
        out = runtime.track_output
        runtime.flushed.clear()
        calls, grown = runtime.plan(messages)
        if grown:  # the calls' cuts are durable before any of their output
            runtime.write_journal(grown)
            out.flush()
        runtime.run(calls)
        if runtime.rewinds:
            self._seek_rewinds(consumer)
        out.flush()  # the rows are in cw.sink ...
        due = runtime.due_checkpoints(idle=not messages)
        if due:  # ... before the state that produced them
            self._checkpoint_and_commit(consumer, due)
        for partition in runtime.flushed:
            log.info("partition %d: end-of-input flush written", partition)

    def _checkpoint_and_commit(self, consumer: Any, partitions: Sequence[int], *,
                               synchronous: bool = False) -> None:
        runtime = self.runtime
        if not partitions:
            return
        runtime.checkpoint(partitions)
        runtime.track_output.flush()
        self._commit(consumer, runtime.commit_positions(partitions), synchronous=synchronous)

    def _commit(self, consumer: Any, positions: dict[int, int], *, synchronous: bool) -> None:
        if not positions:
            return
        offsets = [TopicPartition(self.topic, p, o) for p, o in sorted(positions.items())]
        try:
            consumer.commit(offsets=offsets, asynchronous=not synchronous)
        except KafkaException as exc:  # progress is in the checkpoint; the next commit catches up
            log.warning("track: commit of %s failed: %s", positions, exc)

    def _seek_rewinds(self, consumer: Any) -> None:
        """Seek each partition with a gap back to the first missing offset (or on to the start
        of the log when the missing messages are gone)."""
        runtime = self.runtime
        for partition, wanted in list(runtime.rewinds.items()):
            if self._sought.get(partition) == wanted:
                continue  # the seek is in flight; stale messages are being dropped
            offset = wanted
            low, _ = consumer.get_watermark_offsets(TopicPartition(self.topic, partition),
                                                    timeout=30)
            if offset < low:  # the missing messages are gone (retention): go on from low
                log.warning("partition %d: offsets %d..%d are gone from the log",
                            partition, offset, low - 1)
                runtime.offsets[partition] = low - 1
                runtime.held[partition] = []
                offset = low
            log.info("partition %d: seeking back to offset %d", partition, offset)
            try:
                consumer.seek(TopicPartition(self.topic, partition, offset))
            except KafkaException as exc:
                log.warning("partition %d: seek failed (%s); retried with the next batch",
                            partition, exc)
                continue
            self._sought[partition] = offset
            runtime.rewinds[partition] = offset

    # -- rebalancing (called by librdkafka from within consume(), in this thread) --------------

    def _load(self) -> dict[int, SavedPartition]:
        bootstrap = self.runtime.settings.kafka_bootstrap
        deadline = time.monotonic() + 120
        while True:
            try:
                return load_checkpoints(bootstrap, self.runtime.topology.checkpoints)
            except (CarrierwatchError, KafkaException) as exc:  # broker restarting
                if time.monotonic() > deadline:
                    raise
                log.warning("track: reading checkpoints failed (%s); retrying", exc)
                time.sleep(1.0)

    def _on_assign(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        runtime = self.runtime
        owned = {tp.partition for tp in partitions if tp.topic == self.topic}
        runtime.restore(owned, self._load())
        try:
            committed = {tp.partition: tp.offset
                         for tp in consumer.committed(partitions, timeout=30)}
        except KafkaException as exc:
            log.warning("track: reading committed offsets failed: %s", exc)
            committed = {}
        starts: dict[int, int] = {}
        catch_up: dict[int, int] = {}
        for partition in sorted(owned):
            start = runtime.offsets[partition] + 1
            low, _ = consumer.get_watermark_offsets(TopicPartition(self.topic, partition),
                                                    timeout=30)
            if start < low:  # messages after the checkpoint are gone (retention)
                log.warning("partition %d: offsets %d..%d are gone from the log",
                            partition, start, low - 1)
                runtime.offsets[partition] = low - 1
                start = low
            was = committed.get(partition, -1)
            if was > start:
                log.info("partition %d: committed offset %d is past the checkpoint: seeking back "
                         "to offset %d", partition, was, start)
            elif was < start and runtime.checkpointed[partition] >= 0:
                catch_up[partition] = start  # killed between a checkpoint and its commit
            starts[partition] = start
            self._sought.pop(partition, None)
        consumer.assign([TopicPartition(self.topic, p, o) for p, o in sorted(starts.items())])
        self._commit(consumer, catch_up, synchronous=False)
        log.info("assigned canonical partitions %s at %.3f", sorted(owned), time.time())

    def _on_revoke(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        runtime = self.runtime
        lost = {tp.partition for tp in partitions if tp.topic == self.topic}
        if not self._failed:  # hand over fresh checkpoints
            changed = [p for p in runtime.changed() if p in lost]
            self._checkpoint_and_commit(consumer, changed, synchronous=True)
        log.info("revoked canonical partitions %s", sorted(lost))
        runtime.drop(lost)
        consumer.unassign()

    def _on_lost(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        lost = {tp.partition for tp in partitions if tp.topic == self.topic}
        log.warning("lost canonical partitions %s (no checkpoint taken)", sorted(lost))
        self.runtime.drop(lost)
        consumer.unassign()


def _on_commit(error: Any, partitions: list[TopicPartition]) -> None:
    if error is not None:
        log.warning("track: commit failed: %s", error)
