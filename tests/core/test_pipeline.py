"""Pipeline: watermarks, corrections by replacement, side output, rollups, shards, serialisation."""

from __future__ import annotations

import zlib
from typing import Any

import pytest
from lifecycle_gen import CONTRACTS, arrival_batches, generate

from carrierwatch.core.model import CanonicalEvent, Location, event_id
from carrierwatch.core.partner import SlaContract
from carrierwatch.core.pipeline import Pipeline, PipelineOutput
from carrierwatch.core.windows import MetricWindowRow, rollup

HOUR = 3_600_000
DAY = 86_400_000
NOON = 1_772_452_800_000  # 2026-03-02 12:00 UTC (Monday)
CONTRACT = SlaContract(timezone="UTC", grace_minutes=30, pickup_cutoff="17:00",
                       transit_days={"ground": 2}, required_milestones=("picked_up", "delivered"))


def ev(status: str, t: int, pkg: str = "p1", received: int | None = None,
       **extra: Any) -> CanonicalEvent:
    extra.setdefault("location", Location(region="US-TN"))
    return CanonicalEvent(event_id=event_id("demo", pkg, status, t), partner_id="demo",
                          package_id=pkg, tracking_number=pkg, status=status, confidence=1.0,
                          raw_code=status[:3], event_time=t,
                          received_time=t + 60_000 if received is None else received, **extra)


def latest(outputs: list[PipelineOutput]) -> dict[tuple[Any, ...], MetricWindowRow]:
    rows: dict[tuple[Any, ...], MetricWindowRow] = {}
    for out in outputs:
        for row in out.windows:
            assert row.key not in rows or rows[row.key].version < row.version
            rows[row.key] = row
    return rows


def test_late_event_corrects_window_by_replacement_not_double_count() -> None:
    pipe = Pipeline({"demo": CONTRACT}, granularities=("1h",), allowed_lateness_ms=DAY)
    first = pipe.process([ev("picked_up", NOON - 5 * HOUR, promised_by=NOON),
                          ev("delivered", NOON - 10 * 60_000)])
    [row] = [r for r in first.windows if r.window_start == NOON - HOUR]
    assert (row.deliveries, row.tracking_compliant, row.packages_on_time) == (1, 1, 1)
    # a late out-for-delivery (within the allowed lateness) arrives for the same hour
    second = pipe.process([ev("out_for_delivery", NOON - 50 * 60_000)])
    [again] = [r for r in second.windows if r.window_start == NOON - HOUR]
    assert again.version > row.version
    assert again.events == 2 and again.deliveries == 1 and again.packages_on_time == 1
    assert again.events_by_status == {"delivered": 1, "out_for_delivery": 1}


def test_late_event_retracts_previous_outcome() -> None:
    pipe = Pipeline({"demo": CONTRACT}, granularities=("1h",), allowed_lateness_ms=DAY)
    out1 = pipe.process([ev("picked_up", NOON - 5 * HOUR, promised_by=NOON - 2 * HOUR),
                         ev("delivered", NOON - 10 * 60_000)])
    assert out1.outcomes[0].on_time is False
    # an earlier event with an earlier key carries the first promise: the package was on time
    out2 = pipe.process([ev("info_received", NOON - 6 * HOUR, promised_by=NOON + HOUR)])
    assert out2.outcomes[0].on_time is True
    rows = latest([out1, out2])
    decided = {k[4]: (r.packages_decided, r.packages_on_time) for k, r in rows.items()
               if r.packages_decided or r.packages_on_time}
    assert decided == {NOON - HOUR: (1, 1)}
    late_window = rows[("demo", "US-TN", "ground", "1h", NOON - 2 * HOUR, 0)]
    assert late_window.packages_decided == 0   # the retracted "late" decision at promise + grace


