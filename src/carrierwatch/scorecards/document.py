"""The scorecard as one data document: dataclasses, their JSON form and the ISO week.

Every renderer (CSV, JSON, XLSX, HTML) reads a :class:`Scorecard` and nothing else, so that all
formats show the same figures. The JSON form is documented field by field in
``docs/scorecards.md`` (schema ``carrierwatch.scorecard/1``); it is deterministic: fixed field
order, sorted lists, rounded numbers and no generation timestamp, so that the same week
produced twice is byte-identical.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

__all__ = ["SCHEMA", "AccountabilityRow", "Cost", "CreditLine", "Credits", "FailureRow",
           "HubRow", "KpiRow", "PackageRow", "RegionDay", "RegionRow", "Scorecard",
           "TrendPoint", "WeekError", "iso_week", "json_schema", "last_complete_week",
           "local_iso", "week_bounds"]

SCHEMA = "carrierwatch.scorecard/1"
_WEEK = re.compile(r"^(\d{4})-W(\d{2})$")


class WeekError(ValueError):
    """A week that is not ``YYYY-Www``."""


def week_bounds(week: str, timezone: str) -> tuple[int, int]:
    """``[start, end)`` of an ISO week in epoch ms: Monday 00:00 to the next Monday 00:00 in
    ``timezone`` (a week holding a DST change is 167 or 169 hours long).

    >>> week_bounds("2026-W10", "UTC")
    (1772409600000, 1773014400000)
    >>> s, e = week_bounds("2026-W10", "America/New_York")   # DST starts on Sunday 8 March
    >>> (e - s) // 3_600_000
    167
    """
    match = _WEEK.match(week)
    if not match:
        raise WeekError(f"not an ISO week (YYYY-Www, e.g. 2026-W47): {week!r}")
    try:
        monday = date.fromisocalendar(int(match[1]), int(match[2]), 1)
    except ValueError:
        raise WeekError(f"no such ISO week: {week!r}") from None
    zone = ZoneInfo(timezone)
    start = datetime(monday.year, monday.month, monday.day, tzinfo=zone)
    try:
        following = monday + timedelta(days=7)
    except OverflowError:  # 9999-W52: the week ends after the calendar does
        raise WeekError(f"no such ISO week: {week!r} (it ends after 9999-12-31)") from None
    end = datetime(following.year, following.month, following.day, tzinfo=zone)
    return round(start.timestamp() * 1000), round(end.timestamp() * 1000)


def iso_week(day: date) -> str:
    """``YYYY-Www`` of a date.

    >>> iso_week(date(2026, 3, 2)), iso_week(date(2027, 1, 1))
    ('2026-W10', '2026-W53')
    """
    year, week, _ = day.isocalendar()
    return f"{year}-W{week:02d}"


def shift_week(week: str, weeks: int) -> str:
    """The ISO week ``weeks`` weeks after ``week`` (negative: before).

    >>> shift_week("2026-W01", -1), shift_week("2026-W52", 2)
    ('2025-W52', '2027-W01')
    """
    match = _WEEK.match(week)
    if not match:
        raise WeekError(f"not an ISO week: {week!r}")
    monday = date.fromisocalendar(int(match[1]), int(match[2]), 1)
    return iso_week(monday + timedelta(weeks=weeks))


def last_complete_week(now: datetime, timezone: str) -> str:
    """The last ISO week that has ended in ``timezone`` at ``now``.

    >>> from datetime import UTC
    >>> last_complete_week(datetime(2026, 12, 8, 1, 0, tzinfo=UTC), "America/Chicago")
    '2026-W49'
    >>> last_complete_week(datetime(2026, 12, 7, 5, 0, tzinfo=UTC), "America/Chicago")
    '2026-W48'
    """
    local = now.astimezone(ZoneInfo(timezone)).date()
    return iso_week(local - timedelta(days=7))


def local_iso(ms: int | None, timezone: str) -> str | None:
    """Epoch ms as local ISO 8601 with its offset, to the second (None stays None).

    >>> local_iso(1772409600000, "America/Chicago")
    '2026-03-01T18:00:00-06:00'
    """
    if ms is None:
        return None
    moment = datetime.fromtimestamp(ms // 1000, ZoneInfo(timezone))
    return moment.isoformat()


@dataclass
class TrendPoint:
    week: str
    value: float | None
    denominator: int


@dataclass
class KpiRow:
    key: str
    label: str
    unit: str
    better: str
    value: float | None
    numerator: int | float | None  # counts stay integers
    denominator: int
    target: float | None
    passed: bool | None
    note: str | None
    previous_value: float | None
    change: float | None
    rank: int | None
    ranked_of: int
    trend: list[TrendPoint] = field(default_factory=list)


@dataclass
class RegionRow:
    region: str
    decided: int
    on_time: int
    on_time_rate: float | None
    first_attempts: int
    failed_first_attempts: int
    failed_first_attempt_rate: float | None


@dataclass
class RegionDay:
    region: str
    day: str
    decided: int
    on_time_rate: float | None
    first_attempts: int
    failed_first_attempts: int


@dataclass
class HubRow:
    hub: str
    stays: int
    mean_hours: float
    p90_hours: float
    max_hours: float


@dataclass
class FailureRow:
    kind: str
    reason: str
    accountable: str
    count: int


@dataclass
class AccountabilityRow:
    party: str
    exceptions: int
    failed_attempts: int


@dataclass
class Cost:
    currency: str
    per_delivery: float
    per_reattempt: float
    per_return: float
    deliveries: int
    failed_attempts: int
    returns: int
    charges: float
    cost_per_successful_delivery: float | None
    cost_of_failed_attempts: float
    cost_of_failed_attempts_carrier: float


@dataclass
class CreditLine:
    kpi: str
    points: float
    credit_percent: float
    actual: float | None
    target: float
    shortfall_points: float | None
    triggered: bool
    applied: bool


@dataclass
class Credits:
    currency: str
    charges: float
    credit_percent: float
    amount: float
    lines: list[CreditLine] = field(default_factory=list)
    packages: int = 0


@dataclass
class PackageRow:
    tracking_number: str
    service_level: str
    region: str
    promised_by: str | None
    delivered_at: str | None
    outcome: str
    attempts: int
    first_attempt: str | None
    reason: str | None
    accountable: str | None
    proof_of_delivery: str | None
    credit_kpis: list[str] = field(default_factory=list)


@dataclass
class Scorecard:
    schema: str
    partner_id: str
    display_name: str
    week: str
    timezone: str
    period_start: str
    period_end: str
    kpis_passed: int
    kpis_failed: int
    kpis: list[KpiRow]
    regions: list[RegionRow]
    region_days: list[RegionDay]
    hubs: list[HubRow]
    failures: list[FailureRow]
    accountability: list[AccountabilityRow]
    cost: Cost | None
    credits: Credits | None
    packages: list[PackageRow]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        """The document as JSON text (UTF-8, two-space indent, newline at the end)."""
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False,
                          allow_nan=False) + "\n"

    def kpi(self, key: str) -> KpiRow:
        for row in self.kpis:
            if row.key == key:
                return row
        raise KeyError(key)


def json_schema() -> dict[str, Any]:
    """The JSON Schema (2020-12) of the document, derived from the dataclasses by pydantic;
    committed as ``docs/scorecard.schema.json`` (a test keeps the two equal)."""
    from pydantic import TypeAdapter

    schema = TypeAdapter(Scorecard).json_schema()
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": SCHEMA, **schema}
