"""The storage contract: one interface over the embedded (chDB) and server ClickHouse backends.

Drivers (replay, the Faust worker), dashboards and scorecards talk to a :class:`Store`; which
backend sits behind it is a deployment choice made by :func:`carrierwatch.storage.open_store`.
Both speak the same ClickHouse SQL, with server-side parameters (``{name:Type}``) on both.

Writes are idempotent: every table has a deterministic key and a ReplacingMergeTree engine, so
inserting the same records twice leaves one row per key once merged. Read with ``FINAL`` (or
``argMax``) where duplicates matter; :meth:`Store.fetch_events` and friends do.

Errors are :class:`~carrierwatch.core.errors.StorageError`; a transient one (server overloaded,
network, too many parts) carries ``retry_after`` seconds, a permanent one (bad SQL) ``None``.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar

from carrierwatch.core.model import CanonicalEvent, DeadLetter
from carrierwatch.storage import migrator, rows
from carrierwatch.storage.migrator import AppliedMigration, Migration
from carrierwatch.storage.rows import RawEvent

if TYPE_CHECKING:
    from carrierwatch.core.pipeline import PackageOutcomeRow
    from carrierwatch.core.windows import MetricWindowRow

__all__ = ["TABLES", "Store", "check_identifier"]

#: The tables created by the migrations of this package (0003 adds package outcomes and metrics).
TABLES = ("raw_events", "canonical_events", "dead_letters", "anomalies", "heartbeats", "alerts")

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")


def check_identifier(name: str) -> str:
    """Return ``name`` if it is a plain (optionally database-qualified) table name.

    >>> check_identifier("canonical_events")
    'canonical_events'
    >>> check_identifier("x; DROP TABLE y")
    Traceback (most recent call last):
    ...
    ValueError: not a table name: 'x; DROP TABLE y'
    """
    if not _IDENTIFIER.match(name):
        raise ValueError(f"not a table name: {name!r}")
    return name


class Store(ABC):
    """A ClickHouse store (embedded chDB or a server); use as a context manager.

    Backends implement :meth:`query`, :meth:`command`, :meth:`insert_columns`, :meth:`close` and
    :meth:`column_types`; everything else (migrations, typed inserts and reads) is built on them.
    """

    #: ``"chdb"`` or ``"server"``.
    backend: ClassVar[str]
    #: Where the data lives, for messages (a path, or a URL without its password).
    location: str

    # -- the backend primitives ----------------------------------------------------------------

    @abstractmethod
    def query(self, sql: str, parameters: Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]:
        """Run a ``SELECT``; return its rows as tuples.

        ``parameters`` fill ClickHouse server-side placeholders, ``{name:Type}``. Values come back
        as Python types: ``DateTime64`` as timezone-aware UTC datetimes, ``String`` as ``str``
        (text that is not UTF-8 comes back hex-encoded: select ``hex(col)`` to read raw bytes).
        """

    @abstractmethod
    def query_with_names(self, sql: str, parameters: Mapping[str, Any] | None = None
                         ) -> tuple[tuple[str, ...], list[tuple[Any, ...]]]:
        """Like :meth:`query`, with the result's column names first."""

    @abstractmethod
    def command(self, sql: str, parameters: Mapping[str, Any] | None = None) -> None:
        """Run a statement that returns no rows (DDL, ``INSERT … SELECT``, ``OPTIMIZE``)."""

    @abstractmethod
    def insert_columns(self, table: str, columns: Mapping[str, Sequence[Any]]) -> int:
        """Insert column-oriented data (one equal-length sequence per column); return the rows.

        The fastest write path: one Arrow batch per call. Omitted columns take their defaults;
        times may be epoch milliseconds or datetimes; ``String`` columns take ``str`` or ``bytes``.
        """

    @abstractmethod
    def column_types(self, table: str) -> dict[str, str]:
        """The ClickHouse type of each column of ``table``, in table order."""

    @abstractmethod
    def close(self) -> None:
        """Release the connection (and, for chDB, the data path). Idempotent."""

    # -- built on the primitives ----------------------------------------------------------------

    def query_dicts(self, sql: str,
                    parameters: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """Run a ``SELECT``; return its rows as dicts keyed by column name."""
        names, result = self.query_with_names(sql, parameters)
        return [dict(zip(names, row, strict=True)) for row in result]

    def insert(self, table: str, rows_: Sequence[Mapping[str, Any]]) -> int:
        """Insert row-oriented data (mappings column -> value) as one batch; return the rows.

        The columns are the union of the rows' keys; a row missing a key gets NULL there.
        """
        if not rows_:
            return 0
        first = list(rows_[0])
        if all(list(row) == first for row in rows_):
            # the common case (rows built by one function): transpose at C speed
            return self.insert_columns(table, dict(zip(
                first, map(list, zip(*[row.values() for row in rows_], strict=True)),
                strict=True)))
        names: dict[str, None] = {}
        for row in rows_:
            names.update(dict.fromkeys(row))
        return self.insert_columns(table, {n: [row.get(n) for row in rows_] for n in names})

    def insert_events(self, events: Sequence[CanonicalEvent]) -> int:
        """Insert canonical events (idempotent: keyed by event id, latest ``received_time`` wins)."""
        if not events:
            return 0
        return self.insert_columns("canonical_events", rows.event_columns(events))

    def insert_outcomes(self, outcomes: Sequence[PackageOutcomeRow]) -> int:
        """Insert package outcome rows (idempotent: keyed by partner and package, latest version
        wins). Columnar: no per-row dict or datetime is built."""
        if not outcomes:
            return 0
        return self.insert_columns("package_outcomes", rows.outcome_columns(outcomes))

    def insert_windows(self, windows: Sequence[MetricWindowRow]) -> int:
        """Insert metric window rows (idempotent: keyed by partner, region, service level,
        granularity, window start and shard, latest version wins). Columnar like
        :meth:`insert_outcomes`."""
        if not windows:
            return 0
        return self.insert_columns("metric_windows", rows.window_columns(windows))

    def insert_dead_letters(self, dead_letters: Sequence[DeadLetter]) -> int:
        """Insert dead letters, raw bytes intact (idempotent: keyed by partner, payload, path)."""
        if not dead_letters:
            return 0
        return self.insert_columns("dead_letters", rows.dead_letter_columns(dead_letters))

    def insert_raw_events(self, raw_events: Sequence[RawEvent]) -> int:
        """Insert raw-log records (idempotent: keyed by partner, received time and payload)."""
        if not raw_events:
            return 0
        return self.insert_columns("raw_events", rows.raw_event_columns(raw_events))

    def fetch_events(self, partner_id: str | None = None,
                     package_id: str | None = None) -> list[CanonicalEvent]:
        """The stored canonical events (deduplicated), by partner, package, event time, id."""
        where, parameters = _filters(partner_id=partner_id, package_id=package_id)
        names, result = self.query_with_names(
            f"SELECT {', '.join(rows.CANONICAL_EVENT_COLUMNS)} FROM canonical_events FINAL"
            f"{where} ORDER BY partner_id, package_id, event_time, event_id", parameters)
        return rows.events_from_rows(names, result)

    def fetch_dead_letters(self, partner_id: str | None = None) -> list[DeadLetter]:
        """The stored dead letters (deduplicated), raw bytes as stored, by partner and time."""
        where, parameters = _filters(partner_id=partner_id)
        result = self.query(
            "SELECT partner_id, toUnixTimestamp64Milli(received_time), error, path, hex(raw) "
            f"FROM dead_letters FINAL{where} ORDER BY partner_id, received_time, dead_letter_id",
            parameters)
        return [DeadLetter(partner_id=p, received_time=int(t), error=e, path=path,
                           raw=bytes.fromhex(raw)) for p, t, e, path, raw in result]

    def migrate(self, migrations: Sequence[Migration] | None = None) -> list[Migration]:
        """Apply the pending migrations (default: this package's files); return those applied."""
        return migrator.apply_migrations(self, migrations)

    def migration_status(self) -> list[AppliedMigration]:
        """The migrations recorded in this store."""
        return migrator.migration_status(self)

    def query_readonly(self, sql: str) -> tuple[tuple[str, ...], list[tuple[Any, ...]]]:
        """Column names and rows of ``sql`` run with ClickHouse's ``readonly = 1``: a statement
        that would change data or settings is refused by the engine, not by parsing here."""
        raise NotImplementedError

    def data_tables(self) -> list[str]:
        """The tables of the store's database that hold data (the migration ledger excluded)."""
        rows = self.query("SELECT name FROM system.tables WHERE database = currentDatabase() "
                          "AND engine NOT IN ('View', 'MaterializedView') AND name != "
                          "{ledger:String} ORDER BY name", {"ledger": migrator.MIGRATIONS_TABLE})
        return [name for (name,) in rows]

    def reset(self) -> dict[str, int]:
        """Empty every data table (the schema and its migrations stay); return how many rows each
        held."""
        removed: dict[str, int] = {}
        for table in self.data_tables():
            check_identifier(table)
            (count,), = self.query(f"SELECT count() FROM {table}")
            self.command(f"TRUNCATE TABLE {table}")
            removed[table] = int(count)
        return removed

    @property
    def description(self) -> str:
        """Where the store is, for people: ``chDB (embedded) at PATH`` or ``ClickHouse server at
        URL`` (without its password)."""
        kind = "chDB (embedded)" if self.backend == "chdb" else "ClickHouse server"
        return f"{kind} at {self.location}"

    def __enter__(self) -> Store:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.location}>"


def _filters(**values: str | None) -> tuple[str, dict[str, Any]]:
    """A ``WHERE`` clause with one ``{name:String}`` parameter per given value.

    >>> _filters(partner_id="ups", package_id=None)
    (' WHERE partner_id = {partner_id:String}', {'partner_id': 'ups'})
    """
    given = {name: value for name, value in values.items() if value is not None}
    if not given:
        return "", {}
    return " WHERE " + " AND ".join(f"{n} = {{{n}:String}}" for n in given), given
