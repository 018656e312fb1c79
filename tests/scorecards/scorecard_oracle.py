"""An independent oracle for the scorecards, written from docs/scorecards.md and
docs/metrics.md without the scorecard's code.

Input: the canonical events of a store (the pipeline's input) and the contracts. The per-package
facts and window counters come from the core oracle (tests/core/oracle.py, itself written without
the core's code); everything a scorecard adds (weeks in local time, KPI formulas, quantiles,
ranks, trends, regions, hub stays, failures and accountability, cost, credits, the package
sheet) is computed here with plain loops.
"""

from __future__ import annotations

import math
import sys
from collections import defaultdict
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "core"))

from oracle import RANK, bucket, compute, hub_stays

from carrierwatch.core.model import CanonicalEvent
from carrierwatch.core.partner import SlaContract

DAY = 86_400_000
PARTY = {"recipient_not_available": "consignee", "access_issue": "consignee",
         "customer_request": "consignee", "refused": "consignee", "payment_due": "consignee",
         "address_issue": "shipper", "customs": "customs", "weather": "force_majeure"}
PARTIES = ["carrier", "consignee", "shipper", "customs", "force_majeure"]
# key, contract field, direction, kind
KPI_TABLE = [
    ("on_time", "on_time_target", "higher"), ("first_attempt", "first_attempt_target", "higher"),
    ("exception_rate", "exception_rate_max", "lower"),
    ("exception_resolution_mean", "exception_resolution_mean_max_hours", "lower"),
    ("exception_resolution_p90", "exception_resolution_p90_max_hours", "lower"),
    ("pickup_compliance", "pickup_compliance_target", "higher"),
    ("tracking_compliance", "tracking_compliance_target", "higher"),
    ("event_latency_p95", "event_latency_p95_max_minutes", "lower"),
    ("eta_accuracy", "eta_accuracy_target", "higher"),
    ("delay_stddev", "delay_stddev_max_hours", "lower"),
]


def party(reason: str | None, contract: SlaContract) -> str:
    reason = reason or "unknown"
    return contract.accountability.get(reason) or PARTY.get(reason, "carrier")


def week_range(week: str, tz: str) -> tuple[int, int]:
    year, number = int(week[:4]), int(week[6:])
    monday = date.fromisocalendar(year, number, 1)
    zone = ZoneInfo(tz)
    a = datetime(monday.year, monday.month, monday.day, tzinfo=zone)
    b = a.replace(tzinfo=None) + timedelta(days=7)
    b_local = datetime(b.year, b.month, b.day, tzinfo=zone)
    return int(a.timestamp()) * 1000, int(b_local.timestamp()) * 1000


def earlier_week(week: str, n: int) -> str:
    monday = date.fromisocalendar(int(week[:4]), int(week[6:]), 1) - timedelta(days=7 * n)
    y, w, _ = monday.isocalendar()
    return f"{y}-W{w:02d}"


def quantile_ms(hist: dict[int, int], q: float) -> int | None:
    total = sum(hist.values())
    if not total:
        return None
    need = max(1, math.ceil(q * total))
    running = 0
    for b in sorted(hist):
        running += hist[b]
        if running >= need:
            return 0 if b == 0 else round(1000 * 1.05 ** (b - 0.5))
    raise AssertionError


def band_verdict(value_ms: int, limit_ms: float) -> bool | None:
    b = bucket(value_ms)
    low = 0 if b == 0 else 1000 * 1.05 ** (b - 1)
    high = 1000 * 1.05 ** b
    if low > limit_ms:
        return False
    if high <= limit_ms:
        return True
    return None


