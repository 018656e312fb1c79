"""Package stories: order, places, and realistic shares over a few thousand packages."""

from __future__ import annotations

import itertools
import random
import statistics
from collections.abc import Sequence
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from carrierwatch.core.timeutil import zone_for
from carrierwatch.synthetic.incidents import Incident, PartnerIncidents
from carrierwatch.synthetic.lifecycle import (
    PartnerProfile,
    business_days_after,
    pickup_due,
    simulate_package,
)
from carrierwatch.synthetic.model import SimPackage, SimScan
from carrierwatch.transformers.registry import PartnerRegistry

MONDAY = 1_772_409_600_000  # 2026-03-02T00:00:00Z
H = 3_600_000
D = 24 * H
Story = tuple[SimPackage, list[SimScan]]


def _stories(profile: PartnerProfile, count: int, incidents: Sequence[Incident] = (),
             seed: int = 5) -> list[Story]:
    rng = random.Random(seed)
    effects = PartnerIncidents(incidents)
    stories = []
    for index in range(count):
        # weekdays of two weeks, 13:00-23:00 UTC (business hours across US zones)
        day = rng.choice([0, 1, 2, 3, 4, 7, 8, 9, 10, 11])
        ship_time = MONDAY + day * D + rng.randint(13 * H, 23 * H) // 1000 * 1000
        stories.append(simulate_package(random.Random(f"{seed}:{index}"), profile,
                                        f"T{index:06d}", ship_time, effects))
    return stories


@pytest.fixture(scope="module")
def fedex(registry: PartnerRegistry) -> PartnerProfile:
    return PartnerProfile.build("fedex", registry.get("fedex").spec.contract)


@pytest.fixture(scope="module")
def stories(fedex: PartnerProfile) -> list[Story]:
    return _stories(fedex, 4000)


def _local(ms: int, zone: str) -> datetime:
    return datetime.fromtimestamp(ms / 1000, ZoneInfo(zone))


def _first(scans: Sequence[SimScan], status: str) -> SimScan | None:
    return next((s for s in scans if s.status == status), None)


def test_stories_are_ordered_and_end_in_a_final_state(stories: list[Story],
                                                       fedex: PartnerProfile) -> None:
    for package, scans in stories:
        assert scans[0].status == "info_received" and scans[0].event_time == package.ship_time
        assert all(a.event_time < b.event_time for a, b in itertools.pairwise(scans))
        assert all(s.event_time % 1000 == 0 for s in scans)
        assert all(s.visible_at > s.event_time for s in scans)
        assert scans[-1].status in {"delivered", "returned", "cancelled"}
        assert package.service_level in fedex.transit_days
        assert package.promised_by is not None and package.promised_by > package.ship_time


def test_places_are_real_us_places_in_their_time_zone(stories: list[Story]) -> None:
    checked = 0
    for _, scans in stories[:500]:
        for scan in scans:
            assert scan.country == "US" and scan.city and scan.region
            assert scan.postal_code is not None and len(scan.postal_code) == 5
            zone, exact = zone_for("US", scan.region)
            if exact:  # single-zone states: the zone is known for sure
                assert scan.zone == zone, (scan.city, scan.region, scan.zone)
                checked += 1
    assert checked > 1000
    routes = [len({(s.city, s.region) for s in scans}) for _, scans in stories[:500]]
    assert statistics.mean(routes) >= 2.5  # origin, hubs, destination


def test_pickups_respect_the_cutoff_with_a_few_late_ones(stories: list[Story],
                                                         fedex: PartnerProfile) -> None:
    late = picked = 0
    for package, scans in stories:
        pickup = _first(scans, "picked_up")
        if pickup is None:
            continue
        picked += 1
        due = pickup_due(package.ship_time, fedex.contract_zone, fedex.cutoff_minutes)
        late += pickup.event_time > due
    assert 0.03 <= late / picked <= 0.09


