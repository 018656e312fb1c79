"""The injected-incident evaluation of bench/anomaly.py on hand-made labelled series."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "anomaly.py"


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("carrierwatch_bench_anomaly", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


bench = _bench()
STEP = 300.0


def test_incident_metrics_on_hand_made_scores() -> None:
    times = [i * STEP for i in range(2016)]  # one week of 5-minute windows
    scores = [0.0] * 2016
    scores[102] = 0.9  # incident 1 (starts at 100): detected 2 windows late
    scores[500] = scores[501] = scores[502] = 0.8  # one false alarm that stays raised
    scores[900] = 0.7  # a second false alarm
    # incident 2 (1500..1520) is missed: 0.4 stays below the threshold
    scores[1505] = 0.4
    series = [("partner-a/volume", times, [0.0] * 2016,
               [(100 * STEP, 120 * STEP), (1500 * STEP, 1520 * STEP)])]
    report = bench.incident_metrics(series, [scores], threshold=0.5)
    assert (report.incidents, report.detected, report.recall) == (2, 1, 0.5)
    assert report.false_alarms == 2
    assert report.weeks == pytest.approx(2015 / 2016)
    assert report.false_alarms_per_week == pytest.approx(2 / (2015 / 2016))
    assert report.median_delay_windows == 2.0


def test_evaluate_incidents_runs_a_detector_on_a_level_drop() -> None:
    times = [i * STEP for i in range(1400)]
    values = [100.0 + (i * 7919 % 11) for i in range(1400)]
    for i in range(1200, 1230):  # feed outage: volume collapses for 30 windows
        values[i] = 5.0
    series = [("partner-b/volume", times, values, [(1200 * STEP, 1229 * STEP)])]
    report = bench.evaluate_incidents(series, detector="adaptive", threshold=0.5)
    assert report.recall == 1.0
    assert report.median_delay_windows is not None and report.median_delay_windows <= 2
    assert report.false_alarms == 0


def test_an_alarm_raised_inside_an_incident_that_outlasts_it_is_not_a_false_alarm() -> None:
    times = [i * STEP for i in range(600)]
    scores = [0.0] * 600
    for i in range(105, 140):  # raised inside the incident (100..120), still raised after it
        scores[i] = 0.9
    scores[300] = 0.9  # raised outside: a false alarm
    for i in range(399, 405):  # raised just before an excused span (400..500): a false alarm
        scores[i] = 0.9
    series = [("partner-c/exception_rate", times, [0.0] * 600, [(100 * STEP, 120 * STEP)])]
    report = bench.incident_metrics(series, [scores], threshold=0.5,
                                    excused=[[(400 * STEP, 500 * STEP)]])
    assert (report.detected, report.false_alarms) == (1, 2)
    assert report.median_delay_windows == 5.0
