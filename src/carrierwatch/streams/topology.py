"""The stream topology: configuration, topic names and their declaration.

Every topic of one deployment carries an optional *namespace* prefix, so several pipelines (a test
per test, staging next to production) share one Kafka cluster without seeing each other:

========================  ===================================================================
topic                     content
========================  ===================================================================
``raw.<partner>``         raw payload bytes + headers, one topic per registered partner
``events.canonical``      canonical events, Confluent wire-format Avro, keyed by package id
``dlq.<partner>``         dead letters: JSON with the reason and the original bytes (base64)
``cw.sink``               :class:`~carrierwatch.sink.SinkBatch`: typed rows for the store
``cw.checkpoints``        compacted: per canonical partition a full checkpoint of its core
                          pipeline, the deltas since, and the journal of the calls made since
``cw.metrics``            reserved: metric window rows for downstream consumers
``cw.anomalies``          reserved: anomaly records
``cw.alerts``             reserved: alert records
========================  ===================================================================

Auto topic creation is off on production clusters (and on the development broker), so the worker
declares its topics itself (:func:`ensure_topics`), with their partition counts and configs.

Examples
--------
>>> topology = Topology(StreamConfig(namespace="t1"), ["fedex", "ups"])
>>> topology.raw("fedex"), topology.events, topology.dlq("ups")
('t1.raw.fedex', 't1.events.canonical', 't1.dlq.ups')
>>> topology.partner_of_raw("t1.raw.ups")
'ups'
>>> topology.app_id, topology.track_group, topology.sink_group
('carrierwatch-t1', 'carrierwatch-t1-track', 'carrierwatch-t1-sink')
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from carrierwatch.core.errors import BrokerUnavailableError, ConfigurationError

__all__ = [
    "MAX_STATE_MESSAGE_BYTES",
    "STAGES",
    "StreamConfig",
    "TopicSpec",
    "Topology",
    "ensure_topics",
    "parse_stages",
    "require_broker",
]

#: Checkpoints and sink batches can be large (the state of every package in flight).
MAX_STATE_MESSAGE_BYTES = 64 * 1024 * 1024

#: The stages a worker process can run, in pipeline order.
STAGES = ("normalize", "track")


def parse_stages(text: str) -> tuple[str, ...]:
    """The stages named in ``text`` (comma-separated), in pipeline order.

    >>> parse_stages("track, normalize"), parse_stages("track")
    (('normalize', 'track'), ('track',))

    Raises
    ------
    ValueError
        If ``text`` names no stage or an unknown one.
    """
    names = {name.strip() for name in text.split(",") if name.strip()}
    unknown = sorted(names - set(STAGES))
    if unknown or not names:
        raise ValueError(f"stages must be a comma-separated subset of {','.join(STAGES)} "
                         f"(not empty), got {text!r}")
    return tuple(stage for stage in STAGES if stage in names)


class StreamConfig(BaseSettings):
    """Settings of the stream driver (``CARRIERWATCH_STREAM_*`` environment variables).

    The broker address, the schema registry and the store come from
    :class:`carrierwatch.settings.Settings` (``CARRIERWATCH_KAFKA_BOOTSTRAP``, ...).
    """

    model_config = SettingsConfigDict(env_prefix="CARRIERWATCH_STREAM_", extra="ignore")

    namespace: str = Field("", description="Prefix of every topic and consumer group.")
    stages: str = Field(
        ",".join(STAGES), description="The stages a worker process runs: normalize,track "
                                      "(both, one process), normalize or track (the stages in "
                                      "separate processes, each on its own core).")
    raw_partitions: int = Field(1, ge=1, description="Partitions of each raw.<partner> topic.")
    events_partitions: int = Field(3, ge=1, description="Partitions of events.canonical.")
    sink_partitions: int = Field(3, ge=1, description="Partitions of cw.sink.")
    dlq_partitions: int = Field(1, ge=1)
    normalize_batch: int = Field(500, ge=1, description="Raw payloads per normalize batch.")
    track_batch: int = Field(20_000, ge=1, description="Canonical events per track batch.")
    batch_within: float = Field(0.1, gt=0, description="Seconds to wait to fill a raw batch.")
    track_within: float = Field(
        0.2, gt=0, description="Seconds to wait to fill a canonical batch (one pipeline call "
                               "per partition and batch).")
    checkpoint_interval: float = Field(
        5.0, ge=0, description="Seconds between two checkpoints of a partition's pipeline (the "
                               "calls in between are journaled and repeated after a crash; the "
                               "committed offset of events.canonical follows the checkpoints); "
                               "0: every changed partition after every batch.")
    checkpoint_compact_ratio: float = Field(
        2.0, ge=0, description="Checkpoints are incremental: a delta of what changed since the "
                               "previous one, until the deltas written after the last full "
                               "checkpoint would exceed this multiple of its size; then a full "
                               "one (restoring reads at most 1 + ratio times the state). "
                               "0: every checkpoint is full.")
    store: str = Field("memory://", description="Faust table store (memory:// or rocksdb://).")
    commit_interval: float = Field(1.0, gt=0, description="Seconds between offset commits.")
    session_timeout: float = Field(
        10.0, ge=6, description="Seconds before the group gives a crashed worker's partitions "
                                "to the others (broker_session_timeout).")
    allowed_lateness_ms: int = Field(2 * 86_400_000, ge=0)
    sink_max_rows: int = Field(200_000, ge=1, description="Rows buffered before a write.")
    sink_max_delay: float = Field(0.3, gt=0, description="Seconds a row waits for its write.")
    sink_backoff_initial: float = Field(0.2, gt=0)
    sink_backoff_max: float = Field(5.0, gt=0)
    metrics_port: int | None = Field(
        None, ge=1, le=65535, description="Serve this process's Prometheus metrics on "
                                          "METRICS_ADDR:PORT/metrics (worker and sink; off when "
                                          "unset).")
    metrics_addr: str = Field("127.0.0.1", description="Address the metrics server binds.")
    lag_interval: float = Field(5.0, gt=0, description="Seconds between two readings of the "
                                                       "consumer groups' lag and Kafka's state.")
    sink_fault_file: Path | None = Field(
        None, description="TEST ONLY: while this file exists every store write of the sink "
                          "fails with a StorageError (fault injection for the outage tests).")

    @field_validator("stages")
    @classmethod
    def _known_stages(cls, value: str) -> str:
        return ",".join(parse_stages(value))

    @property
    def stage_names(self) -> tuple[str, ...]:
        """:attr:`stages` as a tuple, in pipeline order."""
        return parse_stages(self.stages)

    @property
    def prefix(self) -> str:
        return f"{self.namespace}." if self.namespace else ""


@dataclass(frozen=True)
class TopicSpec:
    """A topic to declare."""

    name: str
    partitions: int
    config: Mapping[str, str]


class Topology:
    """Topic and group names of one deployment (see the module docstring)."""

    def __init__(self, config: StreamConfig, partners: Iterable[str]) -> None:
        self.config = config
        self.partners = sorted(partners)
        prefix = config.prefix
        self.events = f"{prefix}events.canonical"
        self.sink = f"{prefix}cw.sink"
        self.checkpoints = f"{prefix}cw.checkpoints"
        self.metrics = f"{prefix}cw.metrics"
        self.anomalies = f"{prefix}cw.anomalies"
        self.alerts = f"{prefix}cw.alerts"
        self._raw = {partner: f"{prefix}raw.{partner}" for partner in self.partners}
        self._partner_of = {topic: partner for partner, topic in self._raw.items()}

    @property
    def app_id(self) -> str:
        """The Faust app id, which is also the worker's consumer group."""
        return f"carrierwatch-{self.config.namespace}" if self.config.namespace \
            else "carrierwatch"

    @property
    def track_group(self) -> str:
        """The consumer group of the track stage's librdkafka consumer (``events.canonical``)."""
        return f"{self.app_id}-track"

    @property
    def sink_group(self) -> str:
        return f"{self.app_id}-sink"

    def raw(self, partner: str) -> str:
        return self._raw[partner]

    def dlq(self, partner: str) -> str:
        return f"{self.config.prefix}dlq.{partner}"

    @property
    def raw_topics(self) -> list[str]:
        return [self._raw[p] for p in self.partners]

    def partner_of_raw(self, topic: str) -> str:
        """The partner whose raw topic this is."""
        return self._partner_of[topic]

    def specs(self) -> list[TopicSpec]:
        """Every topic of the deployment with its partitions and configuration."""
        config = self.config
        big = {"max.message.bytes": str(MAX_STATE_MESSAGE_BYTES)}
        specs = [TopicSpec(self._raw[p], config.raw_partitions, {}) for p in self.partners]
        specs += [TopicSpec(self.dlq(p), config.dlq_partitions, {}) for p in self.partners]
        specs += [
            TopicSpec(self.events, config.events_partitions, {}),
            TopicSpec(self.sink, config.sink_partitions, big),
            TopicSpec(self.checkpoints, 1, {**big, "cleanup.policy": "compact",
                                            "min.cleanable.dirty.ratio": "0.1",
                                            "segment.bytes": str(256 * 1024 * 1024)}),
            TopicSpec(self.metrics, config.events_partitions, {}),
            TopicSpec(self.anomalies, 1, {}),
            TopicSpec(self.alerts, 1, {}),
            TopicSpec(f"{config.prefix}escalations", 3, {}),  # carrierwatch.decisions.stream
        ]
        return specs


