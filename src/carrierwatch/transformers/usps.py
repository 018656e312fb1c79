"""USPS Tracking API v3 (``expand=DETAIL``) → canonical events.

Payload (``GET /tracking/v3/tracking/{trackingNumber}?expand=DETAIL``)::

    {"trackingNumber": "9400111899223100012345", "mailClass": "PRIORITY_MAIL",
     "uniqueMailPieceId": "1234", "destinationState": "TX",
     "expectedDeliveryTimeStamp": "...", "guaranteedDeliveryTimeStamp": "...",
     "trackingEvents": [{"eventType": "Out for Delivery", "eventCode": "OF",
                         "eventTimestamp": "2026-03-02T08:05:00",
                         "GMTTimestamp": "2026-03-02T14:05:00Z", "GMTOffset": "-6:00",
                         "eventCity": "AUSTIN", "eventState": "TX", "eventZIP": "78701",
                         "eventCountry": "", "firm": "", "name": "", "authorizedAgent": false}]}

How it is read:

- **codes**: ``eventCode`` (USPS Pub 199 scan event codes) is the codebook key; an event without
  one is matched on its ``eventType`` text with the codebook's patterns;
- **time**: ``GMTTimestamp`` is UTC (exact); without it, ``eventTimestamp`` + ``GMTOffset`` is
  exact; with neither, ``eventTimestamp`` is local time of the event's state (flagged when the
  state spans zones). ``eventTimestamp`` is always kept as ``event_time_local``;
- **identity**: ``uniqueMailPieceId`` (USPS "mp-suffix": the IMpb can be reused within the
  retention period, this id tells the mail pieces apart) is the discriminator when present;
- **promise**: ``guaranteedDeliveryTimeStamp`` (Priority Mail Express, GXG) is ``promised_by``;
  ``expectedDeliveryTimeStamp`` is the latest estimate (``eta_end``); both apply to every event of
  the response. Times without an offset are read in the destination state's zone, and such a
  time of exactly midnight is a date: the end of that day (23:59:59) is used;
- **privacy**: ``name`` (the signer), ``firm`` and street data are never read; a delivered event
  with a signer or an authorized agent gets ``proof_of_delivery="signature"``;
- **errors**: the USPS error response ``{"apiVersion", "error": {"code", "message", "errors"}}``
  is a dead letter naming the USPS error code.

Examples
--------
>>> gmt_instant("2026-03-02T14:05:00.041Z")
1772460300041
>>> gmt_instant("2026-03-02T14:05:00")
1772460300000
"""

from __future__ import annotations

from datetime import UTC, time
from typing import Any

from carrierwatch.core.model import CanonicalStatus
from carrierwatch.core.timeutil import (
    LocalTime,
    parse_instant,
    parse_naive,
    resolve_local,
    to_ms,
    zone_for,
)
from carrierwatch.transformers.base import (
    Emitter,
    PayloadError,
    TransformContext,
    TransformResult,
    location,
    opt_list,
    opt_str,
    parse_json,
    req_str,
)

__all__ = ["gmt_instant", "transform"]

_DELIVERED = CanonicalStatus.DELIVERED.value


def gmt_instant(text: str) -> int:
    """UTC ms of a USPS ``GMTTimestamp``; a value without an offset is UTC by definition."""
    ms, _exact = parse_instant(text)
    if ms is None:
        return to_ms(parse_naive(text).replace(tzinfo=UTC))
    return ms


def _package_time(shipment: dict[str, Any], key: str, zone: tuple[str | None, bool]
                  ) -> int | None:
    value = shipment.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise PayloadError(key, f"expected a timestamp string, got {value!r:.60}")
    try:
        ms, _exact = parse_instant(value)
        if ms is None:
            naive = parse_naive(value)
            if naive.time() == time(0, 0):  # a date written as midnight means "by end of day"
                naive = naive.replace(hour=23, minute=59, second=59)
            ms, _ambiguous = resolve_local(naive, zone[0], exact_zone=zone[1])
    except ValueError:
        raise PayloadError(key, f"unreadable timestamp {value!r:.60}") from None
    return ms


