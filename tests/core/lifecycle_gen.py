"""A small seeded package-lifecycle generator for the core tests (independent of the simulator).

It produces canonical events directly, with what real feeds do: on-time and late deliveries,
feeds that stop, failed first attempts, exceptions with and without resolution, ETA revisions and
promise revisions, events without location, unknown codes, synthetic packages, events dated after
the delivery, duplicates, out-of-order arrival and arrivals later than the allowed lateness.
Every package records what was injected (``GeneratedPackage.tags``) so tests can check coverage.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from carrierwatch.core.model import CanonicalEvent, Location, event_id
from carrierwatch.core.partner import SlaContract

__all__ = [
    "CONTRACTS",
    "START_MS",
    "Generated",
    "GeneratedPackage",
    "arrival_batches",
    "generate",
]

MIN = 60_000
HOUR = 3_600_000
DAY = 86_400_000
START_MS = 1_772_323_200_000  # 2026-03-01 00:00 UTC (a Sunday)

CONTRACTS: dict[str, SlaContract] = {
    "swiftly": SlaContract(timezone="America/Chicago", grace_minutes=30, pickup_cutoff="17:00",
                           transit_days={"ground": 3, "express": 1}),
    "parcelco": SlaContract(timezone="Europe/Berlin", grace_minutes=0, pickup_cutoff="14:30",
                            transit_days={"standard": 2}, default_service_level="standard",
                            required_milestones=("picked_up", "in_transit", "delivered")),
    "metrobike": SlaContract(timezone="America/New_York", grace_minutes=120,
                             pickup_cutoff="11:00", transit_days={"same_day": 0, "next_day": 1},
                             default_service_level="next_day", required_milestones=()),
}
REGIONS = {"swiftly": ["US-TN", "US-TX", "US-IL"], "parcelco": ["DE-BE", "DE-BY"],
           "metrobike": ["US-NY"]}
LEVELS = {"swiftly": ["ground", "express", None], "parcelco": ["standard", None],
          "metrobike": ["same_day", "next_day", "cargo_bike", None]}
REASONS = ["recipient_not_available", "access_issue", "address_issue", "weather",
           "carrier_delay"]


@dataclass(slots=True)
class GeneratedPackage:
    partner_id: str
    package_id: str
    events: list[CanonicalEvent]
    tags: set[str] = field(default_factory=set)


@dataclass(slots=True)
class Generated:
    packages: list[GeneratedPackage]
    arrivals: list[CanonicalEvent]  # every delivery of an event to us, in arrival order


def _event(rng: random.Random, pkg: GeneratedPackage, status: str, when: int, *,
           region: str | None, level: str | None, received: int,
           partner_received: bool, synthetic: bool, **extra: object) -> CanonicalEvent:
    location = Location(country=region.split("-")[0], region=region) if region else None
    return CanonicalEvent(
        event_id=event_id(pkg.partner_id, pkg.package_id, status, when),
        partner_id=pkg.partner_id, package_id=pkg.package_id,
        tracking_number=pkg.package_id.split(":")[1], status=status,
        confidence=0.0 if status == "unknown" else 1.0, raw_code=status.upper()[:4],
        event_time=when, received_time=received, location=location, service_level=level,
        synthetic=synthetic,
        partner_received_time=(when + (received - when) // 3) if partner_received else None,
        **extra)  # type: ignore[arg-type]


def _scan(scans: list[tuple[str, int, dict[str, object]]], status: str, when: int,
          **extra: object) -> None:
    scans.append((status, when, extra))


def generate(seed: int, n_packages: int, *, span_days: float = 12.0,
             allowed_lateness_ms: int = 2 * DAY) -> Generated:
    """Generate ``n_packages`` package lifecycles and their arrival order."""
    rng = random.Random(seed)
    packages: list[GeneratedPackage] = []
    arrivals: list[tuple[int, float, CanonicalEvent]] = []
    partners = list(CONTRACTS)
    for index in range(n_packages):
        partner = rng.choice(partners)
        pkg = GeneratedPackage(partner, f"{partner}:T{seed}{index:07d}", [])
        synthetic = rng.random() < 0.03
        if synthetic:
            pkg.tags.add("synthetic")
        region = rng.choice(REGIONS[partner])
        level = rng.choice(LEVELS[partner])
        partner_received = partner != "swiftly"
        t = START_MS + int(rng.random() * span_days * DAY)
        feed_promise: int | None = None
        if rng.random() < 0.55:
            feed_promise = t + rng.choice([1, 2, 3, 4]) * DAY + rng.randrange(0, 12) * HOUR
            pkg.tags.add("feed_promise")
        scans: list[tuple[str, int, dict[str, object]]] = []

        first_extra: dict[str, object] = {}
        if feed_promise is not None:
            first_extra["promised_by"] = feed_promise
        if rng.random() < 0.9:
            _scan(scans, "info_received", t, **first_extra)
            first_extra = {}
        else:
            pkg.tags.add("no_info")
        if rng.random() < 0.05:
            _scan(scans, "cancelled", t + rng.randrange(1, 20) * HOUR)
            pkg.tags.add("cancelled")
        else:
            t += rng.randrange(30, 40 * 60) * MIN
            if rng.random() < 0.93:
                _scan(scans, "picked_up", t, **first_extra)
            else:
                pkg.tags.add("no_pickup_scan")
                _scan(scans, "in_transit", t, **first_extra)
            hops = rng.randrange(1, 4)
            for _ in range(hops):
                t += rng.randrange(1, 20) * HOUR
                extra: dict[str, object] = {}
                if rng.random() < 0.3:
                    extra["eta_start"] = t + rng.randrange(10, 60) * HOUR
                    extra["eta_end"] = extra["eta_start"] + rng.choice([2, 4, 12]) * HOUR  # type: ignore[operator]
                    pkg.tags.add("eta")
                if feed_promise is not None and rng.random() < 0.1:
                    extra["promised_by"] = feed_promise + DAY
                    pkg.tags.add("promise_revised")
                _scan(scans, rng.choice(["staged", "in_transit", "in_transit"]), t, **extra)
                if rng.random() < 0.12:
                    t += rng.randrange(5, 300) * MIN
                    _scan(scans, "exception", t, reason=rng.choice(REASONS))
                    pkg.tags.add("exception")
                if rng.random() < 0.03:
                    t += rng.randrange(5, 60) * MIN
                    _scan(scans, "unknown", t)
                    pkg.tags.add("unknown_code")
            fate = rng.random()
            if fate < 0.08:
                pkg.tags.add("feed_stops")
            elif fate < 0.12:
                t += rng.randrange(2, 48) * HOUR
                _scan(scans, "returned", t)
                pkg.tags.add("returned")
            else:
                t += rng.randrange(2, 30) * HOUR
                _scan(scans, "out_for_delivery", t, eta_start=t + 2 * HOUR, eta_end=t + 6 * HOUR)
                if rng.random() < 0.15:
                    t += rng.randrange(1, 8) * HOUR
                    _scan(scans, "delivery_attempted", t, reason=rng.choice(REASONS))
                    pkg.tags.add("failed_first_attempt")
                    t += rng.randrange(14, 30) * HOUR
                    _scan(scans, "out_for_delivery", t)
                if rng.random() < 0.08:
                    t += rng.randrange(1, 120) * MIN
                    _scan(scans, "exception", t, reason="access_issue")
                    pkg.tags.add("exception_before_delivery")
                t += rng.randrange(10, 9 * 60) * MIN
                _scan(scans, "delivered", t, proof_of_delivery=rng.choice(["photo", "signature", None]))
                pkg.tags.add("delivered")
                if rng.random() < 0.03:
                    _scan(scans, "in_transit", t + rng.randrange(1, 10) * HOUR)
                    pkg.tags.add("after_delivered")
                if rng.random() < 0.02:
                    _scan(scans, "delivered", t + rng.randrange(1, 10) * MIN)
                    pkg.tags.add("second_delivered")
        for status, when, extra in scans:
            ev_region = region if rng.random() < 0.85 else None
            ev_level = level if rng.random() < 0.7 else None
            delay = int(rng.lognormvariate(2.5, 1.2) * MIN)
            if rng.random() < 0.01:
                delay = allowed_lateness_ms + rng.randrange(1, 48) * HOUR
                pkg.tags.add("too_late")
            event = _event(rng, pkg, status, when, region=ev_region, level=ev_level,
                           received=when + delay, partner_received=partner_received,
                           synthetic=synthetic, **extra)
            pkg.events.append(event)
            arrivals.append((event.received_time, rng.random(), event))
            if rng.random() < 0.08:
                again = event.received_time + rng.randrange(0, 6 * HOUR)
                arrivals.append((again, rng.random(), event))
                pkg.tags.add("duplicate")
        packages.append(pkg)
    arrivals.sort(key=lambda item: (item[0], item[1]))
    # Local shuffles on top of the received-time order (a partition's order is not perfect).
    ordered = [event for _, _, event in arrivals]
    for i in range(0, len(ordered) - 1, 7):
        j = min(len(ordered) - 1, i + rng.randrange(1, 5))
        ordered[i], ordered[j] = ordered[j], ordered[i]
    return Generated(packages, ordered)


def arrival_batches(arrivals: list[CanonicalEvent], batch_size: int, allowed_lateness_ms: int
                    ) -> list[tuple[list[CanonicalEvent], int | None]]:
    """Cut arrivals into batches; every 5th batch also carries a processing-time watermark
    (``received time of its last event - allowed lateness``) for ``advance_watermark``."""
    batches: list[tuple[list[CanonicalEvent], int | None]] = []
    for number, start in enumerate(range(0, len(arrivals), batch_size)):
        batch = arrivals[start:start + batch_size]
        advance = batch[-1].received_time - allowed_lateness_ms if number % 5 == 4 else None
        batches.append((batch, advance))
    return batches
