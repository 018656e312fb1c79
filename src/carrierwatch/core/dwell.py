"""Hub dwell time: how long a package sits at a hub between its arrival and departure scans.

Definition (``docs/metrics.md``, section "Hub dwell"):

* a package's events are taken once per ``event_id``, in sort order ``(event_time, status rank,
  event_id)`` (the order of :mod:`carrierwatch.core.state`);
* an **arrival** is a ``staged`` scan that has a place; the **hub** is that place:
  ``"<city>, <region>"``, or the region alone (or the city alone) when the other is missing;
* its **departure** is the next scan in sort order whose status leaves the hub: ``in_transit``,
  ``out_for_delivery`` (the destination hub's "loaded on the van") — unless another ``staged``
  scan or a terminal status (``delivered``, ``returned``, ``cancelled``) comes first, in which
  case the stay has no departure scan and is not measured (never guessed);
* the **dwell** is ``departure − arrival`` in milliseconds, attributed to the arrival's hub and
  to the time of the departure (a stay counts in the week in which it ended).

Exceptions opened at the hub are part of the stay: a package held at a hub for a damaged label
dwells there until it moves on, and that is what a partner manager wants to see. Synthetic
packages are excluded by the callers, as from every partner metric.

Examples
--------
>>> scans = [(1_000, "in_transit", "Dallas, US-TX", "a"),
...          (3_600_000, "staged", "Memphis, US-TN", "b"),
...          (3_600_000 + 5_400_000, "in_transit", "Memphis, US-TN", "c"),
...          (20_000_000, "staged", "Denver, US-CO", "d"),
...          (21_000_000, "delivered", "Denver, US-CO", "e")]
>>> hub_dwells(scans)
[HubDwell(hub='Memphis, US-TN', arrived_at=3600000, departed_at=9000000, dwell_ms=5400000)]
>>> hub_name("Memphis", "US-TN"), hub_name(None, "US-TN"), hub_name(None, None)
('Memphis, US-TN', 'US-TN', None)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from carrierwatch.core.state import STATUS_RANK

__all__ = ["ARRIVAL", "DEPARTURES", "HubDwell", "HubScan", "hub_dwells", "hub_name"]

ARRIVAL = "staged"
DEPARTURES = frozenset({"in_transit", "out_for_delivery"})
_ENDS = frozenset({"delivered", "returned", "cancelled"})
_UNKNOWN_RANK = STATUS_RANK["unknown"]

HubScan = tuple[int, str, "str | None", str]
"""``(event_time_ms, status, hub or None, event_id)``: one event of a package."""


@dataclass(frozen=True, slots=True)
class HubDwell:
    """One measured stay of a package at a hub."""

    hub: str
    arrived_at: int
    departed_at: int
    dwell_ms: int


def hub_name(city: str | None, region: str | None) -> str | None:
    """The hub a scan happened at: ``"<city>, <region>"``, or what of the two is known."""
    if city and region:
        return f"{city}, {region}"
    return city or region or None


def hub_dwells(scans: Iterable[HubScan]) -> list[HubDwell]:
    """The measured hub stays of ONE package, from its events (any order, copies allowed)."""
    unique = {scan[3]: scan for scan in scans}
    ordered = sorted(unique.values(),
                     key=lambda s: (s[0], STATUS_RANK.get(s[1], _UNKNOWN_RANK), s[3]))
    out: list[HubDwell] = []
    arrival: HubScan | None = None
    for scan in ordered:
        status = scan[1]
        if status == ARRIVAL:
            arrival = scan if scan[2] else None
        elif status in DEPARTURES:
            if arrival is not None:
                hub = arrival[2]
                assert hub is not None
                out.append(HubDwell(hub, arrival[0], scan[0], scan[0] - arrival[0]))
            arrival = None
        elif status in _ENDS:
            arrival = None
    return out
