"""EasyPost tracker webhooks: codebook coverage, mapping, identity, time zones, errors, round trip."""

from __future__ import annotations

import copy
import json
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from carrierwatch.core.model import package_key
from carrierwatch.synthetic.formats import easypost as renderer
from carrierwatch.synthetic.model import SimPackage, SimScan
from carrierwatch.transformers.base import TransformResult
from carrierwatch.transformers.registry import Partner, load_partner

ROOT = Path(__file__).resolve().parents[2]
RECEIVED = 1_772_712_000_000
SAMPLES = ROOT / "samples" / "easypost"

# From easypost-node TrackerStatus.d.ts / TrackerStatusDetail.d.ts (CARRIER_FACTS.md §1).
STATUSES = ["unknown", "pre_transit", "in_transit", "out_for_delivery", "delivered",
            "available_for_pickup", "return_to_sender", "failure", "cancelled", "error"]
DETAILS = ["address_correction", "arrived_at_destination", "arrived_at_facility",
           "arrived_at_pickup_location", "awaiting_information", "cancelled", "damaged", "delayed",
           "delivery_exception", "departed_facility", "departed_origin_facility", "expired",
           "failure", "held", "in_transit", "label_created", "lost", "missorted",
           "out_for_delivery", "received_at_destination_facility",
           "received_at_origin_facility", "refused", "return", "status_update",
           "transferred_to_destination_carrier", "transit_exception", "unknown", "weather_delay"]


@pytest.fixture(scope="module")
def partner() -> Partner:
    return load_partner(ROOT / "partners" / "easypost.yaml", ROOT / "codebooks")


def ms(text: str, zone: str | None = None) -> int:
    """Independent oracle: epoch ms of an ISO string (in ``zone`` when it has no offset)."""
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=ZoneInfo(zone or "UTC"))
    return round(dt.timestamp() * 1000)


def detail(status: str, status_detail: str | None, when: str, **place: Any) -> dict[str, Any]:
    return {"object": "TrackingDetail", "message": "m", "status": status,
            "status_detail": status_detail, "datetime": when, "source": "USPS",
            "carrier_code": "XX", "tracking_location": {"object": "TrackingLocation", **place}}


def event(details: list[dict[str, Any]], *, tracker_id: str = "trk_a1",
          tracking_code: str = "9400100000000000009999", **tracker: Any) -> bytes:
    result = {"id": tracker_id, "object": "Tracker", "mode": "production",
              "tracking_code": tracking_code, "status": "in_transit",
              "created_at": "2026-03-01T10:00:00Z", "carrier": "USPS",
              "tracking_details": details, **tracker}
    return json.dumps({"id": "evt_1", "object": "Event", "description": "tracker.updated",
                       "created_at": "2026-03-02T00:00:00Z", "result": result}).encode()


def run(partner: Partner, raw: bytes) -> TransformResult:
    return partner.transform(raw, RECEIVED)


def test_codebook_lists_every_status_and_detail(partner: Partner) -> None:
    keys = set(partner.codebook.codes)
    assert set(STATUSES) <= keys, set(STATUSES) - keys
    details_in_book = {k.split("/", 1)[1] for k in keys if "/" in k}
    assert set(DETAILS) <= details_in_book, set(DETAILS) - details_in_book
    assert {k.split("/", 1)[0] for k in keys if "/" in k} <= set(STATUSES)


def test_every_code_maps_as_the_codebook_says(partner: Partner) -> None:
    codes = sorted(partner.codebook.codes)
    details = []
    for i, code in enumerate(codes):
        status, _, status_detail = code.partition("/")
        details.append(detail(status, status_detail or None, f"2026-03-02T{i // 60:02d}:"
                              f"{i % 60:02d}:00Z"))
    result = run(partner, event(details))
    assert not result.dead_letters and not result.gaps
    assert [e.raw_code for e in result.events] == codes
    for e in result.events:
        mapping = partner.codebook.codes[e.raw_code]
        assert (e.status, e.reason, e.confidence) == (mapping.status, mapping.reason,
                                                      mapping.confidence), e.raw_code


@pytest.mark.parametrize(("status", "status_detail", "expected"), [
    ("in_transit", "weather_delay", ("exception", "weather")),
    ("failure", "lost", ("exception", "lost")),
    ("failure", "delivery_exception", ("delivery_attempted", "unknown")),
    ("return_to_sender", "refused", ("returned", "refused")),
    ("in_transit", "received_at_origin_facility", ("picked_up", None)),
    ("delivered", "a_detail_nobody_knows", ("delivered", None)),  # falls back to the status
])
def test_semantics_of_key_codes(partner: Partner, status: str, status_detail: str,
                                expected: tuple[str, str | None]) -> None:
    e = run(partner, event([detail(status, status_detail, "2026-03-02T10:00:00Z")])).events[0]
    assert (e.status, e.reason) == expected
    assert e.raw_code == f"{status}/{status_detail}"


