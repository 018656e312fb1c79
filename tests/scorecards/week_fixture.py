"""The simulated week of the scorecard tests: its constants and the store handle."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from carrierwatch.core.model import CanonicalEvent, Location, event_id
from carrierwatch.storage import EmbeddedStore
from carrierwatch.storage.base import Store

WEEK = "2026-W10"
SYNTHETIC_TRACKING = "CWSYNFDX0000123"
HOUR = 3_600_000


@dataclass(frozen=True)
class WeekStore:
    path: Path
    replay_too_late: int

    def open(self) -> Store:
        return EmbeddedStore.open(self.path, command="pytest scorecards")


def synthetic_events() -> list[CanonicalEvent]:
    base = 1_772_618_400_000  # 2026-03-04 10:00 UTC, inside the week
    pid = f"fedex:{SYNTHETIC_TRACKING}"
    hub = Location(country="US", region="US-ZZ", city="Synthopolis")  # only here
    scans = [("info_received", 0, None, None), ("picked_up", 1, None, None),
             ("staged", 3, hub, None), ("exception", 4, hub, "damaged"),
             ("in_transit", 30, hub, None), ("delivery_attempted", 40, None, "refused"),
             ("returned", 50, None, None)]
    return [CanonicalEvent(
        event_id("fedex", pid, status, base + h * HOUR), "fedex", pid, SYNTHETIC_TRACKING,
        status, 1.0, "SYN", base + h * HOUR, base + h * HOUR + 60_000, reason=reason,
        location=where, synthetic=True, promised_by=base + 20 * HOUR)
        for status, h, where, reason in scans]
