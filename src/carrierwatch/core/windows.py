"""Event-time windows, additive window aggregates, the metric row and exact rollups.

Windows are aligned in UTC: 5 minutes, 1 hour, 1 day (00:00 UTC) and 1 week (Monday 00:00 UTC).
UTC keeps windows of different partners comparable and additive; partner-local calendars belong to
the scorecard query, which sums hourly rows over the local day.

Every metric is stored as additive integers (counters, sums, sums of squares) and sparse
fixed-bucket histograms (:mod:`carrierwatch.core.sketch`), so that the row of a coarse window is
*exactly* the sum of the rows of the fine windows it contains, and the total over shards is the sum
of the shards' rows. :func:`rollup` is that sum.

A row's key is ``(partner_id, region, service_level, granularity, window_start, shard)``; every
re-emission of a window carries its *full* totals and a higher ``version``, so a store that keeps
the latest version per key (ClickHouse ``ReplacingMergeTree(version)``) never double counts.

Examples
--------
>>> window_start(1_772_467_512_345, "5m"), window_start(1_772_467_512_345, "1h")
(1772467500000, 1772467200000)
>>> ms_to_iso(window_start(1_772_467_512_345, "1w"))       # a Monday
'2026-03-02T00:00:00.000Z'
>>> a = MetricWindowRow("demo", "US-TN", "ground", "5m", 1_772_467_200_000, 0, 1, events=3,
...                     events_by_status={"in_transit": 3})
>>> b = MetricWindowRow("demo", "US-TN", "ground", "5m", 1_772_467_500_000, 0, 4, events=2,
...                     events_by_status={"in_transit": 1, "delivered": 1})
>>> [(r.events, r.events_by_status, r.version) for r in rollup([a, b], "1h")]
[(5, {'in_transit': 4, 'delivered': 1}, 4)]
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from operator import add, attrgetter, sub
from typing import Any

from carrierwatch.core.model import ms_to_iso
from carrierwatch.core.sketch import add_into

__all__ = [
    "COUNTER_COLUMNS",
    "GRANULARITY_MS",
    "HISTOGRAM_COLUMNS",
    "MetricWindowRow",
    "WindowAgg",
    "WindowKey",
    "ms_to_iso",
    "rollup",
    "window_start",
]

GRANULARITY_MS: dict[str, int] = {
    "5m": 300_000,
    "1h": 3_600_000,
    "1d": 86_400_000,
    "1w": 604_800_000,
}
"""Window lengths. Weeks start on Monday 00:00 UTC."""

_WEEK_OFFSET = 4 * 86_400_000  # 1970-01-05 was a Monday

COUNTER_COLUMNS: tuple[str, ...] = (
    # event-level (attributed to each event's own time and region)
    "events", "codebook_gap_events", "synthetic_events", "too_late_events",
    "latency_count", "latency_sum_ms",
    "carrier_lag_count", "carrier_lag_sum_ms",
    "ingest_lag_count", "ingest_lag_sum_ms",
    # package-level (attributed to the time of the outcome, see docs/metrics.md)
    "packages_decided", "packages_on_time", "packages_with_exception",
    "first_attempts", "first_attempt_successes",
    "pickups_due", "pickups_on_time",
    "deliveries", "tracking_compliant",
    "lateness_count", "lateness_sum_s", "lateness_sum_sq_s2",
    "eta_checked", "eta_accurate",
    "exceptions_opened", "exceptions_resolved", "resolution_sum_ms",
)
"""The additive integer columns of a metric row, in storage order."""

HISTOGRAM_COLUMNS: tuple[str, ...] = (
    "latency_hist", "carrier_lag_hist", "ingest_lag_hist", "resolution_hist",
)
"""Sparse log-histogram columns (bucket -> count), see :mod:`carrierwatch.core.sketch`."""

_INDEX = {name: i for i, name in enumerate(COUNTER_COLUMNS)}
N_COUNTERS = len(COUNTER_COLUMNS)

WindowKey = tuple[str, str, str, str, int]
"""``(partner_id, region, service_level, granularity, window_start)`` (the shard is implied)."""


def window_start(time_ms: int, granularity: str) -> int:
    """Start (ms, UTC) of the window of ``granularity`` that contains ``time_ms``."""
    size = GRANULARITY_MS[granularity]
    if granularity == "1w":
        return (time_ms - _WEEK_OFFSET) // size * size + _WEEK_OFFSET
    return time_ms - time_ms % size


class WindowAgg:
    """Running totals of one window (or a pending delta): counters, statuses, histograms."""

    __slots__ = ("by_status", "counts", "hists", "version")

    def __init__(self) -> None:
        self.counts: list[int] = [0] * N_COUNTERS
        self.by_status: dict[str, int] = {}
        self.hists: tuple[dict[int, int], ...] = ({}, {}, {}, {})
        self.version = 0

    def add(self, other: WindowAgg, sign: int = 1) -> None:
        """Add ``sign * other`` into this aggregate (exact)."""
        # map over two equal-length lists (N_COUNTERS each): C-level, no per-item bytecode
        self.counts = list(map(add if sign == 1 else sub, self.counts, other.counts))
        for status, count in other.by_status.items():
            total = self.by_status.get(status, 0) + sign * count
            if total:
                self.by_status[status] = total
            else:
                self.by_status.pop(status, None)
        for mine, theirs in zip(self.hists, other.hists, strict=True):
            if theirs:
                add_into(mine, theirs, sign)

    def is_zero(self) -> bool:
        return not any(self.counts) and not self.by_status and not any(self.hists)

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle as the call ``_restore_agg(counts, by_status, hists, version)`` (a third
        cheaper than the default slot-state dict per aggregate, which checkpoints pay for every
        window held). Pickles of the default form (earlier versions) still load."""
        return (_restore_agg, (self.counts, self.by_status, self.hists, self.version))

    def to_row(self, key: WindowKey, shard: int, version: int) -> MetricWindowRow:
        hists = self.hists
        return MetricWindowRow(*key, shard, version, *self.counts,  # type: ignore[arg-type, call-arg]
                               dict(self.by_status), dict(hists[0]), dict(hists[1]),
                               dict(hists[2]), dict(hists[3]))

    @classmethod
    def from_row(cls, row: MetricWindowRow) -> WindowAgg:
        agg = cls()
        agg.counts = [getattr(row, name) for name in COUNTER_COLUMNS]
        agg.by_status = {k: v for k, v in row.events_by_status.items() if v}
        agg.hists = tuple({k: v for k, v in getattr(row, name).items() if v}
                          for name in HISTOGRAM_COLUMNS)
        agg.version = row.version
        return agg


