"""Kafka plumbing of the stream driver (confluent-kafka): producing, checkpoints, progress.

The agents produce with a librdkafka producer rather than Faust's own: it is several times
cheaper per message, and :meth:`Producer.flush` gives the "everything acknowledged" point the
checkpoint protocol needs. Delivery is idempotent (``enable.idempotence``) and retried without
a time limit, so a broker restart stalls the worker instead of losing output.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from carrierwatch.core.errors import CarrierwatchError
from carrierwatch.streams.records import (
    CONTROL_FLUSH,
    CONTROL_HEADER,
    RECEIVED_TIME_HEADER,
    CheckpointRecord,
    decode_checkpoint_record,
    decode_journal,
    encode_flush,
    parse_delta_key,
    parse_state_key,
)
from carrierwatch.streams.topology import MAX_STATE_MESSAGE_BYTES

__all__ = [
    "DeliveryError",
    "OutputProducer",
    "SavedPartition",
    "group_lag",
    "load_checkpoints",
    "log_start_offset",
    "produce_raw",
    "send_flush",
    "wait_caught_up",
]


class DeliveryError(CarrierwatchError):
    """Kafka refused a message for good (not a transient broker outage)."""


class OutputProducer:
    """A librdkafka producer whose :meth:`flush` returns only when every message is acknowledged.

    A message that failed for good (too large, unknown topic) raises :class:`DeliveryError` from
    :meth:`flush`: the worker must not acknowledge its input then.
    """

    def __init__(self, bootstrap: str, **overrides: Any) -> None:
        from confluent_kafka import Producer

        config: dict[str, Any] = {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            # aiokafka (Faust) reads gzip only without extra codec libraries; loopback and
            # LAN links gain little from compressing ~500-byte Avro records anyway
            "compression.type": "none",
            "message.max.bytes": MAX_STATE_MESSAGE_BYTES,
            "message.timeout.ms": 0,  # retry until the broker is back
            "queue.buffering.max.messages": 1_000_000,
            "queue.buffering.max.kbytes": 1_048_576,
            "batch.num.messages": 10_000,
            "logger": _quiet_logger(),
        }
        config.update(overrides)
        self._producer: Any = Producer(config)
        self._errors: list[str] = []

    def _on_delivery(self, err: Any, msg: Any) -> None:
        if err is not None:
            self._errors.append(f"{msg.topic()}: {err}")

    def produce(self, topic: str, value: bytes | None, key: bytes | str | None = None, *,
                partition: int | None = None,
                headers: Sequence[tuple[str, bytes]] | None = None,
                timestamp_ms: int | None = None) -> None:
        """Queue one message (waiting for room in the queue if it is full)."""
        from confluent_kafka import KafkaError, KafkaException

        kwargs: dict[str, Any] = {"on_delivery": self._on_delivery}
        if partition is not None:
            kwargs["partition"] = partition
        if headers:
            kwargs["headers"] = list(headers)
        if timestamp_ms is not None:
            kwargs["timestamp"] = timestamp_ms
        while True:
            try:
                self._producer.produce(topic, value, key, **kwargs)
                return
            except BufferError:
                self._producer.poll(0.05)
            except KafkaException as exc:  # pragma: no cover - config errors
                if exc.args[0].code() == KafkaError._QUEUE_FULL:
                    self._producer.poll(0.05)
                    continue
                raise

    def poll(self) -> None:
        """Serve delivery callbacks without waiting."""
        self._producer.poll(0)

    def flush(self) -> None:
        """Block until every queued message is acknowledged; raise if one failed for good."""
        while self._producer.flush(1.0) > 0:
            pass
        if self._errors:
            errors, self._errors = self._errors, []
            raise DeliveryError(f"{len(errors)} message(s) not delivered, e.g. {errors[0]}")

    async def flush_async(self) -> None:
        """:meth:`flush` in a thread, so the event loop keeps serving heartbeats."""
        await asyncio.get_running_loop().run_in_executor(None, self.flush)


def _quiet_logger() -> Any:
    import logging

    return logging.getLogger("carrierwatch.streams.rdkafka")


def _consumer(bootstrap: str, **overrides: Any) -> Any:
    from confluent_kafka import Consumer

    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "group.id": f"carrierwatch-reader-{uuid.uuid4().hex}",
        "enable.auto.commit": False,
        "enable.partition.eof": True,
        "auto.offset.reset": "earliest",
        "fetch.max.bytes": MAX_STATE_MESSAGE_BYTES * 2,
        "max.partition.fetch.bytes": MAX_STATE_MESSAGE_BYTES,
        "receive.message.max.bytes": MAX_STATE_MESSAGE_BYTES * 2 + 1_000_000,
        "logger": _quiet_logger(),
    }
    config.update(overrides)
    return Consumer(config)


@dataclass
class SavedPartition:
    """What ``cw.checkpoints`` holds for one canonical partition.

    ``state``: the latest full checkpoint (None when there is none) and ``deltas``: the deltas
    written after it, in order (``Pipeline.from_bytes(state)`` then ``apply_changes`` of each);
    ``offset``: the offset of the last canonical message in that chain (-1: none);
    ``journal``: the last offsets of the pipeline calls made after it, in order (a re-run cuts its
    calls at these offsets so that it re-emits identical rows). ``base_seq``: the sequence number
    of the full checkpoint; ``next_seq``: the number the next record takes (above every number
    seen); ``stale``: delta numbers outside the chain (of an earlier chain whose tombstones did
    not all get written), to be tombstoned with the next full checkpoint.
    """

    offset: int = -1
    state: bytes | None = None
    journal: list[int] = field(default_factory=list)
    deltas: list[bytes] = field(default_factory=list)
    base_seq: int = 0
    next_seq: int = 1
    stale: list[int] = field(default_factory=list)

    def calls_after_checkpoint(self) -> list[int]:
        """The journal's boundaries past the checkpoint (older entries are already in it)."""
        return [b for b in self.journal if b > self.offset]


