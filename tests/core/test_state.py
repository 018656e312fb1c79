"""Package state machine: precedence, flags, promises, exceptions, order independence, memory."""

from __future__ import annotations

import gc
import random
import sys
import tracemalloc
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from carrierwatch.core.model import CanonicalEvent, Location, event_id, ms_to_iso
from carrierwatch.core.partner import SlaContract
from carrierwatch.core.pipeline import Pipeline
from carrierwatch.core.state import ContractRules, PackageState

HOUR = 3_600_000
DAY = 86_400_000
MONDAY_9_CHICAGO = 1_772_463_600_000  # 2026-03-02 09:00 America/Chicago (15:00 UTC)
CONTRACT = SlaContract(timezone="America/Chicago", grace_minutes=30, pickup_cutoff="17:00",
                       transit_days={"ground": 3, "express": 1})
RULES = ContractRules.from_contract(CONTRACT)


def ev(status: str, t: int, pkg: str = "p1", **extra: Any) -> CanonicalEvent:
    return CanonicalEvent(event_id=event_id("demo", pkg, status, t), partner_id="demo",
                          package_id=pkg, tracking_number=pkg, status=status, confidence=1.0,
                          raw_code=status[:3], event_time=t, received_time=t + 60_000, **extra)


def build(events: list[CanonicalEvent]) -> PackageState:
    state = PackageState("demo", events[0].package_id)
    for event in events:
        state.add(event, RULES)
    return state


def test_delivered_before_out_for_delivery_still_ends_delivered() -> None:
    t = MONDAY_9_CHICAGO
    state = build([ev("picked_up", t), ev("delivered", t + 30 * HOUR),
                   ev("out_for_delivery", t + 26 * HOUR)])
    assert state.status == "delivered"
    assert state.flags == 0
    assert state.delivered_at == t + 30 * HOUR


def test_in_transit_after_delivered_is_flagged_not_undelivered() -> None:
    t = MONDAY_9_CHICAGO
    state = PackageState("demo", "p1")
    assert state.add(ev("picked_up", t), RULES) == []
    assert state.add(ev("delivered", t + 30 * HOUR), RULES) == []
    flagged = state.add(ev("in_transit", t + 31 * HOUR), RULES)
    assert flagged is not None and [kind for _, _, kind in flagged] == ["after_terminal"]
    assert state.status == "delivered" and state.flags == 1
    # a repeated pickup scan before anything moved on is not backward
    assert state.add(ev("picked_up", t + 2 * HOUR), RULES) == [] and state.flags == 1
    # info_received after pickup, and a pickup after the package moved on, are backward
    state2 = build([ev("picked_up", t), ev("in_transit", t + HOUR),
                    ev("info_received", t + 2 * HOUR), ev("picked_up", t + 3 * HOUR)])
    assert state2.flags == 2 and state2.status == "picked_up"


def test_duplicates_are_ignored() -> None:
    t = MONDAY_9_CHICAGO
    state = PackageState("demo", "p1")
    assert state.add(ev("picked_up", t), RULES) == []
    assert state.add(ev("picked_up", t), RULES) is None
    assert state.event_count == 1


def test_first_feed_promise_is_the_contract() -> None:
    t = MONDAY_9_CHICAGO
    state = build([ev("in_transit", t + 5 * HOUR, promised_by=t + 3 * DAY),
                   ev("picked_up", t, promised_by=t + 2 * DAY)])
    assert state.promised_by == t + 2 * DAY and state.promise_source == "feed"


def test_contract_promise_counts_business_days_from_pickup() -> None:
    friday = MONDAY_9_CHICAGO + 4 * DAY
    state = build([ev("picked_up", friday)])
    # Friday + 3 business days = Wednesday; end of that day in Chicago (CDT, UTC-5)
    assert ms_to_iso(state.promised_by) == "2026-03-12T04:59:59.999Z"
    express = build([ev("picked_up", friday, pkg="p2", service_level="express")])
    assert ms_to_iso(express.promised_by) == "2026-03-10T04:59:59.999Z"  # Monday


def test_pickup_due_before_and_after_cutoff() -> None:
    t = MONDAY_9_CHICAGO
    before = build([ev("info_received", t)])
    after = build([ev("info_received", t + 9 * HOUR, pkg="p2")])  # 18:00 local
    assert ms_to_iso(before.pickup_due) == "2026-03-02T23:00:00.000Z"
    assert ms_to_iso(after.pickup_due) == "2026-03-03T23:00:00.000Z"


def test_first_attempt_exceptions_and_eta() -> None:
    t = MONDAY_9_CHICAGO
    state = build([
        ev("picked_up", t),
        ev("exception", t + 2 * HOUR, reason="weather"),
        ev("exception", t + 3 * HOUR, reason="weather"),     # same episode
        ev("in_transit", t + 5 * HOUR, eta_start=t + 20 * HOUR, eta_end=t + 24 * HOUR),
        ev("delivery_attempted", t + 21 * HOUR, reason="recipient_not_available"),
        ev("exception", t + 22 * HOUR),
        ev("out_for_delivery", t + 45 * HOUR, eta_start=t + 46 * HOUR, eta_end=t + 48 * HOUR),
        ev("delivered", t + 47 * HOUR, proof_of_delivery="photo",
           eta_start=t + 90 * HOUR, eta_end=t + 91 * HOUR),
    ])
    assert state.first_attempt == (t + 21 * HOUR, False, "recipient_not_available")
    assert state.attempts == 2
    assert state.exception_episodes == ((t + 2 * HOUR, t + 5 * HOUR), (t + 22 * HOUR,
                                                                       t + 45 * HOUR))
    assert state.exc_count == 2 and state.open_exception_since is None
    assert state.last_eta(state.fields[2]) == (t + 46 * HOUR, t + 48 * HOUR)
    assert state.proof == "photo"


