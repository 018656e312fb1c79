"""Partner scorecards: SLA metrics against each partner's contract, read from the store.

The numbers come from the ``metric_windows`` rows (latest version, summed over regions, service
levels and shards: rollups of additive counters are exact) and are computed with the same metric
functions as everywhere else (:mod:`carrierwatch.core.metrics`), so a scorecard can never disagree
with a dashboard on what "on-time" means.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from carrierwatch.core import metrics
from carrierwatch.core.partner import SlaContract
from carrierwatch.core.sketch import RELATIVE_ERROR, bucket_lower_bound, bucket_of
from carrierwatch.core.timeutil import to_ms
from carrierwatch.core.windows import MetricWindowRow

if TYPE_CHECKING:
    from rich.table import Table

    from carrierwatch.storage.base import Store

__all__ = ["LATENCY_RELATIVE_ERROR", "DayFigures", "PartnerScorecard", "fetch_rows",
           "latency_verdict", "scorecard_table", "scorecards"]

LATENCY_RELATIVE_ERROR = RELATIVE_ERROR
"""Largest relative error of a latency quantile read from the stored histograms (±2.47 %,
:mod:`carrierwatch.core.sketch`)."""

_KEYS = {"partner_id", "region", "service_level", "granularity", "window_start", "shard",
         "version"}
_MEASURES = [f.name for f in fields(MetricWindowRow) if f.name not in _KEYS]
_MAPS = {"events_by_status", "latency_hist", "carrier_lag_hist", "ingest_lag_hist",
         "resolution_hist"}


def fetch_rows(store: Store, *, granularity: str = "1d", by_window: bool = True,
               start_ms: int | None = None, end_ms: int | None = None
               ) -> list[MetricWindowRow]:
    """Window rows per partner (and per window when ``by_window``), summed over regions,
    service levels and shards, each at its latest version."""
    aggregates = ", ".join(f"sumMap({m})" if m in _MAPS else f"sum({m})" for m in _MEASURES)
    window = "window_start" if by_window else "min(window_start)"
    group = "partner_id, window_start" if by_window else "partner_id"
    where = ["granularity = {granularity:String}"]
    params: dict[str, Any] = {"granularity": granularity}
    if start_ms is not None:
        where.append("window_start >= fromUnixTimestamp64Milli({start:Int64}, 'UTC')")
        params["start"] = start_ms
    if end_ms is not None:
        where.append("window_start < fromUnixTimestamp64Milli({end:Int64}, 'UTC')")
        params["end"] = end_ms
    rows = store.query(
        f"SELECT partner_id, {window}, {aggregates} FROM metric_windows FINAL "
        f"WHERE {' AND '.join(where)} GROUP BY {group} ORDER BY partner_id, 2", params)
    out = []
    for partner_id, start, *values in rows:
        start_ms_value = to_ms(start) if isinstance(start, datetime) else int(start or 0)
        row = MetricWindowRow(partner_id, "*", "*", granularity, start_ms_value, 0, 0)
        for name, value in zip(_MEASURES, values, strict=True):
            if name in _MAPS:
                value = {k: v for k, v in dict(value).items() if v}
            setattr(row, name, value)
        out.append(row)
    return out


def latency_verdict(p95_ms: int | None, limit_minutes: float) -> str | None:
    """Whether a latency quantile read from a histogram meets a contract's limit: ``"met"``,
    ``"missed"``, or ``"within error"`` when the histogram bucket that holds the true quantile
    (the estimate is that bucket's geometric midpoint, ±2.47 %) straddles the limit, so the
    data cannot tell; ``None`` without data.

    >>> latency_verdict(243 * 60_000, 240)   # 243 min: its bucket holds 240 min
    'within error'
    >>> latency_verdict(238 * 60_000, 240)   # 238 min: the true p95 may still be above 240
    'within error'
    >>> latency_verdict(250 * 60_000, 240), latency_verdict(230 * 60_000, 240)
    ('missed', 'met')
    """
    if p95_ms is None:
        return None
    bucket = bucket_of(p95_ms)  # the estimate is inside the bucket it was read from
    low, high = bucket_lower_bound(bucket), bucket_lower_bound(bucket + 1)
    limit_ms = limit_minutes * 60_000
    if low > limit_ms:
        return "missed"
    if high <= limit_ms:
        return "met"
    return "within error"


@dataclass
class DayFigures:
    day: datetime
    on_time: float | None
    exception_rate: float | None
    latency_p95_ms: int | None
    events: int


@dataclass
class PartnerScorecard:
    """One partner's period against its contract; ``breaches`` lists what missed its target."""

    partner_id: str
    contract: SlaContract
    total: MetricWindowRow
    days: list[DayFigures] = field(default_factory=list)

    @property
    def on_time(self) -> float | None:
        return metrics.on_time_rate(self.total)

    @property
    def first_attempt(self) -> float | None:
        return metrics.first_attempt_success_rate(self.total)

    @property
    def exception_rate(self) -> float | None:
        return metrics.exception_rate(self.total)

    @property
    def pickup_compliance(self) -> float | None:
        return metrics.pickup_compliance(self.total)

    @property
    def latency_p95_ms(self) -> int | None:
        return metrics.event_latency_quantile(self.total, 0.95)

    @property
    def latency_verdict(self) -> str | None:
        """The latency p95 against the contract's limit (see :func:`latency_verdict`)."""
        return latency_verdict(self.latency_p95_ms, self.contract.event_latency_p95_max_minutes)

    @property
    def within_error(self) -> list[str]:
        """Targets the data cannot call met or missed (the estimate's error band holds the
        limit): today only the latency p95, read from a histogram."""
        return ["latency"] if self.latency_verdict == "within error" else []

    @property
    def breaches(self) -> list[str]:
        """Targets missed; a latency p95 within the histogram's error of its limit is not a
        breach (:attr:`within_error`)."""
        c = self.contract
        found = []
        if self.on_time is not None and self.on_time < c.on_time_target:
            found.append("on-time")
        if self.first_attempt is not None and self.first_attempt < c.first_attempt_target:
            found.append("first-attempt")
        if self.exception_rate is not None and self.exception_rate > c.exception_rate_max:
            found.append("exceptions")
        if self.latency_verdict == "missed":
            found.append("latency")
        if (self.pickup_compliance is not None
                and self.pickup_compliance < c.pickup_compliance_target):
            found.append("pickup")
        return found


def scorecards(store: Store, contracts: dict[str, SlaContract], *, start_ms: int | None = None,
               end_ms: int | None = None) -> list[PartnerScorecard]:
    """Scorecards of every partner with data in the period (daily windows)."""
    totals = {r.partner_id: r for r in fetch_rows(store, by_window=False, start_ms=start_ms,
                                                  end_ms=end_ms)}
    cards = {pid: PartnerScorecard(pid, contracts.get(pid, SlaContract()), row)
             for pid, row in totals.items()}
    for row in fetch_rows(store, start_ms=start_ms, end_ms=end_ms):
        card = cards.get(row.partner_id)
        if card is not None:
            card.days.append(DayFigures(
                datetime.fromtimestamp(row.window_start / 1000, tz=UTC),
                metrics.on_time_rate(row), metrics.exception_rate(row),
                metrics.event_latency_quantile(row, 0.95), row.events))
    return [cards[k] for k in sorted(cards)]


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}%"


