"""Render simulated packages as FedEx Track API v1 payloads (what the Tracking Webhook pushes).

One payload per push (``MAX_PACKAGES_PER_PAYLOAD = 1``): the webhook sends one tracking number's
whole history each time. Scans are written newest first, as FedEx does, with local times carrying
their UTC offset (``2026-03-02T14:05:00-06:00``) computed from ``scan.zone``; FedEx writes whole
seconds, so sub-second parts of simulated times are dropped. Codes come from :data:`SCAN_CODES`, which
the FedEx codebook maps back to the same canonical status (and reason where FedEx has a code for
it); a scan with ``raw_code`` is written with exactly that code (``DE/99`` → eventType ``DE`` with
exceptionCode ``99``).

The package's commitment becomes ``dateAndTimes[COMMITMENT]``, the newest scan ETA
``ESTIMATED_DELIVERY``, a signature or photo proof ``availableImages``, the delivered scan's
attempt number ``deliveryDetails.deliveryAttempts``, and the package's service level
``serviceDetail.type``. The shipment's ``trackingNumberUniqueId`` is ``SimPackage.shipment_id`` or,
when the simulator gives none, FedEx's ``<n>~<tracking number>~<operating company>`` form built from
the ship day. Deterministic: no randomness, no clock reads.

Examples
--------
>>> import json
>>> from carrierwatch.synthetic.model import SimPackage, SimScan
>>> package = SimPackage("fedex", "794600000011", "FEDEX_GROUND", ship_time=1_772_400_000_000)
>>> scan = SimScan("picked_up", 1_772_481_900_000, "America/Chicago", region="TN", city="Memphis")
>>> body = json.loads(render([(package, [scan])], sent_at=1_772_482_000_000))
>>> event = body["output"]["completeTrackResults"][0]["trackResults"][0]["scanEvents"][0]
>>> event["eventType"], event["date"]
('PU', '2026-03-02T14:05:00-06:00')
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import orjson

from carrierwatch.synthetic.model import SimPackage, SimScan

__all__ = ["MAX_PACKAGES_PER_PAYLOAD", "SCAN_CODES", "render"]

MAX_PACKAGES_PER_PAYLOAD = 1

#: (canonical status, canonical reason or None) → (eventType, exceptionCode, eventDescription).
#: The ``(status, None)`` entry is used when FedEx has no code for the reason.
SCAN_CODES: dict[tuple[str, str | None], tuple[str, str | None, str]] = {
    ("info_received", None): ("OC", None, "Shipment information sent to FedEx"),
    ("picked_up", None): ("PU", None, "Picked up"),
    ("staged", None): ("AF", None, "At local FedEx facility"),
    ("in_transit", None): ("IT", None, "In transit"),
    ("out_for_delivery", None): ("OD", None, "On FedEx vehicle for delivery"),
    ("delivery_attempted", None): ("DE", None, "Delivery exception"),
    ("delivery_attempted", "recipient_not_available"): ("DE", "08", "Recipient not in"),
    ("delivery_attempted", "address_issue"): ("DE", "03", "Incorrect address"),
    ("delivery_attempted", "refused"): ("DE", "07", "Refused by recipient"),
    ("delivery_attempted", "customer_request"): ("DE", "17",
                                                 "Customer requested future delivery"),
    ("delivered", None): ("DL", None, "Delivered"),
    ("available_for_pickup", None): ("HP", None, "Ready for recipient pickup"),
    ("exception", None): ("SE", None, "Shipment exception"),
    ("exception", "other"): ("SE", None, "Shipment exception"),
    ("exception", "customs"): ("CD", None, "Clearance delay"),
    ("exception", "carrier_delay"): ("DY", None, "Delay"),
    ("exception", "customer_request"): ("RR", None, "Custom delivery option requested"),
    ("returned", None): ("RS", None, "Return to shipper"),
    ("cancelled", None): ("CA", None, "Shipment cancelled"),
    # FedEx has no "unknown" scan; a return-label notice is the code the codebook files as unknown.
    ("unknown", None): ("RP", None, "Return label link emailed to return sender"),
}

_GROUND = frozenset({"FEDEX_GROUND", "GROUND_HOME_DELIVERY", "SMART_POST"})
_SERVICE_NAMES = {
    "FIRST_OVERNIGHT": "FedEx First Overnight",
    "PRIORITY_OVERNIGHT": "FedEx Priority Overnight",
    "STANDARD_OVERNIGHT": "FedEx Standard Overnight",
    "FEDEX_2_DAY_AM": "FedEx 2Day A.M.",
    "FEDEX_2_DAY": "FedEx 2Day",
    "FEDEX_EXPRESS_SAVER": "FedEx Express Saver",
    "FEDEX_GROUND": "FedEx Ground",
    "GROUND_HOME_DELIVERY": "FedEx Home Delivery",
    "SMART_POST": "FedEx Ground Economy",
}


def render(items: Sequence[tuple[SimPackage, Sequence[SimScan]]], sent_at: int) -> bytes:
    """The raw bytes of one FedEx Track API response holding ``items``."""
    results = [_complete_result(package, scans) for package, scans in items]
    numbers = ",".join(package.tracking_number for package, _ in items)
    transaction = uuid.uuid5(uuid.NAMESPACE_URL, f"carrierwatch:fedex:{sent_at}:{numbers}")
    return orjson.dumps({"transactionId": str(transaction),
                         "output": {"completeTrackResults": results}})


def _iso(ms: int, zone: str) -> str:
    return datetime.fromtimestamp(ms // 1000, tz=ZoneInfo(zone)).isoformat(timespec="seconds")


def _code(scan: SimScan) -> tuple[str, str | None, str]:
    if scan.raw_code:
        event_type, _, exception_code = scan.raw_code.partition("/")
        return event_type, exception_code or None, "Shipment status update"
    return SCAN_CODES.get((scan.status, scan.reason)) or SCAN_CODES.get(
        (scan.status, None), SCAN_CODES[("unknown", None)])


def _address(scan: SimScan) -> dict[str, Any]:
    address: dict[str, Any] = {
        "city": scan.city.upper() if scan.city else None,
        "stateOrProvinceCode": scan.region,
        "postalCode": scan.postal_code,
        "countryCode": scan.country,
        "residential": False,
    }
    return {k: v for k, v in address.items() if v is not None}


def _complete_result(package: SimPackage, scans: Sequence[SimScan]) -> dict[str, Any]:
    number = package.tracking_number
    ground = package.service_level in _GROUND
    unique_id = package.shipment_id or (
        f"{package.ship_time // 86_400_000}~{number}~{'FDEG' if ground else 'FDXE'}")
    ordered = sorted(scans, key=lambda s: s.event_time)
    origin_zone = ordered[0].zone if ordered else "UTC"
    destination_zone = ordered[-1].zone if ordered else "UTC"

    scan_events = []
    for scan in reversed(ordered):
        event_type, exception_code, description = _code(scan)
        scan_events.append({
            "date": _iso(scan.event_time, scan.zone),
            "derivedStatus": description,
            "scanLocation": _address(scan),
            "exceptionDescription": description if exception_code else "",
            "eventDescription": description,
            "eventType": event_type,
            "derivedStatusCode": event_type,
            "exceptionCode": exception_code or "",
            "delayDetail": {"status": "DELAYED" if scan.status == "exception" else "ON_TIME"},
        })

    dates: list[dict[str, str]] = [{"type": "SHIP", "dateTime": _iso(package.ship_time,
                                                                     origin_zone)}]
    if package.promised_by is not None:
        dates.append({"type": "COMMITMENT",
                      "dateTime": _iso(package.promised_by, destination_zone)})
    etas = [s.eta_end for s in ordered if s.eta_end is not None]
    if etas:
        dates.append({"type": "ESTIMATED_DELIVERY", "dateTime": _iso(etas[-1], destination_zone)})
    pickups = [s for s in ordered if s.status == "picked_up"]
    if pickups:
        dates.append({"type": "ACTUAL_PICKUP", "dateTime": _iso(pickups[0].event_time,
                                                                pickups[0].zone)})
    attempts = [s for s in ordered if s.status == "delivery_attempted"]
    if attempts:
        dates.append({"type": "ATTEMPTED_DELIVERY", "dateTime": _iso(attempts[0].event_time,
                                                                     attempts[0].zone)})
    delivered = [s for s in ordered if s.status == "delivered"]
    images: list[dict[str, str]] = []
    details: dict[str, Any] = {"locationDescription": "Front desk"}
    if delivered:
        last = delivered[-1]
        dates.append({"type": "ACTUAL_DELIVERY", "dateTime": _iso(last.event_time, last.zone)})
        if last.attempt_number is not None:
            details["deliveryAttempts"] = str(last.attempt_number)
        if last.proof_of_delivery == "signature":
            images.append({"type": "SIGNATURE_PROOF_OF_DELIVERY"})
        elif last.proof_of_delivery == "photo":
            images.append({"type": "PICTURE_PROOF_OF_DELIVERY"})

    result: dict[str, Any] = {
        "trackingNumberInfo": {"trackingNumber": number,
                               "carrierCode": "FDXG" if ground else "FDXE",
                               "trackingNumberUniqueId": unique_id},
        "serviceDetail": {"type": package.service_level,
                          "description": _SERVICE_NAMES.get(package.service_level,
                                                            package.service_level)},
        "dateAndTimes": dates,
        "availableImages": images,
        "deliveryDetails": details,
        "scanEvents": scan_events,
    }
    if ordered:
        newest = ordered[-1]
        event_type, exception_code, description = _code(newest)
        latest: dict[str, Any] = {"code": event_type, "derivedCode": event_type,
                                  "statusByLocale": description, "description": description,
                                  "scanLocation": _address(newest)}
        if exception_code:
            latest["ancillaryDetails"] = [{"reason": exception_code,
                                           "reasonDescription": description}]
        result["latestStatusDetail"] = latest
        result["shipperInformation"] = {"address": _address(ordered[0])}
        result["recipientInformation"] = {"address": _address(newest)}
    return {"trackingNumber": number, "trackResults": [result]}
