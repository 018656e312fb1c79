"""Carrier B (Borealis Parcel) beta GraphQL tracking API → canonical events.

The poller asks ``query Track($numbers) { trackings(numbers: $numbers) { ... } }``
(:data:`carrierwatch.ingest.pollapis.GRAPHQL_QUERY`); the raw message is the GraphQL response::

    {"data": {"trackings": [
        {"trackingNumber": "CB2026030200017", "serviceLevel": "STANDARD",
         "promisedBy": "2026-03-05T23:59:59-07:00",
         "estimatedDelivery": {"from": "2026-03-05T09:00:00-07:00", "to": "...T17:00:00-07:00"},
         "events": [{"code": "ATTEMPTED", "reasonCode": "NO_ONE_HOME",
                     "description": "Delivery attempted, no one home",
                     "occurredAt": "2026-03-04T15:10:00-07:00", "attempt": 1, "proof": null,
                     "location": {"city": "Denver", "region": "CO", "postalCode": "80202",
                                  "country": "US"}}]},
        null]},
     "errors": [{"message": "tracking number not found", "path": ["trackings", 1],
                 "extensions": {"code": "NOT_FOUND", "trackingNumber": "CB..."}}]}

How it is read:

- **codes**: the codebook key is ``<code>/<reasonCode>`` when a reason is given, then
  ``<code>``; the beta API types ``code`` as a string (its enum still grows), so an unknown code
  is a codebook gap, not an error;
- **time**: ``occurredAt`` is RFC 3339 with an offset (exact); a value without one (seen in the
  beta on peak days) is read in the zone of the event's place and flagged when that is a guess;
- **promise and ETA**: ``promisedBy`` and ``estimatedDelivery`` are put on every event;
- **proof**: ``SIGNATURE``, ``PHOTO``, ``PIN`` or ``NONE`` on the delivered event;
- **partial answers**: GraphQL answers a batch with ``null`` for a number it cannot serve and an
  entry in ``errors``; each such error is a dead letter (with its code, e.g. ``NOT_FOUND``) and
  the other numbers are read; a response with ``data: null`` (``UNAUTHENTICATED``, an outage) is
  one dead letter naming every error.

Examples
--------
>>> keys("ATTEMPTED", "NO_ONE_HOME"), keys("DELIVERED", None)
(('ATTEMPTED/NO_ONE_HOME', 'ATTEMPTED'), ('DELIVERED',))
"""

from __future__ import annotations

from typing import Any

from carrierwatch.core.timeutil import parse_instant, resolve_local, zone_for
from carrierwatch.transformers.base import (
    CONTAINED_ERRORS,
    Emitter,
    PayloadError,
    TransformContext,
    TransformResult,
    count,
    location,
    opt_dict,
    opt_list,
    opt_str,
    parse_json,
    req_str,
)

__all__ = ["PROOFS", "keys", "transform"]

#: Carrier B proof kinds → canonical proof of delivery
PROOFS = {"SIGNATURE": "signature", "PHOTO": "photo", "PIN": "pin", "NONE": "none"}


def keys(code: str, reason: str | None) -> tuple[str, ...]:
    """Codebook keys of an event, the most specific first."""
    return (f"{code}/{reason}", code) if reason else (code,)


def _instant(value: str | None, path: str, country: str | None, region: str | None
             ) -> tuple[int, bool, str] | None:
    if value is None:
        return None
    try:
        ms, _exact = parse_instant(value)
    except ValueError:
        raise PayloadError(path, f"unreadable time {value!r:.60}") from None
    if ms is not None:
        return ms, False, value
    zone, exact = zone_for(country, region)
    ms, ambiguous = resolve_local(value, zone, exact_zone=exact)
    return ms, ambiguous or not exact, value


def _error_text(error: Any) -> str:
    if not isinstance(error, dict):
        return repr(error)[:120]
    found = error.get("extensions")
    extensions: dict[str, Any] = found if isinstance(found, dict) else {}
    code = str(extensions.get("code") or "ERROR")
    message = str(error.get("message") or "").strip()
    number = extensions.get("trackingNumber")
    return f"{code}: {message}" + (f" ({number})" if number else "")


def transform(raw: bytes, ctx: TransformContext) -> TransformResult:
    """Normalize one Carrier B GraphQL response; see the module docstring."""
    emitter = Emitter(raw, ctx)
    with emitter.element("$"):
        _payload(emitter, ctx, raw)
    return emitter.result


