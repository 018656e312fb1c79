"""Suite-wide fixtures: a temporary data directory, and the one Kafka broker of the session.

Commands and stores that a test opens without a data directory of its own use one temporary
directory for the whole session (``CARRIERWATCH_DATA_DIR``), not the per-user default. The real
Kafka broker and the embedded schema registry are started once per session, on first use, for
the stream and the ingest tests alike.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from carrierwatch.streams.broker import KafkaBroker, ToolMissingError, ensure_jars, ensure_java
from carrierwatch.testing import (
    AlertmanagerServer,
    PrometheusServer,
    missing_component,
    require_binary,
)


@pytest.fixture(scope="session", autouse=True)
def _session_data_dir() -> Iterator[None]:
    if os.environ.get("CARRIERWATCH_DATA_DIR"):
        yield
        return
    with tempfile.TemporaryDirectory(prefix="carrierwatch-tests-") as folder:
        os.environ["CARRIERWATCH_DATA_DIR"] = folder
        from carrierwatch.settings import get_settings

        get_settings.cache_clear()
        try:
            yield
        finally:
            os.environ.pop("CARRIERWATCH_DATA_DIR", None)
            get_settings.cache_clear()


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    """A running single-node Kafka (KRaft) on 127.0.0.1, shared by the whole session."""
    try:
        ensure_java()
        ensure_jars()
    except ToolMissingError as exc:
        missing_component("kafka", str(exc))
    broker = KafkaBroker(tmp_path_factory.mktemp("kafka-session"))
    broker.start(timeout=120.0)
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def schema_registry_url() -> Iterator[str]:
    """An embedded Confluent-compatible schema registry shared by the session's workers."""
    from carrierwatch.registry.server import EmbeddedSchemaRegistry

    with EmbeddedSchemaRegistry(None) as registry:
        yield registry.url


@pytest.fixture
def prometheus_server(tmp_path: Path) -> Iterator[Callable[..., PrometheusServer]]:
    """Factory: ``prometheus_server(targets={"worker": ["127.0.0.1:PORT"]}, rule_files=[...],
    scrape_interval=1.0, evaluation_interval=1.0, alertmanagers=[...])`` starts Debian's
    prometheus on a free loopback port (see :class:`carrierwatch.testing.PrometheusServer`)
    and returns it, started; every server started is stopped (by PID) after the test. Skips (or
    fails under ``CARRIERWATCH_REQUIRE_ALL=1``) when prometheus is not installed."""
    binary = require_binary("prometheus", "prometheus")
    started: list[PrometheusServer] = []

    def start(**kwargs: Any) -> PrometheusServer:
        server = PrometheusServer(tmp_path / f"prometheus-{len(started)}", binary=binary,
                                  **kwargs)
        started.append(server)
        server.start()
        return server

    try:
        yield start
    finally:
        for server in started:
            server.stop()


@pytest.fixture
def alertmanager_server(tmp_path: Path) -> Iterator[Callable[..., AlertmanagerServer]]:
    """Factory: ``alertmanager_server(config)`` (a mapping or the path of an alertmanager.yml)
    starts Debian's prometheus-alertmanager on a free loopback port and returns it; stopped (by
    PID) after the test."""
    binary = require_binary("prometheus-alertmanager", "prometheus-alertmanager")
    started: list[AlertmanagerServer] = []

    def start(config: Any, **kwargs: Any) -> AlertmanagerServer:
        server = AlertmanagerServer(tmp_path / f"alertmanager-{len(started)}", config,
                                    binary=binary, **kwargs)
        started.append(server)
        server.start()
        return server

    try:
        yield start
    finally:
        for server in started:
            server.stop()
