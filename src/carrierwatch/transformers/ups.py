"""UPS Track API v1 payload → canonical events.

The payload is ``{trackResponse: {shipment: [{inquiryNumber, package: [...], warnings?}]}}``.
Each package becomes the events of its ``activity[]`` list, which UPS sends newest first.

How the fields are read:

* Codes: UPS activity type ``I`` means "in transit *or* out for delivery", so the code decides and
  the type is a fallback. Codebook keys, most specific first: ``<type>/<code>`` (``X/5``,
  ``I/DS``), ``*/<code>`` (a movement code whatever its type: ``*/OT``), ``<type>`` (``X``).
  ``raw_code`` is ``<type>/<code>`` (``<type>`` when there is no code), verbatim.
* Times: ``gmtDate`` + ``gmtTime`` give the exact UTC instant (``gmtOffset`` alone, with the local
  ``date``/``time``, also gives it). ``event_time_local`` keeps the local ``date`` and ``time``
  fields joined as ``YYYYMMDDTHHMMSS``. Without GMT fields the local time is resolved in the zone of
  the activity's address and flagged ``timezone_ambiguous`` when the zone is a guess or the time is
  in a DST fold or gap.
* Promise: UPS package dates are in an unknown local zone (UPS-API/api-documentation#187), so
  ``deliveryDate[]`` dates are resolved in the destination's zone (``packageAddress`` of type
  DESTINATION; otherwise the newest activity's place, as a guess): ``SDD`` (+ ``deliveryTime``
  end time for ``CMT`` and the delivery windows, else the end of the day) is ``promised_by`` on
  every event; the latest ``RDD`` (else ``SDD``) is the ETA (``eta_start`` from a window's start
  time) on the newest event. (``timezone_ambiguous`` speaks of ``event_time`` only, as the
  canonical schema defines it; a promise resolved in a guessed zone is not flagged.)
* Attempts are numbered in time order over the failed-attempt activities; the delivered activity
  gets attempts + 1. ``deliveryInformation.signature.image`` → signature proof,
  ``deliveryPhoto.photo`` → photo proof; ``receivedBy`` (a name) is never read.
* Identity: tracking number + ship date is not reliable at UPS and the feed has no distinguishing
  package id, so the discriminator is None; ``shipment_id`` is the shipment's ``inquiryNumber``.
* Errors: ``{response: {errors: [{code, message}]}}`` is one dead letter naming UPS's code
  (``151044``); a shipment that only carries ``warnings[]`` is a dead letter for that element; one
  unreadable activity is a dead letter for that activity only.

Examples
--------
>>> from carrierwatch.core.codebook import Codebook
>>> from carrierwatch.core.partner import PartnerSpec
>>> book = Codebook.from_yaml("version: 1\\npartner: ups\\ncodes:\\n"
...                           "  '*/OT': {status: out_for_delivery, confidence: 1.0}\\n")
>>> ctx = TransformContext(PartnerSpec(id="ups", display_name="UPS", transformer="ups"),
...                        book, received_time=1_772_712_000_000)
>>> raw = (b'{"trackResponse": {"shipment": [{"inquiryNumber": "1Z0000000000000001", "package": '
...        b'[{"trackingNumber": "1Z0000000000000001", "activity": [{"status": {"type": "I", '
...        b'"code": "OT"}, "date": "20260302", "time": "080500", "gmtDate": "20260302", '
...        b'"gmtTime": "13:05:00", "gmtOffset": "-05:00"}]}]}]}}')
>>> event = transform(raw, ctx).events[0]
>>> event.status, event.raw_code, event.event_time, event.event_time_local
('out_for_delivery', 'I/OT', 1772456700000, '20260302T080500')
>>> transform(b'{"response": {"errors": [{"code": "151044", "message": "No tracking"}]}}',
...           ctx).dead_letters[0].error
'UPS API error 151044: No tracking'
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from carrierwatch.core.model import CanonicalStatus, ProofOfDelivery
from carrierwatch.core.timeutil import LocalTime, resolve_local, to_ms, zone_for
from carrierwatch.transformers.base import (
    Emitter,
    ParsedScan,
    PayloadError,
    Promise,
    TransformContext,
    TransformResult,
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

__all__ = ["activity_keys", "gmt_instant", "transform"]

_ATTEMPTED = CanonicalStatus.DELIVERY_ATTEMPTED.value
_DELIVERED = CanonicalStatus.DELIVERED.value
_WINDOWS = frozenset({"EDW", "CDW", "IDW"})  # deliveryTime types that are delivery windows
_TIMED = _WINDOWS | {"CMT"}  # deliveryTime types whose endTime bounds the day (CMT: commit)
_END_OF_DAY = "235959"
_START_OF_DAY = "000000"






def activity_keys(activity_type: str, code: str | None) -> tuple[str, tuple[str, ...]]:
    """The raw code and the codebook keys (most specific first) of one UPS activity.

    >>> activity_keys("I", "OT")
    ('I/OT', ('I/OT', '*/OT', 'I'))
    >>> activity_keys("x", "5")
    ('X/5', ('X/5', '*/5', 'X'))
    >>> activity_keys("D", "")
    ('D', ('D',))
    """
    activity_type = activity_type.strip().upper()
    code = (code or "").strip().upper()
    if code:
        specific = f"{activity_type}/{code}"
        return specific, (specific, f"*/{code}", activity_type)
    return activity_type, (activity_type,)


def gmt_instant(gmt_date: str, gmt_time: str) -> int:
    """UTC ms of UPS's ``gmtDate`` (``YYYYMMDD``) and ``gmtTime`` (``HH:MM:SS`` or ``HHMMSS``).

    >>> gmt_instant("20260302", "13:05:00")
    1772456700000
    >>> gmt_instant("20260302", "130500")
    1772456700000
    """
    naive = LocalTime.from_compact(gmt_date.strip(), gmt_time.strip().replace(":", ""))
    return to_ms(naive.replace(tzinfo=UTC))


def transform(raw: bytes, ctx: TransformContext) -> TransformResult:
    """Normalize one UPS Track API response; never raises for bad input."""
    emitter = Emitter(raw, ctx)
    with emitter.element("$"):
        _payload(parse_json(raw, emitter), emitter, ctx)
    return emitter.result


def _payload(root: Any, emitter: Emitter, ctx: TransformContext) -> None:
    if not isinstance(root, dict):
        raise PayloadError("$", f"expected a JSON object, got {type(root).__name__}")
    if root.get("trackResponse") is None and isinstance(root.get("response"), dict):
        raise provider_error(root["response"].get("errors"), "$.response.errors", "UPS API error")
    response = req_dict(root, "trackResponse", "$")
    shipments = req_list(response, "shipment", "$.trackResponse")
    if not shipments:  # one shipment per inquiry number: none is a broken answer
        raise PayloadError("$.trackResponse.shipment", "no shipments in the response")
    for i, shipment in enumerate(shipments):
        spath = f"$.trackResponse.shipment[{i}]"
        with emitter.element(spath):
            _shipment(shipment, spath, emitter, ctx)




def _shipment(shipment: Any, spath: str, emitter: Emitter, ctx: TransformContext) -> None:
    if not isinstance(shipment, dict):
        raise PayloadError(spath, f"expected an object, got {type(shipment).__name__}")
    inquiry = opt_str(shipment, "inquiryNumber", spath)
    packages = opt_list(shipment, "package", spath)
    if not packages:
        warnings = opt_list(shipment, "warnings", spath)
        if warnings:
            raise provider_error(warnings, f"{spath}.warnings", "UPS warning")
        raise PayloadError(f"{spath}.package", "missing required field")
    for j, package in enumerate(packages):
        ppath = f"{spath}.package[{j}]"
        with emitter.element(ppath):
            _package(package, ppath, inquiry, emitter, ctx)


def _package(package: Any, ppath: str, inquiry: str | None, emitter: Emitter,
             ctx: TransformContext) -> None:
    if not isinstance(package, dict):
        raise PayloadError(ppath, f"expected an object, got {type(package).__name__}")
    tracking_number = req_str(package, "trackingNumber", ppath).strip()
    service_level = emitter.guarded(f"{ppath}.service", None, lambda: opt_str(
        opt_dict(package, "service", ppath), "code", f"{ppath}.service"))
    default_country = ctx.partner.default_country

    # activity is required (missing or renamed is schema drift, a dead letter); an empty list is
    # a package known before its first scan: counted as empty.
    listed = list(enumerate(req_list(package, "activity", ppath)))
    if not listed:
        emitter.note_empty(f"{ppath}.activity")
    activities = parse_each(emitter, reversed(listed),  # UPS lists newest first
                            f"{ppath}.activity", default_country, _activity)
    activities.sort(key=lambda a: a.time)

    no_zone: tuple[str | None, bool] = (None, False)
    zone, exact = emitter.guarded(f"{ppath}.packageAddress", no_zone,
                           lambda: _destination_zone(package, ppath, default_country, activities))
    promise = _promise(package, ppath, emitter, zone, exact)
    proof = emitter.guarded(f"{ppath}.deliveryInformation", None,
                     lambda: _proof(package, ppath))

    book = ctx.codebook
    attempt_of_time: dict[int, int] = {}
    newest = len(activities) - 1
    for n, activity in enumerate(activities):
        mapping = book.lookup(*activity.codes)
        status = mapping.status if mapping is not None else None
        attempt: int | None = None
        activity_proof: str | None = None
        if status == _ATTEMPTED:
            attempt = attempt_of_time.setdefault(activity.time, len(attempt_of_time) + 1)
        elif status == _DELIVERED:
            attempt = len(attempt_of_time) + 1
            activity_proof = proof
        latest = n == newest
        emitter.event(
            tracking_number=tracking_number,
            raw_code=activity.raw_code,
            event_time=activity.time,
            codes=activity.codes,
            discriminator=None,
            shipment_id=inquiry,
            timezone_ambiguous=activity.ambiguous,
            event_time_local=activity.local,
            location=activity.location,
            promised_by=promise.promised_by,
            eta_start=promise.eta_start if latest else None,
            eta_end=promise.eta_end if latest else None,
            attempt_number=attempt,
            proof_of_delivery=activity_proof,
            service_level=service_level,
            paths=scan_paths(activity, promise),
        )


def _compact(value: str, path: str, *, time: bool = False) -> str:
    """Check a ``YYYYMMDD`` date or ``HHMMSS`` time field; a PayloadError at ``path`` if bad."""
    text = value.strip()
    try:
        if time:
            LocalTime.from_compact("20000101", text.replace(":", ""))
        else:
            LocalTime.from_compact(text, None)
    except ValueError as exc:
        raise PayloadError(path, str(exc)) from None
    return text.replace(":", "") if time else text


def _local_datetime(date: str, time: str | None, date_path: str, time_path: str) -> datetime:
    """Parse a ``YYYYMMDD`` date and optional ``HHMMSS``/``HH:MM:SS`` time once; a PayloadError
    names the bad field."""
    date = date.strip()
    compact_time = time.strip().replace(":", "") if time else None
    try:
        return LocalTime.from_compact(date, compact_time)
    except ValueError:
        _compact(date, date_path)
        if compact_time is not None:
            _compact(compact_time, time_path, time=True)
        raise PayloadError(date_path, f"invalid date and time {date!r} {time!r}") from None


def _activity(activity: Any, apath: str, default_country: str | None) -> ParsedScan:
    if not isinstance(activity, dict):
        raise PayloadError(apath, f"expected an object, got {type(activity).__name__}")
    status = req_dict(activity, "status", apath)
    raw_code, codes = activity_keys(req_str(status, "type", f"{apath}.status"),
                                    opt_str(status, "code", f"{apath}.status"))
    date = req_str(activity, "date", apath).strip()
    time_text = opt_str(activity, "time", apath)
    local_naive = _local_datetime(date, time_text, f"{apath}.date", f"{apath}.time")
    time = time_text.strip().replace(":", "") if time_text else None
    local = f"{date}T{time}" if time else date

    address_path = f"{apath}.location.address"
    address = opt_dict(opt_dict(activity, "location", apath), "address", f"{apath}.location")
    country = (opt_str(address, "countryCode", address_path)
               or opt_str(address, "country", address_path)
               or (default_country if address else None))
    region = opt_str(address, "stateProvince", address_path)

    gmt_date = opt_str(activity, "gmtDate", apath)
    gmt_time = opt_str(activity, "gmtTime", apath)
    gmt_offset = opt_str(activity, "gmtOffset", apath)
    ambiguous = False
    time_path = f"{apath}.date"
    if gmt_date and gmt_time:
        time_path = f"{apath}.gmtDate"
        ms = to_ms(_local_datetime(gmt_date, gmt_time, f"{apath}.gmtDate",
                                   f"{apath}.gmtTime").replace(tzinfo=UTC))
    elif gmt_offset:
        try:
            offset = LocalTime.offset(gmt_offset)
        except ValueError as exc:
            raise PayloadError(f"{apath}.gmtOffset", str(exc)) from None
        ms = to_ms((local_naive - offset).replace(tzinfo=UTC))
    else:
        zone, zone_exact = zone_for(country, region)
        ms, ambiguous = resolve_local(local_naive, zone, exact_zone=zone_exact)
    return ParsedScan(
        time=ms,
        ambiguous=ambiguous,
        local=local,
        raw_code=raw_code,
        codes=codes,
        location=location(country, region, opt_str(address, "city", address_path),
                          opt_str(address, "postalCode", address_path)),
        time_path=time_path,
    )


def _destination_zone(package: dict[str, Any], ppath: str, default_country: str | None,
                      activities: list[ParsedScan]) -> tuple[str | None, bool]:
    """The destination's zone for UPS's zone-less package dates, and whether it is sure."""
    for n, entry in enumerate(opt_list(package, "packageAddress", ppath)):
        epath = f"{ppath}.packageAddress[{n}]"
        if str(opt_str(entry, "type", epath) or "").upper() != "DESTINATION":
            continue
        address = opt_dict(entry, "address", epath)
        country = (opt_str(address, "countryCode", f"{epath}.address")
                   or opt_str(address, "country", f"{epath}.address") or default_country)
        zone, exact = zone_for(country, opt_str(address, "stateProvince", f"{epath}.address"))
        if zone is not None:
            return zone, exact
    return zone_of_newest_scan(activities)


def _promise(package: dict[str, Any], ppath: str, emitter: Emitter, zone: str | None,
             exact: bool) -> Promise:
    scheduled: str | None = None
    rescheduled: str | None = None
    scheduled_path = rescheduled_path = ""
    for n, entry in enumerate(opt_list(package, "deliveryDate", ppath)):
        dpath = f"{ppath}.deliveryDate[{n}]"
        with emitter.element(dpath):
            kind = req_str(entry, "type", dpath).strip().upper()
            if kind in {"SDD", "RDD"}:  # no `continue` here: mypyc cannot compile one in a `with`
                date = _compact(req_str(entry, "date", dpath), f"{dpath}.date")
                if kind == "SDD":
                    scheduled, scheduled_path = date, f"{dpath}.date"
                elif rescheduled is None or date > rescheduled:
                    rescheduled, rescheduled_path = date, f"{dpath}.date"
    if scheduled is None and rescheduled is None:
        return Promise()

    start_time: str | None = None
    end_time = _END_OF_DAY
    tpath = f"{ppath}.deliveryTime"
    with emitter.element(tpath):
        timing = opt_dict(package, "deliveryTime", ppath)
        kind = (opt_str(timing, "type", tpath) or "").strip().upper()
        if kind in _TIMED:
            end = opt_str(timing, "endTime", tpath)
            if end:
                end_time = _compact(end, f"{tpath}.endTime", time=True)
        if kind in _WINDOWS:
            start = opt_str(timing, "startTime", tpath)
            if start:
                start_time = _compact(start, f"{tpath}.startTime", time=True)

    def at(date: str, time: str) -> int:
        return resolve_local(LocalTime.from_compact(date, time), zone, exact_zone=exact)[0]

    promised_by = at(scheduled, end_time) if scheduled is not None else None
    eta_date = rescheduled or scheduled
    assert eta_date is not None
    eta_end = at(eta_date, end_time)
    # without a delivery window (EOD, a commit time CMT, or no deliveryTime) the ETA is the
    # scheduled day up to its end time: a parcel delivered that morning met an "end of day"
    # ETA (an instant at 23:59:59 would call every delivery before 21:59 inaccurate)
    eta_start = at(eta_date, start_time if start_time is not None else _START_OF_DAY)
    eta_path = rescheduled_path if rescheduled else scheduled_path
    return Promise(promised_by=promised_by, eta_start=eta_start, eta_end=eta_end,
                   paths={"promised_by": scheduled_path, "eta_start": eta_path,
                          "eta_end": eta_path})


def _proof(package: dict[str, Any], ppath: str) -> str | None:
    ipath = f"{ppath}.deliveryInformation"
    info = opt_dict(package, "deliveryInformation", ppath)
    if info is None:
        return None
    signature = opt_dict(info, "signature", ipath)
    if opt_str(signature, "image", f"{ipath}.signature"):
        return ProofOfDelivery.SIGNATURE.value
    photo = opt_dict(info, "deliveryPhoto", ipath)
    if opt_str(photo, "photo", f"{ipath}.deliveryPhoto"):
        return ProofOfDelivery.PHOTO.value
    return None

