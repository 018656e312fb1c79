"""Versioned DDL migrations: ``migrations/NNNN_name.sql`` files applied in order, once.

Each file is one migration: its version is the number before the first underscore, its name the
rest of the stem, its checksum the SHA-256 of its text (line endings normalised, so a checkout with
CRLF does not look tampered with). Statements are split on ``;`` outside quotes and comments.
Applied migrations are recorded in ``schema_migrations`` (version, name, checksum, applied_at):

* a migration already recorded is skipped, so migrating twice is a no-op;
* a recorded migration whose file changed (another checksum) is an error: ship a new migration
  instead of editing an applied one;
* a recorded version with no file (the database is newer than this code) is an error too.

Statements are written ``IF NOT EXISTS`` so that a migration interrupted half-way (it is recorded
only after its last statement) can simply run again.

Examples
--------
>>> split_statements("CREATE TABLE a (x String DEFAULT ';'); -- done; really\\nSELECT 1;")
["CREATE TABLE a (x String DEFAULT ';')", 'SELECT 1']
>>> m = Migration.from_text("0007_add_index.sql", "ALTER TABLE t ADD INDEX i x TYPE minmax;")
>>> (m.version, m.name, m.checksum[:12])
(7, 'add_index', '675be6701fe9')
"""

from __future__ import annotations

import hashlib
import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from carrierwatch.core.errors import StorageError

if TYPE_CHECKING:
    from carrierwatch.storage.base import Store

__all__ = [
    "MIGRATIONS_TABLE",
    "AppliedMigration",
    "Migration",
    "MigrationError",
    "apply_migrations",
    "load_migrations",
    "migration_status",
    "split_statements",
]

MIGRATIONS_TABLE = "schema_migrations"

_FILE_NAME = re.compile(r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+)\.sql$")

_CREATE_MIGRATIONS_TABLE = f"""
CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE}
(
    version     UInt32,
    name        String,
    checksum    String,
    applied_at  DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(applied_at)
ORDER BY version
"""


class MigrationError(StorageError):
    """The migration files or the recorded schema history are inconsistent."""


@dataclass(frozen=True, slots=True)
class Migration:
    """One migration file: version, name, checksum and its statements."""

    version: int
    name: str
    checksum: str
    statements: tuple[str, ...]
    source: str

    @classmethod
    def from_text(cls, file_name: str, text: str, source: str | None = None) -> Migration:
        """Parse a migration from its file name (``NNNN_name.sql``) and text."""
        match = _FILE_NAME.match(file_name)
        if match is None:
            raise MigrationError(
                f"migration file {source or file_name!r} is not named NNNN_name.sql "
                "(four digits, underscore, lower-case name)"
            )
        normalised = text.replace("\r\n", "\n")
        statements = tuple(split_statements(normalised))
        if not statements:
            raise MigrationError(f"migration {source or file_name!r} holds no statement")
        return cls(
            version=int(match["version"]),
            name=match["name"],
            checksum=hashlib.sha256(normalised.encode("utf-8")).hexdigest(),
            statements=statements,
            source=source or file_name,
        )


@dataclass(frozen=True, slots=True)
class AppliedMigration:
    """A row of ``schema_migrations``."""

    version: int
    name: str
    checksum: str
    applied_at: datetime


