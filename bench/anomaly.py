"""Anomaly-detection benchmark: NAB scores, cost per point, capacity, injected incidents.

Run ``python bench/anomaly.py [--data DIR] [--windows FILE] [--detectors a,b]``. For every
registered detector it prints the NAB score (standard, reward_low_FP_rate, reward_low_FN_rate)
on the corpus, the cost of ``score_one`` + ``learn_one`` per point and the implied capacity (how
many 5-minute-window streams one core can serve, and the margin over the 10,000-stream target).
The last line is one JSON object with every figure.

:func:`evaluate_incidents` measures recall, false alarms per stream-week and median detection
delay (in sampling intervals) on labelled series; the simulator's injected-incident evaluation
plugs into it once the simulator exists.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from carrierwatch.anomaly import available_detectors, make_detector, to_epoch_seconds
from carrierwatch.anomaly.nab import load_corpus, run_detector
from carrierwatch.anomaly.scoring import DEFAULT_PROFILES, ScoringSeries, score_profiles

__all__ = [
    "IncidentReport",
    "LabelledSeries",
    "evaluate_incidents",
    "incident_metrics",
    "main",
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


def incident_metrics(series: Sequence[LabelledSeries], scores: Sequence[Sequence[float]],
                     threshold: float) -> IncidentReport:
    """Score alarms (``score >= threshold``) against labelled incidents.

    An incident is detected when an alarm falls inside its window; its delay is the time from
    the incident's start to the first such alarm, in the series' median sampling interval.
    A false alarm is a run of consecutive alarming points outside every incident (one alarm
    that stays raised counts once). Weeks are the summed time spans of the series.
    """
    incidents = detected = false_alarms = 0
    delays: list[float] = []
    weeks = 0.0
    for (_, raw_times, _, windows), series_scores in zip(series, scores, strict=True):
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
        for start, end in limits:
            incidents += 1
            first = next((t for t, alarm in zip(times, alarms, strict=True)
                          if alarm and start <= t <= end), None)
            if first is not None:
                detected += 1
                delays.append((first - start) / interval if interval > 0 else 0.0)
        previous_outside_alarm = False
        for t, alarm in zip(times, alarms, strict=True):
            outside = alarm and not any(a <= t <= b for a, b in limits)
            if outside and not previous_outside_alarm:
                false_alarms += 1
            previous_outside_alarm = outside
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
    parser.add_argument("--data", type=Path, default=Path("/work/shared/nab/data"))
    parser.add_argument("--windows", type=Path,
                        default=Path("/work/shared/nab/combined_windows.json"))
    parser.add_argument("--detectors", default=",".join(available_detectors()),
                        help="comma-separated registered names (default: all)")
    args = parser.parse_args(argv)
    detectors = [d for d in args.detectors.split(",") if d]
    print(f"NAB corpus {args.data} ({args.windows.name}); one core, process CPU time")
    summary: dict[str, object] = {"nab": _nab_figures(args.data, args.windows, detectors),
                                  "target_streams": TARGET_STREAMS,
                                  "window_seconds": WINDOW_SECONDS}
    summary["incidents"] = None  # filled by the simulator's injected-incident run (lead)
    print(json.dumps(summary, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
