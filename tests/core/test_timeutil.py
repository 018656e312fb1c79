from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from carrierwatch.core.timeutil import LocalTime, parse_instant, resolve_local, to_ms, zone_for


def ms(dt: datetime) -> int:
    return round(dt.timestamp() * 1000)


def test_offsets_and_utc_are_exact() -> None:
    expected = ms(datetime(2026, 3, 2, 20, 5, tzinfo=UTC))
    assert parse_instant("2026-03-02T14:05:00-06:00") == (expected, True)
    assert parse_instant("2026-03-02T20:05:00Z") == (expected, True)
    assert parse_instant("2026-03-02T20:05:00") == (None, False)
    with pytest.raises(ValueError):
        parse_instant("02/03/2026 14:05")


def test_local_time_resolution_and_flags() -> None:
    chicago = ZoneInfo("America/Chicago")
    value, ambiguous = resolve_local("2026-03-02T14:05:00", "America/Chicago", exact_zone=True)
    assert value == ms(datetime(2026, 3, 2, 14, 5, tzinfo=chicago)) and not ambiguous
    # a guessed zone is flagged
    assert resolve_local("2026-03-02T14:05:00", "America/Chicago", exact_zone=False)[1]
    # no zone: UTC assumed, flagged
    assert resolve_local("2026-03-02T14:05:00", None, exact_zone=False) == (
        ms(datetime(2026, 3, 2, 14, 5, tzinfo=UTC)), True)
    # DST fold (happens twice) and gap (never happens) are flagged
    assert resolve_local("2026-11-01T01:30:00", "America/New_York", exact_zone=True)[1]
    assert resolve_local("2026-03-08T02:30:00", "America/New_York", exact_zone=True)[1]
    assert not resolve_local("2026-03-08T03:30:00", "America/New_York", exact_zone=True)[1]


def test_zone_for_places() -> None:
    assert zone_for("US", "CA") == ("America/Los_Angeles", True)
    assert zone_for("US", "US-NY") == ("America/New_York", True)
    assert zone_for("US", "TN") == ("America/Chicago", False)   # two zones, capital's guessed
    assert zone_for("DE") == ("Europe/Berlin", True)
    assert zone_for("DEU") == ("Europe/Berlin", True)
    assert zone_for("US")[1] is False
    assert zone_for("CA", "AB") == ("America/Edmonton", True)
    assert zone_for("CAN", "CA-ON") == ("America/Toronto", False)  # north-west Ontario differs
    assert zone_for("CA")[1] is False
    assert zone_for(None) == (None, False)
    assert zone_for("ZZ") == (None, False)


def test_compact_local_time_and_offsets() -> None:
    assert LocalTime.from_compact("20260302", "140500") == datetime(2026, 3, 2, 14, 5)
    assert LocalTime.offset("-05:00") == timedelta(hours=-5)
    assert LocalTime.offset("+0530") == timedelta(hours=5, minutes=30)
    assert LocalTime.offset("-5") == timedelta(hours=-5)
    for bad in ("2026032", "2026-03-02"):
        with pytest.raises(ValueError):
            LocalTime.from_compact(bad, "000000")
    with pytest.raises(ValueError):
        LocalTime.offset("+25:00")


@given(st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2099, 12, 31),
                    timezones=st.just(UTC)),
       st.integers(-14 * 60, 14 * 60))
def test_parse_instant_matches_datetime(dt: datetime, offset_minutes: int) -> None:
    local = dt.astimezone(timezone(timedelta(minutes=offset_minutes)))
    value, exact = parse_instant(local.isoformat())
    assert exact
    assert value == to_ms(dt)
    assert value == int(dt.timestamp() * 1000) or abs(value - dt.timestamp() * 1000) < 1


@given(st.integers(0, 4_102_444_800_000))
def test_from_record_converts_datetimes_exactly(value: int) -> None:
    from carrierwatch.core.model import CanonicalEvent

    dt = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=value)
    event = CanonicalEvent.from_record({
        "event_id": "x", "partner_id": "p", "package_id": "p:1", "tracking_number": "1",
        "status": "delivered", "confidence": 1.0, "raw_code": "DL", "event_time": dt,
        "received_time": dt, "location": None})
    assert event.event_time == value == event.received_time


def test_memoized_parsing_matches_the_uncached_functions() -> None:
    """The LRU-cached paths give what the plain functions give, every time, and keep raising."""
    from carrierwatch.core import timeutil

    for text in ("2026-03-02T14:05:00-06:00", "2026-03-02T14:05:00", "2026-11-01T01:30:00"):
        for _ in range(2):  # the second call is a cache hit
            assert parse_instant(text) == timeutil._parse_instant.__wrapped__(text)
            for zone in (None, "America/New_York", "Europe/Berlin"):
                for exact in (True, False):
                    assert resolve_local(text, zone, exact_zone=exact) == \
                        timeutil._resolve_local.__wrapped__(text, zone, exact)
    for _ in range(2):
        with pytest.raises(ValueError):
            parse_instant("not a time")
        with pytest.raises(ValueError):
            LocalTime.from_compact("2026030", "120000")
        with pytest.raises(ValueError):
            LocalTime.offset("+25:00")
    assert LocalTime.from_compact("20260302", None) == datetime(2026, 3, 2)
    assert LocalTime.offset("-0500") == timedelta(hours=-5)


def test_aware_datetimes_are_resolved_by_their_wall_clock_not_cached_by_instant() -> None:
    """Two equal aware datetimes (one instant) name different wall-clock times: no shared cache
    entry may answer for both."""
    in_utc = datetime(2026, 3, 2, 20, 5, tzinfo=UTC)
    in_chicago = in_utc.astimezone(ZoneInfo("America/Chicago"))
    assert in_utc == in_chicago
    first = resolve_local(in_utc, "Europe/Berlin", exact_zone=True)
    second = resolve_local(in_chicago, "Europe/Berlin", exact_zone=True)
    assert first != second
    assert second == resolve_local(in_chicago.replace(tzinfo=None), "Europe/Berlin",
                                   exact_zone=True)
