"""``carrierwatch simulate``: files written, bad arguments rejected with a clear message."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner
from synthetic_helpers import ROOT

from carrierwatch.synthetic.rawlog import iter_rawlog
from carrierwatch.synthetic.simulator import simulate_cli


@pytest.fixture(autouse=True)
def _project_home(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    from carrierwatch.settings import get_settings

    monkeypatch.setenv("CARRIERWATCH_HOME", str(ROOT))
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_simulate_writes_the_raw_logs_labels_and_manifest(tmp_path: Path) -> None:
    out = tmp_path / "sim"
    result = CliRunner().invoke(simulate_cli, [
        "--partners", "fedex,valley_express", "--days", "2", "--seed", "3",
        "--packages-per-day", "20", "--start", "2026-03-09", "--out", str(out),
        "--incident", "feed_outage@fedex:1d+6h", "--incident",
        "latency_drift@valley_express:2026-03-10T00:00+12h,max=3h", "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert "fedex" in result.output and "wrote 4 files" in result.output
    assert sorted(os.listdir(out)) == ["fedex.rawlog.jsonl", "incidents.json", "manifest.json",
                                       "valley_express.rawlog.jsonl"]
    manifest = orjson.loads((out / "manifest.json").read_bytes())
    assert manifest["seed"] == 3
    assert manifest["arguments"]["partners"] == ["fedex", "valley_express"]
    assert manifest["arguments"]["start"] == "2026-03-09"
    records = list(iter_rawlog(out / "fedex.rawlog.jsonl"))
    assert len(records) == manifest["partners"]["fedex"]["payloads"] > 0
    labels = orjson.loads((out / "incidents.json").read_bytes())
    assert [(label["kind"], label["start_iso"], label["end_iso"]) for label in labels] == [
        ("feed_outage", "2026-03-10T00:00:00.000Z", "2026-03-10T06:00:00.000Z"),
        ("latency_drift", "2026-03-10T00:00:00.000Z", "2026-03-10T12:00:00.000Z")]
    assert labels[1]["parameters"] == {"max_ms": 3 * 3_600_000}


@pytest.mark.parametrize(("arguments", "message"), [
    (["--incident", "feed_outage@fedex:1d"], "bad incident 'feed_outage@fedex:1d': expected "
                                             "start+duration"),
    (["--incident", "meteor@fedex:1d+1h"], "unknown kind 'meteor'"),
    (["--incident", "feed_outage@usps:1d+1h"], "partner 'usps' is not simulated"),
    (["--partners", "nobody"], "unknown partner 'nobody'"),
    (["--days", "0"], "--days"),
    (["--start", "03/09/2026"], "--start"),
])
def test_bad_arguments_exit_2_with_a_clear_message(tmp_path: Path, arguments: list[str],
                                                    message: str) -> None:
    base = ["--partners", "fedex", "--days", "1", "--packages-per-day", "5", "--workers", "1",
            "--out", str(tmp_path / "sim")]
    result = CliRunner().invoke(simulate_cli, base + arguments)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not (tmp_path / "sim" / "manifest.json").exists()
