"""The replay driver end to end into the embedded store (chDB), and its idempotence."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from carrierwatch.replay import iter_inputs, result_snapshot, run_replay
from carrierwatch.settings import Settings
from carrierwatch.storage import open_store
from carrierwatch.transformers.registry import load_registry

ROOT = Path(__file__).resolve().parents[1]
REGISTRY = load_registry(ROOT)
SAMPLE_DIRS = [ROOT / "samples" / p for p in REGISTRY.ids()]


def _expected_unique_events() -> dict[str, int]:
    """Independent count: unique event ids per partner straight from the transformers."""
    ids: dict[str, set[str]] = {}
    for directory in SAMPLE_DIRS:
        partner = REGISTRY.get(directory.name)
        for sample in sorted(directory.iterdir()):
            received = int(sample.stat().st_mtime * 1000)  # as replay receives a payload file
            for event in partner.transform(sample.read_bytes(), received).events:
                ids.setdefault(partner.id, set()).add(event.event_id)
    return {k: len(v) for k, v in ids.items()}


def test_replay_twice_gives_identical_results(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    with open_store(settings, migrate=True) as store:
        first = run_replay(iter_inputs(SAMPLE_DIRS), store, REGISTRY)
        after_one = result_snapshot(store)
        second = run_replay(iter_inputs(SAMPLE_DIRS), store, REGISTRY)
        after_two = result_snapshot(store)
    assert first.events == second.events > 0
    assert after_one == after_two
    # every unique event is stored once, whatever the duplicates and the second replay
    stored = {row[0]: (row[1], row[2]) for row in after_two["canonical_events"]}
    for partner_id, unique in _expected_unique_events().items():
        assert stored[partner_id] == (unique, unique)
    assert sum(row[-1] for row in after_two["dead_letters"]) == first.dead_letters


def test_replay_cli_prints_a_summary(tmp_path: Path) -> None:
    exe = Path(sys.executable).parent / "carrierwatch"
    done = subprocess.run([exe, "replay", "--no-progress", *map(str, SAMPLE_DIRS)],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path,
                          env={"PATH": str(exe.parent), "CARRIERWATCH_DATA_DIR": str(tmp_path),
                               "CARRIERWATCH_HOME": str(ROOT)})
    # the samples hold error payloads on purpose: "completed with dead letters"
    assert done.returncode == 3, done.stderr
    assert "canonical events" in done.stdout and "dead letters" in done.stdout
    assert "<" not in done.stdout  # no object reprs
    with open_store(Settings(data_dir=tmp_path)) as store:
        assert store.query("SELECT count() FROM canonical_events FINAL")[0][0] > 100


def test_unknown_partner_folder_is_a_usage_error(tmp_path: Path) -> None:
    folder = tmp_path / "nosuchpartner"
    folder.mkdir()
    (folder / "x.json").write_text("{}")
    with pytest.raises(Exception, match="unknown partner 'nosuchpartner'"):
        list(iter_inputs([folder], registry=REGISTRY))


def test_replay_runs_the_anomaly_monitor_idempotently(tmp_path: Path) -> None:
    from carrierwatch.anomaly.monitor import AnomalyMonitor
    from carrierwatch.synthetic.simulator import simulate

    simulate(["fedex", "ups"], 2, 5, ["feed_outage@ups:1d+4h"], out_dir=tmp_path / "sim",
             packages_per_day=80, warmup_days=0)
    with open_store(Settings(data_dir=tmp_path), migrate=True) as store:
        summary = run_replay(iter_inputs([tmp_path / "sim"]), store, REGISTRY,
                             monitor=AnomalyMonitor())
        query = ("SELECT partner_id, metric, count(), countIf(is_anomaly) FROM anomalies FINAL "
                 "GROUP BY partner_id, metric ORDER BY partner_id, metric")
        first = store.query(query)
        run_replay(iter_inputs([tmp_path / "sim"]), store, REGISTRY, monitor=AnomalyMonitor())
        assert store.query(query) == first
    scored = {(partner, metric): windows for partner, metric, windows, _ in first}
    # both partners' streams were scored, window by window, for at least a day of 5-min windows
    assert {p for p, _ in scored} == {"fedex", "ups"}
    assert scored[("ups", "volume")] >= 288
    assert summary.anomalies == sum(row[3] for row in first)


def test_buffered_compacted_writes_equal_a_write_per_batch(tmp_path: Path) -> None:
    """Rows buffered across batches, superseded versions dropped, give the same store contents
    as writing every batch's rows at once (the results are a function of the input alone)."""
    from carrierwatch.replay import pipeline_for
    from carrierwatch.synthetic.simulator import simulate

    simulate(["fedex", "ups"], 2, 3, [], out_dir=tmp_path / "sim", packages_per_day=60,
             warmup_days=0)
    snapshots = []
    rows_written = []
    for name, write_rows in (("each", 1), ("buffered", 10**9)):
        with open_store(Settings(data_dir=tmp_path / name), migrate=True) as store:
            summary = run_replay(iter_inputs([tmp_path / "sim"]), store, REGISTRY,
                                 pipeline=pipeline_for(REGISTRY, version_base=0),
                                 batch_events=400, write_rows=write_rows)
            snapshots.append(result_snapshot(store))
            rows_written.append(summary.rows_written)
    assert snapshots[0] == snapshots[1]
    assert snapshots[0]["metric_windows"] and snapshots[0]["package_outcomes"]
    assert rows_written[1] < rows_written[0]
