"""The gateway's Kafka side: an asyncio producer with delivery reports, and the spool drainer.

:class:`RawProducer` wraps a librdkafka producer (``acks=all``, idempotent) for the event loop:
:meth:`RawProducer.send` resolves when the broker acknowledged the message (its delivery report)
and raises :class:`DeliveryFailed` when it did not within ``delivery_timeout`` seconds. The
delivery callbacks are served in the event loop itself (``poll(0)`` about every millisecond while
messages are in flight), not by a thread. :attr:`RawProducer.up` is the gateway's view of the broker:
false after a failed delivery or librdkafka's "all brokers down", true again after a successful
probe or delivery.

:class:`Drainer` moves the :class:`~carrierwatch.ingest.spool.Spool` into Kafka in arrival order,
one batch at a time, exactly once by request id even if the gateway is killed in the middle:

1. before producing a batch it writes an *intent* (fsynced): the batch's sequence range, the
   high watermark of every partition of the topics it goes to, and the request ids already known
   to be in Kafka;
2. it produces the batch, waits for every delivery report, then moves the spool's cursor past
   the batch and removes the intent;
3. when it finds an intent (a restart after kill -9, or a batch that failed half-way), it first
   reads those partitions from the recorded watermarks to their current end and collects the
   ``carrierwatch-request-id`` headers found there: those entries are already in Kafka and are
   not produced again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Iterable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any

from carrierwatch.core.errors import CarrierwatchError
from carrierwatch.ingest.spool import Spool, SpoolEntry

__all__ = ["REQUEST_ID_HEADER", "DeliveryFailed", "Drainer", "RawProducer", "entry_headers",
           "read_request_ids"]

log = logging.getLogger(__name__)

#: the raw message header holding the gateway's request id
REQUEST_ID_HEADER = "carrierwatch-request-id"


class DeliveryFailed(CarrierwatchError):
    """Kafka did not acknowledge a message in time (or refused it)."""


def entry_headers(entry: SpoolEntry) -> list[tuple[str, bytes]]:
    return [(key, value.encode("utf-8")) for key, value in entry.headers]


def _quiet_logger() -> logging.Logger:
    return logging.getLogger("carrierwatch.ingest.rdkafka")


class RawProducer:
    """A librdkafka producer for the event loop (see the module docstring)."""

    def __init__(self, bootstrap: str, *, delivery_timeout: float = 5.0,
                 **overrides: Any) -> None:
        from confluent_kafka import Producer

        self.bootstrap = bootstrap
        self.delivery_timeout = delivery_timeout
        config: dict[str, Any] = {
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 1,
            "compression.type": "none",  # the worker (aiokafka) reads gzip only
            "message.timeout.ms": max(1, round(delivery_timeout * 1000)),
            "socket.connection.setup.timeout.ms": max(1000, round(delivery_timeout * 1000)),
            "reconnect.backoff.max.ms": 1000,
            "error_cb": self._on_error,
            "logger": _quiet_logger(),
        }
        config.update(overrides)
        self._producer: Any = Producer(config)
        self.up = False
        self._pending = 0
        self._pump: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._probe_executor: Executor = ThreadPoolExecutor(1, "gateway-kafka-probe")

    async def _serve(self, wake: asyncio.Event) -> None:
        """Serve delivery reports in the event loop itself: ``poll(0)`` about every
        millisecond while messages are in flight, every second otherwise (for errors and
        logs). No poll thread: its handing over of the GIL would add milliseconds to every
        acknowledgement while the loop is busy."""
        while True:
            self._producer.poll(0)
            if self._pending:
                await asyncio.sleep(0.0005)
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), 1.0)
                wake.clear()

    def _ensure_pump(self) -> asyncio.Event:
        loop = asyncio.get_running_loop()
        if self._pump is None or self._pump.done() or self._pump.get_loop() is not loop \
                or self._wake is None:
            self._wake = asyncio.Event()
            self._pump = loop.create_task(self._serve(self._wake))
        return self._wake

    def _on_error(self, error: Any) -> None:
        from confluent_kafka import KafkaError

        if error.code() == KafkaError._ALL_BROKERS_DOWN:
            if self.up:
                log.warning("gateway: all Kafka brokers are down; spooling")
            self.up = False

    async def send(self, topic: str, key: bytes | None, value: bytes,
                   headers: Sequence[tuple[str, bytes]]) -> None:
        """Produce one message and wait for its delivery report."""
        wake = self._ensure_pump()
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def delivered(err: Any, _msg: Any) -> None:  # inside poll(), in the loop's thread
            if future.done():
                return
            if err is None:
                future.set_result(None)
            else:
                future.set_exception(DeliveryFailed(str(err)))

        try:
            self._producer.produce(topic, value, key, headers=list(headers),
                                   on_delivery=delivered)
        except (BufferError, Exception) as exc:  # queue full, message too large, ...
            self.up = False
            raise DeliveryFailed(f"cannot queue for {topic}: {exc}") from exc
        self._pending += 1
        wake.set()
        try:
            await future
        except DeliveryFailed:
            self.up = False
            raise
        finally:
            self._pending -= 1
        self.up = True

    def list_partitions(self, topic: str, timeout: float) -> list[int]:
        metadata = self._producer.list_topics(topic, timeout=timeout)
        found = metadata.topics.get(topic)
        if found is None or found.error is not None:
            raise DeliveryFailed(f"topic {topic} unavailable: "
                                 f"{None if found is None else found.error}")
        return sorted(found.partitions)

    async def probe(self, timeout: float = 2.0) -> bool:
        """Whether the cluster answers a metadata request within ``timeout`` seconds."""
        loop = asyncio.get_running_loop()

        def ask() -> bool:
            try:
                metadata = self._producer.list_topics(timeout=timeout)
                return bool(metadata.brokers)
            except Exception:
                return False

        up = await loop.run_in_executor(self._probe_executor, ask)
        if up and not self.up:
            log.info("gateway: Kafka at %s answers", self.bootstrap)
        self.up = up
        return up

    def close(self, timeout: float = 5.0) -> int:
        """Flush what is queued (up to ``timeout`` s); return the number of messages left
        undelivered. Call it from the event loop's thread (it stops the delivery pump)."""
        if self._pump is not None and not self._pump.done():
            self._pump.cancel()
        left = int(self._producer.flush(timeout))
        self._probe_executor.shutdown(wait=False)
        return left


