"""Render simulated packages as Shippo ``track_updated`` webhooks.

One package per payload: the Track with its ``tracking_history`` (oldest first) and the latest
entry repeated as ``tracking_status``, as Shippo sends it. Status and substatus codes are chosen
so that ``carrierwatch.transformers.shippo`` maps them back to the scan's canonical status and
reason where Shippo has a matching substatus. Shippo cannot say ``cancelled`` (sent as
``FAILURE/other``, an exception) nor refused, customs, payment or weather reasons (they come back
as ``other`` or ``carrier_delay``), and has no proof-of-delivery field.

``status_date`` is UTC, as Shippo documents it; ``eta`` and ``original_eta`` are UTC instants.
A scan's ``raw_code`` is written verbatim as ``STATUS/substatus`` (or a bare ``STATUS``).
Output is deterministic: ids are hashes of the package, no clock or randomness is used.

Examples
--------
>>> from carrierwatch.synthetic.model import SimPackage, SimScan
>>> pkg = SimPackage("shippo", "9205590100000000000001", "usps_priority", ship_time=1772460000000)
>>> scan = SimScan("delivered", 1772481900000, "America/Chicago", "US", "IL", "Chicago", "60601")
>>> body = render([(pkg, [scan])], sent_at=1772482000000)
>>> b'"status":"DELIVERED"' in body, b'"status_date":"2026-03-02T20:05:00Z"' in body
(True, True)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from carrierwatch.core.model import CanonicalReason as R
from carrierwatch.core.model import CanonicalStatus as S
from carrierwatch.synthetic.model import SimPackage, SimScan
from carrierwatch.transformers._aggregators import iso_utc, stable_id

__all__ = ["MAX_PACKAGES_PER_PAYLOAD", "partner_code", "render"]

MAX_PACKAGES_PER_PAYLOAD = 1

_STATUS: dict[str, tuple[str, str]] = {
    S.INFO_RECEIVED: ("PRE_TRANSIT", "information_received"),
    S.PICKED_UP: ("TRANSIT", "package_accepted"),
    S.STAGED: ("TRANSIT", "package_processed"),
    S.IN_TRANSIT: ("TRANSIT", "package_departed"),
    S.OUT_FOR_DELIVERY: ("TRANSIT", "out_for_delivery"),
    S.DELIVERY_ATTEMPTED: ("TRANSIT", "delivery_attempted"),
    S.DELIVERED: ("DELIVERED", "delivered"),
    S.AVAILABLE_FOR_PICKUP: ("TRANSIT", "pickup_available"),
    S.EXCEPTION: ("FAILURE", "other"),
    S.RETURNED: ("RETURNED", "return_to_sender"),
    S.CANCELLED: ("FAILURE", "other"),
    S.UNKNOWN: ("UNKNOWN", "other"),
}
_ATTEMPT: dict[str, tuple[str, str]] = {
    R.RECIPIENT_NOT_AVAILABLE: ("TRANSIT", "notice_left"),
    R.ACCESS_ISSUE: ("TRANSIT", "location_inaccessible"),
}
_EXCEPTION: dict[str, tuple[str, str]] = {
    R.ADDRESS_ISSUE: ("FAILURE", "address_issue"),
    R.ACCESS_ISSUE: ("FAILURE", "location_inaccessible"),
    R.DAMAGED: ("FAILURE", "package_damaged"),
    R.LOST: ("FAILURE", "package_lost"),
    R.RECIPIENT_NOT_AVAILABLE: ("FAILURE", "package_unclaimed"),
    R.CARRIER_DELAY: ("TRANSIT", "delayed"),
    R.WEATHER: ("TRANSIT", "delayed"),
    R.VEHICLE_OR_CAPACITY: ("TRANSIT", "delayed"),
    R.CUSTOMER_REQUEST: ("TRANSIT", "reschedule_delivery"),
    R.OTHER: ("TRANSIT", "package_held"),
    R.CUSTOMS: ("TRANSIT", "package_held"),
    R.PAYMENT_DUE: ("TRANSIT", "package_held"),
    R.REFUSED: ("FAILURE", "package_undeliverable"),
}
_TEXT = {
    "information_received": "Shipping label created",
    "package_accepted": "Accepted at USPS origin facility",
    "package_processed": "Processed through facility",
    "package_departed": "Departed USPS regional facility",
    "out_for_delivery": "Out for delivery",
    "delivery_attempted": "Delivery attempted",
    "notice_left": "Notice left (no authorized recipient available)",
    "location_inaccessible": "Delivery location inaccessible",
    "delivered": "Delivered, front door/porch",
    "pickup_available": "Available for pickup",
    "return_to_sender": "Returned to sender",
}


def partner_code(scan: SimScan) -> tuple[str, str | None]:
    """The ``(status, substatus code)`` Shippo would send for ``scan``.

    >>> partner_code(SimScan("exception", 0, "UTC", reason="lost"))
    ('FAILURE', 'package_lost')
    >>> partner_code(SimScan("unknown", 0, "UTC", raw_code="LIMBO"))
    ('LIMBO', None)
    """
    if scan.raw_code is not None:
        status, _, code = scan.raw_code.partition("/")
        return status, code or None
    if scan.status == S.DELIVERY_ATTEMPTED and scan.reason in _ATTEMPT:
        return _ATTEMPT[scan.reason]
    if scan.status == S.EXCEPTION and scan.reason in _EXCEPTION:
        return _EXCEPTION[scan.reason]
    return _STATUS.get(scan.status, _STATUS[S.UNKNOWN])


def _state(region: str | None) -> str | None:
    return region.split("-")[-1].upper() if region else None


def _place(scan: SimScan) -> dict[str, Any] | None:
    if not (scan.city or scan.region or scan.postal_code):
        return None
    return {"city": scan.city, "state": _state(scan.region), "zip": scan.postal_code,
            "country": scan.country}


def _status_object(pkg: SimPackage, scan: SimScan) -> dict[str, Any]:
    status, code = partner_code(scan)
    object_id = stable_id(pkg.tracking_number, scan.event_time, status, code, length=32)
    return {
        "object_created": iso_utc(max(scan.visible_at, scan.event_time)),
        "object_updated": iso_utc(max(scan.visible_at, scan.event_time)),
        "object_id": object_id,
        "status": status,
        "status_details": _TEXT.get(code or "", "Status update"),
        "status_date": iso_utc(scan.event_time),
        "substatus": ({"code": code, "text": _TEXT.get(code, "Status update"),
                       "action_required": status == "FAILURE"} if code else None),
        "location": _place(scan),
    }


def render(items: Sequence[tuple[SimPackage, Sequence[SimScan]]], sent_at: int) -> bytes:
    """One Shippo ``track_updated`` webhook for the single package in ``items``."""
    if len(items) != MAX_PACKAGES_PER_PAYLOAD:
        raise ValueError(f"a Shippo webhook carries exactly one track, got {len(items)}")
    pkg, scans = items[0]
    ordered = sorted(scans, key=lambda s: s.event_time)
    history = [_status_object(pkg, s) for s in ordered]
    eta = next((s.eta_end for s in reversed(ordered) if s.eta_end is not None), None)
    first, last = (ordered[0], ordered[-1]) if ordered else (None, None)
    data: dict[str, Any] = {
        "messages": [],
        "carrier": "usps",
        "tracking_number": pkg.tracking_number,
        "address_from": _place(first) if first else None,
        "address_to": _place(last) if last else None,
        "transaction": pkg.shipment_id,
        "original_eta": iso_utc(pkg.promised_by) if pkg.promised_by else None,
        "eta": iso_utc(eta) if eta is not None else None,
        "servicelevel": {"token": pkg.service_level, "name": None},
        "metadata": None,
        "tracking_status": history[-1] if history else {
            "object_created": iso_utc(sent_at), "object_updated": iso_utc(sent_at),
            "object_id": stable_id(pkg.tracking_number, "unknown", length=32),
            "status": "UNKNOWN", "status_details": "Status not available",
            "status_date": iso_utc(pkg.ship_time), "substatus": None, "location": None},
        "tracking_history": history,
        "test": False,
    }
    return orjson.dumps({"event": "track_updated", "test": False, "data": data})
