"""AfterShip tracking webhooks: codebook coverage, mapping, duplicates, time zones, errors, round trip."""

from __future__ import annotations

import copy
import json
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from carrierwatch.core.model import package_key
from carrierwatch.synthetic.formats import aftership as renderer
from carrierwatch.synthetic.model import SimPackage, SimScan
from carrierwatch.transformers.base import TransformResult
from carrierwatch.transformers.registry import Partner, load_partner

ROOT = Path(__file__).resolve().parents[2]
RECEIVED = 1_772_712_000_000
SAMPLES = ROOT / "samples" / "aftership"

# AfterShip's tags and sub-statuses (CARRIER_FACTS.md §1, incl. the 2026-03-27 additions).
TAGS = ["Pending", "InfoReceived", "InTransit", "OutForDelivery", "AttemptFail", "Delivered",
        "AvailableForPickup", "Exception", "Expired"]
SUBTAGS = ([f"Delivered_00{i}" for i in range(1, 6)] + ["AvailableForPickup_001"]
           + [f"Exception_{i:03d}" for i in [*range(1, 14), *range(16, 22)]]
           + [f"AttemptFail_00{i}" for i in range(1, 4)]
           + [f"InTransit_00{i}" for i in range(1, 10)] + ["InfoReceived_001"]
           + [f"OutForDelivery_00{i}" for i in (1, 3, 4)]
           + [f"Pending_00{i}" for i in range(1, 7)] + ["Expired_001"])


@pytest.fixture(scope="module")
def partner() -> Partner:
    return load_partner(ROOT / "partners" / "aftership.yaml", ROOT / "codebooks")


def ms(text: str, zone: str | None = None) -> int:
    """Independent oracle: epoch ms of an ISO string (in ``zone`` when it has no offset)."""
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=ZoneInfo(zone or "UTC"))
    return round(dt.timestamp() * 1000)


def checkpoint(subtag: str | None, when: str, tag: str | None = None, **place: Any
               ) -> dict[str, Any]:
    tag = tag or (subtag or "").split("_")[0]
    return {"created_at": "2026-03-05T00:00:00+00:00", "checkpoint_time": when, "tag": tag,
            "subtag": subtag, "message": "m", **place}


def webhook(checkpoints: list[dict[str, Any]], *, tracking_id: str = "a" * 32,
            event: str = "tracking_update", **msg: Any) -> bytes:
    body = {"id": tracking_id, "tracking_number": "770000009999", "slug": "fedex",
            "created_at": "2026-03-01T00:00:00+00:00", "tag": "InTransit",
            "checkpoints": checkpoints, **msg}
    return json.dumps({"ts": 1772500000, "event": event, "event_id": "e1",
                       "is_tracking_first_tag": False, "msg": body}).encode()


def run(partner: Partner, raw: bytes) -> TransformResult:
    return partner.transform(raw, RECEIVED)


def test_codebook_lists_every_tag_and_subtag(partner: Partner) -> None:
    keys = set(partner.codebook.codes)
    assert set(TAGS) <= keys, set(TAGS) - keys
    assert set(SUBTAGS) <= keys, set(SUBTAGS) - keys


def test_every_code_maps_as_the_codebook_says(partner: Partner) -> None:
    codes = sorted(partner.codebook.codes)
    cps = [checkpoint(code if "_" in code else None, f"2026-03-02T{i // 60:02d}:{i % 60:02d}:00Z",
                      tag=code.split("_")[0]) for i, code in enumerate(codes)]
    result = run(partner, webhook(cps))
    assert not result.dead_letters and not result.gaps
    assert [e.raw_code for e in result.events] == codes
    for e in result.events:
        mapping = partner.codebook.codes[e.raw_code]
        assert (e.status, e.reason, e.confidence) == (mapping.status, mapping.reason,
                                                      mapping.confidence), e.raw_code


@pytest.mark.parametrize(("subtag", "expected"), [
    ("Exception_017", ("exception", "weather")),
    ("Exception_020", ("cancelled", None)),
    ("Exception_011", ("returned", None)),
    ("AttemptFail_002", ("delivery_attempted", "recipient_not_available")),
    ("InTransit_002", ("picked_up", None)),
    ("Exception_015", ("exception", "unknown")),  # unconfirmed: falls back to the tag
])
def test_semantics_of_key_codes(partner: Partner, subtag: str,
                                expected: tuple[str, str | None]) -> None:
    e = run(partner, webhook([checkpoint(subtag, "2026-03-02T10:00:00Z")])).events[0]
    assert (e.status, e.reason) == expected and e.raw_code == subtag


