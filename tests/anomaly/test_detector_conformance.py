"""Conformance suite: every registered detector passes the same checks."""

from __future__ import annotations

import copy
import math
import pickle
from datetime import UTC, datetime, timedelta

import pytest

from carrierwatch.anomaly import Point, available_detectors, make_detector

START = datetime(2024, 1, 1, tzinfo=UTC)


def _series(length: int = 700) -> list[tuple[datetime, float, dict[str, float]]]:
    """5-minute points with a daily cycle, deterministic noise and a spike at 650."""
    out = []
    for i in range(length):
        value = 50.0 + 8.0 * math.sin(2 * math.pi * i / 288) + ((i * 7919) % 17) / 17.0
        if i == 650:
            value = 120.0
        out.append((START + timedelta(minutes=5 * i), value, {"hour": float(i // 12 % 24)}))
    return out


def _run(name: str, seed: int, points: list[tuple[datetime, float, dict[str, float]]]
         ) -> list[float]:
    detector = make_detector(name, seed=seed)
    scores = []
    for point in points:
        scores.append(detector.score_one(point))
        detector.learn_one(point)
    return scores


DETECTORS = available_detectors()


def test_registry_lists_the_builtin_detectors() -> None:
    assert {"adaptive", "ensemble", "ew_zscore", "half_space_trees", "holt_winters"} <= set(
        DETECTORS)


@pytest.mark.parametrize("name", DETECTORS)
def test_scores_in_unit_interval_and_same_seed_same_scores(name: str) -> None:
    points = _series()
    first = _run(name, 3, points)
    second = _run(name, 3, points)
    assert first == second
    assert all(0.0 <= s <= 1.0 for s in first)
    assert len(first) == len(points)


@pytest.mark.parametrize("name", DETECTORS)
def test_pickle_round_trip_gives_identical_subsequent_scores(name: str) -> None:
    points = _series()
    detector = make_detector(name, seed=5)
    for point in points[:400]:
        detector.score_one(point)
        detector.learn_one(point)
    restored = pickle.loads(pickle.dumps(detector))
    for point in points[400:]:
        original_score = detector.score_one(point)
        assert restored.score_one(point) == original_score
        detector.learn_one(point)
        restored.learn_one(point)


@pytest.mark.parametrize("name", DETECTORS)
def test_no_input_mutation(name: str) -> None:
    points = _series(350)
    frozen = copy.deepcopy(points)
    _run(name, 0, points)
    assert points == frozen


@pytest.mark.parametrize("name", DETECTORS)
def test_accepts_datetimes_epoch_seconds_and_points_alike(name: str) -> None:
    points = _series(320)
    as_datetimes = _run(name, 1, [(t, v) for t, v, _ in points])  # type: ignore[misc]
    as_epoch = _run(name, 1, [(t.timestamp(), v) for t, v, _ in points])  # type: ignore[misc]
    as_points = _run(name, 1, [Point(t.timestamp(), v) for t, v, _ in points])  # type: ignore[misc]
    assert as_datetimes == as_epoch == as_points


@pytest.mark.parametrize("name", ["adaptive", "ensemble", "holt_winters", "ew_zscore"])
def test_spike_scores_above_the_quiet_days(name: str) -> None:
    scores = _run(name, 0, _series())
    assert scores[650] > max(scores[300:650])
