"""Who is accountable for an exception or a failed delivery attempt, from its canonical reason.

A partner must not be blamed for a consignee's refusal: scorecards split exceptions and failed
attempts by the party the canonical reason points at. The default mapping (``docs/metrics.md``,
section "Accountability") follows the carrier scorecards of large shippers: the carrier answers
for what happens in its network, and for every failure it does not explain (``other``,
``unknown`` or no reason at all), so that reporting reasons pays off. A contract may override
single reasons (``accountability:`` in ``partners/<id>.yaml``).

>>> accountable_party("refused"), accountable_party("lost"), accountable_party(None)
('consignee', 'carrier', 'carrier')
>>> accountable_party("weather", {"weather": "carrier"})
'carrier'
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

__all__ = ["ACCOUNTABILITY", "PARTIES", "Party", "accountable_party"]

Party = Literal["carrier", "consignee", "shipper", "customs", "force_majeure"]
PARTIES: tuple[Party, ...] = ("carrier", "consignee", "shipper", "customs", "force_majeure")
"""The accountable parties, in report order (``shipper`` = the retailer who sent the package)."""

ACCOUNTABILITY: Mapping[str, Party] = {
    "recipient_not_available": "consignee",
    "access_issue": "consignee",        # gate code, locked building: the consignee's premises
    "customer_request": "consignee",    # reschedule, hold
    "refused": "consignee",
    "payment_due": "consignee",         # duties or cash on delivery owed by the recipient
    "address_issue": "shipper",         # the address the retailer gave the partner
    "customs": "customs",
    "weather": "force_majeure",
    "damaged": "carrier",
    "lost": "carrier",
    "vehicle_or_capacity": "carrier",
    "carrier_delay": "carrier",
    "other": "carrier",                 # unexplained failures stay with the carrier
    "unknown": "carrier",
}


def accountable_party(reason: str | None,
                      overrides: Mapping[str, str] | None = None) -> str:
    """The party accountable for a failure with canonical ``reason`` (``carrier`` if unknown)."""
    key = reason or "unknown"
    if overrides and key in overrides:
        return overrides[key]
    return ACCOUNTABILITY.get(key, "carrier")
