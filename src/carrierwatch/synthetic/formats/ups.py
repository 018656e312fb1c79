"""Render simulated packages as UPS Track API v1 responses.

The UPS Track API is polled one inquiry number at a time, so ``MAX_PACKAGES_PER_PAYLOAD = 1``;
``render`` still accepts several packages (one ``shipment`` entry per ``SimPackage.shipment_id``,
packages of one shipment side by side) so that multi-piece shipments can be written too.

Activities are written newest first, as UPS does, with the local ``date`` (``YYYYMMDD``) and
``time`` (``HHMMSS``) in ``scan.zone`` plus ``gmtDate``/``gmtTime`` (UTC) and ``gmtOffset``; UPS
writes whole seconds, so sub-second parts of simulated times are dropped. Codes come from
:data:`SCAN_CODES` (activity type, status code), which the UPS codebook maps back to the same
canonical status (and reason where UPS has a code for it); a scan with ``raw_code`` is written with
exactly that code (``X/ZZ`` → type ``X``, code ``ZZ``; ``Q7`` → type ``Q7`` with no code).

Package dates carry no zone at UPS; they are written in the destination's zone, i.e. the zone
:func:`carrierwatch.core.timeutil.zone_for` gives for the newest scan's place (the place also written
as the DESTINATION ``packageAddress``), which is where the transformer resolves them. The commitment
becomes ``deliveryDate[SDD]`` with ``deliveryTime`` ``CMT`` ending at its local time; a newest ETA on
another day becomes ``deliveryDate[RDD]`` (UPS sends the rescheduled *date*; with no commitment the
ETA's time goes in an ``EDW`` window end); a delivery adds ``deliveryDate[DEL]``. Deterministic: no
randomness, no clock reads.

Examples
--------
>>> import json
>>> from carrierwatch.synthetic.model import SimPackage, SimScan
>>> package = SimPackage("ups", "1Z0000000000000001", "003", ship_time=1_772_400_000_000)
>>> scan = SimScan("out_for_delivery", 1_772_456_700_000, "America/New_York", region="NY")
>>> body = json.loads(render([(package, [scan])], sent_at=1_772_460_000_000))
>>> activity = body["trackResponse"]["shipment"][0]["package"][0]["activity"][0]
>>> activity["status"]["code"], activity["date"], activity["time"], activity["gmtTime"]
('OT', '20260302', '080500', '13:05:00')
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import orjson

from carrierwatch.core.timeutil import zone_for
from carrierwatch.synthetic.model import SimPackage, SimScan

__all__ = ["MAX_PACKAGES_PER_PAYLOAD", "SCAN_CODES", "render"]

MAX_PACKAGES_PER_PAYLOAD = 1

#: (canonical status, canonical reason or None) → (activity type, status code, description).
#: The ``(status, None)`` entry is used when UPS has no code for the reason.
SCAN_CODES: dict[tuple[str, str | None], tuple[str, str, str]] = {
    ("info_received", None): ("M", "MP", "Shipper created a label, UPS has not received the "
                                         "package yet."),
    ("picked_up", None): ("P", "PU", "Pickup Scan"),
    ("staged", None): ("I", "DS", "Destination Scan"),
    ("in_transit", None): ("I", "DP", "Departed from Facility"),
    ("out_for_delivery", None): ("I", "OT", "Out For Delivery Today"),
    ("delivery_attempted", None): ("X", "UR", "Delivery attempted"),
    ("delivery_attempted", "recipient_not_available"): (
        "X", "48", "The receiver was not available for delivery. We'll make a second attempt "
                   "the next business day."),
    ("delivery_attempted", "address_issue"): (
        "X", "AG", "The address is incomplete. This may delay delivery. We're attempting to "
                   "update the address."),
    ("delivery_attempted", "refused"): (
        "X", "AM", "The receiver has canceled the product order and refused delivery."),
    ("delivery_attempted", "access_issue"): (
        "X", "95", "We are trying to get the security access our driver needs for this "
                   "delivery."),
    ("delivery_attempted", "payment_due"): (
        "X", "51", "We tried to deliver the package, but were unable to receive payment."),
    ("delivered", None): ("D", "FS", "DELIVERED"),
    ("available_for_pickup", None): ("I", "RP", "Ready for pickup at a UPS Access Point"),
    ("exception", None): ("X", "EX", "Exception"),
    ("exception", "customs"): ("X", "5", "Your package is pending release from a Government "
                                         "Agency."),
    ("exception", "weather"): ("X", "7W", "Severe weather conditions have delayed delivery."),
    ("exception", "damaged"): ("X", "45", "Your package was damaged in transit."),
    ("exception", "lost"): ("X", "26", "All merchandise missing, empty carton was discarded."),
    ("exception", "carrier_delay"): ("X", "18", "A late flight has caused a delay."),
    ("exception", "vehicle_or_capacity"): ("X", "16", "A mechanical failure has delayed "
                                                      "delivery."),
    ("exception", "customer_request"): ("X", "AT", "The receiver has requested a delayed "
                                                   "delivery."),
    ("exception", "payment_due"): ("X", "1C", "Import charges are due for this package."),
    ("exception", "address_issue"): ("X", "47", "We do not currently serve the destination "
                                                "address for this package."),
    ("exception", "other"): ("X", "1A", "UPS is working to resolve the issue."),
    ("returned", None): ("RS", "RS", "Returned to Sender"),
    ("cancelled", None): ("MV", "MV", "Shipment information voided"),
    ("unknown", None): ("NA", "NA", "Status not available"),
}

_SERVICE_NAMES = {
    "001": "UPS Next Day Air", "002": "UPS 2nd Day Air", "003": "UPS Ground",
    "012": "UPS 3 Day Select", "013": "UPS Next Day Air Saver",
    "014": "UPS Next Day Air Early", "059": "UPS 2nd Day Air A.M.", "093": "UPS Ground Saver",
}
_IMAGE = "R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7"  # a 1x1 GIF, base64


def render(items: Sequence[tuple[SimPackage, Sequence[SimScan]]], sent_at: int) -> bytes:
    """The raw bytes of one UPS Track API response holding ``items``."""
    del sent_at  # UPS responses carry no response timestamp
    shipments: dict[str, list[dict[str, Any]]] = {}
    for package, scans in items:
        inquiry = package.shipment_id or package.tracking_number
        shipments.setdefault(inquiry, []).append(_package(package, scans))
    body = {"trackResponse": {"shipment": [
        {"inquiryNumber": inquiry, "package": packages} for inquiry, packages in shipments.items()
    ]}}
    return orjson.dumps(body)


def _local(ms: int, zone: str) -> datetime:
    return datetime.fromtimestamp(ms // 1000, tz=ZoneInfo(zone))


def _offset(moment: datetime) -> str:
    text = moment.strftime("%z")  # -0500
    return f"{text[:3]}:{text[3:]}"


def _code(scan: SimScan) -> tuple[str, str, str]:
    if scan.raw_code:
        activity_type, _, code = scan.raw_code.partition("/")
        return activity_type, code, "Status update"
    return SCAN_CODES.get((scan.status, scan.reason)) or SCAN_CODES.get(
        (scan.status, None), SCAN_CODES[("unknown", None)])


def _address(scan: SimScan) -> dict[str, Any]:
    address: dict[str, Any] = {
        "city": scan.city.upper() if scan.city else None,
        "stateProvince": scan.region,
        "postalCode": scan.postal_code or "",
        "country": scan.country,
        "countryCode": scan.country,
    }
    return {k: v for k, v in address.items() if v is not None}


def _activity(scan: SimScan) -> dict[str, Any]:
    activity_type, code, description = _code(scan)
    local = _local(scan.event_time, scan.zone)
    gmt = local.astimezone(UTC)
    status: dict[str, Any] = {"type": activity_type, "description": description}
    if code:
        status["code"] = code
    return {
        "location": {"address": _address(scan)},
        "status": status,
        "date": local.strftime("%Y%m%d"),
        "time": local.strftime("%H%M%S"),
        "gmtDate": gmt.strftime("%Y%m%d"),
        "gmtOffset": _offset(local),
        "gmtTime": gmt.strftime("%H:%M:%S"),
    }


def _package(package: SimPackage, scans: Sequence[SimScan]) -> dict[str, Any]:
    ordered = sorted(scans, key=lambda s: s.event_time)
    newest = ordered[-1] if ordered else None
    zone = "UTC"
    if newest is not None:
        zone = zone_for(newest.country, newest.region)[0] or "UTC"

    dates: list[dict[str, str]] = []
    timing: dict[str, str] | None = None
    etas = [s.eta_end for s in ordered if s.eta_end is not None]
    if package.promised_by is not None:
        promise = _local(package.promised_by, zone)
        dates.append({"type": "SDD", "date": promise.strftime("%Y%m%d")})
        timing = {"type": "CMT", "startTime": "", "endTime": promise.strftime("%H%M%S")}
        if etas and _local(etas[-1], zone).date() != promise.date():
            dates.append({"type": "RDD", "date": _local(etas[-1], zone).strftime("%Y%m%d")})
    elif etas:
        eta = _local(etas[-1], zone)
        dates.append({"type": "RDD", "date": eta.strftime("%Y%m%d")})
        timing = {"type": "EDW", "startTime": "", "endTime": eta.strftime("%H%M%S")}

    result: dict[str, Any] = {"trackingNumber": package.tracking_number}
    information: dict[str, Any] | None = None
    delivered = [s for s in ordered if s.status == "delivered"]
    if delivered:
        last = delivered[-1]
        dates.append({"type": "DEL",
                      "date": _local(last.event_time, last.zone).strftime("%Y%m%d")})
        information = {"location": "Front Door", "receivedBy": ""}
        if last.proof_of_delivery == "signature":
            information["signature"] = {"image": _IMAGE}
        elif last.proof_of_delivery == "photo":
            information["deliveryPhoto"] = {"photo": _IMAGE, "photoCaptureInd": "Y",
                                            "photoDispositionCode": "V"}
    if dates:
        result["deliveryDate"] = dates
    if timing is not None:
        result["deliveryTime"] = timing
    if information is not None:
        result["deliveryInformation"] = information
    if newest is not None:
        result["packageAddress"] = [
            {"type": "ORIGIN", "address": _address(ordered[0])},
            {"type": "DESTINATION", "address": _address(newest)},
        ]
    result["service"] = {"code": package.service_level, "levelCode": package.service_level,
                         "description": _SERVICE_NAMES.get(package.service_level, "UPS")}
    result["packageCount"] = 1
    result["activity"] = [_activity(scan) for scan in reversed(ordered)]
    return result
