"""Render simulated packages as EasyPost tracker webhooks (``Event`` with a ``Tracker`` result).

One package per payload (a webhook carries one tracker), with the whole history visible at
``sent_at`` in ``tracking_details`` (oldest first), as EasyPost sends it. Codes are chosen so that
``carrierwatch.transformers.easypost`` maps them back to the scan's canonical status, and to its
reason where EasyPost has a matching ``status_detail`` (it has none for the reason of a failed
attempt, nor for customs, payment, access or customer-request exceptions: those come back as
``unknown`` / ``other``). Event times are written the way EasyPost writes them: the scan's local
time with its offset when the scan has a location, UTC (``Z``) when it has none.

A scan's ``raw_code`` is written verbatim: ``"status/status_detail"`` or a bare ``status``.
Delivered scans with a signature get a fictional ``signed_by`` (the transformer must not copy it).
Output is deterministic: ids are hashes of the package, no clock or randomness is used.

Examples
--------
>>> from carrierwatch.synthetic.model import SimPackage, SimScan
>>> pkg = SimPackage("easypost", "EZ4000000004", "Priority", ship_time=1772460000000)
>>> scan = SimScan("delivered", 1772481900000, "America/Chicago", "US", "IL", "Chicago", "60601")
>>> body = render([(pkg, [scan])], sent_at=1772482000000)
>>> b'"status":"delivered"' in body, b'"datetime":"2026-03-02T14:05:00-06:00"' in body
(True, True)
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import orjson

from carrierwatch.core.model import CanonicalReason as R
from carrierwatch.core.model import CanonicalStatus as S
from carrierwatch.core.timeutil import zone_for
from carrierwatch.synthetic.model import SimPackage, SimScan
from carrierwatch.transformers._aggregators import iso_local, iso_utc, stable_id

__all__ = ["MAX_PACKAGES_PER_PAYLOAD", "SIGNER", "partner_code", "render"]

MAX_PACKAGES_PER_PAYLOAD = 1
SIGNER = "R. SYNTHETIC"  # fictional signer, written only for signature deliveries

_STATUS: dict[str, tuple[str, str]] = {
    S.INFO_RECEIVED: ("pre_transit", "label_created"),
    S.PICKED_UP: ("in_transit", "received_at_origin_facility"),
    S.STAGED: ("in_transit", "received_at_destination_facility"),
    S.IN_TRANSIT: ("in_transit", "arrived_at_facility"),
    S.OUT_FOR_DELIVERY: ("out_for_delivery", "out_for_delivery"),
    S.DELIVERY_ATTEMPTED: ("failure", "delivery_exception"),
    S.DELIVERED: ("delivered", "arrived_at_destination"),
    S.AVAILABLE_FOR_PICKUP: ("available_for_pickup", "arrived_at_pickup_location"),
    S.EXCEPTION: ("failure", "failure"),
    S.RETURNED: ("return_to_sender", "return"),
    S.CANCELLED: ("cancelled", "cancelled"),
    S.UNKNOWN: ("unknown", "unknown"),
}
_EXCEPTION: dict[str, tuple[str, str]] = {
    R.WEATHER: ("in_transit", "weather_delay"),
    R.CARRIER_DELAY: ("in_transit", "delayed"),
    R.VEHICLE_OR_CAPACITY: ("in_transit", "delayed"),
    R.DAMAGED: ("failure", "damaged"),
    R.LOST: ("failure", "lost"),
    R.REFUSED: ("failure", "refused"),
    R.ADDRESS_ISSUE: ("failure", "address_correction"),
    R.RECIPIENT_NOT_AVAILABLE: ("failure", "expired"),
    R.OTHER: ("failure", "held"),
    R.CUSTOMS: ("failure", "held"),
    R.PAYMENT_DUE: ("failure", "held"),
    R.ACCESS_ISSUE: ("failure", "held"),
    R.CUSTOMER_REQUEST: ("failure", "held"),
}
_RETURNED: dict[str, tuple[str, str]] = {
    R.REFUSED: ("return_to_sender", "refused"),
    R.ADDRESS_ISSUE: ("return_to_sender", "address_correction"),
    R.DAMAGED: ("return_to_sender", "damaged"),
    R.RECIPIENT_NOT_AVAILABLE: ("return_to_sender", "expired"),
}
_MESSAGE = {
    "pre_transit": "Shipping Label Created, USPS Awaiting Item",
    "in_transit": "Arrived at USPS Regional Facility",
    "out_for_delivery": "Out for Delivery",
    "failure": "Delivery Exception",
    "delivered": "Delivered, In/At Mailbox",
    "available_for_pickup": "Available for Pickup",
    "return_to_sender": "Return to Sender Processed",
    "cancelled": "Shipment Cancelled",
    "unknown": "Status Not Available",
}
_CARRIER_CODE = {
    "pre_transit": "GX", "in_transit": "10", "out_for_delivery": "OF", "failure": "53",
    "delivered": "01", "available_for_pickup": "RP", "return_to_sender": "09",
    "cancelled": "CA", "unknown": "",
}


def partner_code(scan: SimScan) -> tuple[str, str | None]:
    """The ``(status, status_detail)`` EasyPost would send for ``scan``.

    >>> partner_code(SimScan("exception", 0, "UTC", reason="weather"))
    ('in_transit', 'weather_delay')
    >>> partner_code(SimScan("in_transit", 0, "UTC", raw_code="in_transit/teleported"))
    ('in_transit', 'teleported')
    """
    if scan.raw_code is not None:
        status, _, detail = scan.raw_code.partition("/")
        return status, detail or None
    if scan.status == S.EXCEPTION and scan.reason in _EXCEPTION:
        return _EXCEPTION[scan.reason]
    if scan.status == S.RETURNED and scan.reason in _RETURNED:
        return _RETURNED[scan.reason]
    return _STATUS.get(scan.status, _STATUS[S.UNKNOWN])


def _state(region: str | None) -> str | None:
    return region.split("-")[-1].upper() if region else None


def _located(scan: SimScan) -> bool:
    return bool(scan.region or scan.city or scan.postal_code)


def _location(scan: SimScan) -> dict[str, Any]:
    return {"object": "TrackingLocation", "city": scan.city.upper() if scan.city else None,
            "state": _state(scan.region), "country": scan.country, "zip": scan.postal_code}


def _detail(scan: SimScan) -> dict[str, Any]:
    status, detail = partner_code(scan)
    when = (iso_local(scan.event_time, scan.zone) if _located(scan)
            else iso_utc(scan.event_time))
    return {
        "object": "TrackingDetail",
        "message": _MESSAGE.get(status, "Status Update"),
        "description": "",
        "status": status,
        "status_detail": detail,
        "datetime": when,
        "source": "USPS",
        "carrier_code": _CARRIER_CODE.get(status, ""),
        "tracking_location": _location(scan) if _located(scan) else {
            "object": "TrackingLocation", "city": None, "state": None, "country": None,
            "zip": None},
    }


def _carrier_detail(pkg: SimPackage, scans: Sequence[SimScan]) -> dict[str, Any]:
    last = scans[-1] if scans else None
    detail: dict[str, Any] = {
        "object": "CarrierDetail",
        "service": pkg.service_level,
        "container_type": None,
        "est_delivery_date_local": None,
        "est_delivery_time_local": None,
        "origin_location": None,
        "destination_location": None,
        "guaranteed_delivery_date": iso_utc(pkg.promised_by) if pkg.promised_by else None,
        "initial_delivery_attempt": None,
        "alternate_identifier": None,
        "destination_tracking_location": None,
    }
    attempts = [s for s in scans if s.status == S.DELIVERY_ATTEMPTED]
    if attempts:
        detail["initial_delivery_attempt"] = iso_utc(attempts[0].event_time)
    eta = next((s.eta_end for s in reversed(scans) if s.eta_end is not None), None)
    if last is not None and _located(last):
        detail["destination_tracking_location"] = _location(last)
        exact = zone_for(last.country, _state(last.region)) == (last.zone, True)
        if eta is not None and exact:  # the receiver resolves these in the same zone
            local = datetime.fromtimestamp(eta / 1000, tz=ZoneInfo(last.zone))
            if local.microsecond == 0:
                detail["est_delivery_date_local"] = local.strftime("%Y-%m-%d")
                detail["est_delivery_time_local"] = local.strftime("%H:%M:%S")
    return detail


def _tracker(pkg: SimPackage, scans: Sequence[SimScan], sent_at: int) -> dict[str, Any]:
    ordered = sorted(scans, key=lambda s: s.event_time)
    latest = ordered[-1] if ordered else None
    status, detail = partner_code(latest) if latest else ("unknown", "unknown")
    eta = next((s.eta_end for s in reversed(ordered) if s.eta_end is not None), None)
    signed = any(s.status == S.DELIVERED and s.proof_of_delivery == "signature"
                 for s in ordered)
    tracker_id = pkg.shipment_id or "trk_" + stable_id(pkg.partner_id, pkg.tracking_number,
                                                       pkg.ship_time, length=32)
    return {
        "id": tracker_id,
        "object": "Tracker",
        "mode": "production",
        "tracking_code": pkg.tracking_number,
        "status": status,
        "status_detail": detail,
        "created_at": iso_utc(pkg.ship_time),
        "updated_at": iso_utc(sent_at),
        "signed_by": SIGNER if signed else None,
        "weight": None,
        "est_delivery_date": iso_utc(eta) if eta is not None else None,
        "shipment_id": None,
        "carrier": "USPS",
        "tracking_details": [_detail(s) for s in ordered],
        "carrier_detail": _carrier_detail(pkg, ordered),
        "finalized": status in {"delivered", "return_to_sender", "cancelled"},
        "is_return": status == "return_to_sender",
        "public_url": f"https://track.easypost.com/{stable_id(tracker_id, length=40)}",
        "fees": [],
    }


def render(items: Sequence[tuple[SimPackage, Sequence[SimScan]]], sent_at: int) -> bytes:
    """One EasyPost webhook ``Event`` for the single package in ``items``."""
    if len(items) != MAX_PACKAGES_PER_PAYLOAD:
        raise ValueError(f"an EasyPost webhook carries exactly one tracker, got {len(items)}")
    pkg, scans = items[0]
    tracker = _tracker(pkg, scans, sent_at)
    event: dict[str, Any] = {
        "id": f"evt_{stable_id(tracker['id'], sent_at, len(scans), length=32)}",
        "object": "Event",
        "mode": "production",
        "description": "tracker.created" if len(scans) <= 1 else "tracker.updated",
        "previous_attributes": {},
        "created_at": iso_utc(sent_at),
        "updated_at": iso_utc(sent_at),
        "pending_urls": [],
        "completed_urls": [],
        "user_id": "user_" + stable_id("carrierwatch-simulator", length=32),
        "status": "pending",
        "result": tracker,
    }
    return orjson.dumps(event)