class ScorecardOracle:
    def __init__(self, events: list[CanonicalEvent], contracts: dict[str, SlaContract],
                 prefixes: dict[str, str]) -> None:
        self.contracts = contracts
        ordered = sorted(events, key=lambda e: (e.received_time, e.event_time))
        self.result = compute([(ordered, None)], contracts, granularities=("5m",),
                              allowed_lateness_ms=2 * DAY, eta_tolerance_ms=7_200_000,
                              lateness_scope="package")
        self.packages: dict[str, list[CanonicalEvent]] = defaultdict(list)
        for e in events:
            self.packages[e.package_id].append(e)
        self.real = {pid for pid, evs in self.packages.items()
                     if not any(e.synthetic for e in evs)
                     and not evs[0].tracking_number.startswith(prefixes[evs[0].partner_id])}

    # -- window sums ----------------------------------------------------------------------
    def sums(self, partner: str, start: int, end: int, region: str | None = None,
             day_tz: str | None = None) -> dict[Any, dict[str, Any]]:
        out: dict[Any, dict[str, Any]] = {}
        for (p, reg, _level, _g, wstart), cell in self.result.windows.items():
            if p != partner or not start <= wstart < end:
                continue
            if region is not None and reg != region:
                continue
            key: Any = reg if day_tz is None else (
                reg, datetime.fromtimestamp(wstart / 1000, ZoneInfo(day_tz)).date().isoformat())
            total = out.setdefault(key, defaultdict(int))
            for name, value in cell.items():
                if isinstance(value, dict):
                    h = total.setdefault(name, defaultdict(int))  # type: ignore[call-overload]
                    for k, v in value.items():
                        h[k] += v
                else:
                    total[name] += value
        return out

    def totals(self, partner: str, start: int, end: int) -> dict[str, Any] | None:
        by_region = self.sums(partner, start, end)
        if not by_region:
            return None
        total: dict[str, Any] = defaultdict(int)
        for cell in by_region.values():
            for name, value in cell.items():
                if isinstance(value, dict):
                    h = total.setdefault(name, defaultdict(int))
                    for k, v in value.items():
                        h[k] += v
                else:
                    total[name] += value
        return total

    def kpis(self, partner: str, week: str) -> dict[str, tuple[Any, ...]] | None:
        """key -> (value, numerator, denominator, target, passed)"""
        contract = self.contracts[partner]
        start, end = week_range(week, contract.timezone)
        t = self.totals(partner, start, end)
        if t is None:
            return None

        def rate(n: str, d: str) -> tuple[Any, ...]:
            return (t[n] / t[d] if t[d] else None, t[n], t[d])

        out = {}
        for key, field, better in KPI_TABLE:
            target = getattr(contract, field)
            if key == "on_time":
                value, num, den = rate("packages_on_time", "packages_decided")
            elif key == "first_attempt":
                value, num, den = rate("first_attempt_successes", "first_attempts")
            elif key == "exception_rate":
                value, num, den = rate("packages_with_exception", "packages_decided")
            elif key == "exception_resolution_mean":
                den = t["exceptions_resolved"]
                num = t["resolution_sum_ms"] / 3_600_000
                value = num / den if den else None
            elif key == "exception_resolution_p90":
                den, num = t["exceptions_resolved"], None
                q = quantile_ms(dict(t.get("resolution_hist", {})), 0.9)
                value = None if q is None else q / 3_600_000
            elif key == "pickup_compliance":
                value, num, den = rate("pickups_on_time", "pickups_due")
            elif key == "tracking_compliance":
                value, num, den = rate("tracking_compliant", "deliveries")
            elif key == "event_latency_p95":
                den, num = t["latency_count"], None
                q = quantile_ms(dict(t.get("latency_hist", {})), 0.95)
                value = None if q is None else q / 60_000
            elif key == "eta_accuracy":
                value, num, den = rate("eta_accurate", "eta_checked")
            else:
                n = t["lateness_count"]
                den, num = n, None
                if n:
                    mean = t["lateness_sum_s"] / n
                    value = math.sqrt(max(0.0, t["lateness_sum_sq_s2"] / n - mean * mean)) / 3600
                else:
                    value = None
            if value is None or target is None:
                passed = None
            elif key == "event_latency_p95":
                passed = band_verdict(round(value * 60_000), target * 60_000)
            elif key == "exception_resolution_p90":
                passed = band_verdict(round(value * 3_600_000), target * 3_600_000)
            else:
                passed = value >= target if better == "higher" else value <= target
            out[key] = (value, num, den, target, passed)
        return out

    # -- events ---------------------------------------------------------------------------
    def real_events(self, partner: str) -> list[CanonicalEvent]:
        seen: dict[str, CanonicalEvent] = {}
        for pid in sorted(self.real):
            for e in self.packages[pid]:
                if e.partner_id == partner:
                    seen.setdefault(e.event_id, e)
        return list(seen.values())

    def hubs(self, partner: str, start: int, end: int) -> dict[str, list[int]]:
        stays: dict[str, list[int]] = defaultdict(list)
        for pid in self.real:
            evs = self.packages[pid]
            if evs[0].partner_id != partner:
                continue
            for hub, arrived, departed in hub_stays(evs):
                if start <= departed < end and arrived >= start - 7 * DAY:
                    stays[hub].append(departed - arrived)
        return stays

    def failures(self, partner: str, start: int, end: int) -> dict[tuple[str, str], int]:
        counts: dict[tuple[str, str], int] = defaultdict(int)
        for e in self.real_events(partner):
            if start <= e.event_time < end and e.status in ("exception", "delivery_attempted"):
                kind = "exception" if e.status == "exception" else "failed_attempt"
                counts[(kind, e.reason or "unknown")] += 1
        return counts

    def returns(self, partner: str, start: int, end: int) -> int:
        return len({e.package_id for e in self.real_events(partner)
                    if e.status == "returned" and start <= e.event_time < end})

    def package_sheet(self, partner: str, start: int, end: int,
                      credited: set[str]) -> dict[str, dict[str, Any]]:
        contract = self.contracts[partner]
        zone = ZoneInfo(contract.timezone)

        def local(ms: int | None) -> str | None:
            return None if ms is None else datetime.fromtimestamp(ms // 1000, zone).isoformat()

        sheet = {}
        for pid in sorted(self.real):
            evs = {e.event_id: e for e in self.packages[pid]}.values()
            first_event = next(iter(evs))
            if first_event.partner_id != partner:
                continue
            ordered = sorted(evs, key=lambda e: (e.event_time, RANK.get(e.status, 4),
                                                 e.event_id))
            o = self.result.outcomes[pid]
            attempts = [e for e in ordered if e.status in ("delivery_attempted", "delivered")]
            first = attempts[0] if attempts else None

            def inside(ms: int | None) -> bool:
                return ms is not None and start <= ms < end

            decided = inside(o["decided_at"])
            delivered = inside(o["delivered_at"])
            first_in = first is not None and inside(first.event_time)
            missed_pickup = inside(o["pickup_due"]) and o["pickup_on_time"] is False
            if not (decided or delivered or first_in or missed_pickup):
                continue
            statuses = {e.status for e in ordered}
            why = []
            if decided and o["on_time"] is False:
                why.append("on_time")
            if first_in and first is not None and first.status != "delivered":
                why.append("first_attempt")
            if missed_pickup:
                why.append("pickup_compliance")
            if delivered and not set(contract.required_milestones) <= statuses:
                why.append("tracking_compliance")
            if decided and o["exceptions"]:
                why.append("exception_rate")
            if o["on_time"] is True:
                outcome = "on_time"
            elif o["on_time"] is False:
                outcome = ("late" if o["delivered_at"] is not None else
                           "returned" if o["status"] == "returned" else "not_delivered")
            else:
                outcome = "delivered_no_promise" if o["delivered_at"] is not None else "open"
            failing = [e for e in ordered if e.status in ("exception", "delivery_attempted")
                       and e.reason is not None and e.event_time < end]
            reason = max(failing, key=lambda e: e.event_time).reason if failing else None
            failed = outcome in ("late", "returned", "not_delivered") or (
                first is not None and first.status != "delivered") or bool(o["exceptions"])
            deliveries = [e for e in ordered if e.status == "delivered"]
            sheet[first_event.tracking_number] = {
                "service_level": o["service_level"], "region": o["region"],
                "promised_by": local(o["promised_by"]), "delivered_at": local(o["delivered_at"]),
                "outcome": outcome, "attempts": o["attempts"],
                "first_attempt": None if first is None else
                ("success" if first.status == "delivered" else "failed"),
                "reason": reason, "accountable": party(reason, contract) if failed else None,
                "proof_of_delivery": deliveries[0].proof_of_delivery if deliveries else None,
                "credit_kpis": [k for k in why if k in credited],
            }
        return sheet
