"""Anomaly-detection benchmark: NAB scores, cost per point, capacity, injected incidents.

Run ``python bench/anomaly.py [--data DIR] [--windows FILE] [--detectors a,b]``. For every
registered detector it prints the NAB score (standard, reward_low_FP_rate, reward_low_FN_rate)
on the corpus, the cost of ``score_one`` + ``learn_one`` per point and the implied capacity (how
many 5-minute-window streams one core can serve, and the margin over the 10,000-stream target).
The last line is one JSON object with every figure.

:func:`evaluate_incidents` measures recall, false alarms per stream-week and median detection
delay (in sampling intervals) on labelled series. The incident part (on by
default; `--no-incidents` skips it) simulates seeded partner feeds with injected incidents of every kind
(:data:`INCIDENT_PLAN`), replays them in-process through the core pipeline in small batches
(as a live worker would see them) into :class:`~carrierwatch.anomaly.monitor.AnomalyMonitor`,
and scores the monitor's own verdicts with :func:`incident_metrics`: recall, false alarms per
partner-week and median detection delay in 5-minute windows (plus the time to alert, which adds
the scoring delay). Which metrics each incident kind is expected to move: :data:`EXPECTED_METRIC`.
The volume is the simulator's default, 1,500 packages per partner per day, as in
``bench/stream.py`` (``--packages-per-day`` changes it; docs/anomaly.md has the figures at 300
and 3,000 too).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import pickle
import statistics
import sys
import tempfile
import time
import zlib
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from carrierwatch.anomaly import available_detectors, make_detector, to_epoch_seconds
from carrierwatch.anomaly.monitor import (
    COUNT_MODEL,
    AnomalyMonitor,
    ScoredPoint,
    monitor_options_for,
)
from carrierwatch.anomaly.nab import load_corpus, run_detector
from carrierwatch.anomaly.scoring import DEFAULT_PROFILES, ScoringSeries, score_profiles

__all__ = [
    "AFTERMATH_SECONDS",
    "DRIFT_SIZE_MS",
    "EXPECTED_METRIC",
    "INCIDENT_PLAN",
    "IncidentReport",
    "LabelledSeries",
    "evaluate_incidents",
    "incident_metrics",
    "main",
    "monitor_incidents",
    "partner_pages",
    "replay_batches",
]

WINDOW_SECONDS = 300.0
TARGET_STREAMS = 10_000
WEEK = 7 * 86_400.0

Timestamp = datetime | float
LabelledSeries = tuple[str, Sequence[Timestamp], Sequence[float],
                       Sequence[tuple[Timestamp, Timestamp]]]
"""``(name, timestamps, values, incident windows as (start, end))``."""


@dataclass(frozen=True)
class IncidentReport:
    """Detection quality on labelled incidents."""

    incidents: int
    detected: int
    recall: float
    false_alarms: int
    weeks: float
    false_alarms_per_week: float
    median_delay_windows: float | None


#: The shared NAB subset: CARRIERWATCH_NAB_DIR, else ``shared/nab`` beside the checkout.
NAB_DIR = Path(os.environ.get("CARRIERWATCH_NAB_DIR")
               or Path(__file__).resolve().parents[2] / "shared" / "nab")


def incident_metrics(series: Sequence[LabelledSeries], scores: Sequence[Sequence[float]],
                     threshold: float,
                     excused: Sequence[Sequence[tuple[Timestamp, Timestamp]]] | None = None
                     ) -> IncidentReport:
    """Score alarms (``score >= threshold``) against labelled incidents.

    An incident is detected when an alarm falls inside its window; its delay is the time from
    the incident's start to the first such alarm, in the series' median sampling interval.
    A false alarm is a run of consecutive alarming points that *starts* outside every incident
    (one alarm that stays raised counts once) and outside the series' ``excused`` spans
    (optional, one list per series: e.g. other incidents of the same partner and their
    aftermath, which are real effects, not false alarms). A run raised inside an incident or
    excused span that stays raised past its end is that incident's alarm, not a new one.
    Weeks are the summed time spans of the series.
    """
    incidents = detected = false_alarms = 0
    delays: list[float] = []
    weeks = 0.0
    for index, ((_, raw_times, _, windows), series_scores) in enumerate(
            zip(series, scores, strict=True)):
        times = [to_epoch_seconds(t) for t in raw_times]
        if len(times) != len(series_scores):
            raise ValueError("one score per point is required")
        if len(times) > 1:
            weeks += (times[-1] - times[0]) / WEEK
            interval = statistics.median(b - a for a, b in itertools.pairwise(times))
        else:
            interval = WINDOW_SECONDS
        limits = [(to_epoch_seconds(a), to_epoch_seconds(b)) for a, b in windows]
        alarms = [s >= threshold for s in series_scores]
        spared = limits + ([(to_epoch_seconds(a), to_epoch_seconds(b))
                            for a, b in excused[index]] if excused else [])
        for start, end in limits:
            incidents += 1
            first = next((t for t, alarm in zip(times, alarms, strict=True)
                          if alarm and start <= t <= end), None)
            if first is not None:
                detected += 1
                delays.append((first - start) / interval if interval > 0 else 0.0)
        previous_alarm = False
        for t, alarm in zip(times, alarms, strict=True):
            if alarm and not previous_alarm and not any(a <= t <= b for a, b in spared):
                false_alarms += 1
            previous_alarm = alarm
    return IncidentReport(
        incidents=incidents, detected=detected,
        recall=detected / incidents if incidents else 1.0,
        false_alarms=false_alarms, weeks=weeks,
        false_alarms_per_week=false_alarms / weeks if weeks > 0 else float(false_alarms),
        median_delay_windows=statistics.median(delays) if delays else None)


def evaluate_incidents(series: Sequence[LabelledSeries], *, detector: str = "ensemble",
                       threshold: float = 0.5, seed: int = 0) -> IncidentReport:
    """Run a fresh ``detector`` online over each labelled series and measure incidents."""
    scores = [run_detector(make_detector(detector, seed=seed), list(times), list(values))
              for _, times, values, _ in series]
    return incident_metrics(series, scores, threshold)


# ---------------------------------------------------------------------------------------------
# Injected incidents: simulator -> core pipeline -> AnomalyMonitor

EXPECTED_METRIC: Mapping[str, tuple[str, ...]] = {
    # exception events / events, at the scan's own time
    "exception_spike": ("exception_rate", "received_exception_rate"),
    # nothing arrives: the partner's windows score 0 events, and so do its received windows
    "feed_outage": ("volume", "received_volume"),
    # received - event time grows: event-time latency (censored at scoring) and received age
    "latency_drift": ("latency_p95", "received_age_p95"),
    # new partner codes -> status unknown, codebook gaps
    "codebook_change": ("unmapped_rate", "received_unmapped_rate"),
    # three times the shipments: more labels and pickups first, then more events per window
    "peak_day": ("volume", "received_volume", "received_new_packages"),
}
"""The metric streams each incident kind is expected to move: an alarm of any of them inside
the incident detects it (recall and delay take the earliest); alarms of the partner's other
streams inside the incident are excused, not counted as detections. The ``received_*`` streams
exist when the monitor is fed the arrivals (``observe(..., arrivals=...)``)."""

AFTERMATH_SECONDS: Mapping[str, float] = {
    "exception_spike": 2 * 3600.0,   # exceptions opened late in the window surface after it
    "feed_outage": 2 * 3600.0,       # the partner's queue is flushed: a burst of late events
    "latency_drift": 4 * 3600.0,     # events delayed up to the drift's maximum still arrive
    "codebook_change": 3600.0,       # scans made in the window, visible after it
    "peak_day": 12 * 3600.0,         # the extra parcels are picked up and moved that evening
}
"""After an incident ends, how long its own effects are excused from the false-alarm count."""

DRIFT_SIZE_MS = 30 * 60_000
"""The size from which a latency drift counts for the second delay figure of latency drifts
(printed beside the raw one, which stays the headline): 30 minutes of extra visibility delay,
when a tracking update starts to miss a quarter of a two-hour delivery window. The injected
drift ramps linearly from 0 to ``max`` over the incident (``max=4h`` over 6 hours: +30 min
after 45 minutes), so its first minutes are not a drift anyone could see. A negative delay
means the alarm came before the drift reached that size. (The partner's normal latency p95 was
tried as the size: a polled feed's p95 is 14-17 hours, larger than the whole drift.)"""

#: (kind, spec suffix): each partner gets three kinds, three days apart, at different hours.
INCIDENT_PLAN: tuple[tuple[str, str], ...] = (
    # the simulator's default factor (30): about 2-11 % of the events in the window are
    # exceptions (normally ~0.45 %); docs/anomaly.md
    ("exception_spike", "4h"),
    ("feed_outage", "4h"),
    ("latency_drift", "6h,max=4h"),
    ("codebook_change", "6h"),
    ("peak_day", "10h,factor=3"),
)


def incident_specs(partners: Sequence[str], *, first_day: int = 4, spacing_days: int = 3,
                   per_partner: int = 3) -> list[str]:
    """The injected incidents: partner ``i`` gets kinds ``i, i+1, i+2`` of :data:`INCIDENT_PLAN`
    on days ``first_day + spacing * j`` (+ ``i % 2``), starting between 13:00 and 18:00 UTC
    (US business hours), so every kind hits ``per_partner`` different partners.

    >>> for spec in incident_specs(["a", "b"], per_partner=2):
    ...     print(spec)
    exception_spike@a:4d13h+4h
    feed_outage@a:7d15h+4h
    feed_outage@b:5d14h+4h
    latency_drift@b:8d16h+6h,max=4h
    """
    specs = []
    for i, partner in enumerate(partners):
        for j in range(per_partner):
            kind, suffix = INCIDENT_PLAN[(i + j) % len(INCIDENT_PLAN)]
            day = first_day + spacing_days * j + i % 2
            hour = 13 + (i + 2 * j) % 6
            specs.append(f"{kind}@{partner}:{day}d{hour}h+{suffix}")
    return specs


_Compact = tuple[str, str, str, int, int, int, int, int, int, int, int, int, dict[int, int],
                 dict[str, int]]


def _compact(row: Any) -> _Compact:
    from carrierwatch.anomaly.monitor import NEW_PACKAGE_STATUSES

    return (row.partner_id, row.region, row.service_level, row.window_start, row.shard,
            row.version, row.events, row.synthetic_events, row.events_by_status.get("exception", 0),
            row.codebook_gap_events, row.packages_decided, row.packages_on_time,
            row.latency_hist,
            {s: row.events_by_status[s] for s in NEW_PACKAGE_STATUSES if s in row.events_by_status})


def _expand(item: _Compact) -> Any:
    from carrierwatch.core.windows import MetricWindowRow

    (partner, region, level, start, shard, version, events, synthetic, exceptions, gaps,
     decided, on_time, hist, labels) = item
    return MetricWindowRow(partner, region, level, "5m", start, shard, version, events=events,
                           codebook_gap_events=gaps, synthetic_events=synthetic,
                           packages_decided=decided, packages_on_time=on_time,
                           events_by_status={"exception": exceptions, **labels} if exceptions
                           else dict(labels),
                           latency_hist=hist)


Arrival = tuple[str, int, int, str]
"""``(partner, received ms, event ms, canonical status)`` of one newly accepted event."""
Batch = tuple[list[_Compact], list[tuple[str, int]], list[Arrival]]


def replay_batches(sim_dir: Path, batch_events: int) -> Iterator[Batch]:
    """Replay a simulation through the core pipeline in-process, as the replay driver does
    (transform each payload, :meth:`Pipeline.process` every ``batch_events`` events); yield each
    call's 5-minute window rows (compacted), dead letters ``(partner, received ms)`` and the
    arrivals of the newly accepted events (what replay passes as ``observe(arrivals=...)``)."""
    from carrierwatch.replay import iter_inputs, pipeline_for
    from carrierwatch.transformers.registry import load_registry

    registry = load_registry()
    partners = {p.id: p for p in registry}
    pipeline = pipeline_for(registry, version_base=0, granularities=("5m",))
    pending: list[Any] = []
    dead: list[tuple[str, int]] = []
    for record in iter_inputs([sim_dir]):
        result = partners[record.partner].transform(record.body, record.received_time,
                                                    record.headers)
        pending.extend(result.events)
        dead.extend((d.partner_id, d.received_time) for d in result.dead_letters)
        if len(pending) >= batch_events:
            output = pipeline.process(pending)
            yield [_compact(r) for r in output.windows], dead, _arrivals(output.events)
            pending, dead = [], []
    output = pipeline.process(pending)
    yield [_compact(r) for r in output.windows], dead, _arrivals(output.events)


def _arrivals(events: Sequence[Any]) -> list[Arrival]:
    return [(e.partner_id, e.received_time, e.event_time, e.status) for e in events
            if not e.synthetic]


def _series_of(points: Sequence[ScoredPoint]) -> dict[tuple[str, str], list[ScoredPoint]]:
    streams: dict[tuple[str, str], list[ScoredPoint]] = defaultdict(list)
    for point in points:
        streams[(point.partner_id, point.metric)].append(point)
    return streams


def monitor_incidents(batches: Sequence[Batch], incidents: Sequence[Mapping[str, Any]],
                      partners: Sequence[str], span: tuple[int, int],
                      monitor_options: Mapping[str, Any] | None = None,
                      probation_days: float = 0.0) -> dict[str, Any]:
    """Feed the replayed batches to a fresh monitor and score its verdicts on the incidents.

    Returns the overall :class:`IncidentReport` fields, false alarms per partner-week, per kind
    recall/delay, false alarms per metric and the time to alert (window position delay + the
    time the window waited to be scored).
    """
    monitor = AnomalyMonitor(**dict(monitor_options or {}))
    points: list[ScoredPoint] = []
    scored_at: dict[tuple[str, str, int], int] = {}
    started = time.process_time()
    for rows, dead, arrivals in batches:
        out = monitor.observe([_expand(r) for r in rows], dead, arrivals=arrivals)
        for point in out.points:
            scored_at[(point.partner_id, point.metric, point.window_start)] = \
                monitor.global_clock or point.window_start
        points.extend(out.points)
    monitor_seconds = time.process_time() - started
    probation_end = span[0] + probation_days * 86_400_000
    streams = _series_of([p for p in points if p.window_start >= probation_end])
    by_partner: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for incident in incidents:
        by_partner[incident["partner"]].append(incident)
    series: list[LabelledSeries] = []
    scores: list[list[float]] = []
    excused: list[list[tuple[float, float]]] = []
    for (partner, metric), stream in sorted(streams.items()):
        own = [i for i in by_partner[partner] if metric in EXPECTED_METRIC[i["kind"]]]
        windows = [(i["start"] / 1000.0, i["end"] / 1000.0 - WINDOW_SECONDS) for i in own]
        series.append((f"{partner}/{metric}", [p.window_start / 1000.0 for p in stream],
                       [p.value for p in stream], windows))
        scores.append([p.score for p in stream])
        excused.append([(i["start"] / 1000.0,
                         i["end"] / 1000.0 + AFTERMATH_SECONDS[i["kind"]])
                        for i in by_partner[partner]])
    # per incident: the earliest alarm of any of its expected streams inside its window
    kinds: dict[str, list[tuple[str, str, float, float]]] = defaultdict(list)
    for incident in incidents:
        partner = incident["partner"]
        start, end = incident["start"] / 1000.0, incident["end"] / 1000.0 - WINDOW_SECONDS
        hits = [p for metric in EXPECTED_METRIC[incident["kind"]]
                for p in streams.get((partner, metric), [])
                if p.is_anomaly and start <= p.window_start / 1000.0 <= end]
        hit = min(hits, key=lambda p: (p.window_start, p.metric), default=None)
        kinds[incident["kind"]].append((
            partner, "-" if hit is None else hit.metric,
            -1.0 if hit is None else (hit.window_start / 1000.0 - start) / WINDOW_SECONDS,
            -1.0 if hit is None else
            (scored_at[(partner, hit.metric, hit.window_start)] / 1000.0 - start) / 60.0))
    # latency drifts: the delay from when the drift reached a meaningful size (besides the raw)
    drift_sizes: list[float] = []
    drift_delays: list[float] = []
    for incident, found in zip([i for i in incidents if i["kind"] == "latency_drift"],
                               kinds.get("latency_drift", []), strict=True):
        size = DRIFT_SIZE_MS
        reached = incident["start"] + (incident["end"] - incident["start"]) * min(
            1.0, size / float(incident["parameters"]["max_ms"]))
        drift_sizes.append(round(size / 60_000, 1))
        drift_delays.append(-1.0 if found[2] < 0 else round(
            (incident["start"] / 1000.0 + found[2] * WINDOW_SECONDS - reached / 1000.0)
            / WINDOW_SECONDS, 1))
    delays = [h[2] for hits in kinds.values() for h in hits if h[2] >= 0]
    detected = len(delays)
    threshold = monitor.threshold
    report = incident_metrics(series, scores, threshold, excused)
    strict = incident_metrics(series, scores, threshold)
    weeks = (span[1] - probation_end) / 1000.0 / WEEK
    partner_weeks = weeks * len(partners)
    false_by_metric: dict[str, int] = {}
    for metric in monitor.metrics:
        picked = [k for k, s in enumerate(series) if s[0].endswith("/" + metric)]
        if picked:
            false_by_metric[metric] = incident_metrics(
                [series[k] for k in picked], [scores[k] for k in picked], threshold,
                [excused[k] for k in picked]).false_alarms
    pages = partner_pages(streams, by_partner, probation_end)
    to_alert = [minutes for hits in kinds.values() for *_, minutes in hits if minutes >= 0]
    return {
        **asdict(report),
        "incidents": len(incidents),
        "detected": detected,
        "recall": detected / len(incidents) if incidents else 1.0,
        "median_delay_windows": statistics.median(delays) if delays else None,
        "partners": len(partners),
        "partner_weeks": round(partner_weeks, 3),
        "false_alarms_per_partner_week": round(report.false_alarms / partner_weeks, 3),
        "false_alarms_strict": strict.false_alarms,
        "false_alarms_strict_per_partner_week": round(strict.false_alarms / partner_weeks, 3),
        "false_alarms_by_metric": false_by_metric,
        "false_pages": pages,
        "false_pages_per_partner_week": round(pages / partner_weeks, 3),
        "median_minutes_to_alert": statistics.median(to_alert) if to_alert else None,
        "by_kind": {kind: {"incidents": len(hits),
                           "detected": sum(1 for h in hits if h[2] >= 0),
                           "delays_windows": [h[2] for h in hits],
                           "detected_by": [h[1] for h in hits],
                           "minutes_to_alert": [round(h[3], 1) for h in hits],
                           **({"drift_size_minutes": drift_sizes,
                               "delays_from_size_windows": drift_delays}
                              if kind == "latency_drift" else {})}
                    for kind, hits in sorted(kinds.items())},
        "points_scored": len(points),
        "monitor_us_per_point": round(monitor_seconds / max(1, len(points)) * 1e6, 2),
        "late_rows": monitor.stats["late_rows"],
        "stale_rows": monitor.stats["stale_rows"],
    }


def partner_pages(streams: Mapping[tuple[str, str], Sequence[ScoredPoint]],
                  by_partner: Mapping[str, Sequence[Mapping[str, Any]]],
                  since_ms: float = 0.0) -> int:
    """False alarms counted as an on-call engineer gets paged: one page per partner incident.

    Each stream's runs of alarming points (consecutive scored points, as in
    :func:`incident_metrics`) become intervals; a partner's intervals that overlap or are at
    most 3 windows apart (an alert needs 3 recovered windows to resolve) merge into one page,
    and a page that starts outside the partner's incidents and their aftermath is false.
    """
    runs: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for (partner, _), stream in streams.items():
        first: int | None = None
        last = 0
        for point in stream:
            if point.is_anomaly and point.window_start >= since_ms:
                first = point.window_start if first is None else first
                last = point.window_start
            elif first is not None:
                runs[partner].append((first, last))
                first = None
        if first is not None:
            runs[partner].append((first, last))
    pages = 0
    step = int(WINDOW_SECONDS * 1000)
    for partner, intervals in runs.items():
        spared = [(i["start"], i["end"] + AFTERMATH_SECONDS[i["kind"]] * 1000)
                  for i in by_partner.get(partner, ())]
        reach: int | None = None
        for start, end in sorted(intervals):
            if reach is None or start > reach + 4 * step:
                if not any(a <= start <= b for a, b in spared):
                    pages += 1
                reach = end
            else:
                reach = max(reach, end)
    return pages


def _incident_figures(args: argparse.Namespace) -> dict[str, Any]:
    from carrierwatch.synthetic.simulator import DEFAULT_PARTNER_ORDER, simulate
    from carrierwatch.transformers.registry import load_registry

    registry = load_registry()
    registry_ids = set(registry.ids())
    partners = [p for p in DEFAULT_PARTNER_ORDER if p in registry_ids][:args.partners]
    specs = incident_specs(partners)
    plan = zlib.crc32("\n".join(specs).encode())
    key = (f"s{args.seed}-p{len(partners)}-d{args.days}-v{args.packages_per_day}-b{args.batch}"
           f"-n-{plan:08x}")  # "-n": rows carry label counts, batches arrivals; the hash:
    # the incident specs
    cache = args.cache / key if args.cache else None
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        sim_dir = Path(scratch) / "simulation"
        if cache is not None and (cache / "batches.pickle").exists():
            batches: list[Batch] = pickle.loads((cache / "batches.pickle").read_bytes())
            incidents = json.loads((cache / "incidents.json").read_text())
            span = tuple(json.loads((cache / "span.json").read_text()))
        else:
            manifest = simulate(partners, args.days, args.seed, specs, out_dir=sim_dir,
                                packages_per_day=args.packages_per_day, workers=2)
            simulated = time.perf_counter() - started
            print(f"simulated {args.days} days x {len(partners)} partners "
                  f"({args.packages_per_day}/day, seed {args.seed}, {len(specs)} incidents) "
                  f"in {simulated:.0f} s", flush=True)
            incidents = [i.to_json_dict() for i in manifest.incidents]
            span = (manifest.arguments["start_ms"], manifest.arguments["end_ms"])
            batches = list(replay_batches(sim_dir, args.batch))
            if cache is not None:
                cache.mkdir(parents=True, exist_ok=True)
                (cache / "batches.pickle").write_bytes(pickle.dumps(batches, protocol=5))
                (cache / "incidents.json").write_text(json.dumps(incidents))
                (cache / "span.json").write_text(json.dumps(list(span)))
    replayed = time.perf_counter() - started
    print(f"replayed through the core pipeline in batches of {args.batch:,} events "
          f"({sum(len(r) for r, _, _ in batches):,} 5-minute rows) in {replayed:.0f} s total",
          flush=True)
    figures = monitor_incidents(batches, incidents, partners, (int(span[0]), int(span[1])),
                                {"detector": args.monitor_detector, "seed": args.seed,
                                 **monitor_options_for(p.spec for p in registry),
                                 **args.monitor_options},
                                probation_days=args.probation_days)
    figures["specs"] = specs
    figures["expected_metric"] = {k: list(v) for k, v in EXPECTED_METRIC.items()}
    figures["goals"] = {"recall": 0.95, "false_alarms_per_partner_week": 1.0,
                        "median_delay_windows": 2.0}
    figures["probation_days"] = args.probation_days
    _print_incidents(figures)
    return figures


def _print_incidents(f: Mapping[str, Any]) -> None:
    delay = f["median_delay_windows"]
    print(f"incidents: recall {f['detected']}/{f['incidents']} = {f['recall']:.1%} (goal 95%), "
          f"false alarms {f['false_alarms']} = {f['false_alarms_per_partner_week']:.2f} per "
          f"partner-week (goal <= 1; {f['false_alarms_strict']} without excusing aftermath), "
          f"median delay {'-' if delay is None else f'{delay:.1f}'} windows (goal <= 2), "
          f"median time to alert {f['median_minutes_to_alert']} min of event time")
    for kind, k in f["by_kind"].items():
        print(f"  {kind:<16} on {'/'.join(EXPECTED_METRIC[kind]):<33} detected "
              f"{k['detected']}/{k['incidents']}  delays (windows) {k['delays_windows']}  "
              f"by {k['detected_by']}  "
              f"to alert (min) {k['minutes_to_alert']}")
        if "delays_from_size_windows" in k:
            print(f"  {'':<16} delays from when the drift reached {k['drift_size_minutes'][0]} "
                  f"min (windows) {k['delays_from_size_windows']} (raw delays above)")
    print(f"  false alarms by metric: {f['false_alarms_by_metric']}; grouped per partner "
          f"(one page per partner incident): {f['false_pages']} = "
          f"{f['false_pages_per_partner_week']:.2f} per partner-week", flush=True)


def _nab_figures(data: Path, windows: Path, detectors: Sequence[str]) -> dict[str, object]:
    corpus = load_corpus(data, windows)
    points = sum(len(s.values) for s in corpus)
    figures: dict[str, object] = {}
    for name in detectors:
        scored = []
        elapsed = 0.0
        for series in corpus:
            detector = make_detector(name, seed=0)
            start = time.process_time()
            scores = run_detector(detector, series.timestamps, series.values)
            elapsed += time.process_time() - start
            scored.append(ScoringSeries(series.name, scores, series.windows))
        results = score_profiles(scored, DEFAULT_PROFILES)
        micros = elapsed / points * 1e6
        capacity = int(WINDOW_SECONDS / (micros * 1e-6))
        figures[name] = {
            "nab": {profile: round(r.normalized, 2) for profile, r in results.items()},
            "thresholds": {profile: r.threshold for profile, r in results.items()},
            "us_per_point": round(micros, 2),
            "streams_per_core": capacity,
            "margin_over_target": round(capacity / TARGET_STREAMS, 1),
        }
        print(f"{name:<18} NAB standard {results['standard'].normalized:6.1f}  "
              f"low-FP {results['reward_low_FP_rate'].normalized:6.1f}  "
              f"low-FN {results['reward_low_FN_rate'].normalized:6.1f}  | "
              f"{micros:7.1f} us/point (score_one + learn_one)  "
              f"{capacity:>10,} streams/core at 5-min windows "
              f"({capacity / TARGET_STREAMS:.0f}x the {TARGET_STREAMS:,}-stream target)",
              flush=True)
    return {"series": len(corpus), "points": points, "detectors": figures}


def main(argv: Sequence[str] | None = None) -> int:
    """Print the benchmark; the last line is the JSON summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--data", type=Path, default=NAB_DIR / "data")
    parser.add_argument("--windows", type=Path,
                        default=NAB_DIR / "combined_windows.json")
    parser.add_argument("--detectors", default=",".join(available_detectors()),
                        help="comma-separated registered names (default: all)")
    parser.add_argument("--no-nab", action="store_true", help="skip the NAB part")
    parser.add_argument("--no-incidents", action="store_true", help="skip the incident part")
    parser.add_argument("--partners", type=int, default=5)
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--packages-per-day", type=int, default=1500,
                        help="per partner (default: the simulator's own default, 1500; 300 is "
                             "a small shipper, ~10 events per partner per 5-minute window)")
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--batch", type=int, default=1000,
                        help="events per pipeline call in the incident replay")
    parser.add_argument("--probation-days", type=float, default=0.0,
                        help="days at the start whose alarms are not counted")
    parser.add_argument("--monitor-detector", default=COUNT_MODEL,
                        help="the monitor's detector: count_model (default) or a registered "
                             "detector name")
    parser.add_argument("--monitor-options", type=json.loads, default={},
                        help="extra AnomalyMonitor keyword arguments as JSON")
    parser.add_argument("--cache", type=Path, default=None,
                        help="keep the replayed rows here and reuse them (same arguments)")
    args = parser.parse_args(argv)
    detectors = [d for d in args.detectors.split(",") if d]
    summary: dict[str, object] = {"target_streams": TARGET_STREAMS,
                                  "window_seconds": WINDOW_SECONDS, "nab": None,
                                  "incidents": None}
    if not args.no_nab:
        print(f"NAB corpus {args.data} ({args.windows.name}); one core, process CPU time")
        summary["nab"] = _nab_figures(args.data, args.windows, detectors)
    if not args.no_incidents:
        summary["incidents"] = _incident_figures(args)
    print(json.dumps(summary, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
