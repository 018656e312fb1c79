"""Render simulated packages as AfterShip tracking webhooks (``tracking_update``).

One package per payload, with every checkpoint visible at ``sent_at`` (oldest first), as
AfterShip sends the whole Tracking. Subtags are chosen so that
``carrierwatch.transformers.aftership`` maps them back to the scan's canonical status and reason
where AfterShip has a matching subtag (``staged`` has none and is sent as ``InTransit_001``; the
reason of an access or customer-request problem comes back as ``unknown``).

``checkpoint_time`` is written as AfterShip does: the scan's local time, without an offset when
the place pins the zone down (a single-zone state or country, outside a DST fold) and with the
offset otherwise; ``created_at`` (AfterShip's receipt) is the scan's ``visible_at`` in UTC. A
scan's ``raw_code`` is written verbatim as the subtag (its tag is the part before ``_``).
Output is deterministic: ids are hashes of the package, no clock or randomness is used.

Examples
--------
>>> from carrierwatch.synthetic.model import SimPackage, SimScan
>>> pkg = SimPackage("aftership", "CW1000", "FedEx Ground", ship_time=1772460000000)
>>> scan = SimScan("delivered", 1772481900000, "America/Chicago", "US", "IL", "Chicago", "60601")
>>> body = render([(pkg, [scan])], sent_at=1772482000000)
>>> b'"subtag":"Delivered_001"' in body, b'"checkpoint_time":"2026-03-02T14:05:00"' in body
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
from carrierwatch.core.timeutil import _ALPHA3, zone_for
from carrierwatch.synthetic.model import SimPackage, SimScan
from carrierwatch.transformers._aggregators import (
    iso_local,
    local_is_unambiguous,
    stable_id,
)

__all__ = ["MAX_PACKAGES_PER_PAYLOAD", "SIGNER", "partner_code", "render"]

MAX_PACKAGES_PER_PAYLOAD = 1
SIGNER = "R. SYNTHETIC"  # fictional signer, written only for signature deliveries
_ISO3 = {alpha2: alpha3 for alpha3, alpha2 in _ALPHA3.items()}

_STATUS: dict[str, str] = {
    S.INFO_RECEIVED: "InfoReceived_001",
    S.PICKED_UP: "InTransit_002",
    S.STAGED: "InTransit_001",
    S.IN_TRANSIT: "InTransit_001",
    S.OUT_FOR_DELIVERY: "OutForDelivery_001",
    S.DELIVERY_ATTEMPTED: "AttemptFail_001",
    S.DELIVERED: "Delivered_001",
    S.AVAILABLE_FOR_PICKUP: "AvailableForPickup_001",
    S.EXCEPTION: "Exception_001",
    S.RETURNED: "Exception_011",
    S.CANCELLED: "Exception_020",
    S.UNKNOWN: "Pending_001",
}
_EXCEPTION: dict[str, str] = {
    R.ADDRESS_ISSUE: "Exception_007",
    R.REFUSED: "Exception_003",
    R.CUSTOMS: "Exception_004",
    R.PAYMENT_DUE: "Exception_006",
    R.DAMAGED: "Exception_012",
    R.LOST: "Exception_013",
    R.WEATHER: "Exception_017",
    R.CARRIER_DELAY: "Exception_019",
    R.VEHICLE_OR_CAPACITY: "Exception_016",
    R.RECIPIENT_NOT_AVAILABLE: "Exception_008",
    R.OTHER: "Exception_009",
}
_MESSAGE = {
    "InfoReceived": "Shipment information sent to carrier",
    "InTransit": "In transit",
    "OutForDelivery": "On FedEx vehicle for delivery",
    "AttemptFail": "Delivery attempted",
    "Delivered": "Delivered",
    "AvailableForPickup": "Ready for pickup at retail location",
    "Exception": "Delivery exception",
    "Pending": "No information yet",
}


def partner_code(scan: SimScan) -> tuple[str, str]:
    """The ``(tag, subtag)`` AfterShip would send for ``scan``.

    >>> partner_code(SimScan("delivery_attempted", 0, "UTC", reason="recipient_not_available"))
    ('AttemptFail', 'AttemptFail_002')
    >>> partner_code(SimScan("delivered", 0, "UTC", proof_of_delivery="signature"))
    ('Delivered', 'Delivered_003')
    """
    if scan.raw_code is not None:
        subtag = scan.raw_code
    elif scan.status == S.EXCEPTION and scan.reason in _EXCEPTION:
        subtag = _EXCEPTION[scan.reason]
    elif scan.status == S.DELIVERY_ATTEMPTED and scan.reason == R.RECIPIENT_NOT_AVAILABLE:
        subtag = "AttemptFail_002"
    elif scan.status == S.DELIVERED and scan.proof_of_delivery == "signature":
        subtag = "Delivered_003"
    else:
        subtag = _STATUS.get(scan.status, _STATUS[S.UNKNOWN])
    return subtag.split("_", 1)[0], subtag


def _state(region: str | None) -> str | None:
    return region.split("-")[-1].upper() if region else None


def _iso3(country: str) -> str:
    return _ISO3.get(country.upper(), country.upper())


def _utc(ms: int) -> str:
    return iso_local(ms, "UTC")


def _checkpoint_time(scan: SimScan) -> str:
    pinned = zone_for(scan.country, _state(scan.region)) == (scan.zone, True)
    naive = (pinned and bool(scan.region) and scan.event_time % 1000 == 0
             and local_is_unambiguous(scan.event_time, scan.zone))
    return iso_local(scan.event_time, scan.zone, offset=not naive)


def _checkpoint(pkg: SimPackage, scan: SimScan) -> dict[str, Any]:
    tag, subtag = partner_code(scan)
    city, state = scan.city, _state(scan.region)
    place = ", ".join(p for p in (city.upper() if city else None, state, _iso3(scan.country)) if p)
    return {
        "slug": "fedex",
        "created_at": _utc(max(scan.visible_at, scan.event_time)),
        "checkpoint_time": _checkpoint_time(scan),
        "city": city.upper() if city else None,
        "coordinates": [],
        "country_iso3": _iso3(scan.country),
        "country_name": None,
        "message": _MESSAGE.get(tag, "Status update"),
        "state": state,
        "tag": tag,
        "subtag": subtag,
        "subtag_message": _MESSAGE.get(tag, "Status update"),
        "zip": scan.postal_code,
        "location": place or None,
        "raw_tag": stable_id(subtag, length=4).upper(),
        "events": [],
        "source": "carrier",
    }


def _local_date(ms: int, zone: str) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=ZoneInfo(zone)).strftime("%Y-%m-%d")


def render(items: Sequence[tuple[SimPackage, Sequence[SimScan]]], sent_at: int) -> bytes:
    """One AfterShip ``tracking_update`` webhook for the single package in ``items``."""
    if len(items) != MAX_PACKAGES_PER_PAYLOAD:
        raise ValueError(f"an AfterShip webhook carries exactly one tracking, got {len(items)}")
    pkg, scans = items[0]
    ordered = sorted(scans, key=lambda s: s.event_time)
    last = ordered[-1] if ordered else None
    tag, subtag = partner_code(last) if last else ("Pending", "Pending_001")
    eta = next((s.eta_end for s in reversed(ordered) if s.eta_end is not None), None)
    attempts = [s for s in ordered if s.status == S.DELIVERY_ATTEMPTED]
    signed = any(s.status == S.DELIVERED and s.proof_of_delivery == "signature"
                 for s in ordered)
    dest_zone = last.zone if last else "UTC"
    tracking_id = pkg.shipment_id or stable_id(pkg.partner_id, pkg.tracking_number,
                                               pkg.ship_time, length=32)
    msg: dict[str, Any] = {
        "id": tracking_id,
        "tracking_number": pkg.tracking_number,
        "slug": "fedex",
        "active": tag not in {"Delivered", "Expired"},
        "created_at": _utc(pkg.ship_time),
        "updated_at": _utc(sent_at),
        "tag": tag,
        "subtag": subtag,
        "subtag_message": _MESSAGE.get(tag, "Status update"),
        "shipment_type": pkg.service_level,
        "destination_country_iso3": _iso3(last.country) if last else None,
        "destination_state": _state(last.region) if last else None,
        "destination_city": last.city.upper() if last and last.city else None,
        "destination_postal_code": last.postal_code if last else None,
        "order_promised_delivery_date": (_local_date(pkg.promised_by, dest_zone)
                                         if pkg.promised_by else None),
        "expected_delivery": iso_local(eta, dest_zone) if eta is not None else None,
        "latest_estimated_delivery": (
            {"type": "specific", "source": "Carrier EDD",
             "datetime": iso_local(eta, dest_zone), "datetime_min": None, "datetime_max": None}
            if eta is not None else None),
        "first_attempted_at": iso_local(attempts[0].event_time, attempts[0].zone)
        if attempts else None,
        "failed_delivery_attempts": len({a.event_time for a in attempts}),
        "signed_by": SIGNER if signed else None,
        "checkpoints": [_checkpoint(pkg, s) for s in ordered],
    }
    body = {
        "ts": sent_at // 1000,
        "event": "tracking_update",
        "event_id": _uuid(tracking_id, sent_at, len(ordered)),
        "is_tracking_first_tag": len(ordered) <= 1,
        "msg": msg,
    }
    return orjson.dumps(body)


def _uuid(*parts: object) -> str:
    h = stable_id(*parts, length=32)
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:32]}"
