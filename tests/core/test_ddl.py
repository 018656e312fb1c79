"""0003_metrics.sql runs in chDB, matches the row dataclasses and keeps the latest version."""

from __future__ import annotations

import json
from dataclasses import fields
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from carrierwatch.core.model import CanonicalEvent, Location, event_id
from carrierwatch.core.partner import SlaContract
from carrierwatch.core.pipeline import PackageOutcomeRow, Pipeline
from carrierwatch.core.windows import MetricWindowRow

chdb_session = pytest.importorskip("chdb.session")

DDL = Path(__file__).resolve().parents[2] / "src/carrierwatch/storage/migrations/0003_metrics.sql"
NOON = 1_772_452_800_000


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    if isinstance(value, dict):
        return {str(k): v for k, v in value.items()}
    return value


def _insert(session: Any, table: str, rows: list[dict[str, Any]]) -> None:
    body = "\n".join(json.dumps({k: _json_value(v) for k, v in row.items()}) for row in rows)
    session.query(f"INSERT INTO {table} FORMAT JSONEachRow\n{body}")


def _ev(status: str, t: int, **extra: Any) -> CanonicalEvent:
    return CanonicalEvent(event_id("demo", "p1", status, t), "demo", "p1", "1", status, 1.0, "x",
                          t, t + 90_000, location=Location(region="US-TN"), **extra)


def test_migration_matches_rows_and_replaces_by_version(tmp_path: Path) -> None:
    statements = [s.strip() for s in DDL.read_text().split(";") if s.strip()
                  and not all(line.startswith("--") for line in s.strip().splitlines())]
    assert len(statements) == 2
    session = chdb_session.Session(str(tmp_path / "db"))
    try:
        for statement in statements:
            session.query(statement)
        for statement in statements:     # IF NOT EXISTS: re-applying is harmless
            session.query(statement)
        for table, cls in (("metric_windows", MetricWindowRow),
                           ("package_outcomes", PackageOutcomeRow)):
            described = session.query(f"DESCRIBE TABLE {table}", "JSONEachRow").bytes()
            columns = [json.loads(line)["name"] for line in described.decode().splitlines()]
            assert columns == [f.name for f in fields(cls)]

        pipe = Pipeline({"demo": SlaContract(required_milestones=())}, granularities=("1h",))
        first = pipe.process([_ev("picked_up", NOON - 3 * 3_600_000, promised_by=NOON),
                              _ev("exception", NOON - 2 * 3_600_000, reason="weather")])
        second = pipe.process([_ev("delivered", NOON - 3_600_000, proof_of_delivery="photo")])
        _insert(session, "metric_windows", [r.to_row() for r in first.windows + second.windows])
        _insert(session, "package_outcomes",
                [r.to_row() for r in first.outcomes + second.outcomes])
        result = session.query(
            "SELECT sum(events), sum(deliveries), sum(packages_on_time), "
            "sum(exceptions_resolved), sum(resolution_sum_ms), "
            "sumMap(events_by_status) FROM metric_windows FINAL", "JSONCompact").bytes()
        data = json.loads(result)["data"][0]
        assert [int(x) for x in data[:5]] == [3, 1, 1, 1, 3_600_000]
        assert {k: int(v) for k, v in data[5].items()} == \
            {"delivered": 1, "exception": 1, "picked_up": 1}
        outcome = json.loads(session.query(
            "SELECT status, on_time, attempts, exceptions, proof_of_delivery, "
            "toUnixTimestamp64Milli(delivered_at) FROM package_outcomes FINAL",
            "JSONCompact").bytes())["data"]
        assert outcome == [["delivered", True, 1, 1, "photo", NOON - 3_600_000]]
    finally:
        session.close()