def test_unknown_status_is_a_gap(partner: Partner) -> None:
    result = run(partner, event([detail("teleported", "via_wormhole", "2026-03-02T10:00:00Z")]))
    (e,) = result.events
    assert (e.status, e.confidence, e.reason) == ("unknown", 0.0, None)
    assert e.raw_code == "teleported/via_wormhole"
    assert result.gaps == ["teleported/via_wormhole"]


def test_bad_detail_is_dead_lettered_alone(partner: Partner) -> None:
    raw = event([detail("in_transit", "arrived_at_facility", "2026-03-02T10:00:00Z"),
                 detail("in_transit", "departed_facility", "2026-13-02T10:00:00Z"),
                 detail("delivered", None, "2026-03-03T10:00:00Z")])
    result = run(partner, raw)
    assert [e.status for e in result.events] == ["in_transit", "delivered"]
    (dead,) = result.dead_letters
    assert dead.path == "$.result.tracking_details[1].datetime"
    assert dead.raw == raw


def test_provider_error_payload(partner: Partner) -> None:
    result = run(partner, (SAMPLES / "error_tracker_create.json").read_bytes())
    assert not result.events
    (dead,) = result.dead_letters
    assert dead.path == "$.error.code" and "TRACKER.CREATE.ERROR" in dead.error


@pytest.mark.parametrize(("payload", "path"), [
    (b"[1, 2]", "$"),
    (b'{"object": "Event", "description": "shipment.purchased", "result": {}}', "$.description"),
    (b'{"object": "Event", "description": "tracker.updated", "result": {"object": "Batch"}}',
     "$.result.object"),
    (b'{"object": "Event", "description": "tracker.updated", "result": {"object": "Tracker", '
     b'"id": "trk_1"}}', "$.result.tracking_code"),
    (b"not json", "$"),
])
def test_wrong_shapes_are_dead_letters(partner: Partner, payload: bytes, path: str) -> None:
    result = run(partner, payload)
    assert not result.events
    assert [d.path for d in result.dead_letters] == [path]


def test_identity_uses_the_tracker_id(partner: Partner) -> None:
    code = "9400100000000000001234"
    first = run(partner, event([detail("delivered", None, "2026-03-02T10:00:00Z")],
                               tracker_id="trk_old", tracking_code=code)).events[0]
    reused = run(partner, event([detail("delivered", None, "2026-03-02T10:00:00Z")],
                                tracker_id="trk_new", tracking_code=code)).events[0]
    assert first.package_id == package_key("easypost", code, "trk_old")
    assert first.shipment_id == "trk_old"
    assert reused.package_id != first.package_id and reused.event_id != first.event_id


def test_duplicate_details_share_the_event_id(partner: Partner) -> None:
    result = run(partner, (SAMPLES / "duplicate_and_out_of_order.json").read_bytes())
    delivered = [e for e in result.events if e.status == "delivered"]
    assert len(delivered) == 2
    assert delivered[0].event_id == delivered[1].event_id
    assert delivered[0].event_time == ms("2026-03-04T13:20:00-05:00")


def test_time_zones(partner: Partner) -> None:
    raw = event([
        detail("in_transit", "in_transit", "2026-03-02T09:00:00", city="Chicago", state="IL",
               country="US"),                                        # exact zone: not flagged
        detail("in_transit", "in_transit", "2026-03-02T11:00:00", city="Dallas", state="TX",
               country="US"),                                        # multi-zone state: guess
        detail("in_transit", "in_transit", "2026-03-08T02:30:00", city="Newark", state="NJ",
               country="US"),                                        # spring-forward gap
        detail("in_transit", "in_transit", "2026-03-02T15:00:00"),    # no place: UTC, flagged
        detail("in_transit", "in_transit", "2026-03-02T15:00:00Z"),
    ])
    events = run(partner, raw).events
    assert [e.timezone_ambiguous for e in events] == [False, True, True, True, False]
    assert events[0].event_time == ms("2026-03-02T09:00:00", "America/Chicago")
    assert events[1].event_time == ms("2026-03-02T11:00:00", "America/Chicago")
    assert events[3].event_time == ms("2026-03-02T15:00:00", "UTC")
    assert events[0].event_time_local == "2026-03-02T09:00:00"


def test_promise_eta_and_attempts(partner: Partner) -> None:
    result = run(partner, (SAMPLES / "lifecycle_delivered.json").read_bytes())
    last = result.events[-1]
    assert last.promised_by == ms("2026-03-04T23:59:00-05:00")
    assert last.eta_end == ms("2026-03-03T14:00:00", "America/New_York")
    assert (last.status, last.attempt_number, last.proof_of_delivery) == ("delivered", 1,
                                                                          "signature")
    assert last.service_level == "GroundAdvantage"
    attempts = run(partner, (SAMPLES / "failed_attempts_then_delivered.json").read_bytes())
    assert [(e.status, e.attempt_number) for e in attempts.events
            if e.attempt_number is not None] == [("delivery_attempted", 1),
                                                 ("delivery_attempted", 2), ("delivered", 3)]
    day = attempts.events[0]
    assert (day.eta_start, day.eta_end) == (ms("2026-03-03T00:00:00", "America/Chicago"),
                                            ms("2026-03-04T00:00:00", "America/Chicago") - 1)