def test_silent_partner_looks_late_at_watermark() -> None:
    pipe = Pipeline({"demo": CONTRACT}, granularities=("1h",), allowed_lateness_ms=2 * HOUR)
    out = pipe.process([ev("picked_up", NOON - 5 * HOUR, promised_by=NOON)])
    assert out.outcomes[0].on_time is None
    # other packages' events move the watermark past promise + grace (12:30)
    out = pipe.process([ev("in_transit", NOON + 2 * HOUR + 30 * 60_000, pkg="p2")])
    by_package = {o.package_id: o for o in out.outcomes}
    assert by_package["p1"].on_time is False
    assert by_package["p1"].decided_at == NOON + 30 * 60_000
    # the delivery that finally arrives later does not make it on time
    out = pipe.process([ev("delivered", NOON + 3 * HOUR)])
    assert out.outcomes[0].on_time is False and out.outcomes[0].delivered_at == NOON + 3 * HOUR


def test_too_late_events_are_side_output_and_counted() -> None:
    pipe = Pipeline({"demo": CONTRACT}, granularities=("1h",), allowed_lateness_ms=HOUR)
    pipe.process([ev("picked_up", NOON)])
    out = pipe.process([ev("picked_up", NOON - 2 * HOUR, pkg="p2")])
    assert [(r.reason, r.event.package_id) for r in out.too_late] == \
        [("beyond_allowed_lateness", "p2")]
    assert out.events == [] and pipe.stats["too_late"] == 1
    [row] = out.windows
    assert row.window_start == NOON - 2 * HOUR and row.too_late_events == 1 and row.events == 0



def test_lateness_per_package_ignores_other_packages_and_their_order() -> None:
    """With ``lateness_scope="package"`` an event is too late only against its own package's
    newest event: another package (another shard, another partner's feed) cannot make it late,
    so any interleaving of packages gives the same applied events."""
    events = [ev("picked_up", NOON), ev("picked_up", NOON - 2 * HOUR, pkg="p2"),
              ev("in_transit", NOON - 90 * 60_000, pkg="p2"),
              ev("picked_up", NOON - 3 * HOUR + 1, pkg="p2")]
    results = []
    for order in (events, [events[1], events[0], *events[2:]], [*events[1:], events[0]]):
        pipe = Pipeline({"demo": CONTRACT}, granularities=("1h",), allowed_lateness_ms=HOUR,
                        lateness_scope="package")
        out = pipe.process(order)
        results.append(({e.event_id for e in out.events},
                        [(r.reason, r.event.package_id, r.watermark) for r in out.too_late]))
    # p2's pickup 2 h behind p1 is applied; the scan 1.5 h behind p2's newest applied event
    # (in transit, NOON - 90 min) is too late, its bound being p2's newest minus 1 h
    assert results[0] == results[1] == results[2]
    applied, late = results[0]
    assert applied == {events[0].event_id, events[1].event_id, events[2].event_id}
    assert late == [("beyond_allowed_lateness", "p2", NOON - 90 * 60_000 - HOUR)]
    shard = Pipeline({"demo": CONTRACT}, granularities=("1h",), allowed_lateness_ms=HOUR)
    assert len(shard.process(events).too_late) == 3  # the shard watermark: all of p2 too late
    with pytest.raises(ValueError, match="lateness_scope"):
        Pipeline({}, lateness_scope="partner")
    # a checkpoint written before the option existed restores with the former semantics
    state = Pipeline({}, lateness_scope="package")
    del state.__dict__["lateness_scope"]
    assert Pipeline.from_bytes(state.to_bytes()).lateness_scope == "shard"


def test_cancelled_is_excluded_and_synthetic_is_separate() -> None:
    pipe = Pipeline({"demo": CONTRACT}, granularities=("1d",), allowed_lateness_ms=HOUR)
    pipe.process([ev("info_received", NOON - 9 * HOUR, pkg="c1", promised_by=NOON),
                  ev("cancelled", NOON - 8 * HOUR, pkg="c1"),
                  ev("picked_up", NOON - 9 * HOUR, pkg="s1", promised_by=NOON, synthetic=True),
                  ev("delivered", NOON - 8 * HOUR, pkg="s1", synthetic=True)])
    out = pipe.flush()
    assert pipe.advance_watermark(NOON + DAY).outcomes == []
    rows = pipe.window_rows()
    assert sum(r.packages_decided for r in rows) == 0
    assert sum(r.synthetic_events for r in rows) == 2 and sum(r.events for r in rows) == 2
    assert pipe.outcome("s1") is not None and pipe.outcome("s1").on_time is True  # type: ignore[union-attr]
    assert pipe.outcome("c1").status == "cancelled"  # type: ignore[union-attr]
    assert out.watermark == NOON - 8 * HOUR