def require_broker(bootstrap: str, timeout: float = 3.0) -> None:
    """Fail fast with :class:`BrokerUnavailableError` when no address of ``bootstrap`` accepts
    a TCP connection within ``timeout`` seconds.

    librdkafka retries a refused connection until its own timeout (30 s in :func:`ensure_topics`)
    and then reports only "Broker transport failure"; this check answers at once and names the
    address. An entry that cannot be parsed as ``host:port`` counts as reachable (librdkafka
    judges it).
    """
    reasons = []
    for entry in bootstrap.split(","):
        address = entry.strip().rpartition("://")[2]
        host, colon, port = address.rpartition(":")
        if not colon or "]" in port:  # no port: librdkafka's default
            host, port = address, "9092"
        host = host.strip("[]")
        if not host or not port.isdigit():
            return
        try:
            with socket.create_connection((host, int(port)), timeout=timeout):
                return
        except OSError as exc:
            reasons.append(f"{address}: {exc.strerror or exc or type(exc).__name__}")
    raise BrokerUnavailableError(bootstrap, "; ".join(reasons) or "no address")


def ensure_topics(bootstrap: str, specs: Iterable[TopicSpec], *, timeout: float = 30.0) -> list[str]:
    """Create the topics that do not exist yet; return the names created.

    An existing topic is left as it is (its partition count is checked: fewer partitions than
    declared is a :class:`~carrierwatch.core.errors.ConfigurationError`, since keyed state would
    move). Waits until every partition has a leader.
    """
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient
    from confluent_kafka.cimpl import NewTopic

    require_broker(bootstrap)
    admin: Any = AdminClient({"bootstrap.servers": bootstrap})
    wanted = list(specs)
    try:  # something listens (require_broker): give a restarting broker the whole timeout
        existing = admin.list_topics(timeout=timeout).topics
    except KafkaException as exc:
        raise BrokerUnavailableError(bootstrap, f"no metadata in {timeout:.0f} s: "
                                     f"{exc.args[0].str()}") from exc
    created: list[str] = []
    new = [NewTopic(s.name, num_partitions=s.partitions, replication_factor=1,
                    config=dict(s.config)) for s in wanted if s.name not in existing]
    if new:
        for name, future in admin.create_topics(new, operation_timeout=timeout).items():
            try:
                future.result(timeout=timeout)
                created.append(name)
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise ConfigurationError(f"cannot create topic {name!r}: {exc}") from exc
    deadline = time.monotonic() + timeout
    while True:
        topics = admin.list_topics(timeout=timeout).topics
        missing = []
        for spec in wanted:
            found = topics.get(spec.name)
            if found is None or found.error is not None \
                    or any(p.leader < 0 for p in found.partitions.values()):
                missing.append(spec.name)
            elif len(found.partitions) < spec.partitions:
                raise ConfigurationError(
                    f"topic {spec.name!r} has {len(found.partitions)} partitions, "
                    f"{spec.partitions} are configured")
        if not missing:
            return created
        if time.monotonic() > deadline:
            raise ConfigurationError(f"topics without a leader after {timeout:.0f} s: {missing}")
        time.sleep(0.1)