def test_test_mode_tracker_without_details(partner: Partner) -> None:
    (e,) = run(partner, (SAMPLES / "tracker_created_test_mode.json").read_bytes()).events
    assert e.synthetic and e.status == "info_received"
    assert e.event_time == ms("2026-03-02T12:00:00Z")


def test_no_personal_data_and_input_untouched(partner: Partner) -> None:
    raw = (SAMPLES / "lifecycle_delivered.json").read_bytes()
    before = copy.copy(raw)
    result = run(partner, raw)
    assert raw == before
    text = json.dumps([e.to_json_dict() for e in result.events])
    assert "HOLLOWAY" not in text.upper() and "MARGARET" not in text.upper()
    assert "11215" not in text  # postal codes are cut to their prefix


# --- render → transform round trip ------------------------------------------------------------

def _t(text: str) -> int:
    return ms(text)


def sim_packages() -> list[tuple[SimPackage, list[SimScan]]]:
    ny: dict[str, Any] = {"zone": "America/New_York", "country": "US", "region": "NY", "city": "Brooklyn",
          "postal_code": "11215"}
    il: dict[str, Any] = {"zone": "America/Chicago", "country": "US", "region": "IL", "city": "Chicago",
          "postal_code": "60607"}
    eta = _t("2026-03-04T22:00:00Z")
    return [
        (SimPackage("easypost", "CWSYN0000000001", "Priority", _t("2026-03-01T12:00:00Z"),
                    promised_by=_t("2026-03-05T04:59:00Z"), shipment_id="trk_sim1"), [
            SimScan("info_received", _t("2026-03-01T12:05:00Z"), "UTC", region=None),
            SimScan("picked_up", _t("2026-03-01T22:00:00Z"), **il),
            SimScan("staged", _t("2026-03-03T10:00:00Z"), **ny),
            SimScan("out_for_delivery", _t("2026-03-04T13:00:00Z"), **ny, eta_end=eta),
            SimScan("delivery_attempted", _t("2026-03-04T19:00:00Z"), **ny, attempt_number=1),
            SimScan("delivered", _t("2026-03-05T16:00:00Z"), **ny, attempt_number=2,
                    proof_of_delivery="signature")]),
        (SimPackage("easypost", "CWSYN0000000002", "GroundAdvantage",
                    _t("2026-03-01T12:00:00Z")), [
            SimScan("in_transit", _t("2026-03-02T08:00:00Z"), **il),
            SimScan("exception", _t("2026-03-02T20:00:00Z"), **il, reason="weather"),
            SimScan("exception", _t("2026-03-03T20:00:00Z"), **il, reason="lost"),
            SimScan("in_transit", _t("2026-03-04T08:00:00Z"), **il, raw_code="warp_drive")]),
        (SimPackage("easypost", "CWSYN0000000003", "Express", _t("2026-03-01T12:00:00Z")), [
            SimScan("available_for_pickup", _t("2026-03-02T15:00:00Z"), **ny),
            SimScan("returned", _t("2026-03-06T15:00:00Z"), **ny, reason="refused"),
            SimScan("cancelled", _t("2026-03-07T15:00:00Z"), **ny)]),
    ]


def test_render_transform_round_trip(partner: Partner) -> None:
    for pkg, scans in sim_packages():
        raw = renderer.render([(pkg, scans)], sent_at=_t("2026-03-08T00:00:00Z"))
        assert raw == renderer.render([(pkg, scans)], sent_at=_t("2026-03-08T00:00:00Z"))
        result = run(partner, raw)
        assert not result.dead_letters
        assert len(result.events) == len(scans)
        eta = next((s.eta_end for s in reversed(scans) if s.eta_end is not None), None)
        for scan, e in zip(scans, result.events, strict=True):
            assert e.tracking_number == pkg.tracking_number
            assert e.event_time == scan.event_time
            assert e.promised_by == pkg.promised_by
            assert e.eta_end == eta
            assert e.service_level == pkg.service_level
            if scan.raw_code is not None:
                assert (e.status, e.raw_code, e.confidence) == ("unknown", scan.raw_code, 0.0)
                assert scan.raw_code in result.gaps
                continue
            assert e.status == scan.status
            if scan.status in {"exception", "returned"}:
                assert e.reason == scan.reason
            if scan.status in {"delivered", "delivery_attempted"}:
                assert e.attempt_number == scan.attempt_number
            if scan.status == "delivered":
                assert e.proof_of_delivery == scan.proof_of_delivery
        if pkg.shipment_id:
            assert {e.package_id for e in result.events} == {
                package_key("easypost", pkg.tracking_number, pkg.shipment_id)}
        assert renderer.SIGNER not in json.dumps([e.to_json_dict() for e in result.events])
