"""The NAB harness and its command on a real NAB series."""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from carrierwatch.anomaly import make_detector
from carrierwatch.anomaly.cli import anomaly
from carrierwatch.anomaly.nab import load_corpus, read_series, run_detector
from carrierwatch.cli import run
from carrierwatch.testing import missing_component


def _nab_dir() -> Path:
    """The shared NAB subset: CARRIERWATCH_NAB_DIR, else ``shared/nab`` beside the checkout."""
    configured = os.environ.get("CARRIERWATCH_NAB_DIR")
    if configured:
        return Path(configured)
    return Path(__file__).resolve().parents[3] / "shared" / "nab"


NAB = _nab_dir()
NAME = "realTraffic/speed_7578.csv"



@pytest.fixture(autouse=True)
def _nab_subset() -> None:
    if not (NAB / "data" / NAME).is_file():
        missing_component("nab-subset", f"no NAB subset at {NAB} (set CARRIERWATCH_NAB_DIR)")


@pytest.fixture()
def small_corpus(tmp_path: Path) -> tuple[Path, Path]:
    data = tmp_path / "data"
    (data / "realTraffic").mkdir(parents=True)
    shutil.copy(NAB / "data" / NAME, data / NAME)
    windows = json.loads((NAB / "combined_windows.json").read_text())
    windows_file = tmp_path / "windows.json"
    windows_file.write_text(json.dumps({NAME: windows[NAME]}))
    return data, windows_file


def test_scores_depend_on_past_rows_only() -> None:
    timestamps, values = read_series(NAB / "data" / NAME)
    full = run_detector(make_detector("ensemble"), timestamps, values)
    prefix = run_detector(make_detector("ensemble"), timestamps[:600], values[:600])
    assert full[:600] == prefix
    changed = list(values)
    changed[600:] = [v * 3 for v in values[600:]]
    rerun = run_detector(make_detector("ensemble"), timestamps, changed)
    assert rerun[:600] == full[:600]  # later rows never leak into earlier scores
    assert rerun[600] > full[600]  # the changed row itself is scored from its own value


def test_nab_command_writes_result_files_and_scores(small_corpus: tuple[Path, Path],
                                                    tmp_path: Path) -> None:
    data, windows_file = small_corpus
    out = tmp_path / "out"
    result = CliRunner().invoke(anomaly, [
        "nab", "--data", str(data), "--windows", str(windows_file), "--out", str(out),
        "--detector", "adaptive", "--profiles", str(NAB / "profiles.json")])
    assert result.exit_code == 0, result.output
    assert "standard" in result.output
    result_file = out / "adaptive" / "realTraffic" / "adaptive_speed_7578.csv"
    with result_file.open() as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["timestamp", "value", "anomaly_score", "label"]
    corpus = load_corpus(data, windows_file)
    assert len(rows) == len(corpus[0].values) == 1127
    labelled = [i for i, row in enumerate(rows) if row["label"] == "1"]
    expected = [i for left, right in corpus[0].windows for i in range(left, right + 1)]
    assert labelled == expected and len(corpus[0].windows) == 4
    assert rows[labelled[0]]["timestamp"] == "2015-09-11 15:34:00"
    assert all(0.0 <= float(row["anomaly_score"]) <= 1.0 for row in rows)
    summary = json.loads((out / "adaptive" / "adaptive_scores.json").read_text())
    assert set(summary["profiles"]) == {"standard", "reward_low_FP_rate", "reward_low_FN_rate"}
    standard = summary["profiles"]["standard"]
    assert (standard["null"], standard["perfect"]) == (-4.0, 4.0)
    assert standard["score"] == pytest.approx(
        100 * (standard["raw"] + 4.0) / 8.0)


def test_nab_command_reports_bad_input(tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    windows_file = tmp_path / "windows.json"
    windows_file.write_text(json.dumps({"missing/file.csv": []}))
    code = run(["anomaly", "nab", "--data", str(tmp_path), "--windows", str(windows_file),
                "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("carrierwatch: error: ") and "missing/file.csv" in err
    assert err.count("\n") == 1
