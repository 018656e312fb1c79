"""Tests of the generic JSON-mapping transformer, through the partner onboarded with it alone
(metro_courier), plus mapping validation and a second, YAML-only partner built in the test."""

from __future__ import annotations

import copy
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from carrierwatch.core.codebook import Codebook
from carrierwatch.core.errors import PartnerLoadError
from carrierwatch.core.model import CanonicalReason, CanonicalStatus, package_key
from carrierwatch.core.partner import PartnerSpec
from carrierwatch.synthetic.formats import metro_courier as renderer
from carrierwatch.synthetic.model import SimPackage, SimScan
from carrierwatch.transformers import json_mapping
from carrierwatch.transformers.base import TransformContext, TransformResult, run_transform
from carrierwatch.transformers.registry import load_partner

ROOT = Path(__file__).resolve().parents[2]
PARTNER = load_partner(ROOT / "partners" / "metro_courier.yaml", ROOT / "codebooks")
BOOK = yaml.safe_load((ROOT / "codebooks" / "metro_courier.yaml").read_text())["codes"]
RECEIVED = 1_772_712_000_000


def local_ms(text: str, zone: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(zone)).timestamp() * 1000)


def run(payload: Any) -> TransformResult:
    raw = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    return PARTNER.transform(raw, RECEIVED)


def update(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"parcel": "MC-00012345", "order_ref": "SO-1", "service": "same_day",
                            "state": "ON_ROUTE", "at": "2026-03-02 14:05:00",
                            "tz": "America/Chicago",
                            "hub": {"city": "Austin", "state": "TX", "zip": "78701"}}
    base.update(overrides)
    return base


def payload(*updates: Any) -> dict[str, Any]:
    return {"webhook_id": "wh_1", "sent_at": "2026-03-02T20:06:11Z", "updates": list(updates)}


def test_the_partner_needs_no_python_of_its_own() -> None:
    assert PARTNER.spec.transformer == "json_mapping"
    assert not (ROOT / "src" / "carrierwatch" / "transformers" / "metro_courier.py").exists()
    assert "metro" not in (ROOT / "src/carrierwatch/transformers/json_mapping.py").read_text()


@pytest.mark.parametrize("state", sorted(k for k in BOOK if "/" not in k))
def test_every_state_maps_as_the_codebook_says(state: str) -> None:
    (ev,) = run(payload(update(state=state))).events
    assert (ev.status, ev.reason, ev.confidence, ev.raw_code) == (
        BOOK[state]["status"], BOOK[state].get("reason"), BOOK[state]["confidence"], state)


@pytest.mark.parametrize("why", sorted(k for k in BOOK if k.startswith("why/")))
def test_every_reason_code_overrides_the_reason(why: str) -> None:
    (ev,) = run(payload(update(state="ATTEMPTED", why=why.split("/", 1)[1]))).events
    assert (ev.status, ev.reason) == ("delivery_attempted", BOOK[why]["reason"])


def test_unknown_state_and_unknown_reason_are_gaps() -> None:
    result = run(payload(update(state="HANDED_TO_PARTNER"),
                         update(state="ATTEMPTED", why="DOG_ON_PREMISES")))
    unknown, attempted = result.events
    assert (unknown.status, unknown.confidence, unknown.raw_code) == ("unknown", 0.0,
                                                                     "HANDED_TO_PARTNER")
    assert (attempted.status, attempted.reason) == ("delivery_attempted", "unknown")
    assert result.gaps == ["HANDED_TO_PARTNER", "why/DOG_ON_PREMISES"]


def test_error_response_is_a_dead_letter_naming_the_error_code() -> None:
    result = run({"ok": False, "error": {"code": "E_PARCEL_UNKNOWN", "message": "not found"}})
    (dead,) = result.dead_letters
    assert (dead.path, dead.error) == ("$", "Metro Courier error E_PARCEL_UNKNOWN: not found")
    assert result.events == []


def test_bad_fields_are_dead_letters_with_their_paths() -> None:
    result = run(payload(update(), update(at="03/03/2026 1:15 PM"), update(tz="America/Austin"),
                         update(parcel=None), update(attempt="second"), update(state=None),
                         update(hub={"city": ["Austin"]}), 42))
    assert len(result.events) == 1
    assert [d.path for d in result.dead_letters] == [
        "updates[1].at", "updates[2].tz", "updates[3].parcel", "updates[4].attempt",
        "updates[5].state", "updates[6].hub.city", "updates[7]"]
    assert [d.path for d in run(b"not json").dead_letters] == ["$"]
    assert [d.path for d in run({"updates": "x"}).dead_letters] == ["updates"]


