"""Shippo ``track_updated`` webhooks → canonical events.

Shippo posts ``{event: "track_updated", test, data}`` where ``data`` is the Track: carrier,
tracking number, ``eta``/``original_eta``, ``servicelevel``, the latest ``tracking_status`` and the
``tracking_history[]`` (oldest first), each a status object ``{status, substatus{code, text,
action_required}, status_details, status_date, location, object_id}``. Every history entry
becomes one canonical event, and ``tracking_status`` too unless it repeats a history entry (same
``object_id``, or same status, substatus and date). A bare Track (the ``GET /tracks`` answer a
poller receives) is accepted too.

Codes
    ``"<STATUS>/<substatus.code>"`` first, then ``"<STATUS>"`` (``codebooks/shippo.yaml``);
    ``raw_code`` is that compound code verbatim. The free text of ``status_details`` is not mapped.
Identity
    The tracking number; the label's ``transaction`` id, when the label was bought through Shippo,
    is the discriminator and shipment id.
Times
    ``status_date`` is UTC (Shippo documents it so); an offset-less value is read as UTC.
Promise and ETA, and Shippo's ETA time-zone bugs
    ``promised_by`` = ``original_eta`` (the first promise), the ETA = ``eta`` (latest estimate).
    Shippo has returned date-only ETAs as ``T00:00:00Z`` (goshippo/shippo-php-client#29), which
    read literally is the evening *before* the promised day in the Americas. Choice made here: a
    midnight-UTC ETA or promise is read as the calendar date it names and becomes the whole day in
    the destination's zone (``address_to``; else the partner's default zone), so ``eta_end`` /
    ``promised_by`` is the end of that local day. Nothing else is flagged: ETAs have no ambiguity
    flag, and a carrier genuinely promising midnight UTC is far rarer than the bug. A FedEx ETA
    whose ``-06:00`` offset Shippo rewrote to ``Z`` (goshippo/shippo-node-client#52) cannot be
    told apart from a correct UTC time and is taken as sent.
Delivery
    Shippo has no signature or proof-of-delivery field: ``proof_of_delivery`` stays empty.
    Attempt numbers are counted over the history.
Test traffic
    Test-mode webhooks (``test: true``) and Shippo's own test tracking numbers (carrier
    ``shippo``: ``SHIPPO_PRE_TRANSIT``, ``SHIPPO_TRANSIT``, ``SHIPPO_DELIVERED``,
    ``SHIPPO_RETURNED``, ``SHIPPO_FAILURE``, ``SHIPPO_UNKNOWN``) are marked ``synthetic``: they are
    not deliveries and stay out of the partner's SLA metrics.
Errors
    Shippo's API error shape (``{"detail": …}``), another webhook event or a malformed Track → one
    dead letter naming the field; a status object with a bad field → a dead letter for that
    entry only; an unreadable ETA → a dead letter for that field while the scans still count.

Examples
--------
>>> from carrierwatch.core.codebook import Codebook
>>> from carrierwatch.core.partner import PartnerSpec
>>> from carrierwatch.transformers.base import TransformContext
>>> book = Codebook.from_yaml("version: 1\\npartner: shippo\\ncodes:\\n"
...     "  DELIVERED: {status: delivered, confidence: 1.0}\\n")
>>> ctx = TransformContext(PartnerSpec(id="shippo", display_name="Shippo",
...                        transformer="shippo"), book, received_time=1_772_712_000_000)
>>> raw = (b'{"event": "track_updated", "test": false, "data": {"carrier": "usps",'
...        b' "tracking_number": "9205", "address_to": {"state": "NY", "country": "US"},'
...        b' "eta": "2026-03-05T00:00:00Z", "tracking_status": {"status": "DELIVERED",'
...        b' "status_date": "2026-03-04T19:05:00Z", "object_id": "s1"}}}')
>>> event = transform(raw, ctx).events[0]
>>> event.status, event.eta_end  # end of 2026-03-05 in New York, not midnight UTC
('delivered', 1772773199999)
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

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

__all__ = ["SHIPPO_TEST_NUMBERS", "transform"]

SHIPPO_TEST_NUMBERS = frozenset({
    "SHIPPO_PRE_TRANSIT", "SHIPPO_TRANSIT", "SHIPPO_DELIVERED", "SHIPPO_RETURNED",
    "SHIPPO_FAILURE", "SHIPPO_UNKNOWN",
})
_TEST_CARRIER = "shippo"


def transform(raw: bytes, ctx: TransformContext) -> TransformResult:
    """Normalize one Shippo ``track_updated`` webhook (or bare Track); never raises."""
    emitter = Emitter(raw, ctx)
    try:
        track, path, test = _track(parse_json(raw, emitter))
        _emit_track(emitter, ctx, track, path, test)
    except PayloadError as exc:
        emitter.dead_letter(exc.path, exc.message)
    return emitter.result


def _track(doc: Any) -> tuple[dict[str, Any], str, bool]:
    if not isinstance(doc, dict):
        raise PayloadError("$", f"expected a JSON object, got {type(doc).__name__}")
    if "event" not in doc and "data" not in doc:
        if "tracking_number" in doc and ("tracking_status" in doc or "tracking_history" in doc):
            return doc, "$", doc.get("test") is True
        if "detail" in doc:
            raise PayloadError("$.detail", f"Shippo API error: {doc['detail']!s:.200}")
        raise PayloadError("$", "not a Shippo webhook: expected event and data")
    event = req_str(doc, "event", "$")
    if event != "track_updated":
        raise PayloadError("$.event", f"unsupported Shippo webhook event {event!r:.60} "
                                      "(expected track_updated)")
    data = req_dict(doc, "data", "$")
    return data, "$.data", doc.get("test") is True or data.get("test") is True


def _emit_track(emitter: Emitter, ctx: TransformContext, track: dict[str, Any], path: str,
                test: bool) -> None:
    tracking_number = req_str(track, "tracking_number", path).strip()
    carrier = opt_str(track, "carrier", path)
    transaction = opt_str(track, "transaction", path)
    address_to = opt_dict(track, "address_to", path) or {}
    to_path = f"{path}.address_to"
    zone = (place_zone(opt_str(address_to, "country", to_path),
                       opt_str(address_to, "state", to_path))[0] or fallback_zone(ctx))

    promised_by: int | None = None
    eta_start: int | None = None
    eta_end: int | None = None
    if track.get("original_eta"):
        with emitter.element(f"{path}.original_eta"):
            promised_by = parse_window(track["original_eta"], f"{path}.original_eta", zone,
                                       midnight_utc_is_date=True)[1]
    if track.get("eta"):
        with emitter.element(f"{path}.eta"):
            eta_start, eta_end = parse_window(track["eta"], f"{path}.eta", zone,
                                              midnight_utc_is_date=True)
    servicelevel = opt_dict(track, "servicelevel", path) or {}
    common: dict[str, Any] = {
        "tracking_number": tracking_number,
        "discriminator": transaction,
        "shipment_id": transaction,
        "promised_by": promised_by,
        "eta_start": eta_start,
        "eta_end": eta_end,
        "service_level": opt_str(servicelevel, "token", f"{path}.servicelevel"),
        "paths": {"promised_by": f"{path}.original_eta", "eta_start": f"{path}.eta",
                  "eta_end": f"{path}.eta"},
    }

    entries: list[tuple[str, Any]] = [
        (f"{path}.tracking_history[{i}]", entry)
        for i, entry in enumerate(opt_list(track, "tracking_history", path))
    ]
    latest = track.get("tracking_status")
    if latest is not None:
        if not any(_same_status(latest, entry) for _, entry in entries):
            entries.append((f"{path}.tracking_status", latest))
    elif not entries:
        raise PayloadError(f"{path}.tracking_status", "missing required field "
                                                      "(and tracking_history is empty)")
    drafts: list[Draft] = []
    for entry_path, entry in entries:
        try:
            drafts.append(_status_draft(ctx, entry, entry_path, common))
        except CONTAINED_ERRORS as exc:  # = with emitter.element(entry_path), cheaper per entry
            emitter.contain(exc, entry_path)
    before = len(emitter.result.events)
    emit_drafts(emitter, drafts)
    if test or (carrier or "").lower() == _TEST_CARRIER or tracking_number in SHIPPO_TEST_NUMBERS:
        events = emitter.result.events
        events[before:] = [replace(e, synthetic=True) for e in events[before:]]


def _substatus_code(entry: dict[str, Any]) -> object:
    sub = entry.get("substatus")
    return sub.get("code") if isinstance(sub, dict) else None


def _same_status(latest: Any, entry: Any) -> bool:
    """Whether ``tracking_status`` repeats a history entry."""
    if not isinstance(latest, dict) or not isinstance(entry, dict):
        return False
    if latest.get("object_id") and entry.get("object_id"):
        return bool(latest["object_id"] == entry["object_id"])
    return bool(latest.get("status") == entry.get("status")
                and _substatus_code(latest) == _substatus_code(entry)
                and latest.get("status_date") == entry.get("status_date"))


def _status_draft(ctx: TransformContext, entry: Any, path: str, common: dict[str, Any]) -> Draft:
    if not isinstance(entry, dict):
        raise PayloadError(path, f"expected an object, got {type(entry).__name__}")
    status = req_str(entry, "status", path).strip()
    substatus = opt_dict(entry, "substatus", path)
    code = opt_str(substatus, "code", f"{path}.substatus") if substatus else None
    raw_code = f"{status}/{code}" if code else status
    codes = (raw_code, status)
    text = req_str(entry, "status_date", path)
    event_time, ambiguous = parse_event_time(text, f"{path}.status_date", None, False,
                                             naive_is_utc=True)
    where = opt_dict(entry, "location", path) or {}
    loc_path = f"{path}.location"
    fields = {**common,
              "raw_code": raw_code,
              "codes": codes,
              "event_time": event_time,
              "timezone_ambiguous": ambiguous,
              "event_time_local": text,
              "location": location(opt_str(where, "country", loc_path),
                                   opt_str(where, "state", loc_path),
                                   opt_str(where, "city", loc_path),
                                   opt_str(where, "zip", loc_path)),
              "paths": field_paths(f"{path}.status_date", common["paths"])}
    return Draft(lookup_status(ctx.codebook, codes), fields)
