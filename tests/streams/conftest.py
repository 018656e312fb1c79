"""Fixtures for stream tests: unique topics and the stream driver harness.

``kafka_broker`` (in tests/conftest.py, shared with the ingest tests) starts
:class:`carrierwatch.streams.broker.KafkaBroker` once per session on
free loopback ports in a temporary data dir (fetching the jars with Maven on first use) and stops
it at the end. Tests may ``kafka_broker.restart()`` it (ports and data are kept), but must leave
it running. Without Java 17+ or Maven the dependent tests skip, or fail under
``CARRIERWATCH_REQUIRE_ALL=1``.
"""

from __future__ import annotations

import re
import uuid
import warnings
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient

from carrierwatch.streams.broker import (
    KafkaBroker,
    create_topic,
)

TopicFactory = Callable[..., str]


@pytest.fixture
def topic_factory(kafka_broker: KafkaBroker,
                  request: pytest.FixtureRequest) -> Iterator[TopicFactory]:
    """Create uniquely named topics on the session broker; they are deleted after the test.

    ``topic_factory(partitions=1, *, prefix=None, config=None) -> name``; names look like
    ``<prefix or test name>-<8 hex>``.
    """
    created: list[str] = []
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", request.node.name)[:60]

    def make(partitions: int = 1, *, prefix: str | None = None,
             config: Mapping[str, str] | None = None) -> str:
        name = f"{prefix or base}-{uuid.uuid4().hex[:8]}"
        create_topic(kafka_broker.bootstrap, name, partitions, config=config)
        created.append(name)
        return name

    yield make

    if created and kafka_broker.pid is not None:
        admin: Any = AdminClient({"bootstrap.servers": kafka_broker.bootstrap})
        for name, future in admin.delete_topics(created, operation_timeout=10).items():
            try:
                future.result(timeout=15)
            except Exception as exc:  # cleanup only: the test's own outcome stands
                warnings.warn(f"could not delete test topic {name}: {exc}", stacklevel=1)


# --- stream driver fixtures (workers and the sink as real processes) -------------------------


@pytest.fixture
def stream_harness(kafka_broker: KafkaBroker, schema_registry_url: str,
                   tmp_path: Any) -> Iterator[Any]:
    """A :class:`streamkit.StreamHarness` with a unique namespace; every process it
    started is stopped (SIGTERM, by PID) after the test."""
    from streamkit import StreamHarness

    harness = StreamHarness(kafka_broker.bootstrap, schema_registry_url, tmp_path)
    try:
        yield harness
    finally:
        harness.stop_all()
