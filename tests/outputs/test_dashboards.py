"""The generated dashboards: golden files, and every query executed.

* the files in ``dashboards/`` are exactly what ``carrierwatch dashboards generate`` writes;
* every ClickHouse panel's SQL (macros expanded as the plugin documents them, variables set)
  runs on chDB holding a simulated week with incidents, and returns the panel's columns;
* the KPI panels give the same figures as an independent computation: the core's metric
  functions over window rows summed in Python, the replay's scorecards
  (:func:`carrierwatch.outputs.scorecard.scorecards`, daily windows) and, for the on-time rate,
  the package outcome rows;
* every PromQL expression parses (promtool) and, run against a real Prometheus that scraped the
  gateway's /metrics and an exporter of the metric contract filled from the simulated week,
  returns series.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections import defaultdict
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from dashboard_support import expand_sql, interpolate

from carrierwatch.core import metrics
from carrierwatch.core.model import CanonicalReason
from carrierwatch.core.sketch import bucket_of
from carrierwatch.core.state import STATUS_RANK
from carrierwatch.core.timeutil import to_ms
from carrierwatch.core.windows import COUNTER_COLUMNS, HISTOGRAM_COLUMNS, MetricWindowRow
from carrierwatch.outputs.dashboards import (
    ACCOUNTABILITY,
    KPIS,
    PanelQuery,
    accountability_of,
    build,
    panel_queries,
)
from carrierwatch.outputs.scorecard import scorecards
from carrierwatch.replay import iter_inputs, run_replay
from carrierwatch.scorecards.kpis import fetch_kpis
from carrierwatch.settings import Settings
from carrierwatch.storage import open_store
from carrierwatch.storage.base import Store
from carrierwatch.testing import missing_component
from carrierwatch.transformers.registry import load_registry

ROOT = Path(__file__).resolve().parents[2]
REGISTRY = load_registry(ROOT)
SPECS = [REGISTRY.get(pid).spec for pid in REGISTRY.ids()]
QUERIES = panel_queries(SPECS)
SQL = [q for q in QUERIES if q.language == "sql"]
PROMQL = [q for q in QUERIES if q.language == "promql"]
SIMULATED = ["dhl", "fedex", "ups"]
INCIDENTS = ["feed_outage@ups:2d+6h", "exception_spike@fedex:3d+8h",
             "codebook_change@dhl:4d+1d", "latency_drift@fedex:5d+1d"]
WEEK_START = to_ms(datetime(2026, 3, 2, tzinfo=UTC))  # the simulator's default start, a Monday
WEEK_END = WEEK_START + 7 * 86_400_000
# Grafana's "previous week" ends at Sunday 23:59:59.999; the plugin's filter is inclusive
RANGE = (WEEK_START, WEEK_END - 1)
INTERVAL_S = 3600
EVER = (0, int(time.time() * 1000) + 86_400_000)


def _ids(q: PanelQuery) -> str:
    return f"{q.dashboard}:{q.panel}:{q.ref}"


# ---------------------------------------------------------------------------------------------
# golden files


def test_committed_files_are_what_generate_writes() -> None:
    files = build(ROOT)
    on_disk = {str(p.relative_to(ROOT / "dashboards")): p.read_text(encoding="utf-8")
               for p in (ROOT / "dashboards").rglob("*") if p.is_file()}
    assert sorted(on_disk) == sorted(files)
    for relative, text in files.items():
        assert on_disk[relative] == text, f"dashboards/{relative} is stale: run " \
                                          "`carrierwatch dashboards generate`"


def test_generate_cli_writes_the_same_bytes_and_check_detects_drift(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "CARRIERWATCH_HOME": str(ROOT),
           "CARRIERWATCH_DATA_DIR": str(tmp_path / "data")}
    command = [sys.executable, "-m", "carrierwatch", "dashboards", "generate"]
    done = subprocess.run([*command, "--out", str(tmp_path / "out")], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    for relative, text in build(ROOT).items():
        assert (tmp_path / "out" / relative).read_bytes() == text.encode()
    (tmp_path / "out" / "json" / "cw-operations.json").write_text("{}")
    check = subprocess.run([*command, "--out", str(tmp_path / "out"), "--check"], env=env,
                           capture_output=True, text=True, timeout=120)
    assert check.returncode == 1 and "cw-operations.json" in check.stderr


def test_every_target_in_the_json_is_a_listed_query() -> None:
    """The query list the tests run is exactly the set of targets in the dashboards."""
    listed = {(q.dashboard, q.text) for q in QUERIES}
    seen = set()
    for relative, text in build(ROOT).items():
        if not relative.endswith(".json"):
            continue
        dashboard = json.loads(text)
        for panel in dashboard["panels"]:
            for target in panel.get("targets", []):
                seen.add((dashboard["uid"], target.get("rawSql") or target["expr"]))
        for variable in dashboard["templating"]["list"]:
            if variable["type"] == "query":
                seen.add((dashboard["uid"], variable["query"]))
    assert seen == listed
    assert len(SQL) >= 20 * len(SPECS) // 2 and len(PROMQL) >= 20


def test_stat_thresholds_are_the_contract_targets() -> None:
    dashboard = json.loads(build(ROOT)["json/cw-scorecard-fedex.json"])
    contract = REGISTRY.get("fedex").spec.contract
    stats = {p["title"]: p for p in dashboard["panels"] if p["type"] == "stat"}
    steps = stats["On-time delivery (target 96%)"]["fieldConfig"]["defaults"]["thresholds"]
    assert steps["steps"][-1] == {"color": "green", "value": contract.on_time_target}
    steps = stats["Exception rate (max 4%)"]["fieldConfig"]["defaults"]["thresholds"]
    assert steps["steps"][-1] == {"color": "red", "value": contract.exception_rate_max}
    latency = next(p for t, p in stats.items() if t.startswith("Event latency p95"))
    assert latency["fieldConfig"]["defaults"]["thresholds"]["steps"][-1]["value"] == 60


def test_macro_expansion_follows_the_plugin() -> None:
    sql = ("SELECT $__timeInterval(t) FROM x WHERE $__timeFilter(t) AND $__dateFilter(d) "
           "AND a IN (${p:singlequote}) AND b = '${q}' AND $__fromTime < $__toTime "
           "AND $__interval_s > 0")
    out = expand_sql(sql, 1_000_500, 2_000_999, 60, {"p": ["x", "y"], "q": "z"})
    assert out == ("SELECT toStartOfInterval(toDateTime(t), INTERVAL 60 second) FROM x WHERE "
                   "t >= toDateTime(1000) AND t <= toDateTime(2000) AND d >= toDate(1000) AND "
                   "d <= toDate(2000) AND a IN ('x','y') AND b = 'z' AND toDateTime(1000) < "
                   "toDateTime(2000) AND 60 > 0")
    with pytest.raises(AssertionError, match="unexpanded"):
        expand_sql("SELECT $__unknownMacro(x)", 0, 1, 1, {})


# ---------------------------------------------------------------------------------------------
# a simulated week in chDB


@pytest.fixture(scope="module")
def week(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    from carrierwatch.anomaly.monitor import AnomalyMonitor
    from carrierwatch.synthetic.simulator import simulate

    base = tmp_path_factory.mktemp("week")
    simulate(SIMULATED, 7, 17, INCIDENTS, out_dir=base / "sim", packages_per_day=120,
             warmup_days=2, home=ROOT)
    with open(base / "sim" / "ups.rawlog.jsonl", "ab") as log:  # two broken lines: dead letters
        log.write(b'{"received_time": "yesterday"}\nnot json at all\n')
    store = open_store(Settings(data_dir=base / "data", home=ROOT), migrate=True)
    run_replay(iter_inputs([base / "sim"]), store, REGISTRY, monitor=AnomalyMonitor())
    day = 86_400_000
    store.insert("heartbeats", [
        {"partner_id": p, "heartbeat_id": f"hb-{p}-{i}", "package_id": f"CWSYN{i}",
         "sent_at": WEEK_START + i * day, "deadline_at": WEEK_START + i * day + 600_000,
         "seen_at": None if status == "missing" else WEEK_START + i * day + latency,
         "latency_ms": None if status == "missing" else float(latency), "status": status,
         "updated_at": WEEK_START + i * day + 600_000}
        for p in SIMULATED
        for i, (status, latency) in enumerate([("seen", 40_000), ("seen", 55_000),
                                               ("late", 900_000), ("missing", 0)])])
    try:
        yield store
    finally:
        store.close()


def _variables(q: PanelQuery, store: Store) -> dict[str, Any]:
    if q.partner is not None:
        levels = [r[0] for r in store.query(
            "SELECT DISTINCT service_level FROM metric_windows WHERE partner_id = "
            "{p:String} ORDER BY 1", {"p": q.partner})]
        return {"partner": q.partner, "service_level": levels or ["none"]}
    return {"partner": SIMULATED}


def _run(store: Store, q: PanelQuery, variables: dict[str, Any] | None = None,
         time_range: tuple[int, int] = RANGE) -> tuple[tuple[str, ...], list[tuple[Any, ...]]]:
    sql = expand_sql(q.text, *time_range, INTERVAL_S,
                     variables if variables is not None else _variables(q, store))
    return store.query_readonly(sql)


@pytest.mark.slow
def test_every_sql_query_runs_and_returns_its_columns(week: Store) -> None:
    empty = []
    for q in SQL:
        # the broken raw-log lines carry no received time of their own: not in the week
        names, rows = _run(week, q, time_range=EVER if "dead_letters" in q.text else RANGE)
        if not rows:  # an empty result has no header: ask the engine for the columns
            sql = expand_sql(q.text, *RANGE, INTERVAL_S, _variables(q, week))
            names = tuple(r[0] for r in week.query(f"DESCRIBE TABLE ({sql})"))
        assert names == q.columns, _ids(q)
        if (q.partner is None or q.partner in SIMULATED) and (
                not rows or all(v is None for row in rows for v in row)):
            empty.append(_ids(q))
        if q.columns and q.columns[0] == "time":
            times = [row[0] for row in rows]
            assert all(isinstance(t, datetime) for t in times), _ids(q)
            assert all(RANGE[0] <= to_ms(t) <= RANGE[1] for t in times), _ids(q)
    assert empty == []


def _summed(store: Store, partner: str, levels: list[str], granularity: str = "5m"
            ) -> MetricWindowRow:
    """Independent rollup: every stored window row of the range, summed in Python."""
    names = [*COUNTER_COLUMNS, *HISTOGRAM_COLUMNS]
    rows = store.query(
        f"SELECT {', '.join(names)} FROM metric_windows FINAL WHERE partner_id = {{p:String}} "
        "AND granularity = {g:String} AND has({levels:Array(String)}, service_level) "
        "AND window_start >= fromUnixTimestamp64Milli({a:Int64}) "
        "AND window_start < fromUnixTimestamp64Milli({b:Int64})",
        {"p": partner, "g": granularity, "levels": levels, "a": WEEK_START, "b": WEEK_END})
    total = MetricWindowRow(partner, "*", "*", granularity, WEEK_START, 0, 0)
    for row in rows:
        for name, value in zip(names, row, strict=True):
            if name in HISTOGRAM_COLUMNS:
                hist = getattr(total, name)
                for bucket, count in dict(value).items():
                    hist[bucket] = hist.get(bucket, 0) + count
            else:
                setattr(total, name, getattr(total, name) + value)
    assert rows, f"no windows for {partner}"
    return total


def _expected(kpi: str, row: MetricWindowRow) -> tuple[Any, ...]:
    if kpi == "event_latency_p95_minutes":
        p95 = metrics.event_latency_quantile(row, 0.95)
        return (None if p95 is None else p95 / 60000,)
    if kpi == "delay":
        mean, variance = metrics.mean_lateness_s(row), metrics.delay_variance_s2(row)
        return (None if mean is None else mean / 3600,
                None if variance is None else math.sqrt(variance) / 3600)
    if kpi == "volume":
        return (row.packages_decided, row.deliveries, row.exceptions_opened, row.events)
    return (getattr(metrics, kpi)(row),)


def _close(actual: tuple[Any, ...], expected: tuple[Any, ...]) -> bool:
    return all((a is None and e is None) or (a is not None and e is not None
                                              and math.isclose(a, e, rel_tol=1e-9, abs_tol=1e-12))
               for a, e in zip(actual, expected, strict=True))


@pytest.mark.slow
def test_kpi_panels_equal_the_core_metrics_over_summed_windows(week: Store) -> None:
    checked, late = 0, []
    for partner in SIMULATED:
        levels = [r[0] for r in week.query(
            "SELECT DISTINCT service_level FROM metric_windows WHERE partner_id = {p:String} "
            "ORDER BY 1", {"p": partner})]
        for chosen in (levels, levels[::2]):
            expected_row = _summed(week, partner, chosen)
            for q in SQL:
                if q.kpi is None or q.partner != partner:
                    continue
                _, rows = _run(week, q, {"partner": partner, "service_level": chosen})
                assert len(rows) == 1
                expected = _expected(q.kpi, expected_row)
                assert _close(rows[0], expected), (_ids(q), chosen, rows[0], expected)
                checked += 1
        late.append(expected_row.packages_decided - expected_row.packages_on_time)
    # the on-time figures are not vacuous: packages were decided, and not all on time
    assert sum(late) > 0
    assert checked == len(SIMULATED) * 2 * (len(KPIS) + 4)


@pytest.mark.slow
def test_kpi_panels_equal_the_replay_scorecards_and_the_outcome_rows(week: Store) -> None:
    contracts = {s.id: s.contract for s in SPECS}
    cards = {c.partner_id: c for c in scorecards(week, contracts, start_ms=WEEK_START,
                                                  end_ms=WEEK_END)}
    assert sorted(cards) == SIMULATED
    kpis = fetch_kpis(week, WEEK_START, WEEK_END, contracts)
    for partner in SIMULATED:
        panels = {q.kpi: q for q in SQL if q.partner == partner and q.kpi}
        value = {k: _run(week, q)[1][0] for k, q in panels.items()}
        card = cards[partner]
        assert value["on_time_rate"][0] == pytest.approx(card.on_time, rel=1e-12)
        assert value["first_attempt_success_rate"][0] == pytest.approx(card.first_attempt,
                                                                       rel=1e-12)
        assert value["exception_rate"][0] == pytest.approx(card.exception_rate, rel=1e-12)
        assert value["pickup_compliance"][0] == pytest.approx(card.pickup_compliance, rel=1e-12)
        assert card.latency_p95_ms is not None
        assert value["event_latency_p95_minutes"][0] == pytest.approx(
            card.latency_p95_ms / 60000, rel=1e-12)
        # `carrierwatch scorecard`'s KPI function over the same period: the same figures
        figures = {f.key: f for f in kpis[partner]}
        for panel_kpi, scorecard_kpi in (
                ("on_time_rate", "on_time"), ("first_attempt_success_rate", "first_attempt"),
                ("exception_rate", "exception_rate"), ("pickup_compliance", "pickup_compliance"),
                ("tracking_compliance", "tracking_compliance"),
                ("eta_accuracy", "eta_accuracy"),
                ("event_latency_p95_minutes", "event_latency_p95")):
            figure = figures[scorecard_kpi]
            assert figure.value is not None, (partner, scorecard_kpi)
            assert value[panel_kpi][0] == pytest.approx(figure.value, rel=1e-12), (
                partner, panel_kpi, value[panel_kpi][0], figure.value)
        stddev_hours = value["delay"][1]
        assert stddev_hours == pytest.approx(figures["delay_stddev"].value, rel=1e-9)
        # on-time from the outcome rows: packages decided in the week, not synthetic
        ((decided, on_time),) = week.query(
            "SELECT count(), countIf(on_time) FROM package_outcomes FINAL WHERE partner_id = "
            "{p:String} AND NOT synthetic AND on_time IS NOT NULL AND decided_at >= "
            "fromUnixTimestamp64Milli({a:Int64}) AND decided_at < "
            "fromUnixTimestamp64Milli({b:Int64})", {"p": partner, "a": WEEK_START,
                                                      "b": WEEK_END})
        assert value["on_time_rate"][0] == pytest.approx(on_time / decided, rel=1e-12)
        assert value["volume"][0] == decided
        # the daily trend's points are the scorecard's days
        daily = next(q for q in SQL if q.partner == partner and q.panel == "Daily KPIs")
        points = {to_ms(r[0]): r[1] for r in _run(week, daily)[1]}
        for day in card.days:
            assert points[to_ms(day.day)] == pytest.approx(day.on_time, rel=1e-12, abs=0) \
                if day.on_time is not None else points.get(to_ms(day.day)) is None


@pytest.mark.slow
def test_exceptions_by_reason_and_accountability(week: Store) -> None:
    for partner in SIMULATED:
        q = next(q for q in SQL if q.partner == partner and q.panel == "Exceptions by reason")
        _, rows = _run(week, q)
        got = {(r[0], r[1]): (r[2], r[3]) for r in rows}
        expected: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
        for event in week.fetch_events(partner):
            if event.synthetic or not RANGE[0] <= event.event_time <= RANGE[1] // 1000 * 1000:
                continue
            if event.status in ("exception", "delivery_attempted"):
                reason = event.reason or "unknown"
                party = accountability_of(REGISTRY.get(partner).spec)[reason]
                expected[(party, reason)][event.status != "exception"] += 1
        assert got == {k: tuple(v) for k, v in expected.items()} and got


def test_accountability_is_the_scorecards_table() -> None:
    assert set(ACCOUNTABILITY) == {r.value for r in CanonicalReason}
    try:
        from carrierwatch.core.accountability import ACCOUNTABILITY as CORE
    except ImportError:  # the scorecards' change adds it; until then the table is ours alone
        return
    assert dict(ACCOUNTABILITY) == dict(CORE)


def _hub_stays(events: list[Any]) -> list[tuple[str, int, int]]:
    """Independent hub dwell (docs/dashboards.md): ``(hub, arrival ms, departure ms)`` of one
    package's events."""
    ordered = sorted(events, key=lambda e: (e.event_time, STATUS_RANK.get(e.status, 4),
                                            e.event_id))
    stays, arrival = [], None
    for event in ordered:
        if event.status == "staged":
            loc = event.location
            city, region = (loc.city, loc.region) if loc else (None, None)
            hub = f"{city}, {region}" if city and region else (city or region)
            arrival = (hub, event.event_time) if hub else None
        elif event.status in ("in_transit", "out_for_delivery"):
            if arrival is not None:
                stays.append((arrival[0], arrival[1], event.event_time))
            arrival = None
        elif event.status in ("delivered", "returned", "cancelled"):
            arrival = None
    return stays


