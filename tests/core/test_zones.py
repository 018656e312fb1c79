"""Places → time zones outside North America, checked against the clocks people actually keep.

The oracle is independent of the data the resolver reads: a table of the UTC offsets (hours, in
mid-January and mid-July 2026) that each region's main cities keep, written from the regions'
official times, and whether the whole region keeps one clock.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from carrierwatch.core.timeutil import (
    country_names,
    country_zones,
    local_zone,
    resolve_local,
    subdivision_zone,
    tz_table,
    zone_for,
)

JANUARY = datetime(2026, 1, 15, 12, tzinfo=UTC)
JULY = datetime(2026, 7, 15, 12, tzinfo=UTC)

# region → (UTC offset in January, in July, the whole region keeps one clock)
OFFSETS: dict[str, tuple[float, float, bool]] = {
    "BR-SP": (-3, -3, True), "BR-RJ": (-3, -3, True), "BR-DF": (-3, -3, True),
    "BR-AM": (-4, -4, False),   # western Amazonas (Eirunepé) keeps UTC-5
    "BR-AC": (-5, -5, True), "BR-MT": (-4, -4, True), "BR-RO": (-4, -4, True),
    "BR-PE": (-3, -3, False),   # Fernando de Noronha belongs to Pernambuco and keeps UTC-2
    "BR-BA": (-3, -3, True), "BR-RS": (-3, -3, True),
    "MX-BCN": (-8, -7, True), "MX-SON": (-7, -7, True), "MX-ROO": (-5, -5, True),
    "MX-CMX": (-6, -6, True), "MX-CHH": (-6, -6, False),   # Ciudad Juárez keeps US Mountain
    "AU-WA": (8, 8, True), "AU-NSW": (11, 10, False),   # Broken Hill keeps Adelaide's clock
    "AU-QLD": (10, 10, True), "AU-SA": (10.5, 9.5, True), "AU-NT": (9.5, 9.5, True),
    "AU-VIC": (11, 10, True), "AU-TAS": (11, 10, True), "AU-ACT": (11, 10, True),
    "RU-KGD": (2, 2, True), "RU-MOW": (3, 3, True), "RU-SAM": (4, 4, True),
    "RU-NVS": (7, 7, True), "RU-KAM": (12, 12, True), "RU-SA": (9, 9, False),  # Sakha: 3 zones
    "ID-PA": (9, 9, True), "ID-JK": (7, 7, True), "ID-BA": (8, 8, True),
    "CA-BC": (-8, -7, False), "CA-AB": (-7, -6, True), "CA-SK": (-6, -6, True),
    "CA-ON": (-5, -4, False), "CA-NL": (-3.5, -2.5, False), "CA-NS": (-4, -3, True),
    "US-AZ": (-7, -7, True), "US-HI": (-10, -10, True), "US-NY": (-5, -4, True),
    "US-TX": (-6, -5, False),   # El Paso keeps Mountain time
    "CL-RM": (-3, -4, True), "ES-CN": (0, 1, True), "ES-MD": (1, 2, True),
    "PT-20": (-1, 0, True), "PT-11": (0, 1, True), "NZ-AUK": (13, 12, True),
    "AR-C": (-3, -3, True), "KZ-75": (5, 5, True),
    # one clock in zone.tab, but overseas regions keep their own
    "FR-974": (4, 4, True), "FR-971": (-4, -4, True), "FR-973": (-3, -3, True),
    "FR-75C": (1, 2, True), "DE-BY": (1, 2, True),
}


def _offset_hours(zone: str, instant: datetime) -> float:
    offset = instant.astimezone(__import__("zoneinfo").ZoneInfo(zone)).utcoffset()
    assert offset is not None
    return offset.total_seconds() / 3600


@pytest.mark.parametrize("region", sorted(OFFSETS))
def test_region_resolves_to_the_clock_its_people_keep(region: str) -> None:
    january, july, whole = OFFSETS[region]
    country = region.split("-")[0]
    zone, exact = zone_for(country, region)
    assert zone is not None, region
    assert (_offset_hours(zone, JANUARY), _offset_hours(zone, JULY)) == (january, july), zone
    assert exact is whole
    # the bare code, the ISO 3166-2 code without a country and the alpha-3 country agree
    assert zone_for(country, region.split("-", 1)[1]) == (zone, exact)
    assert zone_for(None, region) == (zone, exact)


@pytest.mark.parametrize(("country", "region", "zone"), [
    ("BR", "SP", "America/Sao_Paulo"), ("BR", "AM", "America/Manaus"),
    ("BR", "AC", "America/Rio_Branco"), ("BR", "PE", "America/Recife"),
    ("MX", "BCN", "America/Tijuana"), ("AU", "WA", "Australia/Perth"),
    ("AU", "NSW", "Australia/Sydney"), ("RU", "KGD", "Europe/Kaliningrad"),
    ("RU", "MOW", "Europe/Moscow"), ("ID", "PA", "Asia/Jayapura"),
    ("US", "AZ", "America/Phoenix"), ("CA", "BC", "America/Vancouver"),
])
def test_named_regions(country: str, region: str, zone: str) -> None:
    assert zone_for(country, region)[0] == zone


def test_regions_by_name_and_alpha3_countries() -> None:
    assert zone_for("BR", "São Paulo") == ("America/Sao_Paulo", True)
    assert zone_for("BRA", "sao  PAULO") == ("America/Sao_Paulo", True)
    assert zone_for("AUS", "Western Australia") == ("Australia/Perth", True)
    assert zone_for("MEX", "Baja California") == ("America/Tijuana", True)


def test_historical_times_use_the_regions_own_rules() -> None:
    """São Paulo kept daylight saving until 2019, Bahia did not: the zone is São Paulo's own, not
    just one with today's offset (2017-11-01 10:00 in São Paulo was 12:00 UTC)."""
    zone, exact = zone_for("BR", "SP")
    ms, ambiguous = resolve_local("2017-11-01T10:00:00", zone, exact_zone=exact)
    assert ms == int(datetime(2017, 11, 1, 12, tzinfo=UTC).timestamp() * 1000)
    assert not ambiguous
    zone, exact = zone_for("BR", "BA")
    assert resolve_local("2017-11-01T10:00:00", zone, exact_zone=exact)[0] == int(
        datetime(2017, 11, 1, 13, tzinfo=UTC).timestamp() * 1000)


