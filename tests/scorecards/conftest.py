"""A simulated week with incidents for five partners, replayed into an embedded store once per
session, plus one synthetic (heartbeat) package that must appear in no scorecard."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from week_fixture import WeekStore, synthetic_events

from carrierwatch.storage import EmbeddedStore


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
        out = pipeline.process(synthetic_events())
        flushed = pipeline.flush()
        store.insert_events(synthetic_events())
        store.insert_outcomes([*out.outcomes, *flushed.outcomes])
        windows = [*out.windows, *flushed.windows]
        assert all(w.packages_decided == 0 and w.deliveries == 0 for w in windows)
    yield WeekStore(path, summary.too_late)