def test_unknown_codes_and_latency_split() -> None:
    pipe = Pipeline({"demo": CONTRACT}, granularities=("5m",))
    out = pipe.process([ev("unknown", NOON, received=NOON + 10 * 60_000,
                           partner_received_time=NOON + 4 * 60_000),
                        ev("no_such_status", NOON + 1000, received=NOON + 2000)])
    [row] = out.windows
    assert row.codebook_gap_events == 2 and row.events_by_status == {"unknown": 2}
    assert (row.latency_count, row.latency_sum_ms) == (2, 600_000 + 1000)
    assert (row.carrier_lag_count, row.carrier_lag_sum_ms) == (1, 240_000)
    assert (row.ingest_lag_count, row.ingest_lag_sum_ms) == (1, 360_000)


def _run(pipe: Pipeline, batches: list[tuple[list[CanonicalEvent], int | None]],
         final_watermark: int | None = None) -> dict[tuple[Any, ...], MetricWindowRow]:
    outputs = []
    for batch, advance in batches:
        outputs.append(pipe.process(batch))
        if advance is not None:
            outputs.append(pipe.advance_watermark(advance))
    outputs.append(pipe.flush())
    if final_watermark is not None:
        outputs.append(pipe.advance_watermark(final_watermark))
    return latest(outputs)


@pytest.fixture(scope="module")
def generated() -> list[tuple[list[CanonicalEvent], int | None]]:
    return arrival_batches(generate(3, 1_500).arrivals, 400, 2 * DAY)


def test_hourly_and_daily_rows_equal_rollup_of_5_minute_rows(
        generated: list[tuple[list[CanonicalEvent], int | None]]) -> None:
    rows = _run(Pipeline(CONTRACTS, granularities=("5m", "1h", "1d")), generated)
    five = [r for r in rows.values() if r.granularity == "5m"]
    for granularity in ("1h", "1d"):
        direct = {r.key: r.values() for r in rows.values() if r.granularity == granularity}
        rolled = {r.key: r.values() for r in rollup(five, granularity)}
        assert direct == rolled
    weekly = {r.key: r.values() for r in rollup(five, "1w")}
    assert weekly == {r.key: r.values()
                      for r in rollup([r for r in rows.values() if r.granularity == "1d"], "1w")}
    assert sum(r.events for r in five) > 5_000
    with pytest.raises(ValueError, match="cannot roll"):
        rollup([r for r in rows.values() if r.granularity == "1d"], "1h")


def test_two_shards_sum_to_one(generated: list[tuple[list[CanonicalEvent], int | None]]) -> None:
    """Each shard owns a disjoint set of packages; with the same watermark (lateness large
    enough that no event is too late for either shard, and the same final watermark) the sum
    over shards equals the single pipeline's rows."""
    events = [e for batch, _ in generated for e in batch]
    final = max(e.event_time for e in events)
    split: list[list[tuple[list[CanonicalEvent], int | None]]] = [[], []]
    for batch, advance in generated:
        for i in range(2):
            split[i].append(([e for e in batch if zlib.crc32(e.package_id.encode()) % 2 == i],
                             advance))
    one_rows = _run(Pipeline(CONTRACTS, granularities=("1h",), allowed_lateness_ms=400 * DAY),
                    generated, final)
    many_rows: dict[tuple[Any, ...], MetricWindowRow] = {}
    for shard, batches in enumerate(split):
        pipe = Pipeline(CONTRACTS, granularities=("1h",), allowed_lateness_ms=400 * DAY,
                        shard=shard)
        many_rows.update(_run(pipe, batches, final))
    assert {k[5] for k in many_rows} == {0, 1}
    expected = {k[:5]: r.values() for k, r in one_rows.items() if any(r.values().values())}
    assert _sum_shards(many_rows) == expected
    assert sum(v["packages_decided"] for v in expected.values()) > 500


