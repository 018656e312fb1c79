"""Typed outcome and window rows go into the store exactly as their dict rows do.

The replay writes :class:`PackageOutcomeRow` and :class:`MetricWindowRow` objects column by
column (:func:`carrierwatch.storage.rows.outcome_columns`, :func:`window_columns`, the Arrow map
fast path); the stream sink writes the dict rows of ``to_row()``. Both must build the same Arrow
batch, value for value, and a compacted batch must keep the latest version of every key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa  # type: ignore[import-untyped]
from lifecycle_gen import CONTRACTS, arrival_batches, generate

from carrierwatch.core.pipeline import Pipeline, PipelineOutput
from carrierwatch.sink import SinkBatch
from carrierwatch.storage.rows import arrow_table, outcome_columns, window_columns

LATENESS = 2 * 86_400_000
MIGRATIONS = Path(__file__).resolve().parents[2] / "src/carrierwatch/storage/migrations"


def _column_types(table: str) -> dict[str, str]:
    """Column types of ``table`` read from the migration DDL (no store needed)."""
    text = (MIGRATIONS / "0003_metrics.sql").read_text()
    body = text[text.index(f"CREATE TABLE IF NOT EXISTS {table}"):]
    body = body[body.index("(") + 1:body.index("\n)\nENGINE")]
    types: dict[str, str] = {}
    for line in body.splitlines():
        line = line.strip().rstrip(",")
        if line and not line.startswith("--"):
            name, _, clickhouse_type = line.partition(" ")
            types[name] = clickhouse_type.strip()
    return types


def _outputs() -> list[PipelineOutput]:
    generated = generate(11, 400, allowed_lateness_ms=LATENESS)
    pipeline = Pipeline(CONTRACTS, allowed_lateness_ms=LATENESS)
    outputs = [pipeline.process(batch)
               for batch, _ in arrival_batches(generated.arrivals, 300, LATENESS)]
    outputs.append(pipeline.flush())
    return outputs


def _transposed(rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
    return {name: [row[name] for row in rows] for name in rows[0]}


def test_typed_columns_build_the_same_arrow_batch_as_dict_rows() -> None:
    outputs = _outputs()
    outcomes = [o for out in outputs for o in out.outcomes]
    windows = [w for out in outputs for w in out.windows]
    assert any(w.latency_hist for w in windows) and any(w.resolution_hist for w in windows)
    assert any(o.delivered_at is None for o in outcomes) and any(o.on_time for o in outcomes)
    for table, typed, dicts in (
            ("package_outcomes", outcome_columns(outcomes), [o.to_row() for o in outcomes]),
            ("metric_windows", window_columns(windows), [w.to_row() for w in windows])):
        types = _column_types(table)
        fast = arrow_table(table, types, typed)
        slow = arrow_table(table, types, _transposed(dicts))
        assert fast.schema == slow.schema
        for name in fast.column_names:
            assert fast.column(name).equals(slow.column(name)), name


def test_map_fast_path_falls_back_for_other_values() -> None:
    types = {"m": "Map(UInt16, Int64)"}
    table = arrow_table("t", types, {"m": [{1: 2}, {}, {3: 4, 5: 6}]})
    assert table.column("m").to_pylist() == [[(1, 2)], [], [(3, 4), (5, 6)]]
    pairs = arrow_table("t", types, {"m": [[(1, 2)], []]})
    assert pairs.column("m").type == pa.map_(pa.uint16(), pa.int64())


def test_compact_keeps_the_latest_version_of_each_key() -> None:
    outputs = _outputs()
    batch = SinkBatch()
    for out in outputs:
        batch.add_output(out, typed=True)
    before = len(batch.windows) + len(batch.outcomes)
    latest_windows: dict[Any, Any] = {}
    for row in batch.windows:
        if row.key not in latest_windows or latest_windows[row.key].version < row.version:
            latest_windows[row.key] = row
    latest_outcomes = {o.package_id: o for o in sorted(batch.outcomes, key=lambda o: o.version)}
    batch.compact()
    assert len(batch.windows) + len(batch.outcomes) < before
    assert {w.key: w for w in batch.windows} == latest_windows
    assert {o.package_id: o for o in batch.outcomes} == latest_outcomes
    # a typed batch still crosses processes as JSON with every row
    back = SinkBatch.from_json(batch.to_json())
    assert len(back.rows["metric_windows"]) == len(batch.windows)
    assert len(back.rows["package_outcomes"]) == len(batch.outcomes)
