"""Render simulated packages as Carrier B (Borealis Parcel) beta GraphQL responses.

One response answers a batch of numbers (``MAX_PACKAGES_PER_PAYLOAD = 50``, the poller's batch
size): ``{"data": {"trackings": [...]}}`` with each package's events oldest first, as the beta
API lists them, times in RFC 3339 with the scan's UTC offset (``2026-03-02T07:05:00-07:00``,
whole seconds). Codes come from :data:`SCAN_CODES` (code, reasonCode), which the Carrier B
codebook maps back to the same canonical status and reason; a scan with ``raw_code`` is written
with exactly that code (``CODE/REASON`` → code and reasonCode). The package's commitment is
``promisedBy``, the newest scan ETA ``estimatedDelivery.to``, the delivered scan's proof
``proof`` and attempt ``attempt``. Deterministic: no randomness, no clock reads.

Examples
--------
>>> import json
>>> from carrierwatch.synthetic.model import SimPackage, SimScan
>>> package = SimPackage("carrier_b", "CB0000000001", "STANDARD", ship_time=1_772_400_000_000)
>>> scan = SimScan("picked_up", 1_772_460_300_000, "America/Denver", region="CO", city="Denver")
>>> body = json.loads(render([(package, [scan])], sent_at=1_772_482_000_000))
>>> event = body["data"]["trackings"][0]["events"][0]
>>> event["code"], event["occurredAt"]
('PICKED_UP', '2026-03-02T07:05:00-07:00')
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import orjson

from carrierwatch.synthetic.model import SimPackage, SimScan

__all__ = ["MAX_PACKAGES_PER_PAYLOAD", "SCAN_CODES", "render"]

MAX_PACKAGES_PER_PAYLOAD = 50

#: (canonical status, canonical reason or None) → (code, reasonCode or None, description)
SCAN_CODES: dict[tuple[str, str | None], tuple[str, str | None, str]] = {
    ("info_received", None): ("LABEL_CREATED", None, "Shipment data received"),
    ("picked_up", None): ("PICKED_UP", None, "Picked up"),
    ("staged", None): ("AT_HUB", None, "Sorted at hub"),
    ("in_transit", None): ("IN_TRANSIT", None, "In transit"),
    ("out_for_delivery", None): ("OUT_FOR_DELIVERY", None, "Out for delivery"),
    ("delivery_attempted", None): ("ATTEMPTED", None, "Delivery attempted"),
    ("delivery_attempted", "recipient_not_available"): ("ATTEMPTED", "NO_ONE_HOME",
                                                        "Delivery attempted, no one home"),
    ("delivery_attempted", "address_issue"): ("ATTEMPTED", "ADDRESS", "Address not found"),
    ("delivery_attempted", "access_issue"): ("ATTEMPTED", "ACCESS", "No access to the building"),
    ("delivery_attempted", "refused"): ("ATTEMPTED", "REFUSED", "Refused by the recipient"),
    ("delivery_attempted", "customer_request"): ("ATTEMPTED", "RESCHEDULED",
                                                 "Rescheduled at the recipient's request"),
    ("delivered", None): ("DELIVERED", None, "Delivered"),
    ("available_for_pickup", None): ("READY_FOR_PICKUP", None, "Ready for pickup"),
    ("exception", None): ("EXCEPTION", None, "Exception"),
    ("exception", "other"): ("EXCEPTION", None, "Exception"),
    ("exception", "weather"): ("EXCEPTION", "WEATHER", "Weather delay"),
    ("exception", "damaged"): ("EXCEPTION", "DAMAGED", "Damaged in transit"),
    ("exception", "lost"): ("EXCEPTION", "LOST", "Cannot be located"),
    ("exception", "vehicle_or_capacity"): ("EXCEPTION", "CAPACITY", "Capacity issue"),
    ("exception", "carrier_delay"): ("EXCEPTION", "DELAY", "Delayed"),
    ("exception", "customs"): ("EXCEPTION", "CUSTOMS", "Held at customs"),
    ("exception", "address_issue"): ("EXCEPTION", "ADDRESS", "Address needs correction"),
    ("exception", "customer_request"): ("EXCEPTION", "CUSTOMER_HOLD", "Held for the recipient"),
    ("returned", None): ("RETURNED", None, "Returned to shipper"),
    ("cancelled", None): ("CANCELLED", None, "Shipment cancelled"),
    ("unknown", None): ("NOTIFICATION_SENT", None, "Notification sent to the recipient"),
}
_PROOFS = {"signature": "SIGNATURE", "photo": "PHOTO", "pin": "PIN", "none": "NONE"}


def _iso(ms: int, zone: str) -> str:
    return datetime.fromtimestamp(ms // 1000, tz=ZoneInfo(zone)).isoformat(timespec="seconds")


def _code(scan: SimScan) -> tuple[str, str | None, str]:
    if scan.raw_code:
        code, _, reason = scan.raw_code.partition("/")
        return code, reason or None, "Status update"
    return SCAN_CODES.get((scan.status, scan.reason)) or SCAN_CODES.get(
        (scan.status, None), SCAN_CODES[("unknown", None)])


def _tracking(package: SimPackage, scans: Sequence[SimScan]) -> dict[str, Any]:
    ordered = sorted(scans, key=lambda s: s.event_time)
    zone = ordered[-1].zone if ordered else "America/Denver"
    events = []
    for scan in ordered:
        code, reason, description = _code(scan)
        place = {"city": scan.city, "region": scan.region, "postalCode": scan.postal_code,
                 "country": scan.country}
        events.append({
            "code": code, "reasonCode": reason, "description": description,
            "occurredAt": _iso(scan.event_time, scan.zone),
            "attempt": scan.attempt_number,
            "proof": _PROOFS.get(scan.proof_of_delivery or "") if scan.status == "delivered"
            else None,
            "location": {k: v for k, v in place.items() if v is not None}})
    eta = next((s.eta_end for s in reversed(ordered) if s.eta_end is not None), None)
    return {
        "trackingNumber": package.tracking_number,
        "serviceLevel": package.service_level,
        "promisedBy": _iso(package.promised_by, zone) if package.promised_by else None,
        "estimatedDelivery": {"from": None, "to": _iso(eta, zone)} if eta else None,
        "events": events,
    }


def render(items: Sequence[tuple[SimPackage, Sequence[SimScan]]], sent_at: int) -> bytes:
    """The raw bytes of one Carrier B GraphQL response holding ``items``."""
    del sent_at  # a GraphQL response carries no send time
    return orjson.dumps({"data": {"trackings": [_tracking(p, s) for p, s in items]}})