def _payload(emitter: Emitter, ctx: TransformContext, raw: bytes) -> None:
    payload = parse_json(raw, emitter)
    if not isinstance(payload, dict):
        emitter.dead_letter("$", f"expected a JSON object, got {type(payload).__name__}")
        return
    errors = payload.get("errors")
    data = payload.get("data")
    if data is None:
        texts = [_error_text(e) for e in errors] if isinstance(errors, list) and errors else []
        emitter.dead_letter("$.errors" if texts else "$.data",
                            "Carrier B GraphQL error " + "; ".join(texts) if texts
                            else "Carrier B response without data and without errors")
        return
    if isinstance(errors, list):
        for index, error in enumerate(errors):
            emitter.dead_letter(f"$.errors[{index}]", "Carrier B GraphQL error "
                                + _error_text(error))
    if not isinstance(data, dict):
        emitter.dead_letter("$.data", f"expected an object, got {type(data).__name__}")
        return
    trackings = data.get("trackings")
    if not isinstance(trackings, list):
        emitter.dead_letter("$.data.trackings", "missing list of trackings")
        return
    if not trackings and not errors:
        emitter.dead_letter("$.data.trackings", "no trackings in the response")
    for index, tracking in enumerate(trackings):
        if tracking is None:
            continue  # its error is in errors[]
        path = f"$.data.trackings[{index}]"
        with emitter.element(path):
            _tracking(emitter, ctx, tracking, path)


def _tracking(emitter: Emitter, ctx: TransformContext, tracking: Any, path: str) -> None:
    if not isinstance(tracking, dict):
        raise PayloadError(path, f"expected an object, got {type(tracking).__name__}")
    number = req_str(tracking, "trackingNumber", path).strip()
    if not number:
        raise PayloadError(f"{path}.trackingNumber", "empty tracking number")
    country = ctx.partner.default_country
    service = opt_str(tracking, "serviceLevel", path)
    promised = _instant(opt_str(tracking, "promisedBy", path), f"{path}.promisedBy", country,
                        None)
    window = opt_dict(tracking, "estimatedDelivery", path)
    eta_start = _instant(opt_str(window, "from", f"{path}.estimatedDelivery"),
                         f"{path}.estimatedDelivery.from", country, None) if window else None
    eta_end = _instant(opt_str(window, "to", f"{path}.estimatedDelivery"),
                       f"{path}.estimatedDelivery.to", country, None) if window else None
    events = opt_list(tracking, "events", path)
    if not events:
        emitter.note_empty(f"{path}.events")
        return
    for index, event in enumerate(events):
        event_path = f"{path}.events[{index}]"
        try:
            _event(emitter, event, event_path, number=number, country=country,
                   service=service, promised=promised[0] if promised else None,
                   eta_start=eta_start[0] if eta_start else None,
                   eta_end=eta_end[0] if eta_end else None, tracking_path=path)
        except CONTAINED_ERRORS as exc:
            emitter.contain(exc, event_path)


def _event(emitter: Emitter, event: Any, path: str, *, number: str, country: str | None,
           service: str | None, promised: int | None, eta_start: int | None,
           eta_end: int | None, tracking_path: str) -> None:
    if not isinstance(event, dict):
        raise PayloadError(path, f"expected an object, got {type(event).__name__}")
    code = req_str(event, "code", path).strip()
    reason = opt_str(event, "reasonCode", path)
    place = opt_dict(event, "location", path)
    place_path = f"{path}.location"
    place_country = (opt_str(place, "country", place_path) or country or "").upper() or None
    region = opt_str(place, "region", place_path)
    when = _instant(req_str(event, "occurredAt", path), f"{path}.occurredAt", place_country,
                    region)
    assert when is not None
    attempt = event.get("attempt")
    proof = opt_str(event, "proof", path)
    emitter.event(
        tracking_number=number,
        raw_code=f"{code}/{reason}" if reason else code,
        event_time=when[0],
        codes=keys(code, reason),
        text=opt_str(event, "description", path),
        timezone_ambiguous=when[1],
        event_time_local=when[2],
        location=location(place_country, region, opt_str(place, "city", place_path),
                          opt_str(place, "postalCode", place_path)),
        promised_by=promised,
        eta_start=eta_start,
        eta_end=eta_end,
        attempt_number=None if attempt is None else count(attempt, f"{path}.attempt"),
        proof_of_delivery=PROOFS.get(proof.upper()) if proof else None,
        service_level=service,
        paths={"event_time": f"{path}.occurredAt", "promised_by": f"{tracking_path}.promisedBy",
               "eta_start": f"{tracking_path}.estimatedDelivery.from",
               "eta_end": f"{tracking_path}.estimatedDelivery.to",
               "attempt_number": f"{path}.attempt"},
    )