def test_region_and_service_level_come_from_the_first_event_that_has_them() -> None:
    t = MONDAY_9_CHICAGO
    state = build([ev("in_transit", t + HOUR, location=Location(region="US-TX"),
                      service_level="express"),
                   ev("picked_up", t, location=Location(region="US-TN"))])
    assert (state.region, state.service_level) == ("US-TN", "express")


def test_to_bytes_round_trip() -> None:
    t = MONDAY_9_CHICAGO
    state = build([ev("info_received", t), ev("picked_up", t + HOUR),
                   ev("exception", t + 2 * HOUR)])
    again = PackageState.from_bytes(state.to_bytes())
    assert again.snapshot() == state.snapshot()
    again.add(ev("delivered", t + 9 * HOUR), RULES)
    assert again.status == "delivered" and state.status == "exception"


STATUSES = ["info_received", "picked_up", "staged", "in_transit", "exception",
            "out_for_delivery", "delivery_attempted", "available_for_pickup", "delivered",
            "returned", "cancelled", "unknown", "no_such_status"]


@st.composite
def package_events(draw: st.DrawFn) -> list[CanonicalEvent]:
    n = draw(st.integers(1, 12))
    events: list[CanonicalEvent] = []
    for _ in range(n):
        status = draw(st.sampled_from(STATUSES))
        t = MONDAY_9_CHICAGO + draw(st.integers(0, 40)) * HOUR
        extra: dict[str, Any] = {}
        if draw(st.booleans()):
            extra["promised_by"] = t + draw(st.integers(1, 5)) * DAY
        if draw(st.booleans()):
            extra["eta_end"] = t + draw(st.integers(1, 48)) * HOUR
        if draw(st.booleans()):
            extra["location"] = Location(region=draw(st.sampled_from(["US-TN", "US-TX"])))
        if draw(st.booleans()):
            extra["service_level"] = draw(st.sampled_from(["ground", "express"]))
        if status in ("exception", "delivery_attempted"):
            extra["reason"] = draw(st.sampled_from(["weather", "refused"]))
        extra["synthetic"] = draw(st.booleans()) and draw(st.booleans())
        event = ev(status, t, **extra)
        # copies of one event id carry one content (the id is a hash of status and time); a
        # second draw of the same status and time would be the same event
        if all(e.event_id != event.event_id for e in events):
            events.append(event)
    return events


@settings(max_examples=300, deadline=None)
@given(package_events(), st.randoms(use_true_random=False), st.data())
def test_state_is_a_function_of_the_event_set(events: list[CanonicalEvent], rnd: random.Random,
                                              data: st.DataObject) -> None:
    reference = PackageState("demo", "p1")
    for event in sorted(events, key=lambda e: (e.event_time, e.event_id)):
        reference.add(event, RULES)
    # any permutation with any duplicates gives the same state
    arrival = list(events) + [rnd.choice(events) for _ in range(data.draw(st.integers(0, 5)))]
    rnd.shuffle(arrival)
    state = PackageState("demo", "p1")
    for event in arrival:
        state.add(event, RULES)
    assert state.snapshot() == reference.snapshot()
    # and the pipeline's outcome row is the same too
    wm = MONDAY_9_CHICAGO + 3 * DAY
    rows = []
    for order in (events, arrival):
        pipe = Pipeline({"demo": CONTRACT}, granularities=("1h",), allowed_lateness_ms=10 * DAY)
        pipe.process(order)
        pipe.advance_watermark(wm)
        row = pipe.outcome("p1")
        assert row is not None
        row.version = 0
        windows = [(r.key, r.values()) for r in pipe.window_rows()]
        rows.append((row, [w for w in windows if any(w[1].values())]))
    assert rows[0] == rows[1]


def test_memory_per_in_flight_package_is_under_1_kib() -> None:
    t = MONDAY_9_CHICAGO
    rng = random.Random(5)
    events: list[CanonicalEvent] = []
    for i in range(10_000):
        pkg = f"demo:1Z{i:012d}"
        start = t + rng.randrange(0, 20 * HOUR)
        events += [ev("info_received", start, pkg, promised_by=start + 3 * DAY,
                      location=Location(region="US-TN"), service_level="ground"),
                   ev("picked_up", start + 2 * HOUR, pkg, location=Location(region="US-TN")),
                   ev("in_transit", start + 8 * HOUR, pkg, eta_end=start + 50 * HOUR),
                   ev("staged", start + 12 * HOUR, pkg),
                   ev("in_transit", start + 20 * HOUR, pkg)]
        if i % 5 == 0:
            events.append(ev("exception", start + 21 * HOUR, pkg, reason="weather"))
    events.sort(key=lambda e: e.received_time)
    pipe = Pipeline({"demo": CONTRACT})
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for start_index in range(0, len(events), 5_000):
            pipe.process(events[start_index:start_index + 5_000])
        del events   # outputs and events are gone: what is left is the pipeline's state
        gc.collect()
        used = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(pipe.packages) == 10_000
    # the package id strings were allocated before tracing (with the events) and are kept by
    # the state: count them too
    used += sum(sys.getsizeof(package_id) for package_id in pipe.packages)
    per_package = used / 10_000
    print(f"\nin-flight package state: {per_package:.0f} bytes/package "
          f"(incl. windows, dict, ids, deadline buckets)")
    assert per_package < 1024