def test_shares_of_failures_exceptions_returns_and_late_deliveries(stories: list[Story]) -> None:
    attempted = failed_first = exceptions = returned = late = delivered = 0
    for package, scans in stories:
        statuses = [s.status for s in scans]
        exceptions += "exception" in statuses
        returned += "returned" in statuses
        first = next((s for s in scans if s.status in {"delivered", "delivery_attempted"}), None)
        if first is not None:
            attempted += 1
            failed_first += first.status == "delivery_attempted"
        final = _first(scans, "delivered")
        if final is not None:
            delivered += 1
            assert package.promised_by is not None
            late += final.event_time > package.promised_by
    count = len(stories)
    assert 0.05 <= failed_first / attempted <= 0.10
    assert 0.02 <= exceptions / count <= 0.04
    assert 0.001 <= returned / count <= 0.02
    assert 0.03 <= late / delivered <= 0.12


def test_failed_attempts_have_reasons_and_are_retried_next_business_day(
        stories: list[Story]) -> None:
    retried = 0
    for _, scans in stories:
        for index, scan in enumerate(scans):
            if scan.status != "delivery_attempted":
                continue
            assert scan.reason is not None and scan.attempt_number in {1, 2}
            following = scans[index + 1]
            if scan.reason == "refused":
                assert following.status == "returned"
            elif scan.attempt_number == 1:
                assert following.status == "out_for_delivery"
                expected = business_days_after(_local(scan.event_time, scan.zone).date(), 1)
                assert _local(following.event_time, following.zone).date() == expected
                retried += 1
    assert retried > 100


def test_exceptions_have_reasons_and_are_resolved_hours_later(stories: list[Story]) -> None:
    lasting = []
    for _, scans in stories:
        for index, scan in enumerate(scans):
            if scan.status == "exception":
                assert scan.reason is not None
                resolution = scans[index + 1]
                assert resolution.status == "in_transit" and resolution.city == scan.city
                lasting.append((resolution.event_time - scan.event_time) / H)
    assert len(lasting) > 60
    assert min(lasting) >= 2 and max(lasting) <= 41
    assert 5 <= statistics.median(lasting) <= 12


def test_delivery_days_have_a_morning_and_a_daytime(stories: list[Story]) -> None:
    mornings, deliveries = [], []
    for _, scans in stories:
        out = _first(scans, "out_for_delivery")
        done = next((s for s in scans if s.status in {"delivered", "delivery_attempted"}), None)
        if out is None or done is None:
            continue
        local_out = _local(out.event_time, out.zone)
        mornings.append(local_out.hour + local_out.minute / 60)
        local_done = _local(done.event_time, done.zone)
        assert local_done.date() == local_out.date()
        deliveries.append(local_done.hour + local_done.minute / 60)
    assert all(6.5 <= hour <= 9.6 for hour in mornings)
    assert all(7 <= hour <= 21 for hour in deliveries)
    assert 11 <= statistics.median(deliveries) <= 16


def test_transit_time_follows_the_service_level(stories: list[Story]) -> None:
    by_level: dict[str, list[float]] = {}
    for package, scans in stories:
        pickup, delivered = _first(scans, "picked_up"), _first(scans, "delivered")
        if pickup and delivered and "exception" not in {s.status for s in scans}:
            by_level.setdefault(package.service_level, []).append(
                (delivered.event_time - pickup.event_time) / D)
    overnight = statistics.mean(by_level["STANDARD_OVERNIGHT"] + by_level["PRIORITY_OVERNIGHT"])
    ground = statistics.mean(by_level["FEDEX_GROUND"])
    assert overnight < 2.0 < ground < 7.0


def test_eta_is_revised_when_the_delivery_day_moves(stories: list[Story],
                                                    fedex: PartnerProfile) -> None:
    moved = revised = 0
    for package, scans in stories:
        delivered = _first(scans, "delivered")
        if delivered is None or package.promised_by is None or len(scans) < 4:
            continue
        promise_day = _local(package.promised_by, fedex.contract_zone).date()
        before_delivery_day = [s for s in scans if s.status in {"staged", "in_transit"}]
        if _local(delivered.event_time, delivered.zone).date() != promise_day:
            moved += 1
            revised += any(s.eta_end != package.promised_by for s in before_delivery_day)
    assert moved > 100 and revised / moved > 0.95


def test_visibility_delay_is_log_normal_around_the_partner_median(
        stories: list[Story], fedex: PartnerProfile) -> None:
    delays = [(s.visible_at - s.event_time) / 60_000 for _, scans in stories for s in scans]
    median = statistics.median(delays)
    assert fedex.visibility.median_minutes / 1.2 <= median <= fedex.visibility.median_minutes * 1.2
    assert statistics.mean(delays) > median  # right-skewed


