"""Brute-force oracle for the SLA metrics, written from docs/metrics.md without the core's code.

It imports only the data classes (``CanonicalEvent``, ``SlaContract``). It replays the arrival
order to find which events were applied (watermark and dedup rules), then for every package sorts
its full event list and recomputes everything with plain loops; window totals are summed directly
per granularity (no rollup, no retraction).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from carrierwatch.core.model import CanonicalEvent
from carrierwatch.core.partner import SlaContract

__all__ = ["OracleResult", "compute"]

ORDER = ["info_received", "picked_up", "staged", "in_transit", "unknown", "exception",
         "out_for_delivery", "delivery_attempted", "available_for_pickup", "delivered",
         "returned", "cancelled"]
RANK = {status: i for i, status in enumerate(ORDER)}
HOLDS = {"picked_up", "staged", "in_transit", "out_for_delivery", "delivery_attempted",
         "available_for_pickup", "delivered"}
TERMINAL = {"delivered", "returned", "cancelled"}
LEVEL = {"info_received": 0, "picked_up": 1, "staged": 2, "in_transit": 2,
         "out_for_delivery": 3, "delivery_attempted": 3, "available_for_pickup": 3,
         "delivered": 4, "returned": 4, "cancelled": 4}
SIZES = {"5m": 300_000, "1h": 3_600_000, "1d": 86_400_000, "1w": 604_800_000}
COUNTERS = [
    "events", "codebook_gap_events", "synthetic_events", "too_late_events", "latency_count",
    "latency_sum_ms", "carrier_lag_count", "carrier_lag_sum_ms", "ingest_lag_count",
    "ingest_lag_sum_ms", "packages_decided", "packages_on_time", "packages_with_exception",
    "first_attempts", "first_attempt_successes", "pickups_due", "pickups_on_time", "deliveries",
    "tracking_compliant", "lateness_count", "lateness_sum_s", "lateness_sum_sq_s2",
    "eta_checked", "eta_accurate", "exceptions_opened", "exceptions_resolved",
    "resolution_sum_ms",
]
MAPS = ["events_by_status", "latency_hist", "carrier_lag_hist", "ingest_lag_hist",
        "resolution_hist"]


def bucket(ms: int) -> int:
    if ms < 1000:
        return 0
    return min(700, int(math.log(ms / 1000) / math.log(1.05)) + 1)


def start_of(t: int, granularity: str) -> int:
    size = SIZES[granularity]
    if granularity == "1w":
        monday = 4 * 86_400_000
        return monday + (t - monday) // size * size
    return (t // size) * size


def epoch_ms(moment: datetime) -> int:
    return round(moment.timestamp() * 1000)


def contract_promise(contract: SlaContract, start: int, level: str) -> int:
    zone = ZoneInfo(contract.timezone)
    day: date = datetime.fromtimestamp(start / 1000, zone).date()
    days = contract.transit_days.get(level, contract.transit_days[contract.default_service_level])
    counted = 0
    while counted < days:
        day = day + timedelta(days=1)
        if day.isoweekday() <= 5:
            counted += 1
    following = day + timedelta(days=1)
    return epoch_ms(datetime(following.year, following.month, following.day, tzinfo=zone)) - 1


def pickup_due(contract: SlaContract, info: int) -> int:
    zone = ZoneInfo(contract.timezone)
    local = datetime.fromtimestamp(info / 1000, zone)
    hh, mm = (int(x) for x in contract.pickup_cutoff.split(":"))
    day = local.date()
    if (local.hour, local.minute) >= (hh, mm):
        day = day + timedelta(days=1)
    return epoch_ms(datetime(day.year, day.month, day.day, hh, mm, tzinfo=zone))


class OracleResult:
    def __init__(self) -> None:
        self.windows: dict[tuple[str, str, str, str, int], dict[str, Any]] = {}
        self.outcomes: dict[str, dict[str, Any]] = {}
        self.too_late = 0
        self.duplicates = 0

    def cell(self, key: tuple[str, str, str, str, int]) -> dict[str, Any]:
        if key not in self.windows:
            row: dict[str, Any] = {name: 0 for name in COUNTERS}
            for name in MAPS:
                row[name] = {}
            self.windows[key] = row
        return self.windows[key]


def _status(event: CanonicalEvent) -> str:
    return event.status if event.status in RANK else "unknown"


def compute(batches: Sequence[tuple[Sequence[CanonicalEvent], int | None]],
            contracts: Mapping[str, SlaContract], *, granularities: Sequence[str],
            allowed_lateness_ms: int, eta_tolerance_ms: int,
            lateness_scope: str = "shard") -> OracleResult:
    """Every window total and package outcome after the last batch and a final flush.

    ``lateness_scope`` "shard": an event is too late when it is older than the newest applied
    event time of all input minus the allowed lateness (or an advanced watermark); "package":
    older than the newest applied event time *of its own package* minus the allowed lateness.
    """
    result = OracleResult()

    def add(partner: str, region: str, level: str, when: int, name: str, amount: int) -> None:
        for granularity in granularities:
            cell = result.cell((partner, region, level, granularity, start_of(when, granularity)))
            cell[name] += amount

    def add_map(partner: str, region: str, level: str, when: int, name: str, item: Any) -> None:
        for granularity in granularities:
            cell = result.cell((partner, region, level, granularity, start_of(when, granularity)))
            cell[name][item] = cell[name].get(item, 0) + 1

    # 1. which events are applied
    watermark: float = -math.inf
    newest: float = -math.inf
    seen: set[str] = set()
    per_package: dict[str, list[CanonicalEvent]] = defaultdict(list)
    for batch, advance in batches:
        for event in batch:
            contract = contracts[event.partner_id]
            region = event.location.region if event.location and event.location.region \
                else "unknown"
            level = event.service_level or contract.default_service_level
            bound = watermark
            if lateness_scope == "package":
                applied = per_package.get(event.package_id)
                bound = max(e.event_time for e in applied) - allowed_lateness_ms if applied \
                    else -math.inf
            if event.event_time < bound and event.event_id in seen:
                result.duplicates += 1     # a repeated copy of an applied event: not late
                continue
            if event.event_time < bound:
                result.too_late += 1
                add(event.partner_id, region, level, event.event_time, "too_late_events", 1)
                continue
            if event.event_id in seen:
                result.duplicates += 1
                continue
            seen.add(event.event_id)
            per_package[event.package_id].append(event)
            if event.event_time > newest:
                newest = event.event_time
                watermark = max(watermark, newest - allowed_lateness_ms)
            # event-level metrics
            p = event.partner_id
            if event.synthetic:
                add(p, region, level, event.event_time, "synthetic_events", 1)
                continue
            add(p, region, level, event.event_time, "events", 1)
            add_map(p, region, level, event.event_time, "events_by_status", _status(event))
            if _status(event) == "unknown":
                add(p, region, level, event.event_time, "codebook_gap_events", 1)
            latency = event.received_time - event.event_time
            add(p, region, level, event.event_time, "latency_count", 1)
            add(p, region, level, event.event_time, "latency_sum_ms", latency)
            add_map(p, region, level, event.event_time, "latency_hist", bucket(latency))
            if event.partner_received_time is not None:
                carrier = event.partner_received_time - event.event_time
                ingest = event.received_time - event.partner_received_time
                add(p, region, level, event.event_time, "carrier_lag_count", 1)
                add(p, region, level, event.event_time, "carrier_lag_sum_ms", carrier)
                add_map(p, region, level, event.event_time, "carrier_lag_hist", bucket(carrier))
                add(p, region, level, event.event_time, "ingest_lag_count", 1)
                add(p, region, level, event.event_time, "ingest_lag_sum_ms", ingest)
                add_map(p, region, level, event.event_time, "ingest_lag_hist", bucket(ingest))
        if advance is not None:
            watermark = max(watermark, advance)
    final_watermark = max(watermark, newest)

    # 2. every package from its sorted event list
    for package_id, events in per_package.items():
        events = sorted(events, key=lambda e: (e.event_time, RANK[_status(e)], e.event_id))
        partner = events[0].partner_id
        contract = contracts[partner]
        statuses = [_status(e) for e in events]
        region = next((e.location.region for e in events if e.location and e.location.region),
                      "unknown")
        level = next((e.service_level for e in events if e.service_level),
                     contract.default_service_level)
        synthetic = any(e.synthetic for e in events)
        infos = [e.event_time for e, s in zip(events, statuses, strict=True) if s == "info_received"]
        holds = [e.event_time for e, s in zip(events, statuses, strict=True) if s in HOLDS]
        info = min(infos) if infos else None
        pickup = min(holds) if holds else None
        feed = next((e.promised_by for e in events if e.promised_by is not None), None)
        if feed is not None:
            promised: int | None = feed
        elif pickup is not None or info is not None:
            promised = contract_promise(contract, pickup if pickup is not None else info, level)  # type: ignore[arg-type]
        else:
            promised = None
        due = pickup_due(contract, info) if info is not None else None
        delivered_index = next((i for i, s in enumerate(statuses) if s == "delivered"), None)
        delivered_at = events[delivered_index].event_time if delivered_index is not None else None
        first_index = next((i for i, s in enumerate(statuses)
                            if s in ("delivery_attempted", "delivered")), None)
        limit = delivered_index if delivered_index is not None else len(events)
        attempts = statuses[:limit].count("delivery_attempted") + \
            (1 if delivered_index is not None else 0)
        # flags and exception episodes: one pass in sort order
        flags = 0
        terminal_seen = False
        highest = -1
        episodes: list[tuple[int, int | None]] = []
        for event, status in zip(events, statuses, strict=True):
            flagged = False
            if terminal_seen:
                flagged = True
            elif status in LEVEL:
                if LEVEL[status] <= 1 and LEVEL[status] < highest:
                    flagged = True
                highest = max(highest, LEVEL[status])
            if status in TERMINAL:
                terminal_seen = True
            flags += flagged
            if status == "exception":
                if not episodes or episodes[-1][1] is not None:
                    episodes.append((event.event_time, None))
            elif status in HOLDS and episodes and episodes[-1][1] is None:
                episodes[-1] = (episodes[-1][0], event.event_time)
        cancelled = "cancelled" in statuses
        if "delivered" in statuses:
            current = "delivered"
        elif "returned" in statuses:
            current = "returned"
        elif cancelled:
            current = "cancelled"
        else:
            current = statuses[-1]
        on_time: bool | None = None
        decided_at: int | None = None
        if promised is not None and (delivered_at is not None or not cancelled):
            deadline = promised + contract.grace_minutes * 60_000
            if delivered_at is not None and delivered_at <= deadline:
                on_time, decided_at = True, delivered_at
            elif delivered_at is not None or final_watermark >= deadline:
                on_time, decided_at = False, deadline
        pickup_ok: bool | None = None
        pickup_when: int | None = None
        if due is not None:
            if pickup is not None and pickup <= due:
                pickup_ok, pickup_when = True, pickup
            elif pickup is not None or (final_watermark >= due and not cancelled):
                pickup_ok, pickup_when = False, due
        etas = [e for e in events[:limit] if e.eta_end is not None or e.eta_start is not None]
        last_eta_event = etas[-1] if etas else None
        all_etas = [e for e in events if e.eta_end is not None or e.eta_start is not None]
        result.outcomes[package_id] = {
            "region": region, "service_level": level, "status": current, "events": len(events),
            "promised_by": promised, "pickup_due": due, "picked_up_at": pickup,
            "pickup_on_time": pickup_ok, "delivered_at": delivered_at, "on_time": on_time,
            "decided_at": decided_at, "attempts": attempts,
            "first_attempt_success": None if first_index is None
            else statuses[first_index] == "delivered",
            "exceptions": len(episodes), "flags": flags,
            "open_exception_since": episodes[-1][0] if episodes and episodes[-1][1] is None
            else None,
            "last_eta": None if not all_etas else (all_etas[-1].eta_end if all_etas[-1].eta_end
                                                   is not None else all_etas[-1].eta_start),
            "synthetic": synthetic,
        }
        if synthetic:
            continue
        if decided_at is not None:
            add(partner, region, level, decided_at, "packages_decided", 1)
            add(partner, region, level, decided_at, "packages_on_time", int(bool(on_time)))
            add(partner, region, level, decided_at, "packages_with_exception",
                int(bool(episodes)))
        if first_index is not None:
            when = events[first_index].event_time
            add(partner, region, level, when, "first_attempts", 1)
            add(partner, region, level, when, "first_attempt_successes",
                int(statuses[first_index] == "delivered"))
        if pickup_when is not None:
            add(partner, region, level, pickup_when, "pickups_due", 1)
            add(partner, region, level, pickup_when, "pickups_on_time", int(bool(pickup_ok)))
        if delivered_at is not None:
            add(partner, region, level, delivered_at, "deliveries", 1)
            compliant = all(m in statuses for m in contract.required_milestones)
            add(partner, region, level, delivered_at, "tracking_compliant", int(compliant))
            if promised is not None:
                late_s = math.floor((delivered_at - promised) / 1000)
                add(partner, region, level, delivered_at, "lateness_count", 1)
                add(partner, region, level, delivered_at, "lateness_sum_s", late_s)
                add(partner, region, level, delivered_at, "lateness_sum_sq_s2", late_s * late_s)
            if last_eta_event is not None:
                end = last_eta_event.eta_end if last_eta_event.eta_end is not None \
                    else last_eta_event.eta_start
                begin = last_eta_event.eta_start if last_eta_event.eta_start is not None else end
                assert begin is not None and end is not None
                accurate = begin - eta_tolerance_ms <= delivered_at <= end + eta_tolerance_ms
                add(partner, region, level, delivered_at, "eta_checked", 1)
                add(partner, region, level, delivered_at, "eta_accurate", int(accurate))
        for opened, resolved in episodes:
            add(partner, region, level, opened, "exceptions_opened", 1)
            if resolved is not None:
                add(partner, region, level, resolved, "exceptions_resolved", 1)
                add(partner, region, level, resolved, "resolution_sum_ms", resolved - opened)
                add_map(partner, region, level, resolved, "resolution_hist",
                        bucket(resolved - opened))
    return result


# ---------------------------------------------------------------------------------------------
# Hub dwell (docs/metrics.md, "Hub dwell"), written from the definition without the core's code.

def hub_stays(events: Sequence[CanonicalEvent]) -> list[tuple[str, int, int]]:
    """``(hub, arrived_at, departed_at)`` of one package's measured hub stays."""
    seen: dict[str, CanonicalEvent] = {}
    for event in events:
        seen.setdefault(event.event_id, event)
    ordered = sorted(seen.values(), key=lambda e: (e.event_time, RANK.get(_status(e), 4),
                                                   e.event_id))
    stays = []
    for i, event in enumerate(ordered):
        if _status(event) != "staged" or event.location is None:
            continue
        city, region = event.location.city, event.location.region
        hub = f"{city}, {region}" if city and region else (city or region)
        if not hub:
            continue
        for later in ordered[i + 1:]:
            status = _status(later)
            if status in ("staged", "delivered", "returned", "cancelled"):
                break
            if status in ("in_transit", "out_for_delivery"):
                stays.append((hub, event.event_time, later.event_time))
                break
    return stays
