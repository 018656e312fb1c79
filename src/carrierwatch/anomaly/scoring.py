"""NAB scoring, re-implemented from NAB's published rules (numenta/NAB ``nab/sweeper.py``).

Rules, per series of ``n`` rows with labelled windows ``[left, right]`` (row indices):

* the first ``min(floor(0.15 n), 750)`` rows are probationary: no detection there counts, and a
  window with no row after the probation does not count at all;
* a row is a detection when its score is at or above the threshold;
* a detection inside a window of ``width`` rows at row ``i`` is worth
  ``tpWeight * S(-(right - i + 1) / width) / S(-1)`` where ``S(x) = 2 / (1 + e^(5x)) - 1`` (and
  ``S(x) = -1`` for ``x >= 3``): exactly ``tpWeight`` at the window's first row, less later;
  only the best (earliest) detection of a window counts; a window without one costs
  ``-fnWeight``;
* a detection outside every window costs ``fpWeight * S((i - right_prev) / (width_prev - 1))``
  after a previous window (nearly free right after it, ``-fpWeight`` far from it) and
  ``-fpWeight`` before the first window; every such row counts;
* one threshold per profile is chosen to maximise the raw score summed over the corpus;
* the reported score is ``100 * (raw - null) / (perfect - null)``: the null detector detects
  nothing (``-fnWeight`` per window), the perfect one detects every window at its first
  scorable row.

Examples
--------
>>> profile = CostProfile("standard", tp_weight=1.0, fp_weight=0.11, fn_weight=1.0)
>>> series = ScoringSeries("s", [0.0] * 50 + [1.0] + [0.0] * 49, [(50, 59)])
>>> score_series(series, profile, threshold=0.5).raw
1.0
>>> corpus = score_corpus([series], profile)
>>> corpus.threshold, corpus.normalized
(1.0, 100.0)
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from carrierwatch.core.errors import ConfigurationError

__all__ = [
    "DEFAULT_PROFILES",
    "NO_DETECTION_THRESHOLD",
    "CorpusScore",
    "CostProfile",
    "ScoringSeries",
    "SeriesScore",
    "load_profiles",
    "optimize_threshold",
    "probationary_length",
    "row_weights",
    "scaled_sigmoid",
    "score_corpus",
    "score_profiles",
    "score_series",
    "sweep_thresholds",
]

PROBATIONARY_FRACTION = 0.15
NO_DETECTION_THRESHOLD = 1.1  # above every score in [0, 1]: nothing is detected


@dataclass(frozen=True)
class CostProfile:
    """One NAB application profile (the cost matrix)."""

    name: str
    tp_weight: float
    fp_weight: float
    fn_weight: float


DEFAULT_PROFILES: dict[str, CostProfile] = {
    "standard": CostProfile("standard", 1.0, 0.11, 1.0),
    "reward_low_FP_rate": CostProfile("reward_low_FP_rate", 1.0, 0.22, 1.0),
    "reward_low_FN_rate": CostProfile("reward_low_FN_rate", 1.0, 0.11, 2.0),
}


def load_profiles(path: str | Path) -> dict[str, CostProfile]:
    """Read NAB's ``profiles.json`` (``{name: {"CostMatrix": {"tpWeight": ...}}}``)."""
    try:
        raw = json.loads(Path(path).read_text())
        return {
            name: CostProfile(name, float(spec["CostMatrix"]["tpWeight"]),
                              float(spec["CostMatrix"]["fpWeight"]),
                              float(spec["CostMatrix"]["fnWeight"]))
            for name, spec in raw.items()
        }
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ConfigurationError(
            f"invalid NAB profiles file {path}: {type(error).__name__}: {error}") from error


def scaled_sigmoid(position: float) -> float:
    """NAB's scaled sigmoid ``2 / (1 + e^(5 x)) - 1``, and -1 from ``x = 3`` on.

    >>> round(scaled_sigmoid(-1.0), 5), scaled_sigmoid(0.0), scaled_sigmoid(3.0)
    (0.98661, 0.0, -1.0)
    """
    if position >= 3.0:
        return -1.0
    return 2.0 / (1.0 + math.exp(5.0 * position)) - 1.0


