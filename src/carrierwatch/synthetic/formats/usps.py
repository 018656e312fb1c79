"""Render simulated scans as a USPS Tracking v3 ``expand=DETAIL`` response.

Events are newest first, as USPS lists them. Each carries the local wall-clock time without an
offset (``eventTimestamp``), the UTC time (``GMTTimestamp``) and the offset (``GMTOffset``).
Statuses and reasons with a USPS event code are written with that code; the rest (failed attempts
and exceptions whose reason has no code of its own) are written as text-only events, which the
transformer matches with the codebook's patterns. The package promise is
``guaranteedDeliveryTimeStamp`` and the latest ETA ``expectedDeliveryTimeStamp``, both with an
offset in the zone of the last scan.

Examples
--------
>>> from carrierwatch.synthetic.model import SimPackage, SimScan
>>> pkg = SimPackage("usps", "9400100000000000000017", "priority_mail", 1_772_450_000_000)
>>> scan = SimScan("out_for_delivery", 1_772_460_300_000, "America/Chicago", region="TX",
...                city="Austin", postal_code="78701")
>>> import json
>>> event = json.loads(render([(pkg, [scan])], 1_772_460_400_000))["trackingEvents"][0]
>>> event["eventCode"], event["eventTimestamp"], event["GMTTimestamp"], event["GMTOffset"]
('OF', '2026-03-02T08:05:00', '2026-03-02T14:05:00Z', '-6:00')
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import orjson

from carrierwatch.synthetic.model import SimPackage, SimScan

__all__ = ["MAX_PACKAGES_PER_PAYLOAD", "render"]

MAX_PACKAGES_PER_PAYLOAD = 1  # GET /tracking/v3/tracking/{trackingNumber}

_CODED: dict[str, tuple[str, str]] = {
    "info_received": ("GX", "Shipping Label Created, USPS Awaiting Item"),
    "picked_up": ("03", "USPS picked up item"),
    "staged": ("07", "Arrived at Post Office"),
    "in_transit": ("10", "Processed through USPS Facility"),
    "out_for_delivery": ("OF", "Out for Delivery"),
    "delivered": ("01", "Delivered, Front Door/Porch"),
    "available_for_pickup": ("16", "Available for Pickup"),
    "returned": ("09", "Return to Sender"),
    "cancelled": ("44", "Customer Recall"),
}
# (status, reason) pairs that have a USPS code of their own
_CODED_REASONS: dict[tuple[str, str], tuple[str, str]] = {
    ("delivery_attempted", "recipient_not_available"): ("02", "Notice Left"),
    ("delivery_attempted", "refused"): ("04", "Refused"),
    ("exception", "address_issue"): ("05", "Undeliverable as Addressed"),
}
_REASON_WORDS: dict[str, str] = {
    "recipient_not_available": "No Authorized Recipient Available",
    "address_issue": "Incorrect Address",
    "access_issue": "No Access to Delivery Location",
    "customer_request": "Rescheduled at Customer Request",
    "refused": "Refused",
    "damaged": "Item Damaged",
    "lost": "Item Missing",
    "weather": "Severe Weather",
    "vehicle_or_capacity": "Vehicle or Capacity Problem",
    "customs": "Held in Customs",
    "payment_due": "Postage Due",
    "carrier_delay": "Running Late",
    "other": "Other",
}


def _local(ms: int, zone: str) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).astimezone(ZoneInfo(zone))


def _offset(moment: datetime) -> str:
    delta = moment.utcoffset()
    minutes = int(delta.total_seconds() // 60) if delta is not None else 0
    sign = "-" if minutes < 0 else "+"
    hours, rest = divmod(abs(minutes), 60)
    return f"{sign}{hours}:{rest:02d}" if sign == "-" else f"{hours}:{rest:02d}"


def _code_and_type(scan: SimScan) -> tuple[str | None, str]:
    if scan.raw_code is not None:
        return scan.raw_code, "Status Update"
    reason = scan.reason or ""
    if (scan.status, reason) in _CODED_REASONS:
        return _CODED_REASONS[(scan.status, reason)]
    words = _REASON_WORDS.get(reason)
    if scan.status == "delivery_attempted":
        return None, f"Delivery Attempted - {words}" if words else "Delivery Attempted"
    if scan.status == "exception":
        return None, f"Delivery Exception, {words}" if words else "Delivery Exception"
    if scan.status in _CODED:
        return _CODED[scan.status]
    return "ZZ", "Status Update"


def _event(scan: SimScan) -> dict[str, Any]:
    code, event_type = _code_and_type(scan)
    moment = _local(scan.event_time, scan.zone)
    event: dict[str, Any] = {"eventType": event_type}
    if code is not None:
        event["eventCode"] = code
    event.update({
        "eventTimestamp": moment.replace(tzinfo=None).isoformat(timespec="seconds"),
        "GMTTimestamp": datetime.fromtimestamp(scan.event_time / 1000, tz=UTC)
        .strftime("%Y-%m-%dT%H:%M:%SZ"),
        "GMTOffset": _offset(moment),
        "eventCountry": "" if scan.country == "US" else scan.country,
        "eventCity": (scan.city or "").upper(),
        "eventState": scan.region or "",
        "eventZIP": scan.postal_code or "",
        "firm": "",
        "name": "",
        "authorizedAgent": False,
    })
    return event


def _response(package: SimPackage, scans: Sequence[SimScan]) -> dict[str, Any]:
    ordered = sorted(scans, key=lambda s: s.event_time, reverse=True)
    zone = ordered[0].zone if ordered else "America/New_York"
    body: dict[str, Any] = {
        "trackingNumber": package.tracking_number,
        "mailClass": package.service_level.upper(),
        "mailType": "DOMESTIC_MAIL",
    }
    if package.shipment_id:
        body["uniqueMailPieceId"] = package.shipment_id
    if ordered and ordered[0].region:
        body["destinationState"] = ordered[0].region
    if package.promised_by is not None:
        body["guaranteedDeliveryTimeStamp"] = _local(package.promised_by, zone).isoformat(
            timespec="seconds")
    eta = next((s.eta_end for s in ordered if s.eta_end is not None), None)
    if eta is not None:
        body["expectedDeliveryTimeStamp"] = _local(eta, zone).isoformat(timespec="seconds")
    body["trackingEvents"] = [_event(scan) for scan in ordered]
    return body


def render(items: Sequence[tuple[SimPackage, Sequence[SimScan]]], sent_at: int) -> bytes:
    """A USPS v3 tracking response for the (single) package in ``items``."""
    del sent_at  # a polled response carries no send time
    if len(items) != 1:
        raise ValueError(f"USPS responses hold one package, got {len(items)}")
    package, scans = items[0]
    return orjson.dumps(_response(package, scans))
