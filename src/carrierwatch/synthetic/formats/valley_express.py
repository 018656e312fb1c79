"""Render simulated scans as a Valley Express CSV batch file (one row per scan, oldest first).

Times are local wall-clock times without an offset, next to the IANA zone of the scan
(``2026-03-02 14:05`` — seconds only when they are not zero); the promise is ISO 8601 with the
offset of the package's first scan zone. Reasons go in the ``reason`` column as Valley Express's
two-letter codes.

Examples
--------
>>> from carrierwatch.synthetic.model import SimPackage, SimScan
>>> pkg = SimPackage("valley_express", "VX100234", "std", 1_772_450_000_000)
>>> scan = SimScan("delivery_attempted", 1_772_485_500_000, "America/Boise", region="ID",
...                city="Boise", postal_code="83702", reason="recipient_not_available")
>>> print(render([(pkg, [scan])], 1_772_490_000_000).decode(), end="")
tracking_number,status_code,local_timestamp,time_zone,location,reason,service_level,promised_by
VX100234,ATT,2026-03-02 14:05,America/Boise,"Boise, ID 83702",NH,STD,
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from carrierwatch.synthetic.model import SimPackage, SimScan

__all__ = ["HEADER", "MAX_PACKAGES_PER_PAYLOAD", "render"]

MAX_PACKAGES_PER_PAYLOAD = 500  # one batch file holds the scans of many packages

HEADER = ("tracking_number", "status_code", "local_timestamp", "time_zone", "location", "reason",
          "service_level", "promised_by")

_STATUS = {
    "info_received": "MAN",
    "picked_up": "PUP",
    "staged": "SRT",
    "in_transit": "DEP",
    "out_for_delivery": "OFD",
    "delivery_attempted": "ATT",
    "delivered": "DLV",
    "available_for_pickup": "HLD",
    "exception": "EXC",
    "returned": "RTS",
    "cancelled": "CAN",
}
_REASON = {
    "recipient_not_available": "NH",
    "address_issue": "AD",
    "access_issue": "AC",
    "customer_request": "CR",
    "refused": "RF",
    "damaged": "DM",
    "lost": "LS",
    "weather": "WX",
    "vehicle_or_capacity": "VH",
    "customs": "CU",
    "payment_due": "PD",
    "carrier_delay": "DL",
    "other": "OT",
}


def _local(ms: int, zone: str) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).astimezone(ZoneInfo(zone))


def _stamp(moment: datetime) -> str:
    if moment.microsecond:
        return moment.strftime("%Y-%m-%d %H:%M:%S.") + f"{moment.microsecond // 1000:03d}"
    if moment.second:
        return moment.strftime("%Y-%m-%d %H:%M:%S")
    return moment.strftime("%Y-%m-%d %H:%M")


def _place(scan: SimScan) -> str:
    if not scan.city or not scan.region:
        return ""
    return f"{scan.city}, {scan.region}" + (f" {scan.postal_code}" if scan.postal_code else "")


def render(items: Sequence[tuple[SimPackage, Sequence[SimScan]]], sent_at: int) -> bytes:
    """One CSV batch file with every visible scan of every package in ``items``."""
    del sent_at  # the file name carries the drop time, not the content
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(HEADER)
    for package, scans in items:
        ordered = sorted(scans, key=lambda s: s.event_time)
        promise = ""
        if package.promised_by is not None and ordered:
            promise = _local(package.promised_by, ordered[0].zone).isoformat(timespec="seconds")
        for scan in ordered:
            code = scan.raw_code if scan.raw_code is not None else _STATUS.get(scan.status, "UNK")
            writer.writerow((
                package.tracking_number,
                code,
                _stamp(_local(scan.event_time, scan.zone)),
                scan.zone,
                _place(scan),
                _REASON.get(scan.reason or "", ""),
                package.service_level.upper(),
                promise,
            ))
    return out.getvalue().encode("utf-8")
