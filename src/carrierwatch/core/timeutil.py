"""Time parsing for partner feeds: store UTC, keep the original, flag what is not certain.

Partners send times in three ways: UTC, local time with an offset, and local time without one.
The first two are exact. For the third, the zone comes from the event's location where it is
known for sure (a single-zone US state or country); otherwise a best guess is used and the event
is flagged ``timezone_ambiguous``. Local times that fall in a daylight-saving fold (the hour that
happens twice) or gap (the hour that never happens) are flagged too.

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

from datetime import UTC, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

__all__ = [
    "CACHE_KEY_LIMIT",
    "LocalTime",
    "parse_instant",
    "parse_naive",
    "resolve_local",
    "to_ms",
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

    ``region`` is a state/province code within ``country`` (``TN``) or an ISO 3166-2 code
    (``US-TN``). US states come from the ``us`` package's zone lists, Canadian provinces from a
    table here, other countries from the tz database's ``zone.tab`` as ``pytz`` ships it. A place
    with several zones gives its capital's (US) or its first listed zone, marked uncertain.
    """
    if (country.__class__ is str and len(country) <= CACHE_KEY_LIMIT  # type: ignore[union-attr]
            and (region is None or (region.__class__ is str and len(region) <= CACHE_KEY_LIMIT))):
        return _zone_for(country, region)
    return _zone_for.__wrapped__(country, region)


@lru_cache(maxsize=1024)
def _zone_for(country: str | None, region: str | None) -> tuple[str | None, bool]:
    if not country:
        return None, False
    country = country.strip().upper()
    if len(country) == 3:
        country = _ALPHA3.get(country, country)
    if country == "US" and region:
        import us

        code = region.split("-")[-1].strip().upper()
        state = us.states.lookup(code)
        if state is not None and state.time_zones:
            zones = list(state.time_zones)
            if len(zones) == 1:
                return zones[0], True
            return (state.capital_tz or zones[0]), False
    if country == "CA" and region:
        province = _CANADA.get(region.split("-")[-1].strip().upper())
        if province is not None:
            return province
    import pytz

    country_zones: list[str] | None = pytz.country_timezones.get(country)
    if not country_zones:
        return None, False
    return country_zones[0], _same_rules(tuple(country_zones))


def _same_rules(zones: tuple[str, ...]) -> bool:
    """Whether every zone keeps the same UTC offsets (winter and summer, 2020-2035).

    Germany lists Europe/Berlin and Europe/Busingen: two names, one clock, so its local times are
    exact; the United States' zones differ, so a US time without a state is a guess.
    """
    if len(zones) == 1:
        return True
    instants = [datetime(year, month, 15, 12, tzinfo=UTC)
                for year in range(2020, 2036) for month in (1, 4, 7, 10)]
    first = _zone(zones[0])
    reference = [i.astimezone(first).utcoffset() for i in instants]
    return all([i.astimezone(_zone(z)).utcoffset() for i in instants] == reference
               for z in zones[1:])


# Canadian provinces and territories: the tz database lists Canada's zones without provinces (its
# first is Newfoundland's), so they are named here. Exact where the whole province keeps one
# clock; a guess where part of it does not (north-west Ontario, eastern Quebec, north-east BC…).
_CANADA: dict[str, tuple[str, bool]] = {
    "AB": ("America/Edmonton", True), "BC": ("America/Vancouver", False),
    "MB": ("America/Winnipeg", True), "NB": ("America/Moncton", True),
    "NL": ("America/St_Johns", False), "NS": ("America/Halifax", True),
    "NT": ("America/Yellowknife", True), "NU": ("America/Iqaluit", False),
    "ON": ("America/Toronto", False), "PE": ("America/Halifax", True),
    "QC": ("America/Toronto", False), "SK": ("America/Regina", True),
    "YT": ("America/Whitehorse", True),
}

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
