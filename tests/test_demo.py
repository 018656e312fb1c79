"""The demo: its pure helpers, and ``carrierwatch demo`` itself as a user runs it."""

from __future__ import annotations

import doctest
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import carrierwatch.demo
from carrierwatch.demo import (
    DAY_MS,
    HOUR_MS,
    LEGEND,
    WINDOW_MS,
    anomaly_episodes,
    detection,
    during_incidents,
)
from carrierwatch.synthetic.incidents import Incident

ROOT = Path(__file__).resolve().parents[1]

# measured on the default demo (seed 7), reported week 2026-03-02..03-09: the old demo's cold
# monitor (600 packages per partner per day, no history) raised 1,178 anomalous windows, 687 of
# them outside every incident (± 2 h); warmed on 7 days of history, 18 of 512 at 600 a day and
# 29 of 551 at the demo's 500 a day
MAX_WINDOWS_OUTSIDE_INCIDENTS = 40


def test_demo_doctests() -> None:
    result = doctest.testmod(carrierwatch.demo)
    assert result.attempted >= 10 and result.failed == 0


def test_anomalies_count_in_their_own_partner_s_incidents_and_two_hours_either_side() -> None:
    incidents = [Incident("feed_outage", "ups", 10 * HOUR_MS, 16 * HOUR_MS),
                 Incident("exception_spike", "fedex", 0, 10 * HOUR_MS)]
    windows = [7 * HOUR_MS, 8 * HOUR_MS, 10 * HOUR_MS, 17 * HOUR_MS, 18 * HOUR_MS - 1,
               18 * HOUR_MS]
    # 3 h before the outage: no; 2 h before (a poll's events held back): yes; inside: yes;
    # within 2 h after its end (queued data flush): yes; 2 h after: no
    assert during_incidents("ups", windows, incidents) == "4 of 6 (feed_outage)"
    assert during_incidents("ups", windows, incidents, margin_ms=0) == "1 of 6 (feed_outage)"
    assert during_incidents("dhl", windows, incidents) == "0 of 6"
    assert during_incidents("fedex", [HOUR_MS, 11 * HOUR_MS], incidents) == \
        "2 of 2 (exception_spike)"


def test_episodes_split_on_an_hour_without_anomalies_and_count_windows_outside_incidents(
        ) -> None:
    outage = Incident("feed_outage", "ups", 3 * DAY_MS, 3 * DAY_MS + 6 * HOUR_MS)
    rows = []
    for i in range(4 * 288):  # four days of 5-minute windows, 30 events each
        start = i * WINDOW_MS
        silent = outage.start <= start < outage.end
        late = outage.end + 3 * HOUR_MS <= start < outage.end + 3 * HOUR_MS + 2 * WINDOW_MS
        rows.append(("ups", "volume", start, 0.0 if silent else (90.0 if late else 30.0),
                     silent or late))
    rows.append(("fedex", "volume", 2 * DAY_MS, 5.0, True))  # before from_ms: not reported
    episodes = anomaly_episodes(rows, [outage], from_ms=3 * DAY_MS)
    assert [(e.partner_id, e.first_ms, e.last_ms, e.windows, e.observed, e.typical, e.outside)
            for e in episodes] == [
        ("ups", outage.start, outage.end - WINDOW_MS, 72, 0.0, 30.0, 0),
        ("ups", outage.end + 3 * HOUR_MS, outage.end + 3 * HOUR_MS + WINDOW_MS, 2, 90.0, 30.0,
         2)]
    assert episodes[0].incident == outage and episodes[1].incident is None


def test_an_incident_without_anomalous_windows_of_its_partner_is_not_detected() -> None:
    spike = Incident("exception_spike", "fedex", 10 * HOUR_MS, 20 * HOUR_MS)
    # another partner's window, and one of fedex's before the spike: neither detects it
    assert detection(spike, [("ups", "volume", 11 * HOUR_MS),
                             ("fedex", "volume", 9 * HOUR_MS)]) is None
    late = detection(spike, [("fedex", "exception_rate", 21 * HOUR_MS)])
    assert late is not None and late.delay_ms == 11 * HOUR_MS + WINDOW_MS


