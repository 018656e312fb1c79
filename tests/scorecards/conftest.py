"""A simulated week with incidents for five partners, replayed into an embedded store once per
session, plus one synthetic (heartbeat) package that must appear in no scorecard."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pytest

from carrierwatch.core.model import CanonicalEvent, Location, event_id
from carrierwatch.storage import EmbeddedStore
from carrierwatch.storage.base import Store

sys.path.insert(0, str(Path(__file__).resolve().parent))

WEEK = "2026-W10"
SYNTHETIC_TRACKING = "CWSYNFDX0000123"
HOUR = 3_600_000


@dataclass(frozen=True)
class WeekStore:
    path: Path
    replay_too_late: int

    def open(self) -> Store:
        return EmbeddedStore.open(self.path, command="pytest scorecards")


def _synthetic_events() -> list[CanonicalEvent]:
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


@pytest.fixture(scope="session")
def week_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WeekStore]:
    from carrierwatch.replay import iter_inputs, run_replay
    from carrierwatch.settings import get_settings
    from carrierwatch.synthetic.simulator import simulate
    from carrierwatch.transformers.registry import load_registry

    root = tmp_path_factory.mktemp("scorecard-week")
    registry = load_registry(get_settings().home)
    simulate(5, 10, 11, ["exception_spike@fedex:4d+8h", "feed_outage@ups:5d+6h",
                         "latency_drift@dhl:3d+1d"], out_dir=root / "sim",
             packages_per_day=50, start=date(2026, 2, 28), workers=1)
    path = root / "clickhouse"
    with EmbeddedStore.open(path, command="pytest scorecards") as store:
        store.migrate()
        summary = run_replay(iter_inputs([root / "sim"]), store, registry)
        # a heartbeat package of FedEx, through the same pipeline core as the rest
        from carrierwatch.core.pipeline import Pipeline

        contracts = {p.id: p.spec.contract for p in registry}
        pipeline = Pipeline(contracts)
        out = pipeline.process(_synthetic_events())
        flushed = pipeline.flush()
        store.insert_events(_synthetic_events())
        store.insert_outcomes([*out.outcomes, *flushed.outcomes])
        windows = [*out.windows, *flushed.windows]
        assert all(w.packages_decided == 0 and w.deliveries == 0 for w in windows)
    yield WeekStore(path, summary.too_late)