def _sum_shards(rows: dict[tuple[Any, ...], MetricWindowRow]) -> dict[tuple[Any, ...], Any]:
    total: dict[tuple[Any, ...], dict[str, Any]] = {}
    for key, row in rows.items():
        values = row.values()
        into = total.setdefault(key[:5], {k: ({} if isinstance(v, dict) else 0)
                                          for k, v in values.items()})
        for name, value in values.items():
            if isinstance(value, dict):
                for k, v in value.items():
                    into[name][k] = into[name].get(k, 0) + v
            else:
                into[name] += value
    return {k: v for k, v in total.items() if any(v.values())}


def test_batch_boundaries_do_not_matter(
        generated: list[tuple[list[CanonicalEvent], int | None]]) -> None:
    events = [e for batch, _ in generated for e in batch]
    a = _run(Pipeline(CONTRACTS, granularities=("1h",)), [(events, None)])
    b = _run(Pipeline(CONTRACTS, granularities=("1h",)),
             [(events[i:i + 37], None) for i in range(0, len(events), 37)])
    assert {k: r.values() for k, r in a.items()} == {k: r.values() for k, r in b.items()}


def test_serialised_pipeline_continues_identically(
        generated: list[tuple[list[CanonicalEvent], int | None]]) -> None:
    uninterrupted = _run(Pipeline(CONTRACTS, granularities=("1h",)), generated)
    half = len(generated) // 2
    first = Pipeline(CONTRACTS, granularities=("1h",))
    outputs = []
    for batch, advance in generated[:half]:
        outputs.append(first.process(batch))
        if advance is not None:
            outputs.append(first.advance_watermark(advance))
    data = first.to_bytes()
    restored = Pipeline.from_bytes(data)
    for batch, advance in generated[half:]:
        outputs.append(restored.process(batch))
        if advance is not None:
            outputs.append(restored.advance_watermark(advance))
    outputs.append(restored.flush())
    resumed = latest(outputs)
    assert {k: r.values() for k, r in resumed.items()} == \
        {k: r.values() for k, r in uninterrupted.items()}
    print(f"\nserialised state: {len(data) / max(1, len(first.packages)):.0f} bytes/package")


def test_finished_packages_are_evicted_and_later_events_side_output() -> None:
    pipe = Pipeline({"demo": CONTRACT}, granularities=("1d",), allowed_lateness_ms=HOUR,
                    package_retention_ms=DAY, window_retention_ms=3 * DAY)
    pipe.process([ev("picked_up", NOON, promised_by=NOON + DAY),
                  ev("delivered", NOON + 5 * HOUR)])
    pipe.process([ev("in_transit", NOON + 3 * DAY, pkg="other")])
    assert "p1" not in pipe.packages and pipe.stats["evicted_packages"] == 1
    out = pipe.process([ev("in_transit", NOON + 3 * DAY + HOUR)])   # newer than the watermark
    assert [r.reason for r in out.too_late] == ["package_closed"]
    pipe.process([ev("in_transit", NOON + 10 * DAY, pkg="third")])
    assert all(k[4] >= NOON + 3 * DAY - DAY for k in pipe.windows)   # old windows dropped


def test_invalid_granularity_is_rejected() -> None:
    with pytest.raises(ValueError, match="granularity"):
        Pipeline({}, granularities=("2m",))


def _steps(pipe: Pipeline, step: tuple[list[CanonicalEvent], int | None]) -> list[PipelineOutput]:
    batch, advance = step
    outputs = [pipe.process(batch)]
    if advance is not None:
        outputs.append(pipe.advance_watermark(advance))
    return outputs


