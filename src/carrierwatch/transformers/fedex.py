"""FedEx Track API v1 (and Tracking Webhook) payload → canonical events.

The payload is ``{transactionId, output: {completeTrackResults: [{trackingNumber,
trackResults: [...]}]}}``; the Tracking Webhook pushes the same ``output`` object (plus
``outputMetaData``). Every ``trackResult`` is one shipment: FedEx may return *two* shipments for one
tracking number (numbers are reused), told apart by ``trackingNumberInfo.trackingNumberUniqueId``,
which is therefore both the package discriminator and the ``shipment_id``.

How the fields are read:

* ``scanEvents[]`` → one event each. The codebook key is ``<eventType>/<exceptionCode>`` with
  ``<eventType>`` as fallback, so a ``DE`` with exception ``07`` (refused) and one with ``08``
  (recipient not in) carry different reasons. ``raw_code`` is that key, verbatim.
* ``date`` is ISO 8601 with a UTC offset (exact). A date without an offset is resolved in the zone of
  ``scanLocation`` (``timezone_ambiguous`` when the zone is a guess or the time is in a DST fold/gap).
* ``dateAndTimes[]``: ``COMMITMENT`` → ``promised_by`` on every event of the shipment (the promise is
  a property of the shipment); ``ESTIMATED_DELIVERY`` and ``estimatedDeliveryTimeWindow.window`` →
  ``eta_start``/``eta_end`` on the newest event only (an estimate is only known to be current as of
  the newest scan; older scans keep the estimate they were sent with). Dates without a time mean the
  end of that day (start for a window's ``begins``) in the destination's zone.
* Attempts: failed-delivery scans are numbered in time order (two copies of one scan share a
  number); the delivered scan gets ``deliveryDetails.deliveryAttempts`` when positive, else
  attempts + 1. ``availableImages`` → proof of delivery (``SIGNATURE_PROOF_OF_DELIVERY`` →
  signature, a picture proof → photo); a signer's name is only tested for presence, never copied.
* ``serviceDetail.type`` → ``service_level`` (the contract's ``transit_days`` keys).
* Errors: a whole-response ``{errors: [{code, message}]}`` is one dead letter naming FedEx's error
  code; a ``trackResult`` with ``error`` (``TRACKING.TRACKINGNUMBER.NOTFOUND``) is a dead letter for
  that element while the other results still produce events; one unreadable scan is a dead letter
  for that scan only.

FedEx sends two "delivered" notices with the same timestamp when both a signature and a picture proof
apply; they map to the same status and time and so to the same ``event_id`` (deduplicated downstream).

Examples
--------
>>> from carrierwatch.core.codebook import Codebook
>>> from carrierwatch.core.partner import PartnerSpec
>>> book = Codebook.from_yaml("version: 1\\npartner: fedex\\ncodes:\\n"
...                           "  PU: {status: picked_up, confidence: 1.0}\\n")
>>> ctx = TransformContext(PartnerSpec(id="fedex", display_name="FedEx", transformer="fedex"),
...                        book, received_time=1_772_712_000_000)
>>> raw = (b'{"output": {"completeTrackResults": [{"trackResults": [{"trackingNumberInfo": '
...        b'{"trackingNumber": "794600000011", "trackingNumberUniqueId": "12026~794600000011~FDEG"},'
...        b' "scanEvents": [{"date": "2026-03-02T14:05:00-06:00", "eventType": "PU"}]}]}]}}')
>>> event = transform(raw, ctx).events[0]
>>> event.package_id, event.status, event.event_time
('fedex:794600000011:12026~794600000011~FDEG', 'picked_up', 1772481900000)
>>> transform(b'{"errors": [{"code": "TRACKING.TRACKINGNUMBER.EMPTY", "message": "Missing"}]}',
...           ctx).dead_letters[0].error
'FedEx API error TRACKING.TRACKINGNUMBER.EMPTY: Missing'
"""

from __future__ import annotations

from typing import Any

