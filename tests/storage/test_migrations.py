"""Versioned migrations: file format, ordering, idempotence, tamper detection."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from carrierwatch.storage import TABLES, MigrationError, Store, load_migrations
from carrierwatch.storage.migrator import Migration, split_statements

PACKAGE_MIGRATIONS = Path(__file__).resolve().parents[2] / "src/carrierwatch/storage/migrations"


def test_split_statements_respects_quotes_and_comments() -> None:
    sql = """
    -- a comment; with a semicolon
    CREATE TABLE a (x String DEFAULT 'semi;colon', y String DEFAULT 'it''s') ENGINE = Memory;
    /* block; comment */ SELECT "a;b", `c;d` ;
    ;
    SELECT 'back\\'slash;'
    """
    assert split_statements(sql) == [
        "CREATE TABLE a (x String DEFAULT 'semi;colon', y String DEFAULT 'it''s') ENGINE = Memory",
        'SELECT "a;b", `c;d`',
        "SELECT 'back\\'slash;'",
    ]


def test_split_statements_rejects_unterminated_quote() -> None:
    with pytest.raises(MigrationError, match="unterminated"):
        split_statements("SELECT 'oops;")


def test_package_migrations_are_numbered_files_with_checksums() -> None:
    migrations = load_migrations()
    versions = [m.version for m in migrations]
    assert versions == sorted(versions) and len(set(versions)) == len(versions)
    assert versions[:2] == [1, 2]
    files = {int(p.name[:4]): p for p in PACKAGE_MIGRATIONS.glob("*.sql")}
    for migration in migrations:
        text = files[migration.version].read_text(encoding="utf-8").replace("\r\n", "\n")
        assert migration.checksum == hashlib.sha256(text.encode()).hexdigest()
        assert re.fullmatch(r"\d{4}_[a-z0-9_]+\.sql", files[migration.version].name)


def test_load_migrations_rejects_bad_names_and_duplicate_versions(tmp_path: Path) -> None:
    (tmp_path / "0001_first.sql").write_text("CREATE TABLE IF NOT EXISTS a (x UInt8) ENGINE = Log;")
    (tmp_path / "README.md").write_text("not a migration, ignored")
    assert [m.name for m in load_migrations(tmp_path)] == ["first"]
    (tmp_path / "0001_again.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match="share version 0001"):
        load_migrations(tmp_path)
    (tmp_path / "0001_again.sql").unlink()
    (tmp_path / "2_bad-name.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match=r"NNNN_name\.sql"):
        load_migrations(tmp_path)


def test_migrations_apply_cleanly_and_twice_is_a_no_op(store: Store) -> None:
    expected = load_migrations()
    applied = store.migrate()
    assert [m.version for m in applied] == [m.version for m in expected]
    tables = {row[0] for row in store.query("SHOW TABLES")}
    assert set(TABLES) | {"schema_migrations"} <= tables

    status = store.migration_status()
    assert [(a.version, a.name, a.checksum) for a in status] == [
        (m.version, m.name, m.checksum) for m in expected]
    assert all(a.applied_at.tzinfo is not None for a in status)

    assert store.migrate() == []
    assert store.migration_status() == status
    assert store.query("SELECT count() FROM schema_migrations")[0][0] == len(expected)


def test_migrations_apply_in_version_order(store: Store) -> None:
    first = Migration.from_text("0001_base.sql",
                                "CREATE TABLE IF NOT EXISTS t (x UInt8) ENGINE = MergeTree ORDER BY x;")
    second = Migration.from_text("0002_column.sql", "ALTER TABLE t ADD COLUMN y String;")
    # given out of order: 0002 needs the table of 0001
    assert [m.version for m in store.migrate([second, first])] == [1, 2]
    assert [name for name, *_ in store.query("DESCRIBE TABLE t")] == ["x", "y"]


def test_changed_checksum_of_applied_migration_is_an_error(store: Store) -> None:
    original = Migration.from_text("0001_base.sql",
                                   "CREATE TABLE IF NOT EXISTS t (x UInt8) ENGINE = Log;")
    store.migrate([original])
    tampered = Migration.from_text(
        "0001_base.sql", "CREATE TABLE IF NOT EXISTS t (x UInt8, y UInt8) ENGINE = Log;")
    with pytest.raises(MigrationError, match="changed after it was applied") as caught:
        store.migrate([tampered])
    assert original.checksum[:12] in str(caught.value)
    assert [name for name, *_ in store.query("DESCRIBE TABLE t")] == ["x"]


def test_tampered_package_file_is_detected(store: Store, tmp_path: Path) -> None:
    directory = tmp_path / "migrations"
    directory.mkdir()
    for path in PACKAGE_MIGRATIONS.glob("000[12]_*.sql"):
        (directory / path.name).write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
    store.migrate(load_migrations(directory))
    events = next(directory.glob("0001_*.sql"))
    events.write_text(events.read_text(encoding="utf-8").replace("INTERVAL 7 DAY",
                                                                 "INTERVAL 70 DAY"))
    with pytest.raises(MigrationError, match="never edit an applied migration"):
        store.migrate(load_migrations(directory))


def test_store_newer_than_code_is_an_error(store: Store) -> None:
    store.migrate([Migration.from_text("0001_a.sql", "SELECT 1;"),
                   Migration.from_text("0002_b.sql", "SELECT 2;")])
    with pytest.raises(MigrationError, match="records migration 0002_b"):
        store.migrate([Migration.from_text("0001_a.sql", "SELECT 1;")])


def test_failed_statement_leaves_migration_unrecorded(store: Store) -> None:
    broken = Migration.from_text(
        "0001_broken.sql",
        "CREATE TABLE IF NOT EXISTS ok (x UInt8) ENGINE = Log; SELECT no_such_column FROM ok;")
    with pytest.raises(MigrationError, match=r"0001_broken\.sql failed") as caught:
        store.migrate([broken])
    assert caught.value.retry_after is None
    assert store.migration_status() == []
    fixed = Migration.from_text("0001_broken.sql",
                                "CREATE TABLE IF NOT EXISTS ok (x UInt8) ENGINE = Log;")
    assert [m.version for m in store.migrate([fixed])] == [1]
