"""UPS transformer, codebook and renderer: hand-written checks with independent expectations."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml

from carrierwatch.core.model import CanonicalEvent, event_id
from carrierwatch.synthetic.formats import ups as renderer
from carrierwatch.synthetic.model import SimPackage, SimScan
from carrierwatch.transformers.base import TransformResult
from carrierwatch.transformers.registry import Partner, load_partner

ROOT = Path(__file__).resolve().parents[2]
RECEIVED = 1_772_712_000_000
PARTNER: Partner = load_partner(ROOT / "partners" / "ups.yaml", ROOT / "codebooks")
CODEBOOK_YAML: dict[str, dict[str, Any]] = yaml.safe_load(
    (ROOT / "codebooks" / "ups.yaml").read_text())["codes"]
NUMBER = "1Z5R89390300009999"


def ms(text: str, zone: str | None = None) -> int:
    """Independent oracle: epoch ms of an ISO time (in ``zone`` when it has no offset)."""
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        assert zone is not None
        moment = moment.replace(tzinfo=ZoneInfo(zone))
    return round(moment.timestamp() * 1000)


def activity(kind: str, code: str | None, date: str, time: str,
             gmt: tuple[str, str, str] | None = None, *, state: str = "NY",
             city: str = "NEW YORK") -> dict[str, Any]:
    status: dict[str, Any] = {"type": kind, "description": "scan"}
    if code is not None:
        status["code"] = code
    item: dict[str, Any] = {"status": status, "date": date, "time": time,
                            "location": {"address": {"city": city, "stateProvince": state,
                                                     "postalCode": "10001",
                                                     "countryCode": "US"}}}
    if gmt is not None:
        item["gmtDate"], item["gmtTime"], item["gmtOffset"] = gmt
    return item


def package(activities: list[dict[str, Any]], number: str = NUMBER, **extra: Any
            ) -> dict[str, Any]:
    return {"trackingNumber": number, "activity": activities, **extra}


def payload(*packages: dict[str, Any], inquiry: str = NUMBER) -> bytes:
    return json.dumps({"trackResponse": {"shipment": [
        {"inquiryNumber": inquiry, "package": list(packages)}]}}).encode()


def run(raw: bytes) -> TransformResult:
    return PARTNER.transform(raw, RECEIVED)


def by_time(result: TransformResult) -> list[CanonicalEvent]:
    return sorted(result.events, key=lambda e: e.event_time)


GMT = ("20260302", "15:00:00", "-05:00")


# --- codebook ---------------------------------------------------------------------------------


def _activity_for_key(key: str) -> dict[str, Any]:
    kind, _, code = key.partition("/")
    if kind == "*":
        assert f"U/{code}" not in CODEBOOK_YAML
        kind = "U"                      # a type without compound entries: only */<code> matches
    return activity(kind, code or None, "20260302", "100000", GMT)


@pytest.mark.parametrize("key", sorted(CODEBOOK_YAML))
def test_every_codebook_code_maps_as_written(key: str) -> None:
    result = run(payload(package([_activity_for_key(key)])))
    assert not result.dead_letters and not result.gaps
    (event,) = result.events
    entry = CODEBOOK_YAML[key]
    assert (event.status, event.reason, event.confidence) == (
        entry["status"], entry.get("reason"), float(entry["confidence"]))


def test_type_i_is_split_by_code_and_x_codes_carry_reasons() -> None:
    rows = [("I", "OT"), ("I", "OF"), ("I", "DP"), ("I", "DS"), ("X", "5"), ("X", "6"),
            ("X", "18"), ("X", "48"), ("X", "AM"), ("X", "7W"), ("X", "45")]
    result = run(payload(package([
        activity(kind, code, "20260302", f"{10 + n:02d}0000", None)
        for n, (kind, code) in enumerate(rows)])))
    got = [(e.raw_code, e.status, e.reason) for e in by_time(result)]
    assert got == [
        ("I/OT", "out_for_delivery", None), ("I/OF", "out_for_delivery", None),
        ("I/DP", "in_transit", None), ("I/DS", "staged", None),
        ("X/5", "exception", "customs"), ("X/6", "exception", "carrier_delay"),
        ("X/18", "exception", "carrier_delay"),
        ("X/48", "delivery_attempted", "recipient_not_available"),
        ("X/AM", "delivery_attempted", "refused"), ("X/7W", "exception", "weather"),
        ("X/45", "exception", "damaged")]


def test_unknown_type_is_unknown_with_zero_confidence_and_a_gap() -> None:
    result = run(payload(package([activity("Q7", None, "20260302", "100000", GMT),
                                  activity("Q8", "Z1", "20260302", "110000", None)])))
    assert [(e.status, e.confidence, e.raw_code) for e in by_time(result)] == [
        ("unknown", 0.0, "Q7"), ("unknown", 0.0, "Q8/Z1")]
    assert sorted(result.gaps) == ["Q7", "Q8/Z1"]


# --- errors -----------------------------------------------------------------------------------


def test_api_error_is_a_dead_letter_naming_ups_code() -> None:
    raw = b'{"response": {"errors": [{"code": "151044", "message": "No tracking information"}]}}'
    result = run(raw)
    assert result.events == []
    (letter,) = result.dead_letters
    assert (letter.path, letter.raw) == ("$.response.errors[0].code", raw)
    assert "151044" in letter.error


def test_shipment_with_only_warnings_is_a_dead_letter_and_others_still_count() -> None:
    raw = json.dumps({"trackResponse": {"shipment": [
        {"inquiryNumber": "1Z1", "warnings": [{"code": "TW0001", "message": "Not found"}]},
        {"inquiryNumber": NUMBER, "package": [package([activity("P", "PU", "20260302",
                                                                "100000", GMT)])]}]}}).encode()
    result = run(raw)
    assert [e.status for e in result.events] == ["picked_up"]
    (letter,) = result.dead_letters
    assert letter.path == "$.trackResponse.shipment[0].warnings[0].code"
    assert "TW0001" in letter.error


def test_bad_activity_fields_are_dead_letters_for_that_activity_only() -> None:
    result = run(payload(package([
        activity("I", "OT", "20260303", "081500", ("20260303", "13:15:00", "-05:00")),
        activity("I", "AR", "20260230", "120000", None),
        activity("I", "DP", "20260302", "25:00", None),
        activity("I", "DP", "20260302", "120000", ("20260302", "17:00:00", "-05:00"))
        | {"gmtTime": "5pm"},
        activity("P", "PU", "20260302", "100000", GMT),
    ])))
    assert [e.status for e in by_time(result)] == ["picked_up", "out_for_delivery"]
    assert sorted(d.path for d in result.dead_letters) == [
        f"$.trackResponse.shipment[0].package[0].activity[{n}].{field}"
        for n, field in ((1, "date"), (2, "time"), (3, "gmtTime"))]


@pytest.mark.parametrize(("raw", "path"), [
    (b"{not json", "$"),
    (b'"text"', "$"),
    (b'{"trackResponse": {"shipment": {}}}', "$.trackResponse.shipment"),
    (b'{"trackResponse": {"shipment": [{"inquiryNumber": "1Z"}]}}',
     "$.trackResponse.shipment[0].package"),
    (b'{"trackResponse": {"shipment": [{"package": [{"activity": []}]}]}}',
     "$.trackResponse.shipment[0].package[0].trackingNumber"),
    (b'{"trackResponse": {"shipment": [{"package": [{"trackingNumber": "1Z", "activity": '
     b'[{"date": "20260302", "status": {"code": "PU"}}]}]}]}}',
     "$.trackResponse.shipment[0].package[0].activity[0].status.type"),
])
def test_malformed_payloads_become_dead_letters_with_the_field_path(raw: bytes, path: str
                                                                     ) -> None:
    result = PARTNER.transformer(raw, PARTNER.context(RECEIVED))
    assert result.events == []
    assert [d.path for d in result.dead_letters] == [path]


def test_input_bytes_are_not_mutated() -> None:
    raw = payload(package([activity("P", "PU", "20260302", "100000", GMT),
                           activity("I", "AR", "bad", "100000", None)]))
    copy = bytes(raw)
    result = run(raw)
    assert raw == copy and result.dead_letters[0].raw == copy


# --- identity, duplicates ----------------------------------------------------------------------


def test_identity_is_the_tracking_number_and_shipment_is_the_inquiry_number() -> None:
    result = run(payload(package([activity("P", "PU", "20260302", "100000", GMT)]),
                         package([activity("P", "PU", "20260302", "100000", GMT)],
                                 number="1Z5R89390300008888"), inquiry=NUMBER))
    assert [(e.package_id, e.shipment_id) for e in result.events] == [
        (f"ups:{NUMBER}", NUMBER), ("ups:1Z5R89390300008888", NUMBER)]


def test_repeated_activity_gives_the_same_event_id_even_when_enriched() -> None:
    plain = activity("I", "OT", "20260304", "081502", ("20260304", "13:15:02", "-05:00"))
    enriched = json.loads(json.dumps(plain))
    enriched["location"]["address"]["postalCode"] = ""
    enriched["status"]["description"] = "Out For Delivery Today"
    first, second = run(payload(package([plain, enriched]))).events
    assert first.event_id == second.event_id == event_id(
        "ups", f"ups:{NUMBER}", "out_for_delivery", ms("2026-03-04T13:15:02Z"))


# --- time --------------------------------------------------------------------------------------------


def test_gmt_fields_give_the_exact_instant_and_the_local_string_is_kept() -> None:
    result = run(payload(package([
        activity("I", "OT", "20260304", "081502", ("20260304", "13:15:02", "-05:00")),
        activity("I", "AR", "20260303", "221500", ("", "", "-06:00"), state="TX"),
    ])))
    arrival, out = by_time(result)
    assert (out.event_time, out.event_time_local, out.timezone_ambiguous) == (
        ms("2026-03-04T08:15:02-05:00"), "20260304T081502", False)
    assert (arrival.event_time, arrival.timezone_ambiguous) == (
        ms("2026-03-03T22:15:00-06:00"), False)


def test_local_times_without_gmt_use_the_place_zone_and_flag_guesses_and_dst() -> None:
    result = run(payload(package([
        activity("P", "PU", "20260302", "090000", None, state="GA"),        # one zone
        activity("I", "DP", "20260303", "090000", None, state="KY"),        # two zones: guess
        activity("I", "AR", "20260308", "023000", None, state="NJ"),        # gap
        activity("I", "OT", "20261101", "013000", None, state="NY"),        # fold
    ])))
    assert [(e.event_time, e.timezone_ambiguous) for e in by_time(result)] == [
        (ms("2026-03-02T09:00:00", "America/New_York"), False),
        (ms("2026-03-03T09:00:00", "America/New_York"), True),
        (ms("2026-03-08T02:30:00-05:00"), True),
        (ms("2026-11-01T01:30:00-04:00"), True),
    ]


# --- attempts, proof, promises -------------------------------------------------------------------------


def test_attempts_count_in_time_order_and_delivered_is_attempts_plus_one() -> None:
    result = run(payload(package([
        activity("D", "FS", "20260305", "113000", ("20260305", "16:30:00", "-05:00")),
        activity("X", "55", "20260304", "161500", ("20260304", "21:15:00", "-05:00")),
        activity("X", "48", "20260303", "150500", ("20260303", "20:05:00", "-05:00")),
    ], deliveryInformation={"receivedBy": "PAT DOE",
                            "signature": {"image": "R0lGODlh"}})))
    assert [(e.raw_code, e.attempt_number, e.proof_of_delivery) for e in by_time(result)] == [
        ("X/48", 1, None), ("X/55", 2, None), ("D/FS", 3, "signature")]
    assert "PAT DOE" not in json.dumps([e.to_json_dict() for e in result.events])


def test_scheduled_date_is_the_promise_and_the_latest_reschedule_the_eta() -> None:
    destination = [{"type": "DESTINATION", "address": {"stateProvince": "CO",
                                                       "countryCode": "US"}}]
    result = run(payload(package(
        [activity("P", "PU", "20260302", "100000", GMT),
         activity("I", "DP", "20260303", "100000", ("20260303", "15:00:00", "-05:00"))],
        deliveryDate=[{"type": "SDD", "date": "20260304"}, {"type": "RDD", "date": "20260306"},
                      {"type": "RDD", "date": "20260305"}],
        deliveryTime={"type": "CMT", "startTime": "", "endTime": "103000"},
        packageAddress=destination)))
    older, newest = by_time(result)
    assert older.promised_by == newest.promised_by == ms("2026-03-04T10:30:00",
                                                         "America/Denver")
    assert older.eta_end is None
    # a commit time without a window: the ETA is the rescheduled day up to the commit time
    assert newest.eta_start == ms("2026-03-06T00:00:00", "America/Denver")
    assert newest.eta_end == ms("2026-03-06T10:30:00", "America/Denver")
    assert not newest.timezone_ambiguous


def test_promise_without_a_timed_commitment_is_end_of_day_in_the_best_known_zone() -> None:
    result = run(payload(package([activity("P", "PU", "20260302", "100000", GMT)],
                                 deliveryDate=[{"type": "SDD", "date": "20260305"}])))
    (event,) = result.events
    # no destination address: the promise day ends in the activity's zone (a guess) ...
    assert event.promised_by == ms("2026-03-05T23:59:59", "America/New_York")
    # ... but the flag speaks of event_time only, which the GMT fields make exact
    assert event.timezone_ambiguous is False


def test_no_personal_data_reaches_events() -> None:
    raw = (ROOT / "samples" / "ups" / "lifecycle_delivered.json").read_bytes()
    assert b"Morgan Tallis" in raw and b"88 Juniper Lane" in raw
    events = run(raw).events
    assert len(events) == 8
    text = json.dumps([e.to_json_dict() for e in events]).lower()
    for secret in ("morgan", "tallis", "juniper", "unit 12", "400 dock", "harbor supply"):
        assert secret not in text


# --- renderer round trip ------------------------------------------------------------------------------------


def _packages() -> list[tuple[SimPackage, list[SimScan]]]:
    ny, chi, den = "America/New_York", "America/Chicago", "America/Denver"
    base = ms("2026-03-02T15:00:00Z")
    hour = 3_600_000

    def at(n: int) -> int:
        return base + n * hour

    def s(status: str, n: int, zone: str, region: str, **kw: Any) -> SimScan:
        return SimScan(status, at(n), zone, region=region, city="Somewhere", **kw)

    return [
        (SimPackage("ups", "1Z5R89390388880001", "003", at(-20), promised_by=at(60)),
         [s("info_received", -20, ny, "GA"), s("picked_up", 0, ny, "GA"),
          s("in_transit", 6, chi, "IL", eta_end=at(76)), s("staged", 30, den, "CO"),
          s("out_for_delivery", 40, den, "CO", eta_end=at(50)),
          s("delivered", 45, den, "CO", attempt_number=1, proof_of_delivery="signature")]),
        (SimPackage("ups", "1Z5R89390388880002", "001", at(-2), promised_by=at(20),
                    shipment_id="1Z5R89390388880002"),
         [s("picked_up", 0, ny, "GA"), s("out_for_delivery", 18, chi, "IL"),
          s("delivery_attempted", 22, chi, "IL", reason="recipient_not_available",
            attempt_number=1),
          s("delivery_attempted", 46, chi, "IL", reason="access_issue", attempt_number=2),
          s("delivered", 70, chi, "IL", attempt_number=3, proof_of_delivery="photo")]),
        (SimPackage("ups", "1Z5R89390388880003", "002", at(-1)),
         [s("picked_up", 0, ny, "GA"), s("exception", 5, ny, "GA", reason="customs"),
          s("in_transit", 9, ny, "GA", raw_code="Q7"),
          s("exception", 12, ny, "GA", reason="weather"),
          s("exception", 13, ny, "GA", reason="lost", eta_end=at(80)),
          s("returned", 30, ny, "GA")]),
        (SimPackage("ups", "1Z5R89390388880004", "003", at(-1)),
         [s("picked_up", 0, ny, "GA"), s("available_for_pickup", 30, den, "CO"),
          s("cancelled", 40, den, "CO")]),
    ]


def _local_date(moment: int | None, zone: str) -> str | None:
    if moment is None:
        return None
    return datetime.fromtimestamp(moment / 1000, ZoneInfo(zone)).date().isoformat()


def _check_round_trip(package: SimPackage, scans: Sequence[SimScan],
                      events: list[CanonicalEvent]) -> None:
    assert len(events) == len(scans)
    destination = {"GA": "America/New_York", "IL": "America/Chicago",
                   "CO": "America/Denver"}[scans[-1].region or ""]
    etas = [sc.eta_end for sc in scans if sc.eta_end is not None]
    for n, (sim, event) in enumerate(zip(scans, events, strict=True)):
        assert event.event_time == sim.event_time
        assert event.event_time_local == datetime.fromtimestamp(
            sim.event_time / 1000, ZoneInfo(sim.zone)).strftime("%Y%m%dT%H%M%S")
        assert event.service_level == package.service_level
        assert event.promised_by == package.promised_by
        assert event.shipment_id == (package.shipment_id or package.tracking_number)
        assert event.package_id == f"ups:{package.tracking_number}"
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
            # UPS carries the estimate as a date (RDD); its time is the commitment's time
            expected = etas[-1] if etas else package.promised_by
            assert _local_date(event.eta_end, destination) == _local_date(expected, destination)
            if not package.promised_by and etas:
                assert event.eta_end == etas[-1]


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
    assert gaps == ["Q7"]


def test_render_several_packages_of_one_shipment() -> None:
    items = _packages()[:2]
    same = [(SimPackage(p.partner_id, p.tracking_number, p.service_level, p.ship_time,
                        p.promised_by, shipment_id="1Z5R89390388880001"), s) for p, s in items]
    body = json.loads(renderer.render(same, sent_at=0))
    (shipment,) = body["trackResponse"]["shipment"]
    assert [p["trackingNumber"] for p in shipment["package"]] == [
        "1Z5R89390388880001", "1Z5R89390388880002"]
    result = run(renderer.render(same, sent_at=0))
    assert len(result.events) == sum(len(s) for _, s in same)