from carrierwatch.core.model import CanonicalStatus, ProofOfDelivery
from carrierwatch.core.timeutil import parse_instant, parse_naive, resolve_local, zone_for
from carrierwatch.transformers.base import (
    Emitter,
    ParsedScan,
    PayloadError,
    Promise,
    TransformContext,
    TransformResult,
    count,
    location,
    opt_dict,
    opt_list,
    opt_str,
    parse_each,
    parse_json,
    provider_error,
    req_dict,
    req_list,
    req_str,
    scan_paths,
    zone_of_newest_scan,
)

__all__ = ["proof_of_delivery", "scan_keys", "transform"]

_ATTEMPTED = CanonicalStatus.DELIVERY_ATTEMPTED.value
_DELIVERED = CanonicalStatus.DELIVERED.value
_SIGNATURE_IMAGE = "SIGNATURE_PROOF_OF_DELIVERY"






def scan_keys(event_type: str, exception_code: str | None) -> tuple[str, tuple[str, ...]]:
    """The raw code and the codebook keys (most specific first) of one FedEx scan.

    >>> scan_keys("DE", "08")
    ('DE/08', ('DE/08', 'DE'))
    >>> scan_keys("pu", " ")
    ('PU', ('PU',))
    """
    event_type = event_type.strip().upper()
    code = (exception_code or "").strip()
    if code:
        specific = f"{event_type}/{code}"
        return specific, (specific, event_type)
    return event_type, (event_type,)


def proof_of_delivery(image_types: list[str], signed: bool) -> str | None:
    """The proof-of-delivery kind from ``availableImages[].type`` and whether someone signed.

    >>> proof_of_delivery(["BILL_OF_LADING", "SIGNATURE_PROOF_OF_DELIVERY"], False)
    'signature'
    >>> proof_of_delivery(["PICTURE_PROOF_OF_DELIVERY"], False)
    'photo'
    >>> proof_of_delivery([], True)
    'signature'
    >>> proof_of_delivery(["BILL_OF_LADING"], False) is None
    True
    """
    kinds = {t.strip().upper() for t in image_types}
    if _SIGNATURE_IMAGE in kinds:
        return ProofOfDelivery.SIGNATURE.value
    if any("PICTURE" in k or "PHOTO" in k for k in kinds):
        return ProofOfDelivery.PHOTO.value
    if signed:
        return ProofOfDelivery.SIGNATURE.value
    return None


def transform(raw: bytes, ctx: TransformContext) -> TransformResult:
    """Normalize one FedEx Track API response or webhook push; never raises for bad input."""
    emitter = Emitter(raw, ctx)
    with emitter.element("$"):
        _payload(parse_json(raw, emitter), emitter, ctx)
    return emitter.result


def _payload(root: Any, emitter: Emitter, ctx: TransformContext) -> None:
    if not isinstance(root, dict):
        raise PayloadError("$", f"expected a JSON object, got {type(root).__name__}")
    if root.get("errors") is not None and root.get("output") is None:
        raise provider_error(root["errors"], "$.errors", "FedEx API error")
    output = req_dict(root, "output", "$")
    results = req_list(output, "completeTrackResults", "$.output")
    if not results:  # one result per tracking number asked: none is a broken answer
        raise PayloadError("$.output.completeTrackResults", "no track results in the response")
    for i, complete in enumerate(results):
        cpath = f"$.output.completeTrackResults[{i}]"
        with emitter.element(cpath):
            track_results = req_list(complete, "trackResults", cpath)
            if not track_results:
                raise PayloadError(f"{cpath}.trackResults", "no track results for this number")
            for j, track_result in enumerate(track_results):
                tpath = f"{cpath}.trackResults[{j}]"
                with emitter.element(tpath):
                    _track_result(track_result, tpath, emitter, ctx)




