"""Which stages a worker process runs: ``--stages`` and ``CARRIERWATCH_STREAM_STAGES``.

(The stages in separate processes against replay, on a real broker:
tests/streams/test_worker.py::test_stages_in_separate_processes_equal_replay.)
"""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from pydantic import ValidationError

from carrierwatch.streams.cli import worker
from carrierwatch.streams.topology import STAGES, StreamConfig, parse_stages


def test_parse_stages_orders_and_rejects() -> None:
    assert parse_stages("normalize,track") == STAGES == ("normalize", "track")
    assert parse_stages(" track , normalize ") == ("normalize", "track")
    assert parse_stages("track") == ("track",)
    assert parse_stages("normalize,normalize") == ("normalize",)
    for bad in ("", " , ", "sink", "normalize,sink"):
        with pytest.raises(ValueError, match="comma-separated subset"):
            parse_stages(bad)


def test_stream_config_stages_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CARRIERWATCH_STREAM_STAGES", raising=False)
    assert StreamConfig().stage_names == ("normalize", "track")
    monkeypatch.setenv("CARRIERWATCH_STREAM_STAGES", "track")
    assert StreamConfig().stages == "track"
    monkeypatch.setenv("CARRIERWATCH_STREAM_STAGES", "track,normalize")
    assert StreamConfig().stages == "normalize,track"
    monkeypatch.setenv("CARRIERWATCH_STREAM_STAGES", "sink")
    with pytest.raises(ValidationError, match="stages"):
        StreamConfig()


def test_worker_cli_refuses_unknown_stages_and_web_port_without_faust() -> None:
    """Both are refused before anything connects to a broker."""
    runner = CliRunner()
    bad = runner.invoke(worker, ["--stages", "track,sink"])
    assert bad.exit_code == 2 and "comma-separated subset" in bad.output
    web = runner.invoke(worker, ["--stages", "track", "--web-port", "6067"])
    assert web.exit_code == 2 and "track-only worker" in web.output
