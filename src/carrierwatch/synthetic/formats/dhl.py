"""Render simulated scans as a DHL Shipment Tracking – Unified response (``{"shipments": [...]}``).

Events are listed newest first, as DHL does, with the latest one repeated as the shipment
``status``. Times are local wall-clock times with their UTC offset (``2026-03-02T14:05:00-06:00``).
Statuses the coarse ``statusCode`` cannot tell apart are written as DHL's standard sentences,
and failure reasons as words the codebook's patterns recognise. DHL sends no contractual promise,
so ``SimPackage.promised_by`` is not rendered; the latest ETA is ``estimatedTimeOfDelivery``.

Examples
--------
>>> from carrierwatch.synthetic.model import SimPackage, SimScan
>>> pkg = SimPackage("dhl", "CWSYNDHL0001", "ecommerce", 1_772_450_000_000)
>>> scan = SimScan("out_for_delivery", 1_772_460_300_000, "America/Chicago", region="IL",
...                city="Chicago", postal_code="60601")
>>> import json
>>> event = json.loads(render([(pkg, [scan])], 1_772_460_400_000))["shipments"][0]["events"][0]
>>> event["timestamp"], event["statusCode"]
('2026-03-02T08:05:00-06:00', 'transit')
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import orjson

from carrierwatch.synthetic.model import SimPackage, SimScan

__all__ = ["MAX_PACKAGES_PER_PAYLOAD", "render"]

MAX_PACKAGES_PER_PAYLOAD = 1  # one tracking number per GET /track/shipments

# canonical status → (statusCode, description) for statuses that need no reason
_PLAIN: dict[str, tuple[str, str]] = {
    "info_received": ("pre-transit", "The instruction data for this shipment have been provided "
                                     "by the sender to DHL electronically"),
    "picked_up": ("transit", "The shipment has been picked up"),
    "staged": ("transit", "The shipment has been processed in the destination parcel center"),
    "in_transit": ("transit", "The shipment has been processed in the parcel center"),
    "out_for_delivery": ("transit", "The shipment has been loaded onto the delivery vehicle"),
    "delivered": ("delivered", "The shipment has been successfully delivered"),
    "available_for_pickup": ("transit", "The shipment is ready for pickup at the retail outlet"),
    "returned": ("failure", "The shipment is being returned to the sender"),
    "cancelled": ("pre-transit", "The shipment has been cancelled by the sender"),
}

# canonical reason → words the codebook patterns recognise
_REASON_WORDS: dict[str, str] = {
    "recipient_not_available": "recipient not present",
    "address_issue": "address incorrect or incomplete",
    "access_issue": "delivery location not accessible",
    "customer_request": "recipient requested a new delivery date",
    "refused": "recipient refused acceptance",
    "damaged": "shipment damaged",
    "lost": "shipment could not be located",
    "weather": "weather conditions",
    "vehicle_or_capacity": "vehicle breakdown or capacity shortage",
    "customs": "customs clearance pending",
    "payment_due": "awaiting payment of import charges",
    "carrier_delay": "operational delay at DHL",
    "other": "other reasons",
}


def _local_iso(ms: int, zone: str) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).astimezone(ZoneInfo(zone)).isoformat(
        timespec="seconds")


def _code_and_description(scan: SimScan) -> tuple[str, str]:
    if scan.raw_code is not None:
        return scan.raw_code, "Shipment status update"
    words = _REASON_WORDS.get(scan.reason or "")
    if scan.status == "delivery_attempted":
        return "failure", ("Delivery attempt unsuccessful - " + words if words
                           else "Delivery attempt unsuccessful")
    if scan.status == "exception":
        return "failure", "Shipment on hold - " + words if words else "Shipment on hold"
    if scan.status in _PLAIN:
        return _PLAIN[scan.status]
    return "unmapped", "Shipment status update"


def _event(scan: SimScan) -> dict[str, Any]:
    status_code, description = _code_and_description(scan)
    locality = scan.city or ""
    if scan.city and scan.region and scan.country in {"US", "CA"}:
        locality = f"{scan.city}, {scan.region}"
    address: dict[str, Any] = {"countryCode": scan.country}
    if scan.postal_code:
        address["postalCode"] = scan.postal_code
    if locality:
        address["addressLocality"] = locality
    return {
        "timestamp": _local_iso(scan.event_time, scan.zone),
        "location": {"address": address},
        "statusCode": status_code,
        "status": status_code.replace("-", " ").title(),
        "description": description,
    }


def _shipment(package: SimPackage, scans: Sequence[SimScan]) -> dict[str, Any]:
    ordered = sorted(scans, key=lambda s: s.event_time, reverse=True)
    events = [_event(scan) for scan in ordered]
    shipment: dict[str, Any] = {"id": package.tracking_number, "service": package.service_level}
    if events:
        shipment["status"] = events[0]
        last = ordered[0]
        shipment["destination"] = {"address": {k: v for k, v in events[0]["location"]["address"]
                                               .items() if k != "postalCode"}}
        eta = next((s.eta_end for s in ordered if s.eta_end is not None), None)
        if eta is not None:
            shipment["estimatedTimeOfDelivery"] = _local_iso(eta, last.zone)
            shipment["estimatedTimeOfDeliveryRemark"] = "By End of Day"
    details: dict[str, Any] = {"product": {"productName": f"DHL {package.service_level.title()}"},
                               "totalNumberOfPieces": 1}
    delivered = next((s for s in ordered if s.status == "delivered"), None)
    if delivered is not None and delivered.proof_of_delivery == "signature":
        details["proofOfDelivery"] = {
            "timestamp": _local_iso(delivered.event_time, delivered.zone),
            "signatureUrl": f"https://webpod.dhl.com/webPOD/DHLePODRequest?"
                            f"hwb={package.tracking_number}",
        }
    shipment["details"] = details
    shipment["events"] = events
    return shipment


def render(items: Sequence[tuple[SimPackage, Sequence[SimScan]]], sent_at: int) -> bytes:
    """A DHL Unified tracking response holding each package's visible scans."""
    del sent_at  # a polled response carries no send time
    return orjson.dumps({"shipments": [_shipment(pkg, scans) for pkg, scans in items]})
