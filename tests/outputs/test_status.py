"""``carrierwatch status``: SLO burn and budget, anomalies, heartbeats and codebook gaps read from
a real embedded store (chDB) holding hand-made rows whose figures are worked out here by hand."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from carrierwatch.cli import run
from carrierwatch.core.partner import SlaContract
from carrierwatch.core.windows import MetricWindowRow
from carrierwatch.outputs.status import collect_status, parse_duration
from carrierwatch.settings import Settings
from carrierwatch.storage import open_store
from carrierwatch.storage.base import Store

HOUR = 3_600_000
AT = 1_772_409_600_000 + 10 * 24 * HOUR  # 2026-03-12T00:00Z


def _utc(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def _window(partner: str, region: str, granularity: str, start: int, **counts: int
            ) -> MetricWindowRow:
    return MetricWindowRow(partner, region, "ground", granularity, start, 0, 1, **counts)


def _event(partner: str, n: int, received: int, status: str = "in_transit", raw_code: str = "X",
           synthetic: bool = False) -> dict[str, object]:
    return {"event_id": f"{partner}-{n}", "partner_id": partner, "package_id": f"P{n}",
            "tracking_number": f"T{n}", "status": status, "raw_code": raw_code,
            "confidence": 1.0, "event_time": _utc(received - 60_000),
            "received_time": _utc(received), "timezone_ambiguous": False,
            "synthetic": synthetic, "payload_schema_version": "v1"}


@pytest.fixture()
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture()
def store(data_dir: Path) -> Iterator[Store]:
    with open_store(Settings(data_dir=data_dir, clickhouse_url=None), migrate=True) as s:
        yield s


def _fill(store: Store) -> None:
    # recent period (last 6 h): UPS decided 40 + 60 packages over two regions, 90 on time
    recent = AT - 2 * HOUR
    store.insert_windows([
        _window("ups", "GA", "5m", recent, events=100, packages_decided=40, packages_on_time=35,
                packages_with_exception=2, first_attempts=30, first_attempt_successes=27,
                codebook_gap_events=3),
        _window("ups", "NY", "5m", recent + 300_000, events=50, packages_decided=60,
                packages_on_time=55, first_attempts=10, first_attempt_successes=10),
        # outside the 6 h period: must not count in the recent figures
        _window("ups", "NY", "5m", AT - 8 * HOUR, events=999, packages_decided=999,
                packages_on_time=0),
        # the SLO window (UPS: 28 days): 1,000 decided, 970 on time
        _window("ups", "GA", "1h", AT - 20 * 24 * HOUR, packages_decided=600,
                packages_on_time=590, first_attempts=500, first_attempt_successes=460),
        _window("ups", "NY", "1h", AT - 3 * HOUR, packages_decided=400, packages_on_time=380),
        # older than the 28-day window: ignored
        _window("ups", "NY", "1h", AT - 40 * 24 * HOUR, packages_decided=5_000),
        _window("dhl", "BE", "5m", recent, events=10, packages_decided=10, packages_on_time=10),
        _window("dhl", "BE", "1h", recent, packages_decided=10, packages_on_time=10),
    ])
    store.insert("canonical_events", [
        _event("ups", 1, AT - HOUR, status="unknown", raw_code="ZZ"),
        _event("ups", 2, AT - HOUR, status="unknown", raw_code="ZZ"),
        _event("ups", 3, AT - HOUR, status="unknown", raw_code="QQ"),
        _event("dhl", 4, AT - 30 * 60_000),
        _event("dhl", 5, AT + HOUR, synthetic=True),  # synthetic: does not move "as of"
    ])
    store.insert("dead_letters", [
        {"dead_letter_id": "d1", "partner_id": "ups", "received_time": _utc(AT - HOUR),
         "error": "bad", "path": "x", "raw": "{"},
        {"dead_letter_id": "d2", "partner_id": "ups", "received_time": _utc(AT - 9 * HOUR),
         "error": "old", "path": "x", "raw": "{"}])
    store.insert("heartbeats", [
        {"partner_id": "dhl", "heartbeat_id": "h1", "sent_at": _utc(AT - 50 * 60_000),
         "status": "seen", "latency_ms": 4_000.0, "updated_at": _utc(AT - 49 * 60_000)},
        {"partner_id": "dhl", "heartbeat_id": "h2", "sent_at": _utc(AT - 35 * 60_000),
         "status": "missing", "updated_at": _utc(AT - 31 * 60_000)}])
    store.insert("alerts", [
        {"partner_id": "ups", "name": "PartnerMetricAnomalous", "fingerprint": "f1",
         "starts_at": _utc(AT - 2 * HOUR), "severity": "warning", "state": "firing",
         "labels": {"metric": "volume"}, "annotations": {"summary": "ups: volume anomalous"},
         "updated_at": _utc(AT - 2 * HOUR)},
        {"partner_id": "ups", "name": "PartnerMetricAnomalous", "fingerprint": "f2",
         "starts_at": _utc(AT - 5 * HOUR), "severity": "warning", "state": "firing",
         "labels": {"metric": "latency_p95"}, "annotations": {"summary": "resolved later"},
         "updated_at": _utc(AT - 5 * HOUR)},
        {"partner_id": "ups", "name": "PartnerMetricAnomalous", "fingerprint": "f2",
         "starts_at": _utc(AT - 5 * HOUR), "severity": "warning", "state": "resolved",
         "labels": {"metric": "latency_p95"}, "annotations": {"summary": "resolved later"},
         "updated_at": _utc(AT - 4 * HOUR)}])


def test_the_figures_are_sums_of_the_stored_counters_then_ratios(store: Store) -> None:
    _fill(store)
    contracts = {"ups": SlaContract(on_time_target=0.96, first_attempt_target=0.92),
                 "dhl": SlaContract(on_time_target=0.95)}
    report = collect_status(store, contracts, since_ms=parse_duration("6h"), at_ms=AT)
    assert report is not None
    ups, dhl = sorted(report.partners, key=lambda p: p.partner_id != "ups")
    on_time = next(o for o in ups.objectives if o.name == "on_time")
    assert (on_time.good, on_time.total) == (90, 100)       # 35 + 55 of 40 + 60
    assert on_time.value == pytest.approx(0.90)
    assert on_time.burn_rate == pytest.approx(0.10 / 0.04)   # 2.5× the allowed bad share
    assert (on_time.slo_good, on_time.slo_total) == (970, 1000)
    assert on_time.budget_left == pytest.approx(1 - 0.03 / 0.04)
    assert on_time.state == "burning"
    first = next(o for o in ups.objectives if o.name == "first_attempt")
    assert (first.good, first.total, first.slo_good, first.slo_total) == (37, 40, 460, 500)
    assert first.budget_left == pytest.approx(1 - 0.08 / 0.08)
    exceptions = next(o for o in ups.objectives if o.name == "exception_rate")
    assert exceptions.value == pytest.approx(2 / 100)         # a "max" objective: the bad share
    assert ups.events == 150 and ups.codebook_gap_events == 3
    assert ups.dead_letters == 1                               # the 9-hour-old one is outside
    assert ups.unmapped_codes == [("ZZ", 2), ("QQ", 1)]
    assert [a["metric"] for a in ups.firing_anomalies] == ["volume"]  # f2 was resolved
    assert ups.verdict == "burning"
    assert dhl.heartbeat is not None and dhl.heartbeat["status"] == "missing"
    assert dhl.heartbeat["age_minutes"] == 35.0
    assert dhl.verdict == "silent"


def test_as_of_defaults_to_the_newest_real_event_and_an_empty_store_says_so(
        store: Store) -> None:
    assert collect_status(store, {}, since_ms=HOUR) is None
    _fill(store)
    report = collect_status(store, {}, since_ms=HOUR, now_ms=AT + 10 * 24 * HOUR)
    assert report is not None
    assert report.as_of_ms == AT - 30 * 60_000  # DHL's real event; the synthetic one is later


def test_the_command_prints_json_for_scripts_and_a_table_for_people(
        store: Store, data_dir: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "160")
    assert run(["--data-dir", str(data_dir), "status"]) == 2
    assert "holds no canonical events" in capsys.readouterr().err
    _fill(store)
    store.close()
    assert run(["--data-dir", str(data_dir), "status", "--json", "--partner", "ups",
                "--at", "2026-03-12T00:00:00Z"]) == 0
    doc = orjson.loads(capsys.readouterr().out)
    assert doc["as_of"] == "2026-03-12T00:00:00.000Z"
    assert [p["partner"] for p in doc["partners"]] == ["ups"]
    on_time = doc["partners"][0]["objectives"][0]
    assert on_time["name"] == "on_time" and on_time["burn_rate"] == pytest.approx(2.5)
    assert run(["--data-dir", str(data_dir), "status", "--at", "2026-03-12T00:00:00Z"]) == 0
    out = capsys.readouterr().out
    assert "90.0% 2.5×" in out and "'ZZ' ×2" in out and "missing, 35 min ago" in out


@pytest.mark.parametrize("args", [["--since", "soon"], ["--since", "0h"], ["--at", "noon"],
                                  ["--partner", "nope"]])
def test_bad_options_are_one_line_usage_errors(args: list[str], data_dir: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["--data-dir", str(data_dir), "status", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("carrierwatch: error: ") and "Traceback" not in err
