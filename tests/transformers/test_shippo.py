"""Shippo track_updated webhooks: codebook coverage, mapping, ETA rule, errors, round trip."""

from __future__ import annotations

import copy
import json
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from carrierwatch.core.model import package_key
from carrierwatch.synthetic.formats import shippo as renderer
from carrierwatch.synthetic.model import SimPackage, SimScan
from carrierwatch.transformers.base import TransformResult
from carrierwatch.transformers.registry import Partner, load_partner

ROOT = Path(__file__).resolve().parents[2]
RECEIVED = 1_772_712_000_000
SAMPLES = ROOT / "samples" / "shippo"

# Shippo's statuses and substatus codes (CARRIER_FACTS.md §1).
STATUSES = ["UNKNOWN", "PRE_TRANSIT", "TRANSIT", "DELIVERED", "RETURNED", "FAILURE"]
SUBSTATUSES = ["information_received", "address_issue", "contact_carrier", "delayed",
               "delivery_attempted", "delivery_rescheduled", "delivery_scheduled",
               "location_inaccessible", "notice_left", "out_for_delivery", "package_accepted",
               "package_arrived", "package_damaged", "package_departed", "package_disposed",
               "package_forwarded", "package_held", "package_lost", "package_undeliverable",
               "pickup_available", "reschedule_delivery", "return_to_sender", "other"]


@pytest.fixture(scope="module")
def partner() -> Partner:
    return load_partner(ROOT / "partners" / "shippo.yaml", ROOT / "codebooks")


def ms(text: str, zone: str | None = None) -> int:
    """Independent oracle: epoch ms of an ISO string (in ``zone`` when it has no offset)."""
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=ZoneInfo(zone or "UTC"))
    return round(dt.timestamp() * 1000)


def status(code: str, when: str, substatus: str | None = None, object_id: str | None = None,
           **place: Any) -> dict[str, Any]:
    return {"object_id": object_id or f"{code}-{substatus}-{when}", "status": code,
            "status_details": "text", "status_date": when,
            "substatus": {"code": substatus, "text": "t", "action_required": False}
            if substatus else None, "location": place or None}


def webhook(history: list[dict[str, Any]], *, carrier: str = "usps", test: bool = False,
            **data: Any) -> bytes:
    body = {"carrier": carrier, "tracking_number": "9205590100000000009999",
            "tracking_status": history[-1] if history else None, "tracking_history": history,
            "address_to": {"city": "Chicago", "state": "IL", "zip": "60611", "country": "US"},
            "servicelevel": {"token": "usps_priority", "name": "Priority Mail"}, **data}
    return json.dumps({"event": "track_updated", "test": test, "data": body}).encode()


def run(partner: Partner, raw: bytes) -> TransformResult:
    return partner.transform(raw, RECEIVED)


def test_codebook_lists_every_status_and_substatus(partner: Partner) -> None:
    keys = set(partner.codebook.codes)
    assert set(STATUSES) <= keys, set(STATUSES) - keys
    in_book = {k.split("/", 1)[1] for k in keys if "/" in k}
    assert set(SUBSTATUSES) <= in_book, set(SUBSTATUSES) - in_book


def test_every_code_maps_as_the_codebook_says(partner: Partner) -> None:
    codes = sorted(partner.codebook.codes)
    history = []
    for i, code in enumerate(codes):
        top, _, sub = code.partition("/")
        history.append(status(top, f"2026-03-02T{i // 60:02d}:{i % 60:02d}:00Z", sub or None))
    result = run(partner, webhook(history))
    assert not result.dead_letters and not result.gaps
    assert [e.raw_code for e in result.events] == codes
    for e in result.events:
        mapping = partner.codebook.codes[e.raw_code]
        assert (e.status, e.reason, e.confidence) == (mapping.status, mapping.reason,
                                                      mapping.confidence), e.raw_code


@pytest.mark.parametrize(("code", "sub", "expected"), [
    ("TRANSIT", "notice_left", ("delivery_attempted", "recipient_not_available")),
    ("TRANSIT", "package_accepted", ("picked_up", None)),
    ("FAILURE", "package_lost", ("exception", "lost")),
    ("RETURNED", "return_to_sender", ("returned", None)),
    ("TRANSIT", "brand_new_substatus", ("in_transit", None)),  # falls back to the status
])
def test_semantics_of_key_codes(partner: Partner, code: str, sub: str,
                                expected: tuple[str, str | None]) -> None:
    e = run(partner, webhook([status(code, "2026-03-02T10:00:00Z", sub)])).events[0]
    assert (e.status, e.reason) == expected and e.raw_code == f"{code}/{sub}"


