"""The anomaly monitor in the stream driver's sink: observed batch by batch, its rows written with
the batch, its state saved after each write and restored after a restart. No Kafka needed: the
batches are what the track agent produces (core pipeline output over simulated feeds)."""

from __future__ import annotations

from pathlib import Path

from carrierwatch.anomaly.monitor import AnomalyMonitor
from carrierwatch.replay import iter_inputs, pipeline_for
from carrierwatch.settings import Settings
from carrierwatch.sink import SinkBatch
from carrierwatch.storage import open_store
from carrierwatch.streams.sink import SinkMetrics, SinkMonitor, SinkWriter
from carrierwatch.streams.topology import StreamConfig
from carrierwatch.synthetic.simulator import simulate
from carrierwatch.transformers.registry import load_registry

ROOT = Path(__file__).resolve().parents[2]


def _batches(sim: Path, *, typed: bool = False) -> list[SinkBatch]:
    registry = load_registry(ROOT)
    pipeline = pipeline_for(registry, version_base=1)
    out, pending = [], []
    for record in iter_inputs([sim]):
        pending.extend(registry.get(record.partner).transform(record.body,
                                                              record.received_time).events)
        if len(pending) >= 2_000:
            batch = SinkBatch()
            batch.add_output(pipeline.process(pending), typed=typed)
            out.append(batch)
            pending = []
    batch = SinkBatch()
    batch.add_output(pipeline.process(pending), typed=typed)
    out.append(batch)
    return out


def test_sink_runs_the_monitor_and_survives_a_restart(tmp_path: Path) -> None:
    simulate(["fedex", "easypost"], 3, 11, [], out_dir=tmp_path / "sim", packages_per_day=60,
             warmup_days=0)
    batches = _batches(tmp_path / "sim")
    half = len(batches) // 2
    state = tmp_path / "monitor.bin"
    metrics = SinkMetrics()
    with open_store(Settings(data_dir=tmp_path / "data"), migrate=True) as store:
        writer = SinkWriter(store, StreamConfig(), metrics, monitor=SinkMonitor(state))
        for batch in batches[:half]:
            writer.add(batch)
            assert writer.try_write()
        assert state.exists()
        # a restarted sink restores the monitor saved after its last write
        restored = SinkMonitor(state, metrics.registry)
        writer = SinkWriter(store, StreamConfig(), SinkMetrics(), monitor=restored)
        for batch in batches[half:]:
            writer.add(batch)
            assert writer.try_write()
        stored = {(p, m, w, round(score, 9), bool(flag)) for p, m, w, score, flag in store.query(
            "SELECT partner_id, metric, toUnixTimestamp64Milli(window_start), score, is_anomaly "
            "FROM anomalies FINAL")}

    # the same batches through one uninterrupted monitor score the same windows
    reference = AnomalyMonitor()
    expected: set[tuple[str, str, int, float, bool]] = set()
    for batch in _batches(tmp_path / "sim"):
        rows = [r for r in batch.rows.get("metric_windows", ()) if r["granularity"] == "5m"]
        from carrierwatch.core.timeutil import to_ms
        from carrierwatch.core.windows import MetricWindowRow

        windows = [MetricWindowRow(**{**r, "window_start": to_ms(r["window_start"])})
                   for r in rows]
        verdicts = reference.observe(windows, batch.dead_letters, arrivals=batch.events)
        for row in verdicts.anomalies:
            expected.add((row["partner_id"], row["metric"], to_ms(row["window_start"]),
                          round(row["score"], 9), bool(row["is_anomaly"])))
    # the restarted sink wrote exactly the scores of an uninterrupted monitor
    assert stored == expected
    fedex_volume = [w for p, m, w, _, _ in stored if (p, m) == ("fedex", "volume")]
    assert len(fedex_volume) >= 288   # at least a day of 5-minute windows scored
    assert restored.exporter.registry is metrics.registry


def test_typed_batches_are_observed_like_dict_rows(tmp_path: Path) -> None:
    """The worker's typed window rows give the monitor the same verdicts as dict rows."""
    simulate(["fedex", "easypost"], 2, 5, [], out_dir=tmp_path / "sim", packages_per_day=60,
             warmup_days=0)
    verdicts = []
    for typed in (False, True):
        monitor = SinkMonitor(tmp_path / f"monitor-{typed}.bin")
        rows = []
        for batch in _batches(tmp_path / "sim", typed=typed):
            monitor.observe(batch)
            rows.extend(batch.rows.get("anomalies", ()))
        verdicts.append(rows)
    assert verdicts[0] == verdicts[1] and len(verdicts[0]) > 100
