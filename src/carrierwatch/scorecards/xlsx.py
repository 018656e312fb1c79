"""The scorecard as an XLSX workbook (xlsxwriter): one sheet per table (the CSV tables), real
number, percentage and date formats, frozen header rows, pass/fail conditional formatting and
native Excel line charts of the 8-week trends (sheet ``charts``)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from carrierwatch.scorecards.document import Scorecard
from carrierwatch.scorecards.kpis import KPIS
from carrierwatch.scorecards.tables import tables

__all__ = ["write_xlsx"]

_PERCENT_COLUMNS = {"on_time_rate", "failed_first_attempt_rate"}
_MONEY_COLUMNS = {"charges", "cost_per_successful_delivery", "cost_of_failed_attempts",
                  "cost_of_failed_attempts_carrier", "per_delivery", "per_reattempt",
                  "per_return", "credit_amount", "amount"}
_DATE_COLUMNS = {"promised_by", "delivered_at", "period_start", "period_end"}
_DAY_COLUMNS = {"day"}
_HOURS_COLUMNS = {"mean_hours", "p90_hours", "max_hours"}
_UNITS = {k.key: k.unit for k in KPIS}
_RATIO_KPI_COLUMNS = {"value", "target", "previous_value", "change"}


def _local_naive(text: str) -> datetime:
    """Local ISO with offset -> naive local datetime (what Excel shows)."""
    return datetime.fromisoformat(text).replace(tzinfo=None)


def write_xlsx(card: Scorecard, path: Path) -> Path:
    import xlsxwriter

    path.parent.mkdir(parents=True, exist_ok=True)
    book = xlsxwriter.Workbook(str(path), {"strings_to_numbers": False})
    book.set_properties({"title": f"{card.display_name} scorecard {card.week}",
                         "subject": "carrierwatch weekly partner scorecard",
                         "created": datetime(2000, 1, 1)})  # fixed: reproducible files
    header = book.add_format({"bold": True, "bg_color": "#E8EEF4", "bottom": 1})
    percent = book.add_format({"num_format": "0.0%"})
    change_pp = book.add_format({"num_format": "+0.0%;-0.0%;0.0%"})
    number = book.add_format({"num_format": "#,##0.00"})
    integer = book.add_format({"num_format": "#,##0"})
    money = book.add_format({"num_format": "#,##0.00"})
    stamp = book.add_format({"num_format": "yyyy-mm-dd hh:mm"})
    day = book.add_format({"num_format": "yyyy-mm-dd"})
    good = book.add_format({"bg_color": "#C6EFCE", "font_color": "#006100"})
    bad = book.add_format({"bg_color": "#FFC7CE", "font_color": "#9C0006"})

    def put(sheet: Any, row: int, col: int, column: str, value: Any, unit: str | None) -> None:
        if value is None:
            sheet.write_blank(row, col, None)
        elif isinstance(value, bool):
            sheet.write_boolean(row, col, value)
        elif column in _DATE_COLUMNS and isinstance(value, str):
            sheet.write_datetime(row, col, _local_naive(value), stamp)
        elif column in _DAY_COLUMNS and isinstance(value, str):
            sheet.write_datetime(row, col, datetime.fromisoformat(value), day)
        elif isinstance(value, int | float):
            if column in _PERCENT_COLUMNS or (unit == "ratio" and column in _RATIO_KPI_COLUMNS):
                sheet.write_number(row, col, value, change_pp if column == "change" else percent)
            elif column in _MONEY_COLUMNS:
                sheet.write_number(row, col, value, money)
            elif isinstance(value, int):
                sheet.write_number(row, col, value, integer)
            else:
                sheet.write_number(row, col, value, number)
        else:
            sheet.write_string(row, col, str(value))

    positions: dict[str, int] = {}
    for name, (columns, rows) in tables(card).items():
        sheet = book.add_worksheet(name)
        sheet.write_row(0, 0, columns, header)
        sheet.freeze_panes(1, 0)
        for c, column in enumerate(columns):
            width = max([len(column)] + [len(str(r[c])) for r in rows[:200] if r[c] is not None])
            sheet.set_column(c, c, min(max(width + 2, 9), 48))
        unit_at = columns.index("unit") if "unit" in columns else None
        key_at = columns.index("key") if "key" in columns and name == "trend" else None
        for r, row in enumerate(rows, start=1):
            unit = row[unit_at] if unit_at is not None else (
                _UNITS.get(row[key_at]) if key_at is not None else None)
            for c, (column, value) in enumerate(zip(columns, row, strict=True)):
                put(sheet, r, c, column, value, unit)
        for flag in ("passed", "triggered", "applied"):
            if flag in columns and rows:
                c = columns.index(flag)
                ok, ko = (good, bad) if flag == "passed" else (bad, good)
                sheet.conditional_format(1, c, len(rows), c, {
                    "type": "cell", "criteria": "==", "value": "TRUE", "format": ok})
                sheet.conditional_format(1, c, len(rows), c, {
                    "type": "cell", "criteria": "==", "value": "FALSE", "format": ko})
        if name == "trend":
            positions = {}
            for r, row in enumerate(rows, start=1):
                positions.setdefault(row[0], r)

    charts = book.add_worksheet("charts")
    charts.write_string(0, 0, f"{card.display_name}: 8-week trend per KPI ({card.week})", header)
    trend_rows = tables(card)["trend"][1]
    for index, spec in enumerate(KPIS):
        first = positions.get(spec.key)
        if first is None:
            continue
        count = sum(1 for row in trend_rows if row[0] == spec.key)
        chart = book.add_chart({"type": "line"})
        chart.add_series({
            "name": spec.label,
            "categories": ["trend", first, 1, first + count - 1, 1],
            "values": ["trend", first, 2, first + count - 1, 2],
            "marker": {"type": "circle"},
        })
        chart.set_title({"name": spec.label})
        chart.set_legend({"none": True})
        if spec.unit == "ratio":
            chart.set_y_axis({"num_format": "0%"})
        else:
            chart.set_y_axis({"name": spec.unit})
        chart.set_size({"width": 480, "height": 260})
        charts.insert_chart(2 + (index // 2) * 14, (index % 2) * 8, chart)
    book.close()
    return path
