"""Hand-written tests of the DHL Unified transformer, codebook and renderer.

Expectations are computed independently (zoneinfo for times, the codebook file for mappings).
"""

from __future__ import annotations

import copy
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
import yaml

from carrierwatch.core.model import CanonicalReason, CanonicalStatus, package_key
from carrierwatch.synthetic.formats import dhl as renderer
from carrierwatch.synthetic.model import SimPackage, SimScan
from carrierwatch.transformers.base import TransformResult
from carrierwatch.transformers.registry import load_partner

ROOT = Path(__file__).resolve().parents[2]
PARTNER = load_partner(ROOT / "partners" / "dhl.yaml", ROOT / "codebooks")
RAW_BOOK = yaml.safe_load((ROOT / "codebooks" / "dhl.yaml").read_text())["codes"]
RECEIVED = 1_772_712_000_000


def local_ms(text: str, zone: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(zone)).timestamp() * 1000)


def run(payload: Any) -> TransformResult:
    raw = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    return PARTNER.transform(raw, RECEIVED)


def event(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "timestamp": "2026-03-03T10:00:00-06:00",
        "location": {"address": {"countryCode": "US", "postalCode": "60601",
                                 "addressLocality": "Chicago, IL"}},
        "statusCode": "transit",
        "status": "Processed",
        "description": "Scan",
    }
    base.update(overrides)
    return base


def payload(*events: dict[str, Any], tracking: str = "GM6051000000000001",
            **shipment: Any) -> dict[str, Any]:
    return {"shipments": [{"id": tracking, "service": "ecommerce", "events": list(events),
                           **shipment}]}


@pytest.mark.parametrize("code", sorted(k for k in RAW_BOOK if k.startswith("express/")))
def test_every_express_code_maps_as_the_codebook_says(code: str) -> None:
    express = code.split("/", 1)[1]
    result = run(payload(event(status=express, statusCode="transit", description="x")))
    (ev,) = result.events
    entry = RAW_BOOK[code]
    assert (ev.status, ev.reason, ev.confidence, ev.raw_code) == (
        entry["status"], entry.get("reason"), entry["confidence"], express)


@pytest.mark.parametrize("code", sorted(k for k in RAW_BOOK if "/" not in k))
def test_every_generic_status_code_maps_as_the_codebook_says(code: str) -> None:
    (ev,) = run(payload(event(statusCode=code, status="Text", description="zzz qqq"))).events
    entry = RAW_BOOK[code]
    assert (ev.status, ev.reason, ev.confidence, ev.raw_code) == (
        entry["status"], entry.get("reason"), entry["confidence"], code)


@pytest.mark.parametrize("code", sorted(k for k in RAW_BOOK
                                        if "/" in k and not k.startswith("express/")))
def test_every_standard_description_maps_exactly(code: str) -> None:
    status_code, slugged = code.split("/", 1)
    description = slugged.replace("-", " ").capitalize() + "."
    (ev,) = run(payload(event(statusCode=status_code, status="Text",
                              description=description))).events
    entry = RAW_BOOK[code]
    assert (ev.status, ev.confidence) == (entry["status"], entry["confidence"])


def test_dhl_express_dp_is_a_failed_delivery_not_a_departure() -> None:
    (ev,) = run(payload(event(status="DP", statusCode="failure", description="x"))).events
    assert ev.status == CanonicalStatus.DELIVERY_ATTEMPTED
    assert ev.raw_code == "DP"


@pytest.mark.parametrize(("description", "status", "reason"), [
    ("Delivery attempt unsuccessful - recipient not present", "delivery_attempted",
     "recipient_not_available"),
    ("Delivery attempt failed. Nobody was home", "delivery_attempted", "recipient_not_available"),
    ("Delivery attempt unsuccessful - address incorrect or incomplete", "delivery_attempted",
     "address_issue"),
    ("Delivery attempt unsuccessful - recipient refused acceptance", "delivery_attempted",
     "refused"),
    ("Shipment on hold - customs clearance pending", "exception", "customs"),
    ("The shipment is on hold: awaiting payment of import charges", "exception", "payment_due"),
    ("The shipment was damaged in transit", "exception", "damaged"),
    ("The shipment is being returned to the sender", "returned", None),
])
def test_failure_sub_kinds_come_from_description_patterns(description: str, status: str,
                                                          reason: str | None) -> None:
    (ev,) = run(payload(event(statusCode="failure", status="Failure",
                              description=description))).events
    assert (ev.status, ev.reason) == (status, reason)
    assert ev.confidence >= 0.7