def load_checkpoints(bootstrap: str, topic: str, *, timeout: float = 60.0
                     ) -> dict[int, SavedPartition]:
    """The latest checkpoint and call journal per canonical partition.

    Reads the compacted checkpoint topic from the beginning to its end (no consumer group).
    """
    from confluent_kafka import OFFSET_BEGINNING, KafkaError, TopicPartition

    consumer = _consumer(bootstrap)
    try:
        metadata = consumer.list_topics(topic, timeout=timeout).topics[topic]
        if metadata.error is not None:
            raise CarrierwatchError(f"checkpoint topic {topic!r}: {metadata.error}")
        ends: dict[int, int] = {}
        for partition in metadata.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition),
                                                       timeout=timeout)
            if high > low:
                ends[partition] = high
        latest: dict[int, SavedPartition] = {}
        if not ends:
            return latest
        bases: dict[int, CheckpointRecord | None] = {}
        deltas: dict[int, dict[int, CheckpointRecord]] = {}
        numbers: dict[int, int] = {}  # partition -> highest sequence number seen
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends])
        done: set[int] = set()
        deadline = time.monotonic() + timeout
        while len(done) < len(ends):
            if time.monotonic() > deadline:
                raise CarrierwatchError(f"reading checkpoints from {topic!r} timed out")
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error() is not None:
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    done.add(msg.partition())
                    continue
                raise CarrierwatchError(f"reading checkpoints: {msg.error()}")
            if msg.offset() + 1 >= ends[msg.partition()]:
                done.add(msg.partition())
            key = msg.key()
            if key is None:
                continue
            canonical_partition, kind = parse_state_key(key)
            saved = latest.setdefault(canonical_partition, SavedPartition())
            value = msg.value()
            if kind == "journal":
                saved.journal = [] if value is None else decode_journal(value)
                continue
            chain = deltas.setdefault(canonical_partition, {})
            if kind == "delta":
                seq = parse_delta_key(key)[1]
                numbers[canonical_partition] = max(numbers.get(canonical_partition, 0), seq)
                if value is None:  # tombstone: a delta of a replaced chain
                    chain.pop(seq, None)
                else:
                    chain[seq] = decode_checkpoint_record(value)
            elif value is None:  # tombstone: the checkpoint was dropped
                bases[canonical_partition] = None
            else:
                record = decode_checkpoint_record(value)
                bases[canonical_partition] = record
                numbers[canonical_partition] = max(numbers.get(canonical_partition, 0),
                                                   record.seq)
        for canonical_partition, saved in latest.items():
            _link_chain(saved, bases.get(canonical_partition),
                        deltas.get(canonical_partition, {}),
                        numbers.get(canonical_partition, 0))
        return latest
    finally:
        consumer.close()


