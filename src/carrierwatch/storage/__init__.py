"""ClickHouse storage: one :class:`Store` interface, an embedded (chDB) and a server backend.

>>> from carrierwatch.settings import Settings
>>> from carrierwatch.storage import embedded_path
>>> str(embedded_path(Settings(data_dir="/var/lib/carrierwatch")))
'/var/lib/carrierwatch/clickhouse'

Typical use::

    with open_store(get_settings()) as store:
        store.migrate()
        store.insert_events(events)
        store.query("SELECT status, count() FROM canonical_events FINAL "
                    "WHERE partner_id = {p:String} GROUP BY status", {"p": "ups"})
"""

from __future__ import annotations

from pathlib import Path

from carrierwatch.core.errors import StorageError, StoreBusyError
from carrierwatch.settings import Settings, get_settings
from carrierwatch.storage.base import TABLES, Store
from carrierwatch.storage.clickhouse import EmbeddedStore, ServerStore
from carrierwatch.storage.migrator import (
    AppliedMigration,
    Migration,
    MigrationError,
    load_migrations,
)
from carrierwatch.storage.rows import RawEvent, dead_letter_id, raw_event_id

__all__ = [
    "BUSY_HINT",
    "TABLES",
    "AppliedMigration",
    "EmbeddedStore",
    "Migration",
    "MigrationError",
    "RawEvent",
    "ServerStore",
    "StorageError",
    "Store",
    "StoreBusyError",
    "dead_letter_id",
    "embedded_path",
    "load_migrations",
    "open_store",
    "raw_event_id",
]

#: What a command blocked by the embedded store's owner can do instead.
BUSY_HINT = ("stop it, wait for it to finish (--wait SECONDS), or run this command against a "
             "ClickHouse server with CARRIERWATCH_CLICKHOUSE_URL")


def embedded_path(settings: Settings) -> Path:
    """The chDB data path: ``<data_dir>/clickhouse`` (``CARRIERWATCH_DATA_DIR``)."""
    return Path(settings.data_dir).expanduser() / "clickhouse"


def open_store(settings: Settings | None = None, *, command: str | None = None,
               wait: float = 0.0, migrate: bool = False) -> Store:
    """Open the configured store: the server at ``clickhouse_url`` if set, else embedded chDB.

    Parameters
    ----------
    settings
        Defaults to :func:`carrierwatch.settings.get_settings`.
    command
        How this process describes itself in the embedded store's lock file
        (e.g. ``"carrierwatch worker"``); defaults to its command line.
    wait
        Seconds to wait for another process to release the embedded store (0: fail at once).
    migrate
        Apply pending migrations before returning.

    Raises
    ------
    StoreBusyError
        The embedded data path is owned by another process.
    StorageError
        The store could not be opened or migrated.
    """
    settings = settings or get_settings()
    store: Store
    if settings.clickhouse_url:
        store = ServerStore.open(settings.clickhouse_url)
    else:
        store = EmbeddedStore.open(embedded_path(settings), command=command, wait=wait,
                                   busy_hint=BUSY_HINT)
    if migrate:
        try:
            store.migrate()
        except BaseException:
            store.close()
            raise
    return store
