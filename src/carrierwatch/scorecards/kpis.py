"""The contract KPIs of a period, read from the store with SQL: the one function that scorecards,
dashboards checks and ``carrierwatch status`` share (:func:`fetch_kpis`).

The figures are sums of the additive ``metric_windows`` counters (5-minute windows, latest
version, all regions, service levels and shards: exact rollups for any period whose bounds fall
on 5-minute boundaries, which every time zone's midnight does), turned into rates and quantiles
by the core's metric functions (:mod:`carrierwatch.core.metrics`). Synthetic packages never
reach these windows (the pipeline keeps them out).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from carrierwatch.core import metrics
from carrierwatch.core.partner import SlaContract
from carrierwatch.core.windows import MetricWindowRow
from carrierwatch.outputs.scorecard import fetch_rows, latency_verdict

if TYPE_CHECKING:
    from carrierwatch.storage.base import Store

__all__ = [
    "KPIS",
    "KPI_KEYS",
    "KpiFigure",
    "KpiSpec",
    "fetch_kpis",
    "kpi_figures",
    "window_totals",
]

HOUR_MS = 3_600_000


@dataclass(frozen=True)
class KpiSpec:
    """One KPI: its key (stable: CSV/JSON), label, unit and which direction is better."""

    key: str
    label: str
    unit: Literal["ratio", "hours", "minutes"]
    better: Literal["higher", "lower"]
    target_field: str | None  # the SlaContract field holding its target (None: no target)


KPIS: tuple[KpiSpec, ...] = (
    KpiSpec("on_time", "On-time delivery", "ratio", "higher", "on_time_target"),
    KpiSpec("first_attempt", "First-attempt success", "ratio", "higher", "first_attempt_target"),
    KpiSpec("exception_rate", "Exception rate", "ratio", "lower", "exception_rate_max"),
    KpiSpec("exception_resolution_mean", "Exception resolution, mean", "hours", "lower",
            "exception_resolution_mean_max_hours"),
    KpiSpec("exception_resolution_p90", "Exception resolution, p90", "hours", "lower",
            "exception_resolution_p90_max_hours"),
    KpiSpec("pickup_compliance", "Pickup compliance", "ratio", "higher",
            "pickup_compliance_target"),
    KpiSpec("tracking_compliance", "Tracking compliance", "ratio", "higher",
            "tracking_compliance_target"),
    KpiSpec("event_latency_p95", "Event latency, p95", "minutes", "lower",
            "event_latency_p95_max_minutes"),
    KpiSpec("eta_accuracy", "ETA accuracy", "ratio", "higher", "eta_accuracy_target"),
    KpiSpec("delay_stddev", "Delay variance (std dev of lateness)", "hours", "lower",
            "delay_stddev_max_hours"),
)
KPI_KEYS = tuple(k.key for k in KPIS)


@dataclass(frozen=True)
class KpiFigure:
    """A KPI's value in a period with what it was computed from, against the contract.

    ``numerator``/``denominator``: the counts behind a rate (for a mean: the summed duration in
    the KPI's unit and the count; for a quantile: no numerator, the count of observations).
    ``passed``: None when there is no value or no target, or when the value is a histogram
    quantile whose error band holds the target (``note`` = ``"within error"``).
    """

    key: str
    value: float | None
    numerator: float | None
    denominator: int
    target: float | None
    passed: bool | None
    note: str | None = None


def window_totals(store: Store, start_ms: int, end_ms: int,
                  partners: Iterable[str] | None = None) -> dict[str, MetricWindowRow]:
    """Every partner's summed ``metric_windows`` counters over ``[start_ms, end_ms)`` (SQL:
    ``sum``/``sumMap`` of the 5-minute rows, ``FINAL``), keyed by partner id."""
    wanted = None if partners is None else set(partners)
    return {row.partner_id: row for row in fetch_rows(store, granularity="5m", by_window=False,
                                                       start_ms=start_ms, end_ms=end_ms)
            if wanted is None or row.partner_id in wanted}


def _passed(value: float | None, target: float | None, better: str) -> bool | None:
    if value is None or target is None:
        return None
    return value >= target if better == "higher" else value <= target


def kpi_figures(row: MetricWindowRow, contract: SlaContract) -> list[KpiFigure]:
    """The KPIs of one partner's summed window row against its contract (order of KPIS)."""
    out: list[KpiFigure] = []
    for spec in KPIS:
        target = getattr(contract, spec.target_field) if spec.target_field else None
        note = None
        numerator: float | None
        if spec.key == "on_time":
            numerator, denominator = row.packages_on_time, row.packages_decided
            value = metrics.on_time_rate(row)
        elif spec.key == "first_attempt":
            numerator, denominator = row.first_attempt_successes, row.first_attempts
            value = metrics.first_attempt_success_rate(row)
        elif spec.key == "exception_rate":
            numerator, denominator = row.packages_with_exception, row.packages_decided
            value = metrics.exception_rate(row)
        elif spec.key == "exception_resolution_mean":
            numerator, denominator = row.resolution_sum_ms / HOUR_MS, row.exceptions_resolved
            mean = metrics.mean_resolution_ms(row)
            value = None if mean is None else mean / HOUR_MS
        elif spec.key == "exception_resolution_p90":
            numerator, denominator = None, row.exceptions_resolved
            p90 = metrics.resolution_quantile(row, 0.9)
            value = None if p90 is None else p90 / HOUR_MS
        elif spec.key == "pickup_compliance":
            numerator, denominator = row.pickups_on_time, row.pickups_due
            value = metrics.pickup_compliance(row)
        elif spec.key == "tracking_compliance":
            numerator, denominator = row.tracking_compliant, row.deliveries
            value = metrics.tracking_compliance(row)
        elif spec.key == "event_latency_p95":
            numerator, denominator = None, row.latency_count
            p95 = metrics.event_latency_quantile(row, 0.95)
            value = None if p95 is None else p95 / 60_000
        elif spec.key == "eta_accuracy":
            numerator, denominator = row.eta_accurate, row.eta_checked
            value = metrics.eta_accuracy(row)
        else:  # delay_stddev
            numerator, denominator = None, row.lateness_count
            variance = metrics.delay_variance_s2(row)
            value = None if variance is None else math.sqrt(variance) / 3600
        passed = _passed(value, target, spec.better)
        if spec.key == "event_latency_p95" and value is not None and target is not None:
            verdict = latency_verdict(int(value * 60_000), target)
            passed = None if verdict == "within error" else verdict == "met"
            note = "within error" if verdict == "within error" else None
        elif spec.unit == "hours" and spec.key == "exception_resolution_p90" \
                and value is not None and target is not None:
            verdict = latency_verdict(int(value * HOUR_MS), target * 60)
            passed = None if verdict == "within error" else verdict == "met"
            note = "within error" if verdict == "within error" else None
        out.append(KpiFigure(spec.key, value, numerator, int(denominator), target, passed,
                             note))
    return out


def fetch_kpis(store: Store, start_ms: int, end_ms: int,
               contracts: dict[str, SlaContract],
               partners: Sequence[str] | None = None) -> dict[str, list[KpiFigure]]:
    """**The** KPI computation: every partner's contract KPIs over ``[start_ms, end_ms)``, read
    from the store with SQL (:func:`window_totals`) and computed by :func:`kpi_figures`.

    Dashboards that show the same KPIs must agree with this function on the same period.
    A partner without a contract gets the default :class:`SlaContract`.
    """
    totals = window_totals(store, start_ms, end_ms, partners)
    return {pid: kpi_figures(row, contracts.get(pid, SlaContract()))
            for pid, row in sorted(totals.items())}