def split_statements(sql: str) -> list[str]:
    """Split SQL text on ``;`` that stand outside quotes and comments; drop empty statements.

    Comments are removed from the statements; quoted text (``'…'``, ``"…"``, `` `…` ``, with
    backslash or doubled-quote escapes) is kept verbatim.

    >>> split_statements("SELECT 'a;b' /* c; d */ ; ; SELECT `x;y`")
    ["SELECT 'a;b'", 'SELECT `x;y`']
    """
    statements: list[str] = []
    current: list[str] = []
    i, n = 0, len(sql)
    while i < n:
        char = sql[i]
        if char in "'\"`":
            end = i + 1
            while end < n:
                if sql[end] == "\\":
                    end += 2
                    continue
                if sql[end] == char:
                    if end + 1 < n and sql[end + 1] == char:  # doubled quote escape
                        end += 2
                        continue
                    break
                end += 1
            if end >= n:
                raise MigrationError(f"unterminated quoted text starting at offset {i}")
            current.append(sql[i:end + 1])
            i = end + 1
        elif sql.startswith("--", i) or char == "#":
            newline = sql.find("\n", i)
            i = n if newline < 0 else newline
        elif sql.startswith("/*", i):
            close = sql.find("*/", i + 2)
            if close < 0:
                raise MigrationError(f"unterminated comment starting at offset {i}")
            current.append(" ")
            i = close + 2
        elif char == ";":
            statements.append("".join(current))
            current = []
            i += 1
        else:
            current.append(char)
            i += 1
    statements.append("".join(current))
    return [s.strip() for s in statements if s.strip()]


def load_migrations(directory: Path | None = None) -> list[Migration]:
    """Read the migration files of ``directory`` (default: the package's own), sorted by version.

    Files not ending in ``.sql`` are ignored; a ``.sql`` file with another name, or two files with
    one version, is an error.
    """
    if directory is None:
        root = resources.files("carrierwatch.storage") / "migrations"
        entries = [(entry.name, entry.read_text(encoding="utf-8"), f"carrierwatch/storage/"
                    f"migrations/{entry.name}") for entry in root.iterdir()
                   if entry.name.endswith(".sql")]
    else:
        entries = [(path.name, path.read_text(encoding="utf-8"), str(path))
                   for path in directory.iterdir() if path.name.endswith(".sql")]
    migrations = sorted((Migration.from_text(name, text, source) for name, text, source in entries),
                        key=lambda m: m.version)
    for before, after in itertools.pairwise(migrations):
        if before.version == after.version:
            raise MigrationError(
                f"two migrations share version {before.version:04d}: {before.source} and "
                f"{after.source}"
            )
    return migrations


def migration_status(store: Store) -> list[AppliedMigration]:
    """The migrations recorded in the store, by version (empty before the first migration)."""
    store.command(_CREATE_MIGRATIONS_TABLE)
    rows = store.query(
        f"SELECT version, name, checksum, applied_at FROM {MIGRATIONS_TABLE} FINAL ORDER BY version"
    )
    return [AppliedMigration(int(v), str(n), str(c), a) for v, n, c, a in rows]


def apply_migrations(store: Store, migrations: Sequence[Migration] | None = None) -> list[Migration]:
    """Apply the migrations not yet recorded, in version order; return those applied now.

    Raises
    ------
    MigrationError
        When an applied migration's checksum changed, or the store records a version that has
        no migration file.
    """
    wanted = list(migrations) if migrations is not None else load_migrations()
    by_version = {m.version: m for m in wanted}
    applied = {a.version: a for a in migration_status(store)}
    for version, record in applied.items():
        migration = by_version.get(version)
        if migration is None:
            raise MigrationError(
                f"the store at {store.location} records migration {version:04d}_{record.name}, "
                "which this carrierwatch does not have: the database is newer than the code"
            )
        if migration.checksum != record.checksum:
            raise MigrationError(
                f"migration {migration.source} changed after it was applied to {store.location} "
                f"(checksum {record.checksum[:12]}… recorded, {migration.checksum[:12]}… now): "
                "never edit an applied migration, add a new one"
            )
    done: list[Migration] = []
    for migration in sorted(wanted, key=lambda m: m.version):
        if migration.version in applied:
            continue
        for statement in migration.statements:
            try:
                store.command(statement)
            except StorageError as exc:
                raise MigrationError(
                    f"migration {migration.source} failed on statement "
                    f"{statement[:80]!r}…: {exc}", retry_after=exc.retry_after
                ) from exc
        store.command(
            f"INSERT INTO {MIGRATIONS_TABLE} (version, name, checksum, applied_at) "
            "SELECT {version:UInt32}, {name:String}, {checksum:String}, now64(3, 'UTC')",
            {"version": migration.version, "name": migration.name,
             "checksum": migration.checksum},
        )
        done.append(migration)
    return done
