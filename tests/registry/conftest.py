"""Fixtures for the schema registry tests: a real embedded registry over HTTP, real clients."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient

from carrierwatch.registry.schemas import SchemaVersion, canonical_schema_versions
from carrierwatch.registry.server import EmbeddedSchemaRegistry


@pytest.fixture
def state_file(tmp_path: Path) -> Path:
    return tmp_path / "schema-registry" / "registry.json"


@pytest.fixture
def registry(state_file: Path) -> Iterator[EmbeddedSchemaRegistry]:
    with EmbeddedSchemaRegistry(state_file) as server:
        yield server


@pytest.fixture
def client(registry: EmbeddedSchemaRegistry) -> Iterator[SchemaRegistryClient]:
    # no retries: a failing test should fail at once, not after back-off sleeps
    with SchemaRegistryClient({"url": registry.url, "max.retries": 0}) as sr_client:
        yield sr_client


@pytest.fixture(scope="session")
def committed_versions() -> list[SchemaVersion]:
    versions = canonical_schema_versions()
    assert [v.version for v in versions] == sorted({v.version for v in versions})
    return versions
