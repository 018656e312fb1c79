"""Grafana dashboards as code (grafanalib): what operations watch all day.

:func:`build` turns the partner registry (their SLA contracts) into dashboard JSON and Grafana
provisioning files; :func:`write` puts them into ``dashboards/`` (``carrierwatch dashboards
generate``). The files are committed and golden-tested, and every query they hold is executed in
the tests (ClickHouse SQL against chDB, PromQL against a real Prometheus): see
``docs/dashboards.md``.

Dashboards (uids are stable, so links survive regeneration):

* ``cw-scorecard-<partner>`` — one **partner scorecard** per partner: a stat panel per contract
  KPI whose thresholds are that partner's contract targets (Grafana thresholds are constants of a
  panel, so one dashboard per contract is what makes them exact), trends, worst regions,
  exceptions by reason and accountability, event latency, ETA accuracy and delay variance;
* ``cw-operations`` — all partners: SLO attainment and error-budget burn (Prometheus SLI
  counters), on-time today vs target, open anomalies, firing alerts, escalations, manual tasks;
* ``cw-integrations`` — heartbeats, event volumes, dead letters, codebook gaps, consumer lag,
  sink backlog, gateway errors by response code, poller breakers;
* ``cw-regions`` — region × day heatmaps of delay and failed first attempts;
* ``cw-hub-dwell`` — how long packages sit in hubs (``staged`` scan to the next scan).

ClickHouse panels read ``metric_windows`` through exact rollups: the counters are summed over
windows, regions, service levels and shards first, and the ratio is taken once
(``sum(packages_on_time) / sum(packages_decided)``), never an average of window ratios.
Quantiles come from the summed histograms (``sumMap``) with the core's nearest-rank rule.

Every query is a :class:`PanelQuery` (its SQL or PromQL and the columns a ClickHouse panel
expects), listed by :func:`panel_queries`, so that the tests can run each one.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from grafanalib.core import (
    BarGauge,
    Dashboard,
    DashboardLink,
    GridPos,
    Heatmap,
    RowPanel,
    Stat,
    Table,
    Template,
    Templating,
    Text,
    Time,
    TimeSeries,
)
from grafanalib.core import Panel as GrafanaPanel

from carrierwatch.core.model import CanonicalReason
from carrierwatch.core.partner import PartnerSpec
from carrierwatch.core.state import STATUS_RANK

__all__ = [
    "ACCOUNTABILITY",
    "CLICKHOUSE",
    "KPIS",
    "PROMETHEUS",
    "Kpi",
    "PanelQuery",
    "accountability_of",
    "build",
    "hist_quantile_sql",
    "panel_queries",
    "render",
    "write",
]

#: the datasources as provisioned (uids referenced by every panel)
CLICKHOUSE = {"type": "grafana-clickhouse-datasource", "uid": "carrierwatch-clickhouse"}
PROMETHEUS = {"type": "prometheus", "uid": "carrierwatch-prometheus"}
#: the ClickHouse plugin's target formats (its ``Format`` enum) and query types
_CH_FORMAT = {"table": 1, "timeseries": 0}

#: who is accountable for an exception or a failed attempt, by canonical reason: the carrier
#: answers for its network and for every failure it does not explain (other, unknown, none), so
#: that reporting reasons pays off; the same table as the scorecards' (docs/dashboards.md)
ACCOUNTABILITY: dict[str, str] = {
    CanonicalReason.RECIPIENT_NOT_AVAILABLE: "consignee",
    CanonicalReason.ACCESS_ISSUE: "consignee",
    CanonicalReason.CUSTOMER_REQUEST: "consignee",
    CanonicalReason.REFUSED: "consignee",
    CanonicalReason.PAYMENT_DUE: "consignee",
    CanonicalReason.ADDRESS_ISSUE: "shipper",
    CanonicalReason.CUSTOMS: "customs",
    CanonicalReason.WEATHER: "force_majeure",
    CanonicalReason.DAMAGED: "carrier",
    CanonicalReason.LOST: "carrier",
    CanonicalReason.VEHICLE_OR_CAPACITY: "carrier",
    CanonicalReason.CARRIER_DELAY: "carrier",
    CanonicalReason.OTHER: "carrier",
    CanonicalReason.UNKNOWN: "carrier",
}


@dataclass(frozen=True)
class Kpi:
    """A contract KPI: its rollup numerator and denominator in ``metric_windows``, and the
    contract field holding its target (``lower_is_better``: the target is a maximum)."""

    name: str
    title: str
    numerator: str
    denominator: str
    target_field: str
    lower_is_better: bool = False


KPIS: tuple[Kpi, ...] = (
    Kpi("on_time_rate", "On-time delivery", "packages_on_time", "packages_decided",
        "on_time_target"),
    Kpi("first_attempt_success_rate", "First-attempt success", "first_attempt_successes",
        "first_attempts", "first_attempt_target"),
    Kpi("exception_rate", "Exception rate", "packages_with_exception", "packages_decided",
        "exception_rate_max", lower_is_better=True),
    Kpi("pickup_compliance", "Pickup compliance", "pickups_on_time", "pickups_due",
        "pickup_compliance_target"),
    Kpi("tracking_compliance", "Tracking compliance", "tracking_compliant", "deliveries",
        "tracking_compliance_target"),
)

#: SLO names of the Prometheus SLI counters (COMMON metric contract) and their contract targets
SLO_TARGETS = {"on_time": "on_time_target", "first_attempt": "first_attempt_target",
               "pickup_compliance": "pickup_compliance_target",
               "tracking_compliance": "tracking_compliance_target"}
#: the event-latency SLO (events received within the contract's p95 bound) targets 95 %
EVENT_LATENCY_SLO_TARGET = 0.95


@dataclass(frozen=True)
class PanelQuery:
    """One query of one panel: ``language`` ``"sql"`` (ClickHouse plugin) or ``"promql"``.

    ``columns`` are the result columns a SQL panel expects, in order; ``kpi`` names the figure a
    scorecard stat panel shows (checked against an independent computation in the tests);
    ``partner`` is the partner a per-partner dashboard is about.
    """

    dashboard: str
    panel: str
    ref: str
    language: str
    text: str
    columns: tuple[str, ...] = ()
    kpi: str | None = None
    partner: str | None = None
    variable: bool = False


# ---------------------------------------------------------------------------------------------
# SQL fragments

def _ratio(numerator: str, denominator: str) -> str:
    return f"sum({numerator}) / nullIf(sum({denominator}), 0)"


def hist_quantile_sql(hist: str, q: float) -> str:
    """SQL for the nearest-rank quantile (ms) of a summed sparse histogram ``hist``
    (a ``Map(UInt16, Int64)`` expression, e.g. ``sumMap(latency_hist)`` in a subquery), read as
    the geometric midpoint of its bucket exactly like :func:`carrierwatch.core.sketch.quantile`;
    NULL for an empty histogram.

    >>> print(hist_quantile_sql("h", 0.5))  # doctest: +NORMALIZE_WHITESPACE
    if(arraySum(mapValues(h)) <= 0, NULL, toInt64(if(arraySort(mapKeys(h))[arrayFirstIndex(c -> c
    >= greatest(1, ceil(0.5 * arraySum(mapValues(h)))), arrayCumSum(arraySort((v, k) -> k,
    mapValues(h), mapKeys(h))))] = 0, 0, round(1000 * pow(1.05,
    arraySort(mapKeys(h))[arrayFirstIndex(c -> c >= greatest(1, ceil(0.5 *
    arraySum(mapValues(h)))), arrayCumSum(arraySort((v, k) -> k, mapValues(h), mapKeys(h))))] -
    0.5)))))
    """
    values = f"arraySort((v, k) -> k, mapValues({hist}), mapKeys({hist}))"
    rank = f"greatest(1, ceil({q} * arraySum(mapValues({hist}))))"
    bucket = (f"arraySort(mapKeys({hist}))[arrayFirstIndex(c -> c >= {rank}, "
              f"arrayCumSum({values}))]")
    return (f"if(arraySum(mapValues({hist})) <= 0, NULL, toInt64(if({bucket} = 0, 0, "
            f"round(1000 * pow(1.05, {bucket} - 0.5)))))")


def _sql_list(values: Iterable[str]) -> str:
    return "[" + ", ".join(f"'{v}'" for v in values) + "]"


def accountability_of(spec: PartnerSpec) -> dict[str, str]:
    """:data:`ACCOUNTABILITY` with the partner's contract overrides (``accountability:`` in its
    contract, where the contract has that field)."""
    overrides = getattr(spec.contract, "accountability", None) or {}
    return {**ACCOUNTABILITY, **{str(k): str(v) for k, v in dict(overrides).items()}}


def _accountability_sql(reason: str, table: dict[str, str]) -> str:
    return (f"transform({reason}, {_sql_list(table)}, {_sql_list(table.values())}, 'carrier')")


_STATUS_ORDER = sorted(STATUS_RANK, key=STATUS_RANK.__getitem__)
#: the canonical sort order of a package's events (docs/metrics.md §1) in SQL
_EVENT_ORDER = (f"event_time, transform(status, {_sql_list(_STATUS_ORDER)}, "
                f"[{', '.join(str(STATUS_RANK[s]) for s in _STATUS_ORDER)}], "
                f"{STATUS_RANK['unknown']}), event_id")

_WINDOWS_5M = "metric_windows FINAL"
_SCORECARD_FILTER = ("partner_id = '${partner}' AND service_level IN (${service_level:singlequote})"
                     " AND granularity = '%s' AND $__timeFilter(window_start)")


def _kpi_sql(kpi: Kpi) -> str:
    return (f"SELECT {_ratio(kpi.numerator, kpi.denominator)} AS {kpi.name}\n"
            f"FROM {_WINDOWS_5M}\nWHERE {_SCORECARD_FILTER % '5m'}")


def _latency_p95_minutes_sql() -> str:
    return ("SELECT " + hist_quantile_sql("h", 0.95) + " / 60000 AS event_latency_p95_minutes\n"
            "FROM (SELECT sumMap(latency_hist) AS h\n"
            f"      FROM {_WINDOWS_5M}\n      WHERE {_SCORECARD_FILTER % '5m'})")


_DELAY_MEAN = "sum(lateness_sum_s) / nullIf(sum(lateness_count), 0)"
_DELAY_VARIANCE = (f"greatest(0, sum(lateness_sum_sq_s2) / nullIf(sum(lateness_count), 0) - "
                   f"pow({_DELAY_MEAN}, 2))")


# ---------------------------------------------------------------------------------------------
# Panels

@dataclass
class _Builder:
    """Collects the panels of one dashboard, lays them out on the 24-column grid and records
    every query as a :class:`PanelQuery`."""

    uid: str
    partner: str | None = None
    panels: list[GrafanaPanel] = field(default_factory=list)
    queries: list[PanelQuery] = field(default_factory=list)
    _x: int = 0
    _y: int = 0
    _row_height: int = 0

    def row(self, title: str) -> None:
        self._newline()
        self.panels.append(RowPanel(title=title, gridPos=GridPos(h=1, w=24, x=0, y=self._y)))
        self._y += 1

    def _newline(self) -> None:
        if self._x:
            self._y += self._row_height
            self._x, self._row_height = 0, 0

    def _place(self, w: int, h: int) -> GridPos:
        if self._x + w > 24:
            self._newline()
        pos = GridPos(h=h, w=w, x=self._x, y=self._y)
        self._x += w
        self._row_height = max(self._row_height, h)
        return pos

    def sql(self, panel: str, sql: str, columns: Sequence[str], *, ref: str = "A",
            timeseries: bool = False, kpi: str | None = None) -> dict[str, Any]:
        self.queries.append(PanelQuery(self.uid, panel, ref, "sql", sql, tuple(columns), kpi,
                                       self.partner))
        kind = "timeseries" if timeseries else "table"
        return {"refId": ref, "datasource": CLICKHOUSE, "editorType": "sql",
                "format": _CH_FORMAT[kind], "queryType": kind, "rawSql": sql}

    def promql(self, panel: str, expr: str, *, ref: str = "A", legend: str = "",
               instant: bool = False) -> dict[str, Any]:
        self.queries.append(PanelQuery(self.uid, panel, ref, "promql", expr,
                                       partner=self.partner))
        target: dict[str, Any] = {"refId": ref, "datasource": PROMETHEUS, "expr": expr,
                                  "legendFormat": legend or "__auto", "range": not instant,
                                  "instant": instant}
        if instant:
            target["format"] = "table"
        return target

    def add(self, panel_type: type[GrafanaPanel], title: str, targets: list[dict[str, Any]],
            w: int, h: int, **kwargs: Any) -> None:
        datasource = targets[0]["datasource"] if targets else None
        self.panels.append(panel_type(title=title, targets=targets, dataSource=datasource,
                                      gridPos=self._place(w, h), **kwargs))


def _steps(target: float, lower_is_better: bool, warn_margin: float) -> list[dict[str, Any]]:
    """Stat thresholds from a contract target: green meets the contract, amber within
    ``warn_margin`` of it, red beyond."""
    if lower_is_better:
        return [{"color": "green", "value": None},
                {"color": "red", "value": round(target, 6)}]
    return [{"color": "red", "value": None},
            {"color": "orange", "value": round(max(0.0, target - warn_margin), 6)},
            {"color": "green", "value": round(target, 6)}]


def _service_level_variable(spec: PartnerSpec) -> Template:
    return Template(
        name="service_level", label="Service level", dataSource=CLICKHOUSE,
        query=("SELECT DISTINCT service_level FROM metric_windows "
               f"WHERE partner_id = '{spec.id}' ORDER BY service_level"),
        includeAll=True, multi=True, default="$__all", refresh=2)


def _scorecard(spec: PartnerSpec, partners: Sequence[PartnerSpec]) -> tuple[Dashboard,
                                                                          list[PanelQuery]]:
    contract = spec.contract
    b = _Builder(f"cw-scorecard-{spec.id}", partner=spec.id)
    b.row("Contract KPIs (selected range, exact rollups)")
    for kpi in KPIS:
        target = float(getattr(contract, kpi.target_field))
        bound = "max" if kpi.lower_is_better else "target"
        b.add(Stat, f"{kpi.title} ({bound} {target:.0%})",
              [b.sql(kpi.title, _kpi_sql(kpi), (kpi.name,), kpi=kpi.name)], 4, 4,
              format="percentunit", decimals=2, graphMode="none", colorMode="background",
              reduceCalc="lastNotNull", noValue="no decided packages",
              thresholds=_steps(target, kpi.lower_is_better, 0.02),
              description=f"{kpi.numerator} / {kpi.denominator}, summed over the range; "
                          f"contract {kpi.target_field} = {target}")
    latency_max = float(contract.event_latency_p95_max_minutes)
    b.add(Stat, f"Event latency p95 (max {latency_max:g} min)",
          [b.sql("Event latency p95", _latency_p95_minutes_sql(), ("event_latency_p95_minutes",),
                 kpi="event_latency_p95_minutes")], 4, 4,
          format="m", decimals=1, graphMode="none", colorMode="background",
          reduceCalc="lastNotNull",
          thresholds=[{"color": "green", "value": None},
                      {"color": "red", "value": latency_max}],
          description="received − event time, p95 of the summed histogram (≤ 2.5 % error)")
    b.add(Stat, "ETA accuracy",
          [b.sql("ETA accuracy", f"SELECT {_ratio('eta_accurate', 'eta_checked')} AS "
                 f"eta_accuracy\nFROM {_WINDOWS_5M}\nWHERE {_SCORECARD_FILTER % '5m'}",
                 ("eta_accuracy",), kpi="eta_accuracy")], 8, 4,
          format="percentunit", decimals=1, graphMode="none", reduceCalc="lastNotNull")
    b.add(Stat, "Delay: mean and standard deviation",
          [b.sql("Delay", f"SELECT {_DELAY_MEAN} / 3600 AS mean_delay_hours,\n"
                 f"       sqrt({_DELAY_VARIANCE}) / 3600 AS delay_stddev_hours\n"
                 f"FROM {_WINDOWS_5M}\nWHERE {_SCORECARD_FILTER % '5m'}",
                 ("mean_delay_hours", "delay_stddev_hours"), kpi="delay")], 8, 4,
          format="h", decimals=2, graphMode="none", reduceCalc="lastNotNull",
          description="lateness = delivered − promised (negative: early)")
    b.add(Stat, "Volume",
          [b.sql("Volume", "SELECT sum(packages_decided) AS packages_decided, sum(deliveries) "
                 "AS deliveries, sum(exceptions_opened) AS exceptions_opened, sum(events) AS "
                 f"events\nFROM {_WINDOWS_5M}\nWHERE {_SCORECARD_FILTER % '5m'}",
                 ("packages_decided", "deliveries", "exceptions_opened", "events"),
                 kpi="volume")], 8, 4,
          format="short", graphMode="none", reduceCalc="lastNotNull")

    rates = ",\n       ".join(f"{_ratio(k.numerator, k.denominator)} AS {k.name}" for k in KPIS)
    columns = ("time", *(k.name for k in KPIS))
    b.row("Trends")
    for title, bucket in (("Daily", "window_start"), ("Weekly", "toMonday(window_start)")):
        sql = (f"SELECT toDateTime({bucket}) AS time,\n       {rates}\nFROM {_WINDOWS_5M}\n"
               f"WHERE {_SCORECARD_FILTER % '1d'}\nGROUP BY time\nORDER BY time")
        b.add(TimeSeries, f"{title} KPIs", [b.sql(f"{title} KPIs", sql, columns,
                                                  timeseries=True)], 12, 8,
              unit="percentunit", drawStyle="line" if title == "Daily" else "bars",
              fillOpacity=0 if title == "Daily" else 40, showPoints="always")

    b.row("Where and why")
    b.add(Table, "Worst regions (lowest on-time rate)",
          [b.sql("Worst regions",
                 "SELECT region,\n       sum(packages_decided) AS decided_packages,\n       "
                 f"{rates},\n       sum(first_attempts) - sum(first_attempt_successes) AS "
                 f"failed_first_attempts\nFROM {_WINDOWS_5M}\nWHERE {_SCORECARD_FILTER % '5m'}\n"
                 "GROUP BY region\nHAVING decided_packages > 0\n"
                 "ORDER BY on_time_rate ASC, decided_packages DESC\nLIMIT 10",
                 ("region", "decided_packages", *(k.name for k in KPIS),
                  "failed_first_attempts"))], 12, 9, unit="percentunit")
    default_level = contract.default_service_level
    b.add(Table, "Exceptions and failed attempts by reason and accountability",
          [b.sql("Exceptions by reason",
                 f"SELECT {_accountability_sql('reason', accountability_of(spec))} AS "
                 "accountability,\n"
                 "       reason,\n"
                 "       countIf(status = 'exception') AS exceptions,\n"
                 "       countIf(status = 'delivery_attempted') AS failed_attempts\n"
                 "FROM (SELECT ifNull(reason, 'unknown') AS reason, status\n"
                 "      FROM canonical_events FINAL\n"
                 "      WHERE partner_id = '${partner}' AND NOT synthetic\n"
                 "        AND status IN ('exception', 'delivery_attempted')\n"
                 f"        AND ifNull(service_level, '{default_level}') IN "
                 "(${service_level:singlequote})\n"
                 "        AND $__timeFilter(event_time))\n"
                 "GROUP BY accountability, reason\n"
                 "ORDER BY exceptions + failed_attempts DESC, reason",
                 ("accountability", "reason", "exceptions", "failed_attempts"))], 12, 9)

    b.row("Feed quality and promises")
    latency_sql = (
        "SELECT time, " + hist_quantile_sql("h", 0.5) + " / 60000 AS p50_minutes,\n"
        "       " + hist_quantile_sql("h", 0.95) + " / 60000 AS p95_minutes\n"
        "FROM (SELECT $__timeInterval(window_start) AS time, sumMap(latency_hist) AS h\n"
        f"      FROM {_WINDOWS_5M}\n      WHERE {_SCORECARD_FILTER % '5m'}\n"
        "      GROUP BY time)\nORDER BY time")
    b.add(TimeSeries, "Event latency (received − event time)",
          [b.sql("Event latency", latency_sql, ("time", "p50_minutes", "p95_minutes"),
                 timeseries=True)], 8, 8, unit="m")
    b.add(TimeSeries, "ETA accuracy",
          [b.sql("ETA accuracy trend",
                 f"SELECT $__timeInterval(window_start) AS time,\n       "
                 f"{_ratio('eta_accurate', 'eta_checked')} AS eta_accuracy\n"
                 f"FROM {_WINDOWS_5M}\nWHERE {_SCORECARD_FILTER % '1h'}\n"
                 "GROUP BY time\nORDER BY time", ("time", "eta_accuracy"),
                 timeseries=True)], 8, 8, unit="percentunit")
    b.add(TimeSeries, "Delay mean and standard deviation (daily)",
          [b.sql("Delay variance",
                 f"SELECT toDateTime(window_start) AS time,\n       {_DELAY_MEAN} / 3600 AS "
                 f"mean_delay_hours,\n       sqrt({_DELAY_VARIANCE}) / 3600 AS "
                 f"delay_stddev_hours\nFROM {_WINDOWS_5M}\nWHERE {_SCORECARD_FILTER % '1d'}\n"
                 "GROUP BY time\nORDER BY time",
                 ("time", "mean_delay_hours", "delay_stddev_hours"), timeseries=True)],
          8, 8, unit="h")

    templating = Templating(list=[
        Template(name="partner", label="Partner", query=spec.id, type="custom",
                 default=spec.id, hide=0),
        _service_level_variable(spec)])
    b.queries.append(PanelQuery(b.uid, "variable service_level", "var", "sql",
                                templating.list[1].query, ("service_level",),
                                partner=spec.id, variable=True))
    dashboard = Dashboard(
        title=f"Scorecard: {spec.display_name}", uid=b.uid, panels=b.panels,
        tags=["carrierwatch", "carrierwatch-scorecard"], templating=templating,
        time=Time("now-7d", "now"), timezone="utc", refresh="5m",
        description=f"Partner scorecard of {spec.display_name} against its SLA contract",
        links=[_overview_link(), DashboardLink(title="Other scorecards", type="dashboards",
                                               tags=["carrierwatch-scorecard"], asDropdown=True,
                                               keepTime=True)])
    del partners
    return dashboard, b.queries


def _overview_link() -> DashboardLink:
    return DashboardLink(title="Operations overview", type="link", uri="/d/cw-operations",
                         keepTime=True, icon="dashboard")


def _target_vector(partners: Sequence[PartnerSpec]) -> str:
    """A PromQL instant vector of SLO targets labelled ``partner`` and ``slo`` (the contract's
    targets written as literals: Prometheus holds no configuration of its own)."""
    terms = []
    for spec in partners:
        for slo, target_field in SLO_TARGETS.items():
            target = float(getattr(spec.contract, target_field))
            terms.append(f'label_replace(label_replace(vector({target:g}), "partner", '
                         f'"{spec.id}", "", ""), "slo", "{slo}", "", "")')
        terms.append(f'label_replace(label_replace(vector({EVENT_LATENCY_SLO_TARGET:g}), '
                     f'"partner", "{spec.id}", "", ""), "slo", "event_latency", "", "")')
    return "(\n  " + "\n  or ".join(terms) + "\n)"


def _operations(partners: Sequence[PartnerSpec]) -> tuple[Dashboard, list[PanelQuery]]:
    b = _Builder("cw-operations")
    sli = "carrierwatch_sli_events_total"
    good = "carrierwatch_sli_good_events_total"
    b.row("SLOs (Prometheus SLI counters)")
    attainment = (f"sum by (partner, slo) (increase({good}[28d]))\n/\n"
                  f"sum by (partner, slo) (increase({sli}[28d]))")
    b.add(Table, "SLO attainment, 28 days", [b.promql("SLO attainment", attainment,
                                                        instant=True)], 12, 9,
          unit="percentunit")
    burn = (f"(\n  1 - sum by (partner, slo) (rate({good}[1h]))\n"
            f"    / sum by (partner, slo) (rate({sli}[1h]))\n)\n"
            f"/ on (partner, slo) group_left ()\n(1 - {_target_vector(partners)})")
    b.add(TimeSeries, "Error-budget burn rate (1 h; 1 = on budget, 14.4 = page)",
          [b.promql("Error-budget burn", burn, legend="{{partner}} {{slo}}")], 12, 9,
          thresholdsStyleMode="line")

    b.row("Today")
    targets_sql = (f"transform(partner_id, {_sql_list(p.id for p in partners)}, "
                   f"[{', '.join(repr(float(p.contract.on_time_target)) for p in partners)}], "
                   "toFloat64(0.95))")
    on_time_today = (
        "SELECT partner_id AS partner,\n"
        "       sum(packages_decided) AS decided_packages,\n"
        f"       {_ratio('packages_on_time', 'packages_decided')} AS on_time_rate,\n"
        f"       any({targets_sql}) AS on_time_target,\n"
        "       if(on_time_rate >= on_time_target, 'meets', 'below') AS status\n"
        "FROM metric_windows FINAL\n"
        "WHERE granularity = '5m' AND $__timeFilter(window_start)\n"
        "GROUP BY partner\nORDER BY on_time_rate ASC, partner")
    b.add(Table, "On-time today vs target (click a partner for its scorecard)",
          [b.sql("On-time today", on_time_today,
                 ("partner", "decided_packages", "on_time_rate", "on_time_target", "status"))],
          12, 9, timeFrom="now/d", overrides=[{
              "matcher": {"id": "byName", "options": "partner"},
              "properties": [{"id": "links", "value": [{
                  "title": "Scorecard of ${__value.raw}",
                  "url": "/d/cw-scorecard-${__value.raw}?${__url_time_range}"}]}]}])
    scorecard_links = "\n".join(f"* [{p.display_name}](/d/cw-scorecard-{p.id})"
                                for p in partners)
    b.add(Text, "Partner scorecards", [], 4, 9, content=scorecard_links, mode="markdown")
    b.add(Stat, "Open anomalies", [b.promql("Open anomalies",
                                            "sum by (partner) (carrierwatch_anomaly_active)",
                                            legend="{{partner}}", instant=True)], 8, 9,
          reduceCalc="lastNotNull", thresholds=[{"color": "green", "value": None},
                                                {"color": "red", "value": 1}])

    b.row("Alerts and escalations")
    b.add(Table, "Firing alerts",
          [b.promql("Firing alerts",
                    'sum by (alertname, partner, severity) (ALERTS{alertstate="firing"})',
                    instant=True)], 12, 8)
    b.add(Table, "Anomalies in range (ClickHouse)",
          [b.sql("Anomalies in range",
                 "SELECT partner_id AS partner, metric, window_start, value, score, detector\n"
                 "FROM anomalies FINAL\nWHERE is_anomaly AND $__timeFilter(window_start)\n"
                 "ORDER BY window_start DESC, partner, metric\nLIMIT 50",
                 ("partner", "metric", "window_start", "value", "score", "detector"))], 12, 8)
    b.add(TimeSeries, "Escalations",
          [b.promql("Escalations",
                    "sum by (partner, action) (increase(carrierwatch_escalations_total"
                    "[$__rate_interval]))", legend="{{partner}} {{action}}")], 12, 7,
          drawStyle="bars")
    b.add(BarGauge, "Open manual tasks",
          [b.promql("Open manual tasks", "sum by (partner) (carrierwatch_manual_tasks_open)",
                    legend="{{partner}}", instant=True)], 12, 7)
    dashboard = Dashboard(
        title="carrierwatch: operations overview", uid=b.uid, panels=b.panels,
        tags=["carrierwatch"], time=Time("now-24h", "now"), timezone="utc", refresh="1m",
        description="All partners at a glance",
        links=[DashboardLink(title="Scorecards", type="dashboards",
                             tags=["carrierwatch-scorecard"], asDropdown=True, keepTime=True),
               DashboardLink(title="Integration health", type="link",
                             uri="/d/cw-integrations", keepTime=True)])
    return dashboard, b.queries


def _integrations() -> tuple[Dashboard, list[PanelQuery]]:
    b = _Builder("cw-integrations")
    b.row("Heartbeats (synthetic deliveries through each integration)")
    b.add(Table, "Heartbeat state",
          [b.promql("Heartbeat state",
                    "max by (partner, integration, state) (carrierwatch_heartbeat_state) == 1",
                    instant=True)], 8, 8)
    b.add(TimeSeries, "Heartbeat latency p95",
          [b.promql("Heartbeat latency",
                    "histogram_quantile(0.95, sum by (partner, integration, le) "
                    "(rate(carrierwatch_heartbeat_latency_seconds_bucket[$__rate_interval])))",
                    legend="{{partner}} {{integration}}")], 8, 8, unit="s")
    b.add(Table, "Heartbeats in range (ClickHouse)",
          [b.sql("Heartbeats in range",
                 "SELECT partner_id AS partner,\n       count() AS sent,\n"
                 "       countIf(status = 'seen') AS seen,\n"
                 "       countIf(status = 'late') AS late,\n"
                 "       countIf(status = 'missing') AS missing,\n"
                 "       quantileExactIf(0.95)(latency_ms, latency_ms IS NOT NULL) / 1000 "
                 "AS latency_p95_seconds\n"
                 "FROM heartbeats FINAL\nWHERE $__timeFilter(sent_at)\n"
                 "GROUP BY partner\nORDER BY partner",
                 ("partner", "sent", "seen", "late", "missing", "latency_p95_seconds"))], 8, 8)

    b.row("Events")
    b.add(TimeSeries, "Canonical events received per partner",
          [b.promql("Events received",
                    "sum by (partner) (rate(carrierwatch_canonical_events_total"
                    "[$__rate_interval]))", legend="{{partner}}"),
           b.promql("Events received", "sum by (partner) (rate(carrierwatch_raw_payloads_total"
                    "[$__rate_interval]))", ref="B", legend="{{partner}} raw payloads")], 12, 8,
          unit="reqps")
    b.add(TimeSeries, "Seconds since the latest event",
          [b.promql("Feed freshness",
                    "time() - max by (partner) (carrierwatch_last_event_timestamp_seconds)",
                    legend="{{partner}}")], 12, 8, unit="s")

    b.row("Bad input")
    b.add(TimeSeries, "Dead letters by stage",
          [b.promql("Dead letters",
                    "sum by (partner, stage) (increase(carrierwatch_dead_letters_total"
                    "[$__rate_interval]))", legend="{{partner}} {{stage}}")], 8, 8,
          drawStyle="bars")
    b.add(Table, "Dead letters by error (ClickHouse)",
          [b.sql("Dead letters by error",
                 "SELECT partner_id AS partner, substring(error, 1, 120) AS error, "
                 "count() AS dead_letters,\n       max(received_time) AS latest\n"
                 "FROM dead_letters FINAL\nWHERE $__timeFilter(received_time)\n"
                 "GROUP BY partner, error\nORDER BY dead_letters DESC, partner, error\nLIMIT 20",
                 ("partner", "error", "dead_letters", "latest"))], 8, 8)
    b.add(Table, "Top unknown codes (codebook gaps)",
          [b.sql("Top unknown codes",
                 "SELECT partner_id AS partner, raw_code, count() AS events,\n"
                 "       max(received_time) AS latest\n"
                 "FROM canonical_events FINAL\nWHERE status = 'unknown' AND "
                 "$__timeFilter(event_time)\nGROUP BY partner, raw_code\n"
                 "ORDER BY events DESC, partner, raw_code\nLIMIT 20",
                 ("partner", "raw_code", "events", "latest")),
           b.promql("Top unknown codes", "carrierwatch_codebook_gap_info == 1", ref="B",
                    instant=True)], 8, 8)
    b.add(TimeSeries, "Codebook gaps (unknown codes per partner)",
          [b.promql("Codebook gaps", "sum by (partner) (increase("
                    "carrierwatch_codebook_unknown_codes_total[$__rate_interval]))",
                    legend="{{partner}}")], 24, 7, drawStyle="bars")

    b.row("Pipeline")
    b.add(TimeSeries, "Consumer lag",
          [b.promql("Consumer lag", "max by (group, topic) (carrierwatch_consumer_lag_messages)",
                    legend="{{group}} {{topic}}")], 8, 8)
    b.add(TimeSeries, "Sink backlog (rows not yet in ClickHouse)",
          [b.promql("Sink backlog", "sum(carrierwatch_sink_backlog_rows)", legend="backlog")],
          8, 8)
    b.add(Stat, "Kafka reachable",
          [b.promql("Kafka reachable", "min by (job) (carrierwatch_kafka_up)",
                    legend="{{job}}", instant=True),
           b.promql("Kafka reachable", "min(carrierwatch_gateway_kafka_up)", ref="B",
                    legend="gateway", instant=True)], 8, 8,
          thresholds=[{"color": "red", "value": None}, {"color": "green", "value": 1}])

    b.row("Ingest")
    b.add(TimeSeries, "Gateway errors by code (refused requests)",
          [b.promql("Gateway errors",
                    'sum by (partner, outcome) (rate(carrierwatch_gateway_requests_total'
                    '{outcome!="accepted"}[$__rate_interval]))', legend="{{partner}} {{outcome}}")],
          8, 8, unit="reqps")
    b.add(TimeSeries, "Gateway spool",
          [b.promql("Gateway spool", "max(carrierwatch_gateway_spool_depth)", legend="depth"),
           b.promql("Gateway spool", "max(carrierwatch_gateway_spool_oldest_age_seconds)",
                    ref="B", legend="oldest age (s)")], 8, 8)
    b.add(Table, "Poller circuit breakers",
          [b.promql("Poller breakers",
                    "max by (partner, state) (carrierwatch_poller_breaker_state) == 1",
                    instant=True),
           b.promql("Poller breakers",
                    'sum by (partner, outcome) (increase(carrierwatch_poller_requests_total'
                    '[1h]))', ref="B", instant=True)], 8, 8)
    dashboard = Dashboard(
        title="carrierwatch: integration health", uid=b.uid, panels=b.panels,
        tags=["carrierwatch"], time=Time("now-6h", "now"), timezone="utc", refresh="1m",
        description="Is every partner feed alive, complete and flowing?",
        links=[_overview_link()])
    return dashboard, b.queries


_PARTNERS_VARIABLE = Template(
    name="partner", label="Partner", dataSource=CLICKHOUSE,
    query="SELECT DISTINCT partner_id FROM metric_windows ORDER BY partner_id",
    includeAll=True, multi=True, default="$__all", refresh=2)


def _regions() -> tuple[Dashboard, list[PanelQuery]]:
    b = _Builder("cw-regions")
    where = ("partner_id IN (${partner:singlequote}) AND granularity = '1d' "
             "AND $__timeFilter(window_start)")
    b.add(Heatmap, "Mean delay (hours late) by region and day",
          [b.sql("Delay heatmap",
                 f"SELECT toDateTime(window_start) AS time, region,\n"
                 f"       {_DELAY_MEAN} / 3600 AS mean_delay_hours\n"
                 f"FROM {_WINDOWS_5M}\nWHERE {where}\nGROUP BY time, region\n"
                 "HAVING sum(lateness_count) > 0\nORDER BY time, region",
                 ("time", "region", "mean_delay_hours"), timeseries=True)], 24, 10,
          extraJson={"options": {"calculate": False, "cellGap": 1,
                                 "color": {"scheme": "RdYlGn", "reverse": True}}})
    b.add(Heatmap, "Failed first attempts (share) by region and day",
          [b.sql("Failed attempts heatmap",
                 "SELECT toDateTime(window_start) AS time, region,\n"
                 "       1 - sum(first_attempt_successes) / nullIf(sum(first_attempts), 0) "
                 "AS failed_first_attempt_rate\n"
                 f"FROM {_WINDOWS_5M}\nWHERE {where}\nGROUP BY time, region\n"
                 "HAVING sum(first_attempts) > 0\nORDER BY time, region",
                 ("time", "region", "failed_first_attempt_rate"), timeseries=True)], 24, 10,
          extraJson={"options": {"calculate": False, "cellGap": 1,
                                 "color": {"scheme": "RdYlGn", "reverse": True}}})
    b.add(Table, "Regions over the range",
          [b.sql("Regions table",
                 "SELECT region,\n       sum(deliveries) AS deliveries,\n"
                 f"       {_DELAY_MEAN} / 3600 AS mean_delay_hours,\n"
                 f"       sqrt({_DELAY_VARIANCE}) / 3600 AS delay_stddev_hours,\n"
                 "       sum(first_attempts) - sum(first_attempt_successes) AS "
                 "failed_first_attempts,\n"
                 "       1 - sum(first_attempt_successes) / nullIf(sum(first_attempts), 0) "
                 "AS failed_first_attempt_rate\n"
                 f"FROM {_WINDOWS_5M}\nWHERE {where}\nGROUP BY region\n"
                 "ORDER BY mean_delay_hours DESC, region",
                 ("region", "deliveries", "mean_delay_hours", "delay_stddev_hours",
                  "failed_first_attempts", "failed_first_attempt_rate"))], 24, 10)
    dashboard = Dashboard(
        title="carrierwatch: region heatmap", uid=b.uid, panels=b.panels,
        tags=["carrierwatch"], templating=Templating(list=[_PARTNERS_VARIABLE]),
        time=Time("now-14d", "now"), timezone="utc", refresh="5m",
        description="Where deliveries are late and first attempts fail",
        links=[_overview_link()])
    b.queries.append(PanelQuery(b.uid, "variable partner", "var", "sql",
                                _PARTNERS_VARIABLE.query, ("partner_id",), variable=True))
    return dashboard, b.queries


_HUB_NAME = ("multiIf(notEmpty(ifNull(location_city, '')) AND notEmpty(ifNull(location_region, "
             "'')), concat(location_city, ', ', location_region), notEmpty(ifNull(location_city, "
             "'')), location_city, notEmpty(ifNull(location_region, '')), location_region, NULL)")
#: days before the range in which an arrival whose departure is inside the range is looked for
HUB_LOOKBACK_DAYS = 14

#: one measured stay in a hub (the scorecards' definition, docs/dashboards.md): an arrival is a
#: ``staged`` scan with a place (the hub: "city, region", or whichever is known); its departure
#: is the next scan that leaves the hub (``in_transit``, ``out_for_delivery``) unless another
#: ``staged`` or a terminal scan comes first (then the stay is not measured). Only the scans that
#: can end a stay are kept before the lead, so "the next one" skips everything else. A stay
#: belongs to the range of its departure.
HUB_STAYS_SQL = (
    "SELECT partner_id, hub, event_time AS arrived, next_time AS departed,\n"
    "       dateDiff('millisecond', event_time, next_time) / 1000 AS dwell_seconds\n"
    "FROM (SELECT partner_id, status, event_time, " + _HUB_NAME + " AS hub,\n"
    "             leadInFrame(status) OVER w AS next_status,\n"
    "             leadInFrame(toNullable(event_time)) OVER w AS next_time\n"
    "      FROM canonical_events FINAL\n"
    "      WHERE partner_id IN (${partner:singlequote}) AND NOT synthetic\n"
    "        AND status IN ('staged', 'in_transit', 'out_for_delivery', 'delivered', "
    "'returned', 'cancelled')\n"
    f"        AND event_time >= $__fromTime - INTERVAL {HUB_LOOKBACK_DAYS} DAY "
    "AND event_time <= $__toTime\n"
    "      WINDOW w AS (PARTITION BY partner_id, package_id\n"
    f"                   ORDER BY {_EVENT_ORDER}\n"
    "                   ROWS BETWEEN CURRENT ROW AND 1 FOLLOWING))\n"
    "WHERE status = 'staged' AND hub IS NOT NULL\n"
    "  AND next_status IN ('in_transit', 'out_for_delivery')\n"
    "  AND $__timeFilter(next_time)")


def _hub_dwell() -> tuple[Dashboard, list[PanelQuery]]:
    b = _Builder("cw-hub-dwell")
    b.add(Table, "Hub dwell time by hub",
          [b.sql("Hub dwell by hub",
                 "SELECT partner_id AS partner, hub, count() AS stays,\n"
                 "       quantileExact(0.5)(dwell_seconds) / 3600 AS p50_hours,\n"
                 "       quantileExact(0.9)(dwell_seconds) / 3600 AS p90_hours,\n"
                 "       max(dwell_seconds) / 3600 AS max_hours\n"
                 f"FROM ({HUB_STAYS_SQL})\nGROUP BY partner, hub\n"
                 "ORDER BY p90_hours DESC, partner, hub\nLIMIT 30",
                 ("partner", "hub", "stays", "p50_hours", "p90_hours", "max_hours"))],
          24, 10, unit="h")
    b.add(TimeSeries, "Hub dwell p90 per partner (by departure day)",
          [b.sql("Hub dwell trend",
                 "SELECT toStartOfDay(departed) AS time, partner_id AS partner,\n"
                 "       quantileExact(0.9)(dwell_seconds) / 3600 AS p90_hours\n"
                 f"FROM ({HUB_STAYS_SQL})\nGROUP BY time, partner\nORDER BY time, partner",
                 ("time", "partner", "p90_hours"), timeseries=True)], 24, 9, unit="h")
    dashboard = Dashboard(
        title="carrierwatch: hub dwell time", uid=b.uid, panels=b.panels,
        tags=["carrierwatch"], templating=Templating(list=[_PARTNERS_VARIABLE]),
        time=Time("now-7d", "now"), timezone="utc", refresh="5m",
        description="Time from a package's hub arrival (staged scan) to its departure scan",
        links=[_overview_link()])
    b.queries.append(PanelQuery(b.uid, "variable partner", "var", "sql",
                                _PARTNERS_VARIABLE.query, ("partner_id",), variable=True))
    return dashboard, b.queries


# ---------------------------------------------------------------------------------------------
# Files

def _dashboards(partners: Sequence[PartnerSpec]) -> list[tuple[Dashboard, list[PanelQuery]]]:
    ordered = sorted(partners, key=lambda p: p.id)
    built = [_operations(ordered), _integrations(), _regions(), _hub_dwell()]
    built += [_scorecard(spec, ordered) for spec in ordered]
    return built


def panel_queries(partners: Sequence[PartnerSpec]) -> list[PanelQuery]:
    """Every query of every dashboard (panels and template variables)."""
    return [q for _, queries in _dashboards(partners) for q in queries]


def _json(obj: Any) -> str:
    from grafanalib._gen import DashboardEncoder

    return json.dumps(obj, cls=DashboardEncoder, indent=2, sort_keys=True) + "\n"


DATASOURCES_YAML = {
    "apiVersion": 1,
    "datasources": [
        {"name": "ClickHouse", "type": CLICKHOUSE["type"], "uid": CLICKHOUSE["uid"],
         "isDefault": True, "editable": False,
         "jsonData": {"host": "${CLICKHOUSE_HOST}", "port": 9000, "protocol": "native",
                      "username": "${CLICKHOUSE_GRAFANA_USER}",
                      "defaultDatabase": "${CLICKHOUSE_DATABASE}"},
         "secureJsonData": {"password": "${CLICKHOUSE_GRAFANA_PASSWORD}"}},
        {"name": "Prometheus", "type": PROMETHEUS["type"], "uid": PROMETHEUS["uid"],
         "url": "http://prometheus:9090", "access": "proxy", "editable": False,
         "jsonData": {"timeInterval": "15s"}},
    ],
}

PROVIDER_YAML = {
    "apiVersion": 1,
    "providers": [{"name": "carrierwatch", "folder": "carrierwatch", "type": "file",
                   "disableDeletion": True, "allowUiUpdates": False,
                   "updateIntervalSeconds": 60,
                   "options": {"path": "/var/lib/grafana/dashboards/carrierwatch",
                               "foldersFromFilesStructure": False}}],
}


def render(partners: Sequence[PartnerSpec]) -> dict[str, str]:
    """The files of ``dashboards/`` (relative path → text), byte-for-byte reproducible."""
    header = "# generated by `carrierwatch dashboards generate`: do not edit\n"
    files = {
        "provisioning/datasources/carrierwatch.yaml":
            header + yaml.safe_dump(DATASOURCES_YAML, sort_keys=False),
        "provisioning/dashboards/carrierwatch.yaml":
            header + yaml.safe_dump(PROVIDER_YAML, sort_keys=False),
    }
    for dashboard, _ in _dashboards(partners):
        files[f"json/{dashboard.uid}.json"] = _json(dashboard.auto_panel_ids().to_json_data())
    return files


def build(home: Path | None = None) -> dict[str, str]:
    """:func:`render` for the partners of the configuration home."""
    from carrierwatch.transformers.registry import load_registry

    registry = load_registry(home)
    registry.require(None)
    return render([registry.get(pid).spec for pid in registry.ids()])


def write(files: dict[str, str], out_dir: Path) -> list[Path]:
    """Write ``files`` under ``out_dir``; remove generated dashboards that are no longer built
    (a partner removed). Returns the paths written."""
    written = []
    for relative, text in sorted(files.items()):
        path = out_dir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
        written.append(path)
    json_dir = out_dir / "json"
    if json_dir.is_dir():
        for stale in json_dir.glob("cw-*.json"):
            if f"json/{stale.name}" not in files:
                stale.unlink()
    return written
