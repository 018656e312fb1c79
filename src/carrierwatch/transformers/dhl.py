"""DHL Shipment Tracking – Unified API → canonical events.

Payload (``GET /track/shipments``)::

    {"shipments": [{"id": "00340434292135100124", "service": "ecommerce",
                    "status": {...latest event...},
                    "estimatedTimeOfDelivery": "...",
                    "estimatedDeliveryTimeFrame": {"estimatedFrom": "...", "estimatedThrough": "..."},
                    "details": {"product": {"productName": "..."},
                                "proofOfDelivery": {"timestamp": "...", "signatureUrl": "...",
                                                    "signed": {"name": "..."}}},
                    "events": [{"timestamp": "2026-03-02T14:05:00", "statusCode": "transit",
                                "status": "WC", "description": "...",
                                "location": {"address": {"countryCode": "US",
                                                         "postalCode": "60601",
                                                         "addressLocality": "Chicago, IL"}}}]}]}

How it is read:

- **codes**: ``statusCode`` alone is coarse, so an event is looked up as ``express/<XX>`` when its
  ``status`` carries a DHL Express checkpoint code (partner-scoped: DHL Express ``DP`` is a failed
  delivery, FedEx ``DP`` a departure), then ``<statusCode>/<slugged description>`` (DHL's standard
  sentences), then the codebook's patterns on ``"<statusCode>: <description>"`` (failure
  sub-kinds), and last the bare ``statusCode``;
- **time**: ``timestamp`` with an offset is exact; without one (as in DHL's own example) it is
  read as local time of the event's country (and US/CA state when the locality names one) and
  flagged ``timezone_ambiguous`` when that zone is a guess;
- **identity**: the shipment ``id`` is the tracking number; the feed has no distinguishing id, so
  the discriminator is None;
- **ETA**: ``estimatedDeliveryTimeFrame`` (or ``estimatedTimeOfDelivery``) is the latest estimate
  as of the payload and is put on every event of the shipment; DHL sends no contractual promise;
- **privacy**: ``addressLocality`` may hold a street (``"Oderweg 2, AMSTERDAM"``): only the city
  part (no digits) and a US/CA state are kept; the signer's name is never read;
- **errors**: DHL's RFC 7807 problem response (``{"title", "status", "detail"}``) is a dead letter
  naming the HTTP status; a bad shipment or event is a dead letter of its own.

Examples
--------
>>> slug("The shipment has been loaded onto the delivery vehicle.")
'the-shipment-has-been-loaded-onto-the-delivery-vehicle'
>>> split_locality("Oderweg 2, AMSTERDAM", "NL")
('AMSTERDAM', None)
>>> split_locality("CINCINNATI HUB - CINCINNATI, OH - USA", "US")
('CINCINNATI', 'OH')
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

from carrierwatch.core.codebook import Codebook, Mapping
from carrierwatch.core.model import CanonicalStatus, Location
from carrierwatch.core.timeutil import parse_instant, resolve_local, zone_for
from carrierwatch.transformers.base import (
    CONTAINED_ERRORS,
    Emitter,
    PayloadError,
    TransformContext,
    TransformResult,
    location,
    opt_dict,
    opt_list,
    opt_str,
    parse_json,
    req,
    req_list,
)

__all__ = ["EXPRESS_CODE", "choose_keys", "slug", "split_locality", "transform"]

EXPRESS_CODE = re.compile(r"^[A-Z]{2}$")
_SLUG = re.compile(r"[^a-z0-9]+")
# Linear: every quantifier is bounded (a match attempt reads at most 64 + 8 + 3 characters), and
# an attempt starts only at the first letter of a word. The unbounded ``[A-Za-z .'\-]*?,`` of old
# rescanned the rest of the text from every letter when no comma followed (12.9 s on 32,000
# letters). No city name is longer than 64 characters; a longer run is not read as a city.
_CITY_STATE = re.compile(r"(?<![A-Za-z])([A-Za-z][A-Za-z .'\-]{0,63}?),\s{0,8}([A-Z]{2})\b")
_DELIVERED = CanonicalStatus.DELIVERED.value


def slug(text: str) -> str:
    """Lower-case ``text`` with every run of other characters as one ``-`` (a codebook key part)."""
    return _SLUG.sub("-", text.lower()).strip("-")


def split_locality(locality: str | None, country: str | None) -> tuple[str | None, str | None]:
    """City and (US/CA) state of a DHL ``addressLocality``, dropping street parts.

    The locality is split on commas and `` - ``; the first part without digits is the city (parts
    with digits are house numbers or postal codes and are never kept).
    """
    if not locality or not locality.strip():
        return None, None
    if country in {"US", "CA"}:
        hits = _CITY_STATE.findall(locality)
        if hits:
            city, state = hits[-1]
            city = city.split(" - ")[-1].strip()
            return (city or None), state
    parts = [p.strip() for chunk in locality.split(",") for p in chunk.split(" - ")]
    for part in parts:
        if part and not any(ch.isdigit() for ch in part):
            return part, None
    return None, None


def _instant(value: Any, path: str, country: str | None, region: str | None
             ) -> tuple[int, bool, str]:
    """UTC ms, ambiguity flag and the original string of a DHL timestamp."""
    if not isinstance(value, str) or not value.strip():
        raise PayloadError(path, f"expected a timestamp string, got {value!r:.60}")
    try:
        ms, _exact = parse_instant(value)
    except ValueError:
        raise PayloadError(path, f"unreadable timestamp {value!r:.60}") from None
    if ms is not None:
        return ms, False, value
    zone, exact_zone = zone_for(country, region)
    ms, ambiguous = resolve_local(value, zone, exact_zone=exact_zone)
    return ms, ambiguous, value


def _optional_instant(obj: dict[str, Any] | None, key: str, path: str,
                      country: str | None) -> int | None:
    if obj is None or obj.get(key) in (None, ""):
        return None
    return _instant(obj[key], f"{path}.{key}", country, None)[0]


def _problem(payload: dict[str, Any]) -> str | None:
    """The error message of an RFC 7807 problem response, or None for a tracking payload."""
    if "shipments" in payload or not ({"title", "detail", "status"} & payload.keys()):
        return None
    status = payload.get("status")
    title = payload.get("title") or "error"
    detail = payload.get("detail")
    text = f"DHL API error {status}: {title}"
    if detail and detail != title:
        text += f" ({detail})"
    return text


def transform(raw: bytes, ctx: TransformContext) -> TransformResult:
    """Normalize one DHL Unified tracking response; see the module docstring."""
    emitter = Emitter(raw, ctx)
    with emitter.element("$"):  # a dead letter for the whole payload keeps what came before it
        _payload(emitter, ctx, raw)
    return emitter.result


def _payload(emitter: Emitter, ctx: TransformContext, raw: bytes) -> None:
    payload = parse_json(raw, emitter)
    if not isinstance(payload, dict):
        emitter.dead_letter("$", f"expected a JSON object, got {type(payload).__name__}")
        return
    problem = _problem(payload)
    if problem is not None:
        emitter.dead_letter("$", problem)
        return
    shipments = req_list(payload, "shipments", "$")
    if not shipments:
        emitter.dead_letter("shipments", "no shipments in the response")
    for index, shipment in enumerate(shipments):
        with emitter.element(f"shipments[{index}]"):
            _shipment(emitter, ctx, shipment, f"shipments[{index}]")


def _shipment(emitter: Emitter, ctx: TransformContext, shipment: Any, path: str) -> None:
    tracking = req(shipment, "id", path)
    if isinstance(tracking, bool) or not isinstance(tracking, (str, int)) or not str(tracking).strip():
        raise PayloadError(f"{path}.id", f"expected a tracking number, got {tracking!r:.60}")
    tracking_number = str(tracking).strip()
    service = opt_str(shipment, "service", path)
    service_level = service.lower() if service else None
    default_country = ctx.partner.default_country

    frame = opt_dict(shipment, "estimatedDeliveryTimeFrame", path)
    frame_path = f"{path}.estimatedDeliveryTimeFrame"
    eta_start = _optional_instant(frame, "estimatedFrom", frame_path, default_country)
    eta_end = _optional_instant(frame, "estimatedThrough", frame_path, default_country)
    eta_paths = {"eta_start": f"{frame_path}.estimatedFrom",
                 "eta_end": f"{frame_path}.estimatedThrough"}
    if eta_end is None:
        eta_end = _optional_instant(shipment, "estimatedTimeOfDelivery", path, default_country)
        eta_paths["eta_end"] = f"{path}.estimatedTimeOfDelivery"

    details = opt_dict(shipment, "details", path)
    pod = opt_dict(details, "proofOfDelivery", f"{path}.details")
    signed = bool(pod and (pod.get("signatureUrl") or pod.get("signed")))

    events = opt_list(shipment, "events", path)
    items: list[tuple[Any, str]] = [(e, f"{path}.events[{i}]") for i, e in enumerate(events)]
    latest = opt_dict(shipment, "status", path)
    if latest is not None and not any(
            isinstance(e, dict) and e.get("timestamp") == latest.get("timestamp")
            and e.get("statusCode") == latest.get("statusCode") for e in events):
        items.append((latest, f"{path}.status"))
    if not items:
        raise PayloadError(f"{path}.events", "shipment has neither events nor a status")

    for event, event_path in items:
        try:
            _event(emitter, ctx.codebook, event, event_path, tracking_number=tracking_number,
                   default_country=default_country, eta_start=eta_start, eta_end=eta_end,
                   service_level=service_level, signed=signed, eta_paths=eta_paths)
        except CONTAINED_ERRORS as exc:  # = with emitter.element(event_path), cheaper per event
            emitter.contain(exc, event_path)


class _Reading(NamedTuple):
    """The codebook-independent reading of one DHL event."""

    status_code: str | None
    express: str | None
    keys: tuple[str | None, ...]
    text: str | None
    place: Location | None
    event_time: int
    ambiguous: bool
    local: str


def _read(event: Any, path: str, default_country: str | None) -> _Reading:
    if not isinstance(event, dict):
        raise PayloadError(path, f"expected an object, got {type(event).__name__}")
    status_code = opt_str(event, "statusCode", path)
    express = opt_str(event, "status", path)
    express = express.strip() if express else None
    if express is not None and not EXPRESS_CODE.match(express):
        express = None
    if status_code is None and express is None:
        raise PayloadError(f"{path}.statusCode", "missing required field")
    description = opt_str(event, "description", path) or ""

    address = opt_dict(opt_dict(event, "location", path), "address", f"{path}.location")
    address_path = f"{path}.location.address"
    country = (opt_str(address, "countryCode", address_path) or default_country or "").upper() or None
    city, region = split_locality(opt_str(address, "addressLocality", address_path), country)
    postal = opt_str(address, "postalCode", address_path)
    place: Location | None = location(country, region, city, postal)

    event_time, ambiguous, local = _instant(event.get("timestamp"), f"{path}.timestamp",
                                            country, region)

    keys = (f"express/{express}" if express else None,
            f"{status_code}/{slug(description)}" if status_code and description else None)
    text = f"{status_code}: {description}" if status_code and description else None
    return _Reading(status_code, express, keys, text, place, event_time, ambiguous, local)


def _event(emitter: Emitter, book: Codebook, event: Any, path: str, *, tracking_number: str,
           default_country: str | None, eta_start: int | None, eta_end: int | None,
           service_level: str | None, signed: bool, eta_paths: dict[str, str]) -> None:
    reading = _read(event, path, default_country)
    status_code = reading.status_code
    codes, text_arg, mapping = choose_keys(book, reading.keys, reading.text, status_code)
    delivered = mapping is not None and mapping.status == _DELIVERED
    emitter.event(
        tracking_number=tracking_number,
        raw_code=reading.express or status_code or "",
        event_time=reading.event_time,
        codes=codes,
        text=text_arg,
        timezone_ambiguous=reading.ambiguous,
        event_time_local=reading.local,
        location=reading.place,
        eta_start=eta_start,
        eta_end=eta_end,
        proof_of_delivery="signature" if delivered and signed else None,
        service_level=service_level,
        paths=lambda name: f"{path}.timestamp" if name == "event_time" else eta_paths.get(name),
    )


def choose_keys(book: Codebook, keys: tuple[str | None, ...], text: str | None,
                status_code: str | None
                ) -> tuple[tuple[str | None, ...], str | None, Mapping | None]:
    """Which codebook keys (or text) the Emitter should use: exact keys, then patterns, then
    the bare ``statusCode``; also the mapping that choice resolves to (None when unmapped)."""
    hit = book.lookup(*keys)
    if hit is not None:
        return keys, None, hit
    if text is not None:
        hit = book.match_text(text)
        if hit is not None:
            return (), text, hit
    return (status_code,), None, book.lookup(status_code)