def probationary_length(rows: int, fraction: float = PROBATIONARY_FRACTION) -> int:
    """Rows at the start of a series whose detections are ignored: ``min(⌊f·n⌋, f·5000)``.

    >>> probationary_length(1127), probationary_length(22695)
    (169, 750)
    """
    return int(min(math.floor(fraction * rows), fraction * 5000))


@dataclass(frozen=True)
class ScoringSeries:
    """Anomaly scores of one series and its labelled windows as inclusive row-index ranges."""

    name: str
    scores: Sequence[float]
    windows: Sequence[tuple[int, int]]


def row_weights(rows: int, windows: Sequence[tuple[int, int]], profile: CostProfile
                ) -> tuple[list[float], list[int]]:
    """Per row: what a detection there is worth, and its window number (-1 outside windows)."""
    weights = [0.0] * rows
    window_of = [-1] * rows
    max_tp = scaled_sigmoid(-1.0)
    ordered = sorted(windows)
    for number, (left, right) in enumerate(ordered):
        if not 0 <= left <= right < rows:
            raise ConfigurationError(f"window {left}..{right} outside a series of {rows} rows")
        width = right - left + 1
        for i in range(left, right + 1):
            window_of[i] = number
            weights[i] = profile.tp_weight * scaled_sigmoid(-(right - i + 1) / width) / max_tp
    previous: tuple[int, int] | None = None
    next_window = 0
    for i in range(rows):
        while next_window < len(ordered) and ordered[next_window][1] < i:
            previous = ordered[next_window]
            next_window += 1
        if window_of[i] != -1:
            continue
        if previous is None:
            weights[i] = -profile.fp_weight
        else:
            width = previous[1] - previous[0] + 1
            position = (i - previous[1]) / (width - 1) if width > 1 else 3.0
            weights[i] = profile.fp_weight * scaled_sigmoid(position)
    return weights, window_of


@dataclass(frozen=True)
class SeriesScore:
    """Raw NAB score of one series at one threshold, with its detection counts."""

    name: str
    raw: float
    true_positives: int
    false_positives: int
    false_negatives: int
    windows: int


def score_series(series: ScoringSeries, profile: CostProfile, threshold: float,
                 probation_fraction: float = PROBATIONARY_FRACTION) -> SeriesScore:
    """Score one series directly at ``threshold`` (the rules in the module docs)."""
    rows = len(series.scores)
    weights, window_of = row_weights(rows, series.windows, profile)
    start = probationary_length(rows, probation_fraction)
    best: dict[int, float] = {}
    counted = {window_of[i] for i in range(start, rows) if window_of[i] != -1}
    false_positive_cost = 0.0
    false_positives = 0
    for i in range(start, rows):
        if series.scores[i] < threshold:
            continue
        number = window_of[i]
        if number == -1:
            false_positive_cost += weights[i]
            false_positives += 1
        else:
            best[number] = max(best.get(number, -math.inf), weights[i])
    missed = len(counted) - len(best)
    raw = false_positive_cost + sum(best.values()) - missed * profile.fn_weight
    return SeriesScore(series.name, raw, len(best), false_positives, missed, len(counted))