@pytest.mark.slow
def test_hub_dwell_matches_the_events(week: Store) -> None:
    table = next(q for q in SQL if q.panel == "Hub dwell by hub")
    trend = next(q for q in SQL if q.panel == "Hub dwell trend")
    _, rows = _run(week, table)
    stays: dict[tuple[str, str], list[float]] = defaultdict(list)
    by_day: dict[tuple[int, str], list[float]] = defaultdict(list)
    for partner in SIMULATED:
        by_package: dict[str, list[Any]] = defaultdict(list)
        for event in week.fetch_events(partner):
            if not event.synthetic:
                by_package[event.package_id].append(event)
        for events in by_package.values():
            for hub, arrived, departed in _hub_stays(events):
                if RANGE[0] // 1000 * 1000 <= departed <= RANGE[1] // 1000 * 1000 + 999:
                    stays[(partner, hub)].append((departed - arrived) / 1000)
                    by_day[(departed // 86_400_000 * 86_400_000, partner)].append(
                        (departed - arrived) / 1000)
        try:  # the core's hub dwell, where it exists (the scorecards' change adds it)
            from carrierwatch.core.dwell import hub_dwells, hub_name
        except ImportError:
            continue
        for events in by_package.values():
            scans = [(e.event_time, e.status, hub_name(e.location.city if e.location else None,
                                                        e.location.region if e.location
                                                        else None), e.event_id) for e in events]
            assert [(d.hub, d.arrived_at, d.departed_at) for d in hub_dwells(scans)] == \
                _hub_stays(events)
    assert rows and len(rows) == min(30, len(stays))
    assert sum(len(v) for v in stays.values()) > 100
    for partner, hub, count, _p50, _p90, max_hours in rows:
        assert count == len(stays[(partner, hub)]), (partner, hub)
        assert max_hours == pytest.approx(max(stays[(partner, hub)]) / 3600)
    # the longest p90 first: the table shows the worst hubs
    assert [r[4] for r in rows] == sorted((r[4] for r in rows), reverse=True)
    points = {(to_ms(r[0]), r[1]): r[2] for r in _run(week, trend)[1]}
    assert set(points) == set(by_day)
    for key, values in by_day.items():
        values.sort()  # quantileExact(0.9): the element at floor(0.9 * n)
        assert points[key] == pytest.approx(values[int(0.9 * len(values))] / 3600)


@pytest.mark.slow
def test_integration_tables_count_what_is_stored(week: Store) -> None:
    heartbeats = next(q for q in SQL if q.panel == "Heartbeats in range")
    rows = _run(week, heartbeats)[1]
    assert [r[:5] for r in rows] == [(p, 4, 2, 1, 1) for p in SIMULATED]
    dead = next(q for q in SQL if q.panel == "Dead letters by error")
    rows = _run(week, dead, time_range=EVER)[1]
    assert sum(r[2] for r in rows) == len(week.fetch_dead_letters()) == 2
    gaps = next(q for q in SQL if q.panel == "Top unknown codes")
    rows = _run(week, gaps)[1]
    assert {r[0] for r in rows} == {"dhl"}  # the codebook change
    assert rows[0][2] == week.query(
        "SELECT count() FROM canonical_events FINAL WHERE partner_id = 'dhl' AND raw_code = "
        "{c:String} AND status = 'unknown'", {"c": rows[0][1]})[0][0]


@pytest.mark.slow
def test_panel_sql_is_refused_if_it_writes(week: Store) -> None:
    """The tests run panel SQL read-only, as the Grafana user will be (docs/deploy.md)."""
    with pytest.raises(Exception):  # noqa: B017 - the engine's refusal, whatever its class
        week.query_readonly("INSERT INTO alerts (name) VALUES ('x')")


# ---------------------------------------------------------------------------------------------
# PromQL against a real Prometheus


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _fill_contract_registry(store: Store) -> Any:
    """A prometheus-client registry serving the COMMON metric contract, its values taken from
    the simulated week in the store (the pipeline's own results), plus the real anomaly
    exporter fed with the stored anomaly verdicts and the sink's metrics class."""
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

    from carrierwatch.anomaly.monitor import MonitorOutput, ScoredPoint
    from carrierwatch.outputs.prometheus import AnomalyExporter

    registry = CollectorRegistry()
    # the real exporters of the modules that exist register first; a contract metric that one
    # of them already exports (e.g. the sink's backlog) is then used, not registered twice
    exporter = AnomalyExporter(registry)
    from carrierwatch.streams.sink import SinkMetrics

    SinkMetrics(registry=registry)

    def metric(kind: type[Any], name: str, labels: Sequence[str] = (), **kwargs: Any) -> Any:
        try:
            return kind(name, "", list(labels), registry=registry, **kwargs)
        except ValueError:  # already exported by a real exporter above
            existing = registry._names_to_collectors  # prometheus-client's name map
            return existing.get(name) or existing[name.removesuffix("_total")]

    sli = metric(Counter, "carrierwatch_sli_events", ["partner", "service_level", "slo"])
    good = metric(Counter, "carrierwatch_sli_good_events", ["partner", "service_level", "slo"])
    limits = {s.id: s.contract.event_latency_p95_max_minutes * 60_000 for s in SPECS}
    for partner, level, *sums in store.query(
            "SELECT partner_id, service_level, sum(packages_decided), sum(packages_on_time), "
            "sum(first_attempts), sum(first_attempt_successes), sum(pickups_due), "
            "sum(pickups_on_time), sum(deliveries), sum(tracking_compliant), "
            "sumMap(latency_hist) FROM metric_windows FINAL WHERE granularity = '1d' "
            "GROUP BY 1, 2"):
        pairs = dict(zip(["on_time", "first_attempt", "pickup_compliance",
                          "tracking_compliance"], zip(sums[0:8:2], sums[1:8:2], strict=True),
                         strict=True))
        hist = dict(sums[8])
        bound = bucket_of(int(limits[partner]))
        pairs["event_latency"] = (sum(hist.values()),
                                  sum(v for k, v in hist.items() if k < bound))
        for slo, (total, ok) in pairs.items():
            sli.labels(partner, level, slo).inc(total)
            good.labels(partner, level, slo).inc(ok)
    canonical = metric(Counter, "carrierwatch_canonical_events", ["partner"])
    raw = metric(Counter, "carrierwatch_raw_payloads", ["partner"])
    last = metric(Gauge, "carrierwatch_last_event_timestamp_seconds", ["partner"])
    unknown = metric(Counter, "carrierwatch_codebook_unknown_codes", ["partner"])
    for partner, events, newest, gaps in store.query(
            "SELECT partner_id, count(), max(toUnixTimestamp64Milli(received_time)), "
            "countIf(status = 'unknown') FROM canonical_events FINAL GROUP BY 1"):
        canonical.labels(partner).inc(events)
        raw.labels(partner).inc(events)
        last.labels(partner).set(newest / 1000)
        unknown.labels(partner).inc(gaps)
    gap_info = metric(Gauge, "carrierwatch_codebook_gap_info", ["partner", "code"])
    for partner, code in store.query(
            "SELECT partner_id, raw_code FROM canonical_events FINAL WHERE status = 'unknown' "
            "GROUP BY 1, 2 ORDER BY count() DESC LIMIT 5 BY partner_id"):
        gap_info.labels(partner, code).set(1)
    dead = metric(Counter, "carrierwatch_dead_letters", ["partner", "stage"])
    for letter in store.fetch_dead_letters():
        dead.labels(letter.partner_id, "normalize").inc()
    state = metric(Gauge, "carrierwatch_heartbeat_state", ["partner", "integration", "state"])
    success = metric(Gauge, "carrierwatch_heartbeat_last_success_timestamp_seconds",
                     ["partner", "integration"])
    latency = metric(Histogram, "carrierwatch_heartbeat_latency_seconds",
                     ["partner", "integration"], buckets=(10, 30, 60, 120, 300, 600, 1800))
    for partner, status, sent, ms in store.query(
            "SELECT partner_id, status, toUnixTimestamp64Milli(sent_at), latency_ms "
            "FROM heartbeats FINAL ORDER BY sent_at"):
        for name in ("healthy", "slow", "silent"):
            current = {"seen": "healthy", "late": "slow", "missing": "silent"}[status]
            state.labels(partner, "webhook", name).set(1 if name == current else 0)
        if ms is not None:
            latency.labels(partner, "webhook").observe(ms / 1000)
            success.labels(partner, "webhook").set(sent / 1000)
    # pipeline gauges of processes that do not run in this test: set to their idle values
    lag = metric(Gauge, "carrierwatch_consumer_lag_messages", ["group", "topic"])
    lag.labels("carrierwatch", "events.canonical").set(0)
    metric(Gauge, "carrierwatch_sink_backlog_rows").set(0)
    metric(Gauge, "carrierwatch_kafka_up").set(1)
    breaker = metric(Gauge, "carrierwatch_poller_breaker_state", ["partner", "state"])
    poll = metric(Counter, "carrierwatch_poller_requests", ["partner", "outcome"])
    for name in ("closed", "half_open", "open"):
        breaker.labels("usps", name).set(1 if name == "closed" else 0)
    poll.labels("usps", "ok").inc(3)
    metric(Gauge, "carrierwatch_poller_tracked_numbers", ["partner"]) \
        .labels("usps").set(12)
    escalations = metric(Counter, "carrierwatch_escalations", ["partner", "action"])
    escalations.labels("ups", "page").inc()
    metric(Gauge, "carrierwatch_manual_tasks_open", ["partner"]) \
        .labels("ups").set(2)
    exporter.update(MonitorOutput(points=[
        ScoredPoint(p, m, to_ms(w), v, s, a, a) for p, m, w, v, s, a in store.query(
            "SELECT partner_id, metric, window_start, value, score, is_anomaly "
            "FROM anomalies FINAL ORDER BY window_start")]))
    return registry, escalations, canonical


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def prometheus(week: Store, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binary = shutil.which("prometheus")
    if binary is None:
        missing_component("prometheus", "Debian's prometheus package is not installed")
    from prometheus_client import start_http_server

    base = tmp_path_factory.mktemp("prometheus")
    registry, escalations, canonical = _fill_contract_registry(week)
    exporter_port = _free_port()
    server, thread = start_http_server(exporter_port, addr="127.0.0.1", registry=registry)
    gateway_port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "CARRIERWATCH_HOME": str(ROOT),
           "CARRIERWATCH_DATA_DIR": str(base / "gw"), "CARRIERWATCH_KAFKA_BOOTSTRAP":
           f"127.0.0.1:{_free_port()}"}
    gateway = subprocess.Popen([sys.executable, "-m", "carrierwatch", "gateway", "--port",
                                str(gateway_port)], env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    prom_port = _free_port()
    (base / "rules.yml").write_text(
        "groups:\n- name: test\n  interval: 1s\n  rules:\n"
        "  - alert: CarrierwatchAnomalyActive\n    expr: carrierwatch_anomaly_active == 1\n"
        "    labels: {severity: ticket}\n")
    (base / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "rule_files: [rules.yml]\nscrape_configs:\n"
        f"- job_name: worker\n  static_configs: [{{targets: ['127.0.0.1:{exporter_port}']}}]\n"
        f"- job_name: gateway\n  static_configs: [{{targets: ['127.0.0.1:{gateway_port}']}}]\n")
    prom = subprocess.Popen([binary, f"--config.file={base / 'prometheus.yml'}",
                             f"--storage.tsdb.path={base / 'tsdb'}",
                             f"--web.listen-address=127.0.0.1:{prom_port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{prom_port}"
    try:
        deadline = time.monotonic() + 60
        while True:  # the gateway answers, then a refused webhook gives a 401 series
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{gateway_port}/healthz", timeout=2)
                break
            except OSError:
                assert time.monotonic() < deadline and gateway.poll() is None, "gateway down"
                time.sleep(0.3)
        request = urllib.request.Request(f"http://127.0.0.1:{gateway_port}/ingest/fedex",
                                         data=b"{}", method="POST")
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(request, timeout=10)
        while True:  # both targets up, scraped a few times
            try:
                targets = _get(f"{url}/api/v1/targets")["data"]["activeTargets"]
                if len(targets) == 2 and all(t["health"] == "up" for t in targets):
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "prometheus did not scrape both targets"
            time.sleep(0.3)
        time.sleep(2)
        escalations.labels("ups", "page").inc()  # counters move between scrapes
        canonical.labels("fedex").inc(5)
        time.sleep(3)
        yield url
    finally:
        for process in (prom, gateway):
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        server.shutdown()
        thread.join(timeout=5)


def _promql(q: PanelQuery) -> str:
    return interpolate(q.text, {}).replace("$__rate_interval", "1m")


@pytest.mark.slow
def test_every_promql_expression_parses_and_returns_series(prometheus: str) -> None:
    results: dict[str, int] = {}
    for q in PROMQL:
        query = urllib.parse.urlencode({"query": _promql(q)})
        body = _get(f"{prometheus}/api/v1/query?{query}")
        assert body["status"] == "success", (_ids(q), body)
        results[_ids(q)] = len(body["data"]["result"])
    empty = sorted(k for k, n in results.items() if n == 0)
    assert empty == [], empty
    # the burn rate has a series per partner and SLO that has SLI counts
    burn = next(q for q in PROMQL if q.panel == "Error-budget burn")
    series = _get(f"{prometheus}/api/v1/query?"
                  + urllib.parse.urlencode({"query": _promql(burn)}))["data"]["result"]
    assert {(s["metric"]["partner"], s["metric"]["slo"]) for s in series} >= {
        (p, "on_time") for p in SIMULATED}


def test_promql_parses_with_promtool(tmp_path: Path) -> None:
    """Each expression in a recording rule: promtool checks the syntax (no server needed)."""
    promtool = shutil.which("promtool")
    if promtool is None:
        missing_component("promtool", "Debian's prometheus package is not installed")
    rules = {"groups": [{"name": "dashboards", "rules": [
        {"record": f"dashboard:query_{i}", "expr": _promql(q)} for i, q in enumerate(PROMQL)]}]}
    (tmp_path / "rules.json").write_text(json.dumps(rules))  # JSON is YAML
    done = subprocess.run([promtool, "check", "rules", str(tmp_path / "rules.json")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
