"""Building blocks that turn raw surprise into calibrated scores.

* :class:`RobustEW` — exponentially weighted level and mean absolute deviation with huberised
  updates (one outlier moves them by at most ``clip`` deviations).
* :class:`AnomalyLikelihood` — the anomaly likelihood of Numenta's NAB detector, re-derived:
  the short-term average of a raw surprise signal is compared with the rolling distribution of
  that signal (a Gaussian fitted to its recent history); the tail probability ``q`` becomes the
  log-scaled score ``ln(q + 1e-10) / ln(1e-10)`` in ``[0, 1]``. A score of 0.5 means a tail
  probability of about 1e-5 whatever the series' own noise level, which is what lets one
  threshold serve every stream.

Both are O(1) per point and hold only floats and deques, so they pickle.

Examples
--------
>>> level = RobustEW(alpha=0.5)
>>> for value in (10.0, 12.0, 10.0, 12.0):
...     level.update(value)
>>> round(level.mean, 3), round(level.deviation, 3)
(11.25, 1.25)
>>> calibrator = AnomalyLikelihood(history=50, average=1, min_history=10)
>>> for i in range(50):
...     calibrator.update(1.0 + (i % 3) * 0.1)
>>> calibrator.score(1.1) < 0.1
True
>>> calibrator.score(5.0) > 0.99
True
"""

from __future__ import annotations

import math
from collections import deque

__all__ = ["AnomalyLikelihood", "RobustEW", "log_likelihood_score", "tail_probability"]

_LOG_FLOOR = math.log(1e-10)


def tail_probability(z: float) -> float:
    """Upper tail probability of the standard normal distribution at ``z``.

    >>> round(tail_probability(0.0), 3)
    0.5
    >>> tail_probability(10.0) < 1e-20
    True
    """
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def log_likelihood_score(q: float) -> float:
    """Map a tail probability ``q`` to ``[0, 1]``: 0 for ``q = 1``, 1 for ``q <= 1e-10``.

    >>> log_likelihood_score(1.0)
    0.0
    >>> round(log_likelihood_score(1e-5), 3)
    0.5
    """
    return min(1.0, max(0.0, math.log(q + 1e-10) / _LOG_FLOOR))


class RobustEW:
    """Huberised exponentially weighted mean and mean absolute deviation.

    Parameters
    ----------
    alpha
        Weight of the newest point (memory of about ``1 / alpha`` points).
    clip
        Innovations are clipped to ``clip`` deviations before they update the state.
    """

    __slots__ = ("alpha", "clip", "deviation", "mean", "n")

    def __init__(self, alpha: float, clip: float = 4.0) -> None:
        self.alpha = alpha
        self.clip = clip
        self.mean = 0.0
        self.deviation = 0.0
        self.n = 0

    def __getstate__(self) -> dict[str, float | int]:
        return {name: getattr(self, name) for name in self.__slots__}

    def __setstate__(self, state: dict[str, float]) -> None:
        for name, value in state.items():
            setattr(self, name, value)

    def update(self, value: float) -> None:
        """Learn one value."""
        self.n += 1
        if self.n == 1:
            self.mean = value
            return
        # a short warm-up uses plain averages so the first points do not dominate
        alpha = max(self.alpha, 1.0 / self.n)
        residual = value - self.mean
        if self.n > 3 and self.deviation > 0.0:
            bound = self.clip * self.deviation
            residual = max(-bound, min(bound, residual))
        self.mean += alpha * residual
        self.deviation += alpha * (abs(residual) - self.deviation)

    def reset(self, mean: float, deviation: float) -> None:
        """Restart from a given level (after a level shift)."""
        self.mean = mean
        self.deviation = deviation
        self.n = max(self.n, 4)


class AnomalyLikelihood:
    """Calibrate a raw non-negative surprise signal into a log-likelihood score.

    Parameters
    ----------
    history
        Number of past raw values whose mean and spread define "normal".
    average
        The score uses the mean of the newest ``average`` raw values (the candidate included).
    min_history
        Below this many learned values the score is 0.
    min_std
        Floor of the spread, relative to the history's mean (avoids dividing by zero on
        perfectly regular signals).
    clip
        Once the history is usable, learned values are clipped to ``clip`` spreads above its
        mean, so a burst of outliers cannot inflate "normal" for the whole history.
    """

    def __init__(self, history: int = 2000, average: int = 5, min_history: int = 100,
                 min_std: float = 0.05, clip: float = 5.0) -> None:
        self.history = history
        self.clip = clip
        self.average = average
        self.min_history = min_history
        self.min_std = min_std
        self._past: deque[float] = deque()
        self._sum = 0.0
        self._sum_squares = 0.0
        self._recent: deque[float] = deque(maxlen=max(1, average - 1))
        self._updates = 0

    def _stats(self) -> tuple[float, float]:
        count = len(self._past)
        mean = self._sum / count
        variance = max(0.0, self._sum_squares / count - mean * mean)
        return mean, max(math.sqrt(variance), self.min_std * max(abs(mean), 1e-3))

    def score(self, raw: float) -> float:
        """Score of ``raw`` (not learned) against the learned history."""
        if len(self._past) < self.min_history:
            return 0.0
        mean, std = self._stats()
        if self.average > 1:
            recent = sum(self._recent) + raw
            average = recent / (len(self._recent) + 1)
        else:
            average = raw
        return log_likelihood_score(tail_probability((average - mean) / std))

    def update(self, raw: float) -> None:
        """Learn one raw value."""
        if len(self._past) >= self.min_history:
            mean, std = self._stats()
            raw = min(raw, mean + self.clip * std)
        self._past.append(raw)
        self._sum += raw
        self._sum_squares += raw * raw
        if len(self._past) > self.history:
            old = self._past.popleft()
            self._sum -= old
            self._sum_squares -= old * old
        if self.average > 1:
            self._recent.append(raw)
        self._updates += 1
        if self._updates % 1000 == 0:  # cancel accumulated rounding of the running sums
            self._sum = math.fsum(self._past)
            self._sum_squares = math.fsum(v * v for v in self._past)

    def __len__(self) -> int:
        return len(self._past)