def test_countries_without_a_region_get_their_main_clock_flagged() -> None:
    # Brazil's first zone in zone.tab is Fernando de Noronha's (UTC-2): never the guess
    assert zone_for("BR") == ("America/Sao_Paulo", False)
    assert zone_for("AU") == ("Australia/Sydney", False)
    assert zone_for("RU") == ("Europe/Moscow", False)
    assert zone_for("MX") == ("America/Mexico_City", False)
    assert zone_for("ID") == ("Asia/Jakarta", False)
    assert zone_for("CA") == ("America/Toronto", False)
    # an unknown region falls back to the country's guess, flagged
    assert zone_for("BR", "XX") == ("America/Sao_Paulo", False)
    # one clock in the whole country: certain, whatever the region says
    assert zone_for("DE", "BY") == ("Europe/Berlin", True)
    assert zone_for("JP", "nowhere") == ("Asia/Tokyo", True)
    assert zone_for("ZZ", "SP") == (None, False)


def test_partner_default_is_a_flagged_fallback_only() -> None:
    # the place decides when it is known, certain or not
    assert local_zone("BR", "SP", "America/Manaus") == ("America/Sao_Paulo", True)
    assert local_zone("BR", "AM", "America/Sao_Paulo") == ("America/Manaus", False)
    # a country-only place: the partner's zone within that country beats the country's guess
    assert local_zone("BR", None, "America/Manaus") == ("America/Manaus", False)
    assert local_zone("BR", None, "Europe/Paris") == ("America/Sao_Paulo", False)
    # nothing known about the place: the partner's zone, flagged
    assert local_zone(None, None, "America/Manaus") == ("America/Manaus", False)
    assert local_zone(None, None, None) == (None, False)


def test_tz_tables_come_from_a_package() -> None:
    text = tz_table("zone1970.tab")
    assert text is not None and "America/Sao_Paulo" in text
    assert tz_table("no-such.tab") is None
    assert country_names()["BR"] == "Brazil" and len(country_names()) > 240
    assert country_zones("BRA")[0] == "America/Noronha"   # zone.tab's order, not a guess
    assert subdivision_zone("BR", "nowhere") is None


def test_hostile_places_are_no_places_and_stay_out_of_the_caches() -> None:
    from carrierwatch.core import timeutil

    huge = "A" * 100_000
    assert zone_for("BR", huge) == ("America/Sao_Paulo", False)
    assert zone_for(huge, "SP") == (None, False)
    assert zone_for("BR", "\x00SP") == ("America/Sao_Paulo", False)
    assert local_zone(huge, huge, "America/Manaus") == ("America/Manaus", False)
    assert subdivision_zone("BR", huge) is None
    timeutil._zone_for.cache_clear()
    for index in range(50):   # fifty different 100,000-character regions: none is a cache key
        assert zone_for("BR", f"{index}{huge}") == ("America/Sao_Paulo", False)
    assert timeutil._zone_for.cache_info().currsize == 1
    assert timeutil.country_code("Brazil") is None and timeutil.country_code("b1") is None


def test_tz_tables_fall_back_to_the_system_without_the_tzdata_package() -> None:
    """Without the tzdata package the tables come from the system's zoneinfo (TZPATH), and
    without either a place simply has no zone: no crash."""
    import subprocess
    import sys
    from pathlib import Path
    from zoneinfo import TZPATH

    code = ("import sys; sys.modules['tzdata'] = None\n"
            "from carrierwatch.core.timeutil import tz_table, zone_for\n"
            "print(repr(tz_table('zone.tab')[:40] if tz_table('zone.tab') else None))\n"
            "print(zone_for('BR', 'SP'))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=True)
    system = next((Path(base) / "zone.tab" for base in TZPATH
                   if (Path(base) / "zone.tab").is_file()), None)
    first, second = done.stdout.splitlines()
    assert first == repr(system.read_text()[:40] if system else None)
    if system is not None:  # (without any tz data, only "it ran" can be asserted)
        assert second == "('America/Sao_Paulo', True)"


def test_timeutil_examples_run() -> None:
    import doctest

    from carrierwatch.core import timeutil

    failures, attempted = doctest.testmod(timeutil)
    assert failures == 0 and attempted >= 15
