"""The store writer (``carrierwatch sink``): ``cw.sink`` → ClickHouse, committed after the write.

chDB serves one process per data path, so exactly one process owns the embedded store: this
one. It consumes :class:`~carrierwatch.sink.SinkBatch` messages (consumer group
:attr:`Topology.sink_group`), merges them until ``sink_max_rows`` rows or ``sink_max_delay``
seconds, writes them with :func:`~carrierwatch.sink.write_batch` (idempotent) and commits the
consumed offsets only after the write returned. A :class:`~carrierwatch.core.errors.StorageError`
is retried with exponential backoff (``sink_backoff_initial`` doubling up to
``sink_backoff_max``); while the store is down the partitions are paused once the buffer is full,
nothing is committed, and the retries and buffered rows are visible as Prometheus metrics. With a
ClickHouse server (``CARRIERWATCH_CLICKHOUSE_URL``) any number of sink processes may share the
group.

SIGTERM/SIGINT: stop consuming, write what is buffered (retrying until ``stop_timeout``), commit,
close the store and exit 0 — after that the store can be opened by another process.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from carrierwatch.core.errors import StorageError
from carrierwatch.core.partner import PartnerSpec
from carrierwatch.outputs.metrics import ProcessMetrics
from carrierwatch.settings import Settings
from carrierwatch.sink import SinkBatch, write_batch
from carrierwatch.storage.base import Store
from carrierwatch.streams.heartbeats import SinkHeartbeats
from carrierwatch.streams.records import decode_sink_batch
from carrierwatch.streams.topology import MAX_STATE_MESSAGE_BYTES, StreamConfig, Topology

__all__ = ["FRESHNESS_BUCKETS", "SinkMetrics", "SinkWriter", "run_sink"]

#: Histogram buckets (seconds) of the end-to-end freshness metric.
FRESHNESS_BUCKETS = (0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0,
                     30.0, 60.0, 300.0, 3600.0)

log = logging.getLogger(__name__)


@dataclass
class SinkMetrics:
    """The sink's Prometheus metrics, in a registry of their own."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.batches = Counter("carrierwatch_sink_messages", "cw.sink messages consumed",
                               registry=r)
        self.rows_written = Counter("carrierwatch_sink_rows_written", "Rows written to the store",
                                    registry=r)
        self.writes = Counter("carrierwatch_sink_writes", "Successful store writes", registry=r)
        self.retries = Counter("carrierwatch_sink_write_retries",
                               "Store writes that failed and will be retried", registry=r)
        self.buffered_rows = Gauge("carrierwatch_sink_backlog_rows",
                                   "Rows consumed but not yet written", registry=r)
        self.backoff = Gauge("carrierwatch_sink_backoff_seconds",
                             "Current wait before the next write attempt", registry=r)
        self.freshness = Histogram(
            "carrierwatch_sink_event_freshness_seconds",
            "Canonical events: receive (ingest) time to written in the store",
            buckets=FRESHNESS_BUCKETS, registry=r)
        self.last_write = Gauge("carrierwatch_sink_last_write_timestamp_seconds",
                                "Unix time of the last successful write", registry=r)
        common = ProcessMetrics(r)  # carrierwatch_kafka_up, carrierwatch_consumer_lag_messages
        self.kafka_up, self.consumer_lag = common.kafka_up, common.consumer_lag


