"""Valley Express CSV batch drop → canonical events.

One file per batch, one row per scan, UTF-8, comma-separated with a header::

    tracking_number,status_code,local_timestamp,time_zone,location,reason,service_level,promised_by
    VX100234,ATT,2026-03-02 14:05,America/Denver,"Boise, ID 83702",NH,STD,2026-03-03T20:00:00-07:00
    VX100234,DLV,2026-03-03 11:20,,"Boise, ID 83702",,STD,2026-03-03T20:00:00-07:00

The first six columns are required, ``service_level`` and ``promised_by`` optional; column order
is free, unknown or repeated column names are not.

How it is read:

- **codes**: ``status_code`` is the codebook key; ``reason`` is looked up as ``reason/<code>`` and
  its canonical reason overrides the status's (an unknown reason code is counted as a gap);
- **time**: ``local_timestamp`` is local time (``YYYY-MM-DD HH:MM[:SS]``; an offset, if present,
  makes it exact) in ``time_zone``; an empty ``time_zone`` is resolved from the location's state
  with ``zone_for`` (flagged when the state spans zones), else the partner's default zone
  (flagged);
- **location**: ``"City, ST 12345"``; only city, state and the 3-digit ZIP prefix are kept, and a
  value that does not read as such (a street address) is dropped, never copied;
- **promise**: ``promised_by`` is ISO 8601 (with an offset, or local in the row's zone; a bare date
  means the end of that day);
- **errors**: a file that is not UTF-8 or has a wrong header is a dead letter at ``$``; a bad row
  (wrong column count, unreadable time, unknown zone, empty required field) is a dead letter at
  ``row[<n>].<column>``, where ``n`` counts data rows from 1 (the header is not counted), while
  the other rows still produce events.

Examples
--------
>>> parse_location("Boise, ID 83702")
('Boise', 'ID', '83702')
>>> parse_location("1600 Main St") is None
True
"""

from __future__ import annotations

import csv
import io
import re
from datetime import date, datetime, time
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from carrierwatch.core.timeutil import resolve_local, to_ms, zone_for
from carrierwatch.transformers.base import (
    Emitter,
    PayloadError,
    TransformContext,
    TransformResult,
    decode_text,
    location,
)

__all__ = ["OPTIONAL_COLUMNS", "REQUIRED_COLUMNS", "parse_location", "transform"]

REQUIRED_COLUMNS = ("tracking_number", "status_code", "local_timestamp", "time_zone", "location",
                    "reason")
OPTIONAL_COLUMNS = ("service_level", "promised_by")
# Possessive quantifiers (no backtracking into a run already read) keep the match linear: the
# lazy city of old followed by ``\s*`` retried every split of a run of spaces (3.8 s on "A",
# 32,000 spaces, "B"). The city may so end in spaces; they are stripped below.
_LOCATION = re.compile(
    r"^\s*+(?P<city>[A-Za-z][A-Za-z .'\-]*+)\s*+,\s*+(?P<state>[A-Za-z]{2})"
    r"(?:\s++(?P<zip>\d{5})(?:-\d{4})?)?\s*+$")


def parse_location(text: str) -> tuple[str, str, str | None] | None:
    """City, state and ZIP of ``"City, ST 12345"``; None when the text is not of that shape."""
    match = _LOCATION.match(text)
    if match is None:
        return None
    return match["city"].rstrip(" "), match["state"].upper(), match["zip"]


def _header_problem(header: list[str]) -> str | None:
    names = [name.strip() for name in header]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        return f"repeated columns {duplicates}"
    unknown = [n for n in names if n not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS]
    missing = [n for n in REQUIRED_COLUMNS if n not in names]
    if unknown or missing:
        return (f"wrong header: missing {missing}, unknown {unknown}; expected "
                f"{','.join(REQUIRED_COLUMNS)}[,{','.join(OPTIONAL_COLUMNS)}]")
    return None