def sweep_thresholds(corpus: Sequence[ScoringSeries], profile: CostProfile,
                     probation_fraction: float = PROBATIONARY_FRACTION
                     ) -> list[tuple[float, float]]:
    """Raw corpus score for every distinct threshold, from "detect nothing" downwards.

    Returns ``(threshold, raw score)`` pairs, thresholds strictly decreasing, the first being
    :data:`NO_DETECTION_THRESHOLD`. One pass over the rows sorted by score.
    """
    rows: list[tuple[float, float, int]] = []  # (score, weight, corpus-wide window id or -1)
    windows = 0
    for series in corpus:
        count = len(series.scores)
        weights, window_of = row_weights(count, series.windows, profile)
        start = probationary_length(count, probation_fraction)
        ids: dict[int, int] = {}
        for i in range(start, count):
            number = window_of[i]
            if number != -1 and number not in ids:
                ids[number] = windows
                windows += 1
            rows.append((float(series.scores[i]), weights[i],
                         ids[number] if number != -1 else -1))
    rows.sort(key=lambda row: -row[0])
    best = [-profile.fn_weight] * windows
    total = -profile.fn_weight * windows
    out = [(NO_DETECTION_THRESHOLD, total)]
    index = 0
    while index < len(rows):
        threshold = rows[index][0]
        while index < len(rows) and rows[index][0] == threshold:
            _, weight, window = rows[index]
            if window == -1:
                total += weight
            elif weight > best[window]:
                total += weight - best[window]
                best[window] = weight
            index += 1
        out.append((threshold, total))
    return out


def optimize_threshold(corpus: Sequence[ScoringSeries], profile: CostProfile,
                       probation_fraction: float = PROBATIONARY_FRACTION
                       ) -> tuple[float, float]:
    """The threshold with the best raw corpus score (the highest such threshold on ties)."""
    best_threshold, best_score = NO_DETECTION_THRESHOLD, -math.inf
    for threshold, score in sweep_thresholds(corpus, profile, probation_fraction):
        if score > best_score + 1e-12:
            best_threshold, best_score = threshold, score
    return best_threshold, best_score


@dataclass(frozen=True)
class CorpusScore:
    """NAB result of one detector and profile over a corpus."""

    profile: str
    threshold: float
    raw: float
    null: float
    perfect: float
    normalized: float
    series: list[SeriesScore] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        """JSON-ready summary (per-series raw scores included)."""
        return {
            "profile": self.profile, "threshold": self.threshold, "raw": self.raw,
            "null": self.null, "perfect": self.perfect, "score": self.normalized,
            "series": {s.name: {"raw": s.raw, "tp": s.true_positives, "fp": s.false_positives,
                                "fn": s.false_negatives} for s in self.series},
        }


def _perfect_and_null(corpus: Sequence[ScoringSeries], profile: CostProfile,
                      probation_fraction: float) -> tuple[float, float]:
    perfect = null = 0.0
    for series in corpus:
        rows = len(series.scores)
        weights, window_of = row_weights(rows, series.windows, profile)
        start = probationary_length(rows, probation_fraction)
        firsts: dict[int, float] = {}
        for i in range(start, rows):
            if window_of[i] != -1 and window_of[i] not in firsts:
                firsts[window_of[i]] = weights[i]
        perfect += sum(firsts.values())
        null -= profile.fn_weight * len(firsts)
    return perfect, null


def score_corpus(corpus: Sequence[ScoringSeries], profile: CostProfile,
                 probation_fraction: float = PROBATIONARY_FRACTION,
                 threshold: float | None = None) -> CorpusScore:
    """Optimise the threshold (unless given) and normalise against the null/perfect detectors."""
    if threshold is None:
        threshold, _ = optimize_threshold(corpus, profile, probation_fraction)
    per_series = [score_series(s, profile, threshold, probation_fraction) for s in corpus]
    raw = sum(s.raw for s in per_series)
    perfect, null = _perfect_and_null(corpus, profile, probation_fraction)
    normalized = 100.0 * (raw - null) / (perfect - null) if perfect != null else 0.0
    return CorpusScore(profile.name, threshold, raw, null, perfect, normalized, per_series)


def score_profiles(corpus: Sequence[ScoringSeries], profiles: Mapping[str, CostProfile],
                   probation_fraction: float = PROBATIONARY_FRACTION) -> dict[str, CorpusScore]:
    """:func:`score_corpus` for every profile."""
    return {name: score_corpus(corpus, profile, probation_fraction)
            for name, profile in profiles.items()}