def test_unknown_code_is_a_gap(partner: Partner) -> None:
    result = run(partner, webhook([checkpoint("Teleported_001", "2026-03-02T10:00:00Z")]))
    (e,) = result.events
    assert (e.status, e.confidence, e.raw_code) == ("unknown", 0.0, "Teleported_001")
    assert result.gaps == ["Teleported_001"]


def test_bad_checkpoint_is_dead_lettered_alone(partner: Partner) -> None:
    raw = webhook([checkpoint("InTransit_001", "2026-03-02T10:00:00Z"),
                   checkpoint("InTransit_003", "last tuesday"),
                   checkpoint("Delivered_001", "2026-03-03T10:00:00Z")])
    result = run(partner, raw)
    assert [e.status for e in result.events] == ["in_transit", "delivered"]
    assert [d.path for d in result.dead_letters] == ["$.msg.checkpoints[1].checkpoint_time"]


def test_provider_error_and_wrong_shapes(partner: Partner) -> None:
    error = run(partner, (SAMPLES / "error_not_found.json").read_bytes())
    assert not error.events
    assert [(d.path, "4004" in d.error) for d in error.dead_letters] == [("$.meta.code", True)]
    for payload, path in [(b"{}", "$.event"), (b'{"event": "return_update", "msg": {}}', "$.event"),
                          (b'{"event": "tracking_update", "msg": []}', "$.msg"),
                          (b"\xff\xfe", "$")]:
        result = run(partner, payload)
        assert not result.events and [d.path for d in result.dead_letters] == [path]


def test_identity(partner: Partner) -> None:
    a = run(partner, webhook([checkpoint("Delivered_001", "2026-03-02T10:00:00Z")],
                             tracking_id="id1")).events[0]
    b = run(partner, webhook([checkpoint("Delivered_001", "2026-03-02T10:00:00Z")],
                             tracking_id="id2")).events[0]
    assert a.package_id == package_key("aftership", "770000009999", "id1")
    assert a.shipment_id == "id1" and a.package_id != b.package_id


def test_copy_with_added_location_keeps_the_event_id(partner: Partner) -> None:
    result = run(partner, (SAMPLES / "duplicate_checkpoint_location_added.json").read_bytes())
    bare, located = result.events[1], result.events[2]
    assert bare.location is None and located.location is not None
    assert bare.event_id == located.event_id
    assert bare.event_time == located.event_time == ms("2026-03-04T07:02:00", "America/Denver")
    assert not bare.timezone_ambiguous
    assert bare.partner_received_time == ms("2026-03-04T14:05:00+00:00")


def test_time_zones(partner: Partner) -> None:
    result = run(partner, (SAMPLES / "timezone_fold_and_guess.json").read_bytes())
    houston, fold, exact, nowhere = result.events
    assert houston.timezone_ambiguous and fold.timezone_ambiguous and nowhere.timezone_ambiguous
    assert not exact.timezone_ambiguous
    assert fold.event_time == ms("2026-11-01T01:30:00-04:00")   # first occurrence of 01:30
    assert exact.event_time == ms("2026-11-01T01:40:00-05:00")
    assert nowhere.event_time == ms("2026-11-01T03:05:00", "America/New_York")  # destination


def test_promise_eta_and_edd_revise(partner: Partner) -> None:
    e = run(partner, (SAMPLES / "lifecycle_delivered.json").read_bytes()).events[-1]
    assert e.promised_by == ms("2026-03-05T00:00:00", "America/Chicago") - 1
    assert e.eta_end == ms("2026-03-03T17:00:00-06:00")
    assert (e.attempt_number, e.proof_of_delivery) == (1, "signature")
    revised = run(partner, (SAMPLES / "edd_revise.json").read_bytes()).events
    assert {(x.eta_start, x.eta_end) for x in revised} == {
        (ms("2026-03-05T08:00:00-07:00"), ms("2026-03-05T20:00:00-07:00"))}