def _track_result(track_result: Any, tpath: str, emitter: Emitter, ctx: TransformContext) -> None:
    if not isinstance(track_result, dict):
        raise PayloadError(tpath, f"expected an object, got {type(track_result).__name__}")
    if track_result.get("error") is not None:
        raise provider_error(track_result["error"], f"{tpath}.error", "FedEx track error")
    ipath = f"{tpath}.trackingNumberInfo"
    info = req_dict(track_result, "trackingNumberInfo", tpath)
    tracking_number = req_str(info, "trackingNumber", ipath).strip()
    unique_id = opt_str(info, "trackingNumberUniqueId", ipath)
    service_level = emitter.guarded(f"{tpath}.serviceDetail", None, lambda: opt_str(
        opt_dict(track_result, "serviceDetail", tpath), "type", f"{tpath}.serviceDetail"))
    default_country = ctx.partner.default_country

    # scanEvents is required (missing or renamed is schema drift, a dead letter); an empty list
    # is what FedEx sends for a number known before its first scan: counted as empty.
    scan_list = req_list(track_result, "scanEvents", tpath)
    if not scan_list:
        emitter.note_empty(f"{tpath}.scanEvents")
    scans = parse_each(emitter, enumerate(scan_list),
                       f"{tpath}.scanEvents", default_country, _scan)
    scans.sort(key=lambda s: s.time)

    zone, exact = _destination_zone(track_result, tpath, default_country, scans)
    promise = _promise(track_result, tpath, emitter, zone, exact)
    reported_attempts = emitter.guarded(f"{tpath}.deliveryDetails", None,
                                 lambda: _reported_attempts(track_result, tpath))
    proof = emitter.guarded(f"{tpath}.availableImages", None,
                     lambda: _proof(track_result, tpath))

    book = ctx.codebook
    attempt_of_time: dict[int, int] = {}
    newest = len(scans) - 1
    for n, scan in enumerate(scans):
        mapping = book.lookup(*scan.codes)
        status = mapping.status if mapping is not None else None
        attempt: int | None = None
        scan_proof: str | None = None
        if status == _ATTEMPTED:
            attempt = attempt_of_time.setdefault(scan.time, len(attempt_of_time) + 1)
        elif status == _DELIVERED:
            attempt = reported_attempts or len(attempt_of_time) + 1
            scan_proof = proof
        latest = n == newest
        emitter.event(
            tracking_number=tracking_number,
            raw_code=scan.raw_code,
            event_time=scan.time,
            codes=scan.codes,
            discriminator=unique_id,
            shipment_id=unique_id,
            timezone_ambiguous=scan.ambiguous,
            event_time_local=scan.local,
            location=scan.location,
            promised_by=promise.promised_by,
            eta_start=promise.eta_start if latest else None,
            eta_end=promise.eta_end if latest else None,
            attempt_number=attempt,
            proof_of_delivery=scan_proof,
            service_level=service_level,
            paths=scan_paths(scan, promise),
        )


def _scan(scan: Any, spath: str, default_country: str | None) -> ParsedScan:
    if not isinstance(scan, dict):
        raise PayloadError(spath, f"expected an object, got {type(scan).__name__}")
    raw_code, codes = scan_keys(req_str(scan, "eventType", spath),
                                opt_str(scan, "exceptionCode", spath))
    date = req_str(scan, "date", spath).strip()
    lpath = f"{spath}.scanLocation"
    where = opt_dict(scan, "scanLocation", spath)
    country = opt_str(where, "countryCode", lpath) or (default_country if where else None)
    region = opt_str(where, "stateOrProvinceCode", lpath)
    try:
        ms, _ = parse_instant(date)
    except ValueError:
        raise PayloadError(f"{spath}.date", f"unreadable date {date!r:.60}") from None
    if ms is not None:
        ambiguous = False
    else:
        zone, zone_exact = zone_for(country, region)
        ms, ambiguous = resolve_local(date, zone, exact_zone=zone_exact)
    return ParsedScan(
        time=ms,
        ambiguous=ambiguous,
        local=date,
        raw_code=raw_code,
        codes=codes,
        location=location(country, region, opt_str(where, "city", lpath),
                          opt_str(where, "postalCode", lpath)),
        time_path=f"{spath}.date",
    )


