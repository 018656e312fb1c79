"""AfterShip tracking webhooks → canonical events.

AfterShip posts ``{ts, event, event_id, is_tracking_first_tag, msg}`` where ``msg`` is the whole
Tracking with every checkpoint so far. ``event`` is ``tracking_update``, ``edd_revise`` (a new
estimated delivery date) or ``tracking_pending_time`` (informational): all three carry the same
Tracking and are normalized alike, so an ETA revision reaches the events of the payload. Every
checkpoint becomes one canonical event; a tracking without checkpoints yet becomes one event of
its tag at the tracking's ``created_at`` so the package and its promise are known early. The
``GET /trackings`` answer (``{meta, data: {tracking}}``) is accepted too, for pollers.

Codes
    A checkpoint's ``subtag`` first, then its ``tag`` (``codebooks/aftership.yaml``); ``raw_code``
    is the subtag (or the tag when there is none). The carrier's ``raw_tag`` is not mapped.
Identity
    ``msg.id`` (AfterShip's tracking id) is the discriminator and the shipment id; without it,
    the ``slug`` (carrier) distinguishes the tracking number.
Times
    ``checkpoint_time`` is the checkpoint's local time, with or without an offset. With an offset
    it is exact. Without one it is resolved in the zone of the checkpoint's place
    (``country_iso3``/``country_region`` + ``state``).
    AfterShip repeats a checkpoint when a later copy adds the location, and both copies must give
    the same event id. So copies (same wall-clock time and subtag) share one resolution: the
    instant of a copy with an offset if there is one, else the zone of a copy with a location,
    else the destination's zone as a flagged guess, else the partner's ``default_timezone``
    (flagged; UTC only when the partner has none).
    ``created_at`` is AfterShip's UTC receipt time → ``partner_received_time``.
Promise and ETA
    ``promised_by`` = ``order_promised_delivery_date``; the ETA is ``latest_estimated_delivery``
    (``datetime_min``/``datetime_max`` or ``datetime``), else ``expected_delivery``. A calendar
    date is the whole local day in the destination's zone.
Delivery
    ``proof_of_delivery`` is ``signature`` for subtag ``Delivered_003`` or when ``signed_by`` is
    set; the signer's name is never copied. Attempt numbers are counted over the checkpoints.
Errors
    AfterShip's API error shape (``{"meta": {"code": 4004, …}}``), an unknown webhook event or a
    malformed Tracking → one dead letter naming the field; a checkpoint with a bad field → a dead
    letter for that checkpoint only.

Examples
--------
>>> from carrierwatch.core.codebook import Codebook
>>> from carrierwatch.core.partner import PartnerSpec
>>> from carrierwatch.transformers.base import TransformContext
>>> book = Codebook.from_yaml("version: 1\\npartner: aftership\\ncodes:\\n"
...     "  Delivered_001: {status: delivered, confidence: 1.0}\\n")
>>> ctx = TransformContext(PartnerSpec(id="aftership", display_name="AfterShip",
...                        transformer="aftership"), book, received_time=1_772_712_000_000)
>>> raw = (b'{"event": "tracking_update", "msg": {"id": "a1", "tracking_number": "CW1",'
...        b' "slug": "fedex", "checkpoints": [{"checkpoint_time": "2026-03-02T14:05:00",'
...        b' "tag": "Delivered", "subtag": "Delivered_001", "state": "IL",'
...        b' "country_iso3": "USA"}]}}')
>>> event = transform(raw, ctx).events[0]
>>> event.status, event.event_time, event.timezone_ambiguous
('delivered', 1772481900000, False)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

from carrierwatch.core.model import Location, ProofOfDelivery
from carrierwatch.core.timeutil import parse_instant
from carrierwatch.transformers._aggregators import (
    Draft,
    emit_drafts,
    fallback_zone,
    lookup_status,
    parse_event_time,
    parse_window,
    place_zone,
)
from carrierwatch.transformers.base import (
    CONTAINED_ERRORS,
    Emitter,
    PayloadError,
    TransformContext,
    TransformResult,
    field_paths,
    location,
    opt_dict,
    opt_list,
    opt_str,
    parse_json,
    req_dict,
    req_str,
)

__all__ = ["transform"]

_EVENTS = frozenset({"tracking_update", "edd_revise", "tracking_pending_time"})
_SIGNED_SUBTAG = "Delivered_003"


def transform(raw: bytes, ctx: TransformContext) -> TransformResult:
    """Normalize one AfterShip webhook (or tracking API answer); never raises."""
    emitter = Emitter(raw, ctx)
    try:
        tracking, path = _tracking(parse_json(raw, emitter))
        _emit_tracking(emitter, ctx, tracking, path)
    except PayloadError as exc:
        emitter.dead_letter(exc.path, exc.message)
    return emitter.result


def _tracking(doc: Any) -> tuple[dict[str, Any], str]:
    if not isinstance(doc, dict):
        raise PayloadError("$", f"expected a JSON object, got {type(doc).__name__}")
    meta = doc.get("meta")
    if isinstance(meta, dict) and "msg" not in doc:
        code = meta.get("code")
        if code != 200:
            raise PayloadError("$.meta.code", f"AfterShip API error {code} "
                                              f"{meta.get('type') or ''}: {meta.get('message')}")
        data = req_dict(doc, "data", "$")
        return req_dict(data, "tracking", "$.data"), "$.data.tracking"
    event = req_str(doc, "event", "$")
    if event not in _EVENTS:
        raise PayloadError("$.event", f"unsupported AfterShip webhook event {event!r:.60} "
                                      f"(expected one of {', '.join(sorted(_EVENTS))})")
    return req_dict(doc, "msg", "$"), "$.msg"


@dataclass(slots=True)
class _Checkpoint:
    index: int
    body: dict[str, Any]
    path: str
    time_text: str
    group: tuple[str, str]
    instant: int | None              # set when the time carries an offset
    zone: tuple[str | None, bool]    # the zone of the checkpoint's own place


def _country(obj: dict[str, Any], path: str) -> str | None:
    return opt_str(obj, "country_iso3", path) or opt_str(obj, "country_region", path)


def _emit_tracking(emitter: Emitter, ctx: TransformContext, msg: dict[str, Any],
                   path: str) -> None:
    tracking_number = req_str(msg, "tracking_number", path).strip()
    tracking_id = opt_str(msg, "id", path)
    slug = opt_str(msg, "slug", path)
    dest_country = (opt_str(msg, "destination_country_iso3", path)
                    or opt_str(msg, "destination_country_region", path))
    dest_zone, _ = place_zone(dest_country, opt_str(msg, "destination_state", path))
    window_zone = dest_zone or fallback_zone(ctx)

    promised_by: int | None = None
    eta_start: int | None = None
    eta_end: int | None = None
    promise = msg.get("order_promised_delivery_date")
    if promise:
        with emitter.element(f"{path}.order_promised_delivery_date"):
            promised_by = parse_window(promise, f"{path}.order_promised_delivery_date",
                                       window_zone)[1]
    with emitter.element(f"{path}.latest_estimated_delivery"):
        eta_start, eta_end = _eta(msg, path, window_zone)

    signed = bool(opt_str(msg, "signed_by", path))
    common: dict[str, Any] = {
        "tracking_number": tracking_number,
        "discriminator": tracking_id or slug,
        "shipment_id": tracking_id,
        "promised_by": promised_by,
        "eta_start": eta_start,
        "eta_end": eta_end,
        "service_level": opt_str(msg, "shipment_type", path),
        "paths": {"promised_by": f"{path}.order_promised_delivery_date",
                  "eta_start": f"{path}.latest_estimated_delivery",
                  "eta_end": f"{path}.latest_estimated_delivery"},
    }

    checkpoints: list[_Checkpoint] = []
    raw_checkpoints = opt_list(msg, "checkpoints", path)
    for index, body in enumerate(raw_checkpoints):
        cp_path = f"{path}.checkpoints[{index}]"
        try:
            checkpoints.append(_read_checkpoint(index, body, cp_path))
        except CONTAINED_ERRORS as exc:  # = with emitter.element(cp_path), cheaper per checkpoint
            emitter.contain(exc, cp_path)
    resolved = _resolve_groups(checkpoints, dest_zone or ctx.partner.default_timezone)

    drafts: list[Draft] = []
    for cp in checkpoints:
        try:
            drafts.append(_checkpoint_draft(ctx, cp, resolved[cp.group], common, signed))
        except CONTAINED_ERRORS as exc:  # = with emitter.element(cp.path)
            emitter.contain(exc, cp.path)
    if not raw_checkpoints:
        drafts.append(_tracking_draft(ctx, msg, path, common))
    emit_drafts(emitter, drafts)


def _eta(msg: dict[str, Any], path: str, zone: str) -> tuple[int | None, int | None]:
    led = opt_dict(msg, "latest_estimated_delivery", path)
    if led:
        led_path = f"{path}.latest_estimated_delivery"
        low, high, single = (led.get("datetime_min"), led.get("datetime_max"),
                             led.get("datetime"))
        if high:
            start = None
            if low:
                low_start, low_end = parse_window(low, f"{led_path}.datetime_min", zone)
                start = low_start if low_start is not None else low_end
            return start, parse_window(high, f"{led_path}.datetime_max", zone)[1]
        if single:
            return parse_window(single, f"{led_path}.datetime", zone)
    expected = msg.get("expected_delivery")
    if expected:
        return parse_window(expected, f"{path}.expected_delivery", zone)
    return None, None


class _Reading(NamedTuple):
    """What :func:`_read_checkpoint` takes from a checkpoint (the rest is its place in the
    payload)."""

    time_text: str
    group: tuple[str, str]
    instant: int | None
    zone: tuple[str | None, bool]


class _Details(NamedTuple):
    """What :func:`_checkpoint_draft` takes from a checkpoint, codebook aside."""

    raw_code: str
    codes: tuple[str | None, str | None]
    received: int | None
    location: Location | None


def _read_checkpoint(index: int, body: Any, path: str) -> _Checkpoint:
    reading = _read(body, path)
    return _Checkpoint(index, body, path, reading.time_text, reading.group, reading.instant,
                       reading.zone)


def _read(body: Any, path: str) -> _Reading:
    if not isinstance(body, dict):
        raise PayloadError(path, f"expected an object, got {type(body).__name__}")
    text = req_str(body, "checkpoint_time", path).strip()
    try:
        instant, _ = parse_instant(text)
    except ValueError as exc:
        raise PayloadError(f"{path}.checkpoint_time", f"unreadable time {text!r}: {exc}") from None
    code = opt_str(body, "subtag", path) or req_str(body, "tag", path)
    zone = place_zone(_country(body, path), opt_str(body, "state", path))
    return _Reading(text, (text[:19], code), instant, zone)


def _resolve_groups(checkpoints: list[_Checkpoint], dest_zone: str | None
                    ) -> dict[tuple[str, str], tuple[int, bool]]:
    """One ``(event_time, ambiguous)`` per group of copies of the same checkpoint."""
    best: dict[tuple[str, str], _Checkpoint] = {}
    for cp in checkpoints:
        current = best.get(cp.group)
        if current is None or _rank(cp) > _rank(current):
            best[cp.group] = cp
    resolved: dict[tuple[str, str], tuple[int, bool]] = {}
    for group, cp in best.items():
        if cp.instant is not None:
            resolved[group] = (cp.instant, False)
        elif cp.zone[0] is not None:
            resolved[group] = parse_event_time(cp.time_text, f"{cp.path}.checkpoint_time",
                                               cp.zone[0], cp.zone[1])
        else:  # no copy says where: the destination (else the partner's zone), flagged
            resolved[group] = parse_event_time(cp.time_text, f"{cp.path}.checkpoint_time",
                                               dest_zone, False)
    return resolved


def _rank(cp: _Checkpoint) -> int:
    if cp.instant is not None:
        return 3
    if cp.zone[0] is not None:
        return 2 if cp.zone[1] else 1
    return 0


def _checkpoint_draft(ctx: TransformContext, cp: _Checkpoint, when: tuple[int, bool],
                      common: dict[str, Any], signed: bool) -> Draft:
    body = cp.body
    details = _details(body, cp.path)
    canonical = lookup_status(ctx.codebook, details.codes)
    fields = {**common,
              "raw_code": details.raw_code,
              "codes": details.codes,
              "event_time": when[0],
              "timezone_ambiguous": when[1],
              "event_time_local": cp.time_text,
              "partner_received_time": details.received,
              "location": details.location,
              "paths": field_paths(f"{cp.path}.checkpoint_time",
                                   {**common["paths"],
                                    "partner_received_time": f"{cp.path}.created_at"})}
    if canonical == "delivered":
        subtag = details.codes[0]
        fields["proof_of_delivery"] = (ProofOfDelivery.SIGNATURE.value
                                       if signed or subtag == _SIGNED_SUBTAG else None)
    return Draft(canonical, fields)


def _details(body: dict[str, Any], path: str) -> _Details:
    tag = opt_str(body, "tag", path)
    subtag = opt_str(body, "subtag", path)
    raw_code = subtag or tag or ""
    codes = (subtag, tag)
    received = None
    created = body.get("created_at")
    if created:
        received = parse_event_time(created, f"{path}.created_at", None, False,
                                    naive_is_utc=True)[0]
    return _Details(raw_code, codes, received,
                    location(_country(body, path), opt_str(body, "state", path),
                             opt_str(body, "city", path), opt_str(body, "zip", path)))


def _tracking_draft(ctx: TransformContext, msg: dict[str, Any], path: str,
                    common: dict[str, Any]) -> Draft:
    """The event of a tracking without checkpoints (its current tag, at its creation)."""
    tag = req_str(msg, "tag", path)
    subtag = opt_str(msg, "subtag", path)
    codes = (subtag, tag)
    text = req_str(msg, "created_at", path)
    event_time, ambiguous = parse_event_time(text, f"{path}.created_at", None, False,
                                             naive_is_utc=True)
    fields = {**common,
              "raw_code": subtag or tag,
              "codes": codes,
              "event_time": event_time,
              "timezone_ambiguous": ambiguous,
              "event_time_local": text,
              "paths": field_paths(f"{path}.created_at", common["paths"])}
    return Draft(lookup_status(ctx.codebook, codes), fields)
