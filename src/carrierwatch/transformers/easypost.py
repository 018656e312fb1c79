"""EasyPost tracker webhooks → canonical events.

EasyPost posts an ``Event`` whose ``description`` is ``tracker.created`` or ``tracker.updated`` and
whose ``result`` is the whole ``Tracker``: current ``status``/``status_detail``, package-level
promise and estimate fields, and the full history in ``tracking_details[]`` (oldest first, but not
guaranteed). Every tracking detail becomes one canonical event; a tracker without any detail yet
becomes one event of its current status at the tracker's ``created_at`` (stable across webhooks,
so repeats collapse) so the package and its promise are known before the first scan. A bare
``Tracker`` (the ``GET /trackers/{id}`` answer a poller receives) is accepted too.

Codes
    ``"<status>/<status_detail>"`` first, then ``"<status>"`` (``codebooks/easypost.yaml``).
    ``raw_code`` is the detail's ``status/status_detail`` verbatim (``status`` when there is no
    detail); the carrier's own code (``carrier_code``) is not used for mapping.
Identity
    Tracking codes are recycled by carriers, so the tracker id (``trk_…``) is the discriminator and
    the shipment id.
Times
    ``datetime`` carries the scan's local offset when EasyPost knows the location and is UTC
    otherwise; UTC (``Z``) and offset strings are exact. An offset-less string is resolved in the
    zone of its ``tracking_location`` and flagged ``timezone_ambiguous`` when that zone is a guess
    (or missing: read as UTC, which is EasyPost's documented default) or falls in a DST fold/gap.
Promise and ETA
    ``promised_by`` = ``carrier_detail.guaranteed_delivery_date``. The ETA is
    ``carrier_detail.est_delivery_date_local`` (+ ``est_delivery_time_local``) in the destination's
    zone when present (a date alone is the whole local day), else ``est_delivery_date``.
Delivery
    ``proof_of_delivery`` is ``signature`` when ``signed_by`` is set; the signer's name is never
    copied. Attempt numbers are counted over the history (``emit_drafts``).
Test mode
    Events of test-mode trackers (``mode: test``) are marked ``synthetic``: they are not real
    deliveries and must stay out of the partner's SLA metrics.
Errors
    ``{"error": {"code": …}}`` (EasyPost's API error shape), an envelope that is not a tracker
    event, or a result that is not a ``Tracker`` → one dead letter naming the field; a tracking
    detail with a bad field → a dead letter for that detail only; an unreadable promise or
    estimate → a dead letter for that field while the scans still produce events.

Examples
--------
>>> from carrierwatch.core.codebook import Codebook
>>> from carrierwatch.core.partner import PartnerSpec
>>> from carrierwatch.transformers.base import TransformContext
>>> book = Codebook.from_yaml("version: 1\\npartner: easypost\\ncodes:\\n"
...     "  delivered: {status: delivered, confidence: 1.0}\\n")
>>> ctx = TransformContext(PartnerSpec(id="easypost", display_name="EasyPost",
...                        transformer="easypost"), book, received_time=1_772_712_000_000)
>>> raw = (b'{"object": "Event", "description": "tracker.updated", "result": {"object": "Tracker",'
...        b' "id": "trk_1", "tracking_code": "EZ4000000004", "status": "delivered",'
...        b' "tracking_details": [{"status": "delivered", "datetime": "2026-03-02T14:05:00-06:00",'
...        b' "tracking_location": {"city": "MEMPHIS", "state": "TN", "country": "US"}}]}}')
>>> event = transform(raw, ctx).events[0]
>>> event.status, event.event_time, event.package_id
('delivered', 1772481900000, 'easypost:EZ4000000004:trk_1')
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, NamedTuple

from carrierwatch.core.model import Location, ProofOfDelivery
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

_TRACKER_EVENTS = frozenset({"tracker.created", "tracker.updated"})


def transform(raw: bytes, ctx: TransformContext) -> TransformResult:
    """Normalize one EasyPost webhook ``Event`` (or bare ``Tracker``); never raises."""
    emitter = Emitter(raw, ctx)
    try:
        tracker, path = _tracker(parse_json(raw, emitter))
        _emit_tracker(emitter, ctx, tracker, path)
    except PayloadError as exc:
        emitter.dead_letter(exc.path, exc.message)
    return emitter.result


def _tracker(doc: Any) -> tuple[dict[str, Any], str]:
    """The Tracker object of a payload and its path; a PayloadError for anything else."""
    if not isinstance(doc, dict):
        raise PayloadError("$", f"expected a JSON object, got {type(doc).__name__}")
    if "error" in doc:
        error = doc["error"]
        if isinstance(error, dict):
            listed = error.get("errors") or []
            details = [e.get("message") if isinstance(e, dict) else str(e)
                       for e in (listed if isinstance(listed, list) else [listed])]
            extra = f" ({'; '.join(str(d) for d in details if d)})" if any(details) else ""
            raise PayloadError("$.error.code",
                               f"EasyPost API error {error.get('code')}: "
                               f"{error.get('message')}{extra}")
        raise PayloadError("$.error", f"EasyPost API error: {error!r:.200}")
    if doc.get("object") == "Tracker":
        return doc, "$"
    obj = doc.get("object")
    if obj is not None and obj != "Event":
        raise PayloadError("$.object", f"expected an EasyPost Event or Tracker, got {obj!r:.60}")
    description = req_str(doc, "description", "$")
    if description not in _TRACKER_EVENTS:
        raise PayloadError("$.description",
                           f"not a tracker event: {description!r:.60} (expected "
                           "tracker.created or tracker.updated)")
    result = req_dict(doc, "result", "$")
    if result.get("object") != "Tracker":
        raise PayloadError("$.result.object",
                           f"expected a Tracker, got {result.get('object')!r:.60}")
    return result, "$.result"


def _emit_tracker(emitter: Emitter, ctx: TransformContext, tracker: dict[str, Any],
                  path: str) -> None:
    tracking_number = req_str(tracker, "tracking_code", path).strip()
    tracker_id = req_str(tracker, "id", path).strip()
    carrier_detail = opt_dict(tracker, "carrier_detail", path) or {}
    cd_path = f"{path}.carrier_detail"
    destination = opt_dict(carrier_detail, "destination_tracking_location", cd_path) or {}
    dest_zone = place_zone(opt_str(destination, "country", cd_path),
                           opt_str(destination, "state", cd_path))[0] or fallback_zone(ctx)

    # A bad promise or estimate is dead-lettered on its own; the scans still count.
    promised_by: int | None = None
    eta_start: int | None = None
    eta_end: int | None = None
    guaranteed = carrier_detail.get("guaranteed_delivery_date")
    if guaranteed:
        with emitter.element(f"{cd_path}.guaranteed_delivery_date"):
            promised_by = parse_window(guaranteed, f"{cd_path}.guaranteed_delivery_date",
                                       dest_zone)[1]
    with emitter.element(f"{path}.est_delivery_date"):
        eta_start, eta_end = _eta(tracker, carrier_detail, path, dest_zone)
    service_level = opt_str(carrier_detail, "service", cd_path)
    signed = bool(opt_str(tracker, "signed_by", path))
    common: dict[str, Any] = {
        "tracking_number": tracking_number,
        "discriminator": tracker_id,
        "shipment_id": tracker_id,
        "promised_by": promised_by,
        "eta_start": eta_start,
        "eta_end": eta_end,
        "service_level": service_level,
        "paths": {"promised_by": f"{cd_path}.guaranteed_delivery_date",
                  "eta_start": f"{path}.est_delivery_date",
                  "eta_end": f"{path}.est_delivery_date"},
    }

    drafts: list[Draft] = []
    details = opt_list(tracker, "tracking_details", path)
    for index, detail in enumerate(details):
        detail_path = f"{path}.tracking_details[{index}]"
        try:
            drafts.append(_detail_draft(ctx, detail, detail_path, common, signed))
        except CONTAINED_ERRORS as exc:  # = with emitter.element(detail_path), cheaper per detail
            emitter.contain(exc, detail_path)
    if not details:
        drafts.append(_tracker_draft(ctx, tracker, path, common))

    before = len(emitter.result.events)
    emit_drafts(emitter, drafts)
    if tracker.get("mode") == "test":
        events = emitter.result.events
        events[before:] = [replace(e, synthetic=True) for e in events[before:]]


def _eta(tracker: dict[str, Any], carrier_detail: dict[str, Any], path: str,
         dest_zone: str) -> tuple[int | None, int | None]:
    cd_path = f"{path}.carrier_detail"
    local_date = opt_str(carrier_detail, "est_delivery_date_local", cd_path)
    if local_date:
        local_time = opt_str(carrier_detail, "est_delivery_time_local", cd_path)
        if local_time:
            text = f"{local_date}T{local_time}"
            return parse_window(text, f"{cd_path}.est_delivery_time_local", dest_zone)
        return parse_window(local_date, f"{cd_path}.est_delivery_date_local", dest_zone)
    est = tracker.get("est_delivery_date")
    if est:
        return parse_window(est, f"{path}.est_delivery_date", dest_zone)
    return None, None


def _codes(status: str, status_detail: str | None) -> tuple[str, tuple[str | None, ...]]:
    raw_code = f"{status}/{status_detail}" if status_detail else status
    return raw_code, (raw_code, status)


class _Detail(NamedTuple):
    """The codebook-independent reading of one tracking detail."""

    raw_code: str
    codes: tuple[str | None, ...]
    event_time: int
    ambiguous: bool
    local_text: str
    location: Location | None


def _detail(detail: Any, path: str) -> _Detail:
    if not isinstance(detail, dict):
        raise PayloadError(path, f"expected an object, got {type(detail).__name__}")
    status = req_str(detail, "status", path).strip()
    status_detail = opt_str(detail, "status_detail", path)
    raw_code, codes = _codes(status, status_detail)
    where = opt_dict(detail, "tracking_location", path) or {}
    loc_path = f"{path}.tracking_location"
    country = opt_str(where, "country", loc_path)
    state = opt_str(where, "state", loc_path)
    zone, exact = place_zone(country, state)
    local_text = req_str(detail, "datetime", path)
    event_time, ambiguous = parse_event_time(local_text, f"{path}.datetime", zone, exact)
    return _Detail(raw_code, codes, event_time, ambiguous, local_text,
                   location(country, state, opt_str(where, "city", loc_path),
                            opt_str(where, "zip", loc_path)))


def _detail_draft(ctx: TransformContext, detail: Any, path: str, common: dict[str, Any],
                  signed: bool) -> Draft:
    parsed = _detail(detail, path)
    canonical = lookup_status(ctx.codebook, parsed.codes)
    fields = {**common,
              "raw_code": parsed.raw_code,
              "codes": parsed.codes,
              "event_time": parsed.event_time,
              "timezone_ambiguous": parsed.ambiguous,
              "event_time_local": parsed.local_text,
              "location": parsed.location,
              "paths": field_paths(f"{path}.datetime", common["paths"])}
    if canonical == "delivered":
        fields["proof_of_delivery"] = ProofOfDelivery.SIGNATURE.value if signed else None
    return Draft(canonical, fields)


def _tracker_draft(ctx: TransformContext, tracker: dict[str, Any], path: str,
                   common: dict[str, Any]) -> Draft:
    """The event of a tracker that has no tracking detail yet (its current status)."""
    status = req_str(tracker, "status", path).strip()
    raw_code, codes = _codes(status, opt_str(tracker, "status_detail", path))
    # created_at, not updated_at: every webhook of a silent tracker must give the same event.
    key = "created_at"
    local_text = req_str(tracker, key, path)
    event_time, ambiguous = parse_event_time(local_text, f"{path}.{key}", None, False,
                                             naive_is_utc=True)
    fields = {**common,
              "raw_code": raw_code,
              "codes": codes,
              "event_time": event_time,
              "timezone_ambiguous": ambiguous,
              "event_time_local": local_text,
              "paths": field_paths(f"{path}.{key}", common["paths"])}
    return Draft(lookup_status(ctx.codebook, codes), fields)
