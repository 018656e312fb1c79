"""The pipeline against the independent brute-force oracle (tests/core/oracle.py)."""

from __future__ import annotations

from typing import Any

import pytest
from lifecycle_gen import CONTRACTS, DAY, arrival_batches, generate
from oracle import compute

from carrierwatch.core.pipeline import PackageOutcomeRow, Pipeline
from carrierwatch.core.windows import MetricWindowRow

GRANULARITIES = ("5m", "1h", "1d")
LATENESS = 2 * DAY
TOLERANCE = 2 * 3_600_000


def _nonzero(values: dict[str, Any]) -> bool:
    return any(values.values())


def run_pipeline(batches: list[tuple[list[Any], int | None]], pipeline: Pipeline
                 ) -> tuple[dict[tuple[Any, ...], MetricWindowRow], dict[str, PackageOutcomeRow]]:
    windows: dict[tuple[Any, ...], MetricWindowRow] = {}
    outcomes: dict[str, PackageOutcomeRow] = {}

    def keep(out: Any) -> None:
        for row in out.windows:
            old = windows.get(row.key)
            assert old is None or old.version < row.version
            windows[row.key] = row
        for outcome in out.outcomes:
            previous = outcomes.get(outcome.package_id)
            assert previous is None or previous.version < outcome.version
            outcomes[outcome.package_id] = outcome

    for batch, advance in batches:
        keep(pipeline.process(batch))
        if advance is not None:
            keep(pipeline.advance_watermark(advance))
    keep(pipeline.flush())
    return windows, outcomes


OUTCOME_FIELDS = ("region", "service_level", "status", "events", "promised_by", "pickup_due",
                  "picked_up_at", "pickup_on_time", "delivered_at", "on_time", "decided_at",
                  "attempts", "first_attempt_success", "exceptions", "flags",
                  "open_exception_since", "last_eta", "synthetic")


def check_against_oracle(seed: int, n_packages: int, batch_size: int,
                         lateness_scope: str = "shard") -> dict[str, int]:
    generated = generate(seed, n_packages, allowed_lateness_ms=LATENESS)
    batches = arrival_batches(generated.arrivals, batch_size, LATENESS)
    pipeline = Pipeline(CONTRACTS, granularities=GRANULARITIES, allowed_lateness_ms=LATENESS,
                        eta_tolerance_ms=TOLERANCE, package_retention_ms=400 * DAY,
                        window_retention_ms=400 * DAY, lateness_scope=lateness_scope)
    windows, outcomes = run_pipeline(batches, pipeline)
    expected = compute(batches, CONTRACTS, granularities=GRANULARITIES,
                       allowed_lateness_ms=LATENESS, eta_tolerance_ms=TOLERANCE,
                       lateness_scope=lateness_scope)

    got = {key[:5]: row.values() for key, row in windows.items() if _nonzero(row.values())}
    want = {key: values for key, values in expected.windows.items() if _nonzero(values)}
    assert got.keys() == want.keys()
    mismatches = [(key, name, got[key][name], want[key][name])
                  for key in want for name in want[key] if got[key][name] != want[key][name]]
    assert mismatches == []

    assert outcomes.keys() == expected.outcomes.keys()
    bad = [(pid, name, getattr(outcomes[pid], name), values[name])
           for pid, values in expected.outcomes.items() for name in OUTCOME_FIELDS
           if getattr(outcomes[pid], name) != values[name]]
    assert bad == []

    assert pipeline.stats["too_late"] == expected.too_late > 0
    assert pipeline.stats["duplicates"] == expected.duplicates > 0
    tags = set().union(*(p.tags for p in generated.packages))
    assert {"synthetic", "feed_promise", "promise_revised", "eta", "exception", "unknown_code",
            "feed_stops", "returned", "cancelled", "failed_first_attempt", "after_delivered",
            "second_delivered", "too_late", "duplicate", "no_pickup_scan"} <= tags
    totals = {name: sum(v[name] for k, v in want.items() if k[3] == "1d")
              for name in ("packages_decided", "packages_on_time", "exceptions_resolved",
                           "first_attempts", "eta_checked", "pickups_due", "too_late_events")}
    # the mix is realistic: some of everything, rates neither 0 nor 1
    assert 0 < totals["packages_on_time"] < totals["packages_decided"]
    assert all(totals.values())
    return totals


def test_pipeline_equals_oracle_small() -> None:
    check_against_oracle(seed=7, n_packages=3_000, batch_size=500)


def test_pipeline_equals_oracle_with_lateness_per_package() -> None:
    """The drivers' lateness scope: an event is too late against its own package's newest
    event time (so sharding and the interleaving of packages cannot change the result)."""
    check_against_oracle(seed=7, n_packages=3_000, batch_size=500, lateness_scope="package")


@pytest.mark.slow
def test_pipeline_equals_oracle_100k_packages() -> None:
    totals = check_against_oracle(seed=2026, n_packages=100_000, batch_size=5_000)
    assert totals["packages_decided"] > 80_000


def test_hub_dwell_equals_the_oracle() -> None:
    from oracle import hub_stays

    from carrierwatch.core.dwell import hub_dwells, hub_name

    generated = generate(23, 3_000)
    measured = 0
    for package in generated.packages:
        events = package.events + package.events[:3]  # copies change nothing
        core = [(d.hub, d.arrived_at, d.departed_at) for d in hub_dwells(
            (e.event_time, e.status,
             hub_name(e.location.city, e.location.region) if e.location else None, e.event_id)
            for e in reversed(events))]
        assert core == hub_stays(events), package.package_id
        measured += len(core)
    assert measured > 1_000  # the generator's hub scans are measured, not skipped
