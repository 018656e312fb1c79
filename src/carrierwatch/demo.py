"""``carrierwatch demo``: the main job on embedded defaults, end to end, in one command.

1. simulates realistic feeds for five partners, each in its own format: ``--history-days`` (7)
   days of history, then the reported week (``--days``, from Monday 2026-03-02) with labelled
   incidents (by default an exception spike at FedEx and a feed outage at UPS; their offsets
   count from the reported week's start);
2. replays everything through the whole core (transform → dedup → package state → SLA windows →
   the online anomaly monitor) into the embedded ClickHouse (chDB) under the data directory;
   the history warms the monitor, so that the week is scored by a monitor that has seen a
   week of each feed, weekend included (a cold monitor raised ~700 anomalous windows outside
   any incident on the same week: its first night and its first weekend). 500 packages per
   partner per day (600 before the history was added) keep the two weeks within about 1.8
   times the CPU of the old one-week demo;
3. prints, for the reported week only, each partner's scorecard against its contract, each
   incident with what it moved and whether and when the monitor flagged it, the anomalies as
   episodes (observed against typical values), and a legend of the terms used;
4. writes the week's partner scorecards (``carrierwatch scorecard``: CSV, XLSX, HTML, JSON)
   under ``<data dir>/demo/scorecards/<week>/`` and names the HTML file to open.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING

import click

from carrierwatch.core.sketch import merge, quantile

if TYPE_CHECKING:
    from rich.console import Console

    from carrierwatch.core.partner import SlaContract
    from carrierwatch.storage.base import Store
    from carrierwatch.synthetic.incidents import Incident

__all__ = ["DEFAULT_INCIDENTS", "LEGEND", "REPORT_START", "Detection", "Episode",
           "anomaly_episodes", "demo", "detection", "during_incidents", "incident_evidence",
           "incident_of"]

DEFAULT_INCIDENTS = ("exception_spike@fedex:3d+10h", "feed_outage@ups:5d+6h")
REPORT_START = date(2026, 3, 2)
"""First day of the reported week (a Monday; the simulator's default start, so that the dates
of the demo do not depend on ``--history-days``)."""
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
WINDOW_MS = 300_000
MARGIN_MS = 2 * HOUR_MS
"""An anomalous window up to 2 h before an incident or after it counts as the incident's: a
polled feed's events of the hours before an outage were to arrive during it, and after it the
queued data flush."""
EPISODE_GAP_MS = HOUR_MS
"""Anomalous windows of one stream less than an hour apart form one episode (one table row)."""

LEGEND = (
    ("decided", "packages whose on-time outcome is settled in the week: delivered, or past "
                "their promised-by time without delivery (a silent partner looks late, never "
                "perfect)"),
    ("actual / target", "the week's figure against the partner's contract "
                        "(its YAML file under partners/); 'misses' lists the targets missed"),
    ("latency p95", "95th percentile of received − event time, read from a histogram with "
                    "±2.5 % error; 'within error' = the limit lies inside that error band, so "
                    "the data cannot call the target met or missed"),
    ("duplicates collapsed", "copies of events already received (webhooks resend a "
                             "package's history), counted once"),
    ("too late", "events more than the allowed lateness (2 days of event time) older than an "
                 "event their package already had when they arrived: kept out of the metrics, "
                 "counted"),
    ("dead letters", "payloads or records that could not be read; kept with their error in "
                     "the dead_letters table"),
    ("codebook gaps", "events whose partner code the partner's codebook does not map (status "
                      "'unknown')"),
    ("inside / outside", "the metric an incident should move, per hour of the partner's data "
                         "inside the incident's window and in the rest of the week"),
    ("delay", "from an incident's start to the end of the first anomalous window of its "
              "partner in it: the earliest the monitor could say so; 'not detected' when "
              "none"),
    ("anomalous window", "a 5-minute window of one partner's metric stream scored ≥ 0.5 by "
                         "the online monitor (a tail probability of about 1e-5 or less)"),
    ("episode", "anomalous windows of one stream less than an hour apart; 'observed' is "
                "their median value, 'typical' the mean of the stream's normal windows at the "
                "same time of day (±30 min) over the 7 days before"),
    ("in an incident", f"within an injected incident or {MARGIN_MS // HOUR_MS} h either side "
                       "of it (a polled feed's events of the hours before an outage arrive "
                       "after it; queued data flush after it); the rest are false alarms"),
    ("history", "days replayed before the week to warm the monitor; not reported"),
)


def incident_evidence(store: Store, incident: Incident, start_ms: int | None = None,
                      end_ms: int | None = None) -> tuple[str, float | None, float | None]:
    """The metric an incident should move, inside its window and outside (per hour of data in
    ``[start_ms, end_ms)``)."""
    from carrierwatch.outputs.scorecard import fetch_rows

    hours = [r for r in fetch_rows(store, granularity="1h", start_ms=start_ms, end_ms=end_ms)
             if r.partner_id == incident.partner]
    inside = [r for r in hours if incident.start <= r.window_start < incident.end]
    outside = [r for r in hours if not incident.start <= r.window_start < incident.end]

    def per_hour(rows: Sequence[object], value: str) -> float | None:
        return (sum(getattr(r, value) for r in rows) / len(rows)) if rows else None

    if incident.kind == "exception_spike":
        return "exceptions opened per hour", per_hour(inside, "exceptions_opened"), \
            per_hour(outside, "exceptions_opened")
    if incident.kind == "codebook_change":
        return "unmapped-code events per hour", per_hour(inside, "codebook_gap_events"), \
            per_hour(outside, "codebook_gap_events")
    if incident.kind == "peak_day":
        return "events per hour", per_hour(inside, "events"), per_hour(outside, "events")

    def p95_hours(rows: Sequence[object]) -> float | None:
        merged = merge(*(r.latency_hist for r in rows))  # type: ignore[attr-defined]
        value = quantile(merged, 0.95) if merged else None
        return value / HOUR_MS if value is not None else None

    return "event latency p95 (hours)", p95_hours(inside), p95_hours(outside)


def incident_of(partner: str, first_ms: int, last_ms: int, incidents: Sequence[Incident],
                margin_ms: int = MARGIN_MS) -> Incident | None:
    """The partner's first incident that the windows ``first_ms`` to ``last_ms`` (their
    starts) overlap, ``margin_ms`` either side of it included; None when they overlap none.

    >>> from carrierwatch.synthetic.incidents import Incident
    >>> outage = Incident("feed_outage", "ups", 10 * HOUR_MS, 16 * HOUR_MS)
    >>> incident_of("ups", 7 * HOUR_MS, 8 * HOUR_MS + WINDOW_MS, [outage]).kind
    'feed_outage'
    >>> incident_of("ups", 7 * HOUR_MS, 7 * HOUR_MS + WINDOW_MS, [outage]) is None
    True
    >>> incident_of("ups", 17 * HOUR_MS, 20 * HOUR_MS, [outage]).kind
    'feed_outage'
    >>> incident_of("dhl", 11 * HOUR_MS, 12 * HOUR_MS, [outage]) is None
    True
    """
    for incident in incidents:
        if (incident.partner == partner and last_ms + WINDOW_MS > incident.start - margin_ms
                and first_ms < incident.end + margin_ms):
            return incident
    return None


def during_incidents(partner: str, window_starts: Sequence[int], incidents: Sequence[Incident],
                     margin_ms: int = MARGIN_MS) -> str:
    """How many of a partner's anomalous windows fall in one of its injected incidents (or
    ``margin_ms`` either side of it, see :data:`MARGIN_MS`), and which kinds, e.g.
    ``"96 of 96 (feed_outage)"``; ``"0 of 28"`` when none does.

    >>> from carrierwatch.synthetic.incidents import Incident
    >>> spike = Incident("exception_spike", "fedex", 3 * HOUR_MS, 10 * HOUR_MS)
    >>> during_incidents("fedex", [0, 2 * HOUR_MS, 11 * HOUR_MS, 13 * HOUR_MS], [spike])
    '2 of 4 (exception_spike)'
    >>> during_incidents("ups", [HOUR_MS], [spike])
    '0 of 1'
    """
    kinds: list[str] = []
    inside = 0
    for start in window_starts:
        hit = incident_of(partner, start, start, incidents, margin_ms)
        if hit is not None:
            inside += 1
            if hit.kind not in kinds:
                kinds.append(hit.kind)
    return f"{inside} of {len(window_starts)}" + (f" ({', '.join(kinds)})" if kinds else "")


@dataclass(frozen=True)
class Episode:
    """Anomalous windows of one stream less than :data:`EPISODE_GAP_MS` apart.

    ``observed`` is the median value of its anomalous windows, ``typical`` the mean of the
    stream's normal windows at the same time of day (±30 min) over the 7 days before it (None
    without any), ``incident`` the partner's incident it overlaps (:func:`incident_of`) and
    ``outside`` how many of its windows lie outside every incident and its margin.
    """

    partner_id: str
    metric: str
    first_ms: int
    last_ms: int
    windows: int
    observed: float
    typical: float | None
    incident: Incident | None
    outside: int


AnomalyRow = tuple[str, str, int, float, bool]
"""``(partner_id, metric, window_start_ms, value, is_anomaly)``: a row of the anomalies table."""


def _same_time_of_day(start: int, first: int) -> bool:
    """Whether window ``start`` lies in the 7 days before ``first``, within 30 minutes of its
    time of day."""
    if not first - 7 * DAY_MS <= start < first:
        return False
    offset = (start - first) % DAY_MS
    return offset <= HOUR_MS // 2 or offset >= DAY_MS - HOUR_MS // 2


def anomaly_episodes(rows: Iterable[AnomalyRow], incidents: Sequence[Incident], *,
                     from_ms: int | None = None, gap_ms: int = EPISODE_GAP_MS
                     ) -> list[Episode]:
    """Group the anomalous windows (from ``from_ms`` on) of each stream into episodes, ordered
    by their first window; the normal rows of the days before give each its typical value.

    >>> day = 288  # 5-minute windows
    >>> rows = [("ups", "volume", i * WINDOW_MS, 21.0, False) for i in range(day)]
    >>> rows += [("ups", "volume", (day + i) * WINDOW_MS, 0.0, True) for i in range(20)]
    >>> rows += [("ups", "volume", (day + 60) * WINDOW_MS, 90.0, True)]
    >>> [(e.first_ms // WINDOW_MS - day, e.windows, e.observed, e.typical, e.outside)
    ...  for e in anomaly_episodes(rows, [])]
    [(0, 20, 0.0, 21.0, 20), (60, 1, 90.0, 21.0, 1)]
    """
    streams: dict[tuple[str, str], list[tuple[int, float, bool]]] = {}
    for partner_id, metric, start, value, anomalous in rows:
        streams.setdefault((partner_id, metric), []).append((start, value, anomalous))
    found: list[Episode] = []
    for (partner_id, metric), points in streams.items():
        points.sort()
        runs: list[list[tuple[int, float]]] = []
        for start, value, anomalous in points:
            if not anomalous or (from_ms is not None and start < from_ms):
                continue
            if runs and start - runs[-1][-1][0] <= gap_ms:
                runs[-1].append((start, value))
            else:
                runs.append([(start, value)])
        for run in runs:
            first, last = run[0][0], run[-1][0]
            normal = [v for s, v, a in points if not a and _same_time_of_day(s, first)]
            outside = sum(1 for s, _ in run if incident_of(partner_id, s, s, incidents) is None)
            found.append(Episode(
                partner_id, metric, first, last, len(run),
                statistics.median(v for _, v in run),
                statistics.fmean(normal) if normal else None,
                incident_of(partner_id, first, last, incidents), outside))
    return sorted(found, key=lambda e: (e.first_ms, e.partner_id, e.metric))


@dataclass(frozen=True)
class Detection:
    """The monitor's first anomalous window in an incident (see :func:`detection`)."""

    first_ms: int
    delay_ms: int  # from the incident's start to the end of that window
    metrics: tuple[str, ...]


def detection(incident: Incident, anomalous: Iterable[tuple[str, str, int]],
              margin_ms: int = MARGIN_MS) -> Detection | None:
    """The first anomalous window of an incident's partner that starts inside the incident
    (or up to ``margin_ms`` after it), and the streams anomalous there; ``anomalous`` holds
    ``(partner_id, metric, window_start_ms)``. None: not detected. The delay runs to the end
    of the window, the earliest a verdict on it can exist (the replay's verdicts come in
    batches of hours, so their stored ``detected_at`` says nothing about the monitor).

    >>> from carrierwatch.synthetic.incidents import Incident
    >>> spike = Incident("exception_spike", "fedex", 10 * HOUR_MS, 20 * HOUR_MS)
    >>> rows = [("fedex", "volume", 3 * HOUR_MS),
    ...         ("fedex", "exception_rate", 10 * HOUR_MS + 2 * WINDOW_MS),
    ...         ("fedex", "received_exception_rate", 10 * HOUR_MS + 3 * WINDOW_MS),
    ...         ("ups", "volume", 10 * HOUR_MS)]
    >>> found = detection(spike, rows)
    >>> found.delay_ms // 60_000, found.metrics
    (15, ('exception_rate', 'received_exception_rate'))
    """
    hits = [(start, metric) for partner_id, metric, start in anomalous
            if partner_id == incident.partner
            and incident.start <= start < incident.end + margin_ms]
    if not hits:
        return None
    first = min(start for start, _ in hits)
    return Detection(first, first + WINDOW_MS - incident.start,
                     tuple(sorted({m for _, m in hits})))


def _metric_value(metric: str, value: float | None) -> str:
    """A monitor stream's value in its unit (see :data:`~carrierwatch.anomaly.monitor.METRICS`)."""
    if value is None:
        return "—"
    if metric.endswith("_rate"):
        return f"{100 * value:.1f}%"
    if metric.endswith(("latency_p95", "age_p95", "heartbeat_latency")):
        return f"{value:,.0f} min"
    count = f"{value:,.0f}"
    return f"{count} event" + ("" if count == "1" else "s")


def _hhmm(ms: int) -> str:
    return f"{datetime.fromtimestamp(ms / 1000, tz=UTC):%m-%d %H:%M}"


def _duration(ms: int) -> str:
    minutes = ms // 60_000
    return f"{minutes} min" if minutes < 120 else f"{minutes / 60:.1f} h"


def _episode_incident(episode: Episode) -> str:
    if episode.incident is None:
        return "[yellow]none: false alarm[/yellow]"
    label = f"{episode.incident.kind} {_hhmm(episode.incident.start)}"
    if episode.outside:
        label += f" ([yellow]{episode.outside} window{'s' * (episode.outside > 1)} beyond "
        label += "its margin: false alarms[/yellow])"
    return label


def print_report(console: Console, store: Store, contracts: dict[str, SlaContract],
                 incidents: Sequence[Incident], report_start: int, report_end: int) -> None:
    """Print sections 3 to 5 of the demo for ``[report_start, report_end)``: the scorecards,
    the incidents with what they moved and when the monitor flagged them, and the anomaly
    episodes with their count of windows outside every incident."""
    from rich.table import Table

    from carrierwatch.outputs.scorecard import scorecard_table, scorecards

    console.print(scorecard_table(
        scorecards(store, contracts, start_ms=report_start, end_ms=report_end),
        title="3. Partner scorecards (actual / contract target)"))

    stored = [(p, m, int(s), float(v), bool(a)) for p, m, s, v, a in store.query(
        "SELECT partner_id, metric, toUnixTimestamp64Milli(window_start), value, "
        "is_anomaly FROM anomalies FINAL "
        "WHERE window_start >= fromUnixTimestamp64Milli({start:Int64}, 'UTC') "
        "AND window_start < fromUnixTimestamp64Milli({end:Int64}, 'UTC') "
        "AND (partner_id, metric) IN (SELECT partner_id, metric FROM anomalies FINAL "
        "WHERE is_anomaly AND window_start >= fromUnixTimestamp64Milli({first:Int64}, 'UTC') "
        "AND window_start < fromUnixTimestamp64Milli({end:Int64}, 'UTC'))",
        {"start": report_start - 7 * DAY_MS, "first": report_start, "end": report_end})]
    anomalous = [(p, m, s) for p, m, s, _, a in stored if a and s >= report_start]

    labelled_table = Table("incident", "partner", "window (UTC)", "metric", "inside",
                           "outside", "first anomalous window (+ delay): streams",
                           title="4. Injected incidents: what they moved, and when the "
                                 "monitor flagged them")
    for incident in incidents:
        label, inside, outside = incident_evidence(store, incident, report_start,
                                                   report_end)
        found = detection(incident, anomalous)
        flagged = ("[red]not detected[/red]" if found is None else
                   f"{_hhmm(found.first_ms)} (+{_duration(found.delay_ms)}): "
                   f"{', '.join(found.metrics)}")
        labelled_table.add_row(
            incident.kind, incident.partner,
            f"{_hhmm(incident.start)} → {_hhmm(incident.end)}", label,
            "—" if inside is None else f"{inside:.2f}",
            "—" if outside is None else f"{outside:.2f}", flagged)
    console.print(labelled_table)

    episodes = anomaly_episodes(stored, incidents, from_ms=report_start)
    outside_windows = sum(e.outside for e in episodes)
    total_windows = sum(e.windows for e in episodes)
    detected = Table("partner", "metric", "first window", "last window",
                     "anomalous windows", "observed", "typical", "in an incident",
                     title="5. Anomalies the online monitor raised (episodes)",
                     caption=f"{total_windows:,} anomalous 5-min windows, "
                             f"{outside_windows:,} of them outside any incident "
                             f"(false alarms)")
    for episode in episodes:
        detected.add_row(
            episode.partner_id, episode.metric, _hhmm(episode.first_ms),
            _hhmm(episode.last_ms), str(episode.windows),
            _metric_value(episode.metric, episode.observed),
            _metric_value(episode.metric, episode.typical),
            _episode_incident(episode))
    console.print(detected)
    console.print(f"anomalous windows: {total_windows:,}; outside any incident: "
                  f"{outside_windows:,}")


@click.command()
@click.option("--partners", "partner_count", type=click.IntRange(min=1), default=5,
              show_default=True)
@click.option("--days", type=click.IntRange(min=1), default=7, show_default=True,
              help="days reported (from 2026-03-02)")
@click.option("--history-days", default=7, show_default=True, type=click.IntRange(min=0),
              help="days simulated and replayed before the reported days to warm the anomaly "
                   "monitor (not reported; 0: a cold monitor)")
@click.option("--seed", default=7, show_default=True)
@click.option("--packages-per-day", type=click.IntRange(min=1), default=500, show_default=True,
              help="packages per partner per day")
@click.option("--incident", "incidents", multiple=True, default=DEFAULT_INCIDENTS,
              show_default=True,
              help="KIND@partner:start+duration (repeatable; start counts from the reported "
                   "days' start)")
@click.option("--no-progress", is_flag=True, help="no progress bar")
def demo(partner_count: int, days: int, history_days: int, seed: int, packages_per_day: int,
         incidents: tuple[str, ...], no_progress: bool) -> None:
    """Simulate a week of partner feeds with incidents (after a week of history that warms the
    anomaly monitor), replay them, print the scorecards, incidents and anomalies."""
    from rich.console import Console
    from rich.table import Table
    from tqdm import tqdm

    from carrierwatch.core.timeutil import to_ms
    from carrierwatch.replay import iter_inputs, run_replay
    from carrierwatch.settings import get_settings
    from carrierwatch.storage import open_store
    from carrierwatch.synthetic.incidents import IncidentSpecError, parse_incident
    from carrierwatch.synthetic.simulator import simulate
    from carrierwatch.transformers.registry import load_registry

    if days < 1:
        raise click.BadParameter("must be at least 1", param_hint="'--days'")
    report_start = to_ms(datetime(REPORT_START.year, REPORT_START.month, REPORT_START.day,
                                  tzinfo=UTC))
    report_end = report_start + days * DAY_MS
    labelled = []
    for spec in incidents:
        try:
            incident = parse_incident(spec, report_start)
        except IncidentSpecError as exc:
            raise click.BadParameter(str(exc), param_hint="'--incident'") from None
        if incident.start < report_start or incident.end > report_end:
            raise click.BadParameter(
                f"{spec}: {incident.start_iso}..{incident.end_iso} is not inside the reported "
                f"days {REPORT_START.isoformat()} + {days} d", param_hint="'--incident'")
        labelled.append(incident)

    console = Console(width=max(Console().width, 150))
    settings = get_settings()
    registry = load_registry(settings.home)
    registry.require()  # every partner: a broken codebook stops the demo with its file:line
    # the demo's own data directory: it never mixes with the user's replays
    settings = settings.model_copy(update={"data_dir": settings.demo_data_dir.resolve()})
    data_dir = settings.data_dir
    sim_dir = data_dir / "demo-simulation"

    started = time.perf_counter()
    manifest = simulate(partner_count, history_days + days, seed, labelled, out_dir=sim_dir,
                        packages_per_day=packages_per_day,
                        start=REPORT_START - timedelta(days=history_days), workers=2)
    simulated = time.perf_counter() - started
    first_day = REPORT_START - timedelta(days=history_days)
    last_day = REPORT_START + timedelta(days=days - 1)
    week = f"{REPORT_START.isoformat()} to {last_day.isoformat()}"
    history = (f"{history_days} days of history ({first_day.isoformat()} to "
               f"{(REPORT_START - timedelta(days=1)).isoformat()}) and " if history_days else "")
    console.print(
        f"[bold]1. simulated[/bold] {len(manifest.partners)} partners "
        f"({', '.join(manifest.partners)}) for {history}the reported days {week}, seed {seed}, "
        f"in {simulated:.1f} s → {sim_dir}")

    payloads = sum(counts.payloads for counts in manifest.partners.values())
    with open_store(settings, command="carrierwatch demo", migrate=True) as store:
        from carrierwatch.anomaly.monitor import AnomalyMonitor, monitor_options_for

        monitor = AnomalyMonitor(**monitor_options_for(partner.spec for partner in registry))
        with tqdm(total=payloads, unit=" payloads", desc="replay", disable=no_progress,
                  leave=False, file=sys.stderr) as bar:
            summary = run_replay(iter_inputs([sim_dir]), store, registry, monitor=monitor,
                                 progress=lambda _events: bar.update(1))
        console.print(
            f"[bold]2. replayed[/bold] {summary.payloads:,} payloads → {summary.events:,} "
            f"canonical events ({summary.duplicates:,} duplicates collapsed, "
            f"{summary.too_late:,} too late, {summary.dead_letters:,} dead letters, "
            f"{sum(summary.gaps.values()):,} codebook gaps) in {summary.seconds:.1f} s "
            f"= {summary.events_per_second:,.0f} events/s. "
            + (f"The anomaly monitor learned from the {history_days} days of history; below: "
               f"{week} only." if history_days else
               "The anomaly monitor started cold on these days (no history)."))

        print_report(console, store, {p.id: p.spec.contract for p in registry},
                     manifest.incidents, report_start, report_end)
        scorecard_dir = data_dir / "scorecards"
        from carrierwatch.scorecards.cli import FORMATS, partner_infos, write_scorecards
        from carrierwatch.scorecards.document import iso_week

        everyone = [i for i in partner_infos(registry) if i.partner_id in manifest.partners]
        cards, files = write_scorecards(store, everyone, everyone, iso_week(REPORT_START),
                                        FORMATS, scorecard_dir)
        html = sorted(f for f in files if f.suffix == ".html")
        console.print(
            f"[bold]6. weekly scorecards[/bold] of {iso_week(REPORT_START)} for "
            f"{len(cards)} partners (CSV, XLSX, HTML, JSON): {len(files)} files in "
            f"{scorecard_dir / iso_week(REPORT_START)} (`carrierwatch scorecard --week "
            f"{iso_week(REPORT_START)}` makes them from any store)")
        if html:
            console.print(f"   open {html[0]} in a browser", soft_wrap=True)
        console.print(f"[bold]Where the data lives:[/bold] ClickHouse (chDB) at "
                      f"{data_dir / 'clickhouse'} (tables canonical_events, package_outcomes, "
                      f"metric_windows, anomalies, alerts, dead_letters); raw feeds at "
                      f"{sim_dir}.")
    legend = Table.grid(padding=(0, 2))
    for term, meaning in LEGEND:
        legend.add_row(f"[bold]{term}[/bold]", meaning)
    console.print("[bold]Terms[/bold]")
    console.print(legend)
    console.print(f"done in {time.perf_counter() - started:.1f} s")
