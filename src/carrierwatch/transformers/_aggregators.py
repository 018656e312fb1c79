"""Helpers shared by the three aggregator feeds (EasyPost, AfterShip, Shippo).

The aggregators re-publish carrier scans in a common shape: a tracker with its whole history,
package-level promise and ETA fields, and ISO 8601 times that are sometimes UTC, sometimes local
with an offset and sometimes local without one. This module holds what their transformers (and the
synthetic renderers that speak their formats) would otherwise copy three times:

* :func:`parse_event_time`: an event time to UTC ms plus the ``timezone_ambiguous`` flag;
* :func:`parse_window`: a promise or ETA that is either an instant or a calendar date (a date means
  the whole local day in the destination's zone);
* :class:`Draft` and :func:`emit_drafts`: two-pass emission, so that attempt numbers are counted
  over the whole history (in event time, duplicates counted once) before events are built;
* :func:`iso_utc`, :func:`iso_local`, :func:`stable_id`: formatting used by the renderers.

Examples
--------
>>> parse_event_time("2026-03-02T14:05:00-06:00", "$.t", None, False)
(1772481900000, False)
>>> parse_event_time("2026-03-02T14:05:00", "$.t", "America/Chicago", True)
(1772481900000, False)
>>> parse_event_time("2026-03-02T14:05:00", "$.t", None, False)  # no zone: UTC, flagged
(1772460300000, True)
>>> parse_window("2026-03-05", "$.eta", "America/New_York")
(1772686800000, 1772773199999)
>>> iso_local(1772481900000, "America/Chicago")
'2026-03-02T14:05:00-06:00'
>>> iso_utc(1772481900000)
'2026-03-02T20:05:00Z'
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

from carrierwatch.core.codebook import Codebook
from carrierwatch.core.model import CanonicalStatus
from carrierwatch.core.timeutil import (
    CACHE_KEY_LIMIT,
    parse_instant,
    resolve_local,
    to_ms,
    zone_for,
)
from carrierwatch.transformers.base import Emitter, PayloadError, TransformContext

__all__ = [
    "Draft",
    "emit_drafts",
    "fallback_zone",
    "is_midnight_utc",
    "iso_local",
    "iso_utc",
    "local_is_unambiguous",
    "lookup_status",
    "number_attempts",
    "parse_event_time",
    "parse_window",
    "place_zone",
    "stable_id",
]

_DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_MIDNIGHT_UTC = re.compile(r"^(\d{4}-\d{2}-\d{2})T00:00(:00(\.0+)?)?(Z|[+-]00:?00)$")
_ATTEMPTED = CanonicalStatus.DELIVERY_ATTEMPTED.value
_DELIVERED = CanonicalStatus.DELIVERED.value
_UNKNOWN = CanonicalStatus.UNKNOWN.value


def _text(value: object, path: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise PayloadError(path, f"expected an ISO 8601 time string, got {value!r:.60}")
    return value.strip()


def place_zone(country: str | None, region: str | None) -> tuple[str | None, bool]:
    """The IANA zone of a feed location and whether it is certain (``zone_for`` on clean input).

    >>> place_zone("USA", "il")
    ('America/Chicago', True)
    >>> place_zone("US", "TN")  # Tennessee spans two zones: a guess
    ('America/Chicago', False)
    >>> place_zone("CAN", "ON")  # Ontario: Eastern, except its north-west
    ('America/Toronto', False)
    >>> place_zone(None, "TN")
    (None, False)
    >>> place_zone("RUS", "Khanty-Mansi")  # a hyphen in a name, not a country prefix
    ('Asia/Yekaterinburg', True)
    """
    if (country.__class__ is str and len(country) <= CACHE_KEY_LIMIT  # type: ignore[arg-type]
            and (region is None or (region.__class__ is str and len(region) <= CACHE_KEY_LIMIT))):
        return _place_zone(country, region)
    return _place_zone.__wrapped__(country, region)


@lru_cache(maxsize=4096)
def _place_zone(country: str | None, region: str | None) -> tuple[str | None, bool]:
    if not country or not country.strip():
        return None, False
    # (zone_for strips an ISO 3166-2 country prefix itself; a name may hold a hyphen)
    return zone_for(country.strip(), region.strip() if region and region.strip() else None)


def fallback_zone(ctx: TransformContext) -> str:
    """The zone used for calendar dates when the destination is unknown.

    The partner's ``default_timezone``, else its contract's timezone (UTC by default).
    """
    return ctx.partner.default_timezone or ctx.partner.contract.timezone


def parse_event_time(value: object, path: str, zone: str | None, exact_zone: bool, *,
                     naive_is_utc: bool = False) -> tuple[int, bool]:
    """UTC ms of a feed time and whether it is ambiguous.

    UTC (``Z``) and offset-carrying strings are exact. A local time without an offset is resolved
    in ``zone`` (ambiguous when the zone is a guess, missing, or the time is in a DST fold or gap);
    with ``naive_is_utc`` it is read as UTC (feeds documented to send UTC). A bare date is read as
    local midnight and flagged, since its time of day is unknown. A value that is not a time raises
    :class:`PayloadError` at ``path``.
    """
    if (value.__class__ is str and len(value) <= CACHE_KEY_LIMIT  # type: ignore[arg-type]
            and (zone is None or (zone.__class__ is str and len(zone) <= CACHE_KEY_LIMIT))):
        try:
            return _event_time(value, zone, exact_zone, naive_is_utc)
        except (ValueError, OverflowError):
            pass  # the complete path below names the problem
    return _event_time_checked(value, path, zone, exact_zone, naive_is_utc)


@lru_cache(maxsize=16_384)
def _event_time(value: str, zone: str | None, exact_zone: bool, naive_is_utc: bool
                ) -> tuple[int, bool]:
    # Feeds resend whole histories: the same time strings come back with every webhook.
    return _event_time_checked(value, "", zone, exact_zone, naive_is_utc)


def _event_time_checked(value: object, path: str, zone: str | None, exact_zone: bool,
                        naive_is_utc: bool) -> tuple[int, bool]:
    text = _text(value, path)
    try:
        ms, exact = parse_instant(text)
        if exact and ms is not None:
            return ms, False
        if naive_is_utc:
            return resolve_local(text, "UTC", exact_zone=True)[0], bool(_DATE_ONLY.match(text))
        ms, ambiguous = resolve_local(text, zone, exact_zone=exact_zone)
    except (ValueError, OverflowError) as exc:
        raise PayloadError(path, f"unreadable time {text!r}: {exc}") from None
    return ms, ambiguous or bool(_DATE_ONLY.match(text))


def _day_window(day: date, zone: str) -> tuple[int, int]:
    tz = ZoneInfo(zone)
    start = datetime(day.year, day.month, day.day, tzinfo=tz)
    nxt = day + timedelta(days=1)
    end = datetime(nxt.year, nxt.month, nxt.day, tzinfo=tz)
    return to_ms(start), to_ms(end) - 1


def is_midnight_utc(value: str) -> bool:
    """Whether ``value`` is exactly midnight UTC (Shippo's "date sent as a time" pattern).

    >>> is_midnight_utc("2026-03-05T00:00:00Z"), is_midnight_utc("2026-03-05T00:00:00-06:00")
    (True, False)
    """
    return bool(_MIDNIGHT_UTC.match(value.strip()))


def parse_window(value: object, path: str, zone: str, *,
                 midnight_utc_is_date: bool = False) -> tuple[int | None, int]:
    """A promise or ETA as ``(window_start, window_end)`` in UTC ms.

    A calendar date (``2026-03-05``) is the whole day in ``zone``: start at local midnight, end
    one millisecond before the next local midnight. An instant with an offset is exact (start
    None). A local time without an offset is resolved in ``zone``. With ``midnight_utc_is_date``, a
    midnight-UTC instant is read as the date it names (Shippo). Raises :class:`PayloadError`.

    >>> parse_window("2026-03-05T17:00:00Z", "$.eta", "UTC")
    (None, 1772730000000)
    >>> parse_window("2026-03-05T00:00:00Z", "$.eta", "America/Chicago", midnight_utc_is_date=True)
    (1772690400000, 1772776799999)
    """
    if (value.__class__ is str and len(value) <= CACHE_KEY_LIMIT  # type: ignore[arg-type]
            and zone.__class__ is str and len(zone) <= CACHE_KEY_LIMIT):
        try:
            return _window(value, zone, midnight_utc_is_date)
        except (ValueError, OverflowError, KeyError):
            pass  # the complete path below names the problem
    return _window_checked(value, path, zone, midnight_utc_is_date)


@lru_cache(maxsize=4096)
def _window(value: str, zone: str, midnight_utc_is_date: bool) -> tuple[int | None, int]:
    return _window_checked(value, "", zone, midnight_utc_is_date)


def _window_checked(value: object, path: str, zone: str, midnight_utc_is_date: bool
                    ) -> tuple[int | None, int]:
    text = _text(value, path)
    try:
        if _DATE_ONLY.match(text):
            return _day_window(date.fromisoformat(text), zone)
        if midnight_utc_is_date and is_midnight_utc(text):
            return _day_window(date.fromisoformat(text[:10]), zone)
        ms, exact = parse_instant(text)
        if exact and ms is not None:
            return None, ms
        return None, resolve_local(text, zone, exact_zone=True)[0]
    except (ValueError, OverflowError, KeyError) as exc:
        raise PayloadError(path, f"unreadable date/time {text!r}: {exc}") from None


@dataclass(slots=True)
class Draft:
    """One event waiting for emission: the keyword arguments of :meth:`Emitter.event`.

    ``status`` is the canonical status the codebook gives (``unknown`` for unmapped codes); it is
    needed before emission to count delivery attempts over the whole history.
    """

    status: str
    fields: dict[str, Any] = field(default_factory=dict)

    @property
    def event_time(self) -> int:
        return int(self.fields["event_time"])


def lookup_status(book: Codebook, codes: Sequence[str | None]) -> str:
    """The canonical status the codebook gives the first known key (``unknown`` when none)."""
    hit = book.lookup(*codes)
    return hit.status if hit is not None else _UNKNOWN


def number_attempts(drafts: Sequence[Draft]) -> None:
    """Fill ``attempt_number`` on failed attempts and deliveries, counted over the whole history.

    A failed attempt gets its rank among the distinct attempt times (a duplicate of an attempt is
    the same attempt); a delivery gets one more than the attempts at or before it. A draft that
    already carries an ``attempt_number`` keeps it.

    >>> drafts = [Draft("delivered", {"event_time": 9}), Draft("delivery_attempted", {"event_time": 5}),
    ...           Draft("delivery_attempted", {"event_time": 5}), Draft("delivery_attempted",
    ...           {"event_time": 7}), Draft("in_transit", {"event_time": 1})]
    >>> number_attempts(drafts)
    >>> [d.fields.get("attempt_number") for d in drafts]
    [3, 1, 1, 2, None]
    """
    attempts = sorted({d.event_time for d in drafts if d.status == _ATTEMPTED})
    for draft in drafts:
        status = draft.status
        if status != _ATTEMPTED and status != _DELIVERED:  # the common case: nothing to number
            continue
        if draft.fields.get("attempt_number") is not None:
            continue
        if status == _ATTEMPTED:
            draft.fields["attempt_number"] = attempts.index(draft.event_time) + 1
        else:
            draft.fields["attempt_number"] = sum(1 for t in attempts if t <= draft.event_time) + 1


def emit_drafts(emitter: Emitter, drafts: Iterable[Draft]) -> None:
    """Number the attempts (:func:`number_attempts`), then emit the drafts in payload order."""
    items = list(drafts)
    number_attempts(items)
    for draft in items:
        emitter.event(**draft.fields)


# --- formatting for the renderers --------------------------------------------------------------


def iso_utc(ms: int) -> str:
    """``2026-03-02T20:05:00Z`` (seconds precision, as the aggregators write UTC)."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def iso_local(ms: int, zone: str, *, offset: bool = True) -> str:
    """Local wall-clock time of ``ms`` in ``zone``, with its UTC offset unless ``offset`` is False."""
    local = datetime.fromtimestamp(ms / 1000, tz=ZoneInfo(zone)).replace(microsecond=0)
    if offset:
        return local.isoformat()
    return local.replace(tzinfo=None).isoformat()


def local_is_unambiguous(ms: int, zone: str) -> bool:
    """Whether the local wall-clock time of ``ms`` in ``zone`` maps back to exactly ``ms``.

    False in a DST fold (the second occurrence) or for zones where a naive rendering would be
    read back differently; renderers then write the offset.
    """
    naive = datetime.fromtimestamp(ms / 1000, tz=ZoneInfo(zone)).replace(tzinfo=None)
    back, ambiguous = resolve_local(naive, zone, exact_zone=True)
    return back == ms - ms % 1000 and not ambiguous


def stable_id(*parts: object, length: int = 24) -> str:
    """A deterministic hex id from ``parts`` (renderers need ids without randomness).

    >>> stable_id("easypost", "EZ1000000001", length=8)
    '7e5b0eef'
    """
    key = "\x1f".join(str(p) for p in parts).encode()
    return hashlib.blake2b(key, digest_size=16).hexdigest()[:length]