def test_unknown_code_is_unknown_with_zero_confidence_and_a_gap() -> None:
    result = run(payload(event(statusCode="held-at-depot", status="Held",
                               description="Held at depot")))
    (ev,) = result.events
    assert (ev.status, ev.confidence, ev.raw_code) == ("unknown", 0.0, "held-at-depot")
    assert result.gaps == ["held-at-depot"]


def test_problem_json_error_is_a_dead_letter_naming_the_http_status() -> None:
    raw = orjson.dumps({"title": "No result found", "status": 404,
                        "detail": "No shipment with given tracking number found."})
    result = run(raw)
    assert result.events == []
    (dead,) = result.dead_letters
    assert dead.path == "$"
    assert "404" in dead.error and "No shipment with given tracking number" in dead.error
    assert dead.raw == raw


def test_a_bad_event_is_its_own_dead_letter_and_the_rest_still_yields_events() -> None:
    result = run(payload(event(timestamp="2026-02-30T10:00:00"), event(),
                         event(statusCode=None, status="Text")))
    assert len(result.events) == 1
    assert [(d.path, "timestamp" in d.error or "missing" in d.error)
            for d in result.dead_letters] == [
        ("shipments[0].events[0].timestamp", True),
        ("shipments[0].events[2].statusCode", True),
    ]


def test_not_json_and_wrong_shape_are_dead_letters() -> None:
    assert [d.path for d in run(b"<html>502</html>").dead_letters] == ["$"]
    assert [d.path for d in run({"shipments": {"id": "x"}}).dead_letters] == ["$.shipments"]


def test_identity_is_the_tracking_number_without_discriminator() -> None:
    result = run(payload(event(), tracking="4839201756"))
    (ev,) = result.events
    assert ev.tracking_number == "4839201756"
    assert ev.package_id == package_key("dhl", "4839201756") == "dhl:4839201756"
    numeric = run({"shipments": [{"id": 4839201756, "events": [event()]}]}).events[0]
    assert numeric.package_id == ev.package_id


def test_repeated_event_with_more_detail_gets_the_same_event_id() -> None:
    first = event(statusCode="delivered", description="The shipment has been successfully delivered")
    second = dict(first, remark="Left at front door")
    a, b = run(payload(first, second)).events
    assert a.event_id == b.event_id


def test_times_with_offset_are_exact_and_local_times_use_the_location_zone() -> None:
    events = run(payload(
        event(timestamp="2026-03-03T10:00:00-06:00"),
        event(timestamp="2026-03-02T07:53:47",
              location={"address": {"countryCode": "NL", "addressLocality": "Oderweg 2, AMSTERDAM"}}),
        event(timestamp="2026-11-01T01:30:00",
              location={"address": {"countryCode": "US", "addressLocality": "New York, NY"}}),
        event(timestamp="2026-03-03T09:00:00",
              location={"address": {"countryCode": "US", "addressLocality": "El Paso, TX"}}),
    )).events
    assert events[0].event_time == local_ms("2026-03-03T10:00:00", "America/Chicago")
    assert not events[0].timezone_ambiguous
    assert events[1].event_time == local_ms("2026-03-02T07:53:47", "Europe/Amsterdam")
    assert not events[1].timezone_ambiguous
    assert events[1].event_time_local == "2026-03-02T07:53:47"
    assert events[2].timezone_ambiguous  # the fall-back fold happens twice
    assert events[2].event_time == local_ms("2026-11-01T01:30:00", "America/New_York")
    assert events[3].timezone_ambiguous  # Texas spans two zones: a guess


