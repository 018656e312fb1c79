"""Time parsing for partner feeds: store UTC, keep the original, flag what is not certain.

Partners send times in three ways: UTC, local time with an offset, and local time without one.
The first two are exact. For the third, the zone comes from the event's location: its
subdivision (a Brazilian, Mexican, Australian, Russian, Indonesian or Canadian state, province or
region, a US state, an overseas region, …) located in the IANA zone boundaries, else its country
(certain when the whole country keeps one clock); a partner's default zone is only a fallback.
Where the zone is a guess (a subdivision or country that spans several clocks, a place that is
not known) the event is flagged ``timezone_ambiguous``. Local times that fall in a
daylight-saving fold (the hour that happens twice) or gap (the hour that never happens) are
flagged too.

Data: the tz database's ``zone.tab`` and ``iso3166.tab`` (from the ``tzdata`` package, else the
system's zoneinfo), subdivisions and their places from the countries-states-cities database
(``countrystatecity-countries``), zone boundaries from ``timezonefinder``, US states' zone lists
from ``us``. No subdivision → zone table is written here.

Examples
--------
>>> parse_instant("2026-03-02T14:05:00-06:00")
(1772481900000, True)
>>> parse_instant("2026-03-02T20:05:00Z")
(1772481900000, True)
>>> parse_instant("2026-03-02T20:05:00")
(None, False)
>>> zone_for("US", "TN")
('America/Chicago', False)
>>> zone_for("US", "CA")
('America/Los_Angeles', True)
>>> resolve_local("2026-11-01T01:30:00", "America/New_York", exact_zone=True)
(1793511000000, True)
>>> resolve_local("2026-07-01T09:00:00", "America/Los_Angeles", exact_zone=True)
(1782921600000, False)
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from importlib.resources import files
from pathlib import Path
from typing import Any
from zoneinfo import TZPATH, ZoneInfo, ZoneInfoNotFoundError

__all__ = [
    "CACHE_KEY_LIMIT",
    "LocalTime",
    "country_code",
    "country_names",
    "country_zones",
    "local_zone",
    "parse_instant",
    "parse_naive",
    "resolve_local",
    "subdivision_zone",
    "to_ms",
    "tz_table",
    "zone_for",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


_MS = timedelta(milliseconds=1)

# Partner feeds repeat their times: webhooks resend a package's whole history, and every scan of
# a hub shares its place. The pure string → time functions below are therefore memoized (bounded
# LRU caches of immutable results; an input that raises is never cached and raises again).
_CACHE_SIZE = 16_384
CACHE_KEY_LIMIT = 64
"""The longest string a parse cache keeps as (part of) a key; longer inputs are computed uncached.