def test_unknown_status_is_a_gap(partner: Partner) -> None:
    result = run(partner, webhook([status("HELD_BY_ALIENS", "2026-03-02T10:00:00Z")]))
    (e,) = result.events
    assert (e.status, e.confidence, e.raw_code) == ("unknown", 0.0, "HELD_BY_ALIENS")
    assert result.gaps == ["HELD_BY_ALIENS"]


def test_bad_entry_is_dead_lettered_alone(partner: Partner) -> None:
    history = [status("TRANSIT", "2026-03-02T10:00:00Z", "package_accepted"),
               status("TRANSIT", "2026-03-02T25:00:00Z", "package_departed"),
               status("DELIVERED", "2026-03-03T10:00:00Z", "delivered")]
    result = run(partner, webhook(history))
    assert [e.status for e in result.events] == ["picked_up", "delivered"]
    assert [d.path for d in result.dead_letters] == ["$.data.tracking_history[1].status_date"]


def test_provider_error_and_wrong_shapes(partner: Partner) -> None:
    error = run(partner, (SAMPLES / "error_not_found.json").read_bytes())
    assert not error.events
    assert [(d.path, d.error) for d in error.dead_letters] == [
        ("$.detail", "Shippo API error: Not found.")]
    for payload, path in [(b'{"event": "transaction_created", "data": {}}', "$.event"),
                          (b'{"event": "track_updated", "data": "x"}', "$.data"),
                          (b'{"event": "track_updated", "data": {"tracking_number": "1"}}',
                           "$.data.tracking_status"),
                          (b"<html>", "$")]:
        result = run(partner, payload)
        assert not result.events and [d.path for d in result.dead_letters] == [path]


def test_identity(partner: Partner) -> None:
    a = run(partner, webhook([status("DELIVERED", "2026-03-02T10:00:00Z")],
                             transaction="txn1")).events[0]
    b = run(partner, webhook([status("DELIVERED", "2026-03-02T10:00:00Z")])).events[0]
    assert a.package_id == package_key("shippo", "9205590100000000009999", "txn1")
    assert b.package_id == package_key("shippo", "9205590100000000009999")
    assert a.shipment_id == "txn1" and a.event_id != b.event_id


def test_duplicates_share_the_event_id(partner: Partner) -> None:
    result = run(partner, (SAMPLES / "out_of_order_duplicates.json").read_bytes())
    delivered = [e for e in result.events if e.status == "delivered"]
    assert len(delivered) == 2 and delivered[0].event_id == delivered[1].event_id
    # tracking_status repeating the last history entry is not emitted twice
    lifecycle = run(partner, (SAMPLES / "lifecycle_delivered.json").read_bytes())
    assert len(lifecycle.events) == 5


def test_status_date_is_utc_and_midnight_eta_is_a_local_date(partner: Partner) -> None:
    result = run(partner, (SAMPLES / "lifecycle_delivered.json").read_bytes())
    e = result.events[-1]
    assert e.event_time == ms("2026-03-04T19:52:00Z") and not e.timezone_ambiguous
    la = "America/Los_Angeles"  # address_to is San Diego, CA
    assert e.promised_by == ms("2026-03-04T00:00:00", la) - 1
    assert (e.eta_start, e.eta_end) == (ms("2026-03-04T00:00:00", la),
                                        ms("2026-03-05T00:00:00", la) - 1)
    exact = run(partner, (SAMPLES / "exception_resolved.json").read_bytes()).events[0]
    assert (exact.eta_start, exact.eta_end) == (None, ms("2026-03-03T17:00:00-05:00"))
    naive = run(partner, webhook([status("TRANSIT", "2026-03-02T10:00:00")])).events[0]
    assert naive.event_time == ms("2026-03-02T10:00:00Z") and not naive.timezone_ambiguous


def test_test_numbers_are_synthetic(partner: Partner) -> None:
    (e,) = run(partner, (SAMPLES / "test_tracking_number.json").read_bytes()).events
    assert e.synthetic and e.tracking_number == "SHIPPO_DELIVERED"
    real = run(partner, webhook([status("DELIVERED", "2026-03-02T10:00:00Z")])).events[0]
    assert not real.synthetic


