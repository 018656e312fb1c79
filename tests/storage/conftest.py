"""Fixtures of the storage suite: one ``store`` fixture over both backends.

``chdb`` runs everywhere (embedded engine on a fresh ``tmp_path``). ``server`` runs when
``CARRIERWATCH_CLICKHOUSE_URL`` points at a ClickHouse server, each test in a database of its own
that is dropped afterwards; without the URL it is skipped (a configuration choice, not a missing
install).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from carrierwatch.storage import EmbeddedStore, ServerStore, Store

SERVER_URL_VARIABLE = "CARRIERWATCH_CLICKHOUSE_URL"


def open_test_store(kind: str, tmp_path: Path) -> Iterator[Store]:
    if kind == "chdb":
        store: Store = EmbeddedStore.open(tmp_path / "clickhouse", command="pytest storage")
        try:
            yield store
        finally:
            store.close()
        return
    url = os.environ.get(SERVER_URL_VARIABLE)
    if not url:
        pytest.skip(f"{SERVER_URL_VARIABLE} is not set: the server backend is not configured")
    database = f"carrierwatch_test_{uuid.uuid4().hex[:12]}"
    admin = ServerStore.open(url)
    try:
        admin.command(f"CREATE DATABASE {database}")
        store = ServerStore.open(url, database=database)
        try:
            yield store
        finally:
            store.close()
            admin.command(f"DROP DATABASE IF EXISTS {database}")
    finally:
        admin.close()


@pytest.fixture(params=["chdb", "server"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A fresh, empty store of each backend."""
    yield from open_test_store(str(request.param), tmp_path)


@pytest.fixture
def migrated_store(store: Store) -> Store:
    """A fresh store with this package's migrations applied."""
    store.migrate()
    return store
