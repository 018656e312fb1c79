"""The detector contract: points, the :class:`Detector` interface and the registry of detectors.

A *point* is ``(timestamp, value)`` or ``(timestamp, value, features)``: the timestamp is an aware
or naive (read as UTC) :class:`~datetime.datetime` or epoch seconds, the value a float, and the
optional features a mapping of extra numeric context. Every detector answers ``score_one(point)``
with a float in ``[0, 1]`` (high = anomalous) computed from the points it learned before, and
``learn_one(point)`` updates its state.

Detectors never learn from the points they flag: :meth:`Detector.learn_one` scores the point
first (reusing the score of the preceding ``score_one`` call on the same point) and holds it back
when the score reaches ``flag_threshold``. A run of ``relearn_after`` consecutive flagged points is
read as a level shift (the new normal): the detector then re-learns from the held-back points
(:meth:`Detector._relearn`), so one change point does not leave it alarming forever.

Examples
--------
>>> from carrierwatch.anomaly import make_detector
>>> detector = make_detector("ew_zscore", seed=7)
>>> for minute in range(200):
...     point = (minute * 300.0, 10.0 + (minute % 5) * 0.1)
...     _ = detector.score_one(point)
...     detector.learn_one(point)
>>> detector.score_one((200 * 300.0, 10.2)) < 0.5
True
>>> detector.score_one((200 * 300.0, 50.0)) > 0.9
True
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar, NamedTuple, TypeVar

from carrierwatch.core.errors import EXIT_USAGE, CarrierwatchError, ConfigurationError

__all__ = [
    "Detector",
    "DuplicateDetectorError",
    "Point",
    "PointLike",
    "UnknownDetectorError",
    "as_point",
    "available_detectors",
    "detector_class",
    "make_detector",
    "register",
    "to_epoch_seconds",
]


class Point(NamedTuple):
    """One observation of one stream: epoch seconds, value and optional extra features."""

    timestamp: float
    value: float
    features: Mapping[str, float] | None = None


PointLike = (
    Point
    | tuple[datetime | float, float]
    | tuple[datetime | float, float, Mapping[str, float] | None]
)


class DuplicateDetectorError(ConfigurationError):
    """Two detector classes claim the same registry name."""


class UnknownDetectorError(CarrierwatchError):
    """No detector is registered under this name (on the command line: a usage error, exit 2)."""

    exit_code = EXIT_USAGE

    def __init__(self, name: str, known: list[str]) -> None:
        self.name = name
        self.known = known
        super().__init__(f"unknown detector {name!r}; known detectors: {', '.join(known)}")


def to_epoch_seconds(timestamp: datetime | float) -> float:
    """Epoch seconds of a datetime (naive = UTC) or of a number already in epoch seconds.

    >>> to_epoch_seconds(datetime(1970, 1, 2))
    86400.0
    >>> to_epoch_seconds(12.5)
    12.5
    """
    if isinstance(timestamp, datetime):
        if timestamp.tzinfo is None:
            timestamp = timestamp.replace(tzinfo=UTC)
        return timestamp.timestamp()
    return float(timestamp)


def as_point(point: PointLike) -> Point:
    """Normalise a point-like tuple into a :class:`Point` (the input is not modified).

    >>> as_point((datetime(1970, 1, 1, 0, 5), 3))
    Point(timestamp=300.0, value=3.0, features=None)
    """
    if isinstance(point, Point):
        return point
    if len(point) == 2:
        return Point(to_epoch_seconds(point[0]), float(point[1]), None)
    return Point(to_epoch_seconds(point[0]), float(point[1]), point[2])


class Detector(abc.ABC):
    """Online anomaly detector for one stream: ``score_one`` then ``learn_one``, point by point.

    Subclasses implement :meth:`_score` and :meth:`_learn` on normalised :class:`Point` objects
    and may override :meth:`_relearn`. They must keep their whole state picklable and must not
    mutate the points they are given.

    Parameters
    ----------
    seed
        Seed of every random choice the detector makes (same seed, same scores).
    flag_threshold
        Scores at or above it flag the point: it is not learned.
    relearn_after
        This many consecutive flagged points are taken as a level shift and re-learned
        (0 disables re-learning).
    alarm_level, suppress_seconds, suppress_factor
        Once a point scores at least ``alarm_level``, the scores of the following
        ``suppress_seconds`` are multiplied by ``suppress_factor``: one incident raises one
        alarm, not one per point (``suppress_seconds=0`` disables it).
    """

    name: ClassVar[str] = ""

    def __init__(self, *, seed: int = 0, flag_threshold: float = 0.99,
                 relearn_after: int = 12, alarm_level: float = 0.5,
                 suppress_seconds: float = 0.0, suppress_factor: float = 0.5) -> None:
        if not 0.0 < flag_threshold <= 1.0:
            raise ConfigurationError(f"flag_threshold must be in (0, 1], got {flag_threshold}")
        if relearn_after < 0:
            raise ConfigurationError(f"relearn_after must be >= 0, got {relearn_after}")
        self.seed = seed
        self.alarm_level = alarm_level
        self.suppress_seconds = suppress_seconds
        self.suppress_factor = suppress_factor
        self.last_alarm: float | None = None
        self.flag_threshold = flag_threshold
        self.relearn_after = relearn_after
        self._held_back: list[Point] = []
        self._last_scored: tuple[Point, float] | None = None
        self.n_learned = 0
        self.n_flagged = 0

    # -- public interface -------------------------------------------------------------------
    def score_one(self, point: PointLike) -> float:
        """Anomaly score of ``point`` in ``[0, 1]`` given what was learned so far."""
        normal = as_point(point)
        score = self._score(normal)
        if math.isnan(score):
            score = 0.0
        score = min(1.0, max(0.0, score))
        if (self.last_alarm is not None
                and 0.0 <= normal.timestamp - self.last_alarm < self.suppress_seconds):
            score *= self.suppress_factor
        self._last_scored = (normal, score)
        return score

    def learn_one(self, point: PointLike) -> None:
        """Update the model with ``point`` unless the detector flags it (see module docs)."""
        normal = as_point(point)
        if not math.isfinite(normal.value):
            return
        if self._last_scored is not None and self._last_scored[0] == normal:
            score = self._last_scored[1]
        else:
            score = self.score_one(normal)
        self._last_scored = None
        self._observe(normal, score)
        if score >= self.flag_threshold:
            self.n_flagged += 1
            self._held_back.append(normal)
            if self.relearn_after and len(self._held_back) >= self.relearn_after:
                held, self._held_back = self._held_back, []
                self._relearn(held)
            return
        self._held_back = []
        self.n_learned += 1
        self._learn(normal)

    # -- to implement -----------------------------------------------------------------------
    @abc.abstractmethod
    def _score(self, point: Point) -> float:
        """Raw score (clipped to [0, 1] by :meth:`score_one`)."""

    @abc.abstractmethod
    def _learn(self, point: Point) -> None:
        """Update the state with a point that was not flagged."""

    def _observe(self, point: Point, score: float) -> None:
        """See every point and its score before the flag decision (starts alarm damping)."""
        if self.suppress_seconds > 0 and score >= self.alarm_level:
            self.last_alarm = point.timestamp

    def _relearn(self, points: list[Point]) -> None:
        """Accept a run of flagged points as the new normal (default: learn them in order)."""
        for point in points:
            self.n_learned += 1
            self._learn(point)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, seed={self.seed})"


_REGISTRY: dict[str, type[Detector]] = {}
_D = TypeVar("_D", bound=type[Detector])


def register(cls: _D) -> _D:
    """Class decorator adding a detector to the registry under ``cls.name``.

    Raises
    ------
    DuplicateDetectorError
        When the name is empty or already taken by another class.
    """
    name = cls.name
    if not name:
        raise DuplicateDetectorError(f"{cls.__qualname__} has no registry name")
    existing = _REGISTRY.get(name)
    if existing is not None and existing is not cls:
        raise DuplicateDetectorError(
            f"detector name {name!r} already registered by {existing.__module__}."
            f"{existing.__qualname__}")
    _REGISTRY[name] = cls
    return cls


def _ensure_builtin() -> None:
    # Importing the implementations registers them (kept lazy to avoid an import cycle).
    from carrierwatch.anomaly import detectors as _detectors  # noqa: F401


def available_detectors() -> list[str]:
    """Sorted names of every registered detector."""
    _ensure_builtin()
    return sorted(_REGISTRY)


def detector_class(name: str) -> type[Detector]:
    """The class registered under ``name`` (raises :class:`UnknownDetectorError`)."""
    _ensure_builtin()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownDetectorError(name, sorted(_REGISTRY)) from None


def make_detector(name: str, seed: int = 0, **params: Any) -> Detector:
    """Build the detector registered under ``name`` with ``seed`` and keyword parameters."""
    factory: Callable[..., Detector] = detector_class(name)
    return factory(seed=seed, **params)
