"""Hand-written tests of the Valley Express CSV transformer, codebook and renderer."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml

from carrierwatch.core.model import CanonicalReason, CanonicalStatus, package_key
from carrierwatch.synthetic.formats import valley_express as renderer
from carrierwatch.synthetic.model import SimPackage, SimScan
from carrierwatch.transformers.base import TransformResult
from carrierwatch.transformers.registry import load_partner

ROOT = Path(__file__).resolve().parents[2]
PARTNER = load_partner(ROOT / "partners" / "valley_express.yaml", ROOT / "codebooks")
BOOK = yaml.safe_load((ROOT / "codebooks" / "valley_express.yaml").read_text())["codes"]
RECEIVED = 1_772_712_000_000
HEADER = "tracking_number,status_code,local_timestamp,time_zone,location,reason"


def local_ms(text: str, zone: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(zone)).timestamp() * 1000)


def run(*rows: str, header: str = HEADER) -> TransformResult:
    return PARTNER.transform(("\n".join((header, *rows)) + "\n").encode(), RECEIVED)


def row(code: str = "DEP", stamp: str = "2026-03-02 14:05", zone: str = "America/Denver",
        place: str = '"Boise, ID 83702"', reason: str = "", tracking: str = "VX100234") -> str:
    return ",".join((tracking, code, stamp, zone, place, reason))


@pytest.mark.parametrize("code", sorted(k for k in BOOK if "/" not in k))
def test_every_status_code_maps_as_the_codebook_says(code: str) -> None:
    (ev,) = run(row(code)).events
    assert (ev.status, ev.reason, ev.confidence, ev.raw_code) == (
        BOOK[code]["status"], BOOK[code].get("reason"), BOOK[code]["confidence"], code)


@pytest.mark.parametrize("key", sorted(k for k in BOOK if k.startswith("reason/")))
def test_every_reason_code_overrides_the_reason(key: str) -> None:
    (ev,) = run(row("ATT", reason=key.split("/", 1)[1])).events
    assert (ev.status, ev.reason) == ("delivery_attempted", BOOK[key]["reason"])


def test_unknown_codes_are_gaps() -> None:
    result = run(row("XFR"), row("ATT", reason="ZZ"))
    unknown, attempted = result.events
    assert (unknown.status, unknown.confidence, unknown.raw_code) == ("unknown", 0.0, "XFR")
    assert attempted.reason == "unknown"
    assert result.gaps == ["XFR", "reason/ZZ"]


def test_bad_rows_are_dead_letters_naming_row_and_column_and_other_rows_still_count() -> None:
    result = run(row(), row(stamp="02/03/2026 17:00"), row(zone="Mountain Time"),
                 "VX1,PUP,2026-03-02 09:20,America/Denver", row(code=""), row(tracking=""),
                 row(stamp="2026-03-02"), row("DLV"))
    assert [e.raw_code for e in result.events] == ["DEP", "DLV"]
    assert [d.path for d in result.dead_letters] == [
        "row[2].local_timestamp", "row[3].time_zone", "row[4]", "row[5].status_code",
        "row[6].tracking_number", "row[7].local_timestamp"]


def test_bad_promise_is_a_dead_letter_for_its_row() -> None:
    header = HEADER + ",service_level,promised_by"
    result = run(row() + ",STD,next tuesday", row() + ",STD,2026-03-04T20:00:00-07:00",
                 header=header)
    assert [d.path for d in result.dead_letters] == ["row[1].promised_by"]
    (ev,) = result.events
    assert ev.promised_by == local_ms("2026-03-04T20:00:00", "America/Denver")
    assert ev.service_level == "std"


@pytest.mark.parametrize("raw", [
    b"tracking_number,status_code,local_timestamp,time_zone,location\nVX1,DLV,2026-03-02 14:05,,x\n",
    b"Tracking #,Status,Scan Time,Zone,Where,Why\nVX1,DLV,2026-03-02 14:05,,,\n",
    HEADER.encode() + b",reason\nVX1,DLV,2026-03-02 14:05,,,,\n",
    HEADER.encode() + b"\nVX1,DLV,2026-03-02 14:05,,\"Boise, ID \xe9\",\n",
    b"",
    HEADER.encode() + b"\n",
])
def test_whole_file_problems_are_dead_letters_at_the_root(raw: bytes) -> None:
    result = PARTNER.transform(raw, RECEIVED)
    assert result.events == [] and [d.path for d in result.dead_letters] == ["$"]
    assert result.dead_letters[0].raw == raw


def test_time_zone_column_then_state_then_default() -> None:
    given, utah, idaho, nowhere, offset = run(
        row(stamp="2026-03-02 14:05", zone="America/Denver"),
        row(stamp="2026-03-02 14:05", zone="", place='"Ogden, UT 84401"'),
        row(stamp="2026-03-02 14:05", zone="", place='"Boise, ID 83702"'),
        row(stamp="2026-03-02 14:05", zone="", place="Terminal 4"),
        row(stamp="2026-03-02T14:05:00-05:00", zone="")).events
    assert given.event_time == utah.event_time == local_ms("2026-03-02T14:05", "America/Denver")
    assert not given.timezone_ambiguous and not utah.timezone_ambiguous
    assert idaho.timezone_ambiguous and nowhere.timezone_ambiguous  # Idaho spans two zones
    assert idaho.event_time == local_ms("2026-03-02T14:05", "America/Boise")
    assert nowhere.location is None
    assert offset.event_time == local_ms("2026-03-02T14:05", "America/New_York")
    assert not offset.timezone_ambiguous
    assert given.event_time_local == "2026-03-02 14:05"


def test_fold_and_gap_are_flagged() -> None:
    fold, gap = run(row(stamp="2026-11-01 01:30"), row(stamp="2026-03-08 02:30")).events
    assert fold.timezone_ambiguous and gap.timezone_ambiguous
    assert fold.event_time == local_ms("2026-11-01T01:30", "America/Denver")


def test_identity_and_duplicates_across_drops() -> None:
    first = run(row("DLV", tracking="VX100801")).events[0]
    again = run(row("DLV", tracking="VX100801", place='"Meridian, ID 83642"')).events[0]
    assert first.package_id == package_key("valley_express", "VX100801")
    assert first.event_id == again.event_id


def test_no_street_address_leaks_and_input_is_not_mutated() -> None:
    raw = (HEADER + '\nVX1,DLV,2026-03-03 13:15,America/Boise,"1421 W Example Dr, Meridian ID",\n'
           ).encode()
    before = bytes(raw)
    result = PARTNER.transform(raw, RECEIVED)
    (ev,) = result.events
    assert ev.location is None
    assert "example dr" not in str(ev.to_json_dict()).lower()
    assert raw == before


PLACES = [("America/Boise", "ID", "Boise", "83702"), ("America/Denver", "UT", "Provo", "84601"),
          ("America/Los_Angeles", "NV", "Reno", "89502"), ("America/Denver", "WY", "Casper", "82601")]
REASONS = [r.value for r in CanonicalReason if r is not CanonicalReason.UNKNOWN]
PLAIN = [s.value for s in CanonicalStatus
         if s.value not in {"unknown", "delivery_attempted", "exception"}]


def simulated(index: int) -> tuple[SimPackage, list[SimScan]]:
    start = 1_772_000_000_000 + index * 86_400_000
    statuses: list[tuple[str, str | None]] = [(s, None) for s in PLAIN]
    statuses += [("delivery_attempted", r) for r in REASONS[index::2]]
    statuses += [("exception", r) for r in REASONS[(index + 1)::2]]
    scans = [SimScan(status, start + n * 3_700_123, PLACES[(index + n) % 4][0], "US",
                     *PLACES[(index + n) % 4][1:], reason=reason)
             for n, (status, reason) in enumerate(statuses)]
    scans.append(SimScan("unknown", start + 99 * 3_600_000, "America/Boise", "US", "ID",
                         "Boise", "83702", raw_code="XFR"))
    return SimPackage("valley_express", f"VXSYN{index:05d}", "std", start,
                      promised_by=start + 3 * 86_400_000), scans


def test_render_transform_round_trip_over_several_packages() -> None:
    items = [simulated(i) for i in range(4)]
    result = PARTNER.transform(renderer.render(items, 0), RECEIVED)
    assert result.dead_letters == []
    got = sorted((e.tracking_number, e.event_time, e.status, e.reason, e.promised_by,
                  e.timezone_ambiguous) for e in result.events)
    want = sorted((p.tracking_number, s.event_time, s.status, s.reason, p.promised_by, False)
                  for p, scans in items for s in scans)
    assert got == want
    assert result.gaps == ["XFR"] * 4
    assert [e.raw_code for e in result.events if e.status == "unknown"] == ["XFR"] * 4