The caches are capped by entry count, so without it they would be unbounded in bytes: 300 UPS
payloads with ten unique 1 MB city strings each grew a process from 39 MB to 4.6 GB. Times, zone
names, country and region codes and city names all fit in 64 characters; with this bound the
16,384-entry caches hold at most a few MB whatever partners send."""


def to_ms(dt: datetime) -> int:
    """Epoch milliseconds of an aware datetime (exact integer arithmetic, floored)."""
    return (dt - _EPOCH) // _MS


def parse_instant(text: str) -> tuple[int | None, bool]:
    """Parse an ISO 8601 string. ``(ms, True)`` when it carries an offset or ``Z``.

    ``(None, False)`` when it is a valid local time without an offset (resolve it with
    :func:`resolve_local`). Raises ``ValueError`` when it is not a time at all.
    """
    if text.__class__ is str and len(text) <= CACHE_KEY_LIMIT:
        return _parse_instant(text)
    return _parse_instant.__wrapped__(text)


@lru_cache(maxsize=_CACHE_SIZE)
def _parse_instant(text: str) -> tuple[int | None, bool]:
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        return None, False
    return (dt - _EPOCH) // _MS, True


def parse_naive(text: str) -> datetime:
    """Parse an ISO 8601 local time (an offset, if any, is dropped). Raises ``ValueError``."""
    return datetime.fromisoformat(text).replace(tzinfo=None)


@lru_cache(maxsize=512)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def resolve_local(local: str | datetime, zone: str | None, *, exact_zone: bool
                  ) -> tuple[int, bool]:
    """UTC milliseconds of a local wall-clock time in ``zone``, and whether it is ambiguous.

    Ambiguous when the zone is a guess (``exact_zone`` false or ``zone`` None, in which case UTC is
    assumed), or when the wall-clock time is in a DST fold or gap of the zone.
    """
    kind = local.__class__
    if ((kind is str and len(local) <= CACHE_KEY_LIMIT)  # type: ignore[arg-type]
            or (kind is datetime and local.tzinfo is None)) and (  # type: ignore[union-attr]
            zone is None or (zone.__class__ is str and len(zone) <= CACHE_KEY_LIMIT)):
        return _resolve_local(local, zone, exact_zone)
    return _resolve_local.__wrapped__(local, zone, exact_zone)


@lru_cache(maxsize=_CACHE_SIZE)
def _resolve_local(local: str | datetime, zone: str | None, exact_zone: bool) -> tuple[int, bool]:
    # Cached only for strings and naive datetimes: aware datetimes that are equal (and so hash
    # alike) can name different wall-clock times.
    naive = parse_naive(local) if isinstance(local, str) else local.replace(tzinfo=None)
    if zone is None:
        return (naive.replace(tzinfo=UTC) - _EPOCH) // _MS, True
    tz = _zone(zone) if len(zone) <= CACHE_KEY_LIMIT else ZoneInfo(zone)
    first = naive.replace(tzinfo=tz, fold=0)
    second = naive.replace(tzinfo=tz, fold=1)
    folded = first.utcoffset() != second.utcoffset()
    return (first - _EPOCH) // _MS, folded or not exact_zone


def zone_for(country: str | None, region: str | None = None) -> tuple[str | None, bool]:
    """The IANA zone of a place and whether it is certain.

    ``region`` is a subdivision within ``country``: its code (``SP``), its ISO 3166-2 code
    (``BR-SP``) or its name (``São Paulo``); ``country`` is an ISO alpha-2 or alpha-3 code and may
    be left out when ``region`` is an ISO 3166-2 code. A country whose zones all keep one clock
    gives that zone, certain. Otherwise a known subdivision gives its own zone (see
    :func:`subdivision_zone`), certain when the whole subdivision keeps one clock, and an unknown
    or missing one gives the country's main zone, marked uncertain.

    >>> zone_for("BR", "SP"), zone_for("BR", "BR-AM"), zone_for("BRA", "Acre")
    (('America/Sao_Paulo', True), ('America/Manaus', False), ('America/Rio_Branco', True))
    >>> zone_for(None, "AU-WA"), zone_for("DE", "BY"), zone_for("BR")
    (('Australia/Perth', True), ('Europe/Berlin', True), ('America/Sao_Paulo', False))
    """
    try:  # the per-event path: short strings (or None) go straight to the cache
        if len(country or "") <= _MAX_COUNTRY and len(region or "") <= _MAX_REGION:
            return _zone_for(country, region)
    except TypeError:  # not strings (or not hashable): no place
        pass
    return _zone_for(*_bounded(country, region))


@lru_cache(maxsize=4096)
def _zone_for(country: str | None, region: str | None) -> tuple[str | None, bool]:
    country, region = _bounded(country, region)
    zone, exact, _ = _place(country_code(country), region)
    return zone, exact


# No country code or subdivision name is longer: longer input is no place (and is never a key of
# the caches here, which therefore hold at most a few hundred bytes per entry).
_MAX_COUNTRY = 8
_MAX_REGION = 100


def _bounded(country: str | None, region: str | None) -> tuple[str | None, str | None]:
    if not isinstance(country, str) or len(country) > _MAX_COUNTRY:
        country = None
    if not isinstance(region, str) or len(region) > _MAX_REGION or not region.strip():
        return country, None
    return country, region.strip()


def local_zone(country: str | None, region: str | None, default: str | None
               ) -> tuple[str | None, bool]:
    """The zone to read a place's local times in (times sent without an offset), and whether it
    is certain.

    The place decides when it is known: its subdivision's zone (certain or the subdivision's best
    guess), else its country's. The partner's ``default`` zone (``default_timezone``) is only a
    fallback, always uncertain: when the place gives no zone at all, or gives only a country's
    guess and ``default`` is one of that country's zones (a partner that works from Manaus knows
    better than the country's main zone where a Brazilian scan without a state happened).

    >>> local_zone("BR", "SP", "America/Manaus")
    ('America/Sao_Paulo', True)
    >>> local_zone("BR", None, "America/Manaus"), local_zone("BR", None, "Europe/Paris")
    (('America/Manaus', False), ('America/Sao_Paulo', False))
    >>> local_zone(None, None, "America/Manaus")
    ('America/Manaus', False)
    """
    country, region = _bounded(country, region)
    zone, exact, regional = _place(country_code(country), region)
    if exact or regional or not default:
        return zone, exact
    if zone is None or default in _country_zones().get(country_code(country) or "", ()):
        return default, False
    return zone, False


@lru_cache(maxsize=4096)
def _place(code: str | None, region: str | None) -> tuple[str | None, bool, bool]:
    """``(zone, certain, from the region)`` of a place (an alpha-2 code and a stripped region of
    bounded length); see :func:`zone_for`."""
    if code is None and region and len(region) > 3 and region[2] == "-":
        code = country_code(region[:2])
    if code is None:
        return None, False, False
    zones = _country_zones().get(code)
    if zones and _same_rules(zones):
        # One clock in zone.tab, but some subdivisions lie overseas (FR-974, La Réunion, is
        # also the country RE): a region whose places keep another clock keeps its own.
        found = subdivision_zone(code, region) if region is not None else None
        if found is not None and _rules(found[0]) != _rules(zones[0]):
            return found[0], found[1], True
        return zones[0], True, False
    if region is not None:
        # US states: the `us` package's lists are the authority (no sample of places needed)
        found = _us_state_zone(region) if code == "US" else subdivision_zone(code, region)
        if found is not None:
            return found[0], found[1], True
    if not zones:
        return None, False, False
    return _main_zone(code) or zones[0], False, False


def country_code(country: str | None) -> str | None:
    """The ISO 3166-1 alpha-2 code of an alpha-2 or alpha-3 code, any case; ``None`` for what has
    not the shape of a code (an alpha-2 code is not checked against the list of countries).

    >>> country_code(" bra "), country_code("de"), country_code(""), country_code("Brazil")
    ('BR', 'DE', None, None)
    """
    if not isinstance(country, str) or len(country) > _MAX_COUNTRY:
        return None
    code = country.strip().upper()
    if len(code) == 3:
        code = _ALPHA3.get(code) or _alpha2_of(code) or ""
    return code if len(code) == 2 and code.isascii() and code.isalpha() else None


def _us_state_zone(region: str) -> tuple[str, bool] | None:
    """A US state's zone from the ``us`` package's curated zone lists (they name zones that a
    sample of places can miss, such as the Aleutians'); the capital's zone where there are several.
    """
    import us

    state = us.states.lookup(_strip_country(region, "US"))
    if state is None or not state.time_zones:
        return None
    zones = list(state.time_zones)
    if len(zones) == 1:
        return zones[0], True
    return (state.capital_tz or zones[0]), False


def subdivision_zone(country: str, region: str) -> tuple[str, bool] | None:
    """The zone of a country's subdivision and whether the whole subdivision keeps its clock.

    The subdivision (by code, ISO 3166-2 code or name) and its places come from the
    countries-states-cities database (package ``countrystatecity-countries``); each place is
    located in the IANA zone boundaries (package ``timezonefinder``). The zone is the one that
    most of the subdivision's places keep (the database's own zone for the subdivision when it
    keeps the same clock); it is certain when every place keeps that clock from 2020 on.
    ``None`` for a subdivision the database does not know.

    >>> subdivision_zone("AU", "NSW")  # Broken Hill keeps South Australia's clock
    ('Australia/Sydney', False)
    >>> subdivision_zone("MX", "MX-BCN"), subdivision_zone("RU", "KGD")
    (('America/Tijuana', True), ('Europe/Kaliningrad', True))
    """
    code = country_code(country)
    if code is None or len(region) > _MAX_REGION:
        return None
    states = _subdivisions(code)
    key = _strip_country(region, code)
    state_code = states.get(key.upper()) or states.get(_fold(key))
    return None if state_code is None else _state_zone(code, state_code)


def _strip_country(region: str, country: str) -> str:
    region = region.strip()
    if region[:3].upper() == f"{country}-":
        return region[3:]
    return region


def _fold(name: str) -> str:
    """A name compared without case, accents or repeated spaces (``São  Paulo`` = ``sao paulo``)."""
    decomposed = unicodedata.normalize("NFKD", name)
    return " ".join("".join(c for c in decomposed if not unicodedata.combining(c))
                    .casefold().split())


@lru_cache(maxsize=256)
def _subdivisions(country: str) -> dict[str, str]:
    """A country's subdivisions: code, ISO 3166-2 suffix and folded names → the database's code."""
    from countrystatecity_countries import get_states_of_country

    keys: dict[str, str] = {}
    for state in get_states_of_country(country):
        for key in (state.state_code.upper(),
                    _strip_country(state.iso3166_2, country).upper() if state.iso3166_2 else "",
                    _fold(state.name), _fold(state.native or "")):
            if key:
                keys.setdefault(key, state.state_code)
    return keys


@lru_cache(maxsize=1024)
def _state_zone(country: str, state_code: str) -> tuple[str, bool] | None:
    """The zone most of a subdivision's places keep, and whether all of them keep it.

    Built once per subdivision and process (a few milliseconds to read and locate its places;
    the first one also loads the zone boundaries, about half a second); the database's own cache
    of its files is emptied afterwards, so a process keeps only the result.
    """
    from countrystatecity_countries import get_cities_of_state, get_state_by_code
    from countrystatecity_countries.loaders import DataLoader

    try:
        state = get_state_by_code(country, state_code)
        if state is None:
            return None
        points = [(city.latitude, city.longitude)
                  for city in get_cities_of_state(country, state_code)]
    finally:
        DataLoader.load_cities.cache_clear()
    if state.latitude and state.longitude:
        points.append((state.latitude, state.longitude))
    return _pick_zone(_zones_at(points), _valid_zone(state.timezone))


@lru_cache(maxsize=256)
def _main_zone(country: str) -> str | None:
    """The zone a country's subdivisions keep most, weighing each by its number of places (the
    database's zone of each subdivision; for the US, the ``us`` package's zone of each state)."""
    votes: Counter[str] = Counter()
    if country == "US":
        import us

        for us_state in us.states.STATES_AND_TERRITORIES:
            if us_state.time_zones:
                votes[us_state.capital_tz or us_state.time_zones[0]] += 1
    else:
        from countrystatecity_countries import get_states_of_country
        from countrystatecity_countries.loaders import DataLoader

        try:
            for state in get_states_of_country(country):
                zone = _valid_zone(state.timezone)
                if zone is not None:
                    votes[zone] += max(1, len(DataLoader.load_cities(country, state.state_code)))
        finally:
            DataLoader.load_cities.cache_clear()
    groups: Counter[tuple[timedelta | None, ...]] = Counter()
    for zone, count in votes.items():
        groups[_rules(zone)] += count
    if not groups:
        return None
    best = max(groups, key=lambda group: groups[group])
    return max((zone for zone in votes if _rules(zone) == best), key=lambda zone: votes[zone])


def _zones_at(points: list[tuple[str, str]]) -> Counter[str]:
    """How many of ``points`` (latitude, longitude) lie in each zone (points at sea, in the
    boundaries' ``Etc/`` zones, are left out)."""
    finder = _zone_finder()
    counts: Counter[str] = Counter()
    for lat, lon in points:
        try:
            zone = finder.timezone_at(lng=float(lon), lat=float(lat))
        except (TypeError, ValueError):
            continue
        if zone is not None and not zone.startswith("Etc/") and _valid_zone(zone):
            counts[zone] += 1
    return counts


def _pick_zone(counts: Counter[str], listed: str | None) -> tuple[str, bool] | None:
    """The zone kept by most places (named as the database lists it when that keeps the same
    clock), and whether all of them keep it."""
    groups = _by_rules(counts)
    if not groups:
        return (listed, False) if listed is not None else None
    listed_rules = _rules(listed) if listed is not None else None
    best = max(groups, key=lambda g: (groups[g], g == listed_rules))
    zone = listed if best == listed_rules else max(
        (z for z in counts if _rules(z) == best),
        key=lambda z: counts[z], default=None)
    return None if zone is None else (zone, len(groups) == 1)


def _by_rules(counts: Counter[str]) -> Counter[tuple[timedelta | None, ...]]:
    groups: Counter[tuple[timedelta | None, ...]] = Counter()
    for zone, count in counts.items():
        groups[_rules(zone)] += count
    return groups


def _valid_zone(name: str | None) -> str | None:
    if not name:
        return None
    try:
        _zone(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None
    return name


@lru_cache(maxsize=1)
def _zone_finder() -> Any:
    from timezonefinder import TimezoneFinder

    return TimezoneFinder()


_RULE_INSTANTS = tuple(datetime(year, month, 15, 12, tzinfo=UTC)
                       for year in range(2020, 2036) for month in (1, 4, 7, 10))


@lru_cache(maxsize=1024)
def _rules(zone: str) -> tuple[timedelta | None, ...]:
    """A zone's UTC offsets in winter and summer, 2020-2035: zones with equal rules keep one clock."""
    tz = _zone(zone)
    return tuple(instant.astimezone(tz).utcoffset() for instant in _RULE_INSTANTS)


def _same_rules(zones: tuple[str, ...]) -> bool:
    """Whether every zone keeps the same UTC offsets (winter and summer, 2020-2035).

    Germany lists Europe/Berlin and Europe/Busingen: two names, one clock, so its local times are
    exact; the United States' zones differ, so a US time without a state is a guess.
    """
    return all(_rules(zone) == _rules(zones[0]) for zone in zones[1:])


# --- the tz database's tables ----------------------------------------------------------------


def tz_table(name: str) -> str | None:
    """The text of one of the tz database's tables (``zone.tab``, ``zone1970.tab``,
    ``iso3166.tab``): from the ``tzdata`` package, else from the system's zoneinfo directories
    (``zoneinfo.TZPATH``); ``None`` when neither has it."""
    try:
        return (files("tzdata") / "zoneinfo" / name).read_text(encoding="utf-8")
    except (ModuleNotFoundError, OSError):
        pass
    for base in TZPATH:
        path = Path(base) / name
        if path.is_file():
            return path.read_text(encoding="utf-8")
    return None


@lru_cache(maxsize=1)
def _country_zones() -> dict[str, tuple[str, ...]]:
    """ISO country code → its zones in ``zone.tab``'s order (empty when no table is found)."""
    zones: dict[str, list[str]] = {}
    for line in (tz_table("zone.tab") or "").splitlines():
        if line.startswith("#") or not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) >= 3 and _valid_zone(fields[2]):
            zones.setdefault(fields[0], []).append(fields[2])
    return {code: tuple(names) for code, names in zones.items()}


def country_zones(country: str) -> tuple[str, ...]:
    """The zones of an ISO country (alpha-2 or alpha-3), in ``zone.tab``'s order.

    >>> country_zones("PT")
    ('Europe/Lisbon', 'Atlantic/Madeira', 'Atlantic/Azores')
    """
    return _country_zones().get(country_code(country) or "", ())


@lru_cache(maxsize=1)
def country_names() -> dict[str, str]:
    """ISO 3166-1 alpha-2 code → country name, from the tz database's ``iso3166.tab``.

    >>> country_names()["BR"]
    'Brazil'
    """
    names: dict[str, str] = {}
    for line in (tz_table("iso3166.tab") or "").splitlines():
        if line.startswith("#") or "\t" not in line:
            continue
        code, name = line.split("\t", 1)
        names[code.strip()] = name.strip()
    return names


@lru_cache(maxsize=1)
def _alpha3_table() -> dict[str, str]:
    from countrystatecity_countries import get_countries

    return {country.iso3.upper(): country.iso2.upper() for country in get_countries()}


def _alpha2_of(alpha3: str) -> str | None:
    return _alpha3_table().get(alpha3)


# Alpha-3 codes seen in aggregator feeds (AfterShip's country_iso3) for the countries we serve.
_ALPHA3 = {
    "USA": "US", "CAN": "CA", "MEX": "MX", "GBR": "GB", "DEU": "DE", "FRA": "FR", "NLD": "NL",
    "BEL": "BE", "ESP": "ES", "ITA": "IT", "AUT": "AT", "CHE": "CH", "POL": "PL", "IRL": "IE",
    "AUS": "AU", "NZL": "NZ", "JPN": "JP", "CHN": "CN", "HKG": "HK", "SGP": "SG", "IND": "IN",
    "BRA": "BR", "SWE": "SE", "DNK": "DK", "NOR": "NO", "FIN": "FI", "PRT": "PT", "CZE": "CZ",
}


class LocalTime:
    """Helpers for feeds that split a local time into date and time fields (UPS)."""

    @staticmethod
    def from_compact(date: str, time: str | None) -> datetime:
        """``20260302`` + ``140500`` → naive datetime. Raises ``ValueError`` on bad input."""
        if date.__class__ is str and len(date) <= 16 and (time is None or (
                time.__class__ is str and len(time) <= 16)):
            return _from_compact(date, time)
        return _from_compact.__wrapped__(date, time)

    @staticmethod
    def offset(text: str) -> timedelta:
        """``-05:00``, ``-0500`` or ``-5`` → timedelta. Raises ``ValueError`` on bad input."""
        if text.__class__ is str and len(text) <= 16:
            return _offset(text)
        return _offset.__wrapped__(text)


@lru_cache(maxsize=_CACHE_SIZE)
def _from_compact(date: str, time: str | None) -> datetime:
    if len(date) != 8 or not date.isdigit():
        raise ValueError(f"expected YYYYMMDD, got {date!r}")
    time = (time or "000000").strip()
    if len(time) != 6 or not time.isdigit():
        raise ValueError(f"expected HHMMSS, got {time!r}")
    return datetime(int(date[:4]), int(date[4:6]), int(date[6:]), int(time[:2]),
                    int(time[2:4]), int(time[4:]))


@lru_cache(maxsize=256)
def _offset(text: str) -> timedelta:
    raw = text.strip()
    sign = -1 if raw.startswith("-") else 1
    body = raw.lstrip("+-")
    if ":" in body:
        hours, minutes = body.split(":", 1)
    elif len(body) == 4:
        hours, minutes = body[:2], body[2:]
    else:
        hours, minutes = body, "0"
    if not hours.isdigit() or not minutes.isdigit() or int(hours) > 14 or int(minutes) > 59:
        raise ValueError(f"bad UTC offset {text!r}")
    return sign * timedelta(hours=int(hours), minutes=int(minutes))