def test_times_zones_and_flags() -> None:
    exact, fold, gap, state_zone, guess = run(payload(
        update(at="2026-03-02 14:05:00", tz="America/Chicago"),
        update(at="2026-11-01 01:30:00", tz="America/Chicago"),
        update(at="2026-03-08 02:30:00", tz="America/Denver"),
        update(at="2026-03-03 09:00:00", tz=None, hub={"city": "Oklahoma City", "state": "OK"}),
        update(at="2026-03-03 09:00:00", tz=None, hub={"city": "El Paso", "state": "TX"}),
    )).events
    assert exact.event_time == local_ms("2026-03-02T14:05:00", "America/Chicago")
    assert exact.event_time_local == "2026-03-02 14:05:00" and not exact.timezone_ambiguous
    assert fold.timezone_ambiguous and gap.timezone_ambiguous
    assert state_zone.event_time == local_ms("2026-03-03T09:00:00", "America/Chicago")
    assert not state_zone.timezone_ambiguous  # Oklahoma has one zone
    assert guess.timezone_ambiguous  # Texas has two: the partner's default zone is a guess


def test_identity_promise_eta_attempt_proof() -> None:
    (ev,) = run(payload(update(state="DELIVERED", attempt=2, proof="left_safe",
                               eta="2026-03-02 15:45:00", promise="2026-03-02 20:00:00"))).events
    assert ev.package_id == package_key("metro_courier", "MC-00012345") and ev.shipment_id == "SO-1"
    assert ev.promised_by == local_ms("2026-03-02T20:00:00", "America/Chicago")
    assert ev.eta_end == local_ms("2026-03-02T15:45:00", "America/Chicago")
    assert (ev.attempt_number, ev.proof_of_delivery, ev.service_level) == (2, "none", "same_day")


def test_duplicates_share_the_event_id() -> None:
    a, b = run(payload(update(state="DELIVERED"),
                       update(state="DELIVERED", photo_url="https://example.invalid/p.jpg"))).events
    assert a.event_id == b.event_id


def test_no_personal_data_in_events() -> None:
    result = run((ROOT / "samples" / "metro_courier" / "lifecycle_delivered.json").read_bytes())
    dumped = orjson.dumps([e.to_json_dict() for e in result.events]).decode().lower()
    assert result.events
    for secret in ("fennimore", "larkspur", "555-0142", "teodor"):
        assert secret not in dumped


def test_input_bytes_are_not_mutated() -> None:
    body = payload(update(), update(at="bad"))
    raw = orjson.dumps(body)
    before, snapshot = bytes(raw), copy.deepcopy(body)
    result = run(raw)
    assert raw == before and body == snapshot and result.dead_letters[0].raw == before


# --- mapping validation and a second partner onboarded with YAML only ------------------------

GOOD = {"events": "items", "tracking_number": "id", "code": ["s"], "time": {"path": "t"}}


@pytest.mark.parametrize(("mapping", "message"), [
    (None, "needs a 'mapping:' block"),
    ({**GOOD, "events": "items["}, "mapping.events"),
    ({k: v for k, v in GOOD.items() if k != "tracking_number"}, "mapping.tracking_number"),
    ({**GOOD, "code": []}, "mapping.code"),
    ({**GOOD, "time": {"path": "t", "zone": "Mars/Olympus"}}, "mapping.time.zone"),
    ({**GOOD, "time": {"path": "t", "format": "dd/mm"}}, "mapping.time.format"),
    ({**GOOD, "proof": {"path": "p", "values": {"x": "selfie"}}}, "mapping.proof.values.x"),
    ({**GOOD, "colour": "red"}, "mapping.colour"),
])
def test_check_spec_rejects_bad_mappings_with_a_clear_message(mapping: dict[str, Any] | None,
                                                              message: str) -> None:
    spec = PartnerSpec(id="second", display_name="Second", transformer="json_mapping",
                       mapping=mapping)
    with pytest.raises(PartnerLoadError, match=message.replace("[", r"\[")):
        json_mapping.check_spec(spec)


def test_registry_reports_a_bad_mapping_as_a_load_failure(tmp_path: Path) -> None:
    from carrierwatch.transformers.registry import load_registry

    (tmp_path / "partners").mkdir()
    (tmp_path / "codebooks").mkdir()
    (tmp_path / "partners" / "second.yaml").write_text(yaml.safe_dump({
        "id": "second", "display_name": "Second", "transformer": "json_mapping",
        "mapping": {**GOOD, "events": "items["}}))
    (tmp_path / "codebooks" / "second.yaml").write_text(
        "version: 1\npartner: second\ncodes:\n  OK: {status: delivered, confidence: 1.0}\n")
    registry = load_registry(tmp_path)
    assert "second" in registry.failures and "mapping.events" in registry.failures["second"]


