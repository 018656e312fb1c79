"""Hand-written tests of the USPS Tracking v3 transformer, codebook and renderer."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
import yaml

from carrierwatch.core.model import CanonicalReason, CanonicalStatus, package_key
from carrierwatch.synthetic.formats import usps as renderer
from carrierwatch.synthetic.model import SimPackage, SimScan
from carrierwatch.transformers.base import TransformResult
from carrierwatch.transformers.registry import load_partner

ROOT = Path(__file__).resolve().parents[2]
PARTNER = load_partner(ROOT / "partners" / "usps.yaml", ROOT / "codebooks")
BOOK = yaml.safe_load((ROOT / "codebooks" / "usps.yaml").read_text())
RECEIVED = 1_772_712_000_000


def local_ms(text: str, zone: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(zone)).timestamp() * 1000)


def run(payload: Any) -> TransformResult:
    raw = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    return PARTNER.transform(raw, RECEIVED)


def event(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"eventType": "Processed through USPS Facility", "eventCode": "10",
                            "eventTimestamp": "2026-03-03T04:20:00",
                            "GMTTimestamp": "2026-03-03T09:20:00Z", "GMTOffset": "-5:00",
                            "eventCountry": "", "eventCity": "COLUMBUS", "eventState": "OH",
                            "eventZIP": "43218", "firm": "", "name": "", "authorizedAgent": False}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def payload(*events: Any, **top: Any) -> dict[str, Any]:
    return {"trackingNumber": "9400111899223100000001", "mailClass": "PRIORITY_MAIL",
            **top, "trackingEvents": list(events)}


@pytest.mark.parametrize("code", sorted(BOOK["codes"]))
def test_every_event_code_maps_as_the_codebook_says(code: str) -> None:
    (ev,) = run(payload(event(eventCode=code, eventType="text ignored"))).events
    entry = BOOK["codes"][code]
    assert (ev.status, ev.reason, ev.confidence, ev.raw_code) == (
        entry["status"], entry.get("reason"), entry["confidence"], code)


@pytest.mark.parametrize(("text", "status", "reason"), [
    ("Delivery Attempted - No Access to Delivery Location", "delivery_attempted", "access_issue"),
    ("Notice Left", "delivery_attempted", "unknown"),
    ("Delivered, In/At Mailbox", "delivered", None),
    ("Out for Delivery", "out_for_delivery", None),
    ("Delivery Exception, Severe Weather", "exception", "weather"),
    ("Held at Post Office, At Customer Request", "exception", "customer_request"),
    ("Insufficient Address", "exception", "address_issue"),
    ("Arrived at USPS Regional Destination Facility", "in_transit", None),
    ("Shipping Label Created, USPS Awaiting Item", "info_received", None),
])
def test_text_only_events_use_the_codebook_patterns(text: str, status: str,
                                                    reason: str | None) -> None:
    (ev,) = run(payload(event(eventCode=None, eventType=text))).events
    assert (ev.status, ev.reason, ev.raw_code) == (status, reason, text)


def test_a_code_wins_over_text() -> None:
    (ev,) = run(payload(event(eventCode="OF", eventType="Delivered"))).events
    assert ev.status == "out_for_delivery"


def test_unknown_code_and_unknown_text_are_gaps() -> None:
    result = run(payload(event(eventCode="X7"), event(eventCode=None,
                                                      eventType="Tracking Status Updated")))
    assert [(e.status, e.confidence) for e in result.events] == [("unknown", 0.0)] * 2
    assert result.gaps == ["X7", "Tracking Status Updated"]


def test_usps_error_response_is_a_dead_letter_naming_the_error_code() -> None:
    raw = (ROOT / "samples" / "usps" / "error_not_found.json").read_bytes()
    result = run(raw)
    (dead,) = result.dead_letters
    assert result.events == [] and dead.path == "$" and dead.raw == raw
    assert dead.error.startswith("USPS API error 404:")


def test_bad_fields_are_dead_letters_with_their_paths() -> None:
    result = run(payload(
        event(),
        event(GMTTimestamp=None, GMTOffset=None, eventTimestamp="03/03/2026 05:10"),
        event(GMTTimestamp=None, GMTOffset="minus five"),
        event(eventCode=None, eventType=None),
        "not an event",
    ))
    assert len(result.events) == 1
    assert [d.path for d in result.dead_letters] == [
        "trackingEvents[1].eventTimestamp", "trackingEvents[2].GMTOffset",
        "trackingEvents[3].eventCode", "trackingEvents[4]"]
    missing = run({"mailClass": "PRIORITY_MAIL", "trackingEvents": [event()]})
    assert [d.path for d in missing.dead_letters] == ["$.trackingNumber"]


def test_gmt_timestamp_wins_then_offset_then_state_zone() -> None:
    a, b, c, d = run(payload(
        event(eventTimestamp="2026-03-03T04:20:00", GMTTimestamp="2026-03-03T09:20:00Z",
              GMTOffset="-5:00"),
        event(eventTimestamp="2026-03-03T04:20:00", GMTTimestamp=None, GMTOffset="-5:00"),
        event(eventTimestamp="2026-03-02T16:00:00", GMTTimestamp=None, GMTOffset=None,
              eventState="HI"),
        event(eventTimestamp="2026-03-03T09:45:00", GMTTimestamp=None, GMTOffset=None,
              eventState="IN"),
    )).events
    expected = int(datetime(2026, 3, 3, 9, 20, tzinfo=UTC).timestamp() * 1000)
    assert a.event_time == b.event_time == expected
    assert a.event_time_local == "2026-03-03T04:20:00"
    assert c.event_time == local_ms("2026-03-02T16:00:00", "Pacific/Honolulu")
    assert not (a.timezone_ambiguous or b.timezone_ambiguous or c.timezone_ambiguous)
    assert d.timezone_ambiguous  # Indiana spans two zones


def test_fold_and_gap_are_flagged() -> None:
    fold, gap = run(payload(
        event(eventTimestamp="2026-11-01T01:30:00", GMTTimestamp=None, GMTOffset=None,
              eventState="NJ"),
        event(eventTimestamp="2026-03-08T02:30:00", GMTTimestamp=None, GMTOffset=None,
              eventState="CO"))).events
    assert fold.timezone_ambiguous and gap.timezone_ambiguous
    assert fold.event_time == local_ms("2026-11-01T01:30:00", "America/New_York")


def test_identity_uses_the_unique_mail_piece_id() -> None:
    first = run(payload(event(), uniqueMailPieceId="2291")).events[0]
    reused = run(payload(event(), uniqueMailPieceId="3307")).events[0]
    plain = run(payload(event())).events[0]
    assert first.package_id == package_key("usps", "9400111899223100000001", "2291")
    assert reused.package_id != first.package_id
    assert plain.package_id == "usps:9400111899223100000001"
    assert first.event_id != reused.event_id


def test_duplicate_events_share_the_event_id() -> None:
    a, b = run(payload(event(eventCode="01"), event(eventCode="01", eventCity="SAVANNAH"))).events
    assert a.event_id == b.event_id


def test_promise_eta_service_level_and_signature() -> None:
    (ev,) = run(payload(
        event(eventCode="01", name="P THISTLEWOOD"),
        mailClass="PRIORITY_MAIL_EXPRESS", destinationState="TX",
        guaranteedDeliveryTimeStamp="2026-03-03T18:00:00-06:00",
        expectedDeliveryTimeStamp="2026-03-04T00:00:00")).events
    assert ev.promised_by == local_ms("2026-03-03T18:00:00", "America/Chicago")
    # a midnight without offset is a date: by the end of that day in the destination's zone
    assert ev.eta_end == local_ms("2026-03-04T23:59:59", "America/Chicago")
    assert ev.service_level == "priority_mail_express"
    assert ev.proof_of_delivery == "signature"


def test_no_personal_data_in_events() -> None:
    result = run((ROOT / "samples" / "usps" / "lifecycle_delivered.json").read_bytes())
    dumped = orjson.dumps([e.to_json_dict() for e in result.events]).decode().lower()
    assert result.events and "thistlewood" not in dumped


def test_input_bytes_are_not_mutated() -> None:
    body = payload(event(), event(eventTimestamp="bad", GMTTimestamp=None))
    raw = orjson.dumps(body)
    before, snapshot = bytes(raw), copy.deepcopy(body)
    result = run(raw)
    assert raw == before and body == snapshot and result.dead_letters[0].raw == before


PLACES = [("America/Chicago", "TX", "Austin", "78701"), ("America/New_York", "GA", "Atlanta", "30303"),
          ("America/Denver", "CO", "Denver", "80202"), ("America/Phoenix", "AZ", "Tucson", "85701")]
REASONS = [r.value for r in CanonicalReason if r is not CanonicalReason.UNKNOWN]
PLAIN = [s.value for s in CanonicalStatus
         if s.value not in {"unknown", "delivery_attempted", "exception"}]


def simulated(index: int) -> tuple[SimPackage, list[SimScan]]:
    start = 1_772_000_000_000 + index * 86_400_000
    statuses: list[tuple[str, str | None]] = [(s, None) for s in PLAIN]
    statuses += [("delivery_attempted", r) for r in REASONS[index::2]]
    statuses += [("exception", r) for r in REASONS[(index + 1)::2]]
    scans = [SimScan(status, start + n * 3_700_000, PLACES[(index + n) % 4][0], "US",
                     *PLACES[(index + n) % 4][1:], reason=reason,
                     eta_end=start + 4 * 86_400_000)
             for n, (status, reason) in enumerate(statuses)]
    scans.append(SimScan("unknown", start + 99 * 3_600_000, "America/Chicago", "US", "TX",
                         "Austin", "78701", raw_code="X9"))
    package = SimPackage("usps", f"94001000000000000{index:05d}", "priority_mail", start,
                         promised_by=start + 3 * 86_400_000, shipment_id=f"{1000 + index}")
    return package, scans


@pytest.mark.parametrize("index", range(4))
def test_render_transform_round_trip(index: int) -> None:
    package, scans = simulated(index)
    result = run(renderer.render([(package, scans)], scans[-1].event_time))
    assert result.dead_letters == []
    got = sorted((e.event_time, e.status, e.reason, e.promised_by) for e in result.events)
    want = sorted((s.event_time, s.status, s.reason, package.promised_by) for s in scans)
    assert got == want
    assert [e.raw_code for e in result.events if e.status == "unknown"] == ["X9"]
    assert {e.package_id for e in result.events} == {
        package_key("usps", package.tracking_number, package.shipment_id)}
    assert {e.eta_end for e in result.events} == {scans[0].eta_end}
