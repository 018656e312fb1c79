"""Render simulated scans as a Metro Courier webhook: ``{"webhook_id", "sent_at", "updates": [...]}``.

The courier posts every update of a parcel once, oldest first, several parcels per POST. Times
are local wall-clock times without an offset (``"2026-03-02 14:05:00"``) next to the IANA zone of
the hub (``"tz"``); the promise and ETA use the same zone. Reasons go in ``why``; drivers'
and recipients' names are part of the real payload and are rendered as fictional placeholders,
which the transformer never reads.

Examples
--------
>>> from carrierwatch.synthetic.model import SimPackage, SimScan
>>> pkg = SimPackage("metro_courier", "MC-00012345", "same_day", 1_772_450_000_000)
>>> scan = SimScan("delivery_attempted", 1_772_460_300_000, "America/Chicago", region="TX",
...                city="Austin", postal_code="78701", reason="recipient_not_available",
...                attempt_number=1)
>>> import json
>>> update = json.loads(render([(pkg, [scan])], 1_772_460_400_000))["updates"][0]
>>> update["state"], update["why"], update["at"], update["tz"], update["attempt"]
('ATTEMPTED', 'NO_ONE_HOME', '2026-03-02 08:05:00', 'America/Chicago', 1)
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import orjson

from carrierwatch.synthetic.model import SimPackage, SimScan

__all__ = ["MAX_PACKAGES_PER_PAYLOAD", "render"]

MAX_PACKAGES_PER_PAYLOAD = 25  # the courier batches updates of up to 25 parcels per POST

_STATES = {
    "info_received": "CREATED",
    "picked_up": "PICKED_UP",
    "staged": "AT_HUB",
    "in_transit": "LINEHAUL",
    "out_for_delivery": "ON_ROUTE",
    "delivery_attempted": "ATTEMPTED",
    "delivered": "DELIVERED",
    "available_for_pickup": "AT_LOCKER",
    "exception": "ISSUE",
    "returned": "RETURNED",
    "cancelled": "CANCELLED",
}
_WHY = {
    "recipient_not_available": "NO_ONE_HOME",
    "address_issue": "BAD_ADDRESS",
    "access_issue": "NO_ACCESS",
    "customer_request": "RESCHEDULED",
    "refused": "REFUSED",
    "damaged": "DAMAGED",
    "lost": "LOST",
    "weather": "WEATHER",
    "vehicle_or_capacity": "VEHICLE",
    "customs": "CUSTOMS",
    "payment_due": "COD_UNPAID",
    "carrier_delay": "LATE_LINEHAUL",
    "other": "OTHER",
}
_FORMAT = "%Y-%m-%d %H:%M:%S"


def _local(ms: int, zone: str) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).astimezone(ZoneInfo(zone)).strftime(_FORMAT)


def _update(package: SimPackage, scan: SimScan) -> dict[str, Any]:
    state = scan.raw_code if scan.raw_code is not None else _STATES.get(scan.status, "UNSET")
    update: dict[str, Any] = {
        "parcel": package.tracking_number,
        "order_ref": package.shipment_id,
        "service": package.service_level,
        "state": state,
        "at": _local(scan.event_time, scan.zone),
        "tz": scan.zone,
        "hub": {"city": scan.city, "state": scan.region, "zip": scan.postal_code,
                "country": scan.country},
        "eta": _local(scan.eta_end, scan.zone) if scan.eta_end is not None else None,
        "promise": (_local(package.promised_by, scan.zone)
                    if package.promised_by is not None else None),
        "attempt": scan.attempt_number,
        "why": _WHY.get(scan.reason) if scan.reason else None,
        "proof": scan.proof_of_delivery if scan.status == "delivered" else None,
        "driver": {"id": "DRV-0000", "first_name": "Sample"},
    }
    return update


def render(items: Sequence[tuple[SimPackage, Sequence[SimScan]]], sent_at: int) -> bytes:
    """One webhook POST carrying the visible updates of every package in ``items``."""
    updates = [_update(package, scan) for package, scans in items
               for scan in sorted(scans, key=lambda s: s.event_time)]
    digest = hashlib.blake2b(orjson.dumps([sent_at, [p.tracking_number for p, _ in items]]),
                             digest_size=8).hexdigest()
    return orjson.dumps({
        "webhook_id": f"wh_{digest}",
        "sent_at": datetime.fromtimestamp(sent_at / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "updates": updates,
    })