class SinkMonitor:
    """The online anomaly monitor in the stream driver: the sink is the one process that sees the
    5-minute windows of every shard, so the monitor runs here (one instance, as in replay).

    Each batch is observed as it arrives (one partition's pipeline call; a partner's windows are
    scored once the slowest of its shards has moved past them, so that a window is not scored on
    one shard's rows while the others' are still on their way); the anomaly and alert rows it
    yields join the same
    idempotent store write. The monitor's state is saved (atomically) after every successful
    write and restored at start: a batch observed again after a crash only adds late rows for
    windows scored already, which do not change a verdict. ``partners`` (the registry's specs)
    give each partner's time zone and whether we poll it (see
    :func:`~carrierwatch.anomaly.monitor.monitor_options_for`).
    """

    def __init__(self, state_path: Path, registry: CollectorRegistry | None = None,
                 partners: Iterable[PartnerSpec] = (), shards: int = 1) -> None:
        from carrierwatch.anomaly.monitor import AnomalyMonitor, monitor_options_for
        from carrierwatch.outputs.prometheus import AnomalyExporter

        self.state_path = state_path
        options = monitor_options_for(partners)
        if state_path.exists():
            self.monitor = AnomalyMonitor.from_bytes(state_path.read_bytes())
            # partners added since the state was saved; known ones keep their learned zone
            self.monitor.add_time_zones(options["time_zones"], options["polled_partners"])
        else:
            self.monitor = AnomalyMonitor(**options)
        self.monitor.shards = max(1, shards)  # the partitions of events.canonical
        self.exporter = AnomalyExporter(registry)

    def observe(self, batch: SinkBatch) -> None:
        from carrierwatch.core.timeutil import to_ms
        from carrierwatch.core.windows import MetricWindowRow

        windows = [row for row in batch.windows if row.granularity == "5m"]
        for row in batch.rows.get("metric_windows", ()):  # dict rows of earlier workers
            if row.get("granularity") != "5m":
                continue
            values = dict(row)
            start = values["window_start"]
            values["window_start"] = start if isinstance(start, int) else to_ms(start)
            windows.append(MetricWindowRow(**values))
        if not windows and not batch.dead_letters and not batch.events:
            return
        # a track batch holds one partition's output: its arrivals count for that shard's
        # received clock (the monitor waits for the slowest shard, see shard_lag_ms)
        shard = next((row.shard for row in windows),
                     next((row.shard for row in batch.outcomes), 0))
        verdicts = self.monitor.observe(windows, batch.dead_letters, arrivals=batch.events,
                                        shard=shard)
        batch.add_rows("anomalies", verdicts.anomalies)
        batch.add_rows("alerts", verdicts.alerts)
        self.exporter.update(verdicts)

    def save(self) -> None:
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.state_path.with_suffix(".partial")
        partial.write_bytes(self.monitor.to_bytes())
        partial.replace(self.state_path)


class SinkWriter:
    """Buffer SinkBatches and write them with retry + exponential backoff (no Kafka here).

    ``fault`` is a test hook: when it returns True a write fails as if the store were down.
    """

    def __init__(self, store: Store, config: StreamConfig, metrics: SinkMetrics,
                 fault: Callable[[], bool] | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 monitor: SinkMonitor | None = None,
                 heartbeats: SinkHeartbeats | None = None) -> None:
        self.store = store
        self.monitor = monitor
        self.heartbeats = heartbeats
        self.config = config
        self.metrics = metrics
        self.fault = fault
        self.clock = clock
        self.buffer = SinkBatch()
        self.first_buffered: float | None = None
        self.backoff = 0.0
        self.next_attempt = 0.0

    def add(self, batch: SinkBatch) -> None:
        if self.monitor is not None:
            self.monitor.observe(batch)
        if self.heartbeats is not None:
            self.heartbeats.observe(batch)
        if self.first_buffered is None:
            self.first_buffered = self.clock()
        self.buffer.extend(batch)
        self.metrics.buffered_rows.set(len(self.buffer))

    @property
    def full(self) -> bool:
        return len(self.buffer) >= self.config.sink_max_rows

    def tick_heartbeats(self) -> None:
        """Buffer the heartbeat monitor's verdicts (deadlines pass while nothing arrives)."""
        if self.heartbeats is None:
            return
        rows = self.heartbeats.tick()
        if rows:
            self.buffer.add_rows("heartbeats", rows)
            if self.first_buffered is None:
                self.first_buffered = self.clock()
            self.metrics.buffered_rows.set(len(self.buffer))

    def due(self) -> bool:
        """Whether the buffer should be written now (full or old enough, backoff over)."""
        if not len(self.buffer) or self.clock() < self.next_attempt:
            return False
        assert self.first_buffered is not None
        return self.full or self.clock() - self.first_buffered >= self.config.sink_max_delay

    def try_write(self) -> bool:
        """One write attempt of the whole buffer; True when it is written (or empty)."""
        if not len(self.buffer):
            return True
        # rows superseded within the buffer (same key, lower version) change no query result
        self.buffer.compact()
        try:
            if self.fault is not None and self.fault():
                raise StorageError("injected store fault (sink_fault_file exists)",
                                   retry_after=1.0)
            written = write_batch(self.store, self.buffer)
        except StorageError as exc:
            config = self.config
            self.backoff = min(config.sink_backoff_max,
                               self.backoff * 2 if self.backoff else config.sink_backoff_initial)
            self.next_attempt = self.clock() + self.backoff
            self.metrics.retries.inc()
            self.metrics.backoff.set(self.backoff)
            log.warning("store write of %d rows failed (%s); retry in %.2f s",
                        len(self.buffer), exc, self.backoff)
            return False
        done = time.time()
        observe = self.metrics.freshness.observe
        for event in self.buffer.events:
            observe(done - event.received_time / 1000)
        if self.monitor is not None:
            self.monitor.save()
        if self.heartbeats is not None:
            self.heartbeats.stored(self.buffer, done)
        self.metrics.rows_written.inc(written)
        self.metrics.writes.inc()
        self.metrics.last_write.set(time.time())
        self.metrics.backoff.set(0)
        self.backoff = 0.0
        self.next_attempt = 0.0
        self.buffer = SinkBatch()
        self.first_buffered = None
        self.metrics.buffered_rows.set(0)
        return True


