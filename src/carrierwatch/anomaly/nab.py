"""NAB harness: run a detector online over NAB CSV files, write NAB result files, score them.

Each series is read in time order; every row is scored with ``score_one`` *before*
``learn_one``, so its score depends on past rows only. Result files follow NAB's layout
(``<out>/<detector>/<category>/<detector>_<file>.csv`` with columns ``timestamp, value,
anomaly_score, label``) and a ``<detector>_scores.json`` summary holds the normalised score,
threshold and per-series raw scores of every profile (see :mod:`carrierwatch.anomaly.scoring`).

This module reads and writes files; the detectors and the scorer it drives are pure.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from carrierwatch.anomaly.base import Detector, Point, make_detector, to_epoch_seconds
from carrierwatch.anomaly.scoring import (
    DEFAULT_PROFILES,
    CorpusScore,
    CostProfile,
    ScoringSeries,
    score_profiles,
)
from carrierwatch.core.errors import ConfigurationError

__all__ = [
    "NabReport",
    "NabSeries",
    "load_corpus",
    "load_windows",
    "read_series",
    "run_detector",
    "run_nab",
    "window_rows",
    "write_result_file",
]


@dataclass(frozen=True)
class NabSeries:
    """One NAB data file: its corpus-relative name, rows and labelled windows (row indices)."""

    name: str
    timestamps: list[datetime]
    values: list[float]
    windows: list[tuple[int, int]]

    def labels(self) -> list[int]:
        """1 for rows inside a labelled window, else 0."""
        out = [0] * len(self.values)
        for left, right in self.windows:
            for i in range(left, right + 1):
                out[i] = 1
        return out


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.strip())


def read_series(path: Path) -> tuple[list[datetime], list[float]]:
    """Read a NAB CSV (``timestamp,value`` header), rows in file order (as NAB feeds them)."""
    timestamps: list[datetime] = []
    values: list[float] = []
    line = 1
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            if reader.fieldnames is None or not {"timestamp", "value"} <= set(reader.fieldnames):
                raise ConfigurationError(f"{path}: expected columns timestamp,value")
            for line, row in enumerate(reader, start=2):
                try:
                    timestamps.append(_parse_time(row["timestamp"]))
                    values.append(float(row["value"]))
                except (TypeError, ValueError) as error:
                    raise ConfigurationError(f"{path}:{line}: {error}") from error
    except (UnicodeDecodeError, csv.Error) as error:
        raise ConfigurationError(f"{path}:{line}: not a CSV text file: {error}") from error
    return timestamps, values


def load_windows(path: Path) -> dict[str, list[tuple[datetime, datetime]]]:
    """Read NAB's ``combined_windows.json`` (relative file path → list of [start, end])."""
    try:
        raw = json.loads(path.read_text())
        return {name: [(_parse_time(a), _parse_time(b)) for a, b in limits]
                for name, limits in raw.items()}
    except (OSError, ValueError, TypeError) as error:
        raise ConfigurationError(
            f"invalid NAB windows file {path}: {type(error).__name__}: {error}") from error


def window_rows(timestamps: Sequence[datetime], limits: Sequence[tuple[datetime, datetime]]
                ) -> list[tuple[int, int]]:
    """Row ranges of windows: from the first to the last row whose time is inside the window.

    Windows holding no row are dropped. Rows are taken in file order (a few NAB files have a
    timestamp out of order), so this scans instead of bisecting.

    >>> ts = [datetime(2020, 1, 1, h) for h in range(6)]
    >>> window_rows(ts, [(datetime(2020, 1, 1, 1, 30), datetime(2020, 1, 1, 4))])
    [(2, 4)]
    """
    out = []
    for start, end in limits:
        inside = [i for i, t in enumerate(timestamps) if start <= t <= end]
        if inside:
            out.append((inside[0], inside[-1]))
    return out


def load_corpus(data_dir: Path, windows_file: Path) -> list[NabSeries]:
    """Every series named in the windows file, in name order (missing files are an error)."""
    windows = load_windows(windows_file)
    corpus = []
    for name in sorted(windows):
        path = data_dir / name
        if not path.is_file():
            raise ConfigurationError(f"{windows_file} names {name}, missing under {data_dir}")
        timestamps, values = read_series(path)
        corpus.append(NabSeries(name, timestamps, values,
                                window_rows(timestamps, windows[name])))
    return corpus


def run_detector(detector: Detector, timestamps: Sequence[datetime | float],
                 values: Sequence[float]) -> list[float]:
    """Scores of a series, each computed before the detector learns its row."""
    scores = []
    for timestamp, value in zip(timestamps, values, strict=True):
        point = Point(to_epoch_seconds(timestamp), value)
        scores.append(detector.score_one(point))
        detector.learn_one(point)
    return scores


def write_result_file(path: Path, series: NabSeries, scores: Sequence[float]) -> None:
    """Write one NAB result file (``timestamp,value,anomaly_score,label``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["timestamp", "value", "anomaly_score", "label"])
        for timestamp, value, score, label in zip(
                series.timestamps, series.values, scores, series.labels(), strict=True):
            writer.writerow([timestamp.strftime("%Y-%m-%d %H:%M:%S"), repr(value),
                             f"{score:.10g}", label])


@dataclass(frozen=True)
class NabReport:
    """Scores of one detector over a corpus, per profile."""

    detector: str
    profiles: dict[str, CorpusScore]
    points: int

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""
        return {"detector": self.detector, "points": self.points,
                "profiles": {name: score.as_dict() for name, score in self.profiles.items()}}


def run_nab(corpus: Sequence[NabSeries], detector: str | Callable[[], Detector], *,
            profiles: Mapping[str, CostProfile] | None = None, out_dir: Path | None = None,
            seed: int = 0, params: Mapping[str, Any] | None = None) -> NabReport:
    """Run a fresh detector over each series, optionally write result files, score every profile.

    ``detector`` is a registered name (built with ``seed`` and ``params``) or a factory.
    """
    name = detector if isinstance(detector, str) else "custom"
    scored: list[ScoringSeries] = []
    points = 0
    for series in corpus:
        instance = (make_detector(detector, seed=seed, **dict(params or {}))
                    if isinstance(detector, str) else detector())
        scores = run_detector(instance, series.timestamps, series.values)
        if any(not (0.0 <= s <= 1.0) or math.isnan(s) for s in scores):
            raise ConfigurationError(f"detector {name} produced a score outside [0, 1]")
        points += len(scores)
        scored.append(ScoringSeries(series.name, scores, series.windows))
        if out_dir is not None:
            category, _, file_name = series.name.rpartition("/")
            write_result_file(out_dir / name / category / f"{name}_{file_name}", series, scores)
    report = NabReport(name, score_profiles(scored, profiles or DEFAULT_PROFILES), points)
    if out_dir is not None:
        summary = out_dir / name / f"{name}_scores.json"
        summary.parent.mkdir(parents=True, exist_ok=True)
        summary.write_text(json.dumps(report.as_dict(), indent=2, sort_keys=True) + "\n")
    return report