def _demo(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CARRIERWATCH_DATA_DIR": str(data_dir), "COLUMNS": "200",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "carrierwatch", "demo", *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=900)


def test_incidents_outside_the_reported_days_are_a_usage_error(tmp_path: Path) -> None:
    done = _demo(tmp_path, "--days", "2", "--incident", "feed_outage@ups:3d+6h")
    assert done.returncode == 2
    assert "is not inside the reported days 2026-03-02 + 2 d" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.fixture(scope="module")
def default_demo(tmp_path_factory: pytest.TempPathFactory) -> subprocess.CompletedProcess[str]:
    """``carrierwatch demo`` with its defaults: what ``make demo`` runs."""
    done = _demo(tmp_path_factory.mktemp("demo"))
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.fixture(scope="module")
def small_demo(tmp_path_factory: pytest.TempPathFactory) -> subprocess.CompletedProcess[str]:
    """A small demo (three partners, a day of history, a reported day, 60 packages a day)."""
    done = _demo(tmp_path_factory.mktemp("small-demo"), "--partners", "3", "--days", "1",
                 "--history-days", "1", "--packages-per-day", "60",
                 "--incident", "exception_spike@fedex:0d6h+6h",
                 "--incident", "feed_outage@ups:0d12h+4h")
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _row(output: str, *cells: str) -> str:
    """The table line whose cells start with ``cells``."""
    pattern = r"│\s*" + r"\s*│\s*".join(re.escape(c) for c in cells) + r"\s*│.*"
    found = re.search(pattern, output)
    assert found, f"no row {cells}"
    return found.group(0)


@pytest.mark.slow
def test_the_warmed_monitor_raises_few_anomalies_outside_the_incidents(
        default_demo: subprocess.CompletedProcess[str]) -> None:
    out = default_demo.stdout
    found = re.search(r"anomalous windows: ([\d,]+); outside any incident: ([\d,]+)", out)
    assert found, out
    total, outside = (int(g.replace(",", "")) for g in found.groups())
    assert total > 300  # the spike (two streams, 10 h) and the outage are there
    assert outside <= MAX_WINDOWS_OUTSIDE_INCIDENTS
    # every episode row says which incident it falls in, or that it is a false alarm
    episodes = out[out.index("5. Anomalies"):out.index("anomalous windows:")]
    assert "exception_spike 03-05 00:00" in episodes and "feed_outage 03-07 00:00" in episodes
    # no row of the cold monitor's first night or weekend: the week starts Monday 03-02
    assert "│ 03-02 " not in episodes


@pytest.mark.slow
def test_each_incident_has_its_row_with_the_metric_it_moved_and_its_detection(
        default_demo: subprocess.CompletedProcess[str]) -> None:
    out = default_demo.stdout
    spike = _row(out, "exception_spike", "fedex", "03-05 00:00 → 03-05 10:00",
                 "exceptions opened per hour")
    inside, outside = (float(v) for v in re.findall(r"│\s*([\d.]+)\s*(?=│)", spike)[:2])
    assert inside > 10 * outside
    assert re.search(r"03-05 00:\d\d \(\+\d+ min\): exception_rate", spike)
    outage = _row(out, "feed_outage", "ups", "03-07 00:00 → 03-07 06:00")
    assert re.search(r"03-07 0\d:\d\d \(\+\d+ min\)", outage)
    assert "not detected" not in out[out.index("4. Injected"):out.index("5. Anomalies")]


@pytest.mark.parametrize("run", ["small_demo",
                                 pytest.param("default_demo", marks=pytest.mark.slow)])
def test_the_demo_explains_its_terms_once_and_prints_no_object_repr(
        run: str, request: pytest.FixtureRequest) -> None:
    done: subprocess.CompletedProcess[str] = request.getfixturevalue(run)
    out = done.stdout
    legend = out[out.index("Terms"):]
    for term, _ in LEGEND:
        assert legend.count(term) >= 1, term
    assert out.count("Terms") == 1
    assert "<" not in out and "object at 0x" not in out
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("run", ["small_demo",
                                 pytest.param("default_demo", marks=pytest.mark.slow)])
def test_the_progress_bar_knows_its_total_and_shows_an_eta(
        run: str, request: pytest.FixtureRequest) -> None:
    done: subprocess.CompletedProcess[str] = request.getfixturevalue(run)
    found = re.search(r"replayed ([\d,]+) payloads", done.stdout)
    assert found
    payloads = int(found.group(1).replace(",", ""))
    # tqdm: "replay:  42%|████▏     | 138675/330203 [00:20<00:28, 6894.15 payloads/s]"
    bars = re.findall(r"replay:\s+\d+%\|[^|]*\| (\d+)/(\d+) \[\d\d:\d\d<(\d\d:\d\d|\?)",
                      done.stderr)
    assert bars, done.stderr[-500:]
    assert {int(total) for _, total, _ in bars} == {payloads}
    assert any(eta != "?" for _, _, eta in bars)


def test_the_small_demo_reports_its_incidents(small_demo: subprocess.CompletedProcess[str]
                                              ) -> None:
    out = small_demo.stdout
    assert "2026-03-01 to 2026-03-01) and the reported days 2026-03-02 to 2026-03-02" in out
    spike = _row(out, "exception_spike", "fedex", "03-02 06:00 → 03-02 12:00",
                 "exceptions opened per hour")
    inside, outside = (float(v) for v in re.findall(r"│\s*([\d.]+)\s*(?=│)", spike)[:2])
    assert inside > 3 * outside
    _row(out, "feed_outage", "ups", "03-02 12:00 → 03-02 16:00")
    assert re.search(r"anomalous windows: [\d,]+; outside any incident: [\d,]+", out)


def test_the_demo_keeps_its_own_data_directory(small_demo: subprocess.CompletedProcess[str]
                                               ) -> None:
    """The demo's store and simulation live in ``<data dir>/demo``: a user's replays (the
    store at ``<data dir>/clickhouse``) never mix with it."""
    found = re.search(r"ClickHouse \(chDB\) at (\S+)", small_demo.stdout)
    assert found, small_demo.stdout[-2000:]
    store = Path(found.group(1))
    assert store.name == "clickhouse" and store.parent.name == "demo" and store.is_dir()
    assert not (store.parent.parent / "clickhouse").exists()
    assert (store.parent / "demo-simulation").is_dir()


def test_the_demo_ends_with_the_week_s_scorecards(small_demo: subprocess.CompletedProcess[str]
                                                  ) -> None:
    assert "6. weekly scorecards of 2026-W10 for 3 partners" in small_demo.stdout
    found = re.search(r"^   open (\S+\.html) in a browser$", small_demo.stdout, re.MULTILINE)
    assert found, small_demo.stdout[-2000:]
    page = Path(found.group(1))
    assert page.is_file() and page.parent.name == "2026-W10"
    assert page.parent.parent.name == "scorecards" and page.parent.parent.parent.name == "demo"
    text = page.read_text(encoding="utf-8")
    assert "weekly scorecard" in text and "On-time delivery" in text
    assert sorted(p.name for p in page.parent.glob("*.json")) == [
        "easypost.json", "fedex.json", "ups.json"]