def scorecard_table(cards: list[PartnerScorecard], *, title: str) -> Table:
    """The scorecards as a terminal table (rich): each KPI as actual / contract target, and
    what missed its target; ``decided`` counts the packages whose on-time outcome is known
    (delivered, or past their promise)."""
    from rich.table import Table

    table = Table("partner", "decided", "on-time", "first attempt", "exceptions",
                  "latency p95", "pickup", "misses", title=title,
                  caption="decided: packages whose on-time outcome is known (delivered, or "
                          "past their promise without a delivery); within error: the latency "
                          "p95 is read from a histogram whose error band holds the limit")
    for card in cards:
        c = card.contract
        p95 = card.latency_p95_ms
        latency = "—" if p95 is None else f"{p95 / 60_000:,.0f}"
        if card.within_error:
            latency += f" ±{100 * LATENCY_RELATIVE_ERROR:.1f} %"
        misses = ", ".join(card.breaches) or "none"
        if card.within_error:
            misses += "; within error: " + ", ".join(card.within_error)
        table.add_row(
            card.partner_id, f"{card.total.packages_decided:,}",
            f"{_pct(card.on_time)} / {_pct(c.on_time_target)}",
            f"{_pct(card.first_attempt)} / {_pct(c.first_attempt_target)}",
            f"{_pct(card.exception_rate)} / ≤{_pct(c.exception_rate_max)}",
            f"{latency} / ≤{c.event_latency_p95_max_minutes:,.0f} min",
            f"{_pct(card.pickup_compliance)} / {_pct(c.pickup_compliance_target)}",
            misses)
    return table
