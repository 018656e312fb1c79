"""The registered detectors.

========================  =====================================================================
name                      what it models
========================  =====================================================================
``adaptive``              level at two time scales, the last value and daily / weekly seasonal
                          profiles; the surprise no predictor explains and the distance from the
                          long-run level are calibrated by :class:`AnomalyLikelihood` and
                          combined by max; repeated alarms are damped after a detection; a level
                          shift is re-learned
``ew_zscore``             robust (huberised) exponentially weighted level and spread; the
                          two-sided normal tail of the z-score (a strong classic baseline)
``holt_winters``          river's additive Holt-Winters forecaster with a daily season inferred
                          from the sampling interval; forecast residual calibrated by likelihood
``half_space_trees``      river's HalfSpaceTrees over the min-max-scaled value and the daily and
                          weekly phase of the timestamp
``ensemble`` (default)    several registered detectors (default adaptive + holt_winters),
                          scores combined by mean (default) or max
========================  =====================================================================

Examples
--------
>>> from carrierwatch.anomaly import make_detector
>>> detector = make_detector("adaptive", seed=1)
>>> scores = []
>>> for i in range(600):
...     value = 100.0 + 10.0 * math.sin(2 * math.pi * i / 288) + (i * 7919 % 13) / 13
...     if i == 550:
...         value = 160.0
...     point = (i * 300.0, value)
...     scores.append(detector.score_one(point))
...     detector.learn_one(point)
>>> max(scores[300:550]) < 0.5 < scores[550]
True
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any, Literal

from river import anomaly as river_anomaly
from river import preprocessing, time_series

from carrierwatch.anomaly.base import Detector, Point, make_detector, register
from carrierwatch.anomaly.calibration import AnomalyLikelihood, RobustEW, tail_probability
from carrierwatch.core.errors import ConfigurationError

__all__ = [
    "DEFAULT_DETECTOR",
    "AdaptiveDetector",
    "EWZScoreDetector",
    "EnsembleDetector",
    "HalfSpaceTreesDetector",
    "HoltWintersDetector",
]

DEFAULT_DETECTOR = "ensemble"
DAY = 86_400.0
WEEK = 7 * DAY
_MAD_TO_STD = math.sqrt(math.pi / 2.0)  # mean absolute deviation -> std for a normal law
_LOG_1E100 = math.log(1e-100)

# river is only partly annotated: hold its estimators as Any
_HalfSpaceTrees: Any = river_anomaly.HalfSpaceTrees
_MinMaxScaler: Any = preprocessing.MinMaxScaler
_HoltWinters: Any = time_series.HoltWinters


def _scale_floor(level: float) -> float:
    return 1e-6 * (abs(level) + 1.0)


@register
class EWZScoreDetector(Detector):
    """Two-sided normal tail of the z-score against robust exponentially weighted moments.

    The score is ``ln(q) / ln(1e-100)`` for the two-sided tail probability ``q`` (0.5 at about
    15 sigma, 1 at about 21), so it stays ordered far into the tail where ``1 - q`` would round
    to 1; the default ``flag_threshold`` (0.0870) holds back points beyond 6 sigma.

    Parameters
    ----------
    alpha
        Memory of the level and spread (about ``1 / alpha`` points).
    warmup
        Points learned before the detector scores anything but 0.
    """

    name = "ew_zscore"

    def __init__(self, *, seed: int = 0, alpha: float = 0.01, warmup: int = 30,
                 flag_threshold: float = 0.0870, relearn_after: int = 12,
                 alarm_level: float = 0.5, suppress_seconds: float = 0.0,
                 suppress_factor: float = 0.5) -> None:
        super().__init__(seed=seed, flag_threshold=flag_threshold, relearn_after=relearn_after,
                         alarm_level=alarm_level, suppress_seconds=suppress_seconds,
                         suppress_factor=suppress_factor)
        self.warmup = warmup
        self.moments = RobustEW(alpha)

    def _score(self, point: Point) -> float:
        if self.moments.n < self.warmup:
            return 0.0
        std = self.moments.deviation * _MAD_TO_STD + _scale_floor(self.moments.mean)
        z = abs(point.value - self.moments.mean) / std
        return math.log(2.0 * tail_probability(z) + 1e-100) / _LOG_1E100

    def _learn(self, point: Point) -> None:
        self.moments.update(point.value)

    def _relearn(self, points: list[Point]) -> None:
        values = [p.value for p in points]
        center = statistics.median(values)
        spread = statistics.fmean(abs(v - center) for v in values)
        self.moments.reset(center, max(spread, self.moments.deviation))
        self.n_learned += len(points)


@register
class HalfSpaceTreesDetector(Detector):
    """river's HalfSpaceTrees over the min-max-scaled value and the time-of-day/week phase.

    Parameters
    ----------
    n_trees, height, window_size
        Passed to :class:`river.anomaly.HalfSpaceTrees`.
    seasonal
        Add the daily and weekly phase of the timestamp as features.
    """

    name = "half_space_trees"

    def __init__(self, *, seed: int = 0, n_trees: int = 10, height: int = 8,
                 window_size: int = 250, seasonal: bool = True, flag_threshold: float = 0.99,
                 relearn_after: int = 12) -> None:
        super().__init__(seed=seed, flag_threshold=flag_threshold, relearn_after=relearn_after)
        self.seasonal = seasonal
        self.scaler: Any = _MinMaxScaler()
        limits = {"value": (0.0, 1.0)}
        if seasonal:
            limits |= {"day_phase": (0.0, 1.0), "week_phase": (0.0, 1.0)}
        self.forest: Any = _HalfSpaceTrees(
            n_trees=n_trees, height=height, window_size=window_size, limits=limits, seed=seed)

    def _features(self, point: Point) -> dict[str, float]:
        scaled: dict[str, float] = self.scaler.transform_one({"value": point.value})
        features = {"value": min(1.0, max(0.0, scaled["value"]))}
        if self.seasonal:
            features["day_phase"] = (point.timestamp % DAY) / DAY
            features["week_phase"] = (point.timestamp % WEEK) / WEEK
        return features

    def _score(self, point: Point) -> float:
        return float(self.forest.score_one(self._features(point)))

    def _learn(self, point: Point) -> None:
        self.scaler.learn_one({"value": point.value})
        self.forest.learn_one(self._features(point))


@register
class HoltWintersDetector(Detector):
    """Residual of river's additive Holt-Winters one-step forecast, calibrated by likelihood.

    The season length is one day in points, inferred from the median interval of the first
    ``interval_points`` timestamps (no season when a day is under 4 or over ``max_season``
    points).
    """

    name = "holt_winters"

    def __init__(self, *, seed: int = 0, alpha: float = 0.3, beta: float = 0.01,
                 gamma: float = 0.1, interval_points: int = 12, max_season: int = 1500,
                 history: int = 2000, average: int = 3, alarm_level: float = 0.5,
                 suppress_seconds: float = 12 * 3600.0, suppress_factor: float = 0.4,
                 flag_threshold: float = 0.99, relearn_after: int = 12) -> None:
        super().__init__(seed=seed, flag_threshold=flag_threshold, relearn_after=relearn_after,
                         alarm_level=alarm_level, suppress_seconds=suppress_seconds,
                         suppress_factor=suppress_factor)
        self.alpha, self.beta, self.gamma = alpha, beta, gamma
        self.interval_points = interval_points
        self.max_season = max_season
        self.timestamps: list[float] = []
        self.values: list[float] = []
        self.model: Any = None
        self.season = 0
        self.calibrator = AnomalyLikelihood(history=history, average=average)

    def _start(self) -> None:
        intervals = [b - a for a, b in zip(self.timestamps, self.timestamps[1:], strict=False)]
        interval = statistics.median(intervals) if intervals else 0.0
        season = round(DAY / interval) if interval > 0 else 0
        if not 4 <= season <= self.max_season:
            season = 0
        self.model = _HoltWinters(
            alpha=self.alpha, beta=self.beta, gamma=self.gamma if season else None,
            seasonality=season)
        self.season = season
        self.timestamps = []
        values, self.values = self.values, []
        for value in values:
            self._feed(value)

    def _feed(self, value: float) -> None:
        """Learn one value; the first season initialises the components *additively*.

        river 0.26 initialises an additive model's season as ``y / level`` (a ratio), which is
        wrong for the additive form and divides by zero when the first season is all zeros (a
        dead-letter rate). The components are set here instead: level = mean of the first
        season, trend = mean first difference, season = ``y - level``.
        """
        model = self.model
        if model._initialized:
            model.learn_one(value)
            return
        self.values.append(value)
        if len(self.values) < max(2, self.season):
            return
        level = statistics.fmean(self.values)
        model.level.append(level)
        if model.trend is not None:
            model.trend.append(statistics.fmean(
                b - a for a, b in zip(self.values, self.values[1:], strict=False)))
        if model.season is not None:
            model.season.extend(v - level for v in self.values)
        model._initialized = True
        self.values = []

    def _forecast(self) -> float | None:
        if self.model is None or not self.model._initialized:
            return None
        return float(self.model.forecast(horizon=1)[0])

    def _score(self, point: Point) -> float:
        forecast = self._forecast()
        if forecast is None:
            return 0.0
        return self.calibrator.score(abs(point.value - forecast))

    def _learn(self, point: Point) -> None:
        if self.model is None:
            self.timestamps.append(point.timestamp)
            self.values.append(point.value)
            if len(self.values) >= self.interval_points:
                self._start()
            return
        forecast = self._forecast()
        if forecast is not None:
            self.calibrator.update(abs(point.value - forecast))
        self._feed(point.value)


class _SeasonalProfile:
    """Robust EW level per time bucket (hour of day or hour of week)."""

    def __init__(self, period: float, bucket: float, alpha: float) -> None:
        self.period = period
        self.bucket = bucket
        self.alpha = alpha
        self.buckets: dict[int, RobustEW] = {}

    def key(self, timestamp: float) -> int:
        return int((timestamp % self.period) // self.bucket)

    def predict(self, timestamp: float, min_count: int) -> float | None:
        level = self.buckets.get(self.key(timestamp))
        if level is None or level.n < min_count:
            return None
        return level.mean

    def update(self, timestamp: float, value: float) -> None:
        key = self.key(timestamp)
        level = self.buckets.get(key)
        if level is None:
            level = self.buckets[key] = RobustEW(self.alpha)
        level.update(value)

    def shift(self, delta: float) -> None:
        for level in self.buckets.values():
            level.mean += delta


_PREDICTORS = ("last", "fast", "daily", "weekly")


@register
class AdaptiveDetector(Detector):
    """The default detector: multi-model surprise, calibrated, damped after alarms.

    For each point, four predictors guess the value: the previous value, a fast EW level, the
    hour-of-day profile and the hour-of-week profile (seasonal ones once their bucket has been
    seen ``season_min_count`` times, so at least that many days/weeks). Each predictor's error is
    divided by its own running mean absolute error; the smallest ratio (what the best
    explanation still leaves unexplained) is the *prediction surprise*. The *level surprise* is
    the distance from the slow EW level in slow EW deviations. Each surprise is calibrated by
    an :class:`AnomalyLikelihood` over its own recent history and the score is their max.

    After a point scores at least ``alarm_level`` the following ``suppress_seconds`` of scores
    are multiplied by ``suppress_factor`` (one incident, one alarm). Models learn with huberised
    updates; points flagged by the base class are held back and a run of them re-centres every
    level on the new regime.
    """

    name = "adaptive"

    def __init__(self, *, seed: int = 0, fast_alpha: float = 0.2, slow_alpha: float = 0.02,
                 error_alpha: float = 0.01, season_alpha: float = 0.1,
                 season_bucket_seconds: float = 3600.0, season_min_count: int = 3,
                 history: int = 3000, average: int = 3, min_history: int = 100, warmup: int = 30,
                 alarm_level: float = 0.5, suppress_seconds: float = 12 * 3600.0,
                 suppress_factor: float = 0.4, flag_threshold: float = 0.99,
                 relearn_after: int = 12) -> None:
        super().__init__(seed=seed, flag_threshold=flag_threshold, relearn_after=relearn_after,
                         alarm_level=alarm_level, suppress_seconds=suppress_seconds,
                         suppress_factor=suppress_factor)
        self.season_min_count = season_min_count
        self.warmup = warmup
        self.fast = RobustEW(fast_alpha)
        self.slow = RobustEW(slow_alpha)
        self.daily = _SeasonalProfile(DAY, season_bucket_seconds, season_alpha)
        self.weekly = _SeasonalProfile(WEEK, season_bucket_seconds, season_alpha)
        self.errors = {name: RobustEW(error_alpha) for name in _PREDICTORS}
        self.last_value: float | None = None
        self.prediction_likelihood = AnomalyLikelihood(
            history=history, average=average, min_history=min_history)
        self.level_likelihood = AnomalyLikelihood(
            history=history, average=average, min_history=min_history)
        self._cache: tuple[Point, float, float] | None = None

    def _predictions(self, timestamp: float) -> dict[str, float]:
        out: dict[str, float] = {}
        if self.last_value is not None:
            out["last"] = self.last_value
            out["fast"] = self.fast.mean
        daily = self.daily.predict(timestamp, self.season_min_count)
        if daily is not None:
            out["daily"] = daily
        weekly = self.weekly.predict(timestamp, self.season_min_count)
        if weekly is not None:
            out["weekly"] = weekly
        return out

    def _surprises(self, point: Point) -> tuple[float, float]:
        if self._cache is not None and self._cache[0] == point:
            return self._cache[1], self._cache[2]
        floor = _scale_floor(self.slow.mean)
        predictions = self._predictions(point.timestamp)
        prediction_surprise = 0.0
        if predictions:
            prediction_surprise = min(
                abs(point.value - guess) / (self.errors[name].mean + floor)
                for name, guess in predictions.items())
        level_surprise = abs(point.value - self.slow.mean) / (self.slow.deviation + floor)
        # cap what enters the likelihood history so one outlier does not blind it for long
        prediction_surprise = min(prediction_surprise, 1000.0)
        level_surprise = min(level_surprise, 1000.0)
        self._cache = (point, prediction_surprise, level_surprise)
        return prediction_surprise, level_surprise

    def _score(self, point: Point) -> float:
        prediction_surprise, level_surprise = self._surprises(point)
        score = max(self.prediction_likelihood.score(prediction_surprise),
                    self.level_likelihood.score(level_surprise))
        return score

    def _learn(self, point: Point) -> None:
        prediction_surprise, level_surprise = self._surprises(point)
        self._cache = None
        value = point.value
        for name, guess in self._predictions(point.timestamp).items():
            error = self.errors[name]
            error.update(abs(value - guess))
        if self.slow.n >= self.warmup:
            self.prediction_likelihood.update(prediction_surprise)
            self.level_likelihood.update(level_surprise)
        self.fast.update(value)
        self.slow.update(value)
        self.daily.update(point.timestamp, value)
        self.weekly.update(point.timestamp, value)
        self.last_value = value

    def _relearn(self, points: list[Point]) -> None:
        values = [p.value for p in points]
        center = statistics.median(values)
        delta = center - self.slow.mean
        self.fast.reset(values[-1], self.fast.deviation)
        self.slow.reset(center, self.slow.deviation)
        self.daily.shift(delta)
        self.weekly.shift(delta)
        self.last_value = values[-1]
        self._cache = None
        self.n_learned += len(points)


@register
class EnsembleDetector(Detector):
    """Several registered detectors on the same stream; scores combined by ``max`` or ``mean``.

    Each member keeps its own learning rule (it never learns what *it* flags), and the ensemble
    as a whole holds back what the combined score flags.
    """

    name = "ensemble"

    def __init__(self, *, seed: int = 0, members: Sequence[str] = ("adaptive", "holt_winters"),
                 combine: Literal["max", "mean"] = "mean", flag_threshold: float = 0.99,
                 relearn_after: int = 12, alarm_level: float = 0.5,
                 suppress_seconds: float = 12 * 3600.0, suppress_factor: float = 0.4) -> None:
        super().__init__(seed=seed, flag_threshold=flag_threshold, relearn_after=relearn_after,
                         alarm_level=alarm_level, suppress_seconds=suppress_seconds,
                         suppress_factor=suppress_factor)
        if not members:
            raise ConfigurationError("an ensemble needs at least one member")
        if "ensemble" in members:
            raise ConfigurationError("an ensemble cannot contain an ensemble")
        if combine not in ("max", "mean"):
            raise ConfigurationError(f"combine must be 'max' or 'mean', got {combine!r}")
        self.combine = combine
        self.members = [make_detector(name, seed=seed + index)
                        for index, name in enumerate(members)]

    def _score(self, point: Point) -> float:
        scores = [member.score_one(point) for member in self.members]
        return max(scores) if self.combine == "max" else statistics.fmean(scores)

    def _learn(self, point: Point) -> None:
        for member in self.members:
            member.learn_one(point)
