"""Shared pieces of the feed simulator tests: the small simulation every test reads."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from carrierwatch.core.model import CanonicalEvent
from carrierwatch.synthetic.incidents import Incident
from carrierwatch.synthetic.rawlog import RawRecord, iter_rawlog, rawlog_name
from carrierwatch.synthetic.simulator import Manifest, simulate
from carrierwatch.transformers.base import TransformResult
from carrierwatch.transformers.registry import PartnerRegistry

ROOT = Path(__file__).resolve().parents[2]
SEED = 20260302
DAYS = 5
PER_DAY = 80
INCIDENTS = (
    "feed_outage@fedex:2d+6h",             # a webhook feed: queued, delivered after
    "feed_outage@ups:2d12h+8h",            # a polled feed: polls fail, then full history
    "feed_outage@valley_express:2d+1d",    # a batch feed: the day's drop is missed
    "exception_spike@easypost:2d+1d",
    "codebook_change@dhl:3d+1d",
    "latency_drift@aftership:2d+2d",
    "peak_day@shippo:2d+1d",
)


@dataclass
class PartnerOutput:
    """A partner's raw log and what its real transformer made of every record."""

    records: list[RawRecord] = field(default_factory=list)
    results: list[TransformResult] = field(default_factory=list)

    def events(self) -> Iterator[tuple[RawRecord, CanonicalEvent]]:
        for record, result in zip(self.records, self.results, strict=True):
            for event in result.events:
                yield record, event

    def unique_events(self) -> dict[str, CanonicalEvent]:
        """Events by id, first received first (duplicates and repeated history collapse)."""
        unique: dict[str, CanonicalEvent] = {}
        for _, event in self.events():
            unique.setdefault(event.event_id, event)
        return unique


@dataclass
class Run:
    out_dir: Path
    manifest: Manifest
    outputs: dict[str, PartnerOutput]

    def incident(self, kind: str, partner: str) -> Incident:
        return next(i for i in self.manifest.incidents if i.kind == kind and i.partner == partner)


def build_run(out_dir: Path, registry: PartnerRegistry) -> Run:
    """Simulate every registered partner with :data:`INCIDENTS`; transform every record."""
    manifest = simulate(9, DAYS, SEED, INCIDENTS, out_dir, PER_DAY, "2026-03-02", home=ROOT)
    outputs: dict[str, PartnerOutput] = {}
    for partner_id in manifest.partners:
        partner = registry.get(partner_id)
        output = PartnerOutput()
        for record in iter_rawlog(out_dir / rawlog_name(partner_id)):
            output.records.append(record)
            output.results.append(partner.transform(record.body, record.received_time,
                                                    record.headers))
        outputs[partner_id] = output
    return Run(out_dir, manifest, outputs)
