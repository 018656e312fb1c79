"""What the feed simulator and the heartbeat producers hand to a partner's format renderer.

The simulator decides *what happens* to a package (canonical scans with times, places, reasons);
each partner's renderer in ``carrierwatch.synthetic.formats.<partner_id>`` decides *how that
partner would say it*, producing the raw bytes of a real payload of that partner's format.
A renderer module exposes::

    MAX_PACKAGES_PER_PAYLOAD: int            # 1 for webhooks; >1 for APIs/batch files
    def render(items: Sequence[tuple[SimPackage, Sequence[SimScan]]], sent_at: int) -> bytes

``items`` holds the scans of each package that the partner has made visible by ``sent_at``
(a webhook that repeats history gets all of them, oldest first). Partner codes are chosen so that
the partner's own transformer maps them back to the same canonical status; a scan with
``raw_code`` set must be rendered with exactly that partner code (the simulator uses it to inject
codes the codebook does not know).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

__all__ = ["Renderer", "SimPackage", "SimScan"]


@dataclass(frozen=True, slots=True)
class SimScan:
    status: str                       # canonical status
    event_time: int                   # ms since epoch, UTC
    zone: str                         # IANA zone of the scan location
    country: str = "US"
    region: str | None = None         # state/province code, e.g. "TN"
    city: str | None = None
    postal_code: str | None = None
    reason: str | None = None         # canonical reason for attempts and exceptions
    attempt_number: int | None = None
    proof_of_delivery: str | None = None
    eta_end: int | None = None        # the partner's current ETA (end of window), UTC ms
    raw_code: str | None = None       # force this partner code (codebook-change incidents)
    visible_at: int = 0               # when the partner makes the scan available (UTC ms)


@dataclass(frozen=True, slots=True)
class SimPackage:
    partner_id: str
    tracking_number: str
    service_level: str
    ship_time: int                    # label created / order time, UTC ms
    promised_by: int | None = None    # the partner's commitment, UTC ms (None: feed sends none)
    shipment_id: str | None = None    # distinguishing id where the format has one
    synthetic: bool = False


class Renderer(Protocol):
    MAX_PACKAGES_PER_PAYLOAD: int

    def render(self, items: Sequence[tuple[SimPackage, Sequence[SimScan]]],
               sent_at: int) -> bytes: ...
