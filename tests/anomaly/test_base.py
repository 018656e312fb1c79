"""Registry rules and the learning rule shared by every detector."""

from __future__ import annotations

from datetime import datetime

import pytest

from carrierwatch.anomaly import (
    Detector,
    DuplicateDetectorError,
    Point,
    UnknownDetectorError,
    as_point,
    make_detector,
    register,
)
from carrierwatch.anomaly.detectors import EWZScoreDetector


def test_duplicate_name_is_rejected() -> None:
    class Another(EWZScoreDetector):
        name = "ew_zscore"

    with pytest.raises(DuplicateDetectorError, match="ew_zscore"):
        register(Another)


def test_nameless_detector_is_rejected() -> None:
    class Nameless(EWZScoreDetector):
        name = ""

    with pytest.raises(DuplicateDetectorError):
        register(Nameless)


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(UnknownDetectorError, match="adaptive"):
        make_detector("no_such_detector")


def test_factory_passes_seed_and_parameters() -> None:
    detector = make_detector("half_space_trees", seed=11, n_trees=3, height=4)
    assert detector.seed == 11
    assert (detector.forest.n_trees, detector.forest.height) == (3, 4)  # type: ignore[attr-defined]


def test_as_point_reads_naive_datetimes_as_utc() -> None:
    assert as_point((datetime(1970, 1, 1, 1), 2.0)) == Point(3600.0, 2.0, None)
    assert as_point((60, 1.5, {"a": 1.0})) == Point(60.0, 1.5, {"a": 1.0})


def _trained_zscore() -> Detector:
    detector = make_detector("ew_zscore")
    for i in range(200):
        point = (i * 300.0, 10.0 + (i % 4) * 0.5)
        detector.score_one(point)
        detector.learn_one(point)
    return detector


def test_flagged_points_are_not_learned() -> None:
    detector = _trained_zscore()
    mean_before = detector.moments.mean  # type: ignore[attr-defined]
    learned_before = detector.n_learned
    outlier = (200 * 300.0, 1000.0)
    assert detector.score_one(outlier) >= detector.flag_threshold
    detector.learn_one(outlier)
    assert detector.moments.mean == mean_before  # type: ignore[attr-defined]
    assert detector.n_learned == learned_before
    assert detector.n_flagged == 1


def test_a_sustained_level_shift_is_relearned() -> None:
    detector = _trained_zscore()
    scores = []
    for i in range(200, 240):
        point = (i * 300.0, 500.0 + (i % 4) * 0.5)
        scores.append(detector.score_one(point))
        detector.learn_one(point)
    assert all(s >= detector.flag_threshold for s in scores[:12])
    assert detector.n_flagged == 12
    assert abs(detector.moments.mean - 500.75) < 1.0  # type: ignore[attr-defined]
    assert max(scores[13:]) < detector.flag_threshold


def test_alarm_damping_lowers_the_scores_right_after_an_alarm() -> None:
    damped = make_detector("adaptive", suppress_seconds=3600.0, suppress_factor=0.5)
    plain = make_detector("adaptive", suppress_seconds=0.0)
    for i in range(400):
        value = 10.0 + (i * 7919 % 13) / 13.0
        if i in (300, 302):
            value = 40.0
        point = (i * 300.0, value)
        d, p = damped.score_one(point), plain.score_one(point)
        if i == 300:
            assert d == p >= damped.alarm_level
        if i == 302:
            assert d == pytest.approx(0.5 * p)
        damped.learn_one(point)
        plain.learn_one(point)
