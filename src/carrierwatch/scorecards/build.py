"""Build the scorecard documents of a week from the store (never from the pipeline).

Sources, all read with ClickHouse SQL through :class:`~carrierwatch.storage.base.Store`, so the
embedded chDB store and a ClickHouse server give the same documents:

* KPIs, their 8-week trend and ranks: ``metric_windows`` (:func:`carrierwatch.scorecards.kpis.
  fetch_kpis`, 5-minute rows summed over the partner's local week);
* regions and the region × day heatmap: ``metric_windows`` by region (and local day);
* hub dwell: ``canonical_events`` (arrival/departure scans, :mod:`carrierwatch.core.dwell`);
* failures by reason and accountability, failed attempts and returns (cost): ``canonical_events``;
* the per-package sheet and the packages behind service credits: ``package_outcomes`` and
  ``canonical_events``.

Synthetic (heartbeat) packages are left out everywhere: by the ``synthetic`` flag and by the
partner's ``synthetic_tracking_prefix``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from carrierwatch.core.accountability import PARTIES, accountable_party
from carrierwatch.core.dwell import HubScan, hub_dwells, hub_name
from carrierwatch.core.partner import SlaContract
from carrierwatch.core.timeutil import to_ms
from carrierwatch.scorecards.document import (
    SCHEMA,
    AccountabilityRow,
    Cost,
    CreditLine,
    Credits,
    FailureRow,
    HubRow,
    KpiRow,
    PackageRow,
    RegionDay,
    RegionRow,
    Scorecard,
    TrendPoint,
    local_iso,
    shift_week,
    week_bounds,
)
from carrierwatch.scorecards.kpis import KPIS, KpiFigure, fetch_kpis

if TYPE_CHECKING:
    from carrierwatch.storage.base import Store

__all__ = ["DWELL_LOOKBACK_MS", "TREND_WEEKS", "PartnerInfo", "build_scorecards",
           "weeks_with_data"]

TREND_WEEKS = 8
DAY_MS = 86_400_000
DWELL_LOOKBACK_MS = 7 * DAY_MS
"""Hub stays that end in the week are measured from arrivals up to 7 days before it."""
OUTCOME_LOOKBACK_MS = 35 * DAY_MS
HOUR_MS = 3_600_000
_RANGE = ("{c} >= fromUnixTimestamp64Milli({{start:Int64}}, 'UTC') "
          "AND {c} < fromUnixTimestamp64Milli({{end:Int64}}, 'UTC')")


@dataclass(frozen=True)
class PartnerInfo:
    """What a scorecard needs to know about a partner besides the store."""

    partner_id: str
    display_name: str
    contract: SlaContract
    synthetic_prefix: str


def _in(column: str) -> str:
    return _RANGE.format(c=column)


def _real(prefix_param: str = "prefix") -> str:
    """SQL: a canonical event of a real (not synthetic) package."""
    return f"NOT synthetic AND NOT startsWith(tracking_number, {{{prefix_param}:String}})"


def _ms(value: Any) -> int | None:
    return None if value is None else to_ms(value)


def _r(value: float | None, digits: int = 6) -> float | None:
    return None if value is None else round(value, digits)


def weeks_with_data(store: Store, partner_id: str, week: str, timezone: str) -> bool:
    """Whether the store holds any canonical event or window of the partner in the week."""
    start, end = week_bounds(week, timezone)
    rows = store.query(
        f"SELECT count() FROM metric_windows WHERE partner_id = {{p:String}} "
        f"AND granularity = '5m' AND {_in('window_start')} AND (events > 0 OR "
        f"packages_decided > 0 OR deliveries > 0)", {"p": partner_id, "start": start, "end": end})
    return bool(rows and rows[0][0])


_Cache = dict[tuple[str, str], "list[KpiFigure] | None"]


def _week_kpis(store: Store, info: PartnerInfo, week: str, contracts: dict[str, SlaContract],
               cache: _Cache) -> list[KpiFigure] | None:
    """One partner's KPIs of one local week (memoized for a build: trends and ranks reuse
    them)."""
    key = (info.partner_id, week)
    if key not in cache:
        start, end = week_bounds(week, info.contract.timezone)
        cache[key] = fetch_kpis(store, start, end, contracts, [info.partner_id]).get(
            info.partner_id)
    return cache[key]


def _kpi_rows(store: Store, info: PartnerInfo, week: str,
              everyone: Sequence[PartnerInfo], cache: _Cache) -> list[KpiRow]:
    contracts = {p.partner_id: p.contract for p in everyone}
    trend: dict[str, list[TrendPoint]] = defaultdict(list)
    current: list[KpiFigure] = []
    previous: dict[str, float | None] = {}
    for back in range(TREND_WEEKS - 1, -1, -1):
        label = shift_week(week, -back)
        figures = _week_kpis(store, info, label, contracts, cache)
        by_key = {f.key: f for f in figures or []}
        for spec in KPIS:
            figure = by_key.get(spec.key)
            trend[spec.key].append(TrendPoint(
                label, _r(figure.value) if figure else None, figure.denominator if figure else 0))
        if back == 1:
            previous = {k: f.value for k, f in by_key.items()}
        if back == 0:
            current = figures or []
    # ranks: every partner's own local week
    others: dict[str, dict[str, float | None]] = {}
    for other in everyone:
        got = _week_kpis(store, other, week, contracts, cache)
        if got:
            others[other.partner_id] = {f.key: f.value for f in got}
    rows = []
    for spec, figure in zip(KPIS, current, strict=True):
        values: dict[str, float] = {}
        for pid, theirs in others.items():
            value = theirs.get(spec.key)
            if value is not None:
                values[pid] = value
        rank = None
        mine = values.get(info.partner_id)
        if mine is not None:
            better = [v for v in values.values()
                      if (v > mine if spec.better == "higher" else v < mine)]
            rank = len(better) + 1
        before = previous.get(spec.key)
        change = None if figure.value is None or before is None else figure.value - before
        rows.append(KpiRow(
            spec.key, spec.label, spec.unit, spec.better, _r(figure.value),
            _r(figure.numerator, 4), figure.denominator, figure.target, figure.passed,
            figure.note, _r(before), _r(change), rank, len(values), trend[spec.key]))
    return rows


def _regions(store: Store, info: PartnerInfo, start: int, end: int
             ) -> tuple[list[RegionRow], list[RegionDay]]:
    params = {"p": info.partner_id, "start": start, "end": end, "tz": info.contract.timezone}
    sums = ("sum(packages_decided), sum(packages_on_time), sum(first_attempts), "
            "sum(first_attempt_successes)")
    where = f"partner_id = {{p:String}} AND granularity = '5m' AND {_in('window_start')}"
    regions = []
    for region, decided, on_time, first, first_ok in store.query(
            f"SELECT region, {sums} FROM metric_windows FINAL WHERE {where} "
            f"GROUP BY region HAVING sum(packages_decided) + sum(first_attempts) > 0 "
            f"ORDER BY region", params):
        failed = int(first) - int(first_ok)
        regions.append(RegionRow(str(region), int(decided), int(on_time),
                                 _r(on_time / decided) if decided else None, int(first), failed,
                                 _r(failed / first) if first else None))
    regions.sort(key=lambda r: (r.on_time_rate if r.on_time_rate is not None else 2.0,
                                -r.decided, r.region))
    days = []
    for region, day, decided, on_time, first, first_ok in store.query(
            f"SELECT region, toString(toDate(window_start, {{tz:String}})) AS day, {sums} "
            f"FROM metric_windows FINAL WHERE {where} GROUP BY region, day "
            f"HAVING sum(packages_decided) + sum(first_attempts) > 0 ORDER BY region, day",
            params):
        days.append(RegionDay(str(region), str(day), int(decided),
                              _r(on_time / decided) if decided else None, int(first),
                              int(first) - int(first_ok)))
    return regions, days


def _hubs(store: Store, info: PartnerInfo, start: int, end: int) -> list[HubRow]:
    rows = store.query(
        "SELECT package_id, toUnixTimestamp64Milli(event_time), status, location_city, "
        "location_region, event_id FROM canonical_events FINAL "
        "WHERE partner_id = {p:String} AND status IN ('staged', 'in_transit', "
        "'out_for_delivery', 'delivered', 'returned', 'cancelled') AND "
        f"{_real()} AND {_in('event_time')} ORDER BY package_id",
        {"p": info.partner_id, "prefix": info.synthetic_prefix,
         "start": start - DWELL_LOOKBACK_MS, "end": end})
    packages: dict[str, list[HubScan]] = defaultdict(list)
    for package_id, when, status, city, region, eid in rows:
        packages[package_id].append((int(when), str(status), hub_name(city, region), eid))
    stays: dict[str, list[int]] = defaultdict(list)
    for scans in packages.values():
        for dwell in hub_dwells(scans):
            if start <= dwell.departed_at < end:
                stays[dwell.hub].append(dwell.dwell_ms)
    out = []
    for hub, durations in stays.items():
        durations.sort()
        p90 = durations[max(0, math.ceil(0.9 * len(durations)) - 1)]
        out.append(HubRow(hub, len(durations), round(sum(durations) / len(durations) / HOUR_MS,
                                                        4),
                          round(p90 / HOUR_MS, 4), round(durations[-1] / HOUR_MS, 4)))
    out.sort(key=lambda h: (-h.mean_hours, h.hub))
    return out


def _failures(store: Store, info: PartnerInfo, start: int, end: int
              ) -> tuple[list[FailureRow], list[AccountabilityRow], int, int]:
    params = {"p": info.partner_id, "prefix": info.synthetic_prefix, "start": start, "end": end}
    overrides = info.contract.accountability
    counts: dict[tuple[str, str, str], int] = defaultdict(int)
    for status, reason, count in store.query(
            "SELECT status, reason, count() FROM canonical_events FINAL "
            "WHERE partner_id = {p:String} AND status IN ('exception', 'delivery_attempted') "
            f"AND {_real()} AND {_in('event_time')} GROUP BY status, reason", params):
        kind = "exception" if status == "exception" else "failed_attempt"
        key = reason or "unknown"
        counts[(kind, key, accountable_party(key, overrides))] += int(count)
    failures = [FailureRow(kind, reason, party, n)
                for (kind, reason, party), n in sorted(counts.items(),
                                                       key=lambda i: (i[0][0], -i[1], i[0][1]))]
    split = []
    for party in PARTIES:
        split.append(AccountabilityRow(
            party, sum(f.count for f in failures if f.accountable == party and
                       f.kind == "exception"),
            sum(f.count for f in failures if f.accountable == party and
                f.kind == "failed_attempt")))
    failed_attempts = sum(f.count for f in failures if f.kind == "failed_attempt")
    returns = store.query(
        "SELECT uniqExact(package_id) FROM canonical_events FINAL WHERE partner_id = {p:String} "
        f"AND status = 'returned' AND {_real()} AND {_in('event_time')}", params)[0][0]
    return failures, split, failed_attempts, int(returns)


def _cost(contract: SlaContract, deliveries: int, failures: list[FailureRow],
          failed_attempts: int, returns: int) -> Cost | None:
    rates = contract.rates
    if rates is None:
        return None
    charges = (deliveries * rates.per_delivery + failed_attempts * rates.per_reattempt
               + returns * rates.per_return)
    carrier_failed = sum(f.count for f in failures
                         if f.kind == "failed_attempt" and f.accountable == "carrier")
    return Cost(rates.currency, rates.per_delivery, rates.per_reattempt, rates.per_return,
                deliveries, failed_attempts, returns, round(charges, 2),
                round(charges / deliveries, 4) if deliveries else None,
                round(failed_attempts * rates.per_reattempt, 2),
                round(carrier_failed * rates.per_reattempt, 2))


def _credits(contract: SlaContract, kpis: list[KpiRow], cost: Cost | None) -> Credits | None:
    if cost is None or not contract.credits:
        return None
    by_key = {k.key: k for k in kpis}
    lines = []
    for rule in contract.credits:
        kpi = by_key[rule.kpi]
        target = float(kpi.target) if kpi.target is not None else 0.0
        shortfall = None
        if kpi.value is not None:
            gap = (target - kpi.value) if kpi.better == "higher" else (kpi.value - target)
            shortfall = round(100 * gap, 4)
        triggered = shortfall is not None and shortfall > rule.points
        lines.append(CreditLine(rule.kpi, rule.points, rule.credit_percent, kpi.value, target,
                                shortfall, triggered, False))
    total = 0.0
    for key in dict.fromkeys(line.kpi for line in lines):
        tiers = [line for line in lines if line.kpi == key and line.triggered]
        if tiers:
            best = max(tiers, key=lambda line: (line.credit_percent, line.points))
            best.applied = True
            total += best.credit_percent
    percent = min(100.0, total)
    return Credits(cost.currency, cost.charges, round(percent, 4),
                   round(cost.charges * percent / 100, 2), lines)


def _packages(store: Store, info: PartnerInfo, start: int, end: int,
              credited: set[str]) -> list[PackageRow]:
    """The per-package sheet: packages decided, delivered, first attempted or due for pickup
    in the week; ``credit_kpis`` names the applied credits each one justifies."""
    params = {"p": info.partner_id, "prefix": info.synthetic_prefix, "start": start, "end": end,
              "from": start - OUTCOME_LOOKBACK_MS}
    contract, tz = info.contract, info.contract.timezone
    first = {pid: (int(when), str(status), reason) for pid, when, status, reason in store.query(
        "SELECT package_id, toUnixTimestamp64Milli(min(event_time)), "
        "argMin(status, (event_time, status = 'delivered')), "
        "argMin(reason, (event_time, status = 'delivered')) FROM canonical_events FINAL "
        "WHERE partner_id = {p:String} AND status IN ('delivery_attempted', 'delivered') "
        f"AND {_real()} AND event_time >= fromUnixTimestamp64Milli({{from:Int64}}, 'UTC') "
        "GROUP BY package_id", params)}
    last_reason = {pid: reason for pid, reason in store.query(
        "SELECT package_id, argMax(reason, event_time) FROM canonical_events FINAL "
        "WHERE partner_id = {p:String} AND status IN ('exception', 'delivery_attempted') "
        f"AND {_real()} AND event_time >= fromUnixTimestamp64Milli({{from:Int64}}, 'UTC') "
        "AND event_time < fromUnixTimestamp64Milli({end:Int64}, 'UTC') GROUP BY package_id",
        params)}
    milestones = set(contract.required_milestones)
    statuses = {pid: set(found) for pid, found in store.query(
        "SELECT package_id, groupUniqArray(status) FROM canonical_events FINAL "
        f"WHERE partner_id = {{p:String}} AND {_real()} "
        "AND event_time >= fromUnixTimestamp64Milli({from:Int64}, 'UTC') "
        "AND event_time < fromUnixTimestamp64Milli({end:Int64}, 'UTC') "
        "AND package_id IN (SELECT package_id FROM canonical_events FINAL "
        "WHERE partner_id = {p:String} AND status = 'delivered' "
        f"AND {_in('event_time')}) GROUP BY package_id", params)}
    tracking_numbers = {pid: str(number) for pid, number in store.query(
        "SELECT package_id, any(tracking_number) FROM canonical_events FINAL "
        f"WHERE partner_id = {{p:String}} AND {_real()} "
        "AND event_time >= fromUnixTimestamp64Milli({from:Int64}, 'UTC') "
        "AND event_time < fromUnixTimestamp64Milli({end:Int64}, 'UTC') GROUP BY package_id",
        params)}
    outcomes = store.query_dicts(
        "SELECT package_id, service_level, region, status, "
        "toUnixTimestamp64Milli(promised_by) AS promised_by, "
        "toUnixTimestamp64Milli(delivered_at) AS delivered_at, "
        "toUnixTimestamp64Milli(decided_at) AS decided_at, "
        "toUnixTimestamp64Milli(pickup_due) AS pickup_due, pickup_on_time, on_time, "
        "attempts, exceptions, proof_of_delivery FROM package_outcomes FINAL "
        "WHERE partner_id = {p:String} AND NOT synthetic "
        "AND NOT startsWith(substring(package_id, length({p:String}) + 2), {prefix:String}) "
        "AND last_event_time >= fromUnixTimestamp64Milli({from:Int64}, 'UTC') "
        "AND first_event_time < fromUnixTimestamp64Milli({end:Int64}, 'UTC') "
        "ORDER BY package_id", params)

    def inside(ms: int | None) -> bool:
        return ms is not None and start <= ms < end

    out = []
    for row in outcomes:
        pid = row["package_id"]
        attempt = first.get(pid)
        attempt_in_week = attempt is not None and inside(attempt[0])
        decided = inside(row["decided_at"])
        delivered = inside(row["delivered_at"])
        pickup_missed = inside(row["pickup_due"]) and row["pickup_on_time"] is False
        if not (decided or delivered or attempt_in_week or pickup_missed):
            continue
        justifies = []
        if decided and row["on_time"] is False:
            justifies.append("on_time")
        if attempt_in_week and attempt is not None and attempt[1] != "delivered":
            justifies.append("first_attempt")
        if pickup_missed:
            justifies.append("pickup_compliance")
        if delivered and not milestones <= statuses.get(pid, set()):
            justifies.append("tracking_compliance")
        if decided and row["exceptions"]:
            justifies.append("exception_rate")
        if row["on_time"] is True:
            outcome = "on_time"
        elif row["on_time"] is False:
            outcome = "late" if row["delivered_at"] is not None else (
                "returned" if row["status"] == "returned" else "not_delivered")
        elif row["delivered_at"] is not None:
            outcome = "delivered_no_promise"
        else:
            outcome = "open"
        failed = outcome in ("late", "returned", "not_delivered") or (
            attempt is not None and attempt[1] != "delivered") or bool(row["exceptions"])
        reason = last_reason.get(pid)
        accountable = accountable_party(reason, contract.accountability) if failed else None
        tracking = tracking_numbers.get(pid)
        if tracking is None:  # no real event in the period: not a package of this report
            continue
        out.append(PackageRow(
            tracking, str(row["service_level"]), str(row["region"]),
            local_iso(row["promised_by"], tz), local_iso(row["delivered_at"], tz), outcome,
            int(row["attempts"]),
            None if attempt is None else ("success" if attempt[1] == "delivered" else "failed"),
            reason, accountable, row["proof_of_delivery"],
            [k for k in justifies if k in credited]))
    return out


def build_scorecards(store: Store, week: str, partners: Sequence[PartnerInfo],
                     everyone: Sequence[PartnerInfo] | None = None) -> list[Scorecard]:
    """The scorecards of ``partners`` for ISO ``week`` (each in its contract's time zone);
    ranks are among ``everyone`` (default: ``partners``) with data that week. Partners
    without data in the week get no scorecard."""
    everyone = list(everyone or partners)
    cache: _Cache = {}
    cards = []
    for info in partners:
        if not weeks_with_data(store, info.partner_id, week, info.contract.timezone):
            continue
        tz = info.contract.timezone
        start, end = week_bounds(week, tz)
        kpis = _kpi_rows(store, info, week, everyone, cache)
        regions, region_days = _regions(store, info, start, end)
        failures, split, failed_attempts, returns = _failures(store, info, start, end)
        totals = store.query(
            f"SELECT sum(deliveries) FROM metric_windows FINAL WHERE partner_id = {{p:String}} "
            f"AND granularity = '5m' AND {_in('window_start')}",
            {"p": info.partner_id, "start": start, "end": end})
        deliveries = int(totals[0][0] or 0) if totals else 0
        cost = _cost(info.contract, deliveries, failures, failed_attempts, returns)
        credits = _credits(info.contract, kpis, cost)
        credited = {line.kpi for line in credits.lines if line.applied} if credits else set()
        packages = _packages(store, info, start, end, credited)
        if credits is not None:
            credits.packages = sum(1 for p in packages if p.credit_kpis)
        passed = sum(1 for k in kpis if k.passed is True)
        failed = sum(1 for k in kpis if k.passed is False)
        cards.append(Scorecard(
            SCHEMA, info.partner_id, info.display_name, week, tz,
            local_iso(start, tz) or "", local_iso(end, tz) or "", passed, failed, kpis,
            regions, region_days, _hubs(store, info, start, end), failures, split, cost,
            credits, packages))
    return cards