def test_eta_frame_and_signature_proof() -> None:
    result = run(payload(
        event(statusCode="delivered", description="The shipment has been successfully delivered"),
        estimatedDeliveryTimeFrame={"estimatedFrom": "2026-03-03T08:00:00-06:00",
                                    "estimatedThrough": "2026-03-03T20:00:00-06:00"},
        details={"proofOfDelivery": {"signatureUrl": "https://example.invalid/sig",
                                     "signed": {"name": "Maren Quillfeather"}}}))
    (ev,) = result.events
    assert ev.eta_start == local_ms("2026-03-03T08:00:00", "America/Chicago")
    assert ev.eta_end == local_ms("2026-03-03T20:00:00", "America/Chicago")
    assert ev.proof_of_delivery == "signature"
    assert ev.promised_by is None


def test_no_personal_data_in_events() -> None:
    sample = (ROOT / "samples" / "dhl" / "lifecycle_delivered.json").read_bytes()
    result = run(sample)
    assert result.events
    dumped = orjson.dumps([e.to_json_dict() for e in result.events]).decode().lower()
    for secret in ("quillfeather", "maren", "1820 n example ave", "oderweg"):
        assert secret not in dumped
    street = run(payload(event(location={"address": {
        "countryCode": "NL", "postalCode": "1043 AG", "addressLocality": "Oderweg 2, AMSTERDAM"}})))
    loc = street.events[0].location
    assert loc is not None and (loc.city, loc.postal_prefix) == ("Amsterdam", "104")


def test_input_bytes_are_not_mutated() -> None:
    body = payload(event(), event(timestamp="bad"))
    raw = orjson.dumps(body)
    before, snapshot = bytes(raw), copy.deepcopy(body)
    result = run(raw)
    assert raw == before and body == snapshot
    assert all(d.raw == before for d in result.dead_letters)


# --- render → transform round trip -----------------------------------------------------------

PLACES = [("America/Chicago", "IL", "Chicago", "60601"), ("America/New_York", "NY", "Albany", "12207"),
          ("America/Denver", "CO", "Denver", "80202"), ("America/Phoenix", "AZ", "Phoenix", "85004"),
          ("America/Los_Angeles", "CA", "Fresno", "93721")]
REASONS = [r.value for r in CanonicalReason if r is not CanonicalReason.UNKNOWN]
PLAIN = [s.value for s in CanonicalStatus
         if s.value not in {"unknown", "delivery_attempted", "exception"}]


def simulated(index: int) -> tuple[SimPackage, list[SimScan]]:
    start = 1_772_000_000_000 + index * 86_400_000  # late Feb 2026, no DST change
    statuses: list[tuple[str, str | None]] = [(s, None) for s in PLAIN]
    statuses += [("delivery_attempted", r) for r in REASONS[index::2]]
    statuses += [("exception", r) for r in REASONS[(index + 1)::2]]
    scans = []
    for n, (status, reason) in enumerate(statuses):
        zone, region, city, postal = PLACES[(index + n) % len(PLACES)]
        scans.append(SimScan(status, start + n * 3_700_000 + 17_000, zone, "US", region, city,
                             postal, reason=reason, eta_end=start + 5 * 86_400_000))
    scans.append(SimScan("unknown", start + 99 * 3_600_000, "America/Chicago", "US", "IL",
                         "Chicago", "60601", raw_code="relabelled"))
    return SimPackage("dhl", f"CWSYNDHL{index:06d}", "ecommerce", start), scans


@pytest.mark.parametrize("index", range(4))
def test_render_transform_round_trip(index: int) -> None:
    package, scans = simulated(index)
    result = run(renderer.render([(package, scans)], scans[-1].event_time))
    assert result.dead_letters == []
    got = sorted((e.event_time, e.status, e.reason, e.promised_by, e.raw_code)
                 for e in result.events)
    want = sorted((s.event_time, s.status if s.raw_code is None else "unknown", s.reason,
                   None, s.raw_code) for s in scans)
    assert [g[:4] for g in got] == [w[:4] for w in want]
    assert [g[4] for g in got if g[1] == "unknown"] == ["relabelled"]
    assert result.gaps == ["relabelled"]
    assert {e.package_id for e in result.events} == {f"dhl:{package.tracking_number}"}
    assert renderer.render([(package, scans)], 0) == renderer.render([(package, scans)], 0)