def _event_time(event: dict[str, Any], path: str, country: str | None, state: str | None
                ) -> tuple[int, bool, str | None]:
    local = event.get("eventTimestamp")
    if local is not None and not isinstance(local, str):
        raise PayloadError(f"{path}.eventTimestamp", f"expected a string, got {local!r:.60}")
    gmt = event.get("GMTTimestamp")
    if gmt not in (None, ""):
        if not isinstance(gmt, str):
            raise PayloadError(f"{path}.GMTTimestamp", f"expected a string, got {gmt!r:.60}")
        try:
            return gmt_instant(gmt), False, local
        except ValueError:
            raise PayloadError(f"{path}.GMTTimestamp", f"unreadable timestamp {gmt!r:.60}"
                               ) from None
    if not local:
        raise PayloadError(f"{path}.eventTimestamp", "missing required field")
    try:
        naive = parse_naive(local)
    except ValueError:
        raise PayloadError(f"{path}.eventTimestamp", f"unreadable timestamp {local!r:.60}"
                           ) from None
    offset = event.get("GMTOffset")
    if isinstance(offset, str) and offset.strip():
        try:
            delta = LocalTime.offset(offset)
        except ValueError:
            raise PayloadError(f"{path}.GMTOffset", f"unreadable offset {offset!r:.20}") from None
        return to_ms((naive - delta).replace(tzinfo=UTC)), False, local
    ms, _exact = parse_instant(local)
    if ms is not None:
        return ms, False, local
    zone, exact_zone = zone_for(country, state)
    ms, ambiguous = resolve_local(naive, zone, exact_zone=exact_zone)
    return ms, ambiguous, local


def _error_message(payload: dict[str, Any]) -> str | None:
    error = payload.get("error")
    if "trackingNumber" in payload or not isinstance(error, dict):
        return None
    code = error.get("code") or "?"
    message = error.get("message") or "error"
    listed = error.get("errors")
    details = [str(e.get("detail") or e.get("title"))
               for e in (listed if isinstance(listed, list) else [])
               if isinstance(e, dict) and (e.get("detail") or e.get("title"))]
    text = f"USPS API error {code}: {message}"
    if details:
        text += f" ({'; '.join(details)})"
    return text


def transform(raw: bytes, ctx: TransformContext) -> TransformResult:
    """Normalize one USPS v3 tracking response; see the module docstring."""
    emitter = Emitter(raw, ctx)
    with emitter.element("$"):  # a dead letter for the whole payload keeps what came before it
        _payload(emitter, ctx, raw)
    return emitter.result


def _payload(emitter: Emitter, ctx: TransformContext, raw: bytes) -> None:
    payload = parse_json(raw, emitter)
    if not isinstance(payload, dict):
        emitter.dead_letter("$", f"expected a JSON object, got {type(payload).__name__}")
        return
    error = _error_message(payload)
    if error is not None:
        emitter.dead_letter("$", error)
        return

    tracking_number = req_str(payload, "trackingNumber", "$").strip()
    default_country = ctx.partner.default_country or "US"
    mail_class = opt_str(payload, "mailClass", "$")
    service_level = mail_class.lower() if mail_class else None
    discriminator = opt_str(payload, "uniqueMailPieceId", "$")
    destination_zone = zone_for(default_country, opt_str(payload, "destinationState", "$"))
    promised_by = _package_time(payload, "guaranteedDeliveryTimeStamp", destination_zone)
    eta_end = _package_time(payload, "expectedDeliveryTimeStamp", destination_zone)
    events = opt_list(payload, "trackingEvents", "$")
    if not events:
        emitter.dead_letter("trackingEvents", "response has no tracking events")

    for index, event in enumerate(events):
        path = f"trackingEvents[{index}]"
        with emitter.element(path):
            if not isinstance(event, dict):
                raise PayloadError(path, f"expected an object, got {type(event).__name__}")
            code = opt_str(event, "eventCode", path)
            text = opt_str(event, "eventType", path)
            if code is None and text is None:
                raise PayloadError(f"{path}.eventCode", "neither eventCode nor eventType given")
            country = (opt_str(event, "eventCountry", path) or default_country).upper()
            state = opt_str(event, "eventState", path)
            event_time, ambiguous, local = _event_time(event, path, country, state)
            time_path = (f"{path}.GMTTimestamp" if event.get("GMTTimestamp") not in (None, "")
                         else f"{path}.eventTimestamp")
            mapping = (ctx.codebook.lookup(code) if code is not None
                       else ctx.codebook.match_text(text))
            signed = bool(event.get("name")) or event.get("authorizedAgent") is True
            delivered = mapping is not None and mapping.status == _DELIVERED
            emitter.event(
                tracking_number=tracking_number,
                discriminator=discriminator,
                raw_code=code if code is not None else str(text),
                event_time=event_time,
                codes=(code,) if code is not None else (),
                text=text if code is None else None,
                timezone_ambiguous=ambiguous,
                event_time_local=local,
                location=location(country, state, opt_str(event, "eventCity", path),
                                  opt_str(event, "eventZIP", path)),
                promised_by=promised_by,
                eta_end=eta_end,
                proof_of_delivery="signature" if delivered and signed else None,
                service_level=service_level,
                paths={"event_time": time_path, "promised_by": "guaranteedDeliveryTimeStamp",
                       "eta_end": "expectedDeliveryTimeStamp"},
            )