def run_sink(settings: Settings, config: StreamConfig, topology: Topology, store: Store, *,
             metrics: SinkMetrics | None = None, stop: threading.Event | None = None,
             stop_timeout: float = 60.0, install_signals: bool = True,
             monitor: SinkMonitor | None = None,
             heartbeats: SinkHeartbeats | None = None) -> None:
    """Consume ``cw.sink`` into ``store`` until ``stop`` is set (or SIGTERM/SIGINT)."""
    from confluent_kafka import Consumer, KafkaError

    metrics = metrics or SinkMetrics()
    stopping = stop or threading.Event()
    if install_signals:
        def on_signal(signum: int, frame: FrameType | None) -> None:
            log.info("sink: signal %d, stopping after the last write", signum)
            stopping.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
    fault_file = config.sink_fault_file
    writer = SinkWriter(store, config, metrics,
                        fault=(lambda: fault_file.exists()) if fault_file is not None else None,
                        monitor=monitor, heartbeats=heartbeats)
    consumer: Any = Consumer({
        "bootstrap.servers": settings.kafka_bootstrap,
        "group.id": topology.sink_group,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "max.partition.fetch.bytes": MAX_STATE_MESSAGE_BYTES,
        "fetch.max.bytes": MAX_STATE_MESSAGE_BYTES * 2,
        "receive.message.max.bytes": MAX_STATE_MESSAGE_BYTES * 2 + 1_000_000,
        "max.poll.interval.ms": 600_000,
        "logger": logging.getLogger("carrierwatch.streams.rdkafka"),
    })
    paused = False

    def on_revoke(consumer_: Any, partitions: list[Any]) -> None:
        # Write what was consumed from the partitions we are losing; if the store is down, drop
        # the buffer uncommitted: the next owner consumes it again.
        if writer.try_write():
            _commit(consumer_)
        else:
            writer.buffer = SinkBatch()
            writer.first_buffered = None
            metrics.buffered_rows.set(0)

    consumer.subscribe([topology.sink], on_revoke=on_revoke)
    log.info("sink: consuming %s into %r", topology.sink, store)
    try:
        while not stopping.is_set():
            if writer.full and not paused:
                consumer.pause(consumer.assignment())
                paused = True
            messages = consumer.consume(num_messages=1000, timeout=0.1)
            for message in messages:
                error = message.error()
                if error is not None:
                    if error.code() != KafkaError._PARTITION_EOF:
                        log.warning("sink: consumer error: %s", error)
                    continue
                writer.add(decode_sink_batch(message.value()))
                metrics.batches.inc()
            writer.tick_heartbeats()
            if writer.due() and writer.try_write():
                _commit(consumer)
                if paused:
                    consumer.resume(consumer.assignment())
                    paused = False
        # final write: retry until it succeeds or the stop timeout passes
        deadline = time.monotonic() + stop_timeout
        while not writer.try_write():
            if time.monotonic() > deadline:
                log.error("sink: store still failing at shutdown; %d rows left uncommitted",
                          len(writer.buffer))
                break
            time.sleep(max(0.0, writer.next_attempt - time.monotonic()))
        else:
            _commit(consumer)
    finally:
        consumer.close()


def _commit(consumer: Any) -> None:
    """Commit the consumed positions synchronously.

    A failed commit (broker restarting) is only logged: the rows are written, the next commit
    covers them, and if none comes they are consumed and written again (idempotent).
    """
    from confluent_kafka import KafkaError, KafkaException

    try:
        consumer.commit(asynchronous=False)
    except KafkaException as exc:
        if exc.args[0].code() != KafkaError._NO_OFFSET:
            log.warning("sink: commit failed (%s); will be retried with the next one", exc)