def test_incidents_change_the_stories(fedex: PartnerProfile) -> None:
    window = (MONDAY, MONDAY + 14 * D)
    spike = Incident("exception_spike", "fedex", *window, {"factor": 10.0})
    drift = Incident("latency_drift", "fedex", *window, {"max_ms": 6 * H})
    change = Incident("codebook_change", "fedex", MONDAY + 3 * D, MONDAY + 4 * D)
    base = _stories(fedex, 600)
    spiked = _stories(fedex, 600, [spike])
    share = sum(any(s.status == "exception" for s in scans) for _, scans in spiked) / 600
    assert share >= 0.15
    drifted = _stories(fedex, 600, [drift])
    extra = [(d.visible_at - b.visible_at) for (_, bs), (_, ds) in zip(base, drifted, strict=True)
             for b, d in zip(bs, ds, strict=True) if b.event_time == d.event_time]
    assert statistics.mean(extra) > 1.5 * H and max(extra) <= 6 * H
    changed = _stories(fedex, 600, [change])
    codes = [s for _, scans in changed for s in scans if s.raw_code is not None]
    assert codes and all(change.covers(s.event_time) for s in codes)
    assert {s.raw_code for s in codes} == {"NEW_IN_TRANSIT", "NEW_OUT_FOR_DELIVERY"}
    in_window = [s for _, scans in changed for s in scans if change.covers(s.event_time)
                 and s.status in {"in_transit", "out_for_delivery"}]
    assert len(in_window) == len(codes)


def test_the_hub_exceptions_of_a_spike_open_inside_its_window(fedex: PartnerProfile) -> None:
    """A hub exception opens 10 to 90 minutes after its scan; a spike multiplies the exceptions
    *opening* in its window, so a short spike's exceptions are in it, not in the hour after;
    the exceptions it causes on the vans open in it too."""
    spikes = [Incident("exception_spike", "fedex", MONDAY + k * 6 * H, MONDAY + k * 6 * H + H // 2,
                       {"factor": 30.0}) for k in range(4 * 16)]
    inside = after = 0
    on_vans: list[int] = []
    for _, scans in _stories(fedex, 1500, spikes):
        for before, scan in itertools.pairwise(scans):
            if scan.status != "exception":
                continue
            if before.status == "out_for_delivery":  # a delivery-day exception of a spike
                on_vans.append(scan.event_time)
                continue
            inside += any(s.covers(scan.event_time) for s in spikes)
            after += any(s.end <= scan.event_time < s.end + 90 * 60_000 for s in spikes)
    # the 90 minutes after each spike are 3x as long as the spike and see only the base rate
    assert inside >= 80
    assert inside >= 5 * after
    # the vans' exceptions open inside the spike too, from its first minutes on
    assert len(on_vans) >= 20
    assert all(any(s.covers(t) for s in spikes) for t in on_vans)
    assert any(s.start <= t < s.start + 15 * 60_000 for s in spikes for t in on_vans)


def test_an_exception_spike_hits_packages_on_their_delivery_day(fedex: PartnerProfile) -> None:
    """Weather or a vehicle shortage stops parcels out for delivery too: inside a spike some
    of them get an exception within 2 hours and go out again the next business day; outside
    every spike nothing is drawn, so the stories are byte-identical."""
    late = Incident("exception_spike", "fedex", MONDAY + 40 * D, MONDAY + 41 * D,
                    {"factor": 30.0})
    assert _stories(fedex, 300, [late]) == _stories(fedex, 300)
    spike = Incident("exception_spike", "fedex", MONDAY + 2 * D, MONDAY + 12 * D,
                     {"factor": 30.0})
    hits = []
    for _, scans in _stories(fedex, 300, [spike]):
        for before, scan, after in zip(scans, scans[1:], scans[2:], strict=False):
            if before.status == "out_for_delivery" and scan.status == "exception":
                hits.append((before, scan, after))
    assert len(hits) >= 10
    for before, scan, after in hits:
        assert spike.covers(before.event_time)  # the spike covers whole days here
        assert 0 < scan.event_time - before.event_time <= 2 * H
        assert scan.reason in {"weather", "vehicle_or_capacity", "carrier_delay"}
        assert after.status == "in_transit"
