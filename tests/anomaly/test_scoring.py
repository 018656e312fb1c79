"""The NAB scorer on hand-made cases, and the threshold sweep against direct scoring."""

from __future__ import annotations

import math
import random

import pytest

from carrierwatch.anomaly.scoring import (
    DEFAULT_PROFILES,
    NO_DETECTION_THRESHOLD,
    CostProfile,
    ScoringSeries,
    optimize_threshold,
    probationary_length,
    scaled_sigmoid,
    score_corpus,
    score_series,
    sweep_thresholds,
)

STANDARD = DEFAULT_PROFILES["standard"]
ROWS = 200  # probation: 30 rows
WINDOW = (100, 119)  # 20 rows


def _series(detections: dict[int, float], windows: list[tuple[int, int]] | None = None
            ) -> ScoringSeries:
    scores = [0.0] * ROWS
    for index, score in detections.items():
        scores[index] = score
    return ScoringSeries("s", scores, [WINDOW] if windows is None else windows)


def test_sigmoid_and_probation_follow_nab() -> None:
    assert scaled_sigmoid(-1.0) == pytest.approx(2 / (1 + math.exp(-5)) - 1)
    assert scaled_sigmoid(0.5) == pytest.approx(2 / (1 + math.exp(2.5)) - 1)
    assert scaled_sigmoid(3.5) == -1.0
    assert probationary_length(200) == 30
    assert probationary_length(4032) == 604
    assert probationary_length(10_000) == 750


def test_perfect_detector_scores_100_and_null_scores_0() -> None:
    perfect = score_corpus([_series({100: 1.0})], STANDARD)
    assert perfect.normalized == pytest.approx(100.0)
    assert perfect.raw == pytest.approx(1.0)
    null = score_corpus([_series({})], STANDARD)
    assert null.threshold == NO_DETECTION_THRESHOLD
    assert null.normalized == pytest.approx(0.0)
    assert (null.null, null.perfect) == (-1.0, 1.0)


def test_detection_at_the_window_end_gets_the_sigmoid_weight() -> None:
    result = score_series(_series({119: 1.0}), STANDARD, threshold=0.5)
    expected = scaled_sigmoid(-1 / 20) / scaled_sigmoid(-1.0)
    assert result.raw == pytest.approx(expected)
    assert 0.0 < result.raw < 0.2
    assert result.true_positives == 1


def test_only_the_earliest_detection_in_a_window_counts() -> None:
    early = score_series(_series({105: 1.0, 110: 1.0, 118: 1.0}), STANDARD, threshold=0.5)
    assert early.raw == pytest.approx(scaled_sigmoid(-15 / 20) / scaled_sigmoid(-1.0))


def test_false_positive_far_from_windows_costs_the_full_fp_weight() -> None:
    before = score_series(_series({50: 1.0, 100: 1.0}), STANDARD, threshold=0.5)
    assert before.raw == pytest.approx(1.0 - 0.11)
    far_after = score_series(_series({100: 1.0, 190: 1.0}), STANDARD, threshold=0.5)
    assert far_after.raw == pytest.approx(1.0 - 0.11)  # 71 rows after a 20-row window: >= 3
    assert far_after.false_positives == 1


def test_false_positive_right_after_a_window_is_cheap() -> None:
    result = score_series(_series({100: 1.0, 121: 1.0}), STANDARD, threshold=0.5)
    assert result.raw == pytest.approx(1.0 + 0.11 * scaled_sigmoid(2 / 19))
    assert 1.0 - 0.11 < result.raw < 1.0


def test_detections_in_the_probationary_period_are_ignored() -> None:
    result = score_series(_series({10: 1.0, 100: 1.0}), STANDARD, threshold=0.5)
    assert result.raw == pytest.approx(1.0)
    assert result.false_positives == 0


def test_missed_window_costs_fn_weight_per_profile() -> None:
    low_fn = DEFAULT_PROFILES["reward_low_FN_rate"]
    assert score_series(_series({}), low_fn, threshold=0.5).raw == -2.0


def test_threshold_optimisation_picks_the_best_threshold() -> None:
    # 0.9 catches the window late, 0.6 adds an early catch plus one distant FP, 0.3 adds 5 FPs
    scores = {115: 0.9, 101: 0.6, 50: 0.6, 60: 0.3, 61: 0.3, 62: 0.3, 63: 0.3, 64: 0.3}
    series = _series(scores)
    threshold, raw = optimize_threshold([series], STANDARD)
    candidates = {t: score_series(series, STANDARD, t).raw for t in (0.9, 0.6, 0.3, 1.1)}
    assert threshold == 0.6
    assert raw == pytest.approx(max(candidates.values()))
    assert raw == pytest.approx(candidates[0.6])


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_sweep_matches_direct_scoring_at_every_threshold(seed: int) -> None:
    rng = random.Random(seed)
    profile = CostProfile("custom", 1.0, 0.3, 1.5)
    corpus = [
        ScoringSeries("a", [round(rng.random(), 2) for _ in range(300)], [(80, 99), (200, 240)]),
        ScoringSeries("b", [round(rng.random(), 2) for _ in range(150)], [(30, 45)]),
    ]
    for threshold, raw in sweep_thresholds(corpus, profile):
        direct = sum(score_series(s, profile, threshold).raw for s in corpus)
        assert raw == pytest.approx(direct)