def test_a_second_courier_needs_only_yaml() -> None:
    spec = PartnerSpec.model_validate(yaml.safe_load("""
id: bike_fleet
display_name: Bike Fleet
kind: courier
transformer: json_mapping
default_timezone: Europe/Berlin
mapping:
  events: "@"
  tracking_number: ref
  discriminator: "$.batch"
  code: [ev.kind, ev.group]
  time: {path: ev.ts, format: epoch_ms}
  location: {latitude: "pos[0]", longitude: "pos[1]", country: cc}
  promised_by: {path: due, format: iso}
  partner_received_time: {path: "$[0].got", format: iso}
"""))
    book = Codebook.from_yaml("version: 1\npartner: bike_fleet\ncodes:\n"
                              "  handover: {status: delivered, confidence: 1.0}\n"
                              "  route: {status: out_for_delivery, confidence: 0.8}\n")
    events = [{"ref": "BF-1", "ev": {"kind": "handover", "ts": 1772460300000},
               "pos": [52.520008, 13.404954], "cc": "DE", "due": "2026-03-02T18:00:00+01:00",
               "got": "2026-03-02T14:06:00Z"},
              {"ref": "BF-1", "ev": {"kind": "unknown-kind", "group": "route",
                                     "ts": 1772459000000}}]
    ctx = TransformContext(spec, book, RECEIVED)
    result = run_transform(json_mapping.transform, orjson.dumps(events), ctx)
    handover, route = result.events
    assert handover.status == "delivered" and handover.event_time == 1772460300000
    assert handover.location is not None and (handover.location.latitude,
                                              handover.location.longitude) == (52.52, 13.405)
    assert handover.promised_by == local_ms("2026-03-02T18:00:00", "Europe/Berlin")
    assert handover.partner_received_time == local_ms("2026-03-02T14:06:00", "UTC")
    assert route.status == "out_for_delivery" and route.raw_code == "unknown-kind"
    assert handover.package_id == "bike_fleet:BF-1"


# --- render → transform round trip -----------------------------------------------------------

PLACES = [("America/Chicago", "TX", "Austin", "78701"), ("America/Chicago", "OK", "Tulsa", "74103"),
          ("America/Denver", "CO", "Denver", "80202"), ("America/Los_Angeles", "CA", "Oakland", "94607")]
REASONS = [r.value for r in CanonicalReason if r is not CanonicalReason.UNKNOWN]
PLAIN = [s.value for s in CanonicalStatus
         if s.value not in {"unknown", "delivery_attempted", "exception"}]


def simulated(index: int) -> tuple[SimPackage, list[SimScan]]:
    start = 1_772_000_000_000 + index * 86_400_000
    statuses: list[tuple[str, str | None]] = [(s, None) for s in PLAIN]
    statuses += [("delivery_attempted", r) for r in REASONS[index::2]]
    statuses += [("exception", r) for r in REASONS[(index + 1)::2]]
    scans = []
    for n, (status, reason) in enumerate(statuses):
        zone, region, city, postal = PLACES[(index + n) % 4]
        scans.append(SimScan(
            status, start + n * 3_700_000, zone, "US", region, city, postal, reason=reason,
            attempt_number=n if status in {"delivery_attempted", "delivered"} else None,
            proof_of_delivery="photo" if status == "delivered" else None,
            eta_end=start + 2 * 86_400_000))
    scans.append(SimScan("unknown", start + 99 * 3_600_000, "America/Chicago", "US", "TX",
                         "Austin", "78701", raw_code="SCANNED_AT_LOCKER_BANK"))
    package = SimPackage("metro_courier", f"MC-CWSYN{index:05d}", "same_day", start,
                         promised_by=start + 86_400_000, shipment_id=f"SO-{index}")
    return package, scans


def test_render_transform_round_trip_over_several_packages() -> None:
    items = [simulated(i) for i in range(4)]
    result = run(renderer.render(items, 1_772_700_000_000))
    assert result.dead_letters == []
    got = sorted((e.tracking_number, e.event_time, e.status, e.reason, e.promised_by,
                  e.attempt_number, e.proof_of_delivery, e.shipment_id) for e in result.events)
    want = sorted((p.tracking_number, s.event_time, s.status, s.reason, p.promised_by,
                   s.attempt_number, s.proof_of_delivery, p.shipment_id)
                  for p, scans in items for s in scans)
    assert got == want
    assert result.gaps == ["SCANNED_AT_LOCKER_BANK"] * 4
    assert renderer.render(items, 5) == renderer.render(items, 5)


@given(st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2999, 12, 31)),
       st.sampled_from(["%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S"]))
def test_fast_time_path_equals_strptime(moment: datetime, fmt: str) -> None:
    from carrierwatch.transformers.json_mapping import _strptime

    text = moment.replace(microsecond=0).strftime(fmt)
    assert _strptime(text, fmt) == datetime.strptime(text, fmt)


@pytest.mark.parametrize("text", ["2026-03-02 14:05", "2026-3-02 14:05:00", "2026-03-02 1405:00",
                                  "２０２６-03-02 14:05:00", "2026-03-02 14:05:0x",
                                  "2026-02-30 10:00:00", "2026-03-02 24:00:00"])
def test_fast_time_path_agrees_with_strptime_on_odd_input(text: str) -> None:
    from carrierwatch.transformers.json_mapping import _strptime

    def outcome(parse: Any) -> object:
        try:
            return parse(text, "%Y-%m-%d %H:%M:%S")
        except ValueError:
            return ValueError

    assert outcome(_strptime) == outcome(datetime.strptime)