def read_request_ids(bootstrap: str, start: dict[str, dict[str, int]], *,
                     timeout: float = 30.0) -> set[str]:
    """The request ids on the given partitions from ``start`` offsets (topic -> partition ->
    offset) to their current end."""
    from confluent_kafka import Consumer, KafkaError, TopicPartition

    consumer: Any = Consumer({
        "bootstrap.servers": bootstrap, "group.id": f"carrierwatch-gateway-{uuid.uuid4().hex}",
        "enable.auto.commit": False, "enable.partition.eof": True,
        "auto.offset.reset": "earliest", "logger": _quiet_logger()})
    found: set[str] = set()
    try:
        assignment = []
        ends: dict[tuple[str, int], int] = {}
        for topic, partitions in start.items():
            for partition, offset in partitions.items():
                _low, high = consumer.get_watermark_offsets(
                    TopicPartition(topic, int(partition)), timeout=timeout, cached=False)
                if high > offset:
                    ends[(topic, int(partition))] = high
                    assignment.append(TopicPartition(topic, int(partition), offset))
        if not assignment:
            return found
        consumer.assign(assignment)
        deadline = time.monotonic() + timeout
        while ends:
            if time.monotonic() > deadline:
                raise DeliveryFailed(f"recovery scan did not reach the end of {sorted(ends)}")
            for message in consumer.consume(500, timeout=0.5):
                key = (message.topic(), message.partition())
                if message.error() is not None:
                    if message.error().code() == KafkaError._PARTITION_EOF:
                        ends.pop(key, None)
                    continue
                for name, value in message.headers() or ():
                    if name == REQUEST_ID_HEADER and value:
                        found.add(value.decode("ascii", errors="replace"))
                if key in ends and message.offset() + 1 >= ends[key]:
                    ends.pop(key)
        return found
    finally:
        consumer.close()


