"""FedEx transformer, codebook and renderer: hand-written checks with independent expectations."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml

from carrierwatch.core.model import CanonicalEvent, event_id, package_key
from carrierwatch.synthetic.formats import fedex as renderer
from carrierwatch.synthetic.model import SimPackage, SimScan
from carrierwatch.transformers.base import TransformResult
from carrierwatch.transformers.registry import Partner, load_partner

ROOT = Path(__file__).resolve().parents[2]
RECEIVED = 1_772_712_000_000
PARTNER: Partner = load_partner(ROOT / "partners" / "fedex.yaml", ROOT / "codebooks")
CODEBOOK_YAML: dict[str, dict[str, Any]] = yaml.safe_load(
    (ROOT / "codebooks" / "fedex.yaml").read_text())["codes"]


def ms(text: str, zone: str | None = None) -> int:
    """Independent oracle: epoch ms of an ISO time (in ``zone`` when it has no offset)."""
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        assert zone is not None
        moment = moment.replace(tzinfo=ZoneInfo(zone))
    return round(moment.timestamp() * 1000)


def scan(date: str, event_type: str, exception_code: str = "", *, city: str = "MEMPHIS",
         state: str | None = "TN", postal: str = "38118", country: str | None = "US"
         ) -> dict[str, Any]:
    where: dict[str, Any] = {"city": city, "postalCode": postal}
    if state is not None:
        where["stateOrProvinceCode"] = state
    if country is not None:
        where["countryCode"] = country
    return {"date": date, "eventType": event_type, "eventDescription": "scan",
            "exceptionCode": exception_code, "scanLocation": where}


def track_result(scans: list[dict[str, Any]], number: str = "794600000001",
                 unique_id: str | None = "12026~794600000001~FDEG", **extra: Any
                 ) -> dict[str, Any]:
    info: dict[str, Any] = {"trackingNumber": number, "carrierCode": "FDXG"}
    if unique_id is not None:
        info["trackingNumberUniqueId"] = unique_id
    return {"trackingNumberInfo": info, "scanEvents": scans, **extra}


def payload(*results: dict[str, Any]) -> bytes:
    return json.dumps({"transactionId": "t-1", "output": {"completeTrackResults": [
        {"trackingNumber": r["trackingNumberInfo"].get("trackingNumber"), "trackResults": [r]}
        for r in results]}}).encode()


def run(raw: bytes) -> TransformResult:
    return PARTNER.transform(raw, RECEIVED)


def by_time(result: TransformResult) -> list[CanonicalEvent]:
    return sorted(result.events, key=lambda e: e.event_time)


# --- codebook ---------------------------------------------------------------------------------


@pytest.mark.parametrize("key", sorted(CODEBOOK_YAML))
def test_every_codebook_code_maps_as_written(key: str) -> None:
    event_type, _, exception_code = key.partition("/")
    result = run(payload(track_result([scan("2026-03-02T10:00:00-06:00", event_type,
                                            exception_code)])))
    assert not result.dead_letters and not result.gaps
    (event,) = result.events
    entry = CODEBOOK_YAML[key]
    assert (event.status, event.reason, event.confidence, event.raw_code) == (
        entry["status"], entry.get("reason"), float(entry["confidence"]), key)


def test_exception_codes_tell_reasons_apart_and_fall_back_to_the_event_type() -> None:
    result = run(payload(track_result([
        scan("2026-03-02T10:00:00-06:00", "DE", "07"),
        scan("2026-03-03T10:00:00-06:00", "DE", "08"),
        scan("2026-03-04T10:00:00-06:00", "DE", "Q42"),
    ])))
    reasons = [(e.raw_code, e.status, e.reason) for e in by_time(result)]
    assert reasons == [("DE/07", "delivery_attempted", "refused"),
                       ("DE/08", "delivery_attempted", "recipient_not_available"),
                       ("DE/Q42", "delivery_attempted", "unknown")]
    assert result.gaps == []


def test_unknown_code_is_unknown_with_zero_confidence_and_a_gap() -> None:
    result = run(payload(track_result([scan("2026-03-02T10:00:00-06:00", "ZQ", "9")])))
    (event,) = result.events
    assert (event.status, event.confidence, event.raw_code, event.reason) == (
        "unknown", 0.0, "ZQ/9", None)
    assert result.gaps == ["ZQ/9"]


# --- errors -----------------------------------------------------------------------------------


def test_whole_response_error_is_one_dead_letter_naming_fedex_code() -> None:
    raw = json.dumps({"transactionId": "x", "errors": [
        {"code": "TRACKING.TRACKINGNUMBER.EMPTY", "message": "Please provide tracking number."},
        {"code": "SYSTEM.UNEXPECTED.ERROR", "message": "Try later"}]}).encode()
    result = run(raw)
    assert result.events == []
    (letter,) = result.dead_letters
    assert letter.path == "$.errors[0].code"
    assert "TRACKING.TRACKINGNUMBER.EMPTY" in letter.error
    assert "SYSTEM.UNEXPECTED.ERROR" in letter.error
    assert letter.raw == raw and letter.partner_id == "fedex" and letter.received_time == RECEIVED


def test_not_found_result_is_a_dead_letter_while_the_other_result_still_counts() -> None:
    missing = {"trackingNumberInfo": {"trackingNumber": "794699999999"},
               "error": {"code": "TRACKING.TRACKINGNUMBER.NOTFOUND", "message": "not found"}}
    result = run(payload(missing, track_result([scan("2026-03-02T10:00:00-06:00", "PU")])))
    assert [e.status for e in result.events] == ["picked_up"]
    (letter,) = result.dead_letters
    assert letter.path == "$.output.completeTrackResults[0].trackResults[0].error.code"
    assert "TRACKING.TRACKINGNUMBER.NOTFOUND" in letter.error


def test_bad_scan_date_is_a_dead_letter_for_that_scan_only() -> None:
    result = run(payload(track_result([
        scan("2026-03-02T10:00:00-06:00", "PU"),
        scan("yesterday at noon", "IT"),
        scan("2026-03-03T10:00:00-06:00", "OD"),
    ])))
    assert [e.status for e in by_time(result)] == ["picked_up", "out_for_delivery"]
    (letter,) = result.dead_letters
    assert letter.path == "$.output.completeTrackResults[0].trackResults[0].scanEvents[1].date"
    assert "yesterday at noon" in letter.error


@pytest.mark.parametrize(("raw", "path"), [
    (b"\x00\xffnot json", "$"),
    (b"[]", "$"),
    (b'{"output": null}', "$.output"),
    (b'{"output": {"completeTrackResults": "none"}}', "$.output.completeTrackResults"),
    (b'{"output": {"completeTrackResults": [{"trackResults": [{"scanEvents": []}]}]}}',
     "$.output.completeTrackResults[0].trackResults[0].trackingNumberInfo"),
    (b'{"output": {"completeTrackResults": [{"trackResults": [{"trackingNumberInfo": '
     b'{"trackingNumber": "1"}, "scanEvents": {"eventType": "PU"}}]}]}}',
     "$.output.completeTrackResults[0].trackResults[0].scanEvents"),
    (b'{"output": {"completeTrackResults": [{"trackResults": [{"trackingNumberInfo": '
     b'{"trackingNumber": "1"}, "scanEvents": [{"eventType": 7, "date": "2026-03-02"}]}]}]}}',
     "$.output.completeTrackResults[0].trackResults[0].scanEvents[0].eventType"),
])
def test_malformed_payloads_become_dead_letters_with_the_field_path(raw: bytes, path: str
                                                                     ) -> None:
    result = PARTNER.transformer(raw, PARTNER.context(RECEIVED))   # no safety net needed
    assert result.events == []
    assert [d.path for d in result.dead_letters] == [path]


def test_input_bytes_are_not_mutated_and_kept_in_dead_letters() -> None:
    raw = payload(track_result([scan("2026-03-02T10:00:00-06:00", "PU"), scan("bad", "IT")]))
    copy = bytes(raw)
    result = run(raw)
    assert raw == copy
    assert result.dead_letters[0].raw == copy


# --- identity, duplicates ----------------------------------------------------------------------


def test_reused_tracking_number_gives_two_packages_told_apart_by_unique_id() -> None:
    first = track_result([scan("2026-03-02T10:00:00-06:00", "PU")],
                         unique_id="12026~794600000001~FDEG")
    second = track_result([scan("2025-03-02T10:00:00-06:00", "PU")],
                          unique_id="11661~794600000001~FDEG")
    result = run(payload(first, second))
    assert {(e.package_id, e.shipment_id) for e in result.events} == {
        ("fedex:794600000001:12026~794600000001~FDEG", "12026~794600000001~FDEG"),
        ("fedex:794600000001:11661~794600000001~FDEG", "11661~794600000001~FDEG"),
    }
    again = run(payload(track_result([scan("2026-03-02T10:00:00-06:00", "PU")])))
    assert again.events[0].event_id == by_time(result)[1].event_id


def test_spod_and_ppod_delivered_notices_share_one_event_id() -> None:
    result = run(payload(track_result(
        [scan("2026-03-04T15:22:00-06:00", "DL"),
         scan("2026-03-04T15:22:00-06:00", "DL", city="DALLAS", state="TX", postal="")],
        availableImages=[{"type": "SIGNATURE_PROOF_OF_DELIVERY"}])))
    first, second = result.events
    expected = event_id("fedex", package_key("fedex", "794600000001", "12026~794600000001~FDEG"),
                        "delivered", ms("2026-03-04T15:22:00-06:00"))
    assert first.event_id == second.event_id == expected


# --- time -----------------------------------------------------------------------------------------


def test_offset_times_are_exact_and_the_original_string_is_kept() -> None:
    (event,) = run(payload(track_result([scan("2026-03-02T14:05:00-06:00", "PU")]))).events
    assert event.event_time == ms("2026-03-02T14:05:00-06:00") == 1_772_481_900_000
    assert event.event_time_local == "2026-03-02T14:05:00-06:00"
    assert event.timezone_ambiguous is False


def test_local_times_without_offset_use_the_scan_zone_and_flag_guesses_and_dst() -> None:
    result = run(payload(track_result([
        scan("2026-03-02T09:00:00", "PU", city="COLUMBUS", state="OH"),      # one zone: exact
        scan("2026-03-03T09:00:00", "AR", city="NASHVILLE", state="TN"),     # two zones: guess
        scan("2026-03-08T02:30:00", "OD", city="NEWARK", state="NJ"),        # spring-forward gap
        scan("2026-11-01T01:30:00", "DL", city="NEWARK", state="NJ"),        # fall-back fold
    ])))
    events = by_time(result)
    assert [(e.event_time, e.timezone_ambiguous) for e in events] == [
        (ms("2026-03-02T09:00:00", "America/New_York"), False),
        (ms("2026-03-03T09:00:00", "America/Chicago"), True),
        (ms("2026-03-08T02:30:00-05:00"), True),
        (ms("2026-11-01T01:30:00-04:00"), True),
    ]
    assert events[1].event_time_local == "2026-03-03T09:00:00"


# --- attempts, proof, promises ------------------------------------------------------------------------


def test_attempts_are_counted_in_time_order_and_delivered_gets_the_next_number() -> None:
    result = run(payload(track_result([
        scan("2026-03-05T10:00:00-05:00", "DL"),
        scan("2026-03-04T14:00:00-05:00", "DE", "15"),
        scan("2026-03-03T14:00:00-05:00", "DE", "08"),
        scan("2026-03-03T14:00:00-05:00", "DE", "08"),   # the same attempt sent twice
    ], availableImages=[{"type": "PICTURE_PROOF_OF_DELIVERY"}])))
    assert [(e.raw_code, e.attempt_number, e.proof_of_delivery) for e in by_time(result)] == [
        ("DE/08", 1, None), ("DE/08", 1, None), ("DE/15", 2, None), ("DL", 3, "photo")]


def test_reported_delivery_attempts_win_and_a_signer_is_a_signature() -> None:
    result = run(payload(track_result(
        [scan("2026-03-05T10:00:00-05:00", "DL")],
        deliveryDetails={"deliveryAttempts": "2", "signedByName": "A.SIGNER"})))
    (event,) = result.events
    assert (event.attempt_number, event.proof_of_delivery) == (2, "signature")


def test_commitment_is_on_every_event_and_the_estimate_on_the_newest_only() -> None:
    result = run(payload(track_result(
        [scan("2026-03-02T10:00:00-06:00", "PU"), scan("2026-03-03T10:00:00-06:00", "IT")],
        dateAndTimes=[{"type": "COMMITMENT", "dateTime": "2026-03-05T20:00:00-06:00"},
                      {"type": "ESTIMATED_DELIVERY", "dateTime": "2026-03-04"},
                      {"type": "SHIP", "dateTime": "2026-03-02T00:00:00-06:00"}],
        estimatedDeliveryTimeWindow={"window": {"begins": "2026-03-04"}},
        recipientInformation={"address": {"stateOrProvinceCode": "CO", "countryCode": "US"}})))
    older, newest = by_time(result)
    assert older.promised_by == newest.promised_by == ms("2026-03-05T20:00:00-06:00")
    assert (older.eta_start, older.eta_end) == (None, None)
    assert newest.eta_start == ms("2026-03-04T00:00:00", "America/Denver")
    assert newest.eta_end == ms("2026-03-04T23:59:59", "America/Denver")
    assert not newest.timezone_ambiguous


def test_no_personal_data_reaches_events() -> None:
    raw = (ROOT / "samples" / "fedex" / "lifecycle_delivered.json").read_bytes()
    assert b"Dana Quill" in raw and b"1742 Larkspur Court" in raw
    text = json.dumps([e.to_json_dict() for e in run(raw).events]).lower()
    assert len(run(raw).events) == 8
    for secret in ("dana", "quill", "larkspur", "3035550142", "apt 5", "warehouse desk", "80220"):
        assert secret not in text


# --- renderer round trip -------------------------------------------------------------------------------


def _packages() -> list[tuple[SimPackage, list[SimScan]]]:
    chi, den = "America/Chicago", "America/Denver"
    base = ms("2026-03-02T15:00:00Z")
    hour = 3_600_000

    def at(n: int) -> int:
        return base + n * hour

    def s(status: str, n: int, zone: str, region: str, **kw: Any) -> SimScan:
        return SimScan(status, at(n), zone, region=region, city="Somewhere", postal_code="38118",
                       **kw)

    return [
        (SimPackage("fedex", "794688880001", "FEDEX_GROUND", at(-20), promised_by=at(60)),
         [s("info_received", -20, chi, "TN"), s("picked_up", 0, chi, "TN"),
          s("in_transit", 6, chi, "TN", eta_end=at(54)), s("staged", 30, den, "CO"),
          s("out_for_delivery", 40, den, "CO", eta_end=at(50)),
          s("delivered", 45, den, "CO", attempt_number=1, proof_of_delivery="signature")]),
        (SimPackage("fedex", "794688880002", "PRIORITY_OVERNIGHT", at(-2), promised_by=at(20),
                    shipment_id="12061~794688880002~FDXE"),
         [s("picked_up", 0, chi, "TN"), s("out_for_delivery", 18, den, "CO"),
          s("delivery_attempted", 22, den, "CO", reason="recipient_not_available",
            attempt_number=1),
          s("delivery_attempted", 46, den, "CO", reason="address_issue", attempt_number=2),
          s("delivered", 70, den, "CO", attempt_number=3, proof_of_delivery="photo")]),
        (SimPackage("fedex", "794688880003", "FEDEX_2_DAY", at(-1)),
         [s("picked_up", 0, chi, "TN"), s("exception", 5, chi, "TN", reason="customs"),
          s("in_transit", 9, chi, "TN", raw_code="ZQ"), s("exception", 12, chi, "TN",
                                                           reason="weather"),
          s("returned", 30, chi, "TN")]),
        (SimPackage("fedex", "794688880004", "FEDEX_GROUND", at(-1)),
         [s("picked_up", 0, chi, "TN"), s("available_for_pickup", 30, den, "CO"),
          s("cancelled", 40, den, "CO")]),
    ]


def _check_round_trip(package: SimPackage, scans: Sequence[SimScan],
                      events: list[CanonicalEvent]) -> None:
    assert len(events) == len(scans)
    etas = [sc.eta_end for sc in scans if sc.eta_end is not None]
    for n, (sim, event) in enumerate(zip(scans, events, strict=True)):
        assert event.event_time == sim.event_time
        assert event.tracking_number == package.tracking_number
        assert event.service_level == package.service_level
        assert event.promised_by == package.promised_by
        assert event.location is not None and event.location.region == f"US-{sim.region}"
        if sim.raw_code:
            assert (event.status, event.raw_code, event.confidence) == ("unknown",
                                                                         sim.raw_code, 0.0)
            continue
        assert event.status == sim.status
        if (sim.status, sim.reason) in renderer.SCAN_CODES:
            assert event.reason == sim.reason
        if sim.status in {"delivery_attempted", "delivered"}:
            assert event.attempt_number == sim.attempt_number
        if sim.status == "delivered":
            assert event.proof_of_delivery == sim.proof_of_delivery
        if n == len(scans) - 1:
            assert event.eta_end == (etas[-1] if etas else None)
    if package.shipment_id:
        assert {e.shipment_id for e in events} == {package.shipment_id}
        assert {e.package_id for e in events} == {
            package_key("fedex", package.tracking_number, package.shipment_id)}


def test_render_then_transform_round_trip() -> None:
    assert renderer.MAX_PACKAGES_PER_PAYLOAD == 1
    gaps: list[str] = []
    for package, scans in _packages():
        raw = renderer.render([(package, scans)], sent_at=ms("2026-03-06T00:00:00Z"))
        assert raw == renderer.render([(package, scans)], sent_at=ms("2026-03-06T00:00:00Z"))
        result = run(raw)
        assert result.dead_letters == []
        gaps += result.gaps
        _check_round_trip(package, scans, by_time(result))
    assert gaps == ["ZQ"]
