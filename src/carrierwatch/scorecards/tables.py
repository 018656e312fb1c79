"""The scorecard document as flat tables (one per CSV file and XLSX sheet), with stable columns.

Column names equal the document's field names (``docs/scorecards.md``), so the CSV, XLSX and
JSON forms read alike.
"""

from __future__ import annotations

import csv
import io
from dataclasses import fields
from pathlib import Path
from typing import Any

from carrierwatch.scorecards.document import (
    AccountabilityRow,
    CreditLine,
    FailureRow,
    HubRow,
    PackageRow,
    RegionDay,
    RegionRow,
    Scorecard,
)

__all__ = ["TABLES", "Table", "tables", "write_csv"]

Table = tuple[list[str], list[list[Any]]]

_KPI_COLUMNS = ["key", "label", "unit", "better", "value", "numerator", "denominator", "target",
                "passed", "note", "previous_value", "change", "rank", "ranked_of"]
SUMMARY_COLUMNS = ["partner_id", "display_name", "week", "timezone", "period_start",
                   "period_end", "kpis_passed", "kpis_failed", "currency", "charges",
                   "cost_per_successful_delivery", "cost_of_failed_attempts", "credit_percent",
                   "credit_amount"]
TABLES = ("summary", "kpis", "trend", "regions", "region_days", "hubs", "failures",
          "accountability", "cost", "credits", "packages")
"""The tables, in sheet order (CSV: ``<table>.csv``)."""


def _names(cls: type) -> list[str]:
    return [f.name for f in fields(cls)]


def _rows(items: list[Any], columns: list[str]) -> list[list[Any]]:
    out = []
    for item in items:
        row = []
        for name in columns:
            value = getattr(item, name)
            row.append(";".join(value) if isinstance(value, list) else value)
        out.append(row)
    return out


def tables(card: Scorecard) -> dict[str, Table]:
    """Every table of a scorecard: name -> (columns, rows)."""
    cost, credits = card.cost, card.credits
    summary = [card.partner_id, card.display_name, card.week, card.timezone, card.period_start,
               card.period_end, card.kpis_passed, card.kpis_failed,
               cost.currency if cost else None, cost.charges if cost else None,
               cost.cost_per_successful_delivery if cost else None,
               cost.cost_of_failed_attempts if cost else None,
               credits.credit_percent if credits else None,
               credits.amount if credits else None]
    trend = [[k.key, p.week, p.value, p.denominator] for k in card.kpis for p in k.trend]
    cost_columns = ["currency", "per_delivery", "per_reattempt", "per_return", "deliveries",
                    "failed_attempts", "returns", "charges", "cost_per_successful_delivery",
                    "cost_of_failed_attempts", "cost_of_failed_attempts_carrier"]
    return {
        "summary": (SUMMARY_COLUMNS, [summary]),
        "kpis": (_KPI_COLUMNS, _rows(card.kpis, _KPI_COLUMNS)),
        "trend": (["key", "week", "value", "denominator"], trend),
        "regions": (_names(RegionRow), _rows(card.regions, _names(RegionRow))),
        "region_days": (_names(RegionDay), _rows(card.region_days, _names(RegionDay))),
        "hubs": (_names(HubRow), _rows(card.hubs, _names(HubRow))),
        "failures": (_names(FailureRow), _rows(card.failures, _names(FailureRow))),
        "accountability": (_names(AccountabilityRow),
                           _rows(card.accountability, _names(AccountabilityRow))),
        "cost": (cost_columns, _rows([cost], cost_columns) if cost else []),
        "credits": (_names(CreditLine), _rows(credits.lines, _names(CreditLine))
                    if credits else []),
        "packages": (_names(PackageRow), _rows(card.packages, _names(PackageRow))),
    }


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def write_csv(card: Scorecard, directory: Path) -> list[Path]:
    """One CSV file per table in ``directory`` (UTF-8, ``\\n`` line ends, header row; empty
    cell = no data, booleans ``true``/``false``)."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, (columns, rows) in tables(card).items():
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([[_cell(v) for v in row] for row in rows])
        path = directory / f"{name}.csv"
        path.write_text(buffer.getvalue(), encoding="utf-8")
        written.append(path)
    return written