def test_attempts_and_input_untouched(partner: Partner) -> None:
    raw = (SAMPLES / "failed_attempts_then_delivered.json").read_bytes()
    before = copy.copy(raw)
    result = run(partner, raw)
    assert raw == before
    assert [(e.status, e.reason, e.attempt_number) for e in result.events
            if e.attempt_number is not None] == [
        ("delivery_attempted", "recipient_not_available", 1),
        ("delivery_attempted", "access_issue", 2), ("delivered", None, 3)]
    assert all(e.proof_of_delivery is None for e in result.events)
    text = json.dumps([e.to_json_dict() for e in result.events])
    assert "55403" not in text


def _t(text: str) -> int:
    return ms(text)


def sim_packages() -> list[tuple[SimPackage, list[SimScan]]]:
    ny: dict[str, Any] = {"zone": "America/New_York", "country": "US", "region": "NY", "city": "Albany",
          "postal_code": "12207"}
    co: dict[str, Any] = {"zone": "America/Denver", "country": "US", "region": "CO", "city": "Denver",
          "postal_code": "80216"}
    return [
        (SimPackage("shippo", "CWSYN2000000001", "usps_priority", _t("2026-03-01T12:00:00Z"),
                    promised_by=_t("2026-03-05T22:00:00Z"), shipment_id="txn_sim_1"), [
            SimScan("info_received", _t("2026-03-01T12:05:00Z"), **co),
            SimScan("picked_up", _t("2026-03-01T22:00:00Z"), **co),
            SimScan("staged", _t("2026-03-02T06:00:00Z"), **co),
            SimScan("in_transit", _t("2026-03-03T10:00:00Z"), **ny),
            SimScan("out_for_delivery", _t("2026-03-04T13:00:00Z"), **ny,
                    eta_end=_t("2026-03-04T22:00:00Z")),
            SimScan("delivery_attempted", _t("2026-03-04T19:00:00Z"), **ny,
                    reason="access_issue", attempt_number=1),
            SimScan("delivered", _t("2026-03-05T16:00:00Z"), **ny, attempt_number=2)]),
        (SimPackage("shippo", "CWSYN2000000002", "ups_ground", _t("2026-03-01T12:00:00Z")), [
            SimScan("exception", _t("2026-03-02T20:00:00Z"), **co, reason="carrier_delay"),
            SimScan("exception", _t("2026-03-03T20:00:00Z"), **co, reason="address_issue"),
            SimScan("available_for_pickup", _t("2026-03-04T15:00:00Z"), **co),
            SimScan("in_transit", _t("2026-03-04T18:00:00Z"), **co, raw_code="LIMBO")]),
        (SimPackage("shippo", "CWSYN2000000003", "fedex_2_day", _t("2026-03-01T12:00:00Z")), [
            SimScan("returned", _t("2026-03-06T15:00:00Z"), **ny),
            SimScan("unknown", _t("2026-03-07T15:00:00Z"), country="US", zone="UTC")]),
    ]


def test_render_transform_round_trip(partner: Partner) -> None:
    for pkg, scans in sim_packages():
        raw = renderer.render([(pkg, scans)], sent_at=_t("2026-03-08T00:00:00Z"))
        assert raw == renderer.render([(pkg, scans)], sent_at=_t("2026-03-08T00:00:00Z"))
        result = run(partner, raw)
        assert not result.dead_letters and len(result.events) == len(scans)
        eta = next((s.eta_end for s in reversed(scans) if s.eta_end is not None), None)
        for scan, e in zip(scans, result.events, strict=True):
            assert e.event_time == scan.event_time
            assert (e.promised_by, e.eta_end, e.service_level) == (pkg.promised_by, eta,
                                                                   pkg.service_level)
            if scan.raw_code is not None:
                assert (e.status, e.raw_code, e.confidence) == ("unknown", scan.raw_code, 0.0)
                assert result.gaps == [scan.raw_code]
                continue
            assert (e.status, e.reason) == (scan.status, scan.reason)
            if scan.status in {"delivered", "delivery_attempted"}:
                assert e.attempt_number == scan.attempt_number
        if pkg.shipment_id:
            assert {e.package_id for e in result.events} == {
                package_key("shippo", pkg.tracking_number, pkg.shipment_id)}


def test_lossy_codes_are_documented_choices() -> None:
    # Shippo has no "cancelled": it is sent as FAILURE/other, which comes back as an exception.
    assert renderer.partner_code(SimScan("cancelled", 0, "UTC")) == ("FAILURE", "other")