def test_no_personal_data_and_input_untouched(partner: Partner) -> None:
    raw = (SAMPLES / "lifecycle_delivered.json").read_bytes()
    before = copy.copy(raw)
    result = run(partner, raw)
    assert raw == before
    text = json.dumps([e.to_json_dict() for e in result.events]).upper()
    for secret in ("QUILLFEATHER", "THEODORE", "MAPLEWOOD", "5550147", "EXAMPLE.COM", "60540"):
        assert secret not in text


def _t(text: str) -> int:
    return ms(text)


def sim_packages() -> list[tuple[SimPackage, list[SimScan]]]:
    il: dict[str, Any] = {"zone": "America/Chicago", "country": "US", "region": "IL", "city": "Chicago",
          "postal_code": "60607"}
    tx: dict[str, Any] = {"zone": "America/Chicago", "country": "US", "region": "TX", "city": "Austin",
          "postal_code": "78701"}
    ga: dict[str, Any] = {"zone": "America/New_York", "country": "US", "region": "GA", "city": "Atlanta",
          "postal_code": "30303"}
    promise = ms("2026-03-06T00:00:00", "America/New_York") - 1   # end of the local day
    return [
        (SimPackage("aftership", "CWSYN1000000001", "UPS Ground", _t("2026-03-01T12:00:00Z"),
                    promised_by=promise, shipment_id="sim-aftership-1"), [
            SimScan("info_received", _t("2026-03-01T12:05:00Z"), **il),
            SimScan("picked_up", _t("2026-03-01T22:00:00Z"), **tx),
            SimScan("in_transit", _t("2026-03-03T10:00:00Z"), **ga),
            SimScan("out_for_delivery", _t("2026-03-04T13:00:00Z"), **ga,
                    eta_end=_t("2026-03-04T22:00:00Z")),
            SimScan("delivery_attempted", _t("2026-03-04T19:00:00Z"), **ga,
                    reason="recipient_not_available", attempt_number=1),
            SimScan("delivered", _t("2026-03-05T16:00:00Z"), **ga, attempt_number=2,
                    proof_of_delivery="signature")]),
        (SimPackage("aftership", "CWSYN1000000002", "FedEx Ground", _t("2026-03-01T12:00:00Z")), [
            SimScan("exception", _t("2026-03-02T20:00:00Z"), **il, reason="customs"),
            SimScan("exception", _t("2026-03-03T20:00:00Z"), **il, reason="damaged"),
            SimScan("available_for_pickup", _t("2026-03-04T15:00:00Z"), **il),
            SimScan("in_transit", _t("2026-03-04T18:00:00Z"), **il, raw_code="Warp_001")]),
        (SimPackage("aftership", "CWSYN1000000003", "FedEx 2Day", _t("2026-10-30T12:00:00Z")), [
            SimScan("in_transit", ms("2026-11-01T01:30:00-05:00"), **ga),  # second 01:30
            SimScan("returned", _t("2026-11-03T15:00:00Z"), **ga),
            SimScan("cancelled", _t("2026-11-04T15:00:00Z"), **ga)]),
    ]


def test_render_transform_round_trip(partner: Partner) -> None:
    for pkg, scans in sim_packages():
        raw = renderer.render([(pkg, scans)], sent_at=_t("2026-03-08T00:00:00Z"))
        assert raw == renderer.render([(pkg, scans)], sent_at=_t("2026-03-08T00:00:00Z"))
        result = run(partner, raw)
        assert not result.dead_letters and len(result.events) == len(scans)
        eta = next((s.eta_end for s in reversed(scans) if s.eta_end is not None), None)
        for scan, e in zip(scans, result.events, strict=True):
            assert e.event_time == scan.event_time, scan
            assert (e.promised_by, e.eta_end) == (pkg.promised_by, eta)
            assert e.partner_received_time == max(scan.visible_at, scan.event_time)
            if scan.raw_code is not None:
                assert (e.status, e.raw_code, e.confidence) == ("unknown", scan.raw_code, 0.0)
                assert result.gaps == [scan.raw_code]
                continue
            assert (e.status, e.reason or None) == (scan.status, scan.reason)
            if scan.status in {"delivered", "delivery_attempted"}:
                assert e.attempt_number == scan.attempt_number
            if scan.status == "delivered":
                assert e.proof_of_delivery == scan.proof_of_delivery
        assert renderer.SIGNER not in json.dumps([e.to_json_dict() for e in result.events])