def _link_chain(saved: SavedPartition, base: CheckpointRecord | None,
                deltas: dict[int, CheckpointRecord], highest: int) -> None:
    """Fill ``saved`` with the full checkpoint ``base`` and the deltas that continue it without
    a gap (the others are ``stale``)."""
    saved.next_seq = highest + 1
    chained: list[CheckpointRecord] = []
    if base is not None:
        seq = base.seq
        while (found := deltas.get(seq + 1)) is not None and found.base == base.seq:
            chained.append(found)
            seq += 1
        saved.state = base.state
        saved.base_seq = base.seq
        saved.offset = chained[-1].offset if chained else base.offset
        saved.deltas = [record.state for record in chained]
    linked = {record.seq for record in chained}
    saved.stale = sorted(seq for seq in deltas if seq not in linked)


def log_start_offset(bootstrap: str, topic: str, partition: int, *,
                     timeout: float = 30.0) -> int:
    """The first offset still in the log of ``topic[partition]``."""
    from confluent_kafka import TopicPartition

    consumer = _consumer(bootstrap)
    try:
        low, _ = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout)
        return int(low)
    finally:
        consumer.close()


def group_lag(bootstrap: str, group: str, topics: Iterable[str], *, timeout: float = 10.0
              ) -> dict[tuple[str, int], int]:
    """Messages not yet committed by ``group``, per topic partition (end offset − committed)."""
    from confluent_kafka import TopicPartition

    consumer = _consumer(bootstrap, **{"group.id": group})
    try:
        partitions = []
        for topic in topics:
            metadata = consumer.list_topics(topic, timeout=timeout).topics[topic]
            partitions += [TopicPartition(topic, p) for p in metadata.partitions]
        committed = consumer.committed(partitions, timeout=timeout)
        lag: dict[tuple[str, int], int] = {}
        for tp in committed:
            _, high = consumer.get_watermark_offsets(TopicPartition(tp.topic, tp.partition),
                                                     timeout=timeout)
            done = tp.offset if tp.offset >= 0 else 0
            lag[(tp.topic, tp.partition)] = max(0, high - done)
        return lag
    finally:
        consumer.close()


def wait_caught_up(bootstrap: str, group: str, topics: Iterable[str], *, timeout: float,
                   poll: float = 0.5) -> None:
    """Wait until ``group`` has committed everything in ``topics``; TimeoutError otherwise."""
    names = list(topics)
    deadline = time.monotonic() + timeout
    last: dict[tuple[str, int], int] = {}
    error: Exception | None = None
    while True:
        try:
            last = group_lag(bootstrap, group, names)
        except Exception as exc:  # broker restarting: keep waiting within the deadline
            last = {("?", -1): -1}
            error = exc
        else:
            error = None
            if not any(last.values()):
                return
        if time.monotonic() > deadline:
            raise TimeoutError(f"group {group!r} not caught up on {names} after {timeout:.0f} s: "
                               f"lag {last}" + (f" ({error})" if error else ""))
        time.sleep(poll)


def send_flush(bootstrap: str, topic: str, watermark: int, *, timeout: float = 30.0) -> int:
    """Append a flush marker to every partition of ``topic`` (``events.canonical``).

    Call it when a finite input (a backfill, a test) has been fully normalized (the worker's
    group caught up on the raw topics): each partition's pipeline then advances its watermark to
    ``watermark`` and flushes, exactly as the replay driver does at the end of its input.
    Returns the number of partitions marked.
    """
    producer = OutputProducer(bootstrap)
    metadata = producer._producer.list_topics(topic, timeout=timeout).topics[topic]
    for partition in metadata.partitions:
        producer.produce(topic, encode_flush(watermark), b"", partition=partition,
                         headers=[(CONTROL_HEADER, CONTROL_FLUSH.encode())])
    producer.flush()
    return len(metadata.partitions)


def produce_raw(bootstrap: str, topic_of: Mapping[str, str],
                records: Iterable[Any], *, producer: OutputProducer | None = None) -> int:
    """Produce raw records (``RawRecord``: partner, received_time, headers, body) to their
    partners' raw topics, in order, with the receive time in a header.

    The message timestamp stays the time of producing: a simulated receive time months in the
    past would make the broker's time-based retention delete the records at once.
    """
    own = producer is None
    out = producer if producer is not None else OutputProducer(bootstrap)
    count = 0
    for record in records:
        headers = [(str(k), str(v).encode()) for k, v in record.headers.items()]
        headers.append((RECEIVED_TIME_HEADER, str(record.received_time).encode()))
        out.produce(topic_of[record.partner], record.body, None, headers=headers)
        count += 1
        if count % 10_000 == 0:
            out.poll()
    if own:
        out.flush()
    return count
