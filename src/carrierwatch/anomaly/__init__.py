"""Online anomaly detection for partner metric streams (pure: river and numpy, no I/O).

See :mod:`carrierwatch.anomaly.base` for the contract, :mod:`carrierwatch.anomaly.detectors`
for the implementations and :mod:`carrierwatch.anomaly.nab` for the NAB harness and scorer.
"""

from __future__ import annotations

from carrierwatch.anomaly.base import (
    Detector,
    DuplicateDetectorError,
    Point,
    PointLike,
    UnknownDetectorError,
    as_point,
    available_detectors,
    detector_class,
    make_detector,
    register,
    to_epoch_seconds,
)
from carrierwatch.anomaly.detectors import DEFAULT_DETECTOR

__all__ = [
    "DEFAULT_DETECTOR",
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