def _utc(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def _restore_agg(counts: list[int], by_status: dict[str, int],
                 hists: tuple[dict[int, int], ...], version: int) -> WindowAgg:
    """The aggregate pickled by :meth:`WindowAgg.__reduce__`."""
    agg = WindowAgg.__new__(WindowAgg)
    agg.counts, agg.by_status, agg.hists, agg.version = counts, by_status, hists, version
    return agg


@dataclass(slots=True)
class MetricWindowRow:
    """One window of one partner × region × service level × shard: the ``metric_windows`` row.

    Rates are read from these sums (see :mod:`carrierwatch.core.metrics` and docs/metrics.md).
    """

    partner_id: str
    region: str
    service_level: str
    granularity: str
    window_start: int
    shard: int
    version: int
    events: int = 0
    codebook_gap_events: int = 0
    synthetic_events: int = 0
    too_late_events: int = 0
    latency_count: int = 0
    latency_sum_ms: int = 0
    carrier_lag_count: int = 0
    carrier_lag_sum_ms: int = 0
    ingest_lag_count: int = 0
    ingest_lag_sum_ms: int = 0
    packages_decided: int = 0
    packages_on_time: int = 0
    packages_with_exception: int = 0
    first_attempts: int = 0
    first_attempt_successes: int = 0
    pickups_due: int = 0
    pickups_on_time: int = 0
    deliveries: int = 0
    tracking_compliant: int = 0
    lateness_count: int = 0
    lateness_sum_s: int = 0
    lateness_sum_sq_s2: int = 0
    eta_checked: int = 0
    eta_accurate: int = 0
    exceptions_opened: int = 0
    exceptions_resolved: int = 0
    resolution_sum_ms: int = 0
    events_by_status: dict[str, int] = field(default_factory=dict)
    latency_hist: dict[int, int] = field(default_factory=dict)
    carrier_lag_hist: dict[int, int] = field(default_factory=dict)
    ingest_lag_hist: dict[int, int] = field(default_factory=dict)
    resolution_hist: dict[int, int] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str, str, str, int, int]:
        """The storage key (the version is not part of it)."""
        return (self.partner_id, self.region, self.service_level, self.granularity,
                self.window_start, self.shard)

    def values(self) -> dict[str, Any]:
        """Every metric value (counters and maps) without key or version, for comparisons."""
        skip = {"partner_id", "region", "service_level", "granularity", "window_start", "shard",
                "version"}
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in skip}

    def to_row(self) -> dict[str, Any]:
        """The ClickHouse row: keys are the ``metric_windows`` column names, the window start
        an aware UTC datetime (``DateTime64(3, 'UTC')``)."""
        row = dict(zip(_FIELD_NAMES, _row_values(self), strict=True))
        row["window_start"] = _utc(self.window_start)
        return row


_FIELD_NAMES = tuple(f.name for f in fields(MetricWindowRow))
_row_values = attrgetter(*_FIELD_NAMES)
if list(_FIELD_NAMES[7:]) != [*COUNTER_COLUMNS, "events_by_status", *HISTOGRAM_COLUMNS]:
    raise RuntimeError("MetricWindowRow fields are out of step with COUNTER_COLUMNS")


def rollup(rows: Iterable[MetricWindowRow], granularity: str) -> list[MetricWindowRow]:
    """Sum rows into windows of a coarser ``granularity`` (exact), per key and shard.

    Input rows must be finer than the target; the version of a rolled-up row is the largest
    version among its inputs. Output is sorted by key.
    """
    target = GRANULARITY_MS[granularity]
    totals: dict[tuple[str, str, str, int, int], WindowAgg] = {}
    for row in rows:
        if GRANULARITY_MS[row.granularity] > target:
            raise ValueError(f"cannot roll {row.granularity} rows up into {granularity}")
        start = window_start(row.window_start, granularity)
        key = (row.partner_id, row.region, row.service_level, start, row.shard)
        agg = totals.get(key)
        if agg is None:
            agg = totals[key] = WindowAgg()
        agg.add(WindowAgg.from_row(row))
        agg.version = max(agg.version, row.version)
    out = []
    for (partner, region, level, start, shard), agg in sorted(totals.items()):
        out.append(agg.to_row((partner, region, level, granularity, start), shard, agg.version))
    return out