class Drainer:
    """Moves the spool into Kafka (see the module docstring). Methods run in the event loop;
    the blocking parts (disk, watermarks, the recovery scan) in an executor."""

    def __init__(self, spool: Spool, producer: RawProducer, *, batch: int = 500,
                 executor: Executor | None = None) -> None:
        self.spool = spool
        self.producer = producer
        self.batch = batch
        self._executor = executor
        self.drained = 0
        self.recovered = 0

    async def _run(self, function: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    def _watermarks(self, topics: Iterable[str]) -> dict[str, dict[str, int]]:
        from confluent_kafka import Consumer, TopicPartition

        consumer: Any = Consumer({"bootstrap.servers": self.producer.bootstrap,
                                  "group.id": "carrierwatch-gateway-watermarks",
                                  "logger": _quiet_logger()})
        try:
            timeout = max(2.0, self.producer.delivery_timeout)
            out: dict[str, dict[str, int]] = {}
            for topic in topics:
                out[topic] = {}
                for partition in self.producer.list_partitions(topic, timeout):
                    out[topic][str(partition)] = _high_watermark(
                        consumer, TopicPartition(topic, partition), timeout)
            return out
        finally:
            consumer.close()

    async def drain_all(self, who: str) -> int:
        """Drain batch after batch until the spool is empty or Kafka refuses (then the producer
        is marked down and the rest waits for the next call); return how many entries left.
        ``who`` names the caller in the log (``drops``, ``poll``)."""
        moved = 0
        while self.spool.depth:
            try:
                step = await self.drain_once()
            except DeliveryFailed as exc:
                log.warning("%s: spool drain paused: %s", who, exc)
                self.producer.up = False
                break
            if not step:
                break
            moved += step
        return moved

    async def persist(self, entry: SpoolEntry, who: str) -> str:
        """Hand one entry over: straight to Kafka while it is up and nothing waits in the
        spool (arrival order), else (or when Kafka does not acknowledge) into the spool.
        Returns where it went: ``"kafka"`` or ``"spool"``."""
        if self.producer.up and not self.spool.depth:
            try:
                await self.producer.send(entry.topic, entry.request_id.encode(), entry.body,
                                         entry_headers(entry))
                return "kafka"
            except DeliveryFailed as exc:
                log.warning("%s: Kafka did not acknowledge %s (%s); spooling", who,
                            entry.request_id, exc)
        await self._run(self.spool.append, [entry])
        return "spool"

    async def drain_once(self) -> int:
        """Drain one batch; return how many entries left the spool (0: it was empty).

        Raises
        ------
        DeliveryFailed
            Kafka did not take the whole batch (the intent stays: the next call recovers).
        """
        entries: list[SpoolEntry] = await self._run(self.spool.head, self.batch)
        if not entries:
            return 0
        intent = self.spool.read_intent()
        delivered: set[str] = set()
        if intent is not None:
            delivered.update(intent.get("delivered", ()))
            try:
                found = await self._run(read_request_ids, self.producer.bootstrap,
                                        intent["offsets"])
            except Exception as exc:
                raise DeliveryFailed(f"recovery scan failed: {exc}") from exc
            ids = {entry.request_id for entry in entries}
            recovered = (found & ids) - delivered
            if recovered:
                log.warning("gateway: %d spooled requests were already in Kafka before a "
                            "crash; not producing them again", len(recovered))
                self.recovered += len(recovered)
            delivered |= found & ids
        topics = sorted({entry.topic for entry in entries})
        try:
            offsets = await self._run(self._watermarks, topics)
        except Exception as exc:
            raise DeliveryFailed(f"cannot read the watermarks of {topics}: {exc}") from exc
        await self._run(self.spool.write_intent, {
            "first": entries[0].seq, "last": entries[-1].seq, "offsets": offsets,
            "delivered": sorted(delivered & {entry.request_id for entry in entries})})
        sends = [self.producer.send(entry.topic, entry.request_id.encode(), entry.body,
                                    entry_headers(entry))
                 for entry in entries if entry.request_id not in delivered]
        results = await asyncio.gather(*sends, return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            raise DeliveryFailed(f"{len(failures)} of {len(sends)} spooled requests not "
                                 f"delivered: {failures[0]}")
        await self._run(self.spool.commit, entries[-1].seq)
        await self._run(self.spool.clear_intent)
        self.drained += len(entries)
        return len(entries)


def _transient(exc: BaseException) -> bool:
    """A Kafka error that passes by itself: a partition whose leader is moving or not yet
    elected (a topic created a moment ago), a broker that answered before its metadata."""
    from confluent_kafka import KafkaError, KafkaException

    if not isinstance(exc, KafkaException) or not exc.args:
        return False
    error = exc.args[0]
    return bool(error.retriable()) or error.code() in (
        KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.UNKNOWN_TOPIC_OR_PART)


def _high_watermark(consumer: Any, partition: Any, timeout: float) -> int:
    """The partition's high watermark, retried (tenacity, up to ~5 s) while the error is
    transient: a fresh topic's partition answers NOT_LEADER_FOR_PARTITION for a moment."""
    from tenacity import (
        retry,
        retry_if_exception,
        stop_after_delay,
        wait_exponential,
    )

    @retry(retry=retry_if_exception(_transient), stop=stop_after_delay(5.0),
           wait=wait_exponential(multiplier=0.05, max=1.0), reraise=True)
    def read() -> int:
        _low, high = consumer.get_watermark_offsets(partition, timeout=timeout, cached=False)
        return int(high)

    return read()