def _destination_zone(track_result: dict[str, Any], tpath: str, default_country: str | None,
                      scans: list[ParsedScan]) -> tuple[str | None, bool]:
    """The destination's zone for times FedEx sends without an offset, and whether it is sure."""
    candidates = (
        ("recipientInformation", "address"),
        ("destinationLocation", "locationContactAndAddress", "address"),
        ("lastUpdatedDestinationAddress",),
    )
    for keys in candidates:
        node: Any = track_result
        for key in keys:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict):
            country = node.get("countryCode") or default_country
            region = node.get("stateOrProvinceCode")
            zone, exact = zone_for(country if isinstance(country, str) else None,
                                   region if isinstance(region, str) else None)
            if zone is not None:
                return zone, exact
    # No destination address: the newest scan's place is a guess of where the package ends.
    return zone_of_newest_scan(scans)


def _instant(text: str, path: str, zone: str | None, exact: bool, *, end_of_day: bool
             ) -> tuple[int, bool]:
    """UTC ms of a FedEx date or date-time and whether it is ambiguous."""
    text = text.strip()
    try:
        ms, _ = parse_instant(text)
        if ms is not None:
            return ms, False
        naive = parse_naive(text)
    except ValueError:
        raise PayloadError(path, f"unreadable date {text!r:.60}") from None
    if end_of_day and len(text) == 10:
        naive = naive.replace(hour=23, minute=59, second=59)
    return resolve_local(naive, zone, exact_zone=exact)


def _promise(track_result: dict[str, Any], tpath: str, emitter: Emitter, zone: str | None,
             exact: bool) -> Promise:
    promised: tuple[int, bool] | None = None
    estimated: tuple[int, bool] | None = None
    paths: dict[str, str] = {}
    estimated_path = ""
    for n, entry in enumerate(opt_list(track_result, "dateAndTimes", tpath)):
        epath = f"{tpath}.dateAndTimes[{n}]"
        with emitter.element(epath):
            kind = req_str(entry, "type", epath).strip().upper()
            if kind == "COMMITMENT":
                promised = _instant(req_str(entry, "dateTime", epath), f"{epath}.dateTime",
                                    zone, exact, end_of_day=True)
                paths["promised_by"] = f"{epath}.dateTime"
            elif kind == "ESTIMATED_DELIVERY":
                estimated = _instant(req_str(entry, "dateTime", epath), f"{epath}.dateTime",
                                     zone, exact, end_of_day=True)
                estimated_path = f"{epath}.dateTime"
    begins: tuple[int, bool] | None = None
    ends: tuple[int, bool] | None = None
    wpath = f"{tpath}.estimatedDeliveryTimeWindow.window"
    with emitter.element(wpath):
        window = opt_dict(opt_dict(track_result, "estimatedDeliveryTimeWindow", tpath), "window",
                          f"{tpath}.estimatedDeliveryTimeWindow")
        start_text = opt_str(window, "begins", wpath)
        end_text = opt_str(window, "ends", wpath)
        if start_text:
            begins = _instant(start_text, f"{wpath}.begins", zone, exact, end_of_day=False)
            paths["eta_start"] = f"{wpath}.begins"
        if end_text:
            ends = _instant(end_text, f"{wpath}.ends", zone, exact, end_of_day=True)
            paths["eta_end"] = f"{wpath}.ends"
    eta_end = ends or estimated
    if ends is None and estimated is not None:
        paths["eta_end"] = estimated_path
    return Promise(
        promised_by=promised[0] if promised else None,
        eta_start=begins[0] if begins else None,
        eta_end=eta_end[0] if eta_end else None,
        paths=paths,
    )


def _reported_attempts(track_result: dict[str, Any], tpath: str) -> int | None:
    details = opt_dict(track_result, "deliveryDetails", tpath)
    value = opt_str(details, "deliveryAttempts", f"{tpath}.deliveryDetails")
    if value is None:
        return None
    return count(value, f"{tpath}.deliveryDetails.deliveryAttempts") or None


def _proof(track_result: dict[str, Any], tpath: str) -> str | None:
    types = []
    for n, image in enumerate(opt_list(track_result, "availableImages", tpath)):
        kind = opt_str(image, "type", f"{tpath}.availableImages[{n}]")
        if kind:
            types.append(kind)
    details = opt_dict(track_result, "deliveryDetails", tpath)
    signed = bool(isinstance(details, dict) and isinstance(details.get("signedByName"), str)
                  and details["signedByName"].strip())
    return proof_of_delivery(types, signed)