def transform(raw: bytes, ctx: TransformContext) -> TransformResult:
    """Normalize one Valley Express CSV file; see the module docstring."""
    emitter = Emitter(raw, ctx)
    text = decode_text(raw)
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
    except csv.Error as exc:
        emitter.dead_letter("$", f"unreadable CSV header: {exc}")
        return emitter.result
    if header is None:
        emitter.dead_letter("$", "empty file: no header")
        return emitter.result
    problem = _header_problem(header)
    if problem is not None:
        emitter.dead_letter("$", problem)
        return emitter.result
    columns = [name.strip() for name in header]
    number = 0
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            number += 1
            emitter.dead_letter(f"row[{number}]", f"unreadable CSV row: {exc}")
            continue
        if not row or all(not cell.strip() for cell in row):
            continue  # blank line
        number += 1
        with emitter.element(f"row[{number}]"):
            if len(row) != len(columns):
                raise PayloadError(f"row[{number}]", f"expected {len(columns)} columns, "
                                                     f"got {len(row)}")
            values = dict(zip(columns, (cell.strip() for cell in row), strict=True))
            _row(emitter, ctx, emitter.limit_cells(values, f"row[{number}]"), f"row[{number}]")
    if number == 0:
        emitter.dead_letter("$", "no data rows")
    return emitter.result


def _required(values: dict[str, str], column: str, path: str) -> str:
    value = values[column]
    if not value:
        raise PayloadError(f"{path}.{column}", "missing required value")
    return value


def _zone(values: dict[str, str], path: str, state: str | None, default: str | None
          ) -> tuple[str | None, bool]:
    name = values["time_zone"]
    if name:
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise PayloadError(f"{path}.time_zone", f"unknown time zone {name!r:.60}") from None
        return name, True
    zone, exact = zone_for("US", state) if state else (None, False)
    if zone is not None and exact:
        return zone, True
    return default or zone, False


def _local_time(value: str, where: str) -> datetime:
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise PayloadError(where, f"unreadable time {value!r:.60} "
                                  f"(expected YYYY-MM-DD HH:MM[:SS])") from None


def _row(emitter: Emitter, ctx: TransformContext, values: dict[str, str], path: str) -> None:
    tracking_number = _required(values, "tracking_number", path)
    status_code = _required(values, "status_code", path)
    stamp = _required(values, "local_timestamp", path)
    place_text = values["location"]
    parsed = parse_location(place_text) if place_text else None
    city, state, postal = parsed if parsed else (None, None, None)
    zone, exact_zone = _zone(values, path, state, ctx.partner.default_timezone)

    moment = _local_time(stamp, f"{path}.local_timestamp")
    if len(stamp) <= 10:
        raise PayloadError(f"{path}.local_timestamp", f"a scan needs a time of day, got {stamp!r}")
    if moment.tzinfo is not None:
        event_time, ambiguous = to_ms(moment), False
    else:
        event_time, ambiguous = resolve_local(moment, zone, exact_zone=exact_zone)

    promised_by: int | None = None
    promise_text = values.get("promised_by") or ""
    if promise_text:
        promise = _local_time(promise_text, f"{path}.promised_by")
        if len(promise_text) <= 10:  # a bare date: by the end of that day
            promise = datetime.combine(date.fromisoformat(promise_text), time(23, 59, 59))
        promised_by = (to_ms(promise) if promise.tzinfo is not None
                       else resolve_local(promise, zone, exact_zone=exact_zone)[0])

    reason: str | None = None
    reason_code = values["reason"]
    if reason_code:
        hit = ctx.codebook.lookup(f"reason/{reason_code}")
        if hit is None:
            emitter.result.gaps.append(f"reason/{reason_code}")
        else:
            reason = hit.reason

    service = values.get("service_level") or ""
    emitter.event(
        tracking_number=tracking_number,
        raw_code=status_code,
        event_time=event_time,
        codes=(status_code,),
        timezone_ambiguous=ambiguous,
        event_time_local=stamp,
        location=location("US" if parsed else None, state, city, postal),
        promised_by=promised_by,
        service_level=service.lower() or None,
        reason=reason,
    )
