"""The two ClickHouse backends of :class:`~carrierwatch.storage.base.Store`.

Both run on `clickhouse-connect <https://clickhouse.com/docs/integrations/python>`_: its HTTP
client for a ClickHouse server, and its chDB client for the embedded engine. One client library on
both sides means one SQL dialect, one parameter binding (server-side ``{name:Type}``), one decoding
of result types, and one insert path (an Arrow batch typed after the table's columns): the
parametrized test suite exercises the same code against both.

* :class:`EmbeddedStore` (``backend = "chdb"``): chDB on a local data path, which it owns
  exclusively (see :mod:`carrierwatch.storage.ownership`). Inserts stream Arrow IPC straight into
  the engine (no temporary file).
* :class:`ServerStore` (``backend = "server"``): a ClickHouse server at
  ``CARRIERWATCH_CLICKHOUSE_URL`` (``http://user:password@host:8123/database``).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit, urlunsplit

import pyarrow as pa  # type: ignore[import-untyped]

from carrierwatch.core.errors import EXIT_ERROR, EXIT_UNAVAILABLE, StorageError
from carrierwatch.storage import ownership
from carrierwatch.storage.base import Store, check_identifier
from carrierwatch.storage.rows import arrow_table

__all__ = ["INSERT_SETTINGS", "TRANSIENT_ERROR_CODES", "ClickHouseStore", "EmbeddedStore", "ServerStore",
           "redact_url", "storage_error"]

#: ClickHouse error codes worth retrying, with a suggested pause in seconds.
TRANSIENT_ERROR_CODES: dict[int, float] = {
    159: 5.0,    # TIMEOUT_EXCEEDED
    164: 5.0,    # READONLY
    202: 1.0,    # TOO_MANY_SIMULTANEOUS_QUERIES
    203: 1.0,    # NO_FREE_CONNECTION
    209: 2.0,    # SOCKET_TIMEOUT
    210: 2.0,    # NETWORK_ERROR
    236: 1.0,    # ABORTED
    241: 5.0,    # MEMORY_LIMIT_EXCEEDED
    242: 5.0,    # TABLE_IS_READ_ONLY
    252: 10.0,   # TOO_MANY_PARTS
    285: 5.0,    # TOO_FEW_LIVE_REPLICAS
    319: 2.0,    # UNKNOWN_STATUS_OF_INSERT
    425: 2.0,    # SYSTEM_ERROR
    439: 1.0,    # CANNOT_SCHEDULE_TASK
    999: 5.0,    # KEEPER_EXCEPTION
}
_CONNECTION_RETRY_AFTER = 2.0
#: Settings of every insert. ``optimize_on_insert=0``: do not deduplicate inside each inserted
#: block (about twice the insert rate); duplicates collapse at merge time, and reads that care use
#: FINAL anyway, which they must for duplicates across blocks.
INSERT_SETTINGS: dict[str, Any] = {"optimize_on_insert": 0}
_CODE_IN_MESSAGE = re.compile(r"Code: (\d+)")


def redact_url(url: str) -> str:
    """``url`` without its password, for messages and logs.

    >>> redact_url("http://cw:s3cret@db.internal:8123/carrierwatch")
    'http://cw:***@db.internal:8123/carrierwatch'
    """
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:***@{parts.hostname or ''}"
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def storage_error(exc: BaseException, location: str, action: str) -> StorageError:
    """Translate a client exception into :class:`StorageError`, transient ones with retry_after."""
    from clickhouse_connect.driver import exceptions as ch

    if isinstance(exc, StorageError):
        return exc
    code = getattr(exc, "code", None)
    if code is None:
        match = _CODE_IN_MESSAGE.search(str(exc))
        code = int(match.group(1)) if match else None
    retry_after: float | None = None
    if isinstance(code, int) and code in TRANSIENT_ERROR_CODES:
        retry_after = TRANSIENT_ERROR_CODES[code]
    elif isinstance(exc, ch.OperationalError | ConnectionError | TimeoutError):
        retry_after = _CONNECTION_RETRY_AFTER
    message = " ".join(str(exc).split()) or type(exc).__name__
    error = StorageError(f"{action} failed on {location}: {message}", retry_after=retry_after)
    # the command line's exit code: 69 (unavailable) only when the store did not answer or
    # answered with a transient code; an error it reported about the statement is 1
    transient = isinstance(code, int) and code in TRANSIENT_ERROR_CODES
    error.exit_code = EXIT_UNAVAILABLE if transient or (
        code is None and retry_after is not None) else EXIT_ERROR
    return error


class ClickHouseStore(Store):
    """A :class:`Store` over a clickhouse-connect client (shared by both backends)."""

    backend: ClassVar[str] = "clickhouse"

    def __init__(self, client: Any, location: str) -> None:
        self._client: Any = client
        self.location = location
        self._types: dict[str, dict[str, str]] = {}
        self._types_lock = threading.Lock()
        self._closed = False

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError(f"the store {self.location} is closed")

    def query_with_names(self, sql: str, parameters: Mapping[str, Any] | None = None
                         ) -> tuple[tuple[str, ...], list[tuple[Any, ...]]]:
        self._check_open()
        try:
            result = self._client.query(sql, parameters=dict(parameters or {}))
            return tuple(result.column_names), [tuple(row) for row in result.result_rows]
        except Exception as exc:
            raise storage_error(exc, self.location, "query") from exc

    def query(self, sql: str, parameters: Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]:
        return self.query_with_names(sql, parameters)[1]

    def query_readonly(self, sql: str) -> tuple[tuple[str, ...], list[tuple[Any, ...]]]:
        self._check_open()
        try:
            result = self._client.query(sql, settings={"readonly": 1})
            return tuple(result.column_names), [tuple(row) for row in result.result_rows]
        except Exception as exc:
            error = storage_error(exc, self.location, "query")
            if getattr(exc, "code", None) == 164 or "Code: 164." in str(exc):
                # READONLY here is the statement's fault (it writes), not a transient state
                error.retry_after, error.exit_code = None, EXIT_ERROR
            raise error from exc

    def command(self, sql: str, parameters: Mapping[str, Any] | None = None) -> None:
        self._check_open()
        try:
            self._client.command(sql, parameters=dict(parameters or {}))
        except Exception as exc:
            raise storage_error(exc, self.location, "command") from exc
        finally:
            with self._types_lock:  # DDL may have changed a table
                self._types.clear()

    def column_types(self, table: str) -> dict[str, str]:
        check_identifier(table)
        with self._types_lock:
            cached = self._types.get(table)
        if cached is not None:
            return cached
        described = self.query(f"DESCRIBE TABLE {table}")
        types = {str(row[0]): str(row[1]) for row in described
                 if str(row[2]) not in {"MATERIALIZED", "ALIAS", "EPHEMERAL"}}
        with self._types_lock:
            self._types[table] = types
        return types

    def insert_columns(self, table: str, columns: Mapping[str, Sequence[Any]]) -> int:
        self._check_open()
        check_identifier(table)
        if not columns:
            return 0
        batch = arrow_table(table, self.column_types(table), columns)
        if batch.num_rows == 0:
            return 0
        try:
            self._insert_arrow(table, batch)
        except Exception as exc:
            raise storage_error(exc, self.location, f"insert into {table}") from exc
        return int(batch.num_rows)

    def _insert_arrow(self, table: str, batch: pa.Table) -> None:
        self._client.insert_arrow(table, batch, settings=INSERT_SETTINGS)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._client.close()


class EmbeddedStore(ClickHouseStore):
    """chDB on a local data path, owned exclusively by this process while open.

    Open it with :func:`carrierwatch.storage.open_store` or :meth:`open`.
    """

    backend: ClassVar[str] = "chdb"

    def __init__(self, client: Any, connection: Any, path: Path) -> None:
        super().__init__(client, str(path))
        self.path = path
        self._connection: Any = connection
        self._insert_lock = threading.Lock()

    @classmethod
    def open(cls, path: Path, *, command: str | None = None, wait: float = 0.0,
             busy_hint: str | None = None) -> EmbeddedStore:
        """Open (creating if needed) the chDB store at ``path``.

        Raises
        ------
        StoreBusyError
            Another process owns ``path`` (after waiting ``wait`` seconds for it).
        StorageError
            This process already hosts another embedded path, or chDB failed to start.
        """
        resolved = ownership.acquire_path(path, command=command, wait=wait, hint=busy_hint)
        client: Any = None
        try:
            import chdb
            import clickhouse_connect

            client = clickhouse_connect.get_client(interface="chdb", path=str(resolved),
                                                   tz_mode="aware")
            connection = chdb.connect(str(resolved))  # type: ignore[no-untyped-call]
        except Exception as exc:
            if client is not None:
                client.close()
            ownership.release_path(resolved)
            raise storage_error(exc, str(resolved), "opening the embedded store") from exc
        return cls(client, connection, resolved)

    def _insert_arrow(self, table: str, batch: pa.Table) -> None:
        # Stream Arrow IPC into the engine; the chDB connection takes one insert at a time.
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, batch.schema) as writer:
            writer.write_table(batch)
        columns = ", ".join(f"`{name}`" for name in batch.column_names)
        settings = ", ".join(f"{key} = {value}" for key, value in INSERT_SETTINGS.items())
        with self._insert_lock, self._connection.send_insert(
                f"INSERT INTO {table} ({columns}) SETTINGS {settings}", "ArrowStream") as inserter:
            inserter.append(sink.getvalue().to_pybytes())
            inserter.finish()

    def close(self) -> None:
        if self._closed:
            return
        try:
            try:
                self._connection.close()
            finally:
                super().close()
        finally:
            ownership.release_path(self.path)


class ServerStore(ClickHouseStore):
    """A ClickHouse server reached over HTTP(S) with clickhouse-connect."""

    backend: ClassVar[str] = "server"

    @classmethod
    def open(cls, url: str, *, database: str | None = None) -> ServerStore:
        """Connect to the server at ``url`` (``http[s]://user:password@host:port/database``).

        ``database`` overrides the URL's database.
        """
        location = redact_url(url)
        try:
            import clickhouse_connect

            kwargs: dict[str, Any] = {"dsn": url, "tz_mode": "aware"}
            if database is not None:
                kwargs["database"] = database
            client = clickhouse_connect.get_client(**kwargs)
        except Exception as exc:
            raise storage_error(exc, location, "connecting") from exc
        return cls(client, location if database is None else f"{location} (database {database})")