def test_a_base_and_its_deltas_continue_exactly_like_the_original(
        generated: list[tuple[list[CanonicalEvent], int | None]]) -> None:
    """Incremental checkpoints: from_bytes(base) + apply_changes(delta)... is the pipeline that
    took them: the rest of the input gives the same rows with the same versions, and a delta
    carries only what changed (retention short enough that packages, tombstones and windows
    are dropped along the way, so deletions travel in deltas too)."""
    def make() -> Pipeline:
        return Pipeline(CONTRACTS, granularities=("5m", "1h"), package_retention_ms=DAY,
                        window_retention_ms=2 * DAY, tombstone_retention_ms=DAY,
                        sweep_interval_ms=HOUR)

    original = make()
    third = len(generated) // 3
    for step in generated[:third]:
        _steps(original, step)
    base = original.to_bytes()
    original.clear_changes()
    deltas = []
    for index, step in enumerate(generated[third:2 * third]):
        _steps(original, step)
        if index % 3 == 2:
            assert original.pending_changes() < len(original.packages) + len(original.windows)
            deltas.append(original.take_changes())
    deltas.append(original.take_changes())
    assert original.pending_changes() == 0
    restored = Pipeline.from_bytes(base)
    for delta in deltas:
        restored.apply_changes(delta)
    assert restored.stats == original.stats and restored.stats["evicted_packages"] > 0
    assert sorted(restored.packages) == sorted(original.packages)
    assert restored.tombstones == original.tombstones
    assert restored._deadline_buckets == original._deadline_buckets
    assert sum(map(len, deltas)) < 3 * len(base)
    for step in generated[2 * third:]:
        assert _steps(restored, step) == _steps(original, step)
    assert restored.flush() == original.flush()
    with pytest.raises(ValueError, match="not a pipeline delta"):
        restored.apply_changes(base)


def test_changes_are_tracked_only_from_clear_changes_and_again_after_a_restore(
        generated: list[tuple[list[CanonicalEvent], int | None]]) -> None:
    """A pipeline that never checkpoints (replay) keeps no change sets, so they cannot grow
    with every package it ever saw; a restored pipeline tracks again once the driver marks the
    restored state as the base, and its deltas continue the chain exactly."""
    untracked = Pipeline(CONTRACTS, granularities=("5m", "1h"))
    half = len(generated) // 2
    for step in generated[:half]:
        _steps(untracked, step)
    assert untracked.packages and untracked.pending_changes() == 0
    with pytest.raises(RuntimeError, match="change tracking is off"):
        untracked.take_changes()

    base = untracked.to_bytes()
    restored = Pipeline.from_bytes(base)
    assert restored.pending_changes() == 0
    with pytest.raises(RuntimeError, match="change tracking is off"):
        restored.take_changes()
    restored.clear_changes()
    for step in generated[half:]:
        _steps(restored, step)
    assert restored.pending_changes() > 0
    delta = restored.take_changes()
    copy = Pipeline.from_bytes(base)
    copy.apply_changes(delta)
    assert sorted(copy.packages) == sorted(restored.packages)
    assert copy.windows.keys() == restored.windows.keys()
    assert copy.flush() == restored.flush()


def test_states_pickled_in_the_earlier_slot_state_form_still_load(
        generated: list[tuple[list[CanonicalEvent], int | None]]) -> None:
    """Package states and window aggregates pickle as compact calls now; checkpoints written
    before (the default ``__reduce_ex__`` form, a slot-state dict per object) restore to the
    same pipeline."""
    import copyreg
    import io
    import pickle

    from carrierwatch.core.state import PackageState
    from carrierwatch.core.windows import WindowAgg

    pipe = Pipeline(CONTRACTS, granularities=("1h",))
    for step in generated[:10]:
        _steps(pipe, step)

    class Legacy(pickle.Pickler):
        def reducer_override(self, obj: Any) -> Any:
            if isinstance(obj, (PackageState, WindowAgg)):
                # what object.__reduce_ex__(5) gave them: a slot-state dict per object
                return (copyreg.__newobj__,  # type: ignore[attr-defined]
                        (type(obj),), object.__getstate__(obj))
            return NotImplemented

    out = io.BytesIO()
    Legacy(out, protocol=5).dump(pipe)
    legacy = Pipeline.from_bytes(out.getvalue())
    assert len(pipe.to_bytes()) < len(out.getvalue())
    current = Pipeline.from_bytes(pipe.to_bytes())
    for step in generated[10:20]:
        assert _steps(legacy, step) == _steps(current, step)
    assert [s.snapshot() for s in legacy.packages.values()] == \
        [s.snapshot() for s in current.packages.values()]


def test_the_pipeline_module_examples_run() -> None:
    """The module's Examples (the watermark, the checkpoint deltas, ``arrival_order``)."""
    import doctest

    import carrierwatch.core.pipeline

    result = doctest.testmod(carrierwatch.core.pipeline)
    assert result.failed == 0 and result.attempted >= 20
